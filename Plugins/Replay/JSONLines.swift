// The `jsonl` source: tweets read back from a JSON-lines file in the course's wire format
// (one `{"type": "tweet"|"retweet", ...}` value per line), e.g. written by the `file` sink.

import TweetoscopeCore

/// Reads tweets from a JSON-lines file. A line that is not a tweet is skipped and reported
/// (counted as `rejected.<reason>`, logged rate-limited with `file:line`, and sent to the optional
/// `rejected` port as a dead letter): `oversized` (longer than `max_record_bytes`, skipped in
/// bounded memory), `not_a_tweet` (another message kind), and the reasons of
/// ``WireFormat/decode(_:key:)`` (`invalid_utf8`, `invalid_json`, `unknown_type`,
/// `missing_field`, `wrong_type`, `negative`, `out_of_range`...). Blank lines are ignored.
/// Duplicated and out-of-order tweets are not the source's business: the collector rejects them.
/// A read error (a truncated gzip stream, an I/O error) fails the stage after the tweets read
/// before it have been sent; the collector downstream then drops its open cascades as incomplete.
final class JSONLinesSource: Stage {
    let path: String
    /// Source id forced on every tweet, or nil to keep the line's `source` field (0 when absent).
    let source: SourceID?
    /// Longest line in bytes.
    let maxRecordBytes: Int

    static let descriptor = StageDescriptor(
        type: "jsonl",
        summary: "Reads tweets from a JSON-lines file in the course's wire format (plain or gzip-compressed).",
        inputs: [],
        outputs: [
            PortSpec("tweets", kinds: [.tweet], doc: "the tweets of the file, in file order"),
            rejectedPort,
        ],
        options: [
            OptionSpec("path", .path, required: true, doc: "JSON-lines file, one tweet per line; may be gzip-compressed"),
            OptionSpec("source", .int, default: .int(-1),
                       range: -1...2_147_483_647, doc: "source id given to every tweet; -1 = the line's `source` field, or 0 when it has none"),
            maxRecordBytesOption,
            allowEmptyOption,
        ],
        make: { _, options in try JSONLinesSource(options) })

    init(_ options: StageOptions) throws {
        path = try options.readableFile("path")
        let s = try options.int("source")
        guard s >= -1 else { throw StageConfigError(option: "source", "must be >= 0, or -1 for the line's field; got \(s)") }
        source = s >= 0 ? SourceID(s) : nil
        maxRecordBytes = try parseMaxRecordBytes(options)
        allowEmpty = try options.bool("allow_empty")
        _ = try DataHeader.firstLine(path, option: "path")  // readable, UTF-8, LF line ends
    }

    /// Whether a file without any accepted event is fine (otherwise the stage fails).
    let allowEmpty: Bool

    /// Decodes one line: a tweet, or the reason and explanation of its rejection.
    static func decode(_ line: Line, forcedSource: SourceID?) -> Result<Tweet, WireFormatError> {
        if line.oversized {
            return .failure(WireFormatError(RejectReason.oversized, "line of \(line.length) bytes is longer than max_record_bytes"))
        }
        var bytes = line.bytes
        // A byte-order mark at the start of the file.
        if line.number == 1, bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF {
            bytes = UnsafeBufferPointer(rebasing: bytes[3...])
        }
        do {
            let message = try WireFormat.decode(bytes)
            guard case .tweet(var tweet) = message else {
                return .failure(WireFormatError("not_a_tweet", "a \(message.kind) message, not a tweet"))
            }
            if let forcedSource { tweet.source = forcedSource }
            return .success(tweet)
        } catch let error as WireFormatError {
            return .failure(error)
        } catch {
            return .failure(WireFormatError("\(error)"))
        }
    }

    func run(_ context: StageContext) async throws {
        guard let output = context.output("tweets") else {
            context.logger.warning("output tweets is not bound; nothing to read")
            return
        }
        context.logger.info("reading tweets", metadata: ["file": .string(path)])
        var reader = LineReader(try ByteFile(path: path), maxLineBytes: maxRecordBytes)
        let rejected = RejectedRecords(context)
        let path = self.path
        var batch: [Message] = []
        batch.reserveCapacity(batchSize)
        var total = 0
        var stopped = false
        // Lines are read synchronously, a batch at a time; each batch is sent between reads.
        var reading = true
        // A read error (a truncated gzip stream, an I/O error) ends the source with an error, but
        // only after the lines read before it have been sent.
        var readError: (any Error)?
        while reading {
            let began = ContinuousClock.now
            for _ in 0..<batchSize {
                let next: Line?
                do { next = try reader.next() } catch { readError = error; reading = false; break }
                guard let line = next else { reading = false; break }
                if !line.oversized && isBlank(line.bytes) { continue }
                switch Self.decode(line, forcedSource: source) {
                case .success(let tweet):
                    batch.append(.tweet(tweet))
                case .failure(let error):
                    rejected.reject(error.reason, location: "\(path):\(line.number)", detail: error.description, raw: line.bytes)
                }
                if rejected.needsFlush { break }
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
            await rejected.flush()
            if context.stopRequested || Task.isCancelled { stopped = true; break }
        }
        if let readError {
            context.logger.error("reading failed after \(total) events: \(readError)", metadata: ["file": .string(path)])
            throw readError
        }
        if total == 0 && !stopped && !allowEmpty { throw nothingAccepted(path, context) }
        context.logger.info(stopped ? "reading stopped on request" : "reading done",
                            metadata: ["file": .string(path), "events": .stringConvertible(total)])
    }
}
