// Correction modes of the predictor: how Hawkes parameters become a forecast, a feature vector
// and a learning target. The learner only fits X -> target; everything mode-specific is here.
import Glibc
import TweetoscopeCore

/// How the predictor corrects the raw Hawkes forecast `n_obs + G1/(1 − n*)` (spec §5).
///
/// | mode | features X | target (sample `W`) | forecast N̂ with a model f | without a model |
/// |---|---|---|---|---|
/// | `none` | [beta, n*, G1] | (n_tot − n_obs)(1 − n*)/G1 | models are not used | n_obs + G1/(1 − n*) |
/// | `course` | [beta, n*, G1] | (n_tot − n_obs)(1 − n*)/G1 | n_obs + f(X)·G1/(1 − n*) | min(n_obs + G1/(1 − n*), `fallback_max_growth`·n_obs) (W = 1) |
/// | `growth` (default) | the 15 of ``growthFeatureNames`` | ln(n_tot/n_obs) | n_obs·exp(f(X) + c) | min(n_obs + n_supp, `fallback_max_growth`·n_obs) |
///
/// - `none` is the raw Hawkes forecast; it still emits the course's samples, so a `none`
///   pipeline produces course-compatible training data, but it never uses a model.
/// - `course` is the course design exactly (spec §1.4, §5, §6): the forest learns the correction
///   factor W of the supplementary count.
/// - `growth` learns the log of the growth factor n_tot/n_obs from window-relative features: the
///   Hawkes forecast relative to what was seen (n_supp/n_obs, G1/n_obs), the fitted parameters and
///   n_obs itself. Measured on the SEISMIC cascades, it beats `course` because (1) the forest's
///   leaf means are taken in log space, a geometric mean that suits a relative error, where the
///   course's mean of W is pulled up by a few huge factors; (2) the forecast no longer multiplies
///   by G1/(1 − n*), which explodes when a heavily followed user (real follower counts are far
///   heavier than the course's E[m] = 35) retweets early or when n* nears 1, so a forecast stays
///   within the growth factors seen in training. Before the window's first model arrives the
///   raw forecast is used, capped at `fallback_max_growth`·n_obs for the same reason.
///   Beside the fit, X has features of the observed series that the estimator sends in the
///   parameters' `features` object (magnitudes, timing shares, SEISMIC exposure and
///   infectiousness, T_obs: ``growthFeatureNames``); parameters without them (a course
///   estimator) are forecast without a model (the fallback, counted `no_features`) and give no
///   sample. c is the model's `shift`, the log-shift the learner chose on the out-of-bag
///   predictions to minimise their median ARE.
///
/// Guards (all modes): n* ≥ 1 is read as n* = 1 − 1e-6 (counted `clamped_n_star`); G1 = 0 gives
/// the forecast n_obs and no course sample (W is undefined); a message without n* (the base
/// spec's `{"params": [p, beta], "n_supp"}`) gets n* = p·E[m] with E[m] = mu(alpha−1)/(alpha−2)
/// from the predictor's `alpha`/`mu` options (spec §4.1, §5, as the course predictors do); a
/// message without G1 gets G1 = s·(1 − n*) where s is the supplementary count its `n_supp`
/// stands for (n_supp, or n_supp − n_obs when the predictor's `n_supp` option is `total`; CHA's
/// derivation, spec §1.3); messages with an invalid n*, beta, p or n_obs, or whose forecast is
/// not finite, are rejected. Nothing non-finite is ever emitted.
enum CorrectionMode: String, CaseIterable, Sendable {
    case none, course, growth

    static let defaultMode = CorrectionMode.growth

    /// Length of the feature vector of the mode's samples.
    var featureCount: Int {
        switch self {
        case .none, .course: 3
        case .growth: growthFeatureNames.count
        }
    }
}

