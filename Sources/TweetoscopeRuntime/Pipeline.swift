// Running a validated configuration: in-memory streams between the stages of one daemon, one
// task per stage, progress lines, and the end-of-run summary.
import Glibc
import Synchronization
import TweetoscopeCore

/// What one run produced, for the summary table.
public struct RunSummary: Sendable {
    public struct StageReport: Sendable {
        public var name: String
        public var type: String
        public var counters: [String: Int]
        public var seconds: Double
        public var error: String?
        /// The per-window summary columns the stage's type declares.
        public var columns: [SummaryColumn] = []
    }

    public var stages: [StageReport]
    public var streams: [String: StreamStats.Snapshot]
    public var seconds: Double

    /// This summary followed by `next` (a later generation after a reload): counters and
    /// message counts add up per stage and stream name.
    public func merged(with next: RunSummary) -> RunSummary {
        var stages = self.stages
        for report in next.stages {
            if let i = stages.firstIndex(where: { $0.name == report.name }) {
                stages[i].counters.merge(report.counters, uniquingKeysWith: +)
                stages[i].seconds += report.seconds
                stages[i].type = report.type
                stages[i].error = report.error ?? stages[i].error
                stages[i].columns = report.columns
            } else {
                stages.append(report)
            }
        }
        var streams = self.streams
        for (name, snap) in next.streams {
            var merged = streams[name] ?? StreamStats.Snapshot()
            merged.byKind.merge(snap.byKind, uniquingKeysWith: +)
            for (kind, windows) in snap.byKindAndWindow {
                merged.byKindAndWindow[kind, default: [:]].merge(windows, uniquingKeysWith: +)
            }
            streams[name] = merged
        }
        return RunSummary(stages: stages, streams: streams, seconds: seconds + next.seconds)
    }

    /// True when no stage failed.
    public var succeeded: Bool { stages.allSatisfy { $0.error == nil } }

    /// Total messages of `kind` over every stream.
    public func total(_ kind: MessageKind) -> Int { streams.values.reduce(0) { $0 + ($1.byKind[kind] ?? 0) } }

    /// Messages of `kind` per observation window over every stream.
    public func perWindow(_ kind: MessageKind) -> [Int: Int] {
        var result: [Int: Int] = [:]
        for s in streams.values { for (w, n) in s.byKindAndWindow[kind] ?? [:] { result[w, default: 0] += n } }
        return result
    }

    /// The summary table printed at the end of `run`.
    public func table() -> String {
        var lines: [String] = []
        let events = total(.tweet)
        let rate = seconds > 0 ? Double(events) / seconds : 0
        lines.append("tweetoscoped summary: \(events) events in \(format(seconds)) s (\(Int(rate)) events/s)")
        let windowKinds: [MessageKind] = [.series, .size, .parameters, .alert, .stat, .sample, .model]
        let present = windowKinds.filter { !perWindow($0).isEmpty }
        let windows = Set(present.flatMap { perWindow($0).keys }).sorted()
        // Columns the stage types declare (e.g. the predictor's ARE per window), with a value
        // for at least one window.
        var columns: [SummaryColumn] = []
        var values: [SummaryColumn: [Int: Int]] = [:]
        for s in stages {
            for column in s.columns {
                for (key, value) in s.counters {
                    if let w = column.window(of: key) { values[column, default: [:]][w] = value }
                }
                if values[column] != nil && !columns.contains(column) { columns.append(column) }
            }
        }
        if !windows.isEmpty {
            let last = columns.last
            lines.append(pad("T_obs", 8) + present.map { pad(header($0), 12) }.joined()
                         + columns.map { $0 == last ? $0.header : pad($0.header, 12) }.joined())
            for w in windows {
                lines.append(pad("\(w)", 8) + present.map { pad("\(perWindow($0)[w] ?? 0)", 12) }.joined()
                             + columns.map { c in
                                 let text = values[c]?[w].map(c.text) ?? "-"
                                 return c == last ? text : pad(text, 12)
                             }.joined())
            }
        }
        lines.append(pad("stage", 14) + pad("type", 12) + pad("seconds", 10) + "counters")
        for s in stages {
            let plain = s.counters.filter { counter in
                !counter.key.hasPrefix("rejected.") && !s.columns.contains { $0.window(of: counter.key) != nil }
            }
            let text = plain.keys.sorted().map { "\($0)=\(plain[$0]!)" }.joined(separator: " ")
            lines.append(pad(s.name, 14) + pad(s.type, 12) + pad(format(s.seconds), 10) + text)
        }
        var rejected: [String] = []
        for s in stages {
            for key in s.counters.keys.sorted() where key.hasPrefix("rejected.") {
                rejected.append("\(s.name): \(key.dropFirst("rejected.".count))=\(s.counters[key]!)")
            }
        }
        lines.append("rejected records: " + (rejected.isEmpty ? "none" : rejected.joined(separator: ", ")))
        for s in stages where s.error != nil { lines.append("stage \(s.name) FAILED: \(s.error!)") }
        return lines.joined(separator: "\n")
    }

