// `tweetoscoped top`: a refreshing terminal table of the cascades with the largest forecast and
// the running median ARE per window, read from a running daemon's alerts and stats (JSON-lines
// files written by the file sink, followed like `tail -f`, or Kafka topics).
import Glibc
import Synchronization
import TweetoscopeCore
import TweetoscopeKafka

/// What `top` knows: the latest forecast of every cascade, the observed sizes (from parameters
/// messages) and the recent ARE values per window. Any message kind may come from any source;
/// kinds other than alert, stat and parameters are ignored.
public struct TopBoard: Sendable {
    /// The latest forecast of one cascade: the alert of its largest window (the last one received
    /// for that window).
    public struct Forecast: Sendable, Equatable {
        public var cascade: CascadeID
        public var msg: String
        public var tObs: Int
        public var forecast: Double
    }

    struct WindowKey: Hashable {
        var cascade: CascadeID
        var tObs: Int
    }

    /// ARE values kept per window for the running median.
    public static let medianWindow = 10_000
    /// Cascades (and observed sizes, and stats) kept at most; past it the oldest half is dropped.
    public static let capacity = 200_000

    /// A value with the arrival number of the message that set it (to drop the oldest).
    struct Stamped<Value: Sendable>: Sendable {
        var value: Value
        var sequence: Int
    }

    private var forecasts: [CascadeID: Stamped<Forecast>] = [:]
    private var observed: [WindowKey: Stamped<Int>] = [:]
    private var ares: [WindowKey: Stamped<Double>] = [:]
    /// Cascades with a stat: ended.
    private var ended: [CascadeID: Stamped<Void>] = [:]
    /// Recent ARE values per window (a ring of `medianWindow`).
    private var recent: [Int: (values: [Double], next: Int, total: Int)] = [:]
    private var sequence = 0
    public private(set) var alerts = 0
    public private(set) var stats = 0
    public private(set) var parameters = 0
    public private(set) var malformed = 0

    public init() {}

    /// Takes one JSON line (wire format); blank lines are skipped, undecodable ones counted.
    public mutating func ingest(line: some Collection<UInt8>) {
        guard line.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { return }
        do {
            ingest(try WireFormat.decode(line))
        } catch {
            malformed += 1
        }
    }

    public mutating func ingest(_ message: Message) {
        sequence += 1
        switch message {
        case .alert(let a):
            alerts += 1
            if let old = forecasts[a.cascade], old.value.tObs > a.tObs { return }
            forecasts[a.cascade] = Stamped(value: Forecast(cascade: a.cascade, msg: a.msg, tObs: a.tObs, forecast: a.nTot),
                                           sequence: sequence)
            Self.bound(&forecasts)
        case .stat(let s):
            stats += 1
            ares[WindowKey(cascade: s.cascade, tObs: s.tObs)] = Stamped(value: s.are, sequence: sequence)
            ended[s.cascade] = Stamped(value: (), sequence: sequence)
            Self.bound(&ares)
            Self.bound(&ended)
            guard s.are.isFinite else { return }
            var r = recent[s.tObs] ?? ([], 0, 0)
            if r.values.count < Self.medianWindow { r.values.append(s.are) } else { r.values[r.next] = s.are }
            r.next = (r.next + 1) % Self.medianWindow
            r.total += 1
            recent[s.tObs] = r
        case .parameters(let p):
            parameters += 1
            observed[WindowKey(cascade: p.cascade, tObs: p.tObs)] = Stamped(value: p.nObs, sequence: sequence)
            Self.bound(&observed)
        default:
            break
        }
    }

    /// Drops the older half of a table grown past ``capacity``.
    private static func bound<K, V: Sendable>(_ table: inout [K: Stamped<V>]) {
        guard table.count > capacity else { return }
        let cut = table.values.map(\.sequence).sorted()[table.count / 2]
        table = table.filter { $0.value.sequence >= cut }
    }

    /// Counts a record that could not be decoded.
    public mutating func countMalformed() { malformed += 1 }

    /// One row of the table.
    public struct Row: Sendable, Equatable {
        public var forecast: Forecast
        /// Events observed at the window end (from parameters), when known.
        public var observed: Int?
        /// The forecast's ARE once the cascade ended (from stats), when known.
        public var are: Double?
    }

