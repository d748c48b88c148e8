// The runtime's metrics: what every stage reports without code of its own (messages in and out,
// stage counters, queue depths, running state), forecast figures derived from the alert and stat
// messages of any stream (ARE per window, the top-K forecasts), and the daemon's own figures.
// Everything is read at scrape time (a collect hook) from the live pipeline; counters are
// exported as increments since the previous scrape, so they keep growing across reloads.
import Glibc
import Synchronization
import TweetoscopeCore

/// The daemon's metrics, when the endpoint is on.
public final class RuntimeMetrics: Sendable {
    private struct State {
        /// The current pipeline (kept once it has ended, so its final figures stay visible).
        var pipeline: Pipeline?
        /// Last exported value of each counter, per pipeline: "id|name|labels" -> value.
        var last: [String: Int] = [:]
        var counters: [String: Counter] = [:]
        /// Gauges set at the previous sync: "name|labels" -> gauge.
        var gauges: [String: Gauge] = [:]
        var failedSeen: Set<String> = []
    }

    public let topK: Int
    let board = ForecastBoard()
    private let state = Mutex(State())
    private let hook = Mutex<Int?>(nil)

    /// Installs the metrics backend and the daemon's figures.
    public init(topK: Int = 10) {
        self.topK = topK
        TweetoscopeMetrics.bootstrap()
        Gauge(label: "tweetoscope_build_info", dimensions: [("version", tweetoscopeVersion),
                                                            ("plugin_abi", "\(PluginABI.version)")]).record(1)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        Gauge(label: "tweetoscope_start_time_seconds").record(Double(now.tv_sec) + Double(now.tv_nsec) / 1e9)
        for result in ["applied", "rejected"] {
            Counter(label: "tweetoscope_config_reloads_total", dimensions: [("result", result)]).increment(by: 0)
        }
        let id = TweetoscopeMetrics.addCollectHook { [weak self] in self?.sync() }
        hook.withLock { $0 = id }
    }

    deinit {
        if let id = hook.withLock({ $0 }) { TweetoscopeMetrics.removeCollectHook(id) }
    }

    /// The stream observer feeding the forecast board.
    func observer(stream: String) -> @Sendable ([Message]) -> Void {
        let board = self.board
        return { batch in board.observe(batch, stream: stream) }
    }

    /// Counts a configuration reload.
    public func reloaded(applied: Bool) {
        Counter(label: "tweetoscope_config_reloads_total", dimensions: [("result", applied ? "applied" : "rejected")]).increment()
    }

    /// Makes `pipeline` the one exported; the previous one gets its final figures exported first.
    func pipelineStarted(_ pipeline: Pipeline) {
        state.withLock { s in
            if let old = s.pipeline {
                export(old, &s)
                let prefix = "\(old.id)|"
                s.last = s.last.filter { !$0.key.hasPrefix(prefix) }
            }
            s.pipeline = pipeline
        }
    }

    /// Exports the current figures (run before every exposition).
    public func sync() {
        state.withLock { s in
            var gauges: [String: Gauge] = [:]
            if let p = s.pipeline {
                export(p, &s)
                for stage in p.stageViews { stageGauges(stage, &s, &gauges) }
            }
            forecastGauges(&s, &gauges)
            for (key, gauge) in s.gauges where gauges[key] == nil { gauge.destroy() }
            s.gauges = gauges
        }
    }

    // MARK: - Counters

