// Loading a cascade dataset into compact arrays: the long format (`cascade,t,m`) and the course's
// pair of files (`time,magnitude[,msg]` rows + `start_ind,end_ind` index), spec §2.1.

import TweetoscopeCore

/// Every cascade of a data file: an index in memory (per cascade: id and row range), the rows in
/// a ``RowStore`` (a scratch file), read back one cascade at a time by the replay.
///
/// Cascade `c` owns rows `starts[c] ..< ends[c]`. A row whose time is NaN was rejected while
/// loading and is skipped by the replay (course format only: rows are kept so that index row
/// numbers stay valid). Every cascade holds at least one valid row.
struct Dataset: Sendable {
    /// Event times in seconds since the cascade's first event (course: already rounded),
    /// magnitudes, and the optional message column (course format with 3 columns).
    let rows: RowStore
    var starts: [Int] = []
    var ends: [Int] = []
    var ids: [CascadeID] = []
    /// Valid events across all cascades.
    var events = 0

    /// - Throws: ``ReplayError`` when the scratch file cannot be created.
    init() throws { rows = try RowStore() }

    var cascadeCount: Int { ids.count }
    var hasMessages: Bool { rows.hasMessages }

    /// The valid rows of cascade `c` (rejected rows left out), read from the scratch file.
    /// - Throws: ``ReplayError`` for an I/O error on the scratch file.
    func cascade(_ c: Int) throws -> RowStore.Rows {
        var all = try rows.load(starts[c]..<ends[c])
        guard all.times.contains(where: { $0.isNaN }) else { return all }
        var kept = RowStore.Rows()
        if all.messages != nil { kept.messages = [] }
        for k in all.times.indices where !all.times[k].isNaN {
            kept.times.append(all.times[k])
            kept.magnitudes.append(all.magnitudes[k])
            kept.messages?.append(all.messages![k])
        }
        all = kept
        return all
    }
}

/// A parser fed line by line (``LongFormatParser``, ``CourseRowsParser``, ``CourseIndexParser``).
protocol LineParser {
    /// Parses one line, reporting a rejected record to `reject`.
    /// - Throws: ``ReplayError`` for a problem that stops the source (a bad header...).
    mutating func consume(_ line: Line, reject: (Rejection) -> Void) throws
}

/// A record rejected while parsing: why, where, the raw record (valid during the callback only).
struct Rejection {
    /// The counter suffix (``RejectReason`` or a replay-specific name).
    var reason: String
    /// The file and its 1-based line.
    var file: String
    var line: Int
    /// What is wrong, for the log.
    var detail: String
    /// The record's bytes (for an oversized line, its first bytes).
    var raw: UnsafeBufferPointer<UInt8>
}

/// Whether a data line is valid UTF-8 (lines are almost always ASCII: checked byte-wise first).
@inline(__always)
private func isUTF8(_ line: UnsafeBufferPointer<UInt8>) -> Bool {
    for b in line where b >= 0x80 { return UTF8Validation.isValid(line) }
    return true
}

/// Checks an event's time and magnitude (finite already): the reason and detail of a problem.
@inline(__always)
private func eventProblem(time t: Double, magnitude m: Double, timeText: String = "time")
    -> (reason: String, detail: String)?
{
    if t < 0 { return (RejectReason.negative, "negative \(timeText) \(t)") }
    if m < 0 { return (RejectReason.negative, "negative magnitude \(m)") }
    if t > InputLimits.maxTime { return (RejectReason.outOfRange, "\(timeText) \(t) s is beyond \(InputLimits.maxTime) s") }
    if m > InputLimits.maxMagnitude { return (RejectReason.outOfRange, "magnitude \(m) is beyond \(InputLimits.maxMagnitude)") }
    return nil
}

