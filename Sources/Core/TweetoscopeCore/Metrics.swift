// Metrics: swift-metrics' API, re-exported here so that the daemon and every plugin use the one
// MetricsSystem of this dynamic library, and its one backend, a Prometheus registry that the
// daemon's `GET /metrics` endpoint renders in the text exposition format.
//
// Conventions (README, "Metrics"): names `tweetoscope_<subsystem>_<what>_<unit>` in base units
// (`_seconds`, `_bytes`, counters end in `_total`); labels `stage` (the stage's name), `t_obs`
// (the window in seconds), `reason`, `stream`...; bounded label values only (never a cascade id,
// except in the bounded top-K gauge). Create metric objects in `Stage.run`, not in the stage's
// factory: the backend is installed after the configuration is validated.
@_exported import CoreMetrics
@_exported import Metrics
internal import Prometheus
import Synchronization

/// The daemon's metrics backend: a Prometheus registry behind swift-metrics.
///
/// Stages record with the plain swift-metrics API (`Counter`, `Gauge`, `Recorder`, `Timer`,
/// re-exported by TweetoscopeCore). Until ``bootstrap()`` runs (only when `metrics.listen` is
/// configured), swift-metrics hands out no-op handlers, so recording costs nothing.
///
/// The backend protects the daemon from metric mistakes in plugins: a name already used with
/// another type (a counter then a gauge), or both with and without labels, is refused (the
/// handler is a no-op and one error is logged) instead of aborting the process. Label order does
/// not matter (labels are sorted by name).
public enum TweetoscopeMetrics {
    /// Bucket sets, in base units.
    public enum Buckets {
        /// Durations in seconds, 100 µs to 60 s: processing times, fit times.
        public static let seconds: [Double] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                               0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
        /// Dimensionless ratios such as an absolute relative error.
        public static let ratio: [Double] = [0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10]
        /// Absolute relative errors of forecasts (ARE): the ratio buckets continued to 1000, since
        /// a poor forecast is easily 10 to 100 times off and a p90 must not flatten at the last
        /// finite bucket (PromQL's histogram_quantile returns that bucket's bound above it).
        public static let relativeError: [Double] = ratio + [20, 50, 100, 200, 500, 1000]
        /// Counts and sizes (events, samples...).
        public static let count: [Double] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 100_000]
    }

    /// The content type of ``exposition()``.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    struct Description {
        var help: String
        var buckets: [Double]?
    }

    enum Kind: String {
        case counter, gauge, timer, histogram
    }

    struct State {
        var bootstrapped = false
        var descriptions: [String: Description] = [:]
        /// Every family created so far: its type and whether it has labels.
        var families: [String: (kind: Kind, labeled: Bool)] = [:]
        var refused: Set<String> = []
        var hooks: [Int: @Sendable () -> Void] = [:]
        var nextHook = 0
    }

    static let state = Mutex(State(descriptions: standardDescriptions))
    static let registry = PrometheusCollectorRegistry()
    static let logger = Logger(label: "tweetoscoped.metrics")

    /// Installs the Prometheus backend as swift-metrics' factory. Idempotent; call it before any
    /// stage runs (metric objects created before it stay no-ops).
    /// - Returns: true the first time.
    @discardableResult
    public static func bootstrap() -> Bool {
        let first = state.withLock { s -> Bool in
            defer { s.bootstrapped = true }
            return !s.bootstrapped
        }
        if first { MetricsSystem.bootstrap(Factory()) }
        return first
    }

    /// Whether ``bootstrap()`` ran: metrics are recorded.
    public static var isBootstrapped: Bool { state.withLock { $0.bootstrapped } }

    /// Declares the help text (the `# HELP` line) and, for histograms, the buckets of metric
    /// `name`. Call it before the metric is first created; later calls for a created name are
    /// ignored. Undescribed histograms get buckets by name: ``Buckets/seconds`` for timers and
    /// `_seconds` names, ``Buckets/ratio`` for `_ratio` names, ``Buckets/count`` otherwise.
    public static func describe(_ name: String, help: String, buckets: [Double]? = nil) {
        state.withLock { s in
            guard s.families[name] == nil else { return }
            s.descriptions[name] = Description(help: help, buckets: buckets)
        }
    }

    /// Registers `hook`, run before every exposition (e.g. to set gauges from a snapshot).
    /// - Returns: an id for ``removeCollectHook(_:)``.
    @discardableResult
    public static func addCollectHook(_ hook: @escaping @Sendable () -> Void) -> Int {
        state.withLock { s in
            s.nextHook += 1
            s.hooks[s.nextHook] = hook
            return s.nextHook
        }
    }

    public static func removeCollectHook(_ id: Int) {
        _ = state.withLock { $0.hooks.removeValue(forKey: id) }
    }

    /// Runs the collect hooks, then renders every metric in the Prometheus text format (0.0.4).
    public static func exposition() -> [UInt8] {
        let hooks = state.withLock { s in s.hooks.keys.sorted().map { s.hooks[$0]! } }
        for hook in hooks { hook() }
        return registry.emitToBuffer()
    }

    /// The names of every metric family created so far, sorted.
    public static var familyNames: [String] { state.withLock { $0.families.keys.sorted() } }

    /// Checks a new metric against the families created so far. Returns the sorted labels and
    /// the help text, or nil (and logs once) when the metric conflicts.
    static func admit(_ name: String, _ dimensions: [(String, String)], _ kind: Kind)
        -> (labels: [(String, String)], help: String, buckets: [Double]?)?
    {
        let labels = dimensions.sorted { $0.0 < $1.0 }
        let outcome: (ok: Bool, warn: String?, help: String, buckets: [Double]?) = state.withLock { s in
            let labeled = !labels.isEmpty
            let description = s.descriptions[name]
            let help = description?.help ?? defaultHelp(name)
            if let family = s.families[name] {
                guard family.kind == kind, family.labeled == labeled else {
                    let what = family.kind != kind ? "a \(family.kind.rawValue), not a \(kind.rawValue)"
                        : family.labeled ? "labelled, used here without labels" : "without labels, used here with labels"
                    let first = s.refused.insert(name).inserted
                    return (false, first ? "metric \(name) is \(what): ignored (fix the plugin's metric name)" : nil, help, nil)
                }
                return (true, nil, help, description?.buckets)
            }
            s.families[name] = (kind, labeled)
            return (true, nil, help, description?.buckets)
        }
        if let warn = outcome.warn { logger.error("\(warn)") }
        return outcome.ok ? (labels, outcome.help, outcome.buckets) : nil
    }

    static func defaultHelp(_ name: String) -> String {
        var words = name.hasPrefix("tweetoscope_") ? String(name.dropFirst("tweetoscope_".count)) : name
        if words.hasSuffix("_total") { words = String(words.dropLast("_total".count)) }
        return "tweetoscoped " + words.replacingOccurrences("_", " ")
    }

    static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// The swift-metrics factory over the registry.
    struct Factory: MetricsFactory {
        func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
            guard let m = admit(label, dimensions, .counter) else { return NOOPMetricsHandler.instance }
            return registry.makeCounter(descriptor: descriptor(label, m.help), labels: m.labels)
        }

        func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
            guard let m = admit(label, dimensions, .counter) else { return NOOPMetricsHandler.instance }
            return registry.makeCounter(descriptor: descriptor(label, m.help), labels: m.labels)
        }

        func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
            guard let m = admit(label, dimensions, .gauge) else { return NOOPMetricsHandler.instance }
            return registry.makeGauge(descriptor: descriptor(label, m.help), labels: m.labels)
        }

        func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
            guard aggregate else {
                guard let m = admit(label, dimensions, .gauge) else { return NOOPMetricsHandler.instance }
                return registry.makeGauge(descriptor: descriptor(label, m.help), labels: m.labels)
            }
            guard let m = admit(label, dimensions, .histogram) else { return NOOPMetricsHandler.instance }
            let buckets = m.buckets ?? (label.hasSuffix("_seconds") ? Buckets.seconds
                : label.hasSuffix("_ratio") ? Buckets.ratio : Buckets.count)
            return registry.makeValueHistogram(descriptor: descriptor(label, m.help), labels: m.labels, buckets: buckets)
        }

        func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
            guard let m = admit(label, dimensions, .timer) else { return NOOPMetricsHandler.instance }
            let buckets = (m.buckets ?? Buckets.seconds).map { Duration.nanoseconds(Int64(($0 * 1e9).rounded())) }
            return registry.makeDurationHistogram(descriptor: descriptor(label, m.help), labels: m.labels, buckets: buckets)
        }

        func destroyCounter(_ handler: any CounterHandler) {
            if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
        }

        func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
            if let c = handler as? Prometheus.Counter { registry.unregisterCounter(c) }
        }

        func destroyMeter(_ handler: any MeterHandler) {
            if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
        }

        func destroyRecorder(_ handler: any RecorderHandler) {
            if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) }
            else if let h = handler as? Prometheus.Histogram<Double> { registry.unregisterValueHistogram(h) }
        }

        func destroyTimer(_ handler: any TimerHandler) {
            if let h = handler as? Prometheus.Histogram<Duration> { registry.unregisterDurationHistogram(h) }
        }
    }

    /// Help texts (and buckets) of the metrics the runtime exports; a stage type declares its own
    /// in its descriptor (``StageDescriptor/metrics``).
    static let standardDescriptions: [String: Description] = {
        var d: [String: Description] = [:]
        func add(_ name: String, _ help: String, _ buckets: [Double]? = nil) { d[name] = Description(help: help, buckets: buckets) }
        // Runtime, every stage (labels: stage, and stream/kind/t_obs/reason/error as named).
        add("tweetoscope_stage_input_records_total", "Messages a stage has read from an input stream.")
        add("tweetoscope_stage_output_records_total", "Messages a stage has sent to an output stream, by kind.")
        add("tweetoscope_stage_output_window_records_total", "Window-keyed messages a stage has sent, by kind and observation window T_obs (seconds).")
        add("tweetoscope_stage_rejected_records_total", "Records a stage skipped, by reason.")
        add("tweetoscope_stage_errors_total", "Errors of a stage, by error (stage_failed, kafka_<reason>, commit_failed...).")
        add("tweetoscope_stage_processing_seconds", "Time a stage spent processing one batch, in seconds.")
        add("tweetoscope_stage_queue_depth_batches", "Batches waiting in a stage's input buffer (back-pressure when it reaches the capacity).")
        add("tweetoscope_stage_queue_capacity_batches", "Capacity of a stage's input buffer, in batches.")
        add("tweetoscope_stage_running", "1 while a stage runs, 0 once it has returned or failed.")
        // Daemon.
        add("tweetoscope_build_info", "Version of the running daemon (value 1).")
        add("tweetoscope_start_time_seconds", "Start time of the daemon, in seconds since the Unix epoch.")
        add("tweetoscope_config_reloads_total", "Configuration reloads (SIGHUP), by result (applied, rejected).")
        add("tweetoscope_log_messages_total", "Log lines written, by level and stage.")
        // Forecasts, derived by the runtime from the alert and stat messages on any stream.
        add("tweetoscope_forecast_are_ratio", "Absolute relative error |forecast - size| / size of the forecasts (stat messages), by stream and T_obs.",
            Buckets.relativeError)
        add("tweetoscope_top_cascade_forecast", "Forecast final size of the K cascades with the largest latest forecast among those not yet ended (labels rank, cid, t_obs).")
        add("tweetoscope_top_cascades_tracked", "Cascades with a forecast and no final size yet, among which the top K is chosen.")
        return d
    }()
}

extension String {
    fileprivate func replacingOccurrences(_ a: Character, _ b: Character) -> String {
        String(map { $0 == a ? b : $0 })
    }
}
