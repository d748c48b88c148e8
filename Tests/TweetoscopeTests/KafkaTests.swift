// Pure-logic tests of the Kafka transport: configuration redaction and validation, error
// classification, and the plugin's option checks (no broker: everything through a broker is in
// Tests/integration/test_kafka.py).
import Testing
import TweetoscopeCore

import TweetoscopeKafka

@Suite struct KafkaConfigTests {
    @Test func secretKeysAreRecognised() {
        for key in ["sasl.password", "ssl.key.password", "SASL.PASSWORD", "sasl.oauthbearer.client.secret",
                    "sasl.jaas.config", "ssl.key.pem"] {
            #expect(KafkaConfig.isSecret(key), "\(key)")
        }
        for key in ["bootstrap.servers", "sasl.username", "security.protocol", "group.id", "acks"] {
            #expect(!KafkaConfig.isSecret(key), "\(key)")
        }
    }

    @Test func redactionHidesOnlySecretValues() {
        let settings = ["bootstrap.servers": "kafka:9092", "sasl.username": "alice", "sasl.password": "hunter2",
                        "sasl.jaas.config": "org.apache... password=\"hunter2\";"]
        let r = KafkaConfig.redacted(settings)
        #expect(r["bootstrap.servers"] == "kafka:9092")
        #expect(r["sasl.username"] == "alice")
        #expect(r["sasl.password"] == "***")
        #expect(r["sasl.jaas.config"] == "***")
        let text = KafkaConfig.describe(settings)
        #expect(!text.contains("hunter2"))
        #expect(text == "bootstrap.servers=kafka:9092 sasl.jaas.config=*** sasl.password=*** sasl.username=alice")
    }

    @Test func mergedLetsOverridesWin() {
        let m = KafkaConfig.merged(["acks": "all", "client.id": "x"], ["acks": "1"])
        #expect(m == ["acks": "1", "client.id": "x"])
    }

    @Test func validationNamesTheKeyButNeverASecretValue() throws {
        try KafkaConfig.validate(["bootstrap.servers": "localhost:9092", "acks": "all", "linger.ms": "5"])
        do {
            try KafkaConfig.validate(["no.such.property": "1"])
            Issue.record("an unknown property must be rejected")
        } catch {
            #expect(error.message.contains("no.such.property"))
            #expect(!error.isRetriable && !error.isFatal)
        }
        do {
            try KafkaConfig.validate(["linger.ms": "soon"])
            Issue.record("a bad value must be rejected")
        } catch {
            #expect(error.message.contains("linger.ms"))
        }
        do {
            try KafkaConfig.validate(["my.secret.thing": "hunter2"])
            Issue.record("an unknown secret property must be rejected")
        } catch {
            #expect(error.message.contains("my.secret.thing"))
            #expect(!error.message.contains("hunter2"))
        }
    }
}

@Suite struct KafkaErrorTests {
    // rd_kafka_resp_err_t values (librdkafka's rdkafka.h).
    static let transport: Int32 = -195, allBrokersDown: Int32 = -187, msgTimedOut: Int32 = -192
    static let fatal: Int32 = -150, queueFull: Int32 = -184, unknownTopicOrPart: Int32 = 3
    static let notLeader: Int32 = 6, msgSizeTooLarge: Int32 = 10, topicAlreadyExists: Int32 = 36
    static let outOfOrderSequence: Int32 = 45, unknownProducerID: Int32 = 59, topicAuthorization: Int32 = 29

    @Test func transientErrorsAreRetriableNotFatal() {
        for code in [Self.transport, Self.allBrokersDown, Self.msgTimedOut, Self.queueFull,
                     Self.unknownTopicOrPart, Self.notLeader] {
            let e = KafkaError(code: code)
            #expect(e.isRetriable && !e.isFatal, "\(e)")
        }
    }

    @Test func lostProducerStateIsFatal() {
        for code in [Self.fatal, Self.outOfOrderSequence, Self.unknownProducerID] {
            let e = KafkaError(code: code)
            #expect(e.isFatal && !e.isRetriable, "\(e)")
        }
    }

    @Test func permanentErrorsAreNeither() {
        for code in [Self.msgSizeTooLarge, Self.topicAlreadyExists, Self.topicAuthorization] {
            let e = KafkaError(code: code)
            #expect(!e.isFatal && !e.isRetriable, "\(e)")
        }
    }

