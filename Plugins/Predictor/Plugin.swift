// The predictor stage (spec §5): forecasts each cascade's final size from its Hawkes parameters
// and the window's latest model, emits alerts, and once the true size is known emits a stat
// (the forecast's ARE) and a training sample for the learner.
import Synchronization
import TweetoscopeCore

@_cdecl("tweetoscope_plugin_register")
public func tweetoscopePluginRegister(_ abi: UInt32, _ registrar: UnsafeMutableRawPointer) -> Int32 {
    PluginABI.entry(abi, registrar) { $0.register(PredictorStage.descriptor) }
}

/// The latest model of each window, written by the models reader and read by the forecasts.
final class ModelTable: Sendable {
    private let models = Mutex<[Int: Model]>([:])

    func set(_ model: Model) { models.withLock { $0[model.tObs] = model } }
    func model(_ tObs: Int) -> Model? { models.withLock { $0[tObs] } }
}

/// Forecasts final sizes and measures them (spec §5).
///
/// - On `parameters` (cid, T_obs): forecasts N̂ with the window's latest model of the stage's
///   `mode` (see ``CorrectionMode``; until a model arrives, the mode's model-less forecast,
///   which for `course` is W = 1, the raw Hawkes forecast), emits an `alert` {cid, msg, T_obs,
///   n_tot: N̂} when N̂ ≥ `alert_min_size`, and keeps the forecast until the size arrives.
/// - On `size` (cid, T_obs, n_tot), before or after the parameters: once both halves are there it
///   emits a `stat` {cid, T_obs, ARE = |N̂ − n_tot|/n_tot} and a `sample` {cid, T_obs, X, W}
///   (X and W as the mode defines them), then forgets the pair.
/// - A second `parameters` or `size` for a (cid, T_obs) that is waiting or was completed (among
///   the last `max_pending` completed) is ignored and counted (`rejected.duplicate_*`).
/// - Bounded memory: at most `max_pending` halves wait (the oldest is evicted, counted
///   `evicted`); a half waiting longer than `pending_ttl` wall-clock seconds is dropped
///   (`expired`). A size whose window got no series (too small at T_obs) or whose fit failed
///   never gets its parameters: it waits until it expires or is evicted, or is counted in
///   `pending_sizes_at_end` when the run ends.
/// - Models: the `models` input is drained by a task of its own into a latest-model-per-window
///   table, so the learner → predictor cycle can never block on back-pressure. A model of
///   another mode is ignored and counted (`models_other_mode`); in mode `none` models are not
///   used (`models_unused`). When `properties` ends the stage stops reading `models` and returns.
/// - At the end it logs one line per window (forecasts, stats, median and mean ARE, shares
///   within 20 % and 50 %) and leaves the same figures in its counters, in thousandths:
///   `are<T_obs>_median_milli`, `are<T_obs>_mean_milli`, `are<T_obs>_within20_milli`.
final class PredictorStage: Stage {
    static let descriptor = StageDescriptor(
        type: "predictor",
        summary: "Forecasts final cascade sizes from Hawkes parameters corrected by the learner's model; emits alerts, stats and samples.",
        inputs: [
            PortSpec("properties", kinds: [.parameters, .size], multiple: true,
                     doc: "Hawkes parameters and final sizes keyed by T_obs (cascade_properties), in any order"),
            PortSpec("models", kinds: [.model], required: false, sameOptions: ["mode"],
                     doc: "models from the learner (whose `mode` must be this stage's); the latest per window is used"),
        ],
        outputs: [
            PortSpec("alerts", kinds: [.alert], required: false, doc: "forecast final sizes"),
            PortSpec("stats", kinds: [.stat], required: false, doc: "ARE of each forecast once its size is known"),
            PortSpec("samples", kinds: [.sample], required: false, doc: "training samples for the learner, keyed by T_obs"),
        ],
        options: [
            OptionSpec("mode", .choice(CorrectionMode.allCases.map(\.rawValue)),
                       default: .string(CorrectionMode.defaultMode.rawValue),
                       doc: "correction of the Hawkes forecast; must match the learner's. none: raw n_obs + G1/(1-n*), "
                           + "samples as course; course: X = [beta, n*, G1], W = (n_tot-n_obs)(1-n*)/G1, "
                           + "N = n_obs + W G1/(1-n*); growth: X = [n_obs, n_supp/n_obs, n*, beta, G1/n_obs], "
                           + "W = ln(n_tot/n_obs), N = n_obs exp(W)"),
            OptionSpec("alert_min_size", .double, default: .double(0),
                       range: 0...1e12, doc: "alert only forecasts N >= this many events (0 = every forecast)"),
            OptionSpec("max_pending", .int, default: .int(100_000),
                       range: 1...1e9, doc: "most half pairs (forecast or size) waiting for their other half; the oldest is evicted; also the number of completed pairs remembered to spot duplicates"),
            OptionSpec("pending_ttl", .double, default: .double(86_400),
                       range: 0...31_536_000, doc: "seconds (wall clock) a half pair waits for its other half before it is dropped"),
            OptionSpec("fallback_max_growth", .double, default: .double(10),
                       range: 1...1e6, doc: "growth mode, before the window's first model: the forecast is at most this many times n_obs (>= 1)"),
            OptionSpec("model_path", .path,
                       doc: "models loaded at start: a file of JSON lines of `model` messages (the `models` wire format) or a folder of such files; each is its window's model until the learner sends one"),
        ] + AlertPolicy.options,
        make: { _, options in try PredictorStage(options: options) })
        .declaring(summaryColumns: [
            SummaryColumn("median ARE", counter: "are{T}_median_milli", format: .thousandths),
            SummaryColumn("mean ARE", counter: "are{T}_mean_milli", format: .thousandths),
            SummaryColumn("within 20%", counter: "are{T}_within20_milli", format: .thousandthsAsPercent),
        ])

