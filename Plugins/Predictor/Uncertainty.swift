// How sure a forecast is: an 80 % prediction interval of the final size and the probability
// that the cascade goes viral, from the spread of log(true / forecast) on held-out cascades.
import Glibc
import TweetoscopeCore

/// The spread of ε = log(true / forecast) for one window's forecasts.
enum Spread: Sendable, Equatable {
    /// Empirical distribution: the model's out-of-bag residuals (``Model/residuals``), sorted
    /// ascending, at least one.
    case residuals([Double])
    /// ε ~ Normal(0, σ²), i.e. a log-normal factor (the `fallback_sigma` of forecasts made
    /// without a model, or with a model that carries no residuals).
    case logNormal(sigma: Double)
}

/// Prediction interval and `p_viral` of one forecast (see ``Uncertainty/assess``).
struct Assessment: Sendable, Equatable {
    var lo: Double
    var hi: Double
    var pViral: Double
}

/// Turns a forecast and a ``Spread`` into an 80 % prediction interval and P(final size ≥ V).
///
/// What the residual multiplies depends on the correction mode (see ``CorrectionMode``):
/// - `growth`: the final size is N = N̂·e^ε (the learner's target is ln(n_tot/n_obs), so its
///   residual is ln(n_tot/N̂));
/// - `course` and `none`: the supplementary count is S = (N̂ − n_obs)·e^ε and N = n_obs + S (the
///   target is the factor W of the supplementary count; residual ln(W/Ŵ)).
/// In both the interval is [f(q₁₀), f(q₉₀)] with f increasing, raised to n_obs when below it, where
/// q₁₀, q₉₀ are the 10 % and 90 % quantiles of ε (``quantile(_:_:)`` for residuals,
/// ±z₀.₉·σ for the log-normal, z₀.₉ = Φ⁻¹(0.9) = 1.2815515655446004). `p_viral` = P(N ≥ V)
/// = P(ε ≥ f⁻¹(V)): the share of residuals ≥ f⁻¹(V), or 1 − Φ(f⁻¹(V)/σ) = ½·erfc(f⁻¹(V)/(σ√2));
/// it is 1 when n_obs ≥ V already, and 0 when the forecast cannot grow (N̂ = n_obs in
/// course/none mode) and n_obs < V.
enum Uncertainty {
    /// Φ⁻¹(0.9), the 90 % quantile of the standard normal (Abramowitz & Stegun table 26.5).
    static let z90 = 1.2815515655446004

    /// Quantile `q` ∈ [0, 1] of `sorted` (ascending, non-empty) by linear interpolation between
    /// order statistics: h = (n − 1)·q, x[⌊h⌋] + (h − ⌊h⌋)(x[⌊h⌋+1] − x[⌊h⌋]) — Hyndman & Fan
    /// (1996) type 7, the default of R and numpy.
    static func quantile(_ sorted: [Double], _ q: Double) -> Double {
        precondition(!sorted.isEmpty, "quantile of an empty list")
        let h = Double(sorted.count - 1) * q
        let i = Int(h.rounded(.down))
        guard i + 1 < sorted.count else { return sorted[sorted.count - 1] }
        return sorted[i] + (h - Double(i)) * (sorted[i + 1] - sorted[i])
    }

    /// 1 − Φ(x) for the standard normal Φ, = ½·erfc(x/√2).
    static func normalSurvival(_ x: Double) -> Double { 0.5 * erfc(x / 2.squareRoot()) }

    /// The interval and `p_viral` of forecast `nHat` (≥ `nObs`) of a cascade with `nObs` events
    /// observed, under `spread`, in mode `mode`, for a viral size `viralSize` (events, > 0).
    static func assess(nHat: Double, nObs: Double, spread: Spread, mode: CorrectionMode,
                       viralSize: Double) -> Assessment {
        let multipliesTotal = mode == .growth
        // The quantity ε multiplies: N̂ itself, or the supplementary count N̂ − n_obs.
        let base = multipliesTotal ? nHat : nHat - nObs
        func size(_ eps: Double) -> Double { (multipliesTotal ? 0 : nObs) + base * exp(eps) }

        let (q10, q90): (Double, Double)
        switch spread {
        case .residuals(let r):
            (q10, q90) = (quantile(r, 0.1), quantile(r, 0.9))
        case .logNormal(let sigma):
            (q10, q90) = (-z90 * sigma, z90 * sigma)
        }
        let lo = max(nObs, size(q10))
        let hi = max(lo, size(q90))

        let p: Double
        if nObs >= viralSize {
            p = 1
        } else if base <= 0 {
            p = 0
        } else {
            // N ≥ V ⇔ ε ≥ t.
            let t = log((viralSize - (multipliesTotal ? 0 : nObs)) / base)
            switch spread {
            case .residuals(let r):
                // Share of residuals ≥ t (r is sorted: binary search for the first ≥ t).
                var a = 0, b = r.count
                while a < b {
                    let m = (a + b) / 2
                    if r[m] < t { a = m + 1 } else { b = m }
                }
                p = Double(r.count - a) / Double(r.count)
            case .logNormal(let sigma):
                p = sigma > 0 ? normalSurvival(t / sigma) : (t <= 0 ? 1 : 0)
            }
        }
        return Assessment(lo: lo, hi: hi, pViral: p)
    }
}
