// Per-window accuracy of the predictor's forecasts, summarised at the end of a run.
import Glibc

/// Running accuracy figures of one observation window, in bounded memory.
///
/// The mean and the shares are exact. The median is exact while at most `exactLimit` stats were
/// recorded; past that it comes from a histogram with bins 0.001 wide below ARE = 10 (exact to
/// ±0.0005 there) and 0.23 % wide (log scale) above.
struct WindowAccuracy: Sendable {
    var forecasts = 0
    var forecastsWithModel = 0
    var alerts = 0
    var samples = 0
    var stats = 0
    var sum = 0.0
    var within20 = 0
    var within50 = 0
    private var bins = [Int](repeating: 0, count: WindowAccuracy.binCount)
    private var values: [Double] = []

    /// Most values kept for the exact median (800 kB per window).
    static let exactLimit = 100_000

    private static let linearBins = 10_000
    private static let binCount = linearBins + 30_000

    private static func bin(_ are: Double) -> Int {
        if are < 10 { return Int(are * 1000) }
        // log10(are/10) in steps of 1/1000 decade (about 0.23 %), up to 1e31.
        let k = Int((log10(are / 10) * 1000).rounded(.down))
        return min(linearBins + max(k, 0), binCount - 1)
    }

    private static func center(_ bin: Int) -> Double {
        if bin < linearBins { return (Double(bin) + 0.5) / 1000 }
        return 10 * pow(10, (Double(bin - linearBins) + 0.5) / 1000)
    }

    mutating func record(_ are: Double) {
        stats += 1
        sum += are
        if are <= 0.2 { within20 += 1 }
        if are <= 0.5 { within50 += 1 }
        bins[Self.bin(are)] += 1
        if stats <= Self.exactLimit {
            values.append(are)
        } else if !values.isEmpty {
            values = []
        }
    }

    var mean: Double? { stats > 0 ? sum / Double(stats) : nil }

    /// The median ARE (mean of the two middle values for an even count; the lower one's bin centre
    /// past `exactLimit`).
    var median: Double? {
        guard stats > 0 else { return nil }
        if values.count == stats {
            let sorted = values.sorted()
            return stats % 2 == 1 ? sorted[stats / 2] : (sorted[stats / 2 - 1] + sorted[stats / 2]) / 2
        }
        let rank = (stats + 1) / 2
        var seen = 0
        for (i, c) in bins.enumerated() where c > 0 {
            seen += c
            if seen >= rank { return Self.center(i) }
        }
        return nil
    }

    /// The end-of-run line for window `tObs`.
    func summary(tObs: Int) -> String {
        func f3(_ x: Double?) -> String { x.map { fixed($0, 3) } ?? "-" }
        func share(_ n: Int) -> String { stats > 0 ? fixed(100 * Double(n) / Double(stats), 1) + "%" : "-" }
        return "T_obs=\(tObs): forecasts=\(forecasts) (with model \(forecastsWithModel)) alerts=\(alerts) "
            + "stats=\(stats) samples=\(samples) median ARE=\(f3(median)) mean ARE=\(f3(mean)) "
            + "within 20%=\(share(within20)) within 50%=\(share(within50))"
    }
}

/// `x` with `digits` decimals (no Foundation formatting).
func fixed(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite, abs(x) < 1e15 else { return "\(x)" }
    let scale = pow(10, Double(digits))
    let r = (abs(x) * scale).rounded()
    var s = String(Int(r / scale)) + "."
    let frac = String(Int(r.truncatingRemainder(dividingBy: scale)))
    s += String(repeating: "0", count: max(0, digits - frac.count)) + frac
    return x < 0 && r > 0 ? "-" + s : s
}
