// A cascade observed up to time T, and its log-likelihood / log-posterior. Spec §4.2.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A retweet cascade observed on `[t_1, T]`: the original tweet and its retweets with their
/// marks (follower counts), validated and stored with times relative to the first event.
///
/// Conventions (spec §4.2, hawkes_ref.py):
/// - `times` are in seconds and non-decreasing (ties allowed, including ties with the root);
///   only differences matter, so any clock works; they are stored relative to `times[0]`.
/// - `marks` are follower counts `>= 0`. A mark of 0 is legal: that event excites nothing
///   (`m_j = 0` contributes 0 to every later intensity and to the compensator). See
///   ``ZeroMarkPolicy`` for the degenerate case of a root with mark 0.
/// - `observationEnd` `T` is the end of the observation window, in the same clock as `times`
///   (spec: `t_1 + T_obs`), and every event satisfies `t_i <= T` (an event exactly at `T` is
///   observed).
public struct ObservedCascade: Sendable, Hashable {
    /// Event times in seconds relative to the first event (`times[0] == 0`), non-decreasing. Shape `[n]`.
    public let times: [Double]
    /// Event marks (follower counts, `>= 0`). Shape `[n]`.
    public let marks: [Double]
    /// Observation end `T` in seconds relative to the first event (`T >= times.last!`).
    public let observationEnd: Double

    /// Validates and stores a cascade.
    /// - Parameters:
    ///   - times: event times in seconds, any clock, non-decreasing; `times[0]` is the original tweet. Shape `[n]`, `n >= 1`.
    ///   - marks: follower counts, finite and `>= 0`. Shape `[n]`.
    ///   - observationEnd: `T`, same clock as `times`, `T >= times[0]`.
    ///   - dropLaterEvents: if `true`, events with `t > T` are dropped instead of rejected (their
    ///     times must still be finite and in order; their marks are not checked).
    /// - Throws: ``HawkesError/emptyCascade``, ``HawkesError/lengthMismatch(times:marks:)``,
    ///   ``HawkesError/nonFiniteTime(index:)``, ``HawkesError/nonFiniteMark(index:)``,
    ///   ``HawkesError/negativeMark(index:)``, ``HawkesError/unsortedTimes(index:)``,
    ///   ``HawkesError/invalidObservationEnd(_:)``, ``HawkesError/eventAfterObservationEnd(index:)``.
    public init(times: [Double], marks: [Double], observationEnd: Double, dropLaterEvents: Bool = false) throws(HawkesError) {
        guard !times.isEmpty else { throw .emptyCascade }
        guard times.count == marks.count else { throw .lengthMismatch(times: times.count, marks: marks.count) }
        let t0 = times[0]
        guard t0.isFinite else { throw .nonFiniteTime(index: 0) }
        guard observationEnd.isFinite, observationEnd >= t0 else { throw .invalidObservationEnd(observationEnd) }
        var n = times.count
        for i in 0..<times.count {
            let t = times[i]
            guard t.isFinite else { throw .nonFiniteTime(index: i) }
            if i > 0, t < times[i - 1] { throw .unsortedTimes(index: i) }
            if t > observationEnd {
                guard dropLaterEvents else { throw .eventAfterObservationEnd(index: i) }
                if n == times.count { n = i }
                continue   // dropped: only its time is checked (order and finiteness)
            }
            let m = marks[i]
            guard m.isFinite else { throw .nonFiniteMark(index: i) }
            guard m >= 0 else { throw .negativeMark(index: i) }
        }
        if t0 == 0 && t0.sign == .plus && n == times.count {
            // Already relative (the collector's series): x − (+0) is x exactly, so share the array.
            self.times = times
        } else {
            var rel = [Double](repeating: 0, count: n)
            for i in 0..<n { rel[i] = times[i] - t0 }
            self.times = rel
        }
        self.marks = n == marks.count ? marks : Array(marks[0..<n])
        self.observationEnd = observationEnd - t0
    }

    init(uncheckedTimes times: [Double], marks: [Double], observationEnd: Double) {
        self.times = times
        self.marks = marks
        self.observationEnd = observationEnd
    }

    /// Number of observed events `n` (the original tweet included).
    @inlinable public var count: Int { times.count }

    /// A copy whose root mark is replaced by `value` (used by ``ZeroMarkPolicy``).
    func replacingRootMark(with value: Double) -> ObservedCascade {
        var m = marks
        m[0] = value
        return ObservedCascade(uncheckedTimes: times, marks: m, observationEnd: observationEnd)
    }

    // MARK: - Likelihood

    /// Log-likelihood of the marked Hawkes process, conditional on the first event
    /// (spec §4.2; hawkes_ref.py docstring):
    ///
    ///     LL = (n−1) log(p β) + Σ_{i=2..n} log A_i − p Σ_{i=1..n} m_i (1 − e^{−β (T − t_i)}),
    ///     A_i = Σ_{j<i} m_j e^{−β (t_i − t_j)}.
    ///
    /// Computed in O(n) with a log-space recursion (`log A_i = logaddexp(log A_{i−1}, log m_{i−1}) − β Δt_i`),
    /// so `e^{−β Δt}` underflow cannot produce `log 0`, and with `expm1` in the compensator.
    /// - Parameters: `p` (dimensionless, retweets per follower), `beta` (s⁻¹).
    /// - Returns: the log-likelihood; `-infinity` if `p <= 0` or `beta <= 0` (or NaN), or if some
    ///   `A_i` is exactly 0 (the root has mark 0 and `n >= 2`). `p >= 1` is not rejected
    ///   (the bound on n* is the estimator's business).
    public func logLikelihood(p: Double, beta: Double) -> Double {
        logLikelihoodWithGradient(p: p, beta: beta).value
    }

