// `kafka_source`: a consumer-group member reading one topic into a stream, at least once.
import Glibc
import TweetoscopeCore
import TweetoscopeKafka

/// What decoding one record gave.
enum DecodeOutcome: Sendable {
    /// A decoded message; `coercedMsg` when its `msg` was not a JSON string (counted `coerced_msg`).
    case message(Message, coercedMsg: Bool = false)
    case failure(reason: String, text: String)
}

/// Reads the records of `topic` as a member of consumer group `group`, decodes each value with
/// the wire format (the key gives a tweet's source and a window-keyed value's T_obs) and sends
/// them downstream in batches.
///
/// - At least once: a batch's offsets are committed only after the batch was handed to the
///   output stream, and, when a stage downstream keeps records beyond their batch (the collector
///   keeps the events of open cascades), only up to the first record it still needs, once what it
///   produced from the records before is durable (``OffsetLedger``). After a crash or a kill, the
///   uncommitted tail is read again: duplicates, never gaps.
/// - Duplicates: series, size and parameters records already seen among the last `deduplicate`
///   (type, cid, T_obs) keys are dropped and counted (`duplicates`), so a daemon reading what a
///   restarted collector or estimator produced again passes each result once. (Alerts, stats and
///   samples are kept: a repeated key may carry a newer forecast.)
/// - Course variants are accepted (``WireFormat``): a `msg` that is not a JSON string is
///   converted to text and counted (`coerced_msg`); cids may be integers or strings.
/// - A record that does not decode (or whose value is larger than `max_record_bytes`) is
///   counted (`rejected.<reason>`: `empty_value`, `oversized` or a ``WireFormatError/reason``),
///   logged (rate-limited) with its topic, partition and offset, sent as a dead letter to the
///   optional `rejected` port (`<reason>: <topic>[<partition>]@<offset>: <value>`), and skipped
///   (its offset is committed).
/// - A broker that is down is reported (warnings, `kafka_error.*` counters); librdkafka
///   reconnects and the stage resumes.
/// - It ends when the daemon is asked to stop (the last batch is handed over and committed, the
///   consumer leaves the group), or with `stop_at_end` once every assigned partition reached its
///   end and nothing came for a second.
final class KafkaSource: Stage {
    static let batchSize = 4096
    static let idleToEnd: Duration = .seconds(1)
    static let defaultDeduplicate = 200_000
    /// Kinds whose repeats are re-deliveries: the collector's and the estimator's outputs are
    /// functions of their input, so a second (type, cid, T_obs) is the same message again. An
    /// alert, stat or sample repeated may carry a newer forecast, and is kept.
    static let deduplicatedKinds: Set<MessageKind> = [.series, .size, .parameters]
    /// Longest wait, when stopping, for the stages holding positions to catch up before the final commit.
    static let finalCommitWait: Duration = .seconds(10)

    static let descriptor = StageDescriptor(
        type: "kafka_source",
        summary: "Reads a Kafka topic in the course's wire format, as a consumer-group member, at least once.",
        inputs: [],
        outputs: [
            PortSpec("messages", kinds: Set(MessageKind.allCases), doc: "the decoded records, in batches"),
            PortSpec("rejected", kinds: [.log], required: false,
                     doc: "dead letters: one WARNING log message per rejected record, \"<reason>: <topic>[<partition>]@<offset>: <value, at most 1 KiB>\""),
        ],
        options: CommonOptions.specs + [
            OptionSpec("group", .string, default: .string("tweetoscoped"),
                       doc: "consumer group: daemons of one group share the topic's partitions"),
            OptionSpec("instance_id", .string, default: .string(""),
                       doc: "static group membership (group.instance.id, KIP-345): a daemon restarted with the same id takes its partitions back at once instead of after the session timeout; unique per daemon of the group; empty = dynamic membership"),
            OptionSpec("start", .choice(["earliest", "latest"]), default: .string("earliest"),
                       doc: "where a group without committed offsets starts (auto.offset.reset)"),
            OptionSpec("stop_at_end", .bool, default: .bool(false),
                       doc: "end once every assigned partition is at its end and idle for 1 s (finite runs: tests, benchmarks)"),
            OptionSpec("max_record_bytes", .int, default: .int(InputLimits.defaultMaxRecordBytes),
                       range: 64...1_073_741_824, doc: "largest record value in bytes; larger ones are rejected as `oversized`; 64 to 1073741824"),
            OptionSpec("deduplicate", .int, default: .int(KafkaSource.defaultDeduplicate),
                       range: 0...1e9, doc: "series, size and parameters records remembered by (type, cid, T_obs) to drop ones delivered again after a crash upstream (count; 0 = keep every record)"),
        ],
        make: { _, options in try KafkaSource(options) })
        .declaring(metrics: [
            MetricSpec("tweetoscope_kafka_consumer_lag_records",
                       help: "Records between a kafka_source's position and the partition's high watermark."),
        ])

