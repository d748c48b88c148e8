// `kafka_logs`: the daemon's own log lines, in the course logger's format, to a Kafka topic
// (spec §1.8, §7: every service publishes its log on `logs` for the course's logger.py).
import Synchronization
import TweetoscopeCore
import TweetoscopeKafka

/// Forwards the daemon's log records at or above `level` (and the daemon's own log level) to
/// `topic` as `{"t": <unix s>, "source": <stage or "daemon">, "level": "WARNING", "message": ...}`
/// (``LogRecord``, the course logger's record), without a key.
///
/// - Never blocks the pipeline: the log handler only appends to a buffer of `buffer` lines; a
///   line beyond `rate` per second (token bucket of `rate` lines, refilled continuously) or
///   arriving with the buffer full is dropped and counted (`dropped_rate`, `dropped_full`).
///   Delivered lines are counted `delivered`, lost ones `rejected.delivery_failed`.
/// - A background stage: no inputs; it ends (flushing what it holds, within the stop deadline)
///   when the daemon stops or every other stage of the pipeline has returned. Lines logged
///   during the drain of the other stages are sent too.
final class KafkaLogs: Stage {
    static let descriptor: StageDescriptor = {
        var d = StageDescriptor(
            type: "kafka_logs",
            summary: "Writes the daemon's own log lines (level and above) to a Kafka topic in the course logger's format.",
            inputs: [], outputs: [],
            options: CommonOptions.specs + [
                OptionSpec("level", .choice(["debug", "info", "warning", "error", "critical"]), default: .string("warning"),
                           doc: "lowest level forwarded (lines below the daemon's log_level are never produced)"),
                OptionSpec("rate", .double, default: .double(20), range: 0.01...1e6,
                           doc: "most lines per second forwarded (token bucket, burst = one second's worth); the rest are dropped and counted"),
                OptionSpec("buffer", .int, default: .int(1000), range: 1...1e7,
                           doc: "most lines waiting for the producer; more are dropped and counted"),
                OptionSpec("partitioner", .choice(["murmur2_random", "consistent_random", "random"]), default: .string("murmur2_random"),
                           doc: "librdkafka partitioner (records have no key, so partitions are picked at random)"),
            ],
            make: { _, options in try KafkaLogs(options) })
        d.background = true
        return d
    }()

    let common: CommonOptions.Values
    let level: Logger.Level
    let rate: Double
    let capacity: Int
    let partitioner: String

    init(_ options: StageOptions) throws {
        common = try CommonOptions.parse(options)
        level = Logger.Level(rawValue: try options.string("level")) ?? .warning
        rate = try options.double("rate")
        guard rate.isFinite, rate > 0 else { throw StageConfigError(option: "rate", "expected a number of lines per second > 0") }
        capacity = try options.int("buffer")
        partitioner = try options.string("partitioner")
        try CommonOptions.validate(KafkaConfig.merged(KafkaProducer.defaults, producerConfig))
        // Lines logged by stages that start before this one's run subscribes.
        LogTap.shared.keepBacklog(capacity)
    }

    var producerConfig: [String: String] { KafkaConfig.merged(["partitioner": partitioner], common.baseConfig) }

    /// The lines waiting for the producer, filled by the log handler's thread.
    final class Buffer: Sendable {
        struct State {
            var lines: [LogRecord] = []
            var tokens: Double
            var refilled = ContinuousClock.now
        }
        let state: Mutex<State>
        let rate: Double, capacity: Int, level: Logger.Level
        let counters: StageCounters

        init(rate: Double, capacity: Int, level: Logger.Level, counters: StageCounters) {
            self.rate = rate
            self.capacity = capacity
            self.level = level
            self.counters = counters
            state = Mutex(State(tokens: max(1, rate)))
        }

        /// Called on the logging thread: append or drop, never wait, never log.
        func offer(_ r: LogTap.Record) {
            guard r.level >= level else { return }
            let now = ContinuousClock.now
            let dropped: String? = state.withLock { s in
                let elapsed = now - s.refilled
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
                s.tokens = min(max(1, rate), s.tokens + rate * seconds)
                s.refilled = now
                guard s.tokens >= 1 else { return "dropped_rate" }
                guard s.lines.count < capacity else { return "dropped_full" }
                s.tokens -= 1
                s.lines.append(LogRecord(time: r.time, source: r.stage, level: LogTap.courseLevel(r.level), message: r.message))
                return nil
            }
            if let dropped { counters.add(dropped) }
        }

        func take() -> [LogRecord] { state.withLock { s in defer { s.lines = [] }; return s.lines } }
    }

    func run(_ context: StageContext) async throws {
        let buffer = Buffer(rate: rate, capacity: capacity, level: level, counters: context.counters)
        let token = LogTap.shared.subscribe { buffer.offer($0) }
        defer { LogTap.shared.unsubscribe(token) }
        if common.createTopic, !(try await ensureTopic(context, common)) { return }
        let producer = try KafkaProducer(config: producerConfig, logger: context.logger, onEvent: eventHandler(context, common))
        context.logger.info("kafka logs writing", metadata: [
            "topic": .string(common.topic), "brokers": .string(common.brokers), "level": .string(level.rawValue),
        ])
        let topic = common.topic, counters = context.counters
        let completion: @Sendable (Result<Delivery, KafkaError>) -> Void = { result in
            switch result {
            case .success: counters.add("delivered")
            case .failure: counters.reject("delivery_failed")
            }
        }
        func send(_ lines: [LogRecord]) async {
            for line in lines {
                let record = ProducerRecord(topic: topic, key: nil, value: WireFormat.encode(.log(line)))
                do {
                    try await producer.enqueue(record, giveUp: { context.stopDeadlinePassed }, completion: completion)
                    counters.add("produced")
                } catch {
                    counters.reject("delivery_failed")
                }
            }
        }
        while !context.stopRequested {
            await send(buffer.take())
            try? await Task.sleep(for: .milliseconds(100))
        }
        // The other stages are draining or done: forward what they log until the end, briefly.
        try? await Task.sleep(for: .milliseconds(200))
        LogTap.shared.unsubscribe(token)
        await send(buffer.take())
        // At most 10 s when the pipeline ended by itself (no stop deadline): log lines must not
        // hold the run open while the broker is away.
        let giveUp = ContinuousClock.now + .seconds(10)
        while !(await producer.flush(timeout: shutdownBudget(context, at: .seconds(1)))) {
            if context.stopDeadlinePassed || ContinuousClock.now >= giveUp { break }
        }
        // Closing purges what is still undelivered; its delivery reports count it lost.
        await producer.close(timeout: .zero)
    }
}
