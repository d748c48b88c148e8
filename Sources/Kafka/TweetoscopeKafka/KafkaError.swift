// Typed librdkafka errors: the rd_kafka_resp_err_t code, its name, and whether it is fatal (the
// client instance is unusable and must be recreated) or retriable (trying again later may work).
import CRdKafka

/// An error of librdkafka or of the broker, with its `rd_kafka_resp_err_t` code.
public struct KafkaError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The `rd_kafka_resp_err_t` code: negative for librdkafka's own errors (`_TRANSPORT`...),
    /// positive for broker errors (`UNKNOWN_TOPIC_OR_PART`...).
    public var code: Int32
    /// What happened, as librdkafka or the caller said it.
    public var message: String
    /// The client instance that raised it is unusable and must be recreated (an idempotent
    /// producer after a broker lost its state, for example).
    public var isFatal: Bool
    /// Trying the operation again later may succeed (the broker is down, a leader moved...).
    public var isRetriable: Bool

    /// An error with the default classification of `code` (see ``classify(_:)``).
    public init(code: Int32, message: String? = nil) {
        let c = Self.classify(code)
        self.init(code: code, message: message, isFatal: c.fatal, isRetriable: c.retriable)
    }

    public init(code: Int32, message: String?, isFatal: Bool, isRetriable: Bool) {
        self.code = code
        self.message = message ?? Self.text(code)
        self.isFatal = isFatal
        self.isRetriable = isRetriable
    }

    /// An error from a librdkafka `rd_kafka_resp_err_t`.
    public init(_ err: rd_kafka_resp_err_t, message: String? = nil) {
        self.init(code: err.rawValue, message: message)
    }

    /// The symbolic name without the prefix, e.g. `_TRANSPORT`, `UNKNOWN_TOPIC_OR_PART`.
    public var name: String { Self.name(code) }

    /// A short counter-friendly reason: the name in lower case without the leading underscore,
    /// e.g. `transport`, `msg_timed_out`.
    public var reason: String {
        var n = name.lowercased()
        while n.hasPrefix("_") { n.removeFirst() }
        return n
    }

    public var description: String {
        var flags: [String] = []
        if isFatal { flags.append("fatal") }
        if isRetriable { flags.append("retriable") }
        return "\(name) (\(code)\(flags.isEmpty ? "" : ", " + flags.joined(separator: ", "))): \(message)"
    }

    /// librdkafka's name of `code`.
    public static func name(_ code: Int32) -> String {
        guard let p = rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: code)) else { return "\(code)" }
        return String(cString: p)
    }

    /// librdkafka's description of `code`.
    public static func text(_ code: Int32) -> String {
        guard let p = rd_kafka_err2str(rd_kafka_resp_err_t(rawValue: code)) else { return "error \(code)" }
        return String(cString: p)
    }

    // Codes used by name in this module.
    public static let fatalCode: Int32 = RD_KAFKA_RESP_ERR__FATAL.rawValue
    public static let queueFull: Int32 = RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue
    public static let topicAlreadyExists: Int32 = RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS.rawValue
    public static let partitionEOF: Int32 = RD_KAFKA_RESP_ERR__PARTITION_EOF.rawValue
    public static let timedOut: Int32 = RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue
    public static let invalidArgument: Int32 = RD_KAFKA_RESP_ERR__INVALID_ARG.rawValue
    public static let purgeQueue: Int32 = RD_KAFKA_RESP_ERR__PURGE_QUEUE.rawValue
    public static let purgeInflight: Int32 = RD_KAFKA_RESP_ERR__PURGE_INFLIGHT.rawValue

    /// Transient conditions: the broker or a leader is unreachable or busy, a request or a
    /// message timed out, a queue is full. The Kafka protocol marks the broker codes retriable.
    static let retriableCodes: Set<Int32> = Set([
        RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR__RESOLVE, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT,
        RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN, RD_KAFKA_RESP_ERR__TIMED_OUT, RD_KAFKA_RESP_ERR__QUEUE_FULL,
        RD_KAFKA_RESP_ERR__ISR_INSUFF, RD_KAFKA_RESP_ERR__WAIT_COORD, RD_KAFKA_RESP_ERR__TIMED_OUT_QUEUE,
        RD_KAFKA_RESP_ERR__WAIT_CACHE, RD_KAFKA_RESP_ERR__RETRY, RD_KAFKA_RESP_ERR__NODE_UPDATE,
        RD_KAFKA_RESP_ERR__UNKNOWN_BROKER, RD_KAFKA_RESP_ERR__PREV_IN_PROGRESS,
        RD_KAFKA_RESP_ERR_INVALID_MSG, RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION,
        RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS, RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_NOT_COORDINATOR, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND, RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
        RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS, RD_KAFKA_RESP_ERR_KAFKA_STORAGE_ERROR,
        RD_KAFKA_RESP_ERR_FETCH_SESSION_ID_NOT_FOUND, RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR_PREFERRED_LEADER_NOT_AVAILABLE, RD_KAFKA_RESP_ERR_UNSTABLE_OFFSET_COMMIT,
        RD_KAFKA_RESP_ERR_THROTTLING_QUOTA_EXCEEDED, RD_KAFKA_RESP_ERR_NOT_CONTROLLER,
        RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH, RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH,
    ].map(\.rawValue))

    /// Codes after which the client instance cannot go on: `_FATAL` itself and the idempotent
    /// producer's lost-state errors (librdkafka raises them as fatal errors).
    static let fatalCodes: Set<Int32> = Set([
        RD_KAFKA_RESP_ERR__FATAL, RD_KAFKA_RESP_ERR__FENCED, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
        RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID, RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH,
        RD_KAFKA_RESP_ERR_INVALID_PRODUCER_ID_MAPPING, RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
    ].map(\.rawValue))

    /// The default classification of a code; callers that know better (librdkafka reported a
    /// fatal error through `error_cb`) set the flags themselves.
    public static func classify(_ code: Int32) -> (fatal: Bool, retriable: Bool) {
        (fatalCodes.contains(code), retriableCodes.contains(code))
    }
}
