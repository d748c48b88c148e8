// The estimator stage: a MAP fit of the marked Hawkes process on every partial cascade (spec §4),
// emitting `parameters` messages with the raw forecast.
import Glibc
import Hawkes
import Synchronization
import TweetoscopeCore

@_cdecl("tweetoscope_plugin_register")
public func tweetoscopePluginRegister(_ abi: UInt32, _ registrar: UnsafeMutableRawPointer) -> Int32 {
    PluginABI.entry(abi, registrar) { $0.register(EstimatorStage.descriptor) }
}

/// Fits (p, beta) on each `series` with the Hawkes module's global MAP and emits a
/// `parameters` message keyed by T_obs.
///
/// - Observation end: the window end T_obs (times are relative to the first tweet), as the
///   spec requires (§4.2, pitfall §9.6), not the last event's time.
/// - `n_supp` is, with the option `n_supp: supplementary` (default), the supplementary count
///   G1/(1 − n*) (spec §1.3: the name says supplementary; the raw Hawkes forecast of the final
///   size is `n_obs + n_supp`); with `n_supp: total`, the total forecast n_obs + G1/(1 − n*)
///   that five course implementations send (and course predictors read). `n_star` and `G1` are
///   sent too, so consumers need not recompute them.
/// - Zero magnitudes are kept. A root with 0 followers makes the intensity after it exactly 0
///   and no MAP exists; by default such a root's mark is read as `zero_root_mark` (1) — the
///   GAS course variant — and `zero_root_mark: 0` rejects those cascades instead.
/// - A failed fit emits nothing, is counted under `rejected.fit_<reason>` and logged; the stage
///   goes on. Output order is input order; fits of one input batch run in parallel.
/// - `features` (an object field of this project's format, ignored by course consumers): shape
///   and SEISMIC features of the observed events up to T_obs (``SeriesFeatures``), which the
///   predictor's `growth` mode uses beside the fit.
/// - The series' stream-order number (`seq`, set by the collector) is carried onto the
///   parameters, so the predictor handles them in the collector's order.
final class EstimatorStage: Stage {
    static let descriptor = StageDescriptor(
        type: "estimator",
        summary: "MAP fit of a marked Hawkes process on each partial cascade; emits parameters and the raw forecast.",
        inputs: [PortSpec("series", kinds: [.series], doc: "partial cascades (cascade_series)")],
        outputs: [PortSpec("parameters", kinds: [.parameters], doc: "Hawkes parameters keyed by T_obs (cascade_properties)")],
        options: [
            OptionSpec("alpha", .double, default: .double(2.4), range: 2...100, doc: "power-law exponent of the marks (> 2); E[m] = mu (alpha-1)/(alpha-2)"),
            OptionSpec("mu", .double, default: .double(10), range: 1e-9...1e12, doc: "minimum mark of the power law, in followers (> 0)"),
            OptionSpec("method", .choice(["map", "mle"]), default: .string("map"),
                       doc: "map: maximum a posteriori with `prior`; mle: maximum likelihood"),
            OptionSpec("prior", .doubleList, default: .list([.double(0.02), .double(0.0002), .double(0.01), .double(0.001), .double(-0.1)]),
                       doc: "[mu_p, mu_beta (1/s), sig_p, sig_beta (1/s), corr]: moments of the log-normal prior on (p, beta)"),
            OptionSpec("max_n_star", .double, default: .double(1), range: 1e-9...1, doc: "largest branching factor allowed, in (0, 1]"),
            OptionSpec("zero_root_mark", .double, default: .double(1),
                       range: 0...1e12, doc: "followers assumed for a root with 0 followers (0 = reject such cascades)"),
            OptionSpec("parallelism", .int, default: .int(0), range: 0...1024, doc: "fits run at once (0 = number of cores)"),
            OptionSpec("n_supp", .choice(NSuppMeaning.allCases.map(\.rawValue)), default: .string(NSuppMeaning.supplementary.rawValue),
                       doc: "what the n_supp field of parameters carries: supplementary = G1/(1-n*); total = n_obs + G1/(1-n*) (the course majority)"),
        ],
        make: { name, options in try EstimatorStage(options: options) })
        .declaring(metrics: [
            MetricSpec("tweetoscope_estimator_fit_seconds", help: "Time of one Hawkes MAP fit, in seconds, by T_obs."),
            MetricSpec("tweetoscope_estimator_failed_fits_total", help: "Hawkes fits that failed, by reason."),
        ])