/// The row `<digits>,<digits>,<digits>` (1 to 15 digits each, nothing else: SEISMIC's every
/// row) read in one pass: the cascade id, time and magnitude, the same values as the general
/// path gives them (an integer of at most 15 digits is a Double exactly); nil for any other
/// line, which takes the general path with its checks and rejection reasons. Issue 17: the
/// general path (blank and UTF-8 checks, field split, three number parsers) was ~14 % of the
/// collector configuration's CPU, on the load's critical path.
@inline(__always)
private func plainRow(_ line: UnsafeBufferPointer<UInt8>) -> (Int64, Double, Double)? {
    let n = line.count
    var i = 0
    var values: (Int64, Int64, Int64) = (0, 0, 0)
    for field in 0..<3 {
        var v: Int64 = 0
        let first = i
        while i < n {
            let d = line[i] &- 0x30
            if d >= 10 { break }
            v = v &* 10 &+ Int64(d)
            i += 1
        }
        guard i > first && i - first <= 15 else { return nil }
        switch field {
        case 0: values.0 = v
        case 1: values.1 = v
        default: values.2 = v
        }
        if field < 2 {
            guard i < n && line[i] == 0x2C else { return nil }
            i += 1
        }
    }
    guard i == n else { return nil }
    return (values.0, Double(values.1), Double(values.2))
}

/// Parses a long-format file line by line: header `cascade,t,m`, rows contiguous per cascade,
/// times non-decreasing within a cascade. Bad rows are reported and skipped: `oversized`,
/// `invalid_utf8`, `invalid_csv` (not 3 fields), `wrong_type`, `non_finite`, `out_of_range`
/// (cascade id beyond 64 bits, time or magnitude above ``InputLimits``), `negative`,
/// `not_contiguous` (a cascade resumed after another one), `out_of_order` (time before the
/// previous row of the cascade). Blank lines are ignored.
struct LongFormatParser: LineParser {
    let path: String
    private var data: Dataset
    private var seen = Set<CascadeID>()
    /// The id of the cascade being read (ids of this format are integers: compared as such, the
    /// Optional<CascadeID> comparison of every row was ~1 % of the load).
    private var current: Int64? = nil
    private var lastTime = 0.0
    private var fields: [UnsafeBufferPointer<UInt8>] = []
    private var headerChecked = false

    /// - Throws: ``ReplayError`` when the scratch file for the rows cannot be created.
    init(path: String) throws {
        self.path = path
        data = try Dataset()
        fields.reserveCapacity(3)
    }

    /// Parses one line. - Throws: ``ReplayError`` for a first line that is not the header, or an
    /// I/O error on the scratch file.
    mutating func consume(_ line: Line, reject: (Rejection) -> Void) throws {
        let bytes = line.bytes
        func skip(_ reason: String, _ detail: String) {
            reject(Rejection(reason: reason, file: path, line: line.number, detail: detail, raw: bytes))
        }
        if !headerChecked {
            let header = text(bytes).filter { $0 != " " && $0 != "\t" }
            guard !line.oversized, header == "cascade,t,m" else {
                throw ReplayError("\(path):1: expected the header \"cascade,t,m\", found \(String(text(bytes).prefix(80)).debugDescription)")
            }
            headerChecked = true
            return
        }
        if line.oversized { return skip(RejectReason.oversized, "line of \(line.length) bytes is longer than max_record_bytes") }
        let number: Int64, t: Double, m: Double
        if let row = plainRow(bytes) {
            (number, t, m) = row
        } else {
            if isBlank(bytes) { return }
            guard isUTF8(bytes) else { return skip(RejectReason.invalidUTF8, "invalid UTF-8") }
            let commas = splitFields(bytes, into: &fields, max: 3)
            guard commas == 2 else { return skip(RejectReason.invalidCSV, "expected 3 fields, found \(commas + 1)") }
            do throws(NumberProblem) {
                number = try parseInt(fields[0])
                t = try parseDouble(fields[1])
                m = try parseDouble(fields[2])
            } catch {
                return skip(error.reason, "cascade, t and m must be finite numbers (cascade an integer)")
            }
        }
        if let (reason, detail) = eventProblem(time: t, magnitude: m) { return skip(reason, detail) }
        if number != current {
            let id = CascadeID(number)
            guard !seen.contains(id) else { return skip("not_contiguous", "cascade \(id) continues after another cascade") }
            if current != nil { data.ends.append(data.rows.count) }
            seen.insert(id)
            data.ids.append(id)
            data.starts.append(data.rows.count)
            current = number
        } else if t < lastTime {
            return skip(RejectReason.outOfOrder, "time \(t) before \(lastTime) in cascade \(number)")
        }
        lastTime = t
        try data.rows.append(time: t, magnitude: m)
    }

