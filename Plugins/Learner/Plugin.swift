// The learner stage (spec §6): one random forest per observation window, refitted every k
// samples on a bounded window of recent samples, sent to the predictor as a versioned model.
import Dispatch
import Glibc
import Forest
import Synchronization
import TweetoscopeCore

@_cdecl("tweetoscope_plugin_register")
public func tweetoscopePluginRegister(_ abi: UInt32, _ registrar: UnsafeMutableRawPointer) -> Int32 {
    PluginABI.entry(abi, registrar) { $0.register(LearnerStage.descriptor) }
}

/// The correction modes the predictor implements, with the length of their feature vectors
/// (the predictor's `CorrectionMode` is the reference: none and course send [beta, n*, G1];
/// growth sends the 5 of the Hawkes fit [n_obs, n_supp/n_obs, n*, beta, G1/n_obs], 9 features of
/// the observed series and T_obs: its `growthFeatureNames`).
let modeFeatureCounts: [(mode: String, features: Int)] = [("none", 3), ("course", 3), ("growth", 15)]

/// The learner's `tree_samples` when the option is not set: 200 bootstrap draws per tree in mode
/// `growth` (chosen on its online accuracy and cost, README *Benchmarks*), every sample (0) in
/// the other modes: cross-validated on SEISMIC, the `course` mode's forest (target W, skewed)
/// has median ARE 0.268 / 0.282 / 0.246 at 600 / 1200 / 3600 s with 0 against 0.288 / 0.306 /
/// 0.266 with 200, and mean ARE 0.40–0.76 against 0.45–1.39 (README *Accuracy*).
let defaultTreeSamples = (growth: 200, other: 0)

func defaultTreeSamples(mode: String) -> Int {
    mode == "growth" ? defaultTreeSamples.growth : defaultTreeSamples.other
}

