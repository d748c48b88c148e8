// `kafka_sink`: writes every message of its input streams to one topic, with the course's keys.
import Synchronization
import TweetoscopeCore
import TweetoscopeKafka

/// Produces each message as `WireFormat.encode(m)` keyed by `WireFormat.key(m)` (a tweet's
/// source, a window-keyed message's T_obs) with an idempotent, acks=all producer. Messages of
/// keyless topics (series, alerts, stats, logs) get the key `keyless` says: none (the spec),
/// the empty string or `"None"` (what the course's Python collectors send, and what their
/// estimators' `key.decode()` needs), or the message's `cid` or `T_obs`.
/// Partitions: librdkafka's `partitioner` (option, default `murmur2_random`: murmur2 of the key,
/// what the Java and Python clients use, so a keyed message lands where a course producer would
/// put it; random for keyless records). `consistent_random` is librdkafka's own CRC32 default. Deliveries are counted (`delivered`); a record librdkafka finally fails (after its
/// own retries, within `message.timeout.ms`) is counted (`rejected.delivery_failed`) and logged.
/// At the end of its inputs it waits for every delivery report; a sink given records that
/// delivered none of them then fails (the run exits non-zero).
final class KafkaSink: Stage {
    static let descriptor = StageDescriptor(
        type: "kafka_sink",
        summary: "Writes its input streams to a Kafka topic in the course's wire format (idempotent, acks=all).",
        inputs: [PortSpec("messages", kinds: Set(MessageKind.allCases), multiple: true,
                          doc: "streams to produce, all to the same topic")],
        outputs: [],
        options: CommonOptions.specs + [
            OptionSpec("keyless", .choice(KeylessKey.allCases.map(\.rawValue)), default: .string(KeylessKey.noKey.rawValue),
                       doc: "key of messages the spec sends without one (serie, alert, stat, log): none = no key (spec); "
                           + "empty = \"\"; None = the string \"None\" (course Python collectors); cid or T_obs = that field (none if the message has no such field)"),
            OptionSpec("partitioner", .choice(["murmur2_random", "murmur2", "consistent_random", "consistent", "random", "fnv1a", "fnv1a_random"]),
                       default: .string("murmur2_random"),
                       doc: "librdkafka partitioner: murmur2_random = the Java/Python clients' murmur2 key hash (keyless records at random); "
                           + "consistent_random = librdkafka's CRC32 default (tweetoscoped <= 0.1); a librdkafka.partitioner property wins"),
        ],
        acknowledgement: .explicit,
        make: { _, options in try KafkaSink(options) })
        .declaring(metrics: [
            MetricSpec("tweetoscope_kafka_delivery_errors_total",
                       help: "Records a kafka_sink could not deliver (lost after librdkafka's retries)."),
        ])

    let common: CommonOptions.Values
    let keyless: KeylessKey
    let partitioner: String

    init(_ options: StageOptions) throws {
        common = try CommonOptions.parse(options)
        keyless = KeylessKey(rawValue: try options.string("keyless")) ?? .noKey
        partitioner = try options.string("partitioner")
        try CommonOptions.validate(KafkaConfig.merged(KafkaProducer.defaults, producerConfig))
    }

    /// The producer's settings: the partitioner under the passthrough properties.
    var producerConfig: [String: String] {
        KafkaConfig.merged(["partitioner": partitioner], common.baseConfig)
    }

