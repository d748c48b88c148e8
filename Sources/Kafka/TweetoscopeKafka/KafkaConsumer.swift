// The consumer: a consumer-group member with manual offset commits. Polls and synchronous
// commits run on a dedicated thread; the caller commits the offsets of what it has processed.
import CRdKafka
import Glibc
import Synchronization
import TweetoscopeCore

/// A topic partition.
public struct TopicPartition: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var topic: String
    public var partition: Int32

    public init(topic: String, partition: Int32) {
        self.topic = topic
        self.partition = partition
    }

    public var description: String { "\(topic)[\(partition)]" }

    public static func < (a: TopicPartition, b: TopicPartition) -> Bool {
        (a.topic, a.partition) < (b.topic, b.partition)
    }

    /// `topic[0,1,3] other[2]`.
    public static func describe(_ set: some Collection<TopicPartition>) -> String {
        let byTopic = Dictionary(grouping: set, by: \.topic)
        return byTopic.keys.sorted().map { t in
            "\(t)[" + byTopic[t]!.map(\.partition).sorted().map(String.init).joined(separator: ",") + "]"
        }.joined(separator: " ")
    }
}

/// One consumed record.
public struct ConsumedRecord: Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: [UInt8]?
    /// Nil for a tombstone (null value).
    public var value: [UInt8]?
    /// The consumer's assignment generation when the record was polled: a record whose
    /// generation is below its partition's ``KafkaConsumer/assignedAt`` was fetched before the
    /// partition was (re)assigned, which restarts it from the committed offset.
    public var generation: Int = 0

    public var topicPartition: TopicPartition { TopicPartition(topic: topic, partition: partition) }
}

/// What one poll returned.
public struct PollResult: Sendable {
    public var records: [ConsumedRecord] = []
    /// Partitions whose end was reached (`enable.partition.eof`) with the end offset (the
    /// offset of the next record to come).
    public var endOfPartition: [(partition: TopicPartition, offset: Int64)] = []
    /// Consumer errors (broker down...): librdkafka retries by itself.
    public var errors: [KafkaError] = []
}

final class ConsumerCallbacks: KafkaCallbacks, @unchecked Sendable {
    let assignment = Mutex<Set<TopicPartition>>([])
    /// Bumped at every assignment change.
    let generation = Atomic<Int>(0)
    /// Per assigned partition, the generation that (re)assigned it (reading restarts there from
    /// the committed offset).
    let assignedAt = Mutex<[TopicPartition: Int]>([:])

    override func install(on conf: OpaquePointer) {
        super.install(on: conf)
        rd_kafka_conf_set_rebalance_cb(conf, kafkaRebalanceCallback)
        rd_kafka_conf_set_offset_commit_cb(conf, kafkaCommitCallback)
    }

    func rebalance(_ rk: OpaquePointer, _ err: rd_kafka_resp_err_t,
                   _ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) {
        let partitions = list.map(KafkaConsumer.partitions) ?? []
        let cooperative = rd_kafka_rebalance_protocol(rk).map { String(cString: $0) } == "COOPERATIVE"
        var failure: KafkaError?
        func check(_ error: OpaquePointer?) {
            guard let error else { return }
            failure = KafkaError(code: rd_kafka_error_code(error).rawValue,
                                 message: String(cString: rd_kafka_error_string(error)))
            rd_kafka_error_destroy(error)
        }
        switch err {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            if cooperative { check(rd_kafka_incremental_assign(rk, list)) } else {
                let rc = rd_kafka_assign(rk, list)
                if rc != RD_KAFKA_RESP_ERR_NO_ERROR { failure = KafkaError(rc) }
            }
            let now = assignment.withLock { a -> Set<TopicPartition> in
                if !cooperative { a = [] }
                a.formUnion(partitions)
                return a
            }
            logger.info("kafka partitions assigned", metadata: [
                "assigned": .string(TopicPartition.describe(partitions)), "now": .string(TopicPartition.describe(now)),
            ])
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
            let lost = rd_kafka_assignment_lost(rk) != 0
            if cooperative { check(rd_kafka_incremental_unassign(rk, list)) } else {
                let rc = rd_kafka_assign(rk, nil)
                if rc != RD_KAFKA_RESP_ERR_NO_ERROR { failure = KafkaError(rc) }
            }
            let now = assignment.withLock { a -> Set<TopicPartition> in
                if cooperative { a.subtract(partitions) } else { a = [] }
                return a
            }
            logger.info(lost ? "kafka partitions lost" : "kafka partitions revoked", metadata: [
                "revoked": .string(TopicPartition.describe(partitions)), "now": .string(TopicPartition.describe(now)),
            ])
        default:
            _ = rd_kafka_assign(rk, nil)
            assignment.withLock { $0 = [] }
            failure = KafkaError(err)
        }
        let current = generation.add(1, ordering: .relaxed).newValue
        assignedAt.withLock { at in
            switch err {
            case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
                if !cooperative { at = [:] }
                for tp in partitions { at[tp] = current }
            case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
                if cooperative { for tp in partitions { at[tp] = nil } } else { at = [:] }
            default:
                at = [:]
            }
        }
        if let failure { onEvent(.error(failure)) }
    }

