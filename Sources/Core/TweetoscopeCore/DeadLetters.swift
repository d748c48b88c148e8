// Rejected input records of a source: counted by reason, logged (rate-limited) and, when the
// source's optional `rejected` port is bound, sent downstream as dead letters (`log` messages)
// so that a `file` or `kafka_sink` stage can keep them.

import Glibc

/// Dead letters: the `log` message that records one rejected input record.
public enum DeadLetter {
    /// Most bytes of the raw record kept in a dead letter.
    public static let maxRawBytes = 1024

    /// The dead letter of a record rejected by stage `stage`: a `LogRecord` at the current Unix
    /// time (seconds), level `WARNING`, source = the stage's name, message =
    /// `<reason>: <location>: <raw record>` where the raw record is cut to ``maxRawBytes`` bytes
    /// (at a character boundary, then marked with `…`) and invalid UTF-8 is replaced by U+FFFD.
    public static func record(stage: String, reason: String, location: String,
                              raw: UnsafeBufferPointer<UInt8>) -> LogRecord {
        LogRecord(time: Int64(Glibc.time(nil)), source: stage, level: "WARNING",
                  message: "\(reason): \(location): \(text(raw))")
    }

    /// The raw record as text: at most ``maxRawBytes`` bytes, cut before a partial UTF-8
    /// sequence and followed by `…` when cut, invalid UTF-8 replaced by U+FFFD.
    public static func text(_ raw: UnsafeBufferPointer<UInt8>) -> String {
        guard raw.count > maxRawBytes else { return String(decoding: raw, as: UTF8.self) }
        var cut = maxRawBytes
        // Back off over continuation bytes (at most 3) so that a character is not split.
        var k = 0
        while k < 3 && cut > 0 && raw[cut] & 0xC0 == 0x80 { cut -= 1; k += 1 }
        if k == 3 && raw[cut] & 0xC0 == 0x80 { cut = maxRawBytes }  // not UTF-8 anyway
        return String(decoding: UnsafeBufferPointer(rebasing: raw[0..<cut]), as: UTF8.self) + "…"
    }
}

/// The rejected records of one source stage. Each is counted as `rejected.<reason>`, logged
/// with ``StageContext/warnRateLimited(_:_:metadata:)`` and, when the stage's `rejected` output
/// port is bound, queued as a dead letter (``DeadLetter``) until ``flush()`` sends the queue.
///
/// Not thread-safe: one source task owns it. The caller bounds memory by flushing at least
/// every ``flushThreshold`` records (``needsFlush``).
public final class RejectedRecords {
    /// Queued dead letters above which ``needsFlush`` is true (about 1 MiB of messages at most).
    public static let flushThreshold = 1024

    private let context: StageContext
    private let output: StageOutput?
    private var queue: [Message] = []

    /// - Parameter port: the output port of the dead letters (`rejected`).
    public init(_ context: StageContext, port: String = "rejected") {
        self.context = context
        self.output = context.output(port)
    }

    /// Whether dead letters are being collected (the port is bound).
    public var isBound: Bool { output != nil }

    /// Whether the queue holds ``flushThreshold`` dead letters or more.
    public var needsFlush: Bool { queue.count >= Self.flushThreshold }

    /// Reports one rejected record.
    ///
    /// - Parameters:
    ///   - reason: the counter suffix, one of ``RejectReason`` or a source-specific name.
    ///   - location: where the record was, e.g. `file:line` or `topic[partition]@offset`.
    ///   - detail: what is wrong, for the log line.
    ///   - raw: the record's bytes, for the dead letter.
    public func reject(_ reason: String, location: String, detail: String, raw: UnsafeBufferPointer<UInt8>,
                       metadata: Logger.Metadata? = nil) {
        context.counters.reject(reason)
        context.warnRateLimited(reason, "\(location): \(detail); record skipped", metadata: metadata)
        if output != nil {
            queue.append(.log(DeadLetter.record(stage: context.name, reason: reason, location: location, raw: raw)))
        }
    }

    /// ``reject(_:location:detail:raw:metadata:)`` with the raw record given as bytes.
    public func reject(_ reason: String, location: String, detail: String, raw: [UInt8],
                       metadata: Logger.Metadata? = nil) {
        raw.withUnsafeBufferPointer { reject(reason, location: location, detail: detail, raw: $0, metadata: metadata) }
    }

    /// Sends the queued dead letters to the `rejected` port (waits while its consumers are behind).
    public func flush() async {
        guard let output, !queue.isEmpty else { return }
        let batch = queue
        queue = []
        await output.send(batch)
        context.counters.add("dead_letters", batch.count)
    }
}