    let common: CommonOptions.Values
    let group: String
    let start: String
    let instanceID: String
    let stopAtEnd: Bool
    /// Largest record value in bytes.
    let maxRecordBytes: Int
    /// Keys remembered for duplicate detection (0: off).
    let deduplicate: Int
    let parallelism = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))

    init(_ options: StageOptions) throws {
        common = try CommonOptions.parse(options)
        group = try options.string("group")
        guard !group.isEmpty else { throw StageConfigError(option: "group", "must not be empty") }
        start = try options.string("start")
        instanceID = try options.string("instance_id")
        stopAtEnd = try options.bool("stop_at_end")
        maxRecordBytes = try options.int("max_record_bytes")
        guard InputLimits.maxRecordBytesRange.contains(maxRecordBytes) else {
            throw StageConfigError(option: "max_record_bytes",
                                   "must be within \(InputLimits.maxRecordBytesRange.lowerBound)...\(InputLimits.maxRecordBytesRange.upperBound) bytes, got \(maxRecordBytes)")
        }
        deduplicate = try options.int("deduplicate")
        guard deduplicate >= 0 else { throw StageConfigError(option: "deduplicate", "must be >= 0, got \(deduplicate)") }
        try CommonOptions.validate(consumerConfig)
    }

    var consumerConfig: [String: String] {
        var c = KafkaConfig.merged(["group.id": group, "auto.offset.reset": start], common.baseConfig)
        if stopAtEnd { c["enable.partition.eof"] = "true" }
        if !instanceID.isEmpty && c["group.instance.id"] == nil { c["group.instance.id"] = instanceID }
        return c
    }

    /// What decoding a run of consecutive records gave: the messages in record order (records
    /// that did not decode left out), each tweet, size and parameters carrying its
    /// ``RecordOrigin`` when a ledger is given.
    struct DecodedChunk: Sendable {
        var messages: [Message] = []
        /// Records that did not decode: index in the polled batch, reason, detail.
        var failures: [(index: Int, reason: String, text: String)] = []
        /// Messages whose `msg` was not a JSON string (counted `coerced_msg`).
        var coerced = 0
        /// Per partition from which tweets carrying an origin were decoded, the offset after the
        /// last of them (they are handed to the holders).
        var tweetNext: [Int32: Int64] = [:]
        /// Whether some message is not a tweet (deduplication and the holders' bookkeeping of
        /// sizes and parameters then need a pass over the messages).
        var hasOtherKinds = false
    }

    /// Decodes every record (the key gives a tweet's source and a window-keyed value's T_obs),
    /// in parallel chunks of consecutive records for large batches (JSON decoding is the
    /// source's main cost), and attaches each tweet's origin in the same pass. The chunks come
    /// back in record order; each is sent downstream as its own batch (no concatenation copy).
    static func decodeAll(_ records: [ConsumedRecord], ledger: OffsetLedger?, parallelism: Int,
                          maxRecordBytes: Int) async -> [DecodedChunk] {
        let chunks = records.count >= 1024 ? min(parallelism, records.count / 512) : 1
        if chunks <= 1 { return [decodeChunk(records[...], ledger: ledger, maxRecordBytes: maxRecordBytes)] }
        let size = (records.count + chunks - 1) / chunks
        return await withTaskGroup(of: (Int, DecodedChunk).self) { group in
            for start in stride(from: 0, to: records.count, by: size) {
                let slice = records[start..<min(start + size, records.count)]
                group.addTask { (start, decodeChunk(slice, ledger: ledger, maxRecordBytes: maxRecordBytes)) }
            }
            var parts: [(Int, DecodedChunk)] = []
            parts.reserveCapacity(chunks)
            for await part in group { parts.append(part) }
            return parts.sorted { $0.0 < $1.0 }.map(\.1)
        }
    }

    /// Decodes a run of records, attaching origins (one pass, no intermediate outcome per record).
    static func decodeChunk(_ records: ArraySlice<ConsumedRecord>, ledger: OffsetLedger?, maxRecordBytes: Int) -> DecodedChunk {
        var chunk = DecodedChunk()
        chunk.messages.reserveCapacity(records.count)
        // The current run of tweets of one partition (records come in runs per partition),
        // noted in `tweetNext` when it ends: no dictionary access per tweet.
        var run: (partition: Int32, next: Int64)?
        func endRun() {
            if let run { chunk.tweetNext[run.partition] = max(chunk.tweetNext[run.partition] ?? 0, run.next) }
        }
        for i in records.indices {
            let record = records[i]
            switch decode(record, maxRecordBytes: maxRecordBytes) {
            case .failure(let reason, let text):
                chunk.failures.append((i, reason, text))
            case .message(var m, let coerced):
                if coerced { chunk.coerced += 1 }
                if let ledger {
                    // Records a holder keeps beyond their batch (the collector's tweets, the
                    // predictor's waiting sizes and parameters) carry where they were read.
                    let origin = RecordOrigin(ledger: ledger, partition: record.partition, offset: record.offset,
                                              generation: record.generation)
                    switch m {
                    case .tweet(var tweet):
                        tweet.origin = origin
                        m = .tweet(tweet)
                        if record.partition != run?.partition {
                            endRun()
                            run = (record.partition, 0)
                        }
                        run!.next = max(run!.next, record.offset + 1)
                    case .size(var size):
                        size.origin = origin
                        m = .size(size)
                    case .parameters(var parameters):
                        parameters.origin = origin
                        m = .parameters(parameters)
                    default: break
                    }
                }
                if case .tweet = m {} else { chunk.hasOtherKinds = true }
                chunk.messages.append(m)
            }
        }
        endRun()
        return chunk
    }

    /// Drops the series, size and parameters messages already seen among the last
    /// `deduplicate` keys (in record order) and notes the partitions of the sizes and
    /// parameters that carry an origin. Returns the number dropped.
    func deduplicateAndNote(_ messages: inout [Message], recent: inout RecentKeys<WindowKey>, commits: CommitPolicy) -> Int {
        var duplicates = 0
        var kept = 0
        for i in messages.indices {
            let m = messages[i]
            var origin: RecordOrigin?
            switch m {
            case .tweet:
                messages.swapAt(kept, i)
                kept += 1
                continue
            case .size(let s): origin = s.origin
            case .parameters(let p): origin = p.origin
            default: break
            }
            if deduplicate > 0, Self.deduplicatedKinds.contains(m.kind), let key = WindowKey(m), !recent.insert(key) {
                duplicates += 1
                continue
            }
            if let origin { commits.tweetHanded(origin.partition, next: origin.offset + 1) }
            messages.swapAt(kept, i)
            kept += 1
        }
        if kept < messages.count { messages.removeLast(messages.count - kept) }
        return duplicates
    }

    /// Decodes one record: `empty_value` without a value, `oversized` above `maxRecordBytes`,
    /// else the wire format's reasons (``WireFormat/decode(_:key:)``).
    @Sendable static func decode(_ record: ConsumedRecord, maxRecordBytes: Int) -> DecodeOutcome {
        guard let value = record.value else { return .failure(reason: "empty_value", text: "record without a value") }
        guard value.count <= maxRecordBytes else {
            return .failure(reason: RejectReason.oversized,
                            text: "value of \(value.count) bytes is larger than max_record_bytes (\(maxRecordBytes))")
        }
        do {
            var coerced = false
            let m = try WireFormat.decode(value, key: record.key.map { String(decoding: $0, as: UTF8.self) }, coercedMsg: &coerced)
            return .message(m, coercedMsg: coerced)
        } catch let error as WireFormatError {
            return .failure(reason: error.reason, text: "\(error)")
        } catch {
            return .failure(reason: RejectReason.invalidField, text: "\(error)")
        }
    }

    func run(_ context: StageContext) async throws {
        guard let output = context.output("messages") else { return }
        if common.createTopic, !(try await ensureTopic(context, common)) { return }
        let consumer = try KafkaConsumer(config: consumerConfig, logger: context.logger,
                                         onEvent: eventHandler(context, common))
        try consumer.subscribe([common.topic])
        let watch = BrokerWatch.run(context, brokers: common.brokers) { await consumer.brokersReachable() }
        defer { watch.cancel() }
        context.logger.info("kafka source reading", metadata: [
            "topic": .string(common.topic), "group": .string(group), "brokers": .string(common.brokers),
            "start": .string(start), "librdkafka": .string(KafkaConfig.describe(common.librdkafka)),
        ])

        let lag = LagGauges(context)
        let rejected = RejectedRecords(context)
        var handed: [TopicPartition: Int64] = [:]  // next offset to read, per partition handed over
        var ends: [TopicPartition: Int64] = [:]    // partitions at their end, with the end offset
        var idleSince: ContinuousClock.Instant?
        var generation = 0
        // Commit positions: with stages downstream holding records (the collector), only what
        // they release; otherwise what was handed over.
        let commits = CommitPolicy(ledger: context.positionHolders > 0 ? OffsetLedger(holders: context.positionHolders) : nil,
                                   topic: common.topic)
        var recent = RecentKeys<WindowKey>(capacity: deduplicate)
        var unassignedSince: ContinuousClock.Instant? = ContinuousClock.now
        while !context.stopRequested {
            let polled = await consumer.poll(max: Self.batchSize, timeout: .milliseconds(100))
            unassignedSince = reportUnassigned(consumer.assignment.isEmpty, since: unassignedSince, context)
            commits.follow(consumer.assignedAt, generation: consumer.assignmentGeneration, handed: &handed)
            for error in polled.errors {
                context.counters.add("kafka_error.\(error.reason)")
                context.warnRateLimited("kafka_\(error.reason)", "kafka consumer: \(error.message)",
                                        metadata: ["error": .string(error.name), "topic": .string(common.topic)])
            }
            // Next offset per partition handed over (records come in runs per partition).
            var offsets: [TopicPartition: Int64] = [:]
            var run: (tp: TopicPartition, next: Int64)?
            for record in polled.records {
                if record.partition != run?.tp.partition || record.topic != run?.tp.topic {
                    if let run { offsets[run.tp] = max(offsets[run.tp] ?? 0, run.next) }
                    run = (record.topicPartition, 0)
                }
                run!.next = max(run!.next, record.offset + 1)
            }
            if let run { offsets[run.tp] = max(offsets[run.tp] ?? 0, run.next) }
            let began = ContinuousClock.now
            var chunks = await Self.decodeAll(polled.records, ledger: commits.ledger, parallelism: parallelism,
                                              maxRecordBytes: maxRecordBytes)
            var duplicates = 0, coercedMsgs = 0
            for c in chunks.indices {
                coercedMsgs += chunks[c].coerced
                for (p, next) in chunks[c].tweetNext { commits.tweetHanded(p, next: next) }
                for f in chunks[c].failures { skip(rejected, polled.records[f.index], f.reason, f.text) }
                if chunks[c].hasOtherKinds {
                    duplicates += deduplicateAndNote(&chunks[c].messages, recent: &recent, commits: commits)
                }
            }
            if duplicates > 0 { context.counters.add("duplicates", duplicates) }
            if coercedMsgs > 0 { context.counters.add("coerced_msg", coercedMsgs) }
            if !polled.records.isEmpty { context.recordProcessing(since: began) }
            lag.update(assigned: consumer.assignment) { consumer.lag() }
            context.counters.add("records", polled.records.count)
            for c in chunks.indices where !chunks[c].messages.isEmpty {
                let batch = chunks[c].messages
                chunks[c].messages = []
                await output.send(batch)
            }
            await rejected.flush()
            handed.merge(offsets) { max($0, $1) }
            // Asynchronously; a failure is reported and the next commit covers it.
            let due = commits.due(handed: handed)
            if !due.isEmpty { await consumer.commit(due, wait: false) }

            guard stopAtEnd else { continue }
            if consumer.assignmentGeneration != generation {
                // A rebalance: ends seen before this poll may be stale; librdkafka reports the
                // end of every newly assigned partition again once its fetcher gets there
                // (possibly already in this poll, after the assignment).
                generation = consumer.assignmentGeneration
                ends = [:]
                idleSince = nil
            }
            for (tp, next) in offsets where (ends[tp] ?? .max) <= next - 1 { ends[tp] = nil }
            for end in polled.endOfPartition where (offsets[end.partition] ?? 0) <= end.offset {
                ends[end.partition] = end.offset
            }
            let assigned = consumer.assignment
            if !assigned.isEmpty, polled.records.isEmpty, assigned.allSatisfy({ ends[$0] != nil }) {
                let now = ContinuousClock.now
                if idleSince == nil { idleSince = now }
                if now - idleSince! >= Self.idleToEnd {
                    context.logger.info("kafka source at the end of every assigned partition",
                                        metadata: ["partitions": .string(TopicPartition.describe(assigned))])
                    break
                }
            } else {
                idleSince = nil
            }
        }

        // Everything read was handed over; with stages holding positions, give them a moment to
        // process it and release what they can. Then make the commits durable and leave the group.
        let assigned = consumer.assignment
        lag.update(assigned: assigned, force: true) { consumer.lag() }
        if commits.ledger != nil {
            // End the stream now, so the collector processes its last batches, flushes at the
            // end of a finite run, and releases its final positions before the final commit.
            output.finish()
            let finite = !context.stopRequested
            let deadline = ContinuousClock.now + shutdownBudget(context, at: Self.finalCommitWait)
            while !commits.caughtUp(handed: handed, released: finite), ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(20))
            }
            if !commits.caughtUp(handed: handed, released: finite) {
                context.logger.warning("stopping before the stages downstream were done with every record read; the rest is read again by the next run")
            }
        }
        let final = commits.targets(handed: handed).filter { assigned.contains($0.key) }
        if let error = await consumer.commit(final, wait: true, timeout: shutdownBudget(context, at: .seconds(30))) {
            context.counters.add("commit_failed")
            context.logger.warning("kafka final offset commit failed (the tail may be redelivered): \(error)")
        }
        let closeBudget = shutdownBudget(context, at: .seconds(30))
        if !(await consumer.close(timeout: closeBudget)) {
            context.counters.add("close_abandoned")
            context.logger.warning("kafka consumer did not leave the group within \(closeBudget) (was the topic deleted?): abandoned so that the daemon can stop")
        }
        context.logger.info("kafka source stopped", metadata: [
            "records": .stringConvertible(context.counters["records"]),
            "committed": .string(final.keys.sorted().map { "\($0)@\(final[$0]!)" }.joined(separator: " ")),
        ])
    }

    /// How long a member may go without partitions before it says so.
    static let unassignedWarning: Duration = .seconds(30)
    static let unassignedTrouble = "no kafka partition assigned"

    /// Warns (and shows in the status line) when this member has had no partition for
    /// ``unassignedWarning``; clears it once it has some. Returns when the member became unassigned.
    private func reportUnassigned(_ unassigned: Bool, since: ContinuousClock.Instant?, _ context: StageContext) -> ContinuousClock.Instant? {
        guard unassigned else {
            if context.currentTrouble?.text == Self.unassignedTrouble { context.setTrouble(nil) }
            return nil
        }
        let since = since ?? ContinuousClock.now
        if ContinuousClock.now - since >= Self.unassignedWarning, context.currentTrouble == nil {
            context.setTrouble(Self.unassignedTrouble)
            context.logger.warning("no partition of the topic assigned for \(Self.unassignedWarning): the group's other members may hold them all (more members than partitions), or the broker still counts a crashed predecessor of this daemon as a member until its session times out (set instance_id for static membership)", metadata: [
                "topic": .string(common.topic), "group": .string(group),
            ])
        }
        return since
    }

    /// Reports a record that does not decode (location `topic[partition]@offset`).
    private func skip(_ rejected: RejectedRecords, _ record: ConsumedRecord, _ reason: String, _ message: String) {
        let location = "\(record.topic)[\(record.partition)]@\(record.offset)"
        let metadata: Logger.Metadata = [
            "topic": .string(record.topic), "partition": .stringConvertible(record.partition),
            "offset": .stringConvertible(record.offset),
        ]
        let raw = record.value ?? []
        raw.withUnsafeBufferPointer {
            rejected.reject(reason, location: location, detail: "skipping a kafka record: \(message)", raw: $0, metadata: metadata)
        }
    }
}