    /// The `k` cascades with the largest latest forecast (ties: smaller cascade id first);
    /// ended cascades (with a stat) only when `includeEnded`.
    public func top(_ k: Int, includeEnded: Bool = false) -> [Row] {
        let candidates = forecasts.values.lazy.map(\.value).filter { includeEnded || ended[$0.cascade] == nil }
        let sorted = candidates.sorted { ($0.forecast, $1.cascade) > ($1.forecast, $0.cascade) }
        return sorted.prefix(k).map { f in
            let key = WindowKey(cascade: f.cascade, tObs: f.tObs)
            return Row(forecast: f, observed: observed[key]?.value, are: ares[key]?.value)
        }
    }

    /// Cascades with a forecast that have not ended.
    public var running: Int { forecasts.keys.count(where: { ended[$0] == nil }) }

    /// The median of the recent ARE values of each window, with the number of stats seen.
    public var medianARE: [(tObs: Int, stats: Int, median: Double)] {
        recent.keys.sorted().map { w in
            let r = recent[w]!
            return (w, r.total, Self.median(r.values))
        }
    }

    /// The median (the mean of the two middle values for an even count).
    public static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return .nan }
        let s = values.sorted()
        let n = s.count
        return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
    }

    /// The table, `width` columns wide at most (minimum 60).
    public func render(k: Int, width: Int = 80, includeEnded: Bool = false) -> String {
        let width = max(width, 60)
        let rows = top(k, includeEnded: includeEnded)
        var lines: [String] = []
        let pool = includeEnded ? forecasts.count : running
        lines.append("top \(rows.count) of \(pool) \(includeEnded ? "" : "running ")cascades by forecast")
        if rows.isEmpty {
            lines.append(forecasts.isEmpty ? "no forecasts yet"
                         : "every cascade read has ended (its stat arrived); --all lists them with their ARE")
        } else {
            let idWidth = max(7, rows.map { String($0.forecast.cascade).count }.max()!)
            var header = Self.right("#", 3) + " " + Self.right("cascade", idWidth) + " " + Self.right("T_obs", 6) + " "
                + Self.right("observed", 9) + " " + Self.right("forecast", 10)
            if includeEnded { header += " " + Self.right("ARE", 6) }
            header += "  "
            let messageWidth = max(0, width - 1 - header.count)
            lines.append(header + "message")
            for (i, row) in rows.enumerated() {
                var line = Self.right("\(i + 1)", 3) + " " + Self.right(String(row.forecast.cascade), idWidth) + " "
                    + Self.right(String(row.forecast.tObs), 6) + " " + Self.right(row.observed.map(String.init) ?? "-", 9)
                    + " " + Self.right(Self.fixed(row.forecast.forecast, 1), 10)
                if includeEnded { line += " " + Self.right(row.are.map { Self.fixed($0, 2) } ?? "-", 6) }
                line += "  " + Self.clip(row.forecast.msg, messageWidth)
                while line.last == " " { line.removeLast() }
                lines.append(line)
            }
        }
        lines.append("")
        let medians = medianARE
        if medians.isEmpty {
            lines.append("median ARE per window: no stats yet")
        } else {
            lines.append("median ARE per window (last \(Self.medianWindow) stats of each)")
            lines.append(Self.right("T_obs", 6) + " " + Self.right("stats", 8) + " " + Self.right("median ARE", 11))
            for m in medians {
                lines.append(Self.right(String(m.tObs), 6) + " " + Self.right(String(m.stats), 8) + " "
                             + Self.right(Self.fixed(m.median, 3), 11))
            }
        }
        var read = "read \(alerts) alerts, \(stats) stats, \(parameters) parameters"
        if malformed > 0 { read += "; \(malformed) malformed line\(malformed == 1 ? "" : "s") skipped" }
        lines.append(read)
        return lines.map { Self.clip($0, width - 1) }.joined(separator: "\n") + "\n"
    }

    static func right(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
    }

    /// `x` with `digits` decimals, rounded half away from zero (no Foundation formatting).
    public static func fixed(_ x: Double, _ digits: Int) -> String {
        guard x.isFinite else { return x.isNaN ? "nan" : (x < 0 ? "-inf" : "inf") }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let scaled = (abs(x) * scale).rounded(.toNearestOrAwayFromZero)
        guard scaled < 9e15 else { return String(x) }
        let n = Int64(scaled)
        let p = Int64(scale)
        let intPart = n / p, frac = n % p
        var text = String(intPart)
        if digits > 0 {
            let f = String(frac)
            text += "." + String(repeating: "0", count: digits - f.count) + f
        }
        return (x < 0 && n != 0 ? "-" : "") + text
    }

    /// A message made printable in a fixed-width column: control characters become spaces,
    /// characters that may be wide or invisible in a terminal become `?`, and a text longer
    /// than `width` is cut with `...`.
    static func clip(_ text: String, _ width: Int) -> String {
        var chars: [Character] = []
        for scalar in text.unicodeScalars {
            let v = scalar.value
            if v < 0x20 || v == 0x7F || (0x80..<0xA0).contains(v) { chars.append(" ") }
            else if v < 0x7F || (0xA0...0x24F).contains(v) { chars.append(Character(scalar)) }
            else { chars.append("?") }
        }
        if chars.count <= width { return String(chars) }
        if width <= 3 { return String(chars.prefix(width)) }
        return String(chars.prefix(width - 3)) + "..."
    }
}

