// `kafka_sink`: writes every message of its input streams to one topic, with the course's keys.
import Synchronization
import TweetoscopeCore
import TweetoscopeKafka

/// Produces each message as `WireFormat.encode(m)` keyed by `WireFormat.key(m)` (a tweet's
/// source, a window-keyed message's T_obs, no key otherwise) with an idempotent, acks=all
/// producer. Deliveries are counted (`delivered`); a record librdkafka finally fails (after its
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
        options: CommonOptions.specs,
        acknowledgement: .explicit,
        make: { _, options in try KafkaSink(options) })
        .declaring(metrics: [
            MetricSpec("tweetoscope_kafka_delivery_errors_total",
                       help: "Records a kafka_sink could not deliver (lost after librdkafka's retries)."),
        ])

    let common: CommonOptions.Values

    init(_ options: StageOptions) throws {
        common = try CommonOptions.parse(options)
        try CommonOptions.validate(KafkaConfig.merged(KafkaProducer.defaults, common.baseConfig))
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
            producer = try KafkaProducer(config: common.baseConfig, logger: context.logger,
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
        ])
        let topic = common.topic
        let counters = context.counters
        let deliveryErrors = Counter(label: "tweetoscope_kafka_delivery_errors_total",
                                     dimensions: context.metricDimensions + [("topic", topic)])
        let onDelivery: @Sendable (Result<Delivery, KafkaError>) -> Void = { result in
            switch result {
            case .success:
                counters.add("delivered")
            case .failure(let error):
                counters.reject("delivery_failed")
                deliveryErrors.increment()
                context.warnRateLimited("delivery_failed", "kafka delivery failed, record lost: \(error)", metadata: [
                    "topic": .string(topic), "error": .string(error.name),
                ])
            }
        }
        // Each input batch is acknowledged once all its records have a delivery report, so a
        // replayable source upstream commits only what Kafka has (a lost record is counted, and
        // acknowledged too: nothing would bring it back).
        var acknowledgers: [ObjectIdentifier: BatchAcknowledger] = [:]
        while let tagged = await merged.next(consumer) {
            let began = ContinuousClock.now
            defer { context.recordProcessing(since: began) }
            let key = tagged.input.id
            let acknowledger = acknowledgers[key] ?? BatchAcknowledger(tagged.input)
            acknowledgers[key] = acknowledger
            let batch = PendingBatch(records: tagged.messages.count, ordinal: tagged.ordinal, acknowledger: acknowledger)
            let completion: @Sendable (Result<Delivery, KafkaError>) -> Void = { result in
                onDelivery(result)
                batch.recordDone()
            }
            for message in tagged.messages {
                let record = ProducerRecord(topic: topic, key: WireFormat.key(message).map { Array($0.utf8) },
                                            value: WireFormat.encode(message))
                do {
                    try await producer.enqueue(record, giveUp: { context.stopDeadlinePassed }, completion: completion)
                } catch {
                    batch.recordDone()
                    counters.reject("delivery_failed")
                    deliveryErrors.increment()
                    context.warnRateLimited("delivery_failed", "kafka refused a record, record lost: \(error)", metadata: [
                        "topic": .string(topic), "error": .string(error.name), "bytes": .stringConvertible(record.value.count),
                    ])
                }
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
    private let ordinal: Int
    private let acknowledger: BatchAcknowledger

    init(records: Int, ordinal: Int, acknowledger: BatchAcknowledger) {
        left = Atomic(records)
        self.ordinal = ordinal
        self.acknowledger = acknowledger
    }

    /// One record is delivered (or lost); the last one acknowledges the batch.
    func recordDone() {
        if left.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 { acknowledger.complete(ordinal) }
    }
}
