// Moment-matched bivariate log-normal prior on (p, beta). Spec §4.3.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A symmetric 2×2 matrix over the parameter pair `(log p, log beta)`.
public struct SymmetricMatrix2: Sendable, Hashable {
    /// Entry (log p, log p).
    public var pp: Double
    /// Off-diagonal entry (log p, log beta) = (log beta, log p).
    public var pBeta: Double
    /// Entry (log beta, log beta).
    public var betaBeta: Double

    /// Creates the matrix `[[pp, pBeta], [pBeta, betaBeta]]`.
    public init(pp: Double, pBeta: Double, betaBeta: Double) {
        self.pp = pp
        self.pBeta = pBeta
        self.betaBeta = betaBeta
    }

    /// Determinant `pp·betaBeta − pBeta²`.
    @inlinable public var determinant: Double { pp * betaBeta - pBeta * pBeta }
}

/// A scalar function value with its gradient in `(p, beta)` at the point `(p, beta)`.
///
/// Used for the log-likelihood, the log-prior and the log-posterior. Units: `p` is
/// dimensionless (expected retweets per follower), `beta` is in s⁻¹, so `dBeta` is in
/// (value units)·s.
public struct ValueGradient: Sendable, Hashable {
    /// The function value.
    public var value: Double
    /// ∂value/∂p.
    public var dp: Double
    /// ∂value/∂beta (per s⁻¹).
    public var dBeta: Double
    /// The point's `p`.
    public var p: Double
    /// The point's `beta`, s⁻¹.
    public var beta: Double

    /// Creates a value/gradient record.
    public init(value: Double, dp: Double, dBeta: Double, p: Double, beta: Double) {
        self.value = value
        self.dp = dp
        self.dBeta = dBeta
        self.p = p
        self.beta = beta
    }

    /// ∂value/∂log p = p · ∂value/∂p.
    @inlinable public var dLogP: Double { p * dp }
    /// ∂value/∂log beta = beta · ∂value/∂beta.
    @inlinable public var dLogBeta: Double { beta * dBeta }

    /// Component-wise sum of two value/gradient records at the same point.
    @inlinable
    public static func + (a: ValueGradient, b: ValueGradient) -> ValueGradient {
        ValueGradient(value: a.value + b.value, dp: a.dp + b.dp, dBeta: a.dBeta + b.dBeta,
                      p: a.p, beta: a.beta)
    }
}

/// Bivariate log-normal prior on `(p, beta)` whose **moments** match the course
/// hyper-parameters (spec §4.3).
///
/// With `E = (muP, muBeta)` and `C = [[sigP², corr·sigP·sigBeta], [corr·sigP·sigBeta, sigBeta²]]`
/// the mean and covariance of `(p, beta)`, the log-space covariance and mean are
/// `Σ_ij = log(1 + C_ij/(E_i E_j))` and `m_i = log E_i − Σ_ii/2` (moment matching of a
/// log-normal), and the precision is `Σ⁻¹` (closed-form 2×2 inverse).
public struct HawkesPrior: Sendable, Hashable {
    /// Prior mean of `p` (dimensionless).
    public let muP: Double
    /// Prior mean of `beta`, s⁻¹.
    public let muBeta: Double
    /// Prior standard deviation of `p`.
    public let sigP: Double
    /// Prior standard deviation of `beta`, s⁻¹.
    public let sigBeta: Double
    /// Prior correlation of `p` and `beta`, in (−1, 1).
    public let corr: Double
    /// Mean of `log p` under the prior.
    public let logMeanP: Double
    /// Mean of `log beta` under the prior (beta in s⁻¹).
    public let logMeanBeta: Double
    /// Covariance Σ of `(log p, log beta)`.
    public let logCovariance: SymmetricMatrix2
    /// Precision Σ⁻¹ of `(log p, log beta)`.
    public let logPrecision: SymmetricMatrix2

    /// Creates the prior from the moments of `(p, beta)` (the course's
    /// `prior_params = [mu_p, mu_beta, sig_p, sig_beta, corr]`).
    /// - Throws: ``HawkesError/invalidPrior(reason:)`` if a mean or standard deviation is not
    ///   positive and finite, `|corr| >= 1`, or the log-space covariance is not positive definite.
    public init(muP: Double, muBeta: Double, sigP: Double, sigBeta: Double, corr: Double) throws(HawkesError) {
        for (name, v) in [("muP", muP), ("muBeta", muBeta), ("sigP", sigP), ("sigBeta", sigBeta)] {
            guard v.isFinite, v > 0 else { throw .invalidPrior(reason: "\(name) must be positive and finite, got \(v)") }
        }
        guard corr.isFinite, abs(corr) < 1 else { throw .invalidPrior(reason: "corr must be in (-1, 1), got \(corr)") }
        self.init(unchecked: muP, muBeta, sigP, sigBeta, corr)
        guard logCovariance.determinant > 0, logCovariance.pp > 0, logCovariance.betaBeta > 0,
              logPrecision.pp.isFinite, logPrecision.pBeta.isFinite, logPrecision.betaBeta.isFinite
        else { throw .invalidPrior(reason: "log-space covariance is not positive definite") }
    }

