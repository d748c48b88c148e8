// Power-law mark (follower-count) distribution. Spec §4.1.

/// Continuous power law of the marks (follower counts) on `[mu, ∞)`, with density
/// `(alpha - 1)/mu · (m/mu)^(-alpha)` (spec §4.1; Mishra, Rizoiu & Xie, CIKM 2016).
///
/// `alpha` and `mu` are fixed constants of the model, not estimated. Only the mean is used by
/// the estimator: the branching factor is `n* = p · mean`.
public struct MarkDistribution: Sendable, Hashable {
    /// Power-law exponent (dimensionless), `> 2`.
    public let alpha: Double
    /// Lower cut-off of the marks, in followers, `> 0`.
    public let mu: Double

    /// Creates the distribution.
    /// - Throws: ``HawkesError/invalidMarkDistribution(alpha:mu:)`` if `alpha <= 2` (infinite
    ///   mean), `mu <= 0`, or either is not finite.
    public init(alpha: Double, mu: Double) throws(HawkesError) {
        guard alpha.isFinite, mu.isFinite, alpha > 2, mu > 0 else {
            throw .invalidMarkDistribution(alpha: alpha, mu: mu)
        }
        self.alpha = alpha
        self.mu = mu
    }

    private init(uncheckedAlpha alpha: Double, mu: Double) {
        self.alpha = alpha
        self.mu = mu
    }

    /// The course constants `alpha = 2.4`, `mu = 10` (E[m] = 35), used by most groups (spec §4.1).
    public static let course = MarkDistribution(uncheckedAlpha: 2.4, mu: 10)

    /// Expected mark `E[m] = mu (alpha - 1)/(alpha - 2)`, in followers (spec §4.1).
    @inlinable
    public var mean: Double { mu * (alpha - 1) / (alpha - 2) }
}