/// The `growth` mode's features, in the order of X: the first five come from the Hawkes fit, the
/// others from the estimator's `features` object (their names there, the transformation applied)
/// and T_obs; m are magnitudes (followers), ln1p(x) = ln(1 + x).
let growthFeatureNames = [
    "n_obs", "n_supp/n_obs", "n_star", "beta", "G1/n_obs",
    "ln1p(root_m)", "ln1p(max_m)", "ln1p(median_m)", "ln1p(sum_m)",
    "share_after_3q", "share_after_half", "share_first_quarter",
    "ln1p(seismic_exposure)", "seismic_p", "T_obs",
]

/// The series features of X (``growthFeatureNames`` after the first five) from a `features`
/// object and T_obs; nil when a name is missing or a value is not finite or is negative.
func seriesFeatures(_ f: [String: Double]?, tObs: Int) -> [Double]? {
    guard let f else { return nil }
    var out: [Double] = []
    out.reserveCapacity(10)
    for name in ["root_m", "max_m", "median_m", "sum_m"] {
        guard let v = f[name], v.isFinite, v >= 0 else { return nil }
        out.append(Glibc.log1p(v))
    }
    for name in ["share_after_3q", "share_after_half", "share_first_quarter"] {
        guard let v = f[name], v.isFinite, (0...1).contains(v) else { return nil }
        out.append(v)
    }
    guard let s = f["seismic_exposure"], s.isFinite, s >= 0, let p = f["seismic_p"], p.isFinite, p >= 0 else { return nil }
    out.append(Glibc.log1p(s))
    out.append(p)
    out.append(Double(tObs))
    return out
}

/// The largest n* the predictor uses; n* ≥ 1 (an exploding process) is clamped to it.
let nStarCeiling = 1 - 1e-6

/// Hawkes parameters of one cascade and window after validation and guards.
struct HawkesInputs: Sendable, Hashable {
    var nObs: Double
    var beta: Double
    var nStar: Double
    var g1: Double
    /// G1/(1 − n*), finite.
    var nSupp: Double
    /// Whether n* was clamped to ``nStarCeiling``.
    var clamped: Bool
    /// The series features of the `growth` mode (``seriesFeatures(_:tObs:)``); nil when the
    /// parameters did not carry usable ones.
    var series: [Double]? = nil

    /// Validates `p`; nil with a rejection reason when it cannot be used.
    ///
    /// - Parameters:
    ///   - meanMark: E[m] in followers, used for n* = p·E[m] when `p` has no n*.
    ///   - nSupp: what `p.nSupp` means when the message does not say (a decoded message).
    static func make(_ p: CascadeParameters, meanMark: Double = 35,
                     nSupp: NSuppMeaning = .supplementary) -> Result<HawkesInputs, InvalidParameters> {
        guard p.nObs >= 1 else { return .failure(.init("n_obs")) }
        guard p.beta.isFinite, p.beta >= 0 else { return .failure(.init("beta")) }
        var rawNStar = p.nStar
        if rawNStar.isNaN {
            guard p.p.isFinite, p.p >= 0 else { return .failure(.init("p")) }
            rawNStar = p.p * meanMark
        }
        guard rawNStar.isFinite, rawNStar >= 0 else { return .failure(.init("n_star")) }
        let clamped = rawNStar >= nStarCeiling
        let nStar = min(rawNStar, nStarCeiling)
        var g1 = p.g1
        if g1.isNaN {
            let supplementary = p.supplementary(assuming: nSupp)
            guard supplementary.isFinite, supplementary >= 0 else { return .failure(.init("n_supp")) }
            g1 = supplementary * (1 - nStar)
        }
        guard g1.isFinite, g1 >= 0 else { return .failure(.init("G1")) }
        let nSupp = g1 / (1 - nStar)
        guard nSupp.isFinite else { return .failure(.init("n_supp")) }
        return .success(HawkesInputs(nObs: Double(p.nObs), beta: p.beta, nStar: nStar, g1: g1, nSupp: nSupp,
                                     clamped: clamped, series: seriesFeatures(p.features, tObs: p.tObs)))
    }
}