    func committed(_ err: rd_kafka_resp_err_t, _ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?) {
        if err != RD_KAFKA_RESP_ERR_NO_ERROR && err != RD_KAFKA_RESP_ERR__NO_OFFSET {
            onEvent(.commitFailed(KafkaError(err)))
            return
        }
        guard let list else { return }
        for i in 0..<Int(list.pointee.cnt) {
            let e = list.pointee.elems[i].err
            if e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR__NO_OFFSET {
                onEvent(.commitFailed(KafkaError(e, message: "\(String(cString: list.pointee.elems[i].topic))[\(list.pointee.elems[i].partition)]: \(KafkaError.text(e.rawValue))")))
            }
        }
    }
}

private let kafkaRebalanceCallback: @convention(c) (OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, UnsafeMutableRawPointer?) -> Void = {
    rk, err, list, opaque in
    guard let rk, let callbacks = KafkaCallbacks.from(opaque) as? ConsumerCallbacks else { return }
    callbacks.rebalance(rk, err, list)
}

private let kafkaCommitCallback: @convention(c) (OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, UnsafeMutableRawPointer?) -> Void = {
    _, err, list, opaque in
    (KafkaCallbacks.from(opaque) as? ConsumerCallbacks)?.committed(err, list)
}

/// A Kafka consumer-group member with manual commits (`enable.auto.commit=false`,
/// `enable.auto.offset.store=false`): offsets are committed only by ``commit(_:wait:)``.
///
/// Every blocking librdkafka call runs on the consumer's own thread; the async methods wait for
/// it without blocking Swift's cooperative threads. Rebalances are handled by the consumer
/// (eager or cooperative, per `partition.assignment.strategy`) and logged.
public final class KafkaConsumer: @unchecked Sendable {
    /// Defaults under every consumer's settings.
    public static let defaults: [String: String] = [
        "client.id": "tweetoscoped", "enable.partition.eof": "false",
    ]
    /// Settings forced over the caller's: offsets move only when the caller commits.
    public static let forced: [String: String] = [
        "enable.auto.commit": "false", "enable.auto.offset.store": "false",
    ]

    let logger: Logger
    private let rk: OpaquePointer
    private let callbacks: ConsumerCallbacks
    private let worker: BlockingWorker
    private let closed = Atomic<Bool>(false)
    // Topic names by topic handle; used on the worker thread only.
    private var topicNames: [OpaquePointer: String] = [:]
    private var lastTopic: (rkt: OpaquePointer, name: String)?

