// What an alert says besides the course's {cid, msg, T_obs, n_tot}: the observed size, the
// source-clock time, the model used, an 80 % prediction interval and p_viral; and which alerts
// are emitted.
import TweetoscopeCore

/// The predictor's alert options and the making of an alert.
struct AlertPolicy: Sendable {
    /// Alert only forecasts N̂ ≥ this.
    let minSize: Double
    /// Final size from which a cascade counts as viral (events, > 0).
    let viralSize: Double
    /// Alert only when p_viral ≥ this (0 = every forecast).
    let minPViral: Double
    /// σ of the log-normal spread of forecasts made without a model (or whose model carries no residuals).
    let fallbackSigma: Double

    /// The options ``init(options:)`` reads (besides `alert_min_size`, declared with the stage's).
    static let options: [OptionSpec] = [
        OptionSpec("viral_size", .double, default: .double(5000), range: 1...1e12,
                   doc: "final size (events) from which a cascade counts as viral: p_viral = P(final size >= viral_size)"),
        OptionSpec("alert_min_p_viral", .double, default: .double(0), range: 0...1,
                   doc: "alert only forecasts whose p_viral is at least this (0 = every forecast); the others are counted `alerts_suppressed_p_viral`"),
        OptionSpec("fallback_sigma", .double, default: .double(AlertPolicy.defaultFallbackSigma), range: 0...20,
                   doc: "spread (sigma of log(true/forecast), log-normal) of forecasts made without a model or with a model carrying no residuals; gives their interval and p_viral. The default was measured on the shared SEISMIC cascades (README, \"Forecast uncertainty\")"),
    ]

    /// Measured on the shared SEISMIC cascades with the shipped configuration's collector and
    /// estimator (`scripts/calibration --fallback`, 1,079 windows of 544 cascades): the σ whose
    /// interval N̂·exp(±z₀.₉σ) holds 80 % of the true sizes around the model-less growth forecast,
    /// q₈₀(|log(n_tot/N̂)|)/z₀.₉ = 1.194 pooled over the windows 600 and 1200 s (79.3 % and 80.7 %
    /// per window), rounded to 1.2.
    static let defaultFallbackSigma = 1.2

    init(options: StageOptions) throws {
        minSize = try options.double("alert_min_size")
        guard minSize.isFinite, minSize >= 0 else { throw StageConfigError(option: "alert_min_size", "expected a number >= 0") }
        viralSize = try options.double("viral_size")
        guard viralSize.isFinite, viralSize >= 1 else { throw StageConfigError(option: "viral_size", "expected a number >= 1") }
        minPViral = try options.double("alert_min_p_viral")
        guard (0...1).contains(minPViral) else { throw StageConfigError(option: "alert_min_p_viral", "expected a probability in [0, 1]") }
        fallbackSigma = try options.double("fallback_sigma")
        guard fallbackSigma.isFinite, fallbackSigma >= 0 else { throw StageConfigError(option: "fallback_sigma", "expected a number >= 0") }
    }

    /// What becomes of a forecast's alert.
    enum Outcome: Equatable {
        case emit
        /// N̂ < `alert_min_size`.
        case belowSize
        /// p_viral < `alert_min_p_viral`.
        case belowPViral
    }

    /// The alert of forecast `nHat` of the cascade of `p`, made with `model` (nil: none), and
    /// whether it is emitted.
    func alert(_ p: CascadeParameters, nHat: Double, model: Model?, mode: CorrectionMode) -> (Alert, Outcome) {
        let spread: Spread
        if let model, !model.residuals.isEmpty {
            spread = .residuals(model.residuals)
        } else {
            spread = .logNormal(sigma: fallbackSigma)
        }
        let a = Uncertainty.assess(nHat: nHat, nObs: Double(p.nObs), spread: spread, mode: mode, viralSize: viralSize)
        let alert = Alert(cascade: p.cascade, msg: p.msg, tObs: p.tObs, nTot: nHat, nObs: p.nObs,
                          t: p.t0.isFinite ? p.t0 + Double(p.tObs) : nil, model: model?.version ?? 0,
                          interval: [a.lo, a.hi], pViral: a.pViral)
        if nHat < minSize { return (alert, .belowSize) }
        if a.pViral < minPViral { return (alert, .belowPViral) }
        return (alert, .emit)
    }
}
