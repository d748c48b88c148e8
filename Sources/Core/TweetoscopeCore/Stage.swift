// The stage plugin API: what a plugin declares (StageDescriptor: ports and options) and what a
// running stage gets (StageContext: its input and output streams, logger, counters).

import Glibc
import Synchronization

/// A running stage: the unit of work of the pipeline (a source, the collector, the estimator...).
///
/// The daemon calls ``run(_:)`` once. A stage reads batches from its inputs until they end, sends
/// batches to its outputs, and returns when its work is over (for a source: when its data ends or
/// ``StageContext/stopRequested`` becomes true). After `run` returns, the daemon closes the
/// stage's outputs, which ends the streams for the downstream stages.
/// A thrown error stops the whole daemon with that error.
public protocol Stage: AnyObject, Sendable {
    func run(_ context: StageContext) async throws
}

/// The type of a stage option, as written in the YAML configuration.
public enum OptionType: Sendable, Hashable, CustomStringConvertible {
    case bool, int, double, string
    /// A file or directory path; a relative path is resolved against the configuration file's directory.
    case path
    /// One of a fixed set of strings.
    case choice([String])
    case intList, doubleList, stringList
    /// A mapping of string keys to string values (passed through, e.g. to librdkafka).
    case stringMap

    public var description: String {
        switch self {
        case .bool: "boolean"
        case .int: "integer"
        case .double: "number"
        case .string: "string"
        case .path: "path"
        case .choice(let values): values.joined(separator: "|")
        case .intList: "list of integers"
        case .doubleList: "list of numbers"
        case .stringList: "list of strings"
        case .stringMap: "mapping of strings"
        }
    }
}

/// A typed option value.
public enum OptionValue: Sendable, Hashable, CustomStringConvertible {
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([OptionValue])
    case map([String: String])

    public var description: String {
        switch self {
        case .bool(let b): String(b)
        case .int(let i): String(i)
        case .double(let d): String(d)
        case .string(let s): s
        case .list(let l): "[" + l.map(\.description).joined(separator: ", ") + "]"
        case .map(let m): "{" + m.keys.sorted().map { "\($0): \(m[$0]!)" }.joined(separator: ", ") + "}"
        }
    }
}

/// Declaration of one option of a stage type: drives validation, defaults and `tweetoscoped plugins`.
public struct OptionSpec: Sendable {
    public var key: String
    public var type: OptionType
    /// Value used when the key is absent; nil with `required == false` means "unset".
    public var defaultValue: OptionValue?
    public var required: Bool
    /// One-line documentation, with units.
    public var doc: String
    /// Whether the value is a secret (never logged or printed).
    public var secret: Bool
    /// The physically meaningful values of a numeric option (`int`, `double` and their lists:
    /// every element), inclusive, in the option's unit; nil = any value of the type. The
    /// configuration loader checks every option's range before the stage is made, so `validate`
    /// reports every out-of-range option at once.
    public var range: ClosedRange<Double>?

    public init(_ key: String, _ type: OptionType, default defaultValue: OptionValue? = nil,
                required: Bool = false, secret: Bool = false, range: ClosedRange<Double>? = nil, doc: String) {
        self.key = key
        self.type = type
        self.defaultValue = defaultValue
        self.required = required
        self.secret = secret
        self.range = range
        self.doc = doc
    }
}

/// Declaration of an input or output port of a stage type.
public struct PortSpec: Sendable {
    public var name: String
    /// Message kinds the port accepts (input) or may produce (output).
    public var kinds: Set<MessageKind>
    /// Whether the port must be bound in the configuration.
    public var required: Bool
    /// Whether an input port accepts several streams (a list) instead of one.
    public var multiple: Bool
    public var doc: String
    /// Options that must have the same value in this stage and in every stage producing a
    /// stream bound to this input port that has such an option (e.g. the predictor's `models`
    /// input and the learner's `mode`): a mismatch is a configuration error, found by `validate`.
    public var sameOptions: [String]