    func run(_ context: StageContext) async throws {
        let (merged, consumer) = context.mergedInputs()
        if common.createTopic, !(try await ensureTopic(context, common)) {
            // Asked to stop before the topic could be created: nothing can be written.
            merged.detach(consumer)
            return
        }
        let producer: KafkaProducer
        do {
            producer = try KafkaProducer(config: producerConfig, logger: context.logger,
                                         onEvent: eventHandler(context, common))
        } catch {
            merged.detach(consumer)
            throw error
        }
        let watch = BrokerWatch.run(context, brokers: common.brokers) { await producer.brokersReachable() }
        defer { watch.cancel() }
        context.logger.info("kafka sink writing", metadata: [
            "topic": .string(common.topic), "brokers": .string(common.brokers),
            "librdkafka": .string(KafkaConfig.describe(common.librdkafka)),
            "keyless": .string(keyless.rawValue), "partitioner": .string(producerConfig["partitioner"] ?? partitioner),
        ])
        let topic = common.topic
        let keyless = self.keyless
        let counters = context.counters
        let deliveryErrors = Counter(label: "tweetoscope_kafka_delivery_errors_total",
                                     dimensions: context.metricDimensions + [("topic", topic)])
        // Failures are reported per record; deliveries are counted per input batch (one counter
        // update when its last record has its report, not one locked update per record).
        let onFailure: @Sendable (KafkaError) -> Void = { error in
            counters.reject("delivery_failed")
            deliveryErrors.increment()
            context.warnRateLimited("delivery_failed", "kafka delivery failed, record lost: \(error)", metadata: [
                "topic": .string(topic), "error": .string(error.name),
            ])
        }
        // Each input batch is acknowledged once all its records have a delivery report, so a
        // replayable source upstream commits only what Kafka has (a lost record is counted, and
        // acknowledged too: nothing would bring it back). The batch is queued in librdkafka in
        // one call (one lock per run of accepted records, no task or allocation per record).
        var acknowledgers: [ObjectIdentifier: BatchAcknowledger] = [:]
        while let tagged = await merged.next(consumer) {
            let began = ContinuousClock.now
            defer { context.recordProcessing(since: began) }
            let key = tagged.input.id
            let acknowledger = acknowledgers[key] ?? BatchAcknowledger(tagged.input)
            acknowledgers[key] = acknowledger
            let batch = PendingBatch(records: tagged.messages.count, ordinal: tagged.ordinal, acknowledger: acknowledger,
                                     counters: counters)
            let completion: @Sendable (Result<Delivery, KafkaError>) -> Void = { result in
                switch result {
                case .success: batch.recordDone(delivered: true)
                case .failure(let error):
                    onFailure(error)
                    batch.recordDone(delivered: false)
                }
            }
            var records: [ProducerRecord] = []
            records.reserveCapacity(tagged.messages.count)
            for message in tagged.messages {
                records.append(ProducerRecord(topic: topic, key: keyless.key(message).map { Array($0.utf8) },
                                              value: WireFormat.encode(message)))
            }
            let refused = await producer.enqueue(records, giveUp: { context.stopDeadlinePassed }, completion: completion)
            for (index, error) in refused {
                batch.recordDone(delivered: false)
                counters.reject("delivery_failed")
                deliveryErrors.increment()
                context.warnRateLimited("delivery_failed", "kafka refused a record, record lost: \(error)", metadata: [
                    "topic": .string(topic), "error": .string(error.name), "bytes": .stringConvertible(records[index].value.count),
                ])
            }
            counters.add("produced", tagged.messages.count)
        }
        // End of input: wait for every delivery report (librdkafka retries within
        // message.timeout.ms), but never past the stop deadline: what is still undelivered then
        // is purged, counted lost, and the stage fails so that the run exits non-zero.
        var lastLog = ContinuousClock.now
        var atDeadline = 0
        while !(await producer.flush(timeout: shutdownBudget(context, at: .seconds(1)))) {
            if context.stopDeadlinePassed {
                atDeadline = producer.pending
                context.logger.error("kafka sink: stop deadline passed with \(atDeadline) records undelivered (broker unreachable?): purging them", metadata: [
                    "topic": .string(topic), "pending": .stringConvertible(atDeadline),
                ])
                break
            }
            if ContinuousClock.now - lastLog >= .seconds(10) {
                lastLog = ContinuousClock.now
                context.logger.info("kafka sink waiting for deliveries", metadata: ["pending": .stringConvertible(producer.pending)])
            }
        }
        await producer.close(timeout: atDeadline > 0 ? .zero : .seconds(1))
        if producer.recoveries > 0 { counters.add("producer_recreated", producer.recoveries) }
        let lost = counters["rejected.delivery_failed"]
        context.logger.info("kafka sink flushed", metadata: [
            "delivered": .stringConvertible(counters["delivered"]),
            "failed": .stringConvertible(lost),
        ])
        if lost > 0 { throw LostRecords(count: lost, topic: topic, atDeadline: atDeadline) }
        // A sink that was given records and delivered none of them did nothing useful: the run
        // must not end with exit status 0.
        let produced = counters["produced"]
        if produced > 0 && counters["delivered"] == 0 {
            throw KafkaSinkError("delivered none of the \(produced) records given to topic \(topic) (brokers \(common.brokers)); \(counters["rejected.delivery_failed"]) failed")
        }
    }
}

/// The failure of a sink that delivered nothing.
struct KafkaSinkError: Error, CustomStringConvertible, Sendable {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The records of one input batch still waiting for their delivery report.
final class PendingBatch: Sendable {
    private let left: Atomic<Int>
    private let delivered = Atomic<Int>(0)
    private let ordinal: Int
    private let acknowledger: BatchAcknowledger
    private let counters: StageCounters

    init(records: Int, ordinal: Int, acknowledger: BatchAcknowledger, counters: StageCounters) {
        left = Atomic(records)
        self.ordinal = ordinal
        self.acknowledger = acknowledger
        self.counters = counters
    }

    /// One record is delivered (or lost); the last one counts the batch's deliveries
    /// (`delivered`) and acknowledges the batch.
    func recordDone(delivered ok: Bool) {
        if ok { delivered.add(1, ordering: .relaxed) }
        if left.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            let n = delivered.load(ordering: .relaxed)
            if n > 0 { counters.add("delivered", n) }
            acknowledger.complete(ordinal)
        }
    }
}

/// The key `kafka_sink` gives messages that the spec sends without one (option `keyless`).
enum KeylessKey: String, CaseIterable, Sendable {
    /// No key (spec §1.2, §1.6-1.8).
    case noKey = "none"
    /// The empty string (GAS's collector).
    case empty
    /// The string "None" (RUD's collector: Python's str(None)).
    case pythonNone = "None"
    /// The message's cascade id (NAS keys its series by cid).
    case cid
    /// The message's observation window (MBG and MEC key their alerts by T_obs).
    case tObs = "T_obs"

    /// The key of `message`: ``WireFormat/key(_:)`` when the spec gives one, else this choice.
    func key(_ message: Message) -> String? {
        if let key = WireFormat.key(message) { return key }
        switch self {
        case .noKey: return nil
        case .empty: return ""
        case .pythonNone: return "None"
        case .cid: return message.cascade.map { $0.description }
        case .tObs: return message.tObs.map { String($0) }
        }
    }
}
