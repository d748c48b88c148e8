// The `jsonl` source: tweets read back from a JSON-lines file in the course's wire format
// (one `{"type": "tweet"|"retweet", ...}` value per line), e.g. written by the `file` sink.

import TweetoscopeCore

final class JSONLinesSource: Stage {
    let path: String
    /// Source id forced on every tweet, or nil to keep the line's `source` field (0 when absent).
    let source: SourceID?

    static let descriptor = StageDescriptor(
        type: "jsonl",
        summary: "Reads tweets from a JSON-lines file in the course's wire format (plain or gzip-compressed).",
        inputs: [],
        outputs: [PortSpec("tweets", kinds: [.tweet], doc: "the tweets of the file, in file order")],
        options: [
            OptionSpec("path", .path, required: true, doc: "JSON-lines file, one tweet per line; may be gzip-compressed"),
            OptionSpec("source", .int, default: .int(-1),
                       doc: "source id given to every tweet; -1 = the line's `source` field, or 0 when it has none"),
        ],
        make: { _, options in try JSONLinesSource(options) })

    init(_ options: StageOptions) throws {
        path = try options.string("path")
        let s = try options.int("source")
        guard s >= -1 else { throw StageConfigError(option: "source", "must be >= 0, or -1 for the line's field; got \(s)") }
        source = s >= 0 ? SourceID(s) : nil
    }

    /// A short, stable reason name for a decoding error of `WireFormat.decode`.
    static func reason(_ error: any Error) -> String {
        let text = "\(error)"
        if text.hasPrefix("invalid JSON") { return "invalid_json" }
        if text.hasPrefix("unknown message type") { return "unknown_type" }
        if text.hasSuffix(": missing") { return "missing_field" }
        return "invalid_field"
    }

    func run(_ context: StageContext) async throws {
        guard let output = context.output("tweets") else {
            context.logger.warning("output tweets is not bound; nothing to read")
            return
        }
        context.logger.info("reading tweets", metadata: ["file": .string(path)])
        let file = try ByteFile(path: path)
        let path = self.path
        var batch: [Message] = []
        batch.reserveCapacity(batchSize)
        var total = 0
        var stopped = false
        // Lines are read synchronously, a batch at a time; each batch is sent between reads.
        var bytes: [UInt8] = []
        var reading = true
        var lineReader = LineCursor(file: file)
        while reading {
            let began = ContinuousClock.now
            reading = try lineReader.read(maxLines: batchSize) { line, number in
                guard !isBlank(line) else { return }
                bytes.removeAll(keepingCapacity: true)
                bytes.append(contentsOf: line)
                do {
                    let message = try WireFormat.decode(bytes)
                    guard case .tweet(var tweet) = message else {
                        context.counters.reject("not_a_tweet")
                        context.warnRateLimited("not_a_tweet", "\(path):\(number): a \(message.kind) message, not a tweet; line skipped")
                        return
                    }
                    if let source { tweet.source = source }
                    batch.append(.tweet(tweet))
                } catch {
                    let reason = Self.reason(error)
                    context.counters.reject(reason)
                    context.warnRateLimited(reason, "\(path):\(number): \(error); line skipped")
                }
            }
            context.recordProcessing(since: began)
            if !batch.isEmpty {
                let full = batch
                batch = []
                batch.reserveCapacity(batchSize)
                await output.send(full)
                context.counters.add("events", full.count)
                total += full.count
            }
            if context.stopRequested || Task.isCancelled { stopped = true; break }
        }
        context.logger.info(stopped ? "reading stopped on request" : "reading done",
                            metadata: ["file": .string(path), "events": .stringConvertible(total)])
    }
}

/// Reads a file's lines a chunk at a time (so that an async caller can send between chunks).
struct LineCursor {
    private let file: ByteFile
    private var buffer: [UInt8] = []
    private var start = 0
    private var eof = false
    private var lineNumber = 0

    init(file: ByteFile) { self.file = file }

    /// Calls `body` for up to `maxLines` lines; returns false once the file is exhausted.
    mutating func read(maxLines: Int, _ body: (UnsafeBufferPointer<UInt8>, Int) throws -> Void) throws -> Bool {
        var done = 0
        while done < maxLines {
            if let nl = buffer[start...].firstIndex(of: 0x0A) {
                var end = nl
                if end > start && buffer[end - 1] == 0x0D { end -= 1 }
                lineNumber += 1
                let s = start
                try buffer.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[s..<end]), lineNumber) }
                start = nl + 1
                done += 1
                continue
            }
            if eof {
                if start < buffer.count {
                    var end = buffer.count
                    if buffer[end - 1] == 0x0D { end -= 1 }
                    lineNumber += 1
                    let s = start
                    try buffer.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[s..<end]), lineNumber) }
                    start = buffer.count
                }
                return false
            }
            buffer.removeFirst(start)
            start = 0
            let old = buffer.count
            let chunk = 1 << 20
            buffer.append(contentsOf: repeatElement(0, count: chunk))
            let n = try buffer.withUnsafeMutableBytes { try file.read(into: $0.baseAddress! + old, count: chunk) }
            buffer.removeLast(chunk - n)
            if n == 0 { eof = true }
        }
        return true
    }
}