    private init(unchecked muP: Double, _ muBeta: Double, _ sigP: Double, _ sigBeta: Double, _ corr: Double) {
        self.muP = muP
        self.muBeta = muBeta
        self.sigP = sigP
        self.sigBeta = sigBeta
        self.corr = corr
        let spp = log1p(sigP * sigP / (muP * muP))
        let spb = log1p(corr * sigP * sigBeta / (muP * muBeta))
        let sbb = log1p(sigBeta * sigBeta / (muBeta * muBeta))
        let cov = SymmetricMatrix2(pp: spp, pBeta: spb, betaBeta: sbb)
        logCovariance = cov
        logMeanP = log(muP) - spp / 2
        logMeanBeta = log(muBeta) - sbb / 2
        let det = cov.determinant
        logPrecision = SymmetricMatrix2(pp: sbb / det, pBeta: -spb / det, betaBeta: spp / det)
    }

    /// The course prior `[0.02, 0.0002, 0.01, 0.001, −0.1]`, identical in every group (spec §4.3).
    public static let course = HawkesPrior(unchecked: 0.02, 0.0002, 0.01, 0.001, -0.1)

    /// The quadratic form `−½ dᵀ Σ⁻¹ d` with `d = (u − logMeanP, w − logMeanBeta)`,
    /// `u = log p`, `w = log beta`. Internal helper in log coordinates.
    @inlinable
    func quadratic(logP u: Double, logBeta w: Double) -> Double {
        let d0 = u - logMeanP, d1 = w - logMeanBeta
        let P = logPrecision
        return -0.5 * (P.pp * d0 * d0 + 2 * P.pBeta * d0 * d1 + P.betaBeta * d1 * d1)
    }

    /// The course log-prior `−½ dᵀ Σ⁻¹ d`, `d = (log p, log beta) − (logMeanP, logMeanBeta)`:
    /// the Gaussian density of `(log p, log beta)` **without** the Jacobian `−log p − log beta`
    /// and without the normalising constant (spec §4.3; `log_prior_course` in hawkes_ref.py).
    /// Maximising log-likelihood + this is the MAP of `(log p, log beta)`.
    /// - Parameters: `p` (dimensionless) and `beta` (s⁻¹); returns `-infinity` unless both are `> 0`.
    public func logDensity(p: Double, beta: Double) -> Double {
        guard p > 0, beta > 0 else { return -.infinity }
        return quadratic(logP: log(p), logBeta: log(beta))
    }

    /// ``logDensity(p:beta:)`` and its gradient:
    /// `∂/∂p = −(Σ⁻¹ d)_0 / p`, `∂/∂beta = −(Σ⁻¹ d)_1 / beta`.
    /// Returns value `-infinity` and NaN derivatives unless `p > 0` and `beta > 0`.
    public func logDensityWithGradient(p: Double, beta: Double) -> ValueGradient {
        guard p > 0, beta > 0 else { return ValueGradient(value: -.infinity, dp: .nan, dBeta: .nan, p: p, beta: beta) }
        let d0 = log(p) - logMeanP, d1 = log(beta) - logMeanBeta
        let P = logPrecision
        let g0 = P.pp * d0 + P.pBeta * d1
        let g1 = P.pBeta * d0 + P.betaBeta * d1
        return ValueGradient(value: -0.5 * (d0 * g0 + d1 * g1), dp: -g0 / p, dBeta: -g1 / beta, p: p, beta: beta)
    }

    /// The true log-density of the bivariate log-normal on `(p, beta)`:
    /// `logDensity(p:beta:) − log(2π) − ½ log det Σ − log p − log beta`.
    /// For reference only: the course does **not** optimise this (spec §4.3).
    public func fullLogDensity(p: Double, beta: Double) -> Double {
        guard p > 0, beta > 0 else { return -.infinity }
        return logDensity(p: p, beta: beta) - log(2 * Double.pi) - 0.5 * log(logCovariance.determinant)
            - log(p) - log(beta)
    }
}