/// Fits one random-forest regressor per window on the samples the predictor sends (spec §6).
///
/// - The learner fits X → W as received: what X and W are is the predictor's `mode` (the
///   learner's `mode` must be the same; it is written into every model, and the predictor
///   ignores models of another mode). Samples whose X does not have the mode's length (3 for
///   none and course, 15 for growth), or with a non-finite value, are rejected and counted.
/// - At most `max_windows` windows (distinct T_obs) are learned; samples of a further window
///   are rejected (`too_many_windows`, logged rate-limited).
/// - Versions follow the stream, not the clock: a window is refitted when its sample count
///   reaches a refit point of ``RefitSchedule`` (k = `refit_every`, `refit_growth`,
///   `min_samples`, `max_samples`): the points are multiples of k, and version v is the forest
///   fitted when the window's v·k-th sample arrives, on its `max_samples` most recent samples.
///   With `refit_growth` 0 every multiple of k >= `min_samples` is a point (versions 1, 2, 3,
///   ...); with growth g > 0 a forest is refitted once the new samples reach g times those it
///   was fitted on (the default 0.1: fits every 20 samples from 60 to 220, then at 260, 300,
///   ..., 420, 480, 540, 600, 660, 740, ... samples, and every 200 once the window holds 2000), so learning costs O(log n) fits early and a bounded
///   amount per sample later, instead of a fit every k samples (issue 17). EVERY point's version
///   is fitted and sent, in order (none is skipped when fits are slower than samples), with a
///   seed derived from (`seed`, T_obs, v): the same samples in the same order give
///   byte-identical models whatever the machine's speed. The predictor computes the same
///   schedule from the same options (checked equal) to know the version each forecast uses.
/// - A model carries the range of its training targets (`w_min`, `w_max`) and the largest
///   growth factor n_tot/n_obs among its samples (`growth_max`), which the predictor uses to
///   bound forecasts; in `growth` mode also `shift`, the log-shift c added to the prediction,
///   chosen on the out-of-bag predictions to minimise their median ARE.
/// - Fits run on a thread of their own, off the stage's read loop.
/// - `state_dir` (optional): after each fit the window's model and samples are written to
///   `<state_dir>/learner-<stage>-T<T_obs>.jsonl` (JSON lines: a header, the model as a `model`
///   message, the samples as `sample` messages, oldest first), atomically (temp file, fsync,
///   rename, fsync of the directory). At start they are read back: the samples resume the
///   window, and the model is sent at once, so a restarted daemon forecasts with it. A file that
///   cannot be read or belongs to another mode is set aside as `<name>.rejected-<UTC time>`,
///   logged with its name and the reason, and counted (`state_rejected`); it never stops the stage.
/// - When `samples` ends, waiting fits are still done and sent, then the stage returns.
final class LearnerStage: Stage {
    static let descriptor = StageDescriptor(
        type: "learner",
        summary: "Fits one random-forest regressor per window on the predictor's samples; emits versioned models.",
        inputs: [PortSpec("samples", kinds: [.sample], doc: "training samples keyed by T_obs, from the predictor")],
        outputs: [PortSpec("models", kinds: [.model], required: false, doc: "models keyed by T_obs, for the predictor")],
        options: [
            OptionSpec("mode", .choice(modeFeatureCounts.map(\.mode)), default: .string("growth"),
                       doc: "correction mode of the samples; must match the predictor's (written into each model)"),
            OptionSpec("refit_every", .int, default: .int(20), range: 1...1e9, doc: "refit points are multiples of this many samples (k), at least k apart; with refit_growth 0, a refit every k new samples"),
            OptionSpec("refit_growth", .double, default: .double(0.1), range: 0...100,
                       doc: "refit a window's forest once its new samples reach this fraction of the samples the last fit used (so early fits come at a geometric pace and a full window is refitted every refit_growth * max_samples samples); 0 = every refit_every samples"),
            OptionSpec("max_samples", .int, default: .int(2000), range: 1...1e9, doc: "most recent samples of a window a forest is fitted on"),
            OptionSpec("max_windows", .int, default: .int(64),
                       range: 1...1_000_000, doc: "most observation windows (distinct T_obs) learned at once; samples of further windows are rejected (`too_many_windows`), so a stream of bogus T_obs cannot exhaust memory"),
            OptionSpec("trees", .int, default: .int(100), range: 1...10_000, doc: "number of trees"),
            OptionSpec("max_depth", .int, default: .int(16), range: 1...64, doc: "largest depth of a tree (root = 0), 1..64"),
            OptionSpec("min_samples_leaf", .int, default: .int(3), range: 1...1e9, doc: "fewest bootstrap samples in a leaf"),
            OptionSpec("max_features", .double, default: .double(0.8),
                       range: 1e-9...1, doc: "fraction of the features tried at each split: ceil(max_features * d), in (0, 1]"),
            OptionSpec("bootstrap", .bool, default: .bool(true), doc: "grow each tree on a bootstrap sample (else on every sample)"),
            OptionSpec("tree_samples", .int, range: 0...1e9,
                       doc: "with bootstrap, each tree draws min(n, tree_samples) of the n samples (scikit-learn's max_samples), so a forest's size and fit time stay bounded as the window fills; 0 = n; unset: \(defaultTreeSamples.growth) in mode growth, 0 in modes course and none (the course mode's forest, which predicts W, needs every sample)"),
            OptionSpec("seed", .int, default: .int(0), doc: "random seed: the same samples and seed give the same forest (each version's forest is seeded from (seed, T_obs, version))"),
            OptionSpec("min_samples", .int, default: .int(50), range: 1...1e9,
                       doc: "fewest samples a version is fitted on; earlier versions are not fitted (must equal the predictor's min_samples)"),
            OptionSpec("state_dir", .path, default: .string(""),
                       doc: "directory where each window's latest model and samples are kept across restarts, relative to the configuration file (created if missing; unset = none)"),
            OptionSpec("shift", .bool, default: .bool(true),
                       doc: "growth mode: add to the forest's prediction the log-shift c that minimises the median ARE of its out-of-bag predictions (sent as the model's `shift`; false = 0)"),
            OptionSpec("final_fit", .bool, default: .bool(false),
                       doc: "when `samples` ends, fit once more every window that got samples since its last fit, on its samples sorted by (X, W) so the model does not depend on their arrival order (offline training: tweetoscoped evaluate, with a large refit_every)"),
        ],
        make: { _, options in try LearnerStage(options: options) })