/// Why a `parameters` message was rejected: the offending field.
struct InvalidParameters: Error, Sendable {
    var field: String
    init(_ field: String) { self.field = field }
}

/// Why no sample is produced for a completed pair.
enum NoSample: String, Error, Sendable {
    /// G1 = 0: the course's W = (n_tot − n_obs)(1 − n*)/G1 is undefined.
    case g1Zero = "sample_g1_zero"
    /// n_tot < n_obs: the size and the parameters disagree.
    case sizeBelowObserved = "sample_size_below_n_obs"
    /// `growth` mode: the parameters carried no series features (a course estimator).
    case noFeatures = "sample_no_features"
}

/// The computations of one correction mode.
struct Correction: Sendable {
    let mode: CorrectionMode
    /// `growth` only: largest N̂/n_obs of the model-less fallback forecast.
    let fallbackMaxGrowth: Double

    /// The feature vector X of the mode (see ``CorrectionMode``); nil in `growth` mode when the
    /// parameters carried no usable series features.
    func features(_ h: HawkesInputs) -> [Double]? {
        switch mode {
        case .none, .course:
            return [h.beta, h.nStar, h.g1]
        case .growth:
            guard let series = h.series else { return nil }
            return [h.nObs, h.nSupp / h.nObs, h.nStar, h.beta, h.g1 / h.nObs] + series
        }
    }

    /// The forecast N̂ with `model` (nil: none yet, or mode `none`), whether the model was used,
    /// and whether a bound applied. N̂ is at least n_obs; nil when it is not finite.
    ///
    /// In `growth` mode the model's `shift` c is added to f(X) first. Without the series
    /// features (`growth`), the model is not used (the fallback forecast).
    ///
    /// Bounds (issue 12 item 5): a model's prediction f(X) is clamped to the range of the targets
    /// it was trained on ([`w_min`, `w_max`]) and N̂ to `growth_max`·n_obs, the largest growth
    /// factor seen in training; without a model (`course`, `growth`) N̂ ≤ `fallback_max_growth`·n_obs.
    /// Mode `none` is the raw Hawkes forecast, unbounded by definition.
    func forecast(_ h: HawkesInputs, model: Model?) -> (nHat: Double, usedModel: Bool, bounded: Bool)? {
        let raw = h.nObs + h.nSupp
        var nHat: Double
        var used = false
        var bounded = false
        func clamp(_ y: Double, _ model: Model) -> Double {
            var y = y
            if let lo = model.wMin, y < lo { y = lo; bounded = true }
            if let hi = model.wMax, y > hi { y = hi; bounded = true }
            return y
        }
        switch mode {
        case .none:
            nHat = raw
        case .course, .growth:
            if let model, let x = features(h), let f = model.predict(x), f.isFinite {
                let y = clamp(mode == .growth ? f + (model.shift ?? 0) : f, model)
                nHat = mode == .course ? h.nObs + y * h.nSupp : h.nObs * Glibc.exp(min(y, 700))
                used = true
                if let g = model.growthMax, nHat > g * h.nObs {
                    nHat = g * h.nObs
                    bounded = true
                }
            } else if raw > fallbackMaxGrowth * h.nObs {
                nHat = fallbackMaxGrowth * h.nObs
                bounded = true
            } else {
                nHat = raw
            }
        }
        nHat = max(nHat, h.nObs)
        guard nHat.isFinite else { return nil }
        return (nHat, used, bounded)
    }

    /// The learning target for a cascade of final size `nTot` (see ``CorrectionMode``).
    func target(_ h: HawkesInputs, nTot: Int) -> Result<Double, NoSample> {
        let n = Double(nTot)
        guard n >= h.nObs else { return .failure(.sizeBelowObserved) }
        switch mode {
        case .none, .course:
            guard h.g1 > 0 else { return .failure(.g1Zero) }
            let w = (n - h.nObs) * (1 - h.nStar) / h.g1
            return w.isFinite ? .success(w) : .failure(.g1Zero)
        case .growth:
            return .success(Glibc.log(n / h.nObs))
        }
    }
}