    private func header(_ kind: MessageKind) -> String {
        switch kind {
        case .series: "series"
        case .size: "sizes"
        case .parameters: "parameters"
        case .alert: "alerts"
        case .stat: "stats"
        case .sample: "samples"
        case .model: "models"
        default: kind.rawValue
        }
    }

    private func pad(_ s: String, _ width: Int) -> String {
        s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
    }

    private func format(_ x: Double) -> String {
        let scaled = (x * 100).rounded() / 100
        return "\(scaled)"
    }
}

/// A live view of a running pipeline, for status lines.
public struct PipelineStatus: Sendable {
    public var stages: Int
    /// Tweets sent on every stream so far.
    public var events: Int
    /// Stages that failed.
    public var failedStages: [String]
    /// Ongoing conditions reported by stages ("<stage>: <text> for <n> s"), e.g. a broker down.
    public var troubles: [String] = []
    /// The status gauges the stage types declare, summed over stages: (text, sum), e.g.
    /// ("open cascades", 12), in the order first declared.
    public var gauges: [(text: String, value: Int)] = []
}

/// What the metrics see of one stage of a running pipeline.
struct StageView {
    var name: String
    var type: String
    var counters: [String: Int]
    var inputs: [StageInput]
    var outputs: [StageOutput]
    var running: Bool
    var failed: Bool
}

private let pipelineIDs = Atomic<Int>(0)

/// A running pipeline built from a validated configuration.
public final class Pipeline: Sendable {
    public let config: PipelineConfig
    /// Distinguishes the pipelines of successive reloads.
    let id: Int
    private let logger: Logger
    private let metrics: RuntimeMetrics?
    private let live = Mutex<(streams: [String: MessageStream], contexts: [StageContext], failed: [String],
                              finished: Set<String>)>(([:], [], [], []))

    /// - Parameter metrics: the daemon's metrics, when the endpoint is on.
    public init(config: PipelineConfig, logger: Logger, metrics: RuntimeMetrics? = nil) {
        self.config = config
        self.logger = logger
        self.metrics = metrics
        self.id = pipelineIDs.add(1, ordering: .relaxed).newValue
    }

    /// Every stage with its counters, inputs and outputs (empty before `run` wires it).
    var stageViews: [StageView] {
        live.withLock { l in
            l.contexts.map { c in
                StageView(name: c.name, type: c.type, counters: c.counters.snapshot, inputs: c.allInputs.map(\.input),
                          outputs: c.allOutputs, running: !l.finished.contains(c.name), failed: l.failed.contains(c.name))
            }
        }
    }

    /// The pipeline's current figures (zero before `run` wires it).
    public var status: PipelineStatus {
        live.withLock { l in
            var events = 0
            for s in l.streams.values { events += s.stats.snapshot.byKind[.tweet] ?? 0 }
            var gauges: [(text: String, value: Int)] = []
            for (c, stage) in zip(l.contexts, config.stages) {
                for declared in stage.descriptor.statusGauges {
                    let value = c.counters.gauge(declared.gauge) ?? 0
                    if let i = gauges.firstIndex(where: { $0.text == declared.text }) {
                        gauges[i].value += value
                    } else {
                        gauges.append((declared.text, value))
                    }
                }
            }
            let troubles = l.contexts.compactMap { c in
                c.currentTrouble.map { "\(c.name): \($0.text) for \(Int($0.duration.components.seconds)) s" }
            }
            return PipelineStatus(stages: l.contexts.count, events: events, failedStages: l.failed,
                                  troubles: troubles, gauges: gauges)
        }
    }