/// A source of `top`: a JSON-lines file followed like `tail -f`, or a Kafka topic.
public enum TopSource: Sendable, CustomStringConvertible {
    case file(String)
    case kafka(brokers: String, topic: String)

    /// `kafka://host:port[,host:port...]/topic`, else a file path.
    public init(_ text: String) throws {
        if text.hasPrefix("kafka://") {
            let rest = text.dropFirst("kafka://".count)
            guard let slash = rest.firstIndex(of: "/"), slash != rest.startIndex,
                  !rest[rest.index(after: slash)...].isEmpty else {
                throw TopError("\(text): expected kafka://host:port/topic")
            }
            self = .kafka(brokers: String(rest[..<slash]), topic: String(rest[rest.index(after: slash)...]))
        } else {
            guard !text.isEmpty else { throw TopError("empty source") }
            self = .file(text)
        }
    }

    public var description: String {
        switch self {
        case .file(let p): p
        case .kafka(let b, let t): "kafka://\(b)/\(t)"
        }
    }
}

public struct TopError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}

/// Reads a growing file's complete lines (a truncated file is read again from the start).
final class FileFollower {
    let path: String
    private var fd: Int32 = -1
    private var offset: off_t = 0
    private var partial: [UInt8] = []

    init(path: String) { self.path = path }
    deinit { if fd >= 0 { close(fd) } }

    /// The complete lines written since the last call; with `final`, a last line without its
    /// newline too. Throws when the file cannot be opened and `mustExist`.
    func read(mustExist: Bool, final: Bool, _ body: (ArraySlice<UInt8>) -> Void) throws {
        if fd < 0 {
            fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd < 0 {
                if mustExist { throw TopError("cannot open \(path): \(String(cString: strerror(errno)))") }
                return
            }
        }
        var st = stat()
        if fstat(fd, &st) == 0, st.st_size < offset {
            offset = 0  // truncated: a new run of the daemon rewrote the file
            partial = []
        }
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress!, $0.count, offset) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            offset += off_t(n)
            partial += chunk[0..<n]
            var start = partial.startIndex
            while let nl = partial[start...].firstIndex(of: 0x0A) {
                body(partial[start..<nl])
                start = nl + 1
            }
            partial.removeSubrange(..<start)
        }
        if final, !partial.isEmpty {
            body(partial[...])
            partial = []
        }
    }
}

/// `tweetoscoped top` itself.
public enum TopCommand {
    public struct Options: Sendable {
        public var sources: [TopSource]
        public var k = 10
        public var interval = 2.0
        public var once = false
        public var includeEnded = false
        public var width: Int?

        public init(sources: [TopSource]) { self.sources = sources }
    }

    /// Runs until interrupted (or once with `once`); returns the exit status.
    /// The board and the first Kafka failure, shared with the Kafka readers.
    final class Shared: Sendable {
        let board = Mutex(TopBoard())
        let failure = Mutex<String?>(nil)
    }