    /// Creates the consumer (no I/O). `config` must contain `bootstrap.servers` and `group.id`.
    public init(config: [String: String], logger: Logger,
                onEvent: @escaping @Sendable (KafkaEvent) -> Void = { _ in }) throws(KafkaError) {
        for (key, value) in Self.forced where config[key] != nil && config[key] != value {
            logger.warning("librdkafka property \(key) is forced to \(value) (offsets are committed after hand-over)")
        }
        let settings = KafkaConfig.merged(KafkaConfig.merged(Self.defaults, config), Self.forced)
        self.logger = logger
        callbacks = ConsumerCallbacks(logger: logger, onEvent: onEvent)
        let conf = try KafkaConfig.makeConf(settings)
        callbacks.install(on: conf)
        var errstr = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, &errstr, errstr.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(code: KafkaError.invalidArgument,
                             message: "cannot create the consumer: " + errstr.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        self.rk = rk
        rd_kafka_poll_set_consumer(rk)
        worker = BlockingWorker(name: "rdk-consumer")
        logger.debug("kafka consumer created", metadata: ["config": .string(KafkaConfig.describe(settings))])
    }

    /// Subscribes to `topics` (the group assigns their partitions during the next polls).
    public func subscribe(_ topics: [String]) throws(KafkaError) {
        let list = rd_kafka_topic_partition_list_new(Int32(topics.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for t in topics { rd_kafka_topic_partition_list_add(list, t, RD_KAFKA_PARTITION_UA) }
        let rc = rd_kafka_subscribe(rk, list)
        if rc != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(rc) }
    }

    /// The partitions currently assigned to this member.
    public var assignment: Set<TopicPartition> { callbacks.assignment.withLock { $0 } }

    /// Increases at every rebalance.
    public var assignmentGeneration: Int { callbacks.generation.load(ordering: .relaxed) }

    /// Per assigned partition, the generation that (re)assigned it: with the eager protocol
    /// every rebalance reassigns every partition, with the cooperative one only the new ones.
    public var assignedAt: [TopicPartition: Int] { callbacks.assignedAt.withLock { $0 } }

    /// Records between this member's position and the high watermark, per assigned partition,
    /// from librdkafka's cached watermarks (no broker round trip). Partitions whose position or
    /// watermark is not known yet are left out. For metrics (consumer lag).
    public func lag() -> [TopicPartition: Int64] {
        let assigned = assignment
        guard !assigned.isEmpty, !closed.load(ordering: .relaxed) else { return [:] }
        let list = rd_kafka_topic_partition_list_new(Int32(assigned.count))!
        defer { rd_kafka_topic_partition_list_destroy(list) }
        for tp in assigned { rd_kafka_topic_partition_list_add(list, tp.topic, tp.partition) }
        guard rd_kafka_position(rk, list) == RD_KAFKA_RESP_ERR_NO_ERROR else { return [:] }
        var result: [TopicPartition: Int64] = [:]
        for i in 0..<Int(list.pointee.cnt) {
            let e = list.pointee.elems[i]
            guard e.offset >= 0 else { continue }
            var low: Int64 = -1, high: Int64 = -1
            guard rd_kafka_get_watermark_offsets(rk, e.topic, e.partition, &low, &high) == RD_KAFKA_RESP_ERR_NO_ERROR,
                  high >= 0 else { continue }
            result[TopicPartition(topic: String(cString: e.topic), partition: e.partition)] = max(0, high - e.offset)
        }
        return result
    }

    /// Up to `max` records: waits at most `timeout` for the first one, then takes what is
    /// already fetched. Rebalance and commit callbacks are served here.
    public func poll(max: Int, timeout: Duration) async -> PollResult {
        let ms = timeout.clampedMilliseconds
        return await worker.run { [self] in pollBlocking(max: max, timeoutMs: ms) }
    }

    private func pollBlocking(max: Int, timeoutMs: Int32) -> PollResult {
        var result = PollResult()
        guard !closed.load(ordering: .relaxed) else { return result }
        result.records.reserveCapacity(Swift.min(max, 1024))
        var wait = timeoutMs
        while result.records.count < max {
            guard let message = rd_kafka_consumer_poll(rk, wait) else { break }
            wait = 0
            defer { rd_kafka_message_destroy(message) }
            let m = message.pointee
            let topic = m.rkt.map(topicName) ?? ""
            switch m.err {
            case RD_KAFKA_RESP_ERR_NO_ERROR:
                let key = m.key.map { Array(UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
                let value = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: m.len)) }
                result.records.append(ConsumedRecord(topic: topic, partition: m.partition, offset: m.offset,
                                                     key: key, value: value,
                                                     generation: callbacks.generation.load(ordering: .relaxed)))
            case RD_KAFKA_RESP_ERR__PARTITION_EOF:
                result.endOfPartition.append((TopicPartition(topic: topic, partition: m.partition), m.offset))
            default:
                var text = KafkaError.text(m.err.rawValue)
                if let p = m.payload, m.len > 0 {
                    text = String(decoding: UnsafeRawBufferPointer(start: p, count: m.len), as: UTF8.self)
                }
                if !topic.isEmpty { text = "\(topic)[\(m.partition)]: \(text)" }
                result.errors.append(KafkaError(m.err, message: text))
            }
        }
        return result
    }

    private func topicName(_ rkt: OpaquePointer) -> String {
        // Records come in runs of one topic: the last handle answers without hashing.
        if rkt == lastTopic?.rkt { return lastTopic!.name }
        let name = topicNames[rkt] ?? String(cString: rd_kafka_topic_name(rkt))
        topicNames[rkt] = name
        lastTopic = (rkt, name)
        return name
    }

    /// Commits `offsets` (the next offset to read, i.e. last processed + 1, per partition).
    /// With `wait`, waits for the broker's answer and returns its error, if any; otherwise the
    /// result arrives through `onEvent` (`.commitFailed`) during a later poll.
    /// - Parameter timeout: with `wait`, the longest wait for the answer; past it the commit is
    ///   reported as `_TIMED_OUT` (it may still complete later).
    @discardableResult
    public func commit(_ offsets: [TopicPartition: Int64], wait: Bool, timeout: Duration = .seconds(60)) async -> KafkaError? {
        guard !offsets.isEmpty else { return nil }
        let answer = await worker.run(timeout: timeout) { [self] () -> KafkaError? in
            guard !closed.load(ordering: .relaxed) else { return KafkaError(code: RD_KAFKA_RESP_ERR__STATE.rawValue, message: "consumer closed") }
            let list = rd_kafka_topic_partition_list_new(Int32(offsets.count))!
            defer { rd_kafka_topic_partition_list_destroy(list) }
            for (tp, offset) in offsets.sorted(by: { $0.key < $1.key }) {
                rd_kafka_topic_partition_list_add(list, tp.topic, tp.partition)!.pointee.offset = offset
            }
            let rc = rd_kafka_commit(rk, list, wait ? 0 : 1)
            if rc != RD_KAFKA_RESP_ERR_NO_ERROR { return KafkaError(rc) }
            if wait {
                for i in 0..<Int(list.pointee.cnt) where list.pointee.elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR {
                    return KafkaError(list.pointee.elems[i].err)
                }
            }
            return nil
        }
        switch answer {
        case .some(let error): return error
        case .none: return KafkaError(code: RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue,
                                      message: "no answer to the offset commit within \(timeout)")
        }
    }

    /// Leaves the group (revoking the assignment) and destroys the consumer, waiting at most
    /// `timeout`: librdkafka's close can wait forever (e.g. once the topic was deleted), and a
    /// shutdown must end. Past it the consumer is abandoned (left to the process's exit; the
    /// broker drops the member after its session timeout) and false is returned.
    @discardableResult
    public func close(timeout: Duration = .seconds(30)) async -> Bool {
        guard !closed.exchange(true, ordering: .relaxed) else { return true }
        let finished = await worker.run(timeout: timeout) { [self] in
            let rc = rd_kafka_consumer_close(rk)
            if rc != RD_KAFKA_RESP_ERR_NO_ERROR {
                logger.warning("kafka consumer close: \(KafkaError(rc))")
            }
            rd_kafka_destroy(rk)
            return true
        }
        guard finished != nil else {
            logger.warning("kafka consumer close did not finish within \(timeout): consumer abandoned (the group drops it after its session timeout)")
            return false
        }
        worker.stop()
        return true
    }

    static func partitions(_ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) -> [TopicPartition] {
        (0..<Int(list.pointee.cnt)).map {
            TopicPartition(topic: String(cString: list.pointee.elems[$0].topic), partition: list.pointee.elems[$0].partition)
        }
    }
}

extension KafkaConsumer {
    /// True when a broker answers a metadata request within `timeout` (a round trip, run on the
    /// consumer's thread between polls). For reporting an outage's end.
    public func brokersReachable(timeout: Duration = .milliseconds(500)) async -> Bool {
        guard !closed.load(ordering: .relaxed) else { return false }
        let ms = timeout.clampedMilliseconds
        return await worker.run { [self] in metadataAnswered(rk, timeoutMs: ms) }
    }
}

/// One metadata round trip (no topic) on `rk`; true when a broker answered.
func metadataAnswered(_ rk: OpaquePointer, timeoutMs: Int32) -> Bool {
    var metadata: UnsafePointer<rd_kafka_metadata>?
    let err = rd_kafka_metadata(rk, 0, nil, &metadata, timeoutMs)
    if let metadata { rd_kafka_metadata_destroy(metadata) }
    return err == RD_KAFKA_RESP_ERR_NO_ERROR
}