    /// Runs every stage until all have returned (finite sources) or `stop` is requested and the
    /// pipeline has drained. Stage failures are logged and reported in the summary; the other
    /// stages are asked to stop and drain. `onStarted` is called once every stage has started
    /// (its `run` was entered). The progress lines are a child task, ended with the stages.
    public func run(stop: StopSignal, onStarted: @escaping @Sendable () -> Void = {}) async -> RunSummary {
        let clock = ContinuousClock()
        let start = clock.now

        // Wire every stream before any stage runs: producers and consumers must be registered first.
        var streams: [String: MessageStream] = [:]
        // With metrics on, streams that may carry alerts or stats feed the forecast board.
        var observed = Set<String>()
        if metrics != nil {
            for stage in config.stages {
                for (port, binding) in stage.outputs {
                    let kinds = stage.descriptor.outputs.first { $0.name == port }?.kinds ?? []
                    if kinds.contains(.alert) || kinds.contains(.stat) { observed.insert(binding.stream) }
                }
            }
        }
        let metrics = self.metrics
        func stream(_ name: String) -> MessageStream {
            if let s = streams[name] { return s }
            let s = MessageStream(name: name, observer: combinedObserver(
                observed.contains(name) ? metrics?.observer(stream: name) : nil, TapHub.shared.observer(stream: name)))
            streams[name] = s
            return s
        }
        // Stages holding record positions (the collector), by the streams they read: a replayable
        // source feeding them commits only what they release.
        var holdersByStream: [String: Set<String>] = [:]
        for stage in config.stages where stage.descriptor.acknowledgement == .holdsPositions {
            for (port, bindings) in stage.inputs {
                // Only ports whose records can carry a position (the predictor's `models` cannot).
                let kinds = stage.descriptor.inputs.first(where: { $0.name == port })?.kinds ?? []
                guard kinds.isEmpty || kinds.contains(where: \.carriesOrigin) else { continue }
                for b in bindings { holdersByStream[b.stream, default: []].insert(stage.name) }
            }
        }
        var contexts: [(StageConfig, StageContext)] = []
        for stage in config.stages {
            var inputs: [String: [StageInput]] = [:]
            let autoAck = stage.descriptor.acknowledgement != .explicit
            for (port, bindings) in stage.inputs {
                inputs[port] = bindings.map { StageInput(stream: stream($0.stream), autoAck: autoAck) }
            }
            var outputs: [String: StageOutput] = [:]
            var holders = Set<String>()
            for (port, binding) in stage.outputs {
                outputs[port] = StageOutput(stream: stream(binding.stream))
                holders.formUnion(holdersByStream[binding.stream] ?? [])
            }
            let context = StageContext(name: stage.name, type: stage.type, logger: logger, inputs: inputs,
                                       outputs: outputs, stop: stop, positionHolders: holders.count)
            contexts.append((stage, context))
        }
        let allStreams = streams
        live.withLock { $0 = (allStreams, contexts.map(\.1), [], []) }
        metrics?.pipelineStarted(self)
        DaemonHealth.shared.pipelineWired(self)
        defer { DaemonHealth.shared.pipelineEnded(self) }
        logger.info("pipeline starting", metadata: [
            "stages": .string(config.stages.map { "\($0.name)(\($0.type))" }.joined(separator: ",")),
            "streams": .string(allStreams.keys.sorted().joined(separator: ",")),
        ])

        let reports = Reports()
        let wired = contexts
        let started = StartedStages()
        let progressInterval = config.settings.progressInterval
        let shutdownTimeout = config.settings.shutdownTimeout
        let logger = self.logger
        // Background stages (the log forwarder) end once every other stage has returned.
        let foreground = wired.count(where: { !$0.0.descriptor.background })
        let foregroundLeft = StartedStages(foreground < wired.count ? foreground : -1)
        await withTaskGroup(of: Bool.self) { group in
            for (stage, context) in wired {
                group.addTask {
                    if started.one() == wired.count {
                        DaemonHealth.shared.pipelineStarted(self)
                        onStarted()
                    }
                    let began = clock.now
                    var failure: String?
                    do {
                        try await stage.stage!.run(context)
                    } catch {
                        failure = "\(error)"
                        context.logger.error("stage failed: \(error)")
                        self.live.withLock { $0.failed.append(stage.name) }
                        // The others stop and drain, within the shutdown timeout.
                        stop.setDeadline(in: .milliseconds(Int64(shutdownTimeout * 1000)))
                        stop.request()
                    }
                    // A failed stage's outputs end as failed: downstream stages must not take
                    // what they hold from it as complete (the collector drops its open cascades).
                    for output in context.allOutputs { if failure == nil { output.finish() } else { output.fail() } }
                    for (_, input) in context.allInputs { input.detach() }
                    self.live.withLock { _ = $0.finished.insert(stage.name) }
                    if !stage.descriptor.background,
                       foregroundLeft.less() == 0, !stop.isRequested {
                        stop.request()
                    }
                    let seconds = (clock.now - began).seconds
                    reports.withLock {
                        $0[stage.name] = RunSummary.StageReport(name: stage.name, type: stage.type,
                                                                counters: context.counters.snapshot,
                                                                seconds: seconds, error: failure,
                                                                columns: stage.descriptor.summaryColumns)
                    }
                    context.logger.debug("stage finished", metadata: ["seconds": .string("\(seconds)")])
                    return true
                }
            }
            if progressInterval > 0 && !wired.isEmpty {
                group.addTask {
                    await Self.progressLines(every: progressInterval, streams: allStreams, logger: logger)
                    return false
                }
            }
            var finished = 0
            for await isStage in group where isStage {
                finished += 1
                if finished == wired.count { group.cancelAll() }
            }
        }
        let byName = reports.withLock { $0 }
        return RunSummary(stages: config.stages.compactMap { byName[$0.name] },
                          streams: allStreams.mapValues { $0.stats.snapshot },
                          seconds: (clock.now - start).seconds)
    }