    /// The cascades read before a read error cut the file: every cascade but the last one (whose
    /// end the error may have cut off), and the number of events of the dropped one.
    /// - Throws: ``ReplayError`` when not even the header was read.
    mutating func finishTruncated() throws -> (data: Dataset, droppedEvents: Int) {
        guard headerChecked else { throw ReplayError("\(path):1: empty file, expected the header \"cascade,t,m\"") }
        var dropped = 0
        if current != nil {
            let start = data.starts.removeLast()
            data.ids.removeLast()
            dropped = data.rows.count - start
        }
        data.events = data.ends.last ?? 0
        current = nil
        return (data, dropped)
    }

    /// The dataset. - Throws: ``ReplayError`` for an empty file (no header).
    mutating func finish() throws -> Dataset {
        guard headerChecked else { throw ReplayError("\(path):1: empty file, expected the header \"cascade,t,m\"") }
        if current != nil { data.ends.append(data.rows.count) }
        data.events = data.rows.count
        current = nil
        return data
    }
}

/// Parses the rows of a course data file (`time,magnitude[,msg]`) line by line. Every line after
/// the header is a row (the index addresses rows by number): a rejected row is kept with a NaN
/// time. Times are rounded to whole seconds: round(time × secondsPerTimeUnit), half up (as the
/// course generator). Reasons: `oversized`, `invalid_utf8`, `invalid_csv`, `wrong_type`,
/// `non_finite`, `negative`, `out_of_range`.
struct CourseRowsParser: LineParser {
    let path: String
    let secondsPerTimeUnit: Double
    private var data: Dataset
    private var fields: [UnsafeBufferPointer<UInt8>] = []
    private var columns = 0
    /// The unquoted message of the current row.
    private var message: [UInt8] = []

    /// - Throws: ``ReplayError`` when the scratch file for the rows cannot be created.
    init(path: String, secondsPerTimeUnit: Double) throws {
        self.path = path
        self.secondsPerTimeUnit = secondsPerTimeUnit
        data = try Dataset()
        fields.reserveCapacity(3)
    }

    private mutating func dropRow() throws {
        try data.rows.append(time: .nan, magnitude: 0, message: nil)
    }

