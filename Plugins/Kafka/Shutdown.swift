// Bounded shutdown steps of the Kafka stages: no flush, commit or close waits past the daemon's
// stop deadline (`shutdown_timeout` after SIGTERM, now after a second signal).
import TweetoscopeCore

/// The time a shutdown step may take: `at` most, less when the stop deadline is nearer (zero
/// once it has passed).
func shutdownBudget(_ context: StageContext, at most: Duration) -> Duration {
    guard let deadline = context.stopDeadline else { return most }
    let left = deadline - ContinuousClock.now
    return left <= .zero ? .zero : min(left, most)
}

/// Records a kafka_sink lost: delivery failed (after librdkafka's retries, within
/// `message.timeout.ms`), refused, or still queued when the stop deadline passed.
struct LostRecords: Error, CustomStringConvertible {
    var count: Int
    var topic: String
    var atDeadline: Int
    var description: String {
        "\(count) record\(count == 1 ? "" : "s") not delivered to topic \(topic), lost"
            + (atDeadline > 0 ? " (\(atDeadline) still undelivered at the stop deadline)" : "")
    }
}