    @Test func namesReasonsAndDescription() {
        let e = KafkaError(code: Self.transport, message: "broker down")
        #expect(e.name == "_TRANSPORT")
        #expect(e.reason == "transport")
        #expect(e.description == "_TRANSPORT (-195, retriable): broker down")
        #expect(KafkaError(code: Self.topicAlreadyExists).name == "TOPIC_ALREADY_EXISTS")
        #expect(KafkaError.topicAlreadyExists == Self.topicAlreadyExists)
        #expect(KafkaError(code: Self.msgTimedOut).reason == "msg_timed_out")
        // The default message is librdkafka's text for the code.
        #expect(!KafkaError(code: Self.allBrokersDown).message.isEmpty)
        let f = KafkaError(code: Self.outOfOrderSequence, message: "m", isFatal: true, isRetriable: false)
        #expect(f.description == "OUT_OF_ORDER_SEQUENCE_NUMBER (45, fatal): m")
    }

    @Test func topicPartitionsDescribeCompactly() {
        let set: Set<TopicPartition> = [TopicPartition(topic: "tweets", partition: 3), TopicPartition(topic: "tweets", partition: 0),
                                        TopicPartition(topic: "models", partition: 1)]
        #expect(TopicPartition.describe(set) == "models[1] tweets[0,3]")
        #expect(TopicPartition.describe([TopicPartition]()) == "")
    }
}

/// The plugin's option checks run when a stage is made: no I/O, no broker.
@Suite struct KafkaPluginOptionTests {
    func make(_ type: String, _ given: [String: OptionValue]) throws -> any Stage {
        let d = try stageDescriptor(type, plugin: "kafka")
        return try d.make(type, options(d, given))
    }

    func configError(_ type: String, _ given: [String: OptionValue]) -> StageConfigError? {
        do {
            _ = try make(type, given)
            return nil
        } catch {
            return error as? StageConfigError
        }
    }

    @Test func descriptorsDeclareTheDocumentedOptions() throws {
        let source = try stageDescriptor("kafka_source", plugin: "kafka")
        #expect(source.options.map(\.key) == ["brokers", "topic", "librdkafka", "create_topic", "partitions",
                                              "group", "instance_id", "start", "stop_at_end", "max_record_bytes", "deduplicate"])
        #expect(source.options.first { $0.key == "deduplicate" }?.defaultValue == .int(200_000))
        #expect(source.acknowledgement == .onReceipt)
        #expect(source.outputs.map(\.name) == ["messages", "rejected"] && source.outputs[0].kinds == Set(MessageKind.allCases))
        #expect(source.outputs[1].kinds == [.log] && !source.outputs[1].required)
        #expect(source.options.first { $0.key == "max_record_bytes" }?.defaultValue == .int(1 << 20))
        #expect(source.options.first { $0.key == "group" }?.defaultValue == .string("tweetoscoped"))
        #expect(source.options.first { $0.key == "start" }?.type == .choice(["earliest", "latest"]))
        let sink = try stageDescriptor("kafka_sink", plugin: "kafka")
        #expect(sink.options.map(\.key) == ["brokers", "topic", "librdkafka", "create_topic", "partitions", "keyless", "partitioner"])
        #expect(sink.acknowledgement == .explicit, "a replayable source upstream commits only what Kafka acknowledged")
        #expect(sink.inputs.map(\.name) == ["messages"] && sink.inputs[0].multiple)
        #expect(sink.options.first { $0.key == "brokers" }?.defaultValue == .string("localhost:9092"))
    }

    @Test func validOptionsMakeStages() throws {
        _ = try make("kafka_source", ["topic": .string("tweets"), "librdkafka": .map(["fetch.wait.max.ms": "50"])])
        _ = try make("kafka_sink", ["topic": .string("cascade_properties"), "librdkafka": .map(["linger.ms": "10"])])
    }

    @Test func badOptionsNameTheOption() {
        #expect(configError("kafka_source", ["topic": .string("bad topic!")])?.option == "topic")
        #expect(configError("kafka_sink", ["topic": .string("")])?.option == "topic")
        #expect(configError("kafka_sink", ["topic": .string("t"), "partitions": .int(0)])?.option == "partitions")
        #expect(configError("kafka_source", ["topic": .string("t"), "group": .string("")])?.option == "group")
        #expect(configError("kafka_source", ["topic": .string("t"), "max_record_bytes": .int(63)])?.option == "max_record_bytes")
        #expect(configError("kafka_source", ["topic": .string("t"), "max_record_bytes": .int(64)]) == nil)
        #expect(configError("kafka_sink", ["topic": .string("t"), "brokers": .string("")])?.option == "brokers")
        let e = configError("kafka_source", ["topic": .string("t"), "librdkafka": .map(["no.such.thing": "1"])])
        #expect(e?.option == "librdkafka")
        #expect(e?.message.contains("no.such.thing") == true)
        let secret = configError("kafka_sink", ["topic": .string("t"), "librdkafka": .map(["x.password": "hunter2"])])
        #expect(secret?.option == "librdkafka")
        #expect(secret?.message.contains("hunter2") == false)
    }
}