    /// Parses one line. - Throws: ``ReplayError`` for a bad header, or an I/O error on the
    /// scratch file.
    mutating func consume(_ line: Line, reject: (Rejection) -> Void) throws {
        let bytes = line.bytes
        if columns == 0 {
            let header = text(bytes)
            let commas = header.utf8.count(where: { $0 == 0x2C })
            guard !line.oversized, commas == 1 || commas == 2 else {
                throw ReplayError("\(path):1: expected a header with 1 or 2 commas (time,magnitude[,msg]), found \(String(header.prefix(80)).debugDescription)")
            }
            columns = commas + 1
            if columns == 3 { try data.rows.keepMessages() }
            return
        }
        func skip(_ reason: String, _ detail: String) throws {
            reject(Rejection(reason: reason, file: path, line: line.number, detail: detail, raw: bytes))
            try dropRow()
        }
        if line.oversized { return try skip(RejectReason.oversized, "line of \(line.length) bytes is longer than max_record_bytes") }
        guard isUTF8(bytes) else { return try skip(RejectReason.invalidUTF8, "invalid UTF-8") }
        let commas = splitFields(bytes, into: &fields, max: columns)
        guard columns == 3 ? commas >= 2 : commas == 1 else {
            return try skip(RejectReason.invalidCSV, "expected \(columns) fields, found \(isBlank(bytes) ? 0 : commas + 1)")
        }
        let t: Double, m: Double
        do throws(NumberProblem) {
            t = try parseDouble(fields[0])
            m = try parseDouble(fields[1])
        } catch {
            return try skip(error.reason, "time and magnitude must be finite numbers")
        }
        let seconds = (t * secondsPerTimeUnit + 0.5).rounded(.down)
        if t < 0 || m < 0 { return try skip(RejectReason.negative, "negative \(t < 0 ? "time \(t)" : "magnitude \(m)")") }
        guard seconds.isFinite else { return try skip(RejectReason.outOfRange, "time \(t) × seconds_per_time_unit is not finite") }
        if let (reason, detail) = eventProblem(time: seconds, magnitude: m, timeText: "time \(t) × seconds_per_time_unit =") {
            return try skip(reason, detail)
        }
        if columns == 3 {
            message.removeAll(keepingCapacity: true)
            DatasetLoader.appendMessage(trimmed(fields[2]), to: &message)
            try message.withUnsafeBytes { try data.rows.append(time: seconds, magnitude: m, message: $0) }
        } else {
            try data.rows.append(time: seconds, magnitude: m)
        }
    }

    /// The rows. - Throws: ``ReplayError`` for an empty file (no header).
    func finish() throws -> Dataset {
        guard columns > 0 else { throw ReplayError("\(path):1: empty file, expected the header time,magnitude[,msg]") }
        return data
    }
}

/// Parses a course index file (`start_ind,end_ind`: 1-based inclusive row ranges of the data
/// file) over the rows of ``CourseRowsParser``; each accepted range is a cascade whose id is its
/// position among the index rows. Reasons: `oversized`, `invalid_csv`, `wrong_type`,
/// `out_of_range`, `index_range` (outside the data rows), `index_overlap` (rows of an earlier
/// cascade), `empty_cascade` (every row rejected); data rows whose time is before the previous
/// kept row of their cascade are dropped as `out_of_order` (reported at the data file's line,
/// with the row's parsed values as its record).
struct CourseIndexParser: LineParser {
    let path: String
    let dataPath: String
    private var data: Dataset
    private let rows: Int
    /// One bit per data row: rows already owned by an accepted cascade.
    private var used: [UInt64]
    private var fields: [UnsafeBufferPointer<UInt8>] = []
    private var headerChecked = false
    private var position: Int64 = -1

    init(path: String, dataPath: String, rows data: Dataset) {
        self.path = path
        self.dataPath = dataPath
        self.data = data
        rows = data.rows.count
        used = [UInt64](repeating: 0, count: rows / 64 + 1)
    }

