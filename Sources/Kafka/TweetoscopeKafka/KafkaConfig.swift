// librdkafka configuration from a `[String: String]` passthrough map, secret redaction, and the
// C callbacks (log_cb, error_cb) routed into swift-log and a Swift error handler.
import CRdKafka
import TweetoscopeCore

/// Helpers for librdkafka configuration maps.
public enum KafkaConfig {
    /// Whether the value of `key` is a secret that must never be logged or printed: keys
    /// containing `password`, `secret` or `sasl.jaas`, and private keys.
    public static func isSecret(_ key: String) -> Bool {
        let k = key.lowercased()
        return k.contains("password") || k.contains("secret") || k.contains("sasl.jaas")
            || k.contains("ssl.key.pem") || k.contains("private")
    }

    /// `settings` with every secret value replaced by `***`.
    public static func redacted(_ settings: [String: String]) -> [String: String] {
        var out = settings
        for key in settings.keys where isSecret(key) { out[key] = "***" }
        return out
    }

    /// `key=value` pairs sorted by key, secrets redacted, for logs.
    public static func describe(_ settings: [String: String]) -> String {
        let r = redacted(settings)
        return r.keys.sorted().map { "\($0)=\(r[$0]!)" }.joined(separator: " ")
    }

    /// `defaults` overridden by `overrides`.
    public static func merged(_ defaults: [String: String], _ overrides: [String: String]) -> [String: String] {
        defaults.merging(overrides) { _, new in new }
    }

    /// A new `rd_kafka_conf_t` with every setting applied, keys in sorted order. An unknown key
    /// or a bad value throws naming the key (never the value of a secret key).
    static func makeConf(_ settings: [String: String]) throws(KafkaError) -> OpaquePointer {
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError(code: KafkaError.invalidArgument, message: "rd_kafka_conf_new failed")
        }
        var errstr = [CChar](repeating: 0, count: 512)
        for key in settings.keys.sorted() {
            let rc = rd_kafka_conf_set(conf, key, settings[key]!, &errstr, errstr.count)
            if rc != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                let detail = isSecret(key)
                    ? (rc == RD_KAFKA_CONF_UNKNOWN ? "unknown property" : "invalid value (not shown: secret)")
                    : errstr.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                throw KafkaError(code: KafkaError.invalidArgument, message: "librdkafka property \(key): \(detail)",
                                 isFatal: false, isRetriable: false)
            }
        }
        return conf
    }

    /// Checks `settings` without creating a client (no I/O): every key known, every value valid.
    public static func validate(_ settings: [String: String]) throws(KafkaError) {
        rd_kafka_conf_destroy(try makeConf(settings))
    }
}

/// A client-level event reported to the owner of a producer or consumer.
public enum KafkaEvent: Sendable {
    /// An error reported by librdkafka's error_cb (broker down, authentication failure, a fatal
    /// error...). librdkafka retries by itself; fatal errors are handled by the client.
    case error(KafkaError)
    /// An asynchronous offset commit failed (the offsets will be committed again with the next
    /// batch, or the records redelivered: at-least-once).
    case commitFailed(KafkaError)
}

/// The Swift side of a librdkafka client's callbacks. Subclasses add the producer's delivery
/// reports and the consumer's rebalances. Passed (unretained) as the client's opaque; the
/// owner keeps it alive until after `rd_kafka_destroy`.
class KafkaCallbacks: @unchecked Sendable {
    let logger: Logger
    let onEvent: @Sendable (KafkaEvent) -> Void

    init(logger: Logger, onEvent: @escaping @Sendable (KafkaEvent) -> Void) {
        self.logger = logger
        self.onEvent = onEvent
    }

    /// error_cb: `err` is `_FATAL` for fatal errors; the underlying error is then read with
    /// `rd_kafka_fatal_error`.
    func error(_ rk: OpaquePointer?, _ err: Int32, _ reason: String) {
        var error = KafkaError(code: err, message: reason)
        if err == KafkaError.fatalCode, let rk {
            var buf = [CChar](repeating: 0, count: 512)
            let underlying = rd_kafka_fatal_error(rk, &buf, buf.count)
            let text = buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            error = KafkaError(code: underlying.rawValue, message: text, isFatal: true, isRetriable: false)
            fatal(error)
        }
        onEvent(.error(error))
    }

    /// Called for a fatal error, before the event is reported; the producer recreates itself.
    func fatal(_ error: KafkaError) {}

    /// Attaches the callbacks to `conf`.
    func install(on conf: OpaquePointer) {
        rd_kafka_conf_set_opaque(conf, Unmanaged.passUnretained(self).toOpaque())
        rd_kafka_conf_set_log_cb(conf, kafkaLogCallback)
        rd_kafka_conf_set_error_cb(conf, kafkaErrorCallback)
    }

    static func from(_ opaque: UnsafeMutableRawPointer?) -> KafkaCallbacks? {
        guard let opaque else { return nil }
        return Unmanaged<KafkaCallbacks>.fromOpaque(opaque).takeUnretainedValue()
    }
}

/// log_cb: librdkafka's syslog levels into swift-log. Connection failures (facility FAIL) also
/// come through error_cb, where they are counted and rate-limited, so they are logged at debug.
private let kafkaLogCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Void = {
    rk, level, fac, buf in
    guard let rk, let callbacks = KafkaCallbacks.from(rd_kafka_opaque(rk)) else { return }
    let facility = fac.map { String(cString: $0) } ?? ""
    let text = buf.map { String(cString: $0) } ?? ""
    let swiftLevel: Logger.Level
    switch level {
    case ...2: swiftLevel = .error
    case 3, 4: swiftLevel = facility == "FAIL" ? .debug : .warning
    case 5: swiftLevel = .notice
    case 6: swiftLevel = .info
    default: swiftLevel = .debug
    }
    let name = rd_kafka_name(rk).map { String(cString: $0) } ?? "rdkafka"
    callbacks.logger.log(level: swiftLevel, "librdkafka: \(text)",
                         metadata: ["rdkafka": .string(name), "facility": .string(facility)])
}

private let kafkaErrorCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Void = {
    rk, err, reason, opaque in
    KafkaCallbacks.from(opaque)?.error(rk, err, reason.map { String(cString: $0) } ?? "")
}
