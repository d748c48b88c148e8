// When the learner refits a window's forest, and so which model version a forecast uses: one
// pure function of the window's sample count, shared by the learner (which fits) and the
// predictor (which waits for the version its samples call for), so both agree without talking.

/// The sample counts at which a window's forest is refitted (spec §6; issue 17).
///
/// A window's first fit is at the smallest multiple of `every` (k) that is >= `minSamples`.
/// After a fit at p samples, the next one is at p + step(p), with
///
///     step(p) = max(k, k · ⌈⌈growth · min(p, maxSamples)⌉ / k⌉)
///
/// so a forest is refitted once the new samples reach `growth` times the samples it was fitted
/// on (the window holds at most `maxSamples`), and at least k samples apart. The refit points
/// are multiples of k and the version fitted at p samples is p / k, as with growth 0 (a refit
/// every k samples, versions 1, 2, 3, ...); with growth > 0 the versions are sparse: early on
/// they come at a geometric pace (about log(n)/log(1 + growth) fits for n samples, instead of
/// n/k), and once the window is full every `step(maxSamples)` samples, so the cost of learning
/// per sample is bounded whatever the stream's length.
///
/// Example (k = 20, growth 0.1, minSamples 50, maxSamples 2000): fits every 20 samples from 60
/// to 220, then at 260, 300, 340, 380, 420, 480, 540, 600, 660, 740, ..., 1880, 2080, then every
/// 200 samples.
public struct RefitSchedule: Sendable, Hashable {
    /// k >= 1: refit points are multiples of it, and at least this many samples apart.
    public let every: Int
    /// 0, or in 0.01...100: the new samples, relative to those of the last fit, that call for a refit.
    public let growth: Double
    /// Fewest samples a version is fitted on.
    public let minSamples: Int
    /// The most samples a window holds (the learner's `max_samples`).
    public let maxSamples: Int
    /// Refit points below `maxSamples`, then the first one at or past it (growth > 0 only).
    private let early: [Int]

    /// The largest growth accepted, and the smallest non-zero one (below it the early points
    /// would be too many to list).
    public static let growthRange: ClosedRange<Double> = 0.01...100

    /// - Precondition: every >= 1, minSamples >= 1, maxSamples >= 1, growth 0 or in ``growthRange``
    ///   (the stages check their options and report a configuration error first).
    public init(every: Int, growth: Double, minSamples: Int, maxSamples: Int) {
        precondition(every >= 1 && minSamples >= 1 && maxSamples >= 1)
        precondition(growth == 0 || Self.growthRange.contains(growth))
        self.every = every
        self.growth = growth
        self.minSamples = minSamples
        self.maxSamples = maxSamples
        var points: [Int] = []
        if growth > 0 {
            var p = Self.first(every: every, minSamples: minSamples)
            while true {
                points.append(p)
                if p >= maxSamples { break }
                let (next, overflow) = p.addingReportingOverflow(Self.step(p, every: every, growth: growth, maxSamples: maxSamples))
                if overflow { break }
                p = next
            }
        }
        early = points
    }

    /// The first refit point: the smallest multiple of `every` >= max(minSamples, every).
    static func first(every: Int, minSamples: Int) -> Int {
        let m = max(minSamples, every)
        return (m / every + (m % every == 0 ? 0 : 1)) * every
    }

    static func step(_ p: Int, every k: Int, growth: Double, maxSamples: Int) -> Int {
        let wanted = (growth * Double(min(p, maxSamples))).rounded(.up)
        guard wanted < Double(Int.max / 2) else { return Int.max / 2 }
        let w = Int(wanted)
        return max(k, (w / k + (w % k == 0 ? 0 : 1)) * k)
    }

    /// Whether the window's forest is refitted when its `seen`-th sample arrives.
    public func fits(at seen: Int) -> Bool {
        guard seen > 0 else { return false }
        return latestFit(atOrBefore: seen) == seen
    }

    /// The last refit point <= `samples`, or nil when there is none yet.
    public func latestFit(atOrBefore samples: Int) -> Int? {
        let first = Self.first(every: every, minSamples: minSamples)
        guard samples >= first else { return nil }
        if growth == 0 { return samples / every * every }
        let last = early[early.count - 1]
        if samples < last {
            // Binary search: the largest early point <= samples.
            var lo = 0, hi = early.count - 1
            while lo < hi {
                let mid = (lo + hi + 1) / 2
                if early[mid] <= samples { lo = mid } else { hi = mid - 1 }
            }
            return early[lo]
        }
        let steady = Self.step(last, every: every, growth: growth, maxSamples: maxSamples)
        return last + (samples - last) / steady * steady
    }

    /// The model version a forecast uses when `samples` samples of its window preceded it:
    /// (last refit point <= samples) / k, or 0 (the pretrained model, or none) before the first fit.
    public func wanted(samples: Int) -> Int {
        latestFit(atOrBefore: samples).map { $0 / every } ?? 0
    }
}

extension RefitSchedule {
    /// The schedule of a stage's `refit_every`, `refit_growth`, `min_samples` and `max_samples`
    /// options (the learner's, and the predictor's copies of them, checked equal by `validate`).
    /// - Throws: ``StageConfigError`` naming the first option out of range.
    public init(options: StageOptions) throws {
        let every = try options.int("refit_every")
        guard every >= 1 else { throw StageConfigError(option: "refit_every", "expected an integer >= 1") }
        let maxSamples = try options.int("max_samples")
        guard maxSamples >= 1 else { throw StageConfigError(option: "max_samples", "expected an integer >= 1") }
        let minSamples = try options.int("min_samples")
        guard minSamples >= 1 else { throw StageConfigError(option: "min_samples", "expected an integer >= 1") }
        let growth = try options.double("refit_growth")
        guard growth == 0 || Self.growthRange.contains(growth) else {
            throw StageConfigError(option: "refit_growth", "expected 0 or a number in \(Self.growthRange)")
        }
        self.init(every: every, growth: growth, minSamples: minSamples, maxSamples: maxSamples)
    }
}