    private func export(_ pipeline: Pipeline, _ s: inout State) {
        for stage in pipeline.stageViews {
            let sl = ("stage", stage.name)
            for input in stage.inputs {
                count(pipeline, "tweetoscope_stage_input_records_total", [sl, ("stream", input.stream)],
                      input.received.current, &s)
            }
            for output in stage.outputs {
                let sent = output.sent.snapshot
                for (kind, n) in sent.byKind {
                    count(pipeline, "tweetoscope_stage_output_records_total",
                          [sl, ("stream", output.stream), ("kind", kind.rawValue)], n, &s)
                }
                for (kind, windows) in sent.byKindAndWindow {
                    for (w, n) in windows {
                        count(pipeline, "tweetoscope_stage_output_window_records_total",
                              [sl, ("stream", output.stream), ("kind", kind.rawValue), ("t_obs", "\(w)")], n, &s)
                    }
                }
            }
            count(pipeline, "tweetoscope_stage_errors_total", [sl, ("error", "stage_failed")], stage.failed ? 1 : 0, &s)
            for (name, value) in stage.counters {
                let (metric, labels) = Self.counterMetric(name)
                count(pipeline, metric, [sl] + labels, value, &s)
            }
        }
    }

    /// The metric name and labels of a stage counter (README, "Metrics"):
    /// `rejected.<reason>` → `tweetoscope_stage_rejected_records_total{reason}`,
    /// `kafka_error.<e>` → `tweetoscope_stage_errors_total{error="kafka_<e>"}`,
    /// `error.<e>` and `commit_failed` → `tweetoscope_stage_errors_total{error}`,
    /// `<name>.<detail>` → `tweetoscope_stage_<name>_total{detail}`, `<name>` → `tweetoscope_stage_<name>_total`.
    static func counterMetric(_ counter: String) -> (String, [(String, String)]) {
        let parts = counter.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        let head = parts[0], detail = parts.count > 1 ? parts[1] : nil
        switch (head, detail) {
        case ("rejected", let reason?): return ("tweetoscope_stage_rejected_records_total", [("reason", reason)])
        case ("kafka_error", let e?): return ("tweetoscope_stage_errors_total", [("error", "kafka_" + e)])
        case ("error", let e?): return ("tweetoscope_stage_errors_total", [("error", e)])
        case ("commit_failed", nil): return ("tweetoscope_stage_errors_total", [("error", "commit_failed")])
        default:
            var name = String(head.lowercased().map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
            if name.isEmpty || reservedCounterNames.contains(name) { name = "counter_" + name }
            return ("tweetoscope_stage_\(name)_total", detail.map { [("detail", $0)] } ?? [])
        }
    }

    /// Stage counter names whose metric would collide with one of the runtime's.
    static let reservedCounterNames: Set<String> = [
        "input_records", "output_records", "output_window_records", "rejected_records", "errors", "rejected", "error",
    ]

    /// Adds the growth of `value` since the last export of this pipeline to counter `name{labels}`.
    private func count(_ pipeline: Pipeline, _ name: String, _ labels: [(String, String)], _ value: Int,
                       _ s: inout State, always: Bool = true) {
        let labelKey = labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        let key = "\(name)|\(labelKey)"
        let lastKey = "\(pipeline.id)|\(key)"
        let delta = value - (s.last[lastKey] ?? 0)
        guard always || value > 0 || s.counters[key] != nil else { return }
        let counter = s.counters[key] ?? Counter(label: name, dimensions: labels)
        s.counters[key] = counter
        if delta > 0 {
            counter.increment(by: Int64(delta))
            s.last[lastKey] = value
        }
    }

    // MARK: - Gauges

    private func gauge(_ name: String, _ labels: [(String, String)], _ value: Double,
                       _ s: inout State, _ set: inout [String: Gauge]) {
        let key = name + "|" + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",")
        let g = s.gauges[key] ?? Gauge(label: name, dimensions: labels)
        g.record(value)
        set[key] = g
    }

    private func stageGauges(_ stage: StageView, _ s: inout State, _ set: inout [String: Gauge]) {
        gauge("tweetoscope_stage_running", [("stage", stage.name), ("type", stage.type)], stage.running ? 1 : 0, &s, &set)
        for input in stage.inputs {
            let labels = [("stage", stage.name), ("stream", input.stream)]
            gauge("tweetoscope_stage_queue_depth_batches", labels, Double(input.pending), &s, &set)
            gauge("tweetoscope_stage_queue_capacity_batches", labels, Double(input.capacity), &s, &set)
        }
    }

