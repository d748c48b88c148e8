// The Kafka plugin: `kafka_source` reads a topic in the course's wire format into a stream,
// `kafka_sink` writes streams to a topic, `kafka_logs` the daemon's own log lines to a topic. Daemons joined by Kafka topics form the course's
// distributed deployment (one stage per daemon, or any grouping of stages).
import TweetoscopeCore
import TweetoscopeKafka

@_cdecl("tweetoscope_plugin_register")
public func tweetoscopePluginRegister(_ abi: UInt32, _ registrar: UnsafeMutableRawPointer) -> Int32 {
    PluginABI.entry(abi, registrar) {
        $0.register(KafkaSource.descriptor)
        $0.register(KafkaSink.descriptor)
        $0.register(KafkaLogs.descriptor)
    }
}

/// Options shared by the source and the sink.
enum CommonOptions {
    static let specs: [OptionSpec] = [
        OptionSpec("brokers", .string, default: .string("localhost:9092"),
                   doc: "bootstrap brokers, host:port[,host:port...] (librdkafka bootstrap.servers)"),
        OptionSpec("topic", .string, required: true, doc: "Kafka topic"),
        OptionSpec("librdkafka", .stringMap, default: .map([:]),
                   doc: "librdkafka properties passed through (e.g. security.protocol); values of keys naming a password, secret or sasl.jaas are never logged"),
        OptionSpec("create_topic", .bool, default: .bool(false),
                   doc: "create the topic at start if missing (retried while the broker is down)"),
        OptionSpec("partitions", .int, default: .int(4), range: 1...100_000, doc: "partitions of a topic created by create_topic"),
    ]

    struct Values {
        var brokers: String
        var topic: String
        var librdkafka: [String: String]
        var createTopic: Bool
        var partitions: Int

        /// bootstrap.servers and the passthrough properties (the passthrough wins).
        var baseConfig: [String: String] { KafkaConfig.merged(["bootstrap.servers": brokers], librdkafka) }
    }

    static func parse(_ options: StageOptions) throws -> Values {
        let v = Values(brokers: try options.string("brokers"), topic: try options.string("topic"),
                       librdkafka: try options.stringMap("librdkafka"), createTopic: try options.bool("create_topic"),
                       partitions: try options.int("partitions"))
        guard !v.brokers.isEmpty else { throw StageConfigError(option: "brokers", "must not be empty") }
        guard !v.topic.isEmpty, v.topic.count <= 249,
              v.topic.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") })
        else { throw StageConfigError(option: "topic", "\"\(v.topic)\" is not a valid Kafka topic name ([a-zA-Z0-9._-], 1 to 249 characters)") }
        guard v.partitions >= 1 else { throw StageConfigError(option: "partitions", "expected an integer >= 1") }
        return v
    }

    /// Checks the librdkafka properties without any I/O.
    static func validate(_ config: [String: String]) throws {
        do {
            try KafkaConfig.validate(config)
        } catch {
            throw StageConfigError(option: "librdkafka", error.message)
        }
    }
}

/// Reports librdkafka's client-level events into the stage's counters and rate-limited logs.
func eventHandler(_ context: StageContext, _ v: CommonOptions.Values) -> @Sendable (KafkaEvent) -> Void {
    let brokers = v.brokers, topic = v.topic
    return { event in
        switch event {
        case .error(let e):
            if e.reason == "all_brokers_down" { context.setTrouble(BrokerWatch.unreachable) }
            context.counters.add("kafka_error.\(e.reason)")
            context.warnRateLimited("kafka_\(e.reason)", "kafka: \(e.message)", metadata: [
                "error": .string(e.name), "brokers": .string(brokers), "topic": .string(topic),
                "fatal": .stringConvertible(e.isFatal),
            ])
        case .commitFailed(let e):
            context.counters.add("commit_failed")
            context.warnRateLimited("commit_failed", "kafka offset commit failed (records may be redelivered): \(e.message)",
                                    metadata: ["error": .string(e.name), "topic": .string(topic)])
        }
    }
}

/// Creates the topic, retrying while the broker is unreachable. Returns false if the daemon
/// was asked to stop first; throws for errors that retrying cannot fix.
func ensureTopic(_ context: StageContext, _ v: CommonOptions.Values) async throws -> Bool {
    var delay = 1
    while !context.stopRequested {
        do {
            let created = try await KafkaAdmin.createTopics([v.topic], partitions: v.partitions, config: v.baseConfig,
                                                            logger: context.logger, timeout: .seconds(10))
            context.logger.info(created.isEmpty ? "kafka topic exists" : "kafka topic created", metadata: [
                "topic": .string(v.topic), "partitions": .stringConvertible(v.partitions),
            ])
            return true
        } catch where error.isRetriable {
            context.counters.add("kafka_error.create_topic")
            context.warnRateLimited("create_topic", "cannot create kafka topic (retrying in \(delay) s): \(error)",
                                    metadata: ["topic": .string(v.topic), "brokers": .string(v.brokers)])
            for _ in 0..<(delay * 10) where !context.stopRequested { try? await Task.sleep(for: .milliseconds(100)) }
            delay = min(delay * 2, 30)
        } catch {
            throw StageConfigError(option: "create_topic", "cannot create kafka topic \(v.topic): \(error)")
        }
    }
    return false
}

/// Shows a broker outage in the daemon's status line: set when librdkafka reports every broker
/// down, cleared (with a log line) once a broker answers a metadata request again.
enum BrokerWatch {
    static let unreachable = "kafka brokers unreachable"

    /// Probes every 2 s while the outage is reported, until cancelled.
    static func run(_ context: StageContext, brokers: String, probe: @escaping @Sendable () async -> Bool) -> Task<Void, Never> {
        Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(2))
                guard let trouble = context.currentTrouble, trouble.text == unreachable else { continue }
                if await probe() {
                    context.setTrouble(nil)
                    context.logger.info("kafka brokers reachable again", metadata: [
                        "brokers": .string(brokers), "outage_seconds": .stringConvertible(Int(trouble.duration.components.seconds)),
                    ])
                }
            }
        }
    }
}
