// Global MAP (or MLE) estimator of (p, beta) within the course bounds. Spec §4.3–4.4.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What the estimator does with a cascade whose **root** has mark 0 and that has later events.
///
/// Zero-magnitude convention (identical to the golden file): a follower count of 0 is kept as
/// is; such an event contributes `m_j = 0` to every later intensity `A_i` and to the
/// compensator (`log m_j = −∞` is harmless in the log-space sum). The only degenerate case is
/// a root with mark 0 and `n >= 2`: then `A_2 = 0` (every mark before event 2 is 0), the
/// log-likelihood is `−∞` for every `(p, beta)` and no MAP exists.
public enum ZeroMarkPolicy: Sendable, Hashable {
    /// Throw ``HawkesError/zeroIntensity`` for that case (default; the exact model).
    case strict
    /// Replace the root's mark 0 by the given positive value before fitting (the course variant
    /// of GAS, which adds 1 to the offending mark, is `.replaceZeroRootMark(with: 1)`).
    /// Other zero marks are never changed. The fit's `logPosterior` is then that of the
    /// modified cascade.
    case replaceZeroRootMark(with: Double)
}

/// Bounds of the MAP search (spec §4.3): `p ∈ [1e−8, maxNStar/E[m] − 1e−8]`,
/// `beta ∈ [1/(10 days), 1/60] s⁻¹`.
public struct ParameterBounds: Sendable, Hashable {
    /// Closed range of `p` (dimensionless).
    public let p: ClosedRange<Double>
    /// Closed range of `beta`, s⁻¹.
    public let beta: ClosedRange<Double>
}

/// Result of a fit: MAP (or MLE) parameters and the prediction at them (spec §4.4).
///
/// Every field is finite; `nStar < maxNStar <= 1`.
public struct HawkesFit: Sendable, Hashable {
    /// Fitted `p` (dimensionless: expected direct retweets per follower of the retweeter).
    public let p: Double
    /// Fitted decay `beta`, s⁻¹.
    public let beta: Double
    /// Objective at the optimum: course log-posterior `LL + logDensity` (MAP), or `LL` (MLE),
    /// from the search's O(n) statistics at the returned point (agrees with
    /// ``ObservedCascade/logPosterior(p:beta:prior:)`` to ~1e−12 relative).
    public let logPosterior: Double
    /// Number of observed events `n` (original tweet included).
    public let nObs: Int
    /// `G1 = p Σ_i m_i e^{−β(T−t_i)}`: expected direct offspring still to come (retweets).
    public let g1: Double
    /// Branching factor `n* = p E[m]`.
    public let nStar: Double
    /// `p` sits on its lower bound (within 1e−6 relative).
    public let pAtLower: Bool
    /// `p` sits on its upper bound `maxNStar/E[m] − 1e−8` (within 1e−6 relative).
    public let pAtUpper: Bool
    /// `beta` sits on its lower bound 1/(10 days) (within 1e−6 relative).
    public let betaAtLower: Bool
    /// `beta` sits on its upper bound 1/60 s⁻¹ (within 1e−6 relative).
    public let betaAtUpper: Bool
    /// Number of O(n) traversals of the cascade the search used (a paired grid traversal counts
    /// once; diagnostics).
    public let passes: Int

    /// Expected supplementary events, all generations: `G1/(1 − n*)` (spec §4.4 `n_supp`).
    @inlinable public var nSupp: Double { g1 / (1 - nStar) }
    /// Predicted final size `N∞ = n + G1/(1 − n*)` (spec §4.4).
    @inlinable public var forecast: Double { Double(nObs) + nSupp }
    /// The prediction part of the fit.
    @inlinable public var prediction: HawkesPrediction { HawkesPrediction(nObs: nObs, g1: g1, nStar: nStar) }
}