    let mode: String
    let featureCount: Int
    /// The refit points (`refit_every`, `refit_growth`, `min_samples`, `max_samples`).
    let schedule: RefitSchedule
    let maxWindows: Int
    let stateDir: String
    let parameters: ForestParameters
    let finalFit: Bool
    let shift: Bool

    init(options: StageOptions) throws {
        let mode = try options.string("mode")
        self.mode = mode
        guard let count = modeFeatureCounts.first(where: { $0.mode == mode })?.features else {
            throw StageConfigError(option: "mode", "expected one of \(modeFeatureCounts.map(\.mode).joined(separator: ", "))")
        }
        featureCount = count
        finalFit = try options.bool("final_fit")
        shift = try options.bool("shift")
        schedule = try RefitSchedule(options: options)
        maxWindows = try options.int("max_windows")
        guard maxWindows >= 1 else { throw StageConfigError(option: "max_windows", "expected an integer >= 1") }
        stateDir = try options.string("state_dir")
        let seed = try options.int("seed")
        parameters = ForestParameters(
            trees: try options.int("trees"), maxDepth: try options.int("max_depth"),
            minSamplesLeaf: try options.int("min_samples_leaf"), maxFeatures: try options.double("max_features"),
            bootstrap: try options.bool("bootstrap"),
            treeSamples: options.has("tree_samples") ? try options.int("tree_samples") : defaultTreeSamples(mode: mode),
            seed: UInt64(bitPattern: Int64(seed)))
        do {
            try parameters.validate()
        } catch {
            let option: String
            switch error {
            case .invalidParameter(let s) where s.hasPrefix("trees"): option = "trees"
            case .invalidParameter(let s) where s.hasPrefix("maxDepth"): option = "max_depth"
            case .invalidParameter(let s) where s.hasPrefix("minSamplesLeaf"): option = "min_samples_leaf"
            default: option = "max_features"
            }
            throw StageConfigError(option: option, "\(error)")
        }
    }