    /// Parses one line. - Throws: ``ReplayError`` for a bad header, or an I/O error on the
    /// scratch file.
    mutating func consume(_ line: Line, reject: (Rejection) -> Void) throws {
        let bytes = line.bytes
        if !headerChecked {
            let header = text(bytes)
            guard !line.oversized, header.utf8.count(where: { $0 == 0x2C }) == 1 else {
                throw ReplayError("\(path):1: expected the header \"start_ind,end_ind\", found \(String(header.prefix(80)).debugDescription)")
            }
            headerChecked = true
            return
        }
        func skip(_ reason: String, _ detail: String) {
            reject(Rejection(reason: reason, file: path, line: line.number, detail: detail, raw: bytes))
        }
        if line.oversized {
            position += 1
            return skip(RejectReason.oversized, "line of \(line.length) bytes is longer than max_record_bytes")
        }
        if isBlank(bytes) { return }
        position += 1
        let commas = splitFields(bytes, into: &fields, max: 2)
        guard commas == 1 else { return skip(RejectReason.invalidCSV, "expected 2 fields, found \(commas + 1)") }
        let first: Int64, last: Int64
        do throws(NumberProblem) {
            first = try parseInt(fields[0])
            last = try parseInt(fields[1])
        } catch {
            return skip(error.reason, "start_ind and end_ind must be integers")
        }
        guard first >= 1, last >= first, last <= Int64(rows) else {
            return skip("index_range", "range \(first)...\(last) is not within rows 1...\(rows)")
        }
        let lo = Int(first) - 1, hi = Int(last)  // half-open, 0-based
        if DatasetLoader.rangeIsUsed(used, lo, hi) {
            return skip("index_overlap", "range \(first)...\(last) overlaps an earlier cascade")
        }
        DatasetLoader.markUsed(&used, lo, hi)
        // Times must not decrease within the cascade; rows breaking that are dropped.
        var count = 0
        var lastTime = -Double.infinity
        // Read in chunks: memory stays bounded whatever the range.
        for chunk in stride(from: lo, to: hi, by: 1 << 16) {
            let range = try data.rows.load(chunk..<min(chunk + (1 << 16), hi))
            for k in range.times.indices where !range.times[k].isNaN {
                let r = chunk + k, t = range.times[k]
                if t < lastTime {
                    var record = "\(t),\(range.magnitudes[k])"
                    record.withUTF8 { raw in
                        reject(Rejection(reason: RejectReason.outOfOrder, file: dataPath, line: r + 2,
                                         detail: "time \(t) before \(lastTime) in the cascade of \(path):\(line.number)",
                                         raw: raw))
                    }
                    try data.rows.setTime(r, .nan)
                    continue
                }
                lastTime = t
                count += 1
            }
        }
        guard count > 0 else { return skip("empty_cascade", "every row of range \(first)...\(last) was rejected") }
        data.ids.append(CascadeID(position))
        data.starts.append(lo)
        data.ends.append(hi)
        data.events += count
    }

    /// The dataset. - Throws: ``ReplayError`` for an empty index file (no header).
    func finish() throws -> Dataset {
        guard headerChecked else { throw ReplayError("\(path):1: empty file, expected the header \"start_ind,end_ind\"") }
        return data
    }
}

/// Loads datasets from files, reporting the rejected rows to a ``RejectedRecords`` (counted,
/// logged, dead letters flushed at least every ``RejectedRecords/flushThreshold`` rows).
enum DatasetLoader {
    /// Loads a long-format file (see ``LongFormatParser``).
    /// - Throws: ``ReplayError`` for I/O errors, a bad header, an empty file.
    static func loadLong(path: String, maxRecordBytes: Int, rejected: RejectedRecords) async throws -> Dataset {
        let (data, readError) = try await loadLongKeepingWhatWasRead(path: path, maxRecordBytes: maxRecordBytes, rejected: rejected)
        if let readError { throw readError.error }
        return data
    }

    /// What a read error cut from a long-format file: the error, and the cascade it cut (dropped:
    /// its last events may be missing).
    struct Truncation {
        var error: any Error
        var droppedEvents: Int
    }

    /// Loads a long-format file; a read error in the middle of it (a truncated gzip stream, an I/O
    /// error) keeps the whole cascades read before it and returns the error beside them.
    /// - Throws: ``ReplayError`` for a bad header or an empty file, or a read error before the
    ///   header was read.
    static func loadLongKeepingWhatWasRead(path: String, maxRecordBytes: Int, rejected: RejectedRecords)
        async throws -> (Dataset, Truncation?) {
        var parser = try LongFormatParser(path: path)
        if let readError = try await parse(path, maxRecordBytes, rejected, &parser) {
            let (data, dropped) = try parser.finishTruncated()
            return (data, Truncation(error: readError, droppedEvents: dropped))
        }
        return (try parser.finish(), nil)
    }

