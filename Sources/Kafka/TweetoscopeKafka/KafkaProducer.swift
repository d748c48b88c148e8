// The producer: acks=all, idempotent, delivery reports routed to Swift. A producer that
// librdkafka declares fatal (an idempotent producer whose broker lost its state, e.g. after a
// restart) is recreated and the messages it failed are produced again on the new instance.
import CRdKafka
import Glibc
import Synchronization
import TweetoscopeCore

/// One record to produce.
public struct ProducerRecord: Sendable {
    public var topic: String
    /// Nil: no key (the partitioner spreads such records).
    public var key: [UInt8]?
    public var value: [UInt8]

    public init(topic: String, key: [UInt8]?, value: [UInt8]) {
        self.topic = topic
        self.key = key
        self.value = value
    }
}

/// Where the broker stored a record.
public struct Delivery: Sendable, Hashable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
}

/// The opaque of records waiting for their delivery report. Records queued together by
/// ``KafkaProducer/enqueue(_:giveUp:completion:)-batch`` share one (retained once per record, no
/// allocation per record) and carry no copy of their bytes (librdkafka copies them); a record
/// handed back by a failed instance gets one of its own, with its bytes copied from the
/// delivery report, to be produced again on the next instance.
final class PendingMessage: @unchecked Sendable {
    /// The record's bytes, kept only for a record produced again after a recovery.
    let record: ProducerRecord?
    let topic: String
    let completion: @Sendable (Result<Delivery, KafkaError>) -> Void
    /// Producer instances recreated under this message so far.
    var recoveries = 0

    init(topic: String, record: ProducerRecord? = nil, recoveries: Int = 0,
         completion: @escaping @Sendable (Result<Delivery, KafkaError>) -> Void) {
        self.topic = topic
        self.record = record
        self.recoveries = recoveries
        self.completion = completion
    }
}

final class ProducerCallbacks: KafkaCallbacks, @unchecked Sendable {
    unowned(unsafe) var producer: KafkaProducer?

    override func fatal(_ error: KafkaError) { producer?.fatalRaised(error) }

    override func install(on conf: OpaquePointer) {
        super.install(on: conf)
        rd_kafka_conf_set_dr_msg_cb(conf, kafkaDeliveryCallback)
    }
}

private let kafkaDeliveryCallback: @convention(c) (OpaquePointer?, UnsafePointer<rd_kafka_message_t>?, UnsafeMutableRawPointer?) -> Void = {
    rk, message, opaque in
    guard let message, let callbacks = KafkaCallbacks.from(opaque) as? ProducerCallbacks,
          let producer = callbacks.producer, let raw = message.pointee._private else { return }
    let pending = Unmanaged<PendingMessage>.fromOpaque(raw).takeRetainedValue()
    producer.delivered(rk, message.pointee, pending)
}

/// An asynchronous, idempotent Kafka producer (acks=all).
///
/// Delivery reports are served by a dedicated polling thread. ``enqueue(_:completion:)`` queues
/// a record and calls `completion` once the broker acknowledged it or librdkafka gave up (after
/// its own retries, within `message.timeout.ms`); ``send(_:)`` awaits that. While librdkafka's
/// queue is full, `enqueue` waits (back-pressure). A fatal producer error recreates the
/// instance and re-produces the messages it failed, up to ``maxRecoveries`` times per message.
public final class KafkaProducer: @unchecked Sendable {
    /// The defaults under every producer's settings.
    public static let defaults: [String: String] = [
        "acks": "all", "enable.idempotence": "true", "client.id": "tweetoscoped",
    ]
    /// Instance recreations a message may live through before its failure is reported.
    public static let maxRecoveries = 5

    let config: [String: String]
    let logger: Logger
    private let callbacks: ProducerCallbacks
    private let worker: BlockingWorker
    private let lock = Lock()
    // Guarded by `lock`: the current instance (nil while it is being recreated) and the messages
    // the failed instance handed back.
    private var handle: OpaquePointer?
    private var requeued: [PendingMessage] = []
    private var fatalError: KafkaError?

    private let outstanding = Atomic<Int>(0)
    private let running = Atomic<Bool>(true)
    private let closing = Atomic<Bool>(false)
    private let recoveryNeeded = Atomic<Bool>(false)
    /// True when a broker answers a metadata request within `timeout` (a round trip on a
    /// thread of its own). For reporting an outage's end.
    public func brokersReachable(timeout: Duration = .milliseconds(500)) async -> Bool {
        let ms = timeout.clampedMilliseconds
        return await Self.probe.run { [self] in
            // Under the lock: the instance must not be destroyed by a recovery meanwhile.
            lock.withLock { handle.map { metadataAnswered($0, timeoutMs: ms) } ?? false }
        }
    }