/// Finds the **global** maximum of the course log-posterior (MAP, spec §4.3) — or of the
/// log-likelihood if `prior` is `nil` (MLE variant) — over the course bounds.
///
/// Method (not the course's Powell, which can stop on the wrong mode): for a fixed `beta` one
/// O(n) pass gives the sufficient statistics `Σ log A_i`, `K(β) = Σ m_i (1 − e^{−β(T−t_i)})`
/// and their derivatives; the objective is then strictly concave in `log p`, whose optimum is
/// found by a safeguarded Newton solve without touching the data (p is profiled out). The
/// profile `F(log β)` (value, exact first and second derivative) is scanned on a uniform grid
/// over the whole `log β` range — the posterior can be bimodal in `beta` — and every bracketed
/// local maximum (plus a cubic-Hermite check for bumps between grid nodes) is refined by
/// safeguarded Newton (stopping when the Newton step in `log beta` is below 1e−9); boundary
/// maxima are taken exactly (the returned `p`/`beta` are then exactly the bound values).
///
/// Cost: `gridSize/2` traversals of the data for the grid (two nodes per traversal, SIMD2) plus
/// ~3–5 for the refinement, each ~3–5 ns per event for whole-second times (as in Twitter data)
/// and ~10–15 ns for fractional times; no allocation proportional to `n` beyond the validated
/// copy of the input. Value type, `Sendable`: one estimator can serve many threads.
public struct HawkesEstimator: Sendable, Hashable {
    /// Mark distribution giving `E[m]` (default ``MarkDistribution/course``).
    public let marks: MarkDistribution
    /// Prior; `nil` means MLE (spec §4.3 "MLE variant"). Default ``HawkesPrior/course``.
    public let prior: HawkesPrior?
    /// Maximum branching factor, in `(0, 1]`; `p <= maxNStar/E[m] − 1e−8` (default 1).
    public let maxNStar: Double
    /// Number of `log beta` grid nodes of the global scan (`>= 3`, default 12).
    public let gridSize: Int
    /// Zero-magnitude policy for a root with mark 0 (default ``ZeroMarkPolicy/strict``).
    public let zeroMarkPolicy: ZeroMarkPolicy
    /// Search bounds.
    public let bounds: ParameterBounds

    /// Lower bound of `p` (spec §4.3).
    public static let pLowerBound = 1e-8
    /// Lower bound of `beta`: 1/(10 days), s⁻¹ (spec §4.3).
    public static let betaLowerBound = 1.0 / (10.0 * 86400.0)
    /// Upper bound of `beta`: 1/60 s⁻¹ (spec §4.3).
    public static let betaUpperBound = 1.0 / 60.0

    /// Creates an estimator.
    /// - Throws: ``HawkesError/invalidParameter(name:value:)`` if `maxNStar` is not in `(0, 1]`
    ///   or leaves an empty `p` range, if `gridSize < 3`, or if the replacement root mark of
    ///   ``ZeroMarkPolicy/replaceZeroRootMark(with:)`` is not positive and finite.
    public init(marks: MarkDistribution = .course, prior: HawkesPrior? = .course, maxNStar: Double = 1,
                gridSize: Int = 12, zeroMarkPolicy: ZeroMarkPolicy = .strict) throws(HawkesError) {
        guard maxNStar.isFinite, maxNStar > 0, maxNStar <= 1 else { throw .invalidParameter(name: "maxNStar", value: maxNStar) }
        let pHi = maxNStar / marks.mean - Self.pLowerBound
        guard pHi > Self.pLowerBound else { throw .invalidParameter(name: "maxNStar", value: maxNStar) }
        guard gridSize >= 3 else { throw .invalidParameter(name: "gridSize", value: Double(gridSize)) }
        if case let .replaceZeroRootMark(v) = zeroMarkPolicy, !(v.isFinite && v > 0) {
            throw .invalidParameter(name: "replaceZeroRootMark", value: v)
        }
        self.init(validated: marks, prior, maxNStar, gridSize, zeroMarkPolicy)
    }

