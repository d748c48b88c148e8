// The Kafka client (Sources/TweetoscopeKafka) against librdkafka's built-in mock cluster
// (rdkafka_mock.h): a real Kafka protocol conversation on localhost listeners, in process, with
// no broker to install. Produce, consume, commit, brokers down, and errors injected into the
// broker's answers. Expected values are the records the test itself produced.
import CRdKafka
import Synchronization
import Testing
import TweetoscopeCore

import TweetoscopeKafka

/// A mock cluster of `brokers` brokers, owned by a bare librdkafka handle; destroyed with it.
final class MockCluster: @unchecked Sendable {
    let owner: OpaquePointer
    let cluster: OpaquePointer
    let bootstrap: String

    init(brokers: Int32 = 3) throws {
        let conf = rd_kafka_conf_new()!
        var errstr = [CChar](repeating: 0, count: 512)
        rd_kafka_conf_set(conf, "log_level", "2", &errstr, errstr.count)
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errstr, errstr.count) else {
            throw KafkaError(code: KafkaError.invalidArgument, message: "cannot create the mock cluster's owner")
        }
        guard let mc = rd_kafka_mock_cluster_new(rk, brokers) else {
            rd_kafka_destroy(rk)
            throw KafkaError(code: KafkaError.invalidArgument, message: "cannot create a mock cluster")
        }
        owner = rk
        cluster = mc
        bootstrap = String(cString: rd_kafka_mock_cluster_bootstraps(mc))
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        rd_kafka_destroy(owner)
    }

    func createTopic(_ name: String, partitions: Int32) {
        #expect(rd_kafka_mock_topic_create(cluster, name, partitions, 1) == RD_KAFKA_RESP_ERR_NO_ERROR)
    }

    /// Every broker down (disconnected, new connections refused) or up again.
    func setAllBrokers(up: Bool) {
        let rc = up ? rd_kafka_mock_broker_set_up(cluster, -1) : rd_kafka_mock_broker_set_down(cluster, -1)
        #expect(rc == RD_KAFKA_RESP_ERR_NO_ERROR)
    }

    /// The next `errors.count` requests of API `apiKey` (0 = Produce) are answered with these errors.
    func failNext(apiKey: Int16, _ errors: [rd_kafka_resp_err_t]) {
        errors.withUnsafeBufferPointer { rd_kafka_mock_push_request_errors_array(cluster, apiKey, errors.count, $0.baseAddress) }
    }
}

/// A fresh topic name per test.
private func topicName(_ base: String) -> String { "\(base)-\(UInt32.random(in: 0...UInt32.max))" }

private func record(_ topic: String, _ i: Int) -> ProducerRecord {
    ProducerRecord(topic: topic, key: Array("k\(i % 5)".utf8), value: Array("value-\(i)".utf8))
}

/// Polls `consumer` until `count` records arrived or `seconds` passed.
private func drain(_ consumer: KafkaConsumer, count: Int, seconds: Int = 60) async -> [ConsumedRecord] {
    var got: [ConsumedRecord] = []
    let deadline = ContinuousClock.now + .seconds(seconds)
    while got.count < count && ContinuousClock.now < deadline {
        got += await consumer.poll(max: 1000, timeout: .milliseconds(200)).records
    }
    return got
}

@Suite(.serialized) struct KafkaMockClusterTests {
    let logger = Logger(label: "kafka-mock-test")

    func consumerConfig(_ mock: MockCluster, group: String) -> [String: String] {
        ["bootstrap.servers": mock.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
         "session.timeout.ms": "6000", "heartbeat.interval.ms": "500"]
    }