    let correction: Correction
    let alertPolicy: AlertPolicy
    /// Models read from `model_path` at start, by window.
    let loadedModels: [Int: Model]
    let maxPending: Int
    let pendingTTL: Duration

    init(options: StageOptions) throws {
        guard let mode = CorrectionMode(rawValue: try options.string("mode")) else {
            throw StageConfigError(option: "mode", "expected one of \(CorrectionMode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let growth = try options.double("fallback_max_growth")
        guard growth.isFinite, growth >= 1 else { throw StageConfigError(option: "fallback_max_growth", "expected a number >= 1") }
        correction = Correction(mode: mode, fallbackMaxGrowth: growth)
        alertPolicy = try AlertPolicy(options: options)
        if options.has("model_path"), mode != .none {
            let path = try options.string("model_path")
            do {
                loadedModels = try ModelFile.load(path, mode: mode, featureCount: mode.featureCount).models
            } catch {
                throw StageConfigError(option: "model_path", error.description)
            }
        } else {
            loadedModels = [:]
        }
        maxPending = try options.int("max_pending")
        guard maxPending >= 1 else { throw StageConfigError(option: "max_pending", "expected an integer >= 1") }
        let ttl = try options.double("pending_ttl")
        guard ttl.isFinite, ttl >= 0 else { throw StageConfigError(option: "pending_ttl", "expected a number of seconds >= 0") }
        pendingTTL = .nanoseconds(Int64(min(ttl, 1e9) * 1e9))
    }

    func run(_ context: StageContext) async throws {
        let table = ModelTable()
        for tObs in loadedModels.keys.sorted() { table.set(loadedModels[tObs]!) }
        if !loadedModels.isEmpty { context.counters.add("models_from_file", loadedModels.count) }
        let modelInputs = context.inputs("models")
        let mode = correction.mode
        // Drains `models` for as long as the learner sends, independently of `properties`.
        let reader = Task {
            await withTaskGroup(of: Void.self) { group in
                for input in modelInputs {
                    group.addTask {
                        while let batch = await input.next() {
                            for message in batch {
                                guard case .model(let model) = message else {
                                    context.counters.reject("not_a_model")
                                    continue
                                }
                                if mode == .none {
                                    context.counters.add("models_unused")
                                } else if model.mode != mode.rawValue {
                                    context.counters.add("models_other_mode")
                                    context.warnRateLimited("model_other_mode",
                                        "ignoring a model of mode \(model.mode) for T_obs=\(model.tObs): this predictor runs mode \(mode.rawValue)")
                                } else {
                                    table.set(model)
                                    context.counters.add("models_loaded")
                                }
                            }
                        }
                    }
                }
            }
        }

        var state = kept.withLock { $0.take() } ?? RunState(pending: PendingPairs(capacity: maxPending, ttl: pendingTTL))
        let evictedAtReload = self.evictedAtReload.withLock { e in defer { e = 0 }; return e }
        if evictedAtReload > 0 { context.counters.add("evicted", evictedAtReload) }
        let properties = context.inputs("properties")
        if properties.count == 1 {
            while let batch = await properties[0].next() {
                await process(batch, &state, table, context)
            }
        } else if !properties.isEmpty {
            let merged = Channel<[Message]>(capacity: 4)
            let id = merged.addConsumer()
            for _ in properties { merged.addProducer() }
            for input in properties {
                Task {
                    while let batch = await input.next() { await merged.send(batch) }
                    merged.finish()
                }
            }
            while let batch = await merged.next(id) {
                await process(batch, &state, table, context)
            }
        }

        // Stop reading models: the learner may still send while the daemon closes our outputs.
        for input in modelInputs { input.detach() }
        _ = reader
        if context.isReloading {
            // A configuration reload: keep the waiting pairs and the accuracy tallies for the next run.
            let paused = state
            kept.withLock { $0 = paused }
            return
        }

        let waiting = state.pending.waiting
        if waiting.forecasts > 0 { context.counters.add("pending_forecasts_at_end", waiting.forecasts) }
        if waiting.sizes > 0 { context.counters.add("pending_sizes_at_end", waiting.sizes) }
        for w in state.windows.keys.sorted() {
            let acc = state.windows[w]!
            context.logger.info("accuracy \(acc.summary(tObs: w))")
            if let m = acc.median { context.counters.add("are\(w)_median_milli", Int((m * 1000).rounded())) }
            if let m = acc.mean, m < 1e12 { context.counters.add("are\(w)_mean_milli", Int((m * 1000).rounded())) }
            if acc.stats > 0 {
                context.counters.add("are\(w)_within20_milli", Int((1000 * Double(acc.within20) / Double(acc.stats)).rounded()))
            }
        }
    }

    /// The run state kept across a configuration reload (the models are kept in `models`).
    private let kept = Mutex<RunState?>(nil)
    /// Waiting halves a reload evicted (a smaller `max_pending`), counted at the next run.
    private let evictedAtReload = Mutex(0)

    /// The run state kept by a reload stop, taken (for the stage that replaces this one).
    func takeKept() -> RunState? { kept.withLock { $0.take() } }

    /// Makes `state` the one the next run resumes, under this stage's `max_pending` and `pending_ttl`.
    /// - Returns: the waiting halves evicted by a smaller `max_pending`.
    func adopt(_ state: RunState) -> Int {
        var state = state
        let evicted = state.pending.reconfigure(capacity: maxPending, ttl: pendingTTL)
        kept.withLock { $0 = state }
        evictedAtReload.withLock { $0 += evicted }
        return evicted
    }

    /// What the stage keeps between batches.
    struct RunState {
        var pending: PendingPairs
        var windows: [Int: WindowAccuracy] = [:]
    }

    /// Handles one batch of `properties` and sends what it produced.
    func process(_ batch: [Message], _ state: inout RunState, _ table: ModelTable, _ context: StageContext) async {
        let now = ContinuousClock.now
        let expired = state.pending.expire(now: now)
        if expired > 0 { context.counters.add("expired", expired) }
        var alerts: [Message] = [], stats: [Message] = [], samples: [Message] = []
        let counters = context.counters

        func complete(_ forecast: Forecast, _ size: CascadeSize) {
            guard size.nTot >= 1 else {
                counters.reject("size_zero")
                return
            }
            let nTot = Double(size.nTot)
            let are = abs(forecast.nHat - nTot) / nTot
            stats.append(.stat(Stat(cascade: size.cascade, tObs: size.tObs, are: are, forecast: forecast.nHat,
                                    nTot: size.nTot, nObs: Int(forecast.inputs.nObs))))
            state.windows[size.tObs, default: WindowAccuracy()].record(are)
            switch correction.target(forecast.inputs, nTot: size.nTot) {
            case .success(let w):
                samples.append(.sample(Sample(cascade: size.cascade, tObs: size.tObs, x: forecast.features, w: w)))
                state.windows[size.tObs, default: WindowAccuracy()].samples += 1
            case .failure(let reason):
                counters.reject(reason.rawValue)
            }
        }

        for message in batch {
            switch message {
            case .parameters(let p):
                let key = PairKey(cascade: p.cascade, tObs: p.tObs)
                let waitingSize: CascadeSize?
                switch state.pending.state(of: key) {
                case .waitingForecast, .completed:
                    counters.reject("duplicate_parameters")
                    context.warnRateLimited("duplicate_parameters", "ignoring repeated parameters of cascade \(p.cascade) for T_obs=\(p.tObs)")
                    continue
                case .waitingSize(let s): waitingSize = s
                case .unknown: waitingSize = nil
                }
                let inputs: HawkesInputs
                switch HawkesInputs.make(p) {
                case .success(let h): inputs = h
                case .failure(let invalid):
                    counters.reject("invalid_\(invalid.field)")
                    context.warnRateLimited("invalid_\(invalid.field)",
                        "ignoring parameters of cascade \(p.cascade) for T_obs=\(p.tObs): invalid \(invalid.field)")
                    continue
                }
                if inputs.clamped { counters.add("clamped_n_star") }
                let model = correction.mode == .none ? nil : table.model(p.tObs)
                guard let (nHat, used) = correction.forecast(inputs, model: model) else {
                    counters.reject("non_finite_forecast")
                    continue
                }
                counters.add("forecasts")
                var acc = state.windows[p.tObs, default: WindowAccuracy()]
                acc.forecasts += 1
                if used { acc.forecastsWithModel += 1 }
                switch alertPolicy.alert(p, nHat: nHat, model: used ? model : nil, mode: correction.mode) {
                case (let alert, .emit):
                    alerts.append(.alert(alert))
                    acc.alerts += 1
                case (_, .belowPViral):
                    counters.add("alerts_suppressed_p_viral")
                case (_, .belowSize):
                    break
                }
                state.windows[p.tObs] = acc
                let forecast = Forecast(inputs: inputs, features: correction.features(inputs), nHat: nHat)
                if let size = waitingSize {
                    _ = state.pending.complete(key)
                    complete(forecast, size)
                } else {
                    let evicted = state.pending.insert(key, .forecast(forecast), now: now)
                    if evicted > 0 { counters.add("evicted", evicted) }
                }
            case .size(let s):
                let key = PairKey(cascade: s.cascade, tObs: s.tObs)
                switch state.pending.state(of: key) {
                case .waitingSize, .completed:
                    counters.reject("duplicate_size")
                    context.warnRateLimited("duplicate_size", "ignoring repeated size of cascade \(s.cascade) for T_obs=\(s.tObs)")
                case .waitingForecast:
                    if case .forecast(let forecast)? = state.pending.complete(key) { complete(forecast, s) }
                case .unknown:
                    let evicted = state.pending.insert(key, .size(s), now: now)
                    if evicted > 0 { counters.add("evicted", evicted) }
                }
            default:
                counters.reject("not_properties")
            }
        }
        if !alerts.isEmpty { counters.add("alerts", alerts.count) }
        if !stats.isEmpty { counters.add("stats", stats.count) }
        if !samples.isEmpty { counters.add("samples", samples.count) }
        await context.output("alerts")?.send(alerts)
        await context.output("stats")?.send(stats)
        await context.output("samples")?.send(samples)
    }
}