    public static func run(_ options: Options) async throws {
        let shared = Shared()
        let board = shared
        let files = options.sources.compactMap { s -> FileFollower? in
            if case .file(let p) = s { return FileFollower(path: p) }
            return nil
        }
        // Kafka sources: one consumer each, from the beginning of the topic.
        var readers: [Task<Void, Never>] = []
        for case .kafka(let brokers, let topic) in options.sources {
            readers.append(Task {
                do {
                    try await readKafka(brokers: brokers, topic: topic, untilEnd: options.once, board: shared)
                } catch {
                    shared.failure.withLock { $0 = $0 ?? "\(error)" }
                }
            })
        }
        let width = options.width ?? terminalWidth() ?? 80
        if options.once {
            for f in files { try f.read(mustExist: true, final: true) { line in board.board.withLock { $0.ingest(line: line) } } }
            for r in readers { await r.value }
            if let error = shared.failure.withLock({ $0 }) { throw TopError(error) }
            print(board.board.withLock { $0.render(k: options.k, width: width, includeEnded: options.includeEnded) }, terminator: "")
            return
        }
        defer { readers.forEach { $0.cancel() } }
        while true {
            for f in files { try f.read(mustExist: false, final: false) { line in board.board.withLock { $0.ingest(line: line) } } }
            // A failed Kafka reader (a bad address...) ends the view instead of showing an empty table.
            if let error = shared.failure.withLock({ $0 }) { throw TopError(error) }
            let table = board.board.withLock { $0.render(k: options.k, width: width, includeEnded: options.includeEnded) }
            let sources = options.sources.map(\.description).joined(separator: ", ")
            let clock = StderrLogHandler.timestamp().prefix(19).replacingT()
            print("\u{1B}[H\u{1B}[2J" + "tweetoscoped top  \(clock)  \(String(sources.prefix(max(0, width - 40))))\n" + table,
                  terminator: "")
            fflush(nil)
            try await Task.sleep(for: .milliseconds(Int64(options.interval * 1000)))
        }
    }

    /// Reads `topic` from its beginning into `board`; with `untilEnd`, returns once every
    /// partition is at its end.
    static func readKafka(brokers: String, topic: String, untilEnd: Bool, board: Shared) async throws {
        let config = [
            "bootstrap.servers": brokers, "group.id": "tweetoscoped-top-\(getpid())-\(UInt32.random(in: 0...UInt32.max))",
            "auto.offset.reset": "earliest", "enable.partition.eof": untilEnd ? "true" : "false",
        ]
        let logger = Logger(label: "tweetoscoped.top")
        let consumer = try KafkaConsumer(config: config, logger: logger)
        do {
            try await follow(consumer, brokers: brokers, topic: topic, untilEnd: untilEnd, board: board)
        } catch {
            await consumer.close()
            throw error
        }
        await consumer.close()
    }

    private static func follow(_ consumer: KafkaConsumer, brokers: String, topic: String, untilEnd: Bool,
                               board: Shared) async throws {
        try consumer.subscribe([topic])
        var ends: Set<TopicPartition> = []
        let start = ContinuousClock.now
        while !Task.isCancelled {
            let polled = await consumer.poll(max: 4096, timeout: .milliseconds(200))
            if let error = polled.errors.first(where: { $0.isFatal }) {
                throw TopError("kafka://\(brokers)/\(topic): \(error.message)")
            }
            board.board.withLock { b in
                for r in polled.records {
                    guard let value = r.value else { continue }
                    do {
                        b.ingest(try WireFormat.decode(value, key: r.key.map { String(decoding: $0, as: UTF8.self) }))
                    } catch {
                        b.countMalformed()
                    }
                }
            }
            guard untilEnd else { continue }
            for r in polled.records { ends.remove(r.topicPartition) }
            for e in polled.endOfPartition { ends.insert(e.partition) }
            let assigned = consumer.assignment
            if !assigned.isEmpty, polled.records.isEmpty, assigned.isSubset(of: ends) { return }
            if assigned.isEmpty, ContinuousClock.now - start > .seconds(30) {
                throw TopError("kafka://\(brokers)/\(topic): no partition assigned after 30 s (is the broker up and the topic there?)")
            }
        }
    }

    /// Columns of the terminal on stdout, if it is one.
    static func terminalWidth() -> Int? {
        guard isatty(STDOUT_FILENO) == 1 else { return nil }
        var ws = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &ws) == 0, ws.ws_col > 0 else { return nil }
        return Int(ws.ws_col)
    }
}

extension Substring {
    fileprivate func replacingT() -> String { String(map { $0 == "T" ? " " : $0 }) }
}