    private init(validated marks: MarkDistribution, _ prior: HawkesPrior?, _ maxNStar: Double, _ gridSize: Int,
                 _ zeroMarkPolicy: ZeroMarkPolicy) {
        self.marks = marks
        self.prior = prior
        self.maxNStar = maxNStar
        self.gridSize = gridSize
        self.zeroMarkPolicy = zeroMarkPolicy
        let pHi = maxNStar / marks.mean - Self.pLowerBound
        self.bounds = ParameterBounds(p: Self.pLowerBound...pHi, beta: Self.betaLowerBound...Self.betaUpperBound)
    }

    /// The course estimator (spec §4.3): α = 2.4, μ = 10, course prior, `maxNStar = 1`,
    /// bounds `p ∈ [1e−8, 1/35 − 1e−8]`, `beta ∈ [1/864000, 1/60]`.
    public static let course = HawkesEstimator(validated: .course, .course, 1, 12, .strict)

    /// Fits `(p, beta)` to times/marks observed until `observationEnd`; see ``fit(_:)``.
    /// - Throws: the validation errors of ``ObservedCascade/init(times:marks:observationEnd:dropLaterEvents:)``
    ///   and those of ``fit(_:)``.
    public func fit(times: [Double], marks: [Double], observationEnd: Double) throws(HawkesError) -> HawkesFit {
        try fit(ObservedCascade(times: times, marks: marks, observationEnd: observationEnd))
    }

    /// Global MAP (or MLE) fit and the prediction at the optimum.
    /// - Throws: ``HawkesError/zeroIntensity`` (root mark 0 with later events under
    ///   ``ZeroMarkPolicy/strict``), ``HawkesError/branchingFactorTooLarge(nStar:limit:)`` and
    ///   ``HawkesError/numericalFailure(reason:)`` (defensive; not expected).
    public func fit(_ input: ObservedCascade) throws(HawkesError) -> HawkesFit {
        var cascade = input
        if cascade.count >= 2, cascade.marks[0] == 0 {
            switch zeroMarkPolicy {
            case .strict: throw .zeroIntensity
            case let .replaceZeroRootMark(v): cascade = cascade.replacingRootMark(with: v)
            }
        }
        let c = cascade
        return try c.times.withUnsafeBufferPointer { (t) throws(HawkesError) -> HawkesFit in
            try c.marks.withUnsafeBufferPointer { (m) throws(HawkesError) -> HawkesFit in
                var search = ProfileSearch(t: t, m: m, end: c.observationEnd, prior: prior,
                                           pBounds: bounds.p, betaBounds: bounds.beta)
                let best = search.run(gridSize: gridSize)
                return try finish(best: best, n: t.count, passes: search.passes)
            }
        }
    }

    private func finish(best: ProfilePoint, n: Int, passes: Int) throws(HawkesError) -> HawkesFit {
        // the best evaluated point carries its statistics (fast pass, or log-space fallback)
        let beta = best.beta
        let st = best.stats
        let p = best.p
        let n1 = Double(n - 1)
        var value = n1 * (log(p) + log(beta)) + st.sumLogA - p * st.k
        if let prior { value += prior.logDensity(p: p, beta: beta) }
        let g1 = p * st.g
        let nStar = p * marks.mean
        guard nStar < maxNStar else { throw .branchingFactorTooLarge(nStar: nStar, limit: maxNStar) }
        guard p.isFinite, beta.isFinite, value.isFinite, g1.isFinite, g1 >= 0 else {
            throw .numericalFailure(reason: "non-finite fit p=\(p) beta=\(beta) logPost=\(value) G1=\(g1)")
        }
        let rt = 1e-6
        return HawkesFit(p: p, beta: beta, logPosterior: value, nObs: n, g1: g1, nStar: nStar,
                         pAtLower: p <= bounds.p.lowerBound * (1 + rt), pAtUpper: p >= bounds.p.upperBound * (1 - rt),
                         betaAtLower: beta <= bounds.beta.lowerBound * (1 + rt),
                         betaAtUpper: beta >= bounds.beta.upperBound * (1 - rt), passes: passes)
    }
}