    let estimator: HawkesEstimator
    let parallelism: Int
    let nSuppMeaning: NSuppMeaning

    init(options: StageOptions) throws {
        let marks: MarkDistribution
        do {
            let alpha = try options.double("alpha"), mu = try options.double("mu")
            marks = try MarkDistribution(alpha: alpha, mu: mu)
        } catch let error as HawkesError {
            throw StageConfigError(option: "alpha", "\(error)")
        }
        var prior: HawkesPrior?
        if try options.string("method") == "map" {
            let h = try options.doubles("prior")
            guard h.count == 5 else { throw StageConfigError(option: "prior", "expected 5 numbers [mu_p, mu_beta, sig_p, sig_beta, corr]") }
            do {
                prior = try HawkesPrior(muP: h[0], muBeta: h[1], sigP: h[2], sigBeta: h[3], corr: h[4])
            } catch {
                throw StageConfigError(option: "prior", "\(error)")
            }
        }
        let zeroRoot = try options.double("zero_root_mark")
        guard zeroRoot >= 0 else { throw StageConfigError(option: "zero_root_mark", "expected a number >= 0") }
        do {
            estimator = try HawkesEstimator(marks: marks, prior: prior, maxNStar: try options.double("max_n_star"),
                                            zeroMarkPolicy: zeroRoot > 0 ? .replaceZeroRootMark(with: zeroRoot) : .strict)
        } catch let error as HawkesError {
            throw StageConfigError(option: "max_n_star", "\(error)")
        }
        let p = try options.int("parallelism")
        guard p >= 0 else { throw StageConfigError(option: "parallelism", "expected an integer >= 0") }
        parallelism = p > 0 ? p : max(1, activeProcessorCount())
        nSuppMeaning = NSuppMeaning(rawValue: try options.string("n_supp")) ?? .supplementary
    }

    func run(_ context: StageContext) async throws {
        guard let input = context.inputs("series").first else { return }
        let output = context.output("parameters")
        let timers = FitTimers(stage: context.name)
        // Every failure reason from the start (at 0), so that rates exist before the first failure.
        var failedFits: [String: Counter] = [:]
        for reason in Self.failureReasons {
            failedFits[reason] = Counter(label: "tweetoscope_estimator_failed_fits_total",
                                         dimensions: context.metricDimensions + [("reason", reason)])
        }
        let kernel = KernelTable()
        while let batch = await input.next() {
            let began = ContinuousClock.now
            let series = batch.compactMap { message -> Series? in
                if case .series(let s) = message { return s }
                context.counters.reject("not_a_series")
                return nil
            }
            let results = await fitAll(series, timers: timers)
            var out: [Message] = []
            out.reserveCapacity(results.count)
            for (s, result) in zip(series, results) {
                switch result {
                case .success(let fit):
                    context.counters.add("fits")
                    out.append(.parameters(CascadeParameters(
                        cascade: s.cascade, msg: s.msg, tObs: s.tObs, nObs: fit.nObs,
                        nSupp: nSuppMeaning == .total ? Double(fit.nObs) + fit.nSupp : fit.nSupp, nSuppMeaning: nSuppMeaning,
                        p: fit.p, beta: fit.beta, nStar: fit.nStar, g1: fit.g1, seq: s.seq, t0: s.t0,
                        features: SeriesFeatures.compute(times: s.times, magnitudes: s.magnitudes, tObs: Double(s.tObs),
                                                          kernel: kernel))))
                case .failure(let error):
                    let reason = Self.reason(error)
                    context.counters.reject("fit_\(reason)")
                    failedFits[reason]?.increment()
                    context.warnRateLimited("fit_\(reason)", "fit failed: \(error)", metadata: [
                        "cascade": .string("\(s.cascade)"), "T_obs": .string("\(s.tObs)"), "n_obs": .string("\(s.count)"),
                    ])
                }
            }
            context.recordProcessing(since: began)
            await output?.send(out)
        }
    }

