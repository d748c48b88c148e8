// Errors of the Hawkes module.

/// Everything the `Hawkes` module can throw. All throwing APIs of the module use typed throws
/// (`throws(HawkesError)`), never trap on bad input, and never return NaN in a fit.
///
/// Indices are 0-based positions in the arrays passed by the caller.
public enum HawkesError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The cascade has no event (the original tweet is missing).
    case emptyCascade
    /// `times` and `marks` have different lengths.
    case lengthMismatch(times: Int, marks: Int)
    /// A time is NaN or infinite.
    case nonFiniteTime(index: Int)
    /// A mark (follower count) is NaN or infinite.
    case nonFiniteMark(index: Int)
    /// A mark (follower count) is negative.
    case negativeMark(index: Int)
    /// `times[index] < times[index - 1]`: times must be non-decreasing (ties are allowed).
    case unsortedTimes(index: Int)
    /// The observation end `T` is NaN, infinite, or before the first event.
    case invalidObservationEnd(Double)
    /// `times[index] > T`: only events with `t_i <= T` may be passed (or ask for truncation).
    case eventAfterObservationEnd(index: Int)
    /// The mark distribution needs `alpha > 2` (finite mean) and `mu > 0`, both finite.
    case invalidMarkDistribution(alpha: Double, mu: Double)
    /// Prior hyper-parameters are invalid (means and standard deviations must be positive
    /// and finite, `|corr| < 1`, and the moment-matched log-space covariance positive definite).
    case invalidPrior(reason: String)
    /// An estimator/prediction parameter is out of its domain (name and offending value).
    case invalidParameter(name: String, value: Double)
    /// The root (first event) has mark 0 and later events exist: the intensity just after the
    /// root is exactly 0, so the log-likelihood is -infinity for every (p, beta) and the MAP
    /// does not exist (zero-magnitude policy `.strict`, see ``ZeroMarkPolicy``).
    case zeroIntensity
    /// The branching factor n* = p E[m] is not below the allowed maximum (prediction
    /// N = n + G1/(1 - n*) is undefined or meaningless).
    case branchingFactorTooLarge(nStar: Double, limit: Double)
    /// A non-finite value appeared where none should (defensive; should not happen).
    case numericalFailure(reason: String)

    /// A one-line human-readable message (for logs), e.g. `"negative mark at index 3"`.
    public var description: String {
        switch self {
        case .emptyCascade: return "empty cascade"
        case let .lengthMismatch(t, m): return "times (\(t)) and marks (\(m)) differ in length"
        case let .nonFiniteTime(i): return "non-finite time at index \(i)"
        case let .nonFiniteMark(i): return "non-finite mark at index \(i)"
        case let .negativeMark(i): return "negative mark at index \(i)"
        case let .unsortedTimes(i): return "times decrease at index \(i)"
        case let .invalidObservationEnd(t): return "invalid observation end \(t)"
        case let .eventAfterObservationEnd(i): return "event \(i) is after the observation end"
        case let .invalidMarkDistribution(a, mu): return "invalid mark distribution alpha=\(a) mu=\(mu)"
        case let .invalidPrior(r): return "invalid prior: \(r)"
        case let .invalidParameter(n, v): return "invalid parameter \(n)=\(v)"
        case .zeroIntensity: return "root mark is 0 with later events: zero intensity"
        case let .branchingFactorTooLarge(n, l): return "branching factor \(n) >= \(l)"
        case let .numericalFailure(r): return "numerical failure: \(r)"
        }
    }
}
