// The learner stage (spec §6): one random forest per observation window, refitted every k
// samples on a bounded window of recent samples, sent to the predictor as a versioned model.
import Dispatch
import Forest
import Synchronization
import TweetoscopeCore

@_cdecl("tweetoscope_plugin_register")
public func tweetoscopePluginRegister(_ abi: UInt32, _ registrar: UnsafeMutableRawPointer) -> Int32 {
    PluginABI.entry(abi, registrar) { $0.register(LearnerStage.descriptor) }
}

/// The correction modes the predictor implements, with the length of their feature vectors
/// (the predictor's `CorrectionMode` is the reference: none and course send [beta, n*, G1];
/// growth sends [n_obs, n_supp/n_obs, n*, beta, G1/n_obs]).
let modeFeatureCounts: [(mode: String, features: Int)] = [("none", 3), ("course", 3), ("growth", 5)]

/// Fits one random-forest regressor per window on the samples the predictor sends (spec §6).
///
/// - The learner fits X → W as received: what X and W are is the predictor's `mode` (the
///   learner's `mode` must be the same; it is written into every model, and the predictor
///   ignores models of another mode). Samples whose X does not have the mode's length (3 for
///   none and course, 5 for growth), or with a non-finite value, are rejected and counted.
/// - At most `max_windows` windows (distinct T_obs) are learned; samples of a further window
///   are rejected (`too_many_windows`, logged rate-limited).
/// - Each window keeps its `max_samples` most recent samples. Every `refit_every` samples of a
///   window, a forest (see `ForestParameters`: CART regression trees, variance reduction,
///   bootstrap, `max_features` subsampling, seeded) is fitted on them and sent as a `model`
///   {T_obs, version (1, 2, ... per window), mode, samples, trees}.
/// - Fits run on a thread of their own, off the stage's read loop, so the learner keeps
///   reading samples (and the predictor never waits on it). When samples arrive faster than
///   fits finish, a window's waiting refit is replaced by the newer one (counted
///   `refits_coalesced`): the model sent is always fitted on the latest samples.
/// - When `samples` ends, waiting refits are still done and sent, then the stage returns.
final class LearnerStage: Stage {
    static let descriptor = StageDescriptor(
        type: "learner",
        summary: "Fits one random-forest regressor per window on the predictor's samples; emits versioned models.",
        inputs: [PortSpec("samples", kinds: [.sample], doc: "training samples keyed by T_obs, from the predictor")],
        outputs: [PortSpec("models", kinds: [.model], required: false, doc: "models keyed by T_obs, for the predictor")],
        options: [
            OptionSpec("mode", .choice(modeFeatureCounts.map(\.mode)), default: .string("growth"),
                       doc: "correction mode of the samples; must match the predictor's (written into each model)"),
            OptionSpec("refit_every", .int, default: .int(20), range: 1...1e9, doc: "refit a window's forest every this many new samples (k)"),
            OptionSpec("max_samples", .int, default: .int(2000), range: 1...1e9, doc: "most recent samples of a window a forest is fitted on"),
            OptionSpec("max_windows", .int, default: .int(64),
                       range: 1...1_000_000, doc: "most observation windows (distinct T_obs) learned at once; samples of further windows are rejected (`too_many_windows`), so a stream of bogus T_obs cannot exhaust memory"),
            OptionSpec("trees", .int, default: .int(100), range: 1...10_000, doc: "number of trees"),
            OptionSpec("max_depth", .int, default: .int(16), range: 1...64, doc: "largest depth of a tree (root = 0), 1..64"),
            OptionSpec("min_samples_leaf", .int, default: .int(3), range: 1...1e9, doc: "fewest bootstrap samples in a leaf"),
            OptionSpec("max_features", .double, default: .double(0.8),
                       range: 1e-9...1, doc: "fraction of the features tried at each split: ceil(max_features * d), in (0, 1]"),
            OptionSpec("bootstrap", .bool, default: .bool(true), doc: "grow each tree on a bootstrap sample (else on every sample)"),
            OptionSpec("seed", .int, default: .int(0), doc: "random seed: the same samples and seed give the same forest"),
            OptionSpec("final_fit", .bool, default: .bool(false),
                       doc: "when `samples` ends, fit once more every window that got samples since its last fit, on its samples sorted by (X, W) so the model does not depend on their arrival order (offline training: tweetoscoped evaluate, with a large refit_every)"),
        ],
        make: { _, options in try LearnerStage(options: options) })

    let mode: String
    let featureCount: Int
    let refitEvery: Int
    let maxSamples: Int
    let maxWindows: Int
    let parameters: ForestParameters
    let finalFit: Bool