    public init(_ name: String, kinds: Set<MessageKind>, required: Bool = true, multiple: Bool = false,
                sameOptions: [String] = [], doc: String) {
        self.name = name
        self.kinds = kinds
        self.required = required
        self.multiple = multiple
        self.sameOptions = sameOptions
        self.doc = doc
    }
}

/// Everything a plugin declares about one stage type.
public struct StageDescriptor: Sendable {
    /// The `type:` value that selects this stage in the configuration.
    public var type: String
    public var summary: String
    public var inputs: [PortSpec]
    public var outputs: [PortSpec]
    public var options: [OptionSpec]
    /// When an input batch of this stage counts as done, for the at-least-once commits of a
    /// replayable source upstream (see ``InputAcknowledgement``).
    public var acknowledgement: InputAcknowledgement
    /// Builds a stage from validated options. Validates semantics (e.g. positive windows) and
    /// throws ``StageConfigError`` naming the option; performs no I/O that can wait.
    public var make: @Sendable (_ name: String, _ options: StageOptions) throws -> any Stage
    /// Metrics the stage type exports (help texts), registered by the runtime (``MetricSpec``).
    public var metrics: [MetricSpec] = []
    /// Columns the stage type adds to the summary's per-window table (``SummaryColumn``).
    public var summaryColumns: [SummaryColumn] = []
    /// Gauges summed into the daemon's status line (``StatusGauge``).
    public var statusGauges: [StatusGauge] = []
    /// A background stage (no inputs; e.g. one forwarding the daemon's log) does not keep a run
    /// alive: once every other stage has returned, the pipeline requests a stop, and the
    /// background stage flushes and returns.
    public var background = false

    public init(type: String, summary: String, inputs: [PortSpec], outputs: [PortSpec], options: [OptionSpec],
                acknowledgement: InputAcknowledgement = .onReceipt,
                make: @escaping @Sendable (_ name: String, _ options: StageOptions) throws -> any Stage) {
        self.type = type
        self.summary = summary
        self.inputs = inputs
        self.outputs = outputs
        self.options = options
        self.acknowledgement = acknowledgement
        self.make = make
    }
}

/// When a stage's input batches count as done. A replayable source (kafka_source) commits its
/// read positions only once every consumer downstream is done with the records, so after a crash
/// nothing is lost: the uncommitted records are read again.
public enum InputAcknowledgement: Sendable, Hashable {
    /// A batch is done once received: the stage's work on it ends with the batch, or loses
    /// nothing a restart could recover (the default).
    case onReceipt
    /// The stage acknowledges each batch itself (``StageInput/acknowledge(through:)``) once its
    /// effect is durable: written to a file, delivered to Kafka (sinks).
    case explicit
    /// The stage keeps records in its state beyond their batch (the collector's open cascades):
    /// it releases read positions through each tweet's ``RecordOrigin`` with
    /// ``OffsetLedger/propose(holder:generation:positions:when:)``.
    case holdsPositions
}

/// A configuration error found by a stage factory; `option` names the offending key, if any.
public struct StageConfigError: Error, CustomStringConvertible, Sendable {
    public var option: String?
    public var message: String
    public init(option: String? = nil, _ message: String) {
        self.option = option
        self.message = message
    }
    public var description: String { option.map { "option \($0): \(message)" } ?? message }
}

/// Validated options of one stage, defaults applied. Accessors throw ``StageConfigError`` only
/// when the plugin reads a key it did not declare with that type (a plugin bug).
public struct StageOptions: Sendable {
    public var values: [String: OptionValue]

    public init(_ values: [String: OptionValue]) { self.values = values }

    private func value(_ key: String) throws -> OptionValue {
        guard let v = values[key] else { throw StageConfigError(option: key, "is not set") }
        return v
    }

    /// Whether `key` has a value (given or default).
    public func has(_ key: String) -> Bool { values[key] != nil }

    public func bool(_ key: String) throws -> Bool {
        guard case .bool(let b) = try value(key) else { throw StageConfigError(option: key, "expected a boolean") }
        return b
    }

    public func int(_ key: String) throws -> Int {
        guard case .int(let i) = try value(key) else { throw StageConfigError(option: key, "expected an integer") }
        return i
    }

