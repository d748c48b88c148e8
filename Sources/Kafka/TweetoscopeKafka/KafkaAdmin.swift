// Admin operations: topic creation, tolerant of topics that already exist.
import CRdKafka
import TweetoscopeCore

public enum KafkaAdmin {
    /// Creates `names` with `partitions` partitions each; a topic that already exists is fine.
    ///
    /// - Parameters:
    ///   - config: librdkafka settings (with `bootstrap.servers`) of the temporary admin client.
    ///   - replicationFactor: -1 = the broker's default.
    ///   - timeout: the request timeout; a broker that is down gives a retriable `_TIMED_OUT`.
    /// - Returns: the topics actually created (not those that existed).
    /// - Throws: the first topic error other than TOPIC_ALREADY_EXISTS, or the request's error.
    @discardableResult
    public static func createTopics(_ names: [String], partitions: Int, replicationFactor: Int = -1,
                                    config: [String: String], logger: Logger,
                                    timeout: Duration = .seconds(10)) async throws(KafkaError) -> [String] {
        guard !names.isEmpty else { return [] }
        let callbacks = KafkaCallbacks(logger: logger, onEvent: { _ in })
        let conf = try KafkaConfig.makeConf(KafkaConfig.merged(["client.id": "tweetoscoped-admin"], config))
        callbacks.install(on: conf)
        let worker = BlockingWorker(name: "rdk-admin")
        defer { worker.stop() }
        let ms = timeout.clampedMilliseconds
        let nonisolatedConf = UnsafeSendable(conf)
        let result: Result<[String], KafkaError> = await worker.run {
            withExtendedLifetime(callbacks) {
                blockingCreate(names, partitions: partitions, replicationFactor: replicationFactor,
                               conf: nonisolatedConf.value, timeoutMs: ms)
            }
        }
        return try result.get()
    }

    private static func blockingCreate(_ names: [String], partitions: Int, replicationFactor: Int,
                                       conf: OpaquePointer, timeoutMs: Int32) -> Result<[String], KafkaError> {
        var errstr = [CChar](repeating: 0, count: 512)
        func errText() -> String { errstr.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } }
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, &errstr, errstr.count) else {
            rd_kafka_conf_destroy(conf)
            return .failure(KafkaError(code: KafkaError.invalidArgument, message: "cannot create the admin client: \(errText())"))
        }
        defer { rd_kafka_destroy(rk) }
        var topics: [OpaquePointer?] = []
        defer { for t in topics { rd_kafka_NewTopic_destroy(t) } }
        for name in names {
            guard let t = rd_kafka_NewTopic_new(name, Int32(partitions), Int32(replicationFactor), &errstr, errstr.count) else {
                return .failure(KafkaError(code: KafkaError.invalidArgument, message: "topic \(name): \(errText())"))
            }
            topics.append(t)
        }
        let options = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS)
        defer { rd_kafka_AdminOptions_destroy(options) }
        _ = rd_kafka_AdminOptions_set_request_timeout(options, timeoutMs, &errstr, errstr.count)
        _ = rd_kafka_AdminOptions_set_operation_timeout(options, timeoutMs, &errstr, errstr.count)
        let queue = rd_kafka_queue_new(rk)
        defer { rd_kafka_queue_destroy(queue) }
        rd_kafka_CreateTopics(rk, &topics, topics.count, options, queue)
        // The request times out by itself; the margin covers the answer's way back.
        guard let event = rd_kafka_queue_poll(queue, timeoutMs + 5000) else {
            return .failure(KafkaError(code: KafkaError.timedOut, message: "CreateTopics: no answer"))
        }
        defer { rd_kafka_event_destroy(event) }
        let eventError = rd_kafka_event_error(event)
        if eventError != RD_KAFKA_RESP_ERR_NO_ERROR {
            let text = rd_kafka_event_error_string(event).map { String(cString: $0) }
            return .failure(KafkaError(eventError, message: "CreateTopics: " + (text ?? KafkaError.text(eventError.rawValue))))
        }
        guard let res = rd_kafka_event_CreateTopics_result(event) else {
            return .failure(KafkaError(code: KafkaError.invalidArgument, message: "CreateTopics: unexpected event"))
        }
        var count = 0
        guard let results = rd_kafka_CreateTopics_result_topics(res, &count) else { return .success([]) }
        var created: [String] = []
        for i in 0..<count {
            guard let r = results[i] else { continue }
            let name = String(cString: rd_kafka_topic_result_name(r))
            let err = rd_kafka_topic_result_error(r)
            if err == RD_KAFKA_RESP_ERR_NO_ERROR {
                created.append(name)
            } else if err.rawValue != KafkaError.topicAlreadyExists {
                let text = rd_kafka_topic_result_error_string(r).map { String(cString: $0) } ?? KafkaError.text(err.rawValue)
                return .failure(KafkaError(err, message: "topic \(name): \(text)"))
            }
        }
        return .success(created)
    }
}

/// Carries a value the compiler cannot prove Sendable across one hand-over to another thread.
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