    /// Loads the course's pair of files (see ``CourseRowsParser`` and ``CourseIndexParser``).
    /// - Throws: ``ReplayError`` for I/O errors, bad headers, empty files.
    static func loadCourse(path: String, index: String, secondsPerTimeUnit: Double, maxRecordBytes: Int,
                           rejected: RejectedRecords) async throws -> Dataset {
        var rows = try CourseRowsParser(path: path, secondsPerTimeUnit: secondsPerTimeUnit)
        if let readError = try await parse(path, maxRecordBytes, rejected, &rows) { throw readError }
        var cascades = CourseIndexParser(path: index, dataPath: path, rows: try rows.finish())
        if let readError = try await parse(index, maxRecordBytes, rejected, &cascades) { throw readError }
        return try cascades.finish()
    }

    /// Feeds every line of `path` to `parser`, reporting rejections, flushing dead letters.
    /// - Returns: nil once the whole file was read, or the read error that stopped reading (the
    ///   lines before it were fed to the parser).
    /// - Throws: an error opening the file, or a parser's error (a bad header...).
    private static func parse<P: LineParser>(_ path: String, _ maxRecordBytes: Int, _ rejected: RejectedRecords,
                                             _ parser: inout P) async throws -> (any Error)? {
        let file = try ByteFile(path: path)
        // A compressed file is decoded on a thread of its own, beside the parsing.
        var reader = LineReader(file.compressed ? ReadAhead.wrap(file) : file, maxLineBytes: maxRecordBytes)
        var more = true
        var readError: (any Error)?
        while more {
            more = try parseSome(&reader, rejected, &parser, readError: &readError)
            await rejected.flush()
        }
        return readError
    }

    /// Parses lines until the end of the input (returns false) or until the dead letters need a
    /// flush (returns true; checked every 256 lines). Synchronous and specialized, so that the
    /// hot loop stays tight.
    @inline(never)
    private static func parseSome<P: LineParser>(_ reader: inout LineReader, _ rejected: RejectedRecords,
                                                 _ parser: inout P, readError: inout (any Error)?) throws -> Bool {
        // Unowned: the caller keeps `rejected` alive; this saves a retain and release per line.
        unowned(unsafe) let sink = rejected
        while true {
            let next: Line?
            do { next = try reader.next() } catch { readError = error; return false }
            guard let line = next else { break }
            try parser.consume(line) { r in
                sink.reject(r.reason, location: "\(r.file):\(r.line)", detail: r.detail, raw: r.raw)
            }
            if line.number & 255 == 0 && rejected.needsFlush { return true }
        }
        return false
    }

    /// Appends a message field, unquoting a CSV-quoted value (`"a ""b"""` → `a "b"`).
    static func appendMessage(_ field: UnsafeBufferPointer<UInt8>, to pool: inout [UInt8]) {
        guard field.count >= 2, field.first == 0x22, field.last == 0x22 else {
            pool.append(contentsOf: field)
            return
        }
        var k = 1
        while k < field.count - 1 {
            pool.append(field[k])
            if field[k] == 0x22 && k + 1 < field.count - 1 && field[k + 1] == 0x22 { k += 1 }
            k += 1
        }
    }

    static func rangeIsUsed(_ bits: [UInt64], _ lo: Int, _ hi: Int) -> Bool {
        var r = lo
        while r < hi {
            if r & 63 == 0 && hi - r >= 64 {
                if bits[r >> 6] != 0 { return true }
                r += 64
            } else {
                if bits[r >> 6] & (1 << UInt64(r & 63)) != 0 { return true }
                r += 1
            }
        }
        return false
    }

    static func markUsed(_ bits: inout [UInt64], _ lo: Int, _ hi: Int) {
        var r = lo
        while r < hi {
            if r & 63 == 0 && hi - r >= 64 {
                bits[r >> 6] = ~0
                r += 64
            } else {
                bits[r >> 6] |= 1 << UInt64(r & 63)
                r += 1
            }
        }
    }
}