    /// The thread running reachability probes of every producer.
    private static let probe = BlockingWorker(name: "rdk-probe")

    /// Number of times the instance was recreated.
    public var recoveries: Int { recoveryCount.load(ordering: .relaxed) }
    private let recoveryCount = Atomic<Int>(0)

    /// Creates the producer (no I/O: librdkafka connects in the background).
    ///
    /// - Parameters:
    ///   - config: librdkafka settings, over ``defaults``; must contain `bootstrap.servers`.
    ///   - onEvent: errors reported by librdkafka (broker down...), for counting and logging.
    public init(config: [String: String], logger: Logger,
                onEvent: @escaping @Sendable (KafkaEvent) -> Void = { _ in }) throws(KafkaError) {
        self.config = KafkaConfig.merged(Self.defaults, config)
        self.logger = logger
        callbacks = ProducerCallbacks(logger: logger, onEvent: onEvent)
        worker = BlockingWorker(name: "rdk-producer")
        do {
            handle = try makeHandle()
        } catch {
            worker.stop()
            throw error
        }
        callbacks.producer = self
        logger.debug("kafka producer created", metadata: ["config": .string(KafkaConfig.describe(self.config))])
        worker.submit { [self] in pollLoop() }
    }

    private func makeHandle() throws(KafkaError) -> OpaquePointer {
        let conf = try KafkaConfig.makeConf(config)
        callbacks.install(on: conf)
        var errstr = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errstr, errstr.count) else {
            rd_kafka_conf_destroy(conf)
            throw KafkaError(code: KafkaError.invalidArgument,
                             message: "cannot create the producer: " + errstr.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        return rk
    }

    // MARK: producing

    private enum Attempt {
        case queued, retryLater, failed(KafkaError)
    }

    /// rd_kafka_produceva of one record; the caller holds `lock`. `pending` is retained for the
    /// delivery report only when the record is queued.
    private func produce(_ rk: OpaquePointer, topic: UnsafePointer<CChar>, key: [UInt8]?, value: [UInt8],
                         _ pending: PendingMessage) -> Attempt {
        let opaque = Unmanaged.passRetained(pending).toOpaque()
        let err: rd_kafka_resp_err_t = value.withUnsafeBytes { value in
            withUnsafeTemporaryAllocation(of: rd_kafka_vu_t.self, capacity: 5) { vus in
                vus.initialize(repeating: rd_kafka_vu_t())
                vus[0].vtype = RD_KAFKA_VTYPE_TOPIC
                vus[0].u.cstr = topic
                vus[1].vtype = RD_KAFKA_VTYPE_VALUE
                vus[1].u.mem.ptr = UnsafeMutableRawPointer(mutating: value.baseAddress)
                vus[1].u.mem.size = value.count
                vus[2].vtype = RD_KAFKA_VTYPE_OPAQUE
                vus[2].u.ptr = opaque
                vus[3].vtype = RD_KAFKA_VTYPE_MSGFLAGS
                vus[3].u.i = RD_KAFKA_MSG_F_COPY
                func call(_ count: Int) -> rd_kafka_resp_err_t {
                    guard let error = rd_kafka_produceva(rk, vus.baseAddress, count) else { return RD_KAFKA_RESP_ERR_NO_ERROR }
                    let code = rd_kafka_error_code(error)
                    rd_kafka_error_destroy(error)
                    return code
                }
                guard let key else { return call(4) }
                // An empty key is a key ("" is not null): librdkafka needs a non-null pointer for it.
                let nul: UInt8 = 0
                return key.withUnsafeBytes { k in
                    withUnsafeBytes(of: nul) { n in
                        vus[4].vtype = RD_KAFKA_VTYPE_KEY
                        vus[4].u.mem.ptr = UnsafeMutableRawPointer(mutating: k.baseAddress ?? n.baseAddress!)
                        vus[4].u.mem.size = k.count
                        return call(5)
                    }
                }
            }
        }
        if err == RD_KAFKA_RESP_ERR_NO_ERROR { return .queued }
        Unmanaged<PendingMessage>.fromOpaque(opaque).release()
        switch err.rawValue {
        case KafkaError.queueFull:
            return .retryLater
        case KafkaError.fatalCode:
            recoveryNeeded.store(true, ordering: .relaxed)
            return .retryLater
        default:
            return .failed(KafkaError(err))
        }
    }

    /// Produces a re-queued message (its own copy of the record); the caller holds `lock`.
    private func produce(_ rk: OpaquePointer, _ pending: PendingMessage) -> Attempt {
        guard let record = pending.record else { return .failed(KafkaError(code: KafkaError.invalidArgument)) }
        return record.topic.withCString { produce(rk, topic: $0, key: record.key, value: record.value, pending) }
    }

    /// Queues `record`; `completion` runs (on the polling thread) once it is acknowledged or has
    /// finally failed. Waits while librdkafka's queue is full or the instance is being recreated.
    /// Throws only when librdkafka refuses the record outright (too large, unknown partition...),
    /// or, while it has to wait, once `giveUp` returns true (`_TIMED_OUT`: a shutdown deadline
    /// passed); `completion` is then not called.
    public func enqueue(_ record: ProducerRecord, giveUp: @Sendable () -> Bool = { false },
                       completion: @escaping @Sendable (Result<Delivery, KafkaError>) -> Void) async throws(KafkaError) {
        let refused = await enqueue([record], giveUp: giveUp, completion: completion)
        if let (_, error) = refused.first { throw error }
    }

    /// Queues `records` in order, all of one topic (that of the first), under one lock per run
    /// of records librdkafka accepts: one shared opaque, no task, continuation or allocation per
    /// record. `completion` runs (on the polling thread) once per record queued, when it is
    /// acknowledged or has finally failed. Waits while librdkafka's queue is full or the
    /// instance is being recreated.
    /// - Returns: the records not queued, by index, with the reason: refused outright by
    ///   librdkafka (too large...), or, once `giveUp` returned true while waiting, `_TIMED_OUT`
    ///   for it and every record after it. `completion` is not called for them.
    public func enqueue(_ records: [ProducerRecord], giveUp: @Sendable () -> Bool = { false },
                        completion: @escaping @Sendable (Result<Delivery, KafkaError>) -> Void) async -> [(index: Int, error: KafkaError)] {
        guard let topic = records.first?.topic else { return [] }
        let pending = PendingMessage(topic: topic, completion: completion)
        outstanding.add(records.count, ordering: .relaxed)
        var refused: [(index: Int, error: KafkaError)] = []
        var next = 0
        var delay = 1
        while next < records.count {
            // As many records as librdkafka takes, under one lock.
            let stalled: Bool = topic.withCString { cTopic in
                lock.withLock {
                    guard let rk = handle else { return true }
                    while next < records.count {
                        let r = records[next]
                        let outcome = r.topic == topic
                            ? produce(rk, topic: cTopic, key: r.key, value: r.value, pending)
                            : .failed(KafkaError(code: KafkaError.invalidArgument, message: "a batch goes to one topic (\(topic)), not \(r.topic)"))
                        switch outcome {
                        case .queued: break
                        case .failed(let error): refused.append((next, error))
                        case .retryLater: return true
                        }
                        next += 1
                    }
                    return false
                }
            }
            guard stalled else { break }
            if closing.load(ordering: .relaxed) || Task.isCancelled || giveUp() {
                let error = closing.load(ordering: .relaxed) || Task.isCancelled
                    ? KafkaError(code: RD_KAFKA_RESP_ERR__DESTROY.rawValue, message: "producer closing")
                    : KafkaError(code: RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue,
                                 message: "librdkafka's queue stayed full until the stop deadline")
                for i in next..<records.count { refused.append((i, error)) }
                break
            }
            try? await Task.sleep(for: .milliseconds(delay))
            delay = min(delay * 2, 50)
        }
        if !refused.isEmpty { outstanding.subtract(refused.count, ordering: .relaxed) }
        return refused
    }

    /// Produces `record` and waits for the broker's acknowledgement.
    public func send(_ record: ProducerRecord) async throws(KafkaError) -> Delivery {
        let (stream, continuation) = AsyncStream<Result<Delivery, KafkaError>>.makeStream()
        try await enqueue(record) { result in
            continuation.yield(result)
            continuation.finish()
        }
        for await result in stream { return try result.get() }
        throw KafkaError(code: RD_KAFKA_RESP_ERR__DESTROY.rawValue, message: "no delivery report")
    }

    /// Records queued and not yet acknowledged or failed.
    public var pending: Int { outstanding.load(ordering: .relaxed) }

    /// Waits until every queued record is acknowledged or failed, at most `timeout`; returns
    /// whether none is left.
    public func flush(timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while outstanding.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return outstanding.load(ordering: .relaxed) == 0
    }

    /// Flushes (at most `timeout`), then fails what is left (each completion gets the purge
    /// error, nothing is dropped silently) and destroys the instance. The purge waits at most
    /// 5 s more for librdkafka to hand the records back.
    public func close(timeout: Duration = .seconds(30)) async {
        if !(await flush(timeout: timeout)) {
            logger.warning("kafka producer closing with undelivered records",
                           metadata: ["records": .stringConvertible(pending)])
        }
        closing.store(true, ordering: .relaxed)
        running.store(false, ordering: .relaxed)
        await worker.run { [self] in
            let rk = lock.withLock { () -> OpaquePointer? in
                let h = handle
                handle = nil
                return h
            }
            let left = lock.withLock { () -> [PendingMessage] in
                let l = requeued
                requeued = []
                return l
            }
            for p in left { complete(p, .failure(fatalError ?? KafkaError(code: KafkaError.purgeQueue))) }
            if let rk {
                _ = rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT)
                let deadline = ContinuousClock.now + .seconds(5)
                while outstanding.load(ordering: .relaxed) > 0 && ContinuousClock.now < deadline {
                    rd_kafka_poll(rk, 50)
                }
                rd_kafka_destroy(rk)
            }
        }
        worker.stop()
    }