    func run(_ context: StageContext) async throws {
        guard let input = context.inputs("samples").first else { return }
        let jobs = FitQueue()
        let output = context.output("models")
        let mode = self.mode, parameters = self.parameters, shift = self.shift
        let store = stateDir.isEmpty ? nil : LearnerStateStore(directory: stateDir, stage: context.name, mode: mode)
        var resumed = kept.withLock { $0.take() }
        if resumed == nil, let store {
            let loaded = store.load(capacity: schedule.maxSamples, context: context)
            resumed = PausedLearner(windows: loaded.windows, versions: loaded.models.mapValues(\.version))
            // The restored models go out first: the predictor forecasts with them at once.
            let models = loaded.models.keys.sorted().map { Message.model(loaded.models[$0]!) }
            if !models.isEmpty {
                context.counters.add("models_restored", models.count)
                await output?.send(models)
            }
        }
        let initial = resumed
        let fitter = Task {
            var versions = initial?.versions ?? [:]
            while let job = await jobs.next() {
                let clock = ContinuousClock()
                let start = clock.now
                var seeded = parameters
                seeded.seed = versionSeed(parameters.seed, tObs: job.tObs, version: job.version)
                let params = seeded
                // The model (its shift search included) is made on the fit thread too.
                let result = await offPool { Result { () throws(ForestError) in
                    let fit = try RandomForest.fitWithOutOfBag(features: job.features, targets: job.targets,
                                                               parameters: params, threads: fitThreads)
                    return learnedModel(fit, job: job, mode: mode, shift: shift, threads: fitThreads)
                } }
                let elapsed = clock.now - start
                switch result {
                case .success(let model):
                    versions[job.tObs] = job.version
                    context.counters.add("models")
                    context.logger.debug("model T_obs=\(job.tObs) version \(job.version) on \(job.targets.count) samples in \(elapsed)")
                    if let store {
                        do {
                            try store.save(model: model, job: job)
                        } catch {
                            context.counters.add("state_write_failed")
                            context.warnRateLimited("state_write_failed", "cannot save the learner state of T_obs=\(job.tObs): \(error)")
                        }
                    }
                    await output?.send([.model(model)])
                case .failure(let error):
                    context.counters.reject("fit_failed")
                    context.warnRateLimited("fit_failed", "fit of T_obs=\(job.tObs) version \(job.version) failed: \(error)")
                }
            }
            return versions
        }

        var windows = initial?.windows ?? [:]
        while let batch = await input.next() {
            for message in batch {
                guard case .sample(let s) = message else {
                    context.counters.reject("not_a_sample")
                    continue
                }
                guard s.x.count == featureCount else {
                    context.counters.reject("feature_count")
                    context.warnRateLimited("feature_count",
                        "sample of cascade \(s.cascade) has \(s.x.count) features; mode \(mode) has \(featureCount): is the predictor's mode \(mode)?")
                    continue
                }
                guard s.w.isFinite, s.x.allSatisfy(\.isFinite) else {
                    context.counters.reject("non_finite_sample")
                    continue
                }
                guard windows[s.tObs] != nil || windows.count < maxWindows else {
                    context.counters.reject("too_many_windows")
                    context.warnRateLimited("too_many_windows",
                        "sample of cascade \(s.cascade) for T_obs=\(s.tObs) skipped: already learning max_windows (\(maxWindows)) windows \(windows.keys.sorted().prefix(8).map(String.init).joined(separator: ","))")
                    continue
                }
                context.counters.add("samples")
                var window = windows[s.tObs] ?? SampleWindow(capacity: schedule.maxSamples)
                window.append(s)
                if schedule.fits(at: window.seen) {
                    let (x, y, g) = window.contents
                    jobs.submit(FitJob(tObs: s.tObs, version: window.seen / schedule.every, seen: window.seen,
                                       features: x, targets: y, growth: g))
                }
                windows[s.tObs] = window
            }
        }
        if finalFit && !context.isReloading {
            // Every window whose last samples no version covers: one more version on all of them.
            for tObs in windows.keys.sorted() {
                let w = windows[tObs]!
                guard w.seen > 0, !schedule.fits(at: w.seen) else { continue }
                let (x, y, g) = sortedSamples(w.contents)
                jobs.submit(FitJob(tObs: tObs, version: w.seen / schedule.every + 1, seen: w.seen,
                                   features: x, targets: y, growth: g))
            }
        }
        jobs.close()
        let versions = await fitter.value
        if context.isReloading {
            // A configuration reload: keep the training windows and model versions for the next run.
            let paused = PausedLearner(windows: windows, versions: versions)
            kept.withLock { $0 = paused }
        }
    }

    /// Training state kept across a configuration reload.
    private let kept = Mutex<PausedLearner?>(nil)
}

/// The model message of a fitted version: the trees, the target range, the largest growth
/// factor and the out-of-bag residuals; in `growth` mode also the log-shift c that minimises the
/// out-of-bag median ARE (``OutOfBagFit/medianAREShift(_:lower:upper:threads:)``, searched on
/// `threads` threads), the residuals being those of the shifted, clamped prediction (`withShift`
/// false: c = 0, as before the shift).
func learnedModel(_ fit: OutOfBagFit, job: FitJob, mode: String, shift withShift: Bool = true, threads: Int = 1) -> Model {
    let lo = job.targets.min(), hi = job.targets.max()
    let isLog = mode == "growth"
    let shift = isLog && withShift ? fit.medianAREShift(job.targets, lower: lo, upper: hi, threads: threads) : 0
    return Model(tObs: job.tObs, version: job.version, mode: mode, samples: job.targets.count, trees: fit.trees,
                 wMin: lo, wMax: hi, growthMax: job.growthMax,
                 residuals: isLog ? fit.logResiduals(job.targets, targetIsLog: true, shift: shift, lower: lo, upper: hi)
                                  : fit.logResiduals(job.targets, targetIsLog: false),
                 shift: isLog ? shift : nil)
}

/// What the learner keeps when a configuration reload stops it.
struct PausedLearner: Sendable {
    var windows: [Int: SampleWindow]
    var versions: [Int: Int]
}

/// The most recent samples of one window, in a ring buffer, and how many the window received.
struct SampleWindow: Sendable {
    let capacity: Int
    private var x: [[Double]] = []
    private var y: [Double] = []
    /// Growth factor n_tot/n_obs of each sample (NaN when the sample did not carry it).
    private var g: [Double] = []
    private var next = 0
    /// Samples the window received since it was first learned (restored ones included):
    /// version v is fitted when `seen` reaches v·k.
    var seen = 0