    /// Log-likelihood (see ``logLikelihood(p:beta:)``) and its exact gradient:
    ///
    ///     ∂LL/∂p    = (n−1)/p − Σ_i m_i (1 − e^{−β(T−t_i)})
    ///     ∂LL/∂beta = (n−1)/β − Σ_{i≥2} R_i − p Σ_i m_i (T − t_i) e^{−β(T−t_i)}
    ///
    /// with `R_i = (Σ_{j<i} m_j (t_i−t_j) e^{−β(t_i−t_j)}) / A_i` (weighted mean lag), obtained by
    /// the recursion `R_i = Δt_i + R_{i−1}·A_{i−1}/(A_{i−1}+m_{i−1})`.
    /// - Returns: value `-infinity` and NaN derivatives in the cases where
    ///   ``logLikelihood(p:beta:)`` is `-infinity`.
    public func logLikelihoodWithGradient(p: Double, beta: Double) -> ValueGradient {
        guard p > 0, beta > 0, beta.isFinite, p.isFinite else {
            return ValueGradient(value: -.infinity, dp: .nan, dBeta: .nan, p: p, beta: beta)
        }
        let st = BetaStatistics.accurate(beta: beta, cascade: self)
        guard st.sumLogA > -.infinity else {
            return ValueGradient(value: -.infinity, dp: .nan, dBeta: .nan, p: p, beta: beta)
        }
        let n1 = Double(count - 1)
        let value = n1 * (log(p) + log(beta)) + st.sumLogA - p * st.k
        let dp = n1 / p - st.k
        let db = n1 / beta + st.dSumLogA - p * st.dK
        return ValueGradient(value: value, dp: dp, dBeta: db, p: p, beta: beta)
    }

    /// The course log-posterior `LL(p, beta) + prior.logDensity(p:beta:)` (spec §4.3; the
    /// quantity the MAP maximises; no Jacobian term). `-infinity` where either part is.
    public func logPosterior(p: Double, beta: Double, prior: HawkesPrior = .course) -> Double {
        logPosteriorWithGradient(p: p, beta: beta, prior: prior).value
    }

    /// ``logPosterior(p:beta:prior:)`` and its gradient in `(p, beta)` (sum of
    /// ``logLikelihoodWithGradient(p:beta:)`` and ``HawkesPrior/logDensityWithGradient(p:beta:)``).
    public func logPosteriorWithGradient(p: Double, beta: Double, prior: HawkesPrior = .course) -> ValueGradient {
        let ll = logLikelihoodWithGradient(p: p, beta: beta)
        guard ll.value > -.infinity else { return ll }
        return ll + prior.logDensityWithGradient(p: p, beta: beta)
    }

    // MARK: - Prediction

    /// Prediction of the final cascade size from parameters (spec §4.4):
    /// `G1 = p Σ_i m_i e^{−β (T − t_i)}` (expected direct offspring still to come),
    /// `n* = p E[m]`, `N∞ = n + G1/(1 − n*)`.
    /// - Parameters: `p`, `beta` (s⁻¹) and the mark distribution giving `E[m]`.
    /// - Throws: ``HawkesError/invalidParameter(name:value:)`` if `p < 0`, `beta < 0` or either is
    ///   not finite; ``HawkesError/branchingFactorTooLarge(nStar:limit:)`` if `n* >= 1`.
    public func prediction(p: Double, beta: Double, marks dist: MarkDistribution = .course) throws(HawkesError) -> HawkesPrediction {
        guard p.isFinite, p >= 0 else { throw .invalidParameter(name: "p", value: p) }
        guard beta.isFinite, beta >= 0 else { throw .invalidParameter(name: "beta", value: beta) }
        let nStar = p * dist.mean
        guard nStar < 1 else { throw .branchingFactorTooLarge(nStar: nStar, limit: 1) }
        var g = 0.0
        for i in 0..<count { g += marks[i] * exp(-beta * (observationEnd - times[i])) }
        return HawkesPrediction(nObs: count, g1: p * g, nStar: nStar)
    }
}

/// Final-size prediction of a cascade (spec §4.4).
public struct HawkesPrediction: Sendable, Hashable {
    /// Number of observed events `n` (original tweet included).
    public let nObs: Int
    /// `G1 = p Σ_i m_i e^{−β(T−t_i)}`: expected number of direct offspring of the observed
    /// events still to come after `T` (retweets).
    public let g1: Double
    /// Branching factor `n* = p E[m]` (dimensionless, `< 1`).
    public let nStar: Double

    /// Creates a prediction record (no validation; ``ObservedCascade/prediction(p:beta:marks:)`` validates).
    public init(nObs: Int, g1: Double, nStar: Double) {
        self.nObs = nObs
        self.g1 = g1
        self.nStar = nStar
    }

    /// Expected number of events still to come, all generations: `G1/(1 − n*)` (retweets).
    @inlinable public var nSupp: Double { g1 / (1 - nStar) }
    /// Predicted final size `N∞ = n + G1/(1 − n*)` (events, original tweet included).
    @inlinable public var forecast: Double { Double(nObs) + nSupp }
}