    init(options: StageOptions) throws {
        let mode = try options.string("mode")
        self.mode = mode
        guard let count = modeFeatureCounts.first(where: { $0.mode == mode })?.features else {
            throw StageConfigError(option: "mode", "expected one of \(modeFeatureCounts.map(\.mode).joined(separator: ", "))")
        }
        featureCount = count
        finalFit = try options.bool("final_fit")
        refitEvery = try options.int("refit_every")
        guard refitEvery >= 1 else { throw StageConfigError(option: "refit_every", "expected an integer >= 1") }
        maxSamples = try options.int("max_samples")
        guard maxSamples >= 1 else { throw StageConfigError(option: "max_samples", "expected an integer >= 1") }
        maxWindows = try options.int("max_windows")
        guard maxWindows >= 1 else { throw StageConfigError(option: "max_windows", "expected an integer >= 1") }
        let seed = try options.int("seed")
        parameters = ForestParameters(
            trees: try options.int("trees"), maxDepth: try options.int("max_depth"),
            minSamplesLeaf: try options.int("min_samples_leaf"), maxFeatures: try options.double("max_features"),
            bootstrap: try options.bool("bootstrap"), seed: UInt64(bitPattern: Int64(seed)))
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
        let mode = self.mode, parameters = self.parameters
        let resumed = kept.withLock { $0.take() }
        let fitter = Task {
            var versions = resumed?.versions ?? [:]
            while let job = await jobs.next() {
                let clock = ContinuousClock()
                let start = clock.now
                let result = await offPool { Result { () throws(ForestError) in
                    try RandomForest.fitWithOutOfBag(features: job.features, targets: job.targets, parameters: parameters)
                } }
                let elapsed = clock.now - start
                switch result {
                case .success(let fit):
                    let version = versions[job.tObs, default: 0] + 1
                    versions[job.tObs] = version
                    context.counters.add("models")
                    context.counters.add("fit_ms", Int(elapsed / .milliseconds(1)))
                    context.logger.debug("model T_obs=\(job.tObs) version \(version) on \(job.targets.count) samples in \(elapsed)")
                    await output?.send([.model(Model(tObs: job.tObs, version: version, mode: mode,
                                                     samples: job.targets.count, trees: fit.trees,
                                                     residuals: fit.logResiduals(job.targets, targetIsLog: mode == "growth")))])
                case .failure(let error):
                    context.counters.reject("fit_failed")
                    context.warnRateLimited("fit_failed", "fit of T_obs=\(job.tObs) failed: \(error)")
                }
            }
            return versions
        }

        var windows = resumed?.windows ?? [:]
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
                var window = windows[s.tObs] ?? SampleWindow(capacity: maxSamples)
                window.append(s.x, s.w)
                if window.sinceFit >= refitEvery {
                    window.sinceFit = 0
                    let (x, y) = window.contents
                    if jobs.submit(FitJob(tObs: s.tObs, features: x, targets: y)) {
                        context.counters.add("refits_coalesced")
                    }
                }
                windows[s.tObs] = window
            }
        }
        if finalFit && !context.isReloading {
            for tObs in windows.keys.sorted() where windows[tObs]!.sinceFit > 0 {
                windows[tObs]!.sinceFit = 0
                let (x, y) = sortedSamples(windows[tObs]!.contents)
                _ = jobs.submit(FitJob(tObs: tObs, features: x, targets: y))
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

/// What the learner keeps when a configuration reload stops it.
struct PausedLearner: Sendable {
    var windows: [Int: SampleWindow]
    var versions: [Int: Int]
}

/// The most recent samples of one window, in a ring buffer.
struct SampleWindow {
    let capacity: Int
    private var x: [[Double]] = []
    private var y: [Double] = []
    private var next = 0
    /// Samples added since the last refit was requested.
    var sinceFit = 0

    init(capacity: Int) { self.capacity = capacity }

    mutating func append(_ features: [Double], _ target: Double) {
        if x.count < capacity {
            x.append(features)
            y.append(target)
        } else {
            x[next] = features
            y[next] = target
            next = (next + 1) % capacity
        }
        sinceFit += 1
    }

    /// The samples, oldest first.
    var contents: ([[Double]], [Double]) {
        guard next > 0 else { return (x, y) }
        return (Array(x[next...] + x[..<next]), Array(y[next...] + y[..<next]))
    }
}

/// A refit to do.
struct FitJob: Sendable {
    var tObs: Int
    var features: [[Double]]
    var targets: [Double]
}

/// Refits waiting for the fitter, at most one per window (a newer one replaces it), served in
/// request order.
final class FitQueue: Sendable {
    private struct State {
        var waiting: [Int: FitJob] = [:]
        var order: [Int] = []
        var consumer: CheckedContinuation<FitJob?, Never>?
        var closed = false
    }

    private let state = Mutex(State())

    /// Queues `job`; true when it replaced a waiting job of the same window.
    func submit(_ job: FitJob) -> Bool {
        let (replaced, wake): (Bool, CheckedContinuation<FitJob?, Never>?) = state.withLock { s in
            if let c = s.consumer {
                s.consumer = nil
                return (false, c)
            }
            let replaced = s.waiting[job.tObs] != nil
            if !replaced { s.order.append(job.tObs) }
            s.waiting[job.tObs] = job
            return (replaced, nil)
        }
        wake?.resume(returning: job)
        return replaced
    }

    /// The next job, or nil once closed and empty.
    func next() async -> FitJob? {
        await withCheckedContinuation { (c: CheckedContinuation<FitJob?, Never>) in
            let ready: FitJob?? = state.withLock { s in
                if !s.order.isEmpty {
                    let w = s.order.removeFirst()
                    return .some(s.waiting.removeValue(forKey: w))
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
            return s.order.isEmpty ? s.consumer : nil
        }
        wake?.resume(returning: nil)
    }
}

/// A serial queue of its own for the fits: they run on a Dispatch thread outside Swift's
/// cooperative pool, so a long fit never holds a thread the other stages need.
private let fitQueue = DispatchQueue(label: "tweetoscope.learner.fit")

/// Runs `work` on the fit thread and returns its result.
func offPool<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { c in fitQueue.async { c.resume(returning: work()) } }
}