    init(capacity: Int) { self.capacity = capacity }

    mutating func append(_ sample: Sample) {
        let growth = sample.growth ?? .nan
        if x.count < capacity {
            x.append(sample.x)
            y.append(sample.w)
            g.append(growth)
        } else {
            x[next] = sample.x
            y[next] = sample.w
            g[next] = growth
            next = (next + 1) % capacity
        }
        seen += 1
    }

    /// The samples, oldest first: features, targets, growth factors (NaN when unknown).
    var contents: ([[Double]], [Double], [Double]) {
        guard next > 0 else { return (x, y, g) }
        return (Array(x[next...] + x[..<next]), Array(y[next...] + y[..<next]), Array(g[next...] + g[..<next]))
    }
}

/// A fit to do: version `version` of window `tObs`, on the window's samples when it had `seen`.
struct FitJob: Sendable {
    var tObs: Int
    var version: Int
    var seen: Int
    var features: [[Double]]
    var targets: [Double]
    var growth: [Double]

    /// Largest known growth factor of the samples; nil when none carried one.
    var growthMax: Double? {
        let known = growth.filter { !$0.isNaN }
        return known.isEmpty ? nil : max(1, known.max()!)
    }
}

/// The forest seed of version `version` of window `tObs`: SplitMix64 of the three, so that every
/// version and window has its own, machine-independent seed.
func versionSeed(_ seed: UInt64, tObs: Int, version: Int) -> UInt64 {
    var mix = SplitMix64(seed: seed ^ (UInt64(bitPattern: Int64(tObs)) &* 0x9E37_79B9_7F4A_7C15))
    var out = mix.next()
    mix = SplitMix64(seed: out ^ UInt64(bitPattern: Int64(version)))
    out = mix.next()
    return out
}

/// Fits waiting for the fitter, in request order (every one is done: a version is never skipped).
final class FitQueue: Sendable {
    private struct State {
        var waiting: [FitJob] = []
        var head = 0
        var consumer: CheckedContinuation<FitJob?, Never>?
        var closed = false
    }

    private let state = Mutex(State())

    /// Queues `job`.
    func submit(_ job: FitJob) {
        let wake: CheckedContinuation<FitJob?, Never>? = state.withLock { s in
            if let c = s.consumer {
                s.consumer = nil
                return c
            }
            s.waiting.append(job)
            return nil
        }
        wake?.resume(returning: job)
    }

    /// The next job, or nil once closed and empty.
    func next() async -> FitJob? {
        await withCheckedContinuation { (c: CheckedContinuation<FitJob?, Never>) in
            let ready: FitJob?? = state.withLock { s in
                if s.head < s.waiting.count {
                    let job = s.waiting[s.head]
                    s.head += 1
                    if s.head > 64, s.head * 2 > s.waiting.count {
                        s.waiting.removeFirst(s.head)
                        s.head = 0
                    }
                    return .some(job)
                }
                if s.closed { return .some(nil) }
                s.consumer = c
                return nil
            }
            if let ready { c.resume(returning: ready) }
        }
    }

    /// No more jobs will be submitted; the consumer drains what waits, then gets nil.
    func close() {
        let wake: CheckedContinuation<FitJob?, Never>? = state.withLock { s in
            s.closed = true
            defer { s.consumer = nil }
            return s.head >= s.waiting.count ? s.consumer : nil
        }
        wake?.resume(returning: nil)
    }
}

/// A serial queue of its own for the fits: they run on a Dispatch thread outside Swift's
/// cooperative pool, so a long fit never holds a thread the other stages need.
private let fitQueue = DispatchQueue(label: "tweetoscope.learner.fit")

/// Trees of one fit grown at once: one per online processor (issue 17: the refits were most of
/// the pipeline's CPU, on one core). The forest does not depend on it.
let fitThreads = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))

/// Runs `work` on the fit thread and returns its result.
func offPool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { c in fitQueue.async { c.resume(returning: work()) } }
}