    public func double(_ key: String) throws -> Double {
        switch try value(key) {
        case .double(let d): return d
        case .int(let i): return Double(i)
        default: throw StageConfigError(option: key, "expected a number")
        }
    }

    public func string(_ key: String) throws -> String {
        guard case .string(let s) = try value(key) else { throw StageConfigError(option: key, "expected a string") }
        return s
    }

    public func ints(_ key: String) throws -> [Int] {
        guard case .list(let l) = try value(key) else { throw StageConfigError(option: key, "expected a list") }
        return try l.map {
            guard case .int(let i) = $0 else { throw StageConfigError(option: key, "expected integers") }
            return i
        }
    }

    public func doubles(_ key: String) throws -> [Double] {
        guard case .list(let l) = try value(key) else { throw StageConfigError(option: key, "expected a list") }
        return try l.map {
            switch $0 {
            case .double(let d): return d
            case .int(let i): return Double(i)
            default: throw StageConfigError(option: key, "expected numbers")
            }
        }
    }

    /// The path in option `key`, checked to name a readable regular file (so that `validate`
    /// reports a missing data file, not only `run`).
    /// - Throws: ``StageConfigError`` naming the option when the file is missing, unreadable or a directory.
    public func readableFile(_ key: String) throws -> String {
        let path = try string(key)
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw StageConfigError(option: key, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        guard (info.st_mode & S_IFMT) != S_IFDIR else { throw StageConfigError(option: key, "\(path) is a directory") }
        guard access(path, R_OK) == 0 else {
            throw StageConfigError(option: key, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        return path
    }

    public func strings(_ key: String) throws -> [String] {
        guard case .list(let l) = try value(key) else { throw StageConfigError(option: key, "expected a list") }
        return try l.map {
            guard case .string(let s) = $0 else { throw StageConfigError(option: key, "expected strings") }
            return s
        }
    }

    public func stringMap(_ key: String) throws -> [String: String] {
        guard case .map(let m) = try value(key) else { throw StageConfigError(option: key, "expected a mapping") }
        return m
    }
}

/// Named counters of one stage (records seen, skipped by reason...). Thread-safe; printed in the
/// end-of-run summary.
public final class StageCounters: Sendable {
    private let values = Mutex<[String: Int]>([:])

    public init() {}

    /// Adds `n` to counter `name`.
    public func add(_ name: String, _ n: Int = 1) {
        values.withLock { $0[name, default: 0] += n }
    }

    /// Counts a rejected or skipped record under `rejected.<reason>`.
    public func reject(_ reason: String, _ n: Int = 1) { add("rejected.\(reason)", n) }

    /// A copy of every counter.
    public var snapshot: [String: Int] { values.withLock { $0 } }

    private let levels = Mutex<[String: Int]>([:])

    /// Sets gauge `name` (a current level such as open cascades; not summed in summaries).
    public func set(_ name: String, _ value: Int) {
        levels.withLock { $0[name] = value }
    }

    /// The current value of gauge `name`, if set.
    public func gauge(_ name: String) -> Int? { levels.withLock { $0[name] } }

    public subscript(name: String) -> Int { values.withLock { $0[name] ?? 0 } }
}

/// Message counts of one stream, by kind and by observation window; kept by the runtime.
public final class StreamStats: Sendable {
    public struct Snapshot: Sendable {
        public var byKind: [MessageKind: Int] = [:]
        public var byKindAndWindow: [MessageKind: [Int: Int]] = [:]
        public var total: Int { byKind.values.reduce(0, +) }
        public init() {}
    }

    private let state = Mutex(Snapshot())

    public init() {}

    /// Kinds in ``MessageKind/allCases`` order, for counting by position.
    private static let kinds = MessageKind.allCases

    /// The counts of one batch, to be added to one or more ``StreamStats``.
    struct BatchCounts {
        /// Per kind, in ``MessageKind/allCases`` order.
        var counts: [Int]
        var windows: [MessageKind: [Int: Int]]
    }

    func record(_ batch: [Message]) { add(Self.count(batch)) }

    /// Counts a batch once for several statistics (the stream's and its producer's: each
    /// counted the batch again).
    static func count(_ batch: [Message]) -> BatchCounts {
        // Counted per kind in a fixed array (issue 17: hashing the kind of every tweet was ~4 %
        // of the replay -> collector path); only window-keyed kinds go through a dictionary.
        var counts = [Int](repeating: 0, count: Self.kinds.count)
        var windows: [MessageKind: [Int: Int]] = [:]
        // Tweets (the bulk) are recognised by their case alone, read in place: `kind` copied
        // every message first (~1.5 % of the replay -> collector path).
        batch.withUnsafeBufferPointer { messages in
            for i in messages.indices {
                if case .tweet = messages[i] {
                    counts[Self.index(.tweet)] += 1
                    continue
                }
                let kind = messages[i].kind
                counts[Self.index(kind)] += 1
                if let w = messages[i].tObs { windows[kind, default: [:]][w, default: 0] += 1 }
            }
        }
        return BatchCounts(counts: counts, windows: windows)
    }

    /// Adds the counts of a batch.
    func add(_ batch: BatchCounts) {
        state.withLock { s in
            for (i, n) in batch.counts.enumerated() where n > 0 { s.byKind[Self.kinds[i], default: 0] += n }
            for (k, ws) in batch.windows { for (w, n) in ws { s.byKindAndWindow[k, default: [:]][w, default: 0] += n } }
        }
    }

    @inline(__always) private static func index(_ kind: MessageKind) -> Int {
        switch kind {
        case .tweet: 0
        case .series: 1
        case .size: 2
        case .parameters: 3
        case .sample: 4
        case .model: 5
        case .alert: 6
        case .stat: 7
        case .log: 8
        }
    }

    public var snapshot: Snapshot { state.withLock { $0 } }
}

/// A stream: a named broadcast channel of message batches, with its statistics.
public final class MessageStream: Sendable {
    public let name: String
    public let channel: Channel<[Message]>
    public let stats = StreamStats()
    /// Called with every batch sent to the stream, before it is queued (the runtime's metrics
    /// derive forecast figures from alert and stat messages this way). Must be quick.
    public let observer: (@Sendable ([Message]) -> Void)?

    public init(name: String, capacity: Int = 16, observer: (@Sendable ([Message]) -> Void)? = nil) {
        self.name = name
        self.channel = Channel(capacity: capacity)
        self.observer = observer
    }
}

/// A running count, readable while it grows.
public final class RunningCount: Sendable {
    private let value = Atomic<Int>(0)
    public init() {}
    public func add(_ n: Int) { value.add(n, ordering: .relaxed) }
    public var current: Int { value.load(ordering: .relaxed) }
}

/// A sequence number that only grows, readable from any thread.
final class LatestSequence: Sendable {
    private let v = Atomic<Int>(0)
    private let finished = Atomic<Bool>(false)
    func raise(_ n: Int) { _ = v.max(n, ordering: .relaxed) }
    var value: Int { v.load(ordering: .relaxed) }
    /// True the first time only.
    func finish() -> Bool { !finished.exchange(true, ordering: .relaxed) }
}

/// One stream bound to an input port.
public struct StageInput: Sendable {
    /// Name of the stream.
    public let stream: String
    let channel: Channel<[Message]>
    let consumer: Int
    /// Messages read so far through ``next()``.
    public let received = RunningCount()
    /// Batches read so far through ``next()``: the ordinal of the latest one (the first is 1).
    public let batches = RunningCount()

    /// Binds a new consumer of `stream`. With `autoAck` false the stage acknowledges batches
    /// itself (``acknowledge(through:)``); otherwise receiving a batch acknowledges it.
    public init(stream: MessageStream, autoAck: Bool = true) {
        self.stream = stream.name
        self.channel = stream.channel
        self.consumer = stream.channel.addConsumer(autoAck: autoAck)
    }

    /// The next batch, or nil once every producer of the stream has finished.
    public func next() async -> [Message]? {
        let batch = await channel.next(consumer)
        if let batch {
            received.add(batch.count)
            batches.add(1)
        }
        return batch
    }

    /// Identity of this input (one per bound stream and consuming stage).
    public var id: ObjectIdentifier { ObjectIdentifier(received) }

    /// Acknowledges the first `ordinal` batches read from this input (their effect is durable).
    /// For stages declaring ``InputAcknowledgement/explicit``; ordinals count from 1 in reading order.
    public func acknowledge(through ordinal: Int) { channel.acknowledge(consumer, through: ordinal) }

    /// True once a producer of the stream ended because its stage failed (e.g. a source hit a
    /// read error): the input was cut short rather than completed. Meaningful once ``next()`` has
    /// returned nil; a stage holding partial state (the collector's open cascades) must then not
    /// treat it as complete.
    public var upstreamFailed: Bool { channel.producerFailed }

    /// Stop consuming: producers no longer wait for this input.
    public func detach() { channel.detach(consumer) }

    /// Batches waiting in this input's buffer.
    public var pending: Int { channel.pending(consumer) }

    /// The capacity of this input's buffer, in batches.
    public var capacity: Int { channel.capacity }
}

/// The stream bound to an output port.
public struct StageOutput: Sendable {
    public let stream: String
    let target: MessageStream
    /// What this producer sent to the stream (the stream's ``MessageStream/stats`` counts every producer).
    public let sent = StreamStats()

    public init(stream: MessageStream) {
        self.stream = stream.name
        self.target = stream
        stream.channel.addProducer()
    }

    /// Stream sequence number of the latest batch this producer sent (0 before the first).
    private let latest = LatestSequence()

    /// Sends a batch (waits while a consumer is behind). Empty batches are skipped.
    public func send(_ batch: [Message]) async {
        guard !batch.isEmpty else { return }
        let counts = StreamStats.count(batch)
        target.stats.add(counts)
        sent.add(counts)
        target.observer?(batch)
        latest.raise(await target.channel.send(batch))
    }

    /// The stream sequence number of the latest batch sent by this producer; compare with
    /// ``durable`` to know when a batch is done everywhere.
    public var latestSequence: Int { latest.value }

    /// How many leading batches of the stream every consumer has acknowledged.
    public var durable: Int { target.channel.durable }

    /// Ends this producer's contribution to the stream. Called by the runtime after `run`; a
    /// stage may call it earlier (a source that waits for the stages downstream to finish before
    /// its last commit). Only the first call counts.
    public func finish() {
        if latest.finish() { target.channel.finish() }
    }

    /// Ends this producer's contribution because its stage failed: consumers see the stream end
    /// and ``StageInput/upstreamFailed``. Called by the runtime when `run` throws. Only the first
    /// call of this or ``finish()`` counts.
    public func fail() {
        if latest.finish() { target.channel.finishFailed() }
    }
}

/// One batch read from a set of merged inputs, with where it came from.
public struct TaggedBatch: Sendable {
    public var port: String
    public var stream: String
    public var messages: [Message]
    /// The input the batch was read from, and its ordinal there (from 1): a sink acknowledges it
    /// with `input.acknowledge(through: ordinal)` once written.
    public var input: StageInput
    public var ordinal: Int
}

/// A shared flag set when the running pipeline is asked to stop: for good (SIGTERM, SIGINT) or
/// to be rebuilt from a reloaded configuration (SIGHUP).
public final class StopSignal: Sendable {
    /// Why the pipeline stops.
    public enum Reason: UInt8, Sendable {
        /// The daemon exits: stages drain and finish their work (the collector flushes).
        case shutdown = 1
        /// The configuration is reloaded: stages drain and return **keeping their state**, and
        /// the daemon calls `run` again on the stages whose settings did not change.
        case reload = 2
    }

    private let flag = Atomic<UInt8>(0)
    private let limit = Mutex<ContinuousClock.Instant?>(nil)
    public init() {}

    /// When the stages' shutdown work must be over (flushes, commits, closes): set by a stop
    /// for good with a timeout, moved to now by a second stop signal. Nil: no deadline.
    public var deadline: ContinuousClock.Instant? { limit.withLock { $0 } }

    /// Sets the deadline `timeout` from now, unless an earlier one is set.
    public func setDeadline(in timeout: Duration) {
        let at = ContinuousClock.now + timeout
        limit.withLock { d in if d == nil || at < d! { d = at } }
    }

    /// Whether the deadline has passed.
    public var deadlinePassed: Bool { deadline.map { ContinuousClock.now >= $0 } ?? false }

    /// Requests a stop; the first reason given wins, except that a shutdown overrides a reload.
    public func request(_ reason: Reason = .shutdown) {
        if reason == .shutdown {
            flag.store(Reason.shutdown.rawValue, ordering: .relaxed)
        } else {
            _ = flag.compareExchange(expected: 0, desired: reason.rawValue, ordering: .relaxed)
        }
    }

    public var isRequested: Bool { flag.load(ordering: .relaxed) != 0 }

    /// The reason of the stop, nil while none was requested.
    public var reason: Reason? { Reason(rawValue: flag.load(ordering: .relaxed)) }
}

/// What a running stage gets from the daemon.
public final class StageContext: Sendable {
    /// The stage's name in the configuration.
    public let name: String
    /// The stage's type.
    public let type: String
    /// Logger whose every line carries `stage=<name>`.
    public let logger: Logger
    public let counters: StageCounters
    private let inputPorts: [String: [StageInput]]
    private let outputPorts: [String: StageOutput]
    private let stop: StopSignal
    private let processing: Timer
    private let limiter = Mutex<[String: (logged: Int, suppressed: Int, last: ContinuousClock.Instant)]>([:])

    /// Number of stages directly downstream of this one that hold record positions
    /// (``InputAcknowledgement/holdsPositions``): a replayable source commits only what all of
    /// them have released.
    public let positionHolders: Int

    public init(name: String, type: String, logger: Logger, counters: StageCounters = StageCounters(),
                inputs: [String: [StageInput]], outputs: [String: StageOutput], stop: StopSignal,
                positionHolders: Int = 0) {
        self.positionHolders = positionHolders
        self.name = name
        self.type = type
        var logger = logger
        logger[metadataKey: "stage"] = .string(name)
        self.logger = logger
        self.counters = counters
        self.inputPorts = inputs
        self.outputPorts = outputs
        self.stop = stop
        self.processing = Timer(label: "tweetoscope_stage_processing_seconds", dimensions: [("stage", name)])
    }

    private let trouble = Mutex<(text: String, since: ContinuousClock.Instant)?>(nil)

    /// Reports an ongoing condition the operator should see in the daemon's status line (systemd
    /// `STATUS=`), such as "kafka brokers unreachable"; nil clears it. Setting the same text
    /// again keeps its start time.
    public func setTrouble(_ text: String?) {
        trouble.withLock { t in
            guard let text else { t = nil; return }
            if t?.text != text { t = (text, ContinuousClock.now) }
        }
    }

    /// The ongoing condition, if any, and for how long it has lasted.
    public var currentTrouble: (text: String, duration: Duration)? {
        trouble.withLock { t in t.map { ($0.text, ContinuousClock.now - $0.since) } }
    }

    /// `[("stage", name)]`: the label every metric of a stage carries, first among its dimensions.
    public var metricDimensions: [(String, String)] { [("stage", name)] }

    /// Records the time one batch took to process (`tweetoscope_stage_processing_seconds{stage}`):
    /// the stage's own work on the batch, without waiting for input or for a full output.
    public func recordProcessing(_ duration: Duration) {
        processing.recordNanoseconds(Self.nanoseconds(duration))
    }

    /// Records the time since `start` as one batch's processing time.
    public func recordProcessing(since start: ContinuousClock.Instant) {
        recordProcessing(ContinuousClock.now - start)
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        let (s, atto) = d.components
        return s * 1_000_000_000 + atto / 1_000_000_000
    }

    /// The streams bound to input `port` (empty when unbound).
    public func inputs(_ port: String) -> [StageInput] { inputPorts[port] ?? [] }

    /// Every bound input, across ports.
    public var allInputs: [(port: String, input: StageInput)] {
        inputPorts.keys.sorted().flatMap { port in inputPorts[port]!.map { (port, $0) } }
    }

    /// The stream bound to output `port`, or nil when unbound (the stage then skips that output).
    public func output(_ port: String) -> StageOutput? { outputPorts[port] }

    /// Every bound output.
    public var allOutputs: [StageOutput] { outputPorts.keys.sorted().map { outputPorts[$0]! } }

    /// True once the daemon has been asked to stop: sources stop reading, other stages drain.
    public var stopRequested: Bool { stop.isRequested }

    /// When the shutdown work (flushes, commits, closes) must be over, once the daemon stops for
    /// good: the daemon's `shutdown_timeout` after the stop signal, or now after a second signal.
    /// A stage waiting on something external (a broker) stops waiting then, and counts what it
    /// lost. Nil while no deadline is set.
    public var stopDeadline: ContinuousClock.Instant? { stop.deadline }

    /// Whether ``stopDeadline`` has passed.
    public var stopDeadlinePassed: Bool { stop.deadlinePassed }

    /// True when the stop is a configuration reload: a stage whose input ends should return
    /// without flushing, keeping its state (open cascades, models) for its next `run`, which the
    /// daemon makes when the stage's settings did not change. A source should remember where it
    /// stopped and resume there.
    public var isReloading: Bool { stop.reason == .reload }

    /// Logs a warning about a skipped record, at most 5 times per reason and then once every 10 s
    /// with the number of lines suppressed in between; counting is the caller's job.
    public func warnRateLimited(_ reason: String, _ message: @autoclosure () -> String,
                                metadata: Logger.Metadata? = nil) {
        let now = ContinuousClock.now
        let emit: Int? = limiter.withLock { table in
            var entry = table[reason] ?? (0, 0, now)
            defer { table[reason] = entry }
            if entry.logged < 5 || now - entry.last >= .seconds(10) {
                let suppressed = entry.suppressed
                entry.logged += 1
                entry.suppressed = 0
                entry.last = now
                return suppressed
            }
            entry.suppressed += 1
            return nil
        }
        guard let suppressed = emit else { return }
        let suffix = suppressed > 0 ? " (\(suppressed) similar lines suppressed)" : ""
        var md = metadata ?? [:]
        md["reason"] = .string(reason)
        logger.warning("\(message())\(suffix)", metadata: md)
    }

    /// Reads every input (all ports) until all have ended, yielding batches as they arrive from
    /// any of them. The returned channel ends when all inputs end.
    public func mergedInputs() -> (Channel<TaggedBatch>, consumer: Int) {
        let merged = Channel<TaggedBatch>(capacity: 4)
        let id = merged.addConsumer()
        let all = allInputs
        for _ in all { merged.addProducer() }
        for (port, input) in all {
            Task {
                var ordinal = 0
                while let batch = await input.next() {
                    ordinal += 1
                    await merged.send(TaggedBatch(port: port, stream: input.stream, messages: batch,
                                                  input: input, ordinal: ordinal))
                }
                merged.finish()
            }
        }
        return (merged, id)
    }
}

/// Turns out-of-order completions of batch ordinals (1, 2, 3...) into in-order acknowledgements
/// of an input: `complete(n)` acknowledges through the largest ordinal whose predecessors are all
/// complete. For sinks whose writes finish out of order (Kafka delivery reports).
public final class BatchAcknowledger: Sendable {
    private struct State {
        var through = 0
        var done: Set<Int> = []
    }
    private let input: StageInput
    private let state = Mutex(State())

    public init(_ input: StageInput) { self.input = input }

    /// Marks batch `ordinal` complete; acknowledges the input through the contiguous prefix.
    public func complete(_ ordinal: Int) {
        let through: Int? = state.withLock { s in
            guard ordinal > s.through else { return nil }
            s.done.insert(ordinal)
            let before = s.through
            while s.done.remove(s.through + 1) != nil { s.through += 1 }
            return s.through > before ? s.through : nil
        }
        if let through { input.acknowledge(through: through) }
    }
}
