// The librdkafka this library runs with.
import CRdKafka

/// The librdkafka library in use.
public enum KafkaLibrary {
    /// Its version, e.g. "2.0.2" (`rd_kafka_version_str`).
    public static var version: String { String(cString: rd_kafka_version_str()) }
}