/// `tweetoscope_kafka_consumer_lag_records{stage,topic,partition}`: one gauge per assigned
/// partition (a revoked partition's gauge is removed; the last values stay once the stage ends).
final class LagGauges {
    private let stage: String
    private var gauges: [TopicPartition: Gauge] = [:]
    private var last = ContinuousClock.now - .seconds(1)

    init(_ context: StageContext) { stage = context.name }

    /// Sets the gauges (at most every 500 ms: `lag` is asked for only then); the gauges of
    /// partitions no longer assigned go.
    func update(assigned: Set<TopicPartition>, force: Bool = false, _ measure: () -> [TopicPartition: Int64]) {
        let now = ContinuousClock.now
        guard force || now - last >= .milliseconds(500) else { return }
        last = now
        let lag = measure()
        for (tp, gauge) in gauges where !assigned.contains(tp) {
            gauge.destroy()
            gauges[tp] = nil
        }
        for (tp, records) in lag where assigned.contains(tp) {
            let gauge = gauges[tp] ?? Gauge(label: "tweetoscope_kafka_consumer_lag_records",
                                            dimensions: [("stage", stage), ("topic", tp.topic), ("partition", "\(tp.partition)")])
            gauges[tp] = gauge
            gauge.record(records)
        }
    }
}