    private func forecastGauges(_ s: inout State, _ set: inout [String: Gauge]) {
        guard board.hasSeenForecasts else { return }
        let (top, tracked) = board.top(topK)
        gauge("tweetoscope_top_cascades_tracked", [], Double(tracked), &s, &set)
        for (rank, entry) in top.enumerated() {
            gauge("tweetoscope_top_cascade_forecast",
                  [("rank", "\(rank + 1)"), ("cid", "\(entry.cascade)"), ("t_obs", "\(entry.tObs)")],
                  entry.forecast, &s, &set)
        }
    }
}

/// Counts one log line in `tweetoscope_log_messages_total{level,stage}` (when metrics are on).
func countLogLine(_ level: Logger.Level, stage: String) {
    guard TweetoscopeMetrics.isBootstrapped else { return }
    Counter(label: "tweetoscope_log_messages_total", dimensions: [("level", level.rawValue), ("stage", stage)]).increment()
}

/// The latest forecast of every cascade not yet ended, from the alert messages of the observed
/// streams; a stat message (the cascade's final size is known) removes the cascade, also against
/// alerts of it read later (a bounded memory of ended cascades). Also records
/// each stat's ARE in `tweetoscope_forecast_are_ratio{stream,t_obs}`.
final class ForecastBoard: Sendable {
    struct Entry: Sendable {
        var cascade: CascadeID
        var tObs: Int
        var forecast: Double
        var sequence: Int
    }

    private struct State {
        var entries: [CascadeID: Entry] = [:]
        var sequence = 0
        var seen = false
        var histograms: [String: Recorder] = [:]
        /// Cascades whose stat arrived, oldest first: an alert read after its stat (streams
        /// read by separate consumers interleave freely) must not bring the cascade back.
        var ended = Set<CascadeID>()
        var endedOrder: [CascadeID] = []
    }

    /// Cascades kept at most; past it the oldest half is dropped (cascades whose stat never came).
    static let capacity = 200_000
    private let state = Mutex(State())

    var hasSeenForecasts: Bool { state.withLock { $0.seen } }

    func observe(_ batch: [Message], stream: String) {
        var stats: [Stat] = []
        state.withLock { s in
            for message in batch {
                switch message {
                case .alert(let a):
                    s.seen = true
                    s.sequence += 1
                    if s.ended.contains(a.cascade) { continue }
                    if let old = s.entries[a.cascade], old.tObs > a.tObs { continue }
                    s.entries[a.cascade] = Entry(cascade: a.cascade, tObs: a.tObs, forecast: a.nTot, sequence: s.sequence)
                case .stat(let st):
                    s.seen = true
                    s.entries[st.cascade] = nil
                    if s.ended.insert(st.cascade).inserted { s.endedOrder.append(st.cascade) }
                    stats.append(st)
                default:
                    break
                }
            }
            if s.endedOrder.count > Self.capacity {
                let drop = s.endedOrder.count / 2
                for cascade in s.endedOrder[..<drop] { s.ended.remove(cascade) }
                s.endedOrder.removeFirst(drop)
            }
            if s.entries.count > Self.capacity {
                let cut = s.entries.values.map(\.sequence).sorted()[s.entries.count / 2]
                s.entries = s.entries.filter { $0.value.sequence >= cut }
            }
            for st in stats where st.are.isFinite {
                let key = "\(stream)|\(st.tObs)"
                let h = s.histograms[key] ?? Recorder(label: "tweetoscope_forecast_are_ratio",
                                                      dimensions: [("stream", stream), ("t_obs", "\(st.tObs)")])
                s.histograms[key] = h
                h.record(st.are)
            }
        }
    }

    /// The `k` entries with the largest forecast (ties: smaller cascade id first), and the number tracked.
    func top(_ k: Int) -> ([Entry], Int) {
        state.withLock { s in
            (Array(s.entries.values.sorted { ($0.forecast, $1.cascade) > ($1.forecast, $0.cascade) }.prefix(k)), s.entries.count)
        }
    }
}
