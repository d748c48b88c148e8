// Features of an observed partial cascade beyond the Hawkes fit, sent with the parameters (wire
// object `features`) for the predictor's `growth` mode.
import Glibc
import TweetoscopeCore

/// Φ(T_obs − k) of the SEISMIC kernel for every whole second k in [0, T_obs], one table per
/// window, built on first use: a window's series (times in whole seconds, as in Twitter data)
/// then need no `pow` (~1.5 % of the estimator configuration, issue 17). The values are
/// ``SeriesFeatures/kernelIntegral(_:)`` of the same arguments. Windows longer than
/// ``maxEntries`` seconds get no table. Not thread-safe: one stage's run loop owns it.
final class KernelTable {
    static let maxEntries = 1 << 17
    private var tables: [Double: [Double]] = [:]

    /// The table of window `tObs` (seconds); empty when `tObs` is not a whole number of seconds
    /// within ``maxEntries``.
    func values(_ tObs: Double) -> [Double] {
        if let t = tables[tObs] { return t }
        guard let n = Int(exactly: tObs), n >= 0, n < Self.maxEntries else { return [] }
        let t = (0...n).map { SeriesFeatures.kernelIntegral(tObs - Double($0)) }
        tables[tObs] = t
        return t
    }
}

/// Shape and SEISMIC features of the events of one partial cascade observed up to T_obs.
///
/// Input: event times in seconds relative to the first tweet (ascending, the root first at 0)
/// and their magnitudes (follower counts, ≥ 0); only events with t ≤ T_obs count. Output: the
/// dictionary sent in the `features` field, every value finite:
///
/// | name | value |
/// |---|---|
/// | `root_m` | magnitude of the first event (the root), followers |
/// | `max_m` | largest magnitude |
/// | `median_m` | median magnitude (mean of the two middle ones for an even count) |
/// | `sum_m` | sum of the magnitudes |
/// | `share_after_3q` | share of the n_obs events with t > 0.75·T_obs |
/// | `share_after_half` | share of the events with t > 0.5·T_obs |
/// | `share_first_quarter` | share of the events with 0 < t ≤ T_obs/4 (the root at 0 excluded) |
/// | `seismic_exposure` | S = Σᵢ mᵢ (1 − Φ(T_obs − tᵢ)), the remaining exposure, followers |
/// | `seismic_p` | p̂ = R / Σᵢ mᵢ Φ(T_obs − tᵢ) with R = n_obs − 1 the retweets; 0 when the denominator is 0 |
///
/// SEISMIC (Zhao, Erdogdu, He, Rajaraman, Leskovec, KDD'15, arXiv 1506.02594, §3): the memory
/// kernel φ(s) = c for 0 ≤ s ≤ s₀ and c (s/s₀)^−(1+θ) beyond, with the paper's s₀ = 300 s and
/// θ = 0.242, and c = θ / (s₀(1 + θ)) so that ∫₀^∞ φ = 1. Its integral Φ(τ) = c·τ for τ ≤ s₀ and
/// 1 − (τ/s₀)^−θ / (1 + θ) beyond. p̂ is the paper's infectiousness estimator (eq. 8) with a flat
/// weighting kernel over the whole window (every retweet up to T_obs weighs 1): retweets per
/// unit of effective exposure Σ mᵢ Φ(T_obs − tᵢ).
enum SeriesFeatures {
    /// s₀ of the SEISMIC kernel, seconds (Zhao et al. 2015, §3.2).
    static let s0 = 300.0
    /// θ of the SEISMIC kernel (Zhao et al. 2015, §3.2, fitted on their Twitter data).
    static let theta = 0.242
    /// c = θ / (s₀(1 + θ)), 1/s: ∫₀^∞ φ = c·s₀ + c·s₀/θ = 1.
    static let c = theta / (s0 * (1 + theta))

    /// Φ(τ) = ∫₀^τ φ(s) ds, the share of a post's exposure reached after τ seconds (0 for τ ≤ 0).
    static func kernelIntegral(_ tau: Double) -> Double {
        if tau <= 0 { return 0 }
        if tau <= s0 { return c * tau }
        return 1 - Glibc.pow(tau / s0, -theta) / (1 + theta)
    }

    /// The features of the events `times`/`magnitudes` (same length, times ascending) observed
    /// up to `tObs` seconds; nil when no event is at or before `tObs` or a value is not finite.
    /// - Parameter kernel: Φ(T_obs − t) of whole-second times, computed once per window and
    ///   shared by the window's series (nil: computed per event).
    static func compute(times: [Double], magnitudes: [Double], tObs: Double,
                        kernel: KernelTable? = nil) -> [String: Double]? {
        let table = kernel?.values(tObs) ?? []
        var marks: [Double] = []
        marks.reserveCapacity(min(times.count, magnitudes.count))
        var shareLate = 0, shareHalf = 0, shareEarly = 0
        var exposure = 0.0, effective = 0.0
        var sum = 0.0
        var largest = -Double.infinity
        var unordered = false
        // Φ is evaluated once per distinct time (whole-second times repeat a lot: pow was ~1.4 %
        // of the estimator configuration, issue 17); same values as one call per event.
        var lastT = Double.nan, reached = 0.0
        for (t, m) in zip(times, magnitudes) where t <= tObs {
            marks.append(m)
            sum += m
            if m >= largest { largest = m }
            if m.isNaN || (m == 0 && m.sign == .minus) { unordered = true }
            if t > 0.75 * tObs { shareLate += 1 }
            if t > 0.5 * tObs { shareHalf += 1 }
            if t > 0, t <= tObs / 4 { shareEarly += 1 }
            if !(t == lastT) {
                if let k = Int(exactly: t), k >= 0, k < table.count {
                    reached = table[k]
                } else {
                    reached = kernelIntegral(tObs - t)
                }
                lastT = t
            }
            effective += m * reached
            exposure += m * (1 - reached)
        }
        guard let root = marks.first else { return nil }
        let n = Double(marks.count)
        let k = marks.count
        let median: Double, maximum: Double
        if unordered {
            // The order of -0.0 and 0.0 (and of NaN) depends on the sort: take it from the sort.
            let sorted = marks.sorted()
            median = k % 2 == 1 ? sorted[k / 2] : (sorted[k / 2 - 1] + sorted[k / 2]) / 2
            maximum = sorted[k - 1]
        } else {
            // Selection instead of a sort (the sort was ~5.6 % of the estimator configuration,
            // issue 17): the same order statistics, so the same values.
            median = marks.withUnsafeMutableBufferPointer { selectMedian($0) }
            maximum = largest
        }
        let features: [String: Double] = [
            "root_m": root,
            "max_m": maximum,
            "median_m": median,
            "sum_m": sum,
            "share_after_3q": Double(shareLate) / n,
            "share_after_half": Double(shareHalf) / n,
            "share_first_quarter": Double(shareEarly) / n,
            "seismic_exposure": exposure,
            "seismic_p": effective > 0 ? (n - 1) / effective : 0,
        ]
        guard features.values.allSatisfy(\.isFinite) else { return nil }
        return features
    }
}