/// Which offsets the source commits. Without a position-holding stage downstream: everything
/// handed over. With one (the collector): per partition where tweets were handed over, the
/// position every holder has released (``OffsetLedger/committable()``); partitions whose records
/// were all skipped (not decodable) commit what was handed over.
final class CommitPolicy {
    let ledger: OffsetLedger?
    let topic: String
    private var generation = -1
    private var assignedAt: [TopicPartition: Int] = [:]
    /// Per partition (of the current assignment) from which records were handed to the holders,
    /// the offset after the last of them: records after it were dropped by the source
    /// (duplicates delivered again), never seen by a holder.
    private var handedToHolders: [Int32: Int64] = [:]
    /// The offsets last committed, to commit only changes.
    private var committed: [TopicPartition: Int64] = [:]
    /// When every target was last committed again, changed or not (see ``due(handed:)``).
    private var lastFullCommit = ContinuousClock.now
    /// How often every target is committed again: an asynchronous commit that failed (a broker
    /// outage, a coordinator change) is retried even when nothing new is read afterwards.
    static let recommitInterval: Duration = .seconds(5)

    init(ledger: OffsetLedger?, topic: String) {
        self.ledger = ledger
        self.topic = topic
    }

    /// Follows a rebalance: the ledger learns the new assignment; partitions revoked or
    /// (re)assigned (reading restarts at their committed offset) start afresh.
    func follow(_ assignedAt: [TopicPartition: Int], generation: Int, handed: inout [TopicPartition: Int64]) {
        guard generation != self.generation else { return }
        self.generation = generation
        let mine = assignedAt.filter { $0.key.topic == topic }
        let restarted = Set(mine.filter { $0.value != self.assignedAt[$0.key] }.keys)
        ledger?.assign(Dictionary(uniqueKeysWithValues: mine.map { ($0.key.partition, $0.value) }))
        let keep: (TopicPartition) -> Bool = { mine[$0] != nil && !restarted.contains($0) }
        handedToHolders = handedToHolders.filter { keep(TopicPartition(topic: self.topic, partition: $0.key)) }
        handed = handed.filter { keep($0.key) }
        committed = committed.filter { keep($0.key) }
        self.assignedAt = mine
    }