    @Test func produceConsumeAndCommitRoundTrip() async throws {
        let mock = try MockCluster()
        let topic = topicName("round-trip")
        mock.createTopic(topic, partitions: 4)
        let producer = try KafkaProducer(config: ["bootstrap.servers": mock.bootstrap], logger: logger)
        var deliveries: [Delivery] = []
        for i in 0..<200 { deliveries.append(try await producer.send(record(topic, i))) }
        await producer.close(timeout: .seconds(10))
        // Every record acknowledged once, offsets contiguous from 0 in each partition, and one
        // key always in one partition.
        var byPartition: [Int32: [Int64]] = [:]
        for d in deliveries { byPartition[d.partition, default: []].append(d.offset) }
        #expect(byPartition.values.reduce(0) { $0 + $1.count } == 200)
        for offsets in byPartition.values { #expect(offsets.sorted() == (0..<Int64(offsets.count)).map { $0 }) }
        var partitionOfKey: [Int: Set<Int32>] = [:]
        for (i, d) in deliveries.enumerated() { partitionOfKey[i % 5, default: []].insert(d.partition) }
        #expect(partitionOfKey.values.allSatisfy { $0.count == 1 })

        let group = topicName("group")
        let consumer = try KafkaConsumer(config: consumerConfig(mock, group: group), logger: logger)
        try consumer.subscribe([topic])
        let got = await drain(consumer, count: 200)
        #expect(Set(got.map { String(decoding: $0.value ?? [], as: UTF8.self) }) == Set((0..<200).map { "value-\($0)" }))
        #expect(got.count == 200)
        // Commit everything read (next offset = last + 1 per partition), synchronously.
        var next: [TopicPartition: Int64] = [:]
        for r in got { next[r.topicPartition] = max(next[r.topicPartition] ?? 0, r.offset + 1) }
        let commitError = await consumer.commit(next, wait: true)
        #expect(commitError == nil)
        await consumer.close()

        // A new member of the group starts from the committed offsets: it reads only new records.
        let producer2 = try KafkaProducer(config: ["bootstrap.servers": mock.bootstrap], logger: logger)
        for i in 200..<230 { _ = try await producer2.send(record(topic, i)) }
        await producer2.close(timeout: .seconds(10))
        let again = try KafkaConsumer(config: consumerConfig(mock, group: group), logger: logger)
        try again.subscribe([topic])
        let rest = await drain(again, count: 30)
        // Give it a moment to show it would not redeliver older records.
        let extra = await drain(again, count: 1, seconds: 2)
        await again.close()
        #expect(Set((rest + extra).map { String(decoding: $0.value ?? [], as: UTF8.self) }) == Set((200..<230).map { "value-\($0)" }))
        #expect(rest.count + extra.count == 30)
    }

    @Test func brokersDownFailDeliveryWithinTheTimeoutAndUpAgainDelivers() async throws {
        let mock = try MockCluster()
        let topic = topicName("down")
        mock.createTopic(topic, partitions: 2)
        // Short reconnect backoff: once the brokers are up again the client reconnects within
        // a fraction of message.timeout.ms, even on a loaded machine.
        let producer = try KafkaProducer(config: ["bootstrap.servers": mock.bootstrap, "message.timeout.ms": "3000",
                                                  "reconnect.backoff.ms": "50", "reconnect.backoff.max.ms": "200"],
                                         logger: logger)
        _ = try await producer.send(record(topic, 0))
        #expect(await producer.brokersReachable(timeout: .seconds(5)))

        mock.setAllBrokers(up: false)
        #expect(await producer.brokersReachable(timeout: .milliseconds(500)) == false)
        do {
            _ = try await producer.send(record(topic, 1))
            Issue.record("a record produced while every broker is down was acknowledged")
        } catch {
            #expect(error.isRetriable, "\(error)")   // _MSG_TIMED_OUT: librdkafka gave up within message.timeout.ms
            #expect(!error.isFatal)
        }

        mock.setAllBrokers(up: true)
        #expect(await producer.brokersReachable(timeout: .seconds(60)))
        let delivery = try await producer.send(record(topic, 2))
        #expect(delivery.offset >= 1)
        await producer.close(timeout: .seconds(10))
    }

    @Test func retriableProduceErrorsAreRetriedByTheClient() async throws {
        let mock = try MockCluster()
        let topic = topicName("retry")
        mock.createTopic(topic, partitions: 1)
        let producer = try KafkaProducer(config: ["bootstrap.servers": mock.bootstrap], logger: logger)
        _ = try await producer.send(record(topic, 0))
        // The next three Produce requests fail with a retriable error (NOT_ENOUGH_REPLICAS = 19).
        mock.failNext(apiKey: 0, Array(repeating: rd_kafka_resp_err_t(rawValue: 19), count: 3))
        let delivery = try await producer.send(record(topic, 1))
        #expect(delivery.offset == 1)   // delivered once, in order, after the retries
        await producer.close(timeout: .seconds(10))
    }

    @Test func fatalIdempotenceErrorRecreatesTheProducerAndLosesNothing() async throws {
        let mock = try MockCluster()
        let topic = topicName("fatal")
        mock.createTopic(topic, partitions: 1)
        let events = Mutex<[KafkaError]>([])
        let producer = try KafkaProducer(config: ["bootstrap.servers": mock.bootstrap], logger: logger) { event in
            if case .error(let e) = event { events.withLock { $0.append(e) } }
        }
        _ = try await producer.send(record(topic, 0))
        // OUT_OF_ORDER_SEQUENCE_NUMBER (45) on an idempotent producer: librdkafka raises a fatal
        // error; the client must recreate its instance and produce the record again.
        mock.failNext(apiKey: 0, [rd_kafka_resp_err_t(rawValue: 45)])
        let delivery = try await producer.send(record(topic, 1))
        #expect(delivery.partition == 0)
        #expect(producer.recoveries >= 1)
        #expect(events.withLock { $0 }.contains { $0.isFatal })
        await producer.close(timeout: .seconds(10))

        // The topic holds each record (at least once; the idempotent re-produce may duplicate
        // only what the failed instance could not confirm).
        let consumer = try KafkaConsumer(config: consumerConfig(mock, group: topicName("g")), logger: logger)
        try consumer.subscribe([topic])
        let got = await drain(consumer, count: 2)
        await consumer.close()
        #expect(Set(got.map { String(decoding: $0.value ?? [], as: UTF8.self) }) == ["value-0", "value-1"])
    }
}