    // MARK: the polling thread

    private func pollLoop() {
        while running.load(ordering: .relaxed) {
            let rk = lock.withLock { handle }
            if let rk {
                rd_kafka_poll(rk, 100)
            } else {
                usleep(20_000)
            }
            if recoveryNeeded.load(ordering: .relaxed) && running.load(ordering: .relaxed) { recover() }
        }
    }

    /// Called from error_cb (on the polling thread) for a fatal error.
    func fatalRaised(_ error: KafkaError) {
        lock.withLock { fatalError = error }
        recoveryNeeded.store(true, ordering: .relaxed)
    }

    private func complete(_ pending: PendingMessage, _ result: Result<Delivery, KafkaError>) {
        pending.completion(result)
        outstanding.subtract(1, ordering: .relaxed)
    }

    /// A delivery report (on the polling thread).
    func delivered(_ rk: OpaquePointer?, _ message: rd_kafka_message_t, _ pending: PendingMessage) {
        let err = message.err
        if err == RD_KAFKA_RESP_ERR_NO_ERROR {
            complete(pending, .success(Delivery(topic: pending.topic, partition: message.partition,
                                                offset: message.offset)))
            return
        }
        let instanceFatal = rk.map { rd_kafka_fatal_error($0, nil, 0) != RD_KAFKA_RESP_ERR_NO_ERROR } ?? false
        let code = err.rawValue
        let fatalClass = instanceFatal || KafkaError.classify(code).fatal
            || code == KafkaError.purgeQueue || code == KafkaError.purgeInflight
        if fatalClass && !closing.load(ordering: .relaxed) && pending.recoveries < Self.maxRecoveries {
            // The instance is unusable: keep the message (its bytes, from librdkafka's copy) for its successor.
            let own = PendingMessage(topic: pending.topic, record: pending.record ?? ProducerRecord(
                topic: pending.topic,
                key: message.key.map { Array(UnsafeRawBufferPointer(start: $0, count: message.key_len)) },
                value: message.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: message.len)) } ?? []),
                recoveries: pending.recoveries, completion: pending.completion)
            lock.withLock { requeued.append(own) }
            recoveryNeeded.store(true, ordering: .relaxed)
            return
        }
        let text = KafkaError.text(code) + (instanceFatal ? " (the producer instance failed)" : "")
        complete(pending, .failure(KafkaError(code: code, message: text, isFatal: fatalClass,
                                             isRetriable: KafkaError.classify(code).retriable)))
    }

    /// Replaces a fatal instance: purges it (its delivery reports hand the messages back),
    /// destroys it, creates a new one and produces the handed-back messages on it first.
    private func recover() {
        let reason = lock.withLock { fatalError }
        let old = lock.withLock { () -> OpaquePointer? in
            let h = handle
            handle = nil
            return h
        }
        if let old {
            _ = rd_kafka_purge(old, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT)
            let deadline = ContinuousClock.now + .seconds(5)
            while rd_kafka_outq_len(old) > 0 && ContinuousClock.now < deadline { rd_kafka_poll(old, 50) }
            rd_kafka_poll(old, 0)
            rd_kafka_destroy(old)
        }
        let count = lock.withLock { requeued.count }
        logger.warning("kafka producer failed fatally; recreating it", metadata: [
            "error": .string(reason.map { "\($0)" } ?? "fatal error"), "records_to_resend": .stringConvertible(count),
        ])
        let fresh: OpaquePointer
        do {
            fresh = try makeHandle()
        } catch {
            logger.error("cannot recreate the kafka producer: \(error); retrying in 1 s")
            sleep(1)
            return  // recoveryNeeded stays set
        }
        recoveryCount.add(1, ordering: .relaxed)
        let failed: [(PendingMessage, KafkaError)] = lock.withLock {
            var failed: [(PendingMessage, KafkaError)] = []
            for p in requeued {
                p.recoveries += 1
                switch produce(fresh, p) {
                case .queued: break
                case .failed(let e): failed.append((p, e))
                case .retryLater: failed.append((p, KafkaError(code: KafkaError.queueFull)))
                }
            }
            requeued = []
            fatalError = nil
            handle = fresh
            return failed
        }
        recoveryNeeded.store(false, ordering: .relaxed)
        for (p, e) in failed { complete(p, .failure(e)) }
    }
}