    /// Notes a record handed to the holders (`next`: the offset after it).
    func tweetHanded(_ partition: Int32, next: Int64) {
        handedToHolders[partition] = max(handedToHolders[partition] ?? 0, next)
    }

    /// A holder's release as far as this source is concerned: when the holders need nothing
    /// (keepFrom = processed) and have processed every record handed to them, the records read
    /// after those (`next`: dropped by the source as duplicates) are released too. Without it a
    /// tail of re-delivered duplicates was never committed (the predict daemon's properties
    /// group kept a lag equal to the duplicates after a broker restart: issue 17, test_crash).
    private func releasedUpTo(_ held: OffsetLedger.HeldPosition, partition: Int32, next: Int64) -> OffsetLedger.HeldPosition {
        guard held.keepFrom >= held.processed, held.processed >= (handedToHolders[partition] ?? .max) else { return held }
        return OffsetLedger.HeldPosition(keepFrom: max(held.keepFrom, next), processed: max(held.processed, next),
                                         assignedAt: held.assignedAt)
    }

    /// The offset to commit per partition now.
    func targets(handed: [TopicPartition: Int64]) -> [TopicPartition: Int64] {
        guard let ledger else { return handed }
        let released = ledger.committable()
        var result: [TopicPartition: Int64] = [:]
        for (tp, next) in handed {
            if handedToHolders[tp.partition] == nil {
                result[tp] = next
            } else if let held = released[tp.partition] {
                result[tp] = min(releasedUpTo(held, partition: tp.partition, next: next).keepFrom, next)
            }
        }
        return result
    }

    /// The targets that changed since the last call; every target once per ``recommitInterval``,
    /// so that a failed asynchronous commit is made again (committing the same offset is harmless).
    func due(handed: [TopicPartition: Int64]) -> [TopicPartition: Int64] {
        let all = targets(handed: handed)
        let now = ContinuousClock.now
        if now - lastFullCommit >= Self.recommitInterval {
            lastFullCommit = now
            committed.merge(all) { $1 }
            return all
        }
        let changed = all.filter { committed[$0.key] != $0.value }
        committed.merge(changed) { $1 }
        return changed
    }

    /// True once the holders have processed every tweet handed over and their output is
    /// durable; with `released`, once they also need none of them any more (every cascade ended).
    func caughtUp(handed: [TopicPartition: Int64], released: Bool) -> Bool {
        guard let ledger else { return true }
        let positions = ledger.committable()
        return handed.allSatisfy { tp, next in
            guard handedToHolders[tp.partition] != nil else { return true }
            guard let raw = positions[tp.partition] else { return false }
            let held = releasedUpTo(raw, partition: tp.partition, next: next)
            return (released ? held.keepFrom : held.processed) >= next
        }
    }
}