    /// Logs a progress line every `interval` seconds until cancelled.
    private static func progressLines(every interval: Double, streams: [String: MessageStream], logger: Logger) async {
        do {
            var last = 0
            while !Task.isCancelled {
                try await Task.sleep(for: .milliseconds(Int(interval * 1000)))
                var kinds: [MessageKind: Int] = [:]
                for s in streams.values { for (k, n) in s.stats.snapshot.byKind { kinds[k, default: 0] += n } }
                let events = kinds[.tweet] ?? 0
                let rate = Double(events - last) / interval
                last = events
                var md: Logger.Metadata = ["events": .string("\(events)"), "events_per_s": .string("\(Int(rate))")]
                for (k, n) in kinds where k != .tweet { md[k.rawValue] = .string("\(n)") }
                logger.info("progress", metadata: md)
            }
        } catch {
            // Cancelled: the stages have finished.
        }
    }
}

/// Counts the stages whose task has started.
private final class StartedStages: Sendable {
    private let count: Atomic<Int>
    init(_ start: Int = 0) { count = Atomic(start) }
    /// Counts one more; returns the count.
    func one() -> Int { count.add(1, ordering: .acquiringAndReleasing).newValue }
    /// Counts one less; returns the count.
    func less() -> Int { count.subtract(1, ordering: .acquiringAndReleasing).newValue }
}

/// Both observers of a stream (metrics, tap), either possibly nil.
private func combinedObserver(_ a: (@Sendable ([Message]) -> Void)?, _ b: (@Sendable ([Message]) -> Void)?)
    -> (@Sendable ([Message]) -> Void)?
{
    guard let a else { return b }
    guard let b else { return a }
    return { batch in a(batch); b(batch) }
}

/// Stage reports, filled as stages finish.
private final class Reports: Sendable {
    private let state = Mutex<[String: RunSummary.StageReport]>([:])
    func withLock<T>(_ body: (inout [String: RunSummary.StageReport]) -> T) -> T { state.withLock { body(&$0) } }
}

extension Duration {
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}
