// The predictor stage (spec §5): forecasts each cascade's final size from its Hawkes parameters
// and the window's latest model, emits alerts, and once the true size is known emits a stat
// (the forecast's ARE) and a training sample for the learner.
import Synchronization
import TweetoscopeCore

@_cdecl("tweetoscope_plugin_register")
public func tweetoscopePluginRegister(_ abi: UInt32, _ registrar: UnsafeMutableRawPointer) -> Int32 {
    PluginABI.entry(abi, registrar) { $0.register(PredictorStage.descriptor) }
}

/// Forecasts final sizes and measures them (spec §5).
///
/// - Stream order: `parameters` and `size` messages numbered by the collector (`seq`, per
///   window) are handled in that order, whatever paths and timing brought them (a small reorder
///   buffer per window; a number that never comes — a failed Hawkes fit — is skipped once both
///   streams are past it, or after `model_wait`, counted `sequence_skipped`). So the order of
///   completed pairs, and of the samples sent to the learner, is the stream's.
/// - On `parameters` (cid, T_obs): forecasts N̂ with the window's model of the stage's `mode`
///   (see ``CorrectionMode``), emits an `alert` {cid, msg, T_obs, n_tot: N̂} when
///   N̂ ≥ `alert_min_size`, and keeps the forecast until the size arrives. The model version is
///   decided by the stream, not by timing: with s samples of the window emitted before this
///   forecast, it is v = p/k where p is the last refit point <= s of ``RefitSchedule``
///   (k = `refit_every`, `refit_growth`, `min_samples`, `max_samples`: the learner's, checked
///   equal), or 0 (the pretrained model, if any, else the model-less forecast) before the first
///   point; the learner fits exactly these versions.
///   If version v has not arrived, the predictor waits for it, at most `model_wait` seconds of
///   wall clock — the one timing-dependent step: a wait that times out is counted
///   (`model_wait_timeouts`) and the forecast uses the newest version received. With
///   `model_wait: 0` nothing waits (the newest model is used: not reproducible). A model newer
///   than v (restored from a learner's state directory) is used at once (`models_ahead`).
/// - Bounds (counted `bounded`): a model's prediction is kept within the range of the targets
///   it was trained on (`w_min`, `w_max`) and the forecast within `growth_max`·n_obs; without a
///   model (`course`, `growth`) the forecast is at most `fallback_max_growth`·n_obs.
/// - On `size` (cid, T_obs, n_tot), before or after the parameters: once both halves are there it
///   emits a `stat` {cid, T_obs, ARE = |N̂ − n_tot|/n_tot} and a `sample` {cid, T_obs, X, W}
///   (X and W as the mode defines them), then forgets the pair.
/// - A second `parameters` or `size` for a (cid, T_obs) that is waiting or was completed (among
///   the last `max_pending` completed) is ignored and counted (`rejected.duplicate_*`).
/// - Bounded memory: at most `max_pending` halves wait (the oldest is evicted, counted
///   `evicted`); a half waiting longer than `pending_ttl` wall-clock seconds is dropped
///   (`expired`). A size whose window got no series (too small at T_obs) or whose fit failed
///   never gets its parameters: it waits until it expires or is evicted, or is counted in
///   `pending_sizes_at_end` when the run ends (its Kafka offset is held only for `size_hold`,
///   see Positions.swift).
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
            PortSpec("models", kinds: [.model], required: false, sameOptions: ["mode", "refit_every", "refit_growth", "min_samples", "max_samples"],
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
                       range: 1...1e6, doc: "course and growth modes, without a model: the forecast is at most this many times n_obs (>= 1; counted `bounded`)"),
            OptionSpec("alpha", .double, default: .double(2.4), range: 2...100,
                       doc: "power-law exponent of the marks (> 2), for n* = p E[m] when parameters carry no n_star; E[m] = mu (alpha-1)/(alpha-2)"),
            OptionSpec("mu", .double, default: .double(10), range: 1e-9...1e12,
                       doc: "minimum mark of the power law, in followers (> 0), for n* = p E[m] when parameters carry no n_star"),
            OptionSpec("n_supp", .choice(NSuppMeaning.allCases.map(\.rawValue)), default: .string(NSuppMeaning.supplementary.rawValue),
                       doc: "what the n_supp field of parameters read from a topic means, used when they carry no G1: "
                           + "supplementary = G1/(1-n*); total = n_obs + G1/(1-n*) (the course majority)"),
            OptionSpec("refit_every", .int, default: .int(20), range: 1...1e9,
                       doc: "the learner's refit_every (k): a forecast preceded by s samples of its window uses model version p/k, p the learner's last refit point <= s"),
            OptionSpec("refit_growth", .double, default: .double(0.1), range: 0...100,
                       doc: "the learner's refit_growth (its refit points: see the learner)"),
            OptionSpec("max_samples", .int, default: .int(2000), range: 1...1e9,
                       doc: "the learner's max_samples (its refit points: see the learner)"),
            OptionSpec("min_samples", .int, default: .int(50), range: 1...1e9,
                       doc: "the learner's min_samples: learned versions fitted on fewer samples do not exist (version 0 = pretrained or none is used)"),
            OptionSpec("size_hold", .double, default: .double(30), range: 0...31_536_000,
                       doc: "properties from Kafka: seconds (wall clock) a waiting size holds its offset uncommitted (a size that never gets parameters — cascade too small at T_obs — must not hold the commit forever); a numbered size stops holding as soon as parameters of a later number were seen"),
            OptionSpec("model_wait", .double, default: .double(30), range: 0...86_400,
                       doc: "seconds (wall clock) a forecast waits for the model version it needs; the one timing exception to reproducibility (timeouts counted `model_wait_timeouts`); 0 = never wait, use the newest model"),
            OptionSpec("model_path", .path,
                       doc: "models loaded at start: a file of JSON lines of `model` messages (the `models` wire format) or a folder of such files; each is its window's model until the learner sends one"),
        ] + AlertPolicy.options,
        acknowledgement: .holdsPositions,
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
    /// E[m] = mu (alpha − 1)/(alpha − 2), for parameters without n*.
    let meanMark: Double
    let nSuppMeaning: NSuppMeaning
    let versions: VersionPolicy
    let sizeHold: Duration

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
        let alpha = try options.double("alpha"), mu = try options.double("mu")
        guard alpha.isFinite, alpha > 2 else { throw StageConfigError(option: "alpha", "expected a number > 2 (E[m] is infinite otherwise)") }
        guard mu.isFinite, mu > 0 else { throw StageConfigError(option: "mu", "expected a number > 0") }
        meanMark = mu * (alpha - 1) / (alpha - 2)
        nSuppMeaning = NSuppMeaning(rawValue: try options.string("n_supp")) ?? .supplementary
        let schedule = try RefitSchedule(options: options)
        let hold = try options.double("size_hold")
        guard hold.isFinite, hold >= 0 else { throw StageConfigError(option: "size_hold", "expected a number of seconds >= 0") }
        sizeHold = .nanoseconds(Int64(min(hold, 1e9) * 1e9))
        let wait = try options.double("model_wait")
        guard wait.isFinite, wait >= 0 else { throw StageConfigError(option: "model_wait", "expected a number of seconds >= 0") }
        versions = VersionPolicy(schedule: schedule, modelWait: .nanoseconds(Int64(wait * 1e9)))
    }

    func run(_ context: StageContext) async throws {
        let table = ModelTable()
        for tObs in loadedModels.keys.sorted() { table.set(loadedModels[tObs]!, slot: 0) }
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
        let waitForModels = mode != .none && !modelInputs.isEmpty && versions.modelWait > .zero
        if !properties.isEmpty {
            // The inputs, merged, and an empty batch every second while they are open: with no
            // new input, a window blocked on a gap of its reorder buffer is still released after
            // `model_wait`, and the positions it held are proposed (a Kafka source commits them).
            // 256 batches (was 4): a forecast waiting for its model version (a fit of a few ms)
            // stalls this loop, and a short buffer passed the stall on to the estimator and the
            // whole event path (issue 17); property batches are small (a few messages each).
            let merged = Channel<[Message]>(capacity: 256)
            let id = merged.addConsumer()
            for _ in properties { merged.addProducer() }
            merged.addProducer()
            let open = OpenInputs(properties.count)
            // The ticker is woken (cancelled) when the last input ends, so the stage does not
            // wait for the end of its current second (it did: every run ended on a whole second).
            let ticker = Task {
                while open.count.load(ordering: .sequentiallyConsistent) > 0 {
                    try? await Task.sleep(for: .seconds(1))
                    if open.count.load(ordering: .sequentiallyConsistent) > 0, merged.pending(id) == 0 { await merged.send([]) }
                }
                merged.finish()
            }
            for input in properties {
                Task {
                    while let batch = await input.next() { await merged.send(batch) }
                    if open.count.subtract(1, ordering: .sequentiallyConsistent).newValue == 0 { ticker.cancel() }
                    merged.finish()
                }
            }
            while let batch = await merged.next(id) {
                await process(batch, &state, table, context, waitForModels: waitForModels, idle: merged.pending(id) == 0)
            }
        }
        if !context.isReloading {
            // End of input: what waits in the reorder buffers is handled, in order.
            await process([], &state, table, context, waitForModels: waitForModels, final: true)
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
        /// Reorder buffers and samples per window (stream order, model versions).
        var order = StreamOrder()
        /// Per window, the highest version whose wait timed out: not waited for again.
        var abandoned: [Int: Int] = [:]
        /// Replayable partitions read from, for commits (see Positions.swift).
        var positions = PredictorPositions()
        var lastProposal = ContinuousClock.now
    }

    /// Handles one batch of `properties` (in stream order, see ``StreamOrder``) and sends what it
    /// produced; `final` also handles everything still buffered.
    func process(_ batch: [Message], _ state: inout RunState, _ table: ModelTable, _ context: StageContext,
                 waitForModels: Bool, idle: Bool = true, final: Bool = false) async {
        let now = ContinuousClock.now
        if !final {
            let expired = state.pending.expire(now: now)
            if expired > 0 { context.counters.add("expired", expired) }
        }
        let gapWait = versions.modelWait
        notePositions(batch, &state)
        var ready = state.order.order(batch, now: now, gapWait: gapWait, capacity: maxPending)
        if final { ready += state.order.flush() }
        state.order.report(context.counters)
        var out = Outbox()
        for message in ready {
            await handle(message, &state, table, context, &out, waitForModels: waitForModels, now: now)
        }
        await out.send(context)
        if state.positions.holdsPositions, final || idle || ContinuousClock.now - state.lastProposal >= .milliseconds(100) {
            proposePositions(state, context, idle: idle || final)
            state.lastProposal = ContinuousClock.now
        }
    }

    /// Handles one message of `properties`; outputs go to `out`.
    func handle(_ message: Message, _ state: inout RunState, _ table: ModelTable, _ context: StageContext,
                _ out: inout Outbox, waitForModels: Bool, now: ContinuousClock.Instant) async {
        let counters = context.counters

        func complete(_ forecast: Forecast, _ size: CascadeSize) {
            guard size.nTot >= 1 else {
                counters.reject("size_zero")
                return
            }
            let nTot = Double(size.nTot)
            let are = abs(forecast.nHat - nTot) / nTot
            out.stats.append(.stat(Stat(cascade: size.cascade, tObs: size.tObs, are: are, forecast: forecast.nHat,
                                    nTot: size.nTot, nObs: Int(forecast.inputs.nObs))))
            state.windows[size.tObs, default: WindowAccuracy()].record(are)
            guard let x = forecast.features else {
                counters.reject(NoSample.noFeatures.rawValue)
                return
            }
            switch correction.target(forecast.inputs, nTot: size.nTot) {
            case .success(let w):
                out.samples.append(.sample(Sample(cascade: size.cascade, tObs: size.tObs, x: x, w: w,
                                                  growth: nTot / forecast.inputs.nObs)))
                state.windows[size.tObs, default: WindowAccuracy()].samples += 1
                state.order.samples[size.tObs, default: 0] += 1
            case .failure(let reason):
                counters.reject(reason.rawValue)
            }
        }

        do {
            switch message {
            case .parameters(let p):
                let key = PairKey(cascade: p.cascade, tObs: p.tObs)
                let waitingSize: CascadeSize?
                switch state.pending.state(of: key) {
                case .waitingForecast, .completed:
                    counters.reject("duplicate_parameters")
                    context.warnRateLimited("duplicate_parameters", "ignoring repeated parameters of cascade \(p.cascade) for T_obs=\(p.tObs)")
                    return
                case .waitingSize(let s): waitingSize = s
                case .unknown: waitingSize = nil
                }
                let inputs: HawkesInputs
                if p.nStar.isNaN { counters.add("computed_n_star") }
                if p.g1.isNaN { counters.add("computed_G1") }
                switch HawkesInputs.make(p, meanMark: meanMark, nSupp: nSuppMeaning) {
                case .success(let h): inputs = h
                case .failure(let invalid):
                    counters.reject("invalid_\(invalid.field)")
                    context.warnRateLimited("invalid_\(invalid.field)",
                        "ignoring parameters of cascade \(p.cascade) for T_obs=\(p.tObs): invalid \(invalid.field)")
                    return
                }
                if inputs.clamped { counters.add("clamped_n_star") }
                let model = correction.mode == .none ? nil
                    : await chooseModel(p.tObs, &state, table, context, &out, waitForModels: waitForModels)
                guard let (nHat, used, bounded) = correction.forecast(inputs, model: model) else {
                    counters.reject("non_finite_forecast")
                    return
                }
                if bounded { counters.add("bounded") }
                counters.add("forecasts")
                var acc = state.windows[p.tObs, default: WindowAccuracy()]
                acc.forecasts += 1
                if used { acc.forecastsWithModel += 1 }
                switch alertPolicy.alert(p, nHat: nHat, model: used ? model : nil, mode: correction.mode) {
                case (let alert, .emit):
                    out.alerts.append(.alert(alert))
                    acc.alerts += 1
                case (_, .belowPViral):
                    counters.add("alerts_suppressed_p_viral")
                case (_, .belowSize):
                    break
                }
                state.windows[p.tObs] = acc
                let features = correction.features(inputs)
                if features == nil { counters.add("no_features") }
                let forecast = Forecast(inputs: inputs, features: features, nHat: nHat, origin: p.origin)
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
    }
}

/// How many of the predictor's inputs are still open (shared by their reading tasks and the ticker).
final class OpenInputs: Sendable {
    let count: Atomic<Int>
    init(_ n: Int) { count = Atomic(n) }
}