    /// Fits every series, in parallel chunks, keeping the input order; each fit's time goes to
    /// `timers` (`tweetoscope_estimator_fit_seconds{stage,t_obs}`).
    func fitAll(_ series: [Series], timers: FitTimers? = nil) async -> [Result<HawkesFit, HawkesError>] {
        let estimator = self.estimator
        let fitOne: @Sendable (Series) -> Result<HawkesFit, HawkesError> = { s in
            let began = ContinuousClock.now
            defer { timers?.record(tObs: s.tObs, since: began) }
            return Result { () throws(HawkesError) -> HawkesFit in
                try estimator.fit(ObservedCascade(times: s.times, marks: s.magnitudes,
                                                  observationEnd: Double(s.tObs), dropLaterEvents: true))
            }
        }
        let chunks = min(parallelism, series.count)
        if chunks <= 1 { return series.map(fitOne) }
        let size = (series.count + chunks - 1) / chunks
        return await withTaskGroup(of: (Int, [Result<HawkesFit, HawkesError>]).self) { group in
            for start in stride(from: 0, to: series.count, by: size) {
                let slice = Array(series[start..<min(start + size, series.count)])
                group.addTask { (start, slice.map(fitOne)) }
            }
            var parts: [(Int, [Result<HawkesFit, HawkesError>])] = []
            for await part in group { parts.append(part) }
            return parts.sorted { $0.0 < $1.0 }.flatMap(\.1)
        }
    }

    /// Every value of ``reason(_:)``.
    static let failureReasons = ["empty_cascade", "length_mismatch", "non_finite_input", "negative_mark", "unsorted_times",
                                 "bad_observation_end", "zero_root_mark", "n_star_too_large", "invalid_parameter",
                                 "numerical_failure"]

    /// A short, stable counter name for a fit failure.
    static func reason(_ error: HawkesError) -> String {
        switch error {
        case .emptyCascade: "empty_cascade"
        case .lengthMismatch: "length_mismatch"
        case .nonFiniteTime, .nonFiniteMark: "non_finite_input"
        case .negativeMark: "negative_mark"
        case .unsortedTimes: "unsorted_times"
        case .invalidObservationEnd, .eventAfterObservationEnd: "bad_observation_end"
        case .zeroIntensity: "zero_root_mark"
        case .branchingFactorTooLarge: "n_star_too_large"
        case .invalidMarkDistribution, .invalidPrior, .invalidParameter: "invalid_parameter"
        case .numericalFailure: "numerical_failure"
        }
    }
}

/// The fit-time histograms of one estimator stage, one per window.
final class FitTimers: Sendable {
    private let stage: String
    private let timers = Mutex<[Int: Timer]>([:])

    init(stage: String) { self.stage = stage }

    func record(tObs: Int, since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        let timer = timers.withLock { t in
            if let timer = t[tObs] { return timer }
            let timer = Timer(label: "tweetoscope_estimator_fit_seconds", dimensions: [("stage", stage), ("t_obs", "\(tObs)")])
            t[tObs] = timer
            return timer
        }
        let (s, atto) = elapsed.components
        timer.recordNanoseconds(s * 1_000_000_000 + atto / 1_000_000_000)
    }
}

/// Number of online processors.
func activeProcessorCount() -> Int {
    Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
}
