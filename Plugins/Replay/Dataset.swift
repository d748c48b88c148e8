// Loading a cascade dataset into compact arrays: the long format (`cascade,t,m`) and the course's
// pair of files (`time,magnitude[,msg]` rows + `start_ind,end_ind` index), spec §2.1.

import TweetoscopeCore

/// A growable column of doubles stored in fixed-size chunks, so that growing it never copies nor
/// over-allocates more than one chunk (a plain array doubles its capacity: up to 2× the memory,
/// plus the old buffer while copying).
struct Column: Sendable {
    private static let shift = 16
    private static let chunkSize = 1 << shift
    private static let mask = chunkSize - 1
    private var chunks: [[Double]] = []
    private(set) var count = 0

    mutating func append(_ value: Double) {
        if count & Self.mask == 0 {
            var chunk: [Double] = []
            chunk.reserveCapacity(Self.chunkSize)
            chunks.append(chunk)
        }
        chunks[chunks.count - 1].append(value)
        count += 1
    }

    subscript(i: Int) -> Double {
        @inline(__always) get { chunks[i >> Self.shift][i & Self.mask] }
        set { chunks[i >> Self.shift][i & Self.mask] = newValue }
    }
}

/// Every cascade of a data file, events stored contiguously.
///
/// Cascade `c` owns rows `starts[c] ..< ends[c]` of `times`/`magnitudes`. A row whose time is NaN
/// was rejected while loading and is skipped by the replay (course format only: rows are kept so
/// that index row numbers stay valid). Every cascade holds at least one valid row.
struct Dataset: Sendable {
    /// Event times in seconds since the cascade's first event (course: already rounded).
    var times = Column()
    var magnitudes = Column()
    /// Optional message column (course format with 3 columns): bytes of row r are
    /// `messagePool[messageOffsets[r] ..< messageOffsets[r + 1]]`.
    var messageOffsets: [UInt32] = []
    var messagePool: [UInt8] = []
    var starts: [Int] = []
    var ends: [Int] = []
    var ids: [CascadeID] = []
    /// Valid events across all cascades.
    var events = 0

    var cascadeCount: Int { ids.count }
    var hasMessages: Bool { !messageOffsets.isEmpty }

    /// The message of row `r` ("None" when absent or empty).
    func message(_ r: Int) -> String {
        guard hasMessages else { return "None" }
        let lo = Int(messageOffsets[r]), hi = Int(messageOffsets[r + 1])
        guard hi > lo else { return "None" }
        return messagePool.withUnsafeBufferPointer { String(decoding: UnsafeBufferPointer(rebasing: $0[lo..<hi]), as: UTF8.self) }
    }
}

/// Reports one skipped record: counted as `rejected.<reason>` and logged (rate-limited) with file:line.
struct Rejecter {
    let context: StageContext
    let path: String

    func callAsFunction(_ reason: String, line: Int, _ message: String) {
        context.counters.reject(reason)
        context.warnRateLimited(reason, "\(path):\(line): \(message); row skipped")
    }
}

enum DatasetLoader {
    /// Largest accepted event time in seconds (about 31,700 years): keeps every source-clock
    /// time finite whatever the data.
    static let maxTime = 1e12

    /// Loads a long-format file: header `cascade,t,m`, rows contiguous per cascade.
    static func loadLong(path: String, context: StageContext) throws -> Dataset {
        let file = try ByteFile(path: path)
        let reject = Rejecter(context: context, path: path)
        var data = Dataset()
        var seen = Set<CascadeID>()
        var current: CascadeID? = nil
        var lastTime = 0.0
        var fields: [UnsafeBufferPointer<UInt8>] = []
        fields.reserveCapacity(3)
        var headerChecked = false
        try forEachLine(of: file) { line, number in
            if !headerChecked {
                let header = text(line).filter { $0 != " " && $0 != "\t" }
                guard header == "cascade,t,m" else {
                    throw ReplayError("\(path):1: expected the header \"cascade,t,m\", found \(String(text(line).prefix(80)).debugDescription)")
                }
                headerChecked = true
                return true
            }
            if isBlank(line) { return true }
            let commas = splitFields(line, into: &fields, max: 3)
            guard commas == 2 else {
                reject("field_count", line: number, "expected 3 fields, found \(commas + 1)")
                return true
            }
            let id: CascadeID, t: Double, m: Double
            do throws(NumberProblem) {
                id = try parseInt(fields[0])
                t = try parseDouble(fields[1])
                m = try parseDouble(fields[2])
            } catch {
                reject(error.reason, line: number, "cascade, t and m must be finite numbers (cascade an integer)")
                return true
            }
            guard t >= 0, m >= 0 else {
                reject("negative", line: number, "negative \(t < 0 ? "time \(t)" : "magnitude \(m)")")
                return true
            }
            guard t <= maxTime else {
                reject("too_large", line: number, "time \(t) s is beyond \(maxTime) s")
                return true
            }
            if id != current {
                guard !seen.contains(id) else {
                    reject("not_contiguous", line: number, "cascade \(id) continues after another cascade")
                    return true
                }
                if current != nil { data.ends.append(data.times.count) }
                seen.insert(id)
                data.ids.append(id)
                data.starts.append(data.times.count)
                current = id
            } else if t < lastTime {
                reject("time_backwards", line: number, "time \(t) before \(lastTime) in cascade \(id)")
                return true
            }
            lastTime = t
            data.times.append(t)
            data.magnitudes.append(m)
            return true
        }
        guard headerChecked else { throw ReplayError("\(path):1: empty file, expected the header \"cascade,t,m\"") }
        if current != nil { data.ends.append(data.times.count) }
        data.events = data.times.count
        return data
    }

    /// Loads the course's pair of files. Times are rounded to whole seconds:
    /// round(time × secondsPerTimeUnit) (half up, as the course generator).
    static func loadCourse(path: String, index: String, secondsPerTimeUnit: Double,
                           context: StageContext) throws -> Dataset {
        var data = try loadCourseRows(path: path, secondsPerTimeUnit: secondsPerTimeUnit, context: context)
        let rows = data.times.count
        let file = try ByteFile(path: index)
        let reject = Rejecter(context: context, path: index)
        let rowReject = Rejecter(context: context, path: path)
        // One bit per data row: rows already owned by an accepted cascade.
        var used = [UInt64](repeating: 0, count: rows / 64 + 1)
        var fields: [UnsafeBufferPointer<UInt8>] = []
        var headerChecked = false
        var position: CascadeID = -1
        try forEachLine(of: file) { line, number in
            if !headerChecked {
                let header = text(line)
                guard header.utf8.count(where: { $0 == 0x2C }) == 1 else {
                    throw ReplayError("\(index):1: expected the header \"start_ind,end_ind\", found \(String(header.prefix(80)).debugDescription)")
                }
                headerChecked = true
                return true
            }
            if isBlank(line) { return true }
            position += 1
            let commas = splitFields(line, into: &fields, max: 2)
            guard commas == 1 else {
                reject("field_count", line: number, "expected 2 fields, found \(commas + 1)")
                return true
            }
            let first: Int64, last: Int64
            do throws(NumberProblem) {
                first = try parseInt(fields[0])
                last = try parseInt(fields[1])
            } catch {
                reject(error.reason, line: number, "start_ind and end_ind must be integers")
                return true
            }
            guard first >= 1, last >= first, last <= Int64(rows) else {
                reject("index_range", line: number, "range \(first)...\(last) is not within rows 1...\(rows)")
                return true
            }
            let lo = Int(first) - 1, hi = Int(last)  // half-open, 0-based
            if rangeIsUsed(used, lo, hi) {
                reject("index_overlap", line: number, "range \(first)...\(last) overlaps an earlier cascade")
                return true
            }
            markUsed(&used, lo, hi)
            // Times must not decrease within the cascade; rows breaking that are dropped.
            var count = 0
            var lastTime = -Double.infinity
            for r in lo..<hi where !data.times[r].isNaN {
                if data.times[r] < lastTime {
                    rowReject("time_backwards", line: r + 2,
                              "time \(data.times[r]) before \(lastTime) in the cascade of \(index):\(number)")
                    data.times[r] = .nan
                    continue
                }
                lastTime = data.times[r]
                count += 1
            }
            guard count > 0 else {
                reject("empty_cascade", line: number, "every row of range \(first)...\(last) was rejected")
                return true
            }
            data.ids.append(position)
            data.starts.append(lo)
            data.ends.append(hi)
            data.events += count
            return true
        }
        guard headerChecked else { throw ReplayError("\(index):1: empty file, expected the header \"start_ind,end_ind\"") }
        return data
    }

    /// The rows of a course data file; rejected rows get a NaN time.
    private static func loadCourseRows(path: String, secondsPerTimeUnit: Double,
                                       context: StageContext) throws -> Dataset {
        let file = try ByteFile(path: path)
        let reject = Rejecter(context: context, path: path)
        var data = Dataset()
        var fields: [UnsafeBufferPointer<UInt8>] = []
        fields.reserveCapacity(3)
        var columns = 0
        func dropRow() {
            data.times.append(.nan)
            data.magnitudes.append(0)
            if columns == 3 { data.messageOffsets.append(UInt32(truncatingIfNeeded: data.messagePool.count)) }
        }
        try forEachLine(of: file) { line, number in
            if columns == 0 {
                let header = text(line)
                let commas = header.utf8.count(where: { $0 == 0x2C })
                guard commas == 1 || commas == 2 else {
                    throw ReplayError("\(path):1: expected a header with 1 or 2 commas (time,magnitude[,msg]), found \(String(header.prefix(80)).debugDescription)")
                }
                columns = commas + 1
                if columns == 3 { data.messageOffsets.append(0) }
                return true
            }
            // Every line is a row: the index addresses rows by their number.
            let commas = splitFields(line, into: &fields, max: columns)
            guard columns == 3 ? commas >= 2 : commas == 1 else {
                reject("field_count", line: number, "expected \(columns) fields, found \(isBlank(line) ? 0 : commas + 1)")
                dropRow()
                return true
            }
            let t: Double, m: Double
            do throws(NumberProblem) {
                t = try parseDouble(fields[0])
                m = try parseDouble(fields[1])
            } catch {
                reject(error.reason, line: number, "time and magnitude must be finite numbers")
                dropRow()
                return true
            }
            guard t >= 0, m >= 0 else {
                reject("negative", line: number, "negative \(t < 0 ? "time \(t)" : "magnitude \(m)")")
                dropRow()
                return true
            }
            let seconds = (t * secondsPerTimeUnit + 0.5).rounded(.down)
            guard seconds <= maxTime else {
                reject("too_large", line: number, "time \(t) × seconds_per_time_unit is beyond \(maxTime) s")
                dropRow()
                return true
            }
            data.times.append(seconds)
            data.magnitudes.append(m)
            if columns == 3 {
                appendMessage(trimmed(fields[2]), to: &data.messagePool)
                guard data.messagePool.count <= Int(UInt32.max) else {
                    throw ReplayError("\(path):\(number): the message column exceeds 4 GiB")
                }
                data.messageOffsets.append(UInt32(data.messagePool.count))
            }
            return true
        }
        guard columns > 0 else { throw ReplayError("\(path):1: empty file, expected the header time,magnitude[,msg]") }
        return data
    }

    /// Appends a message field, unquoting a CSV-quoted value (`"a ""b"""` → `a "b"`).
    private static func appendMessage(_ field: UnsafeBufferPointer<UInt8>, to pool: inout [UInt8]) {
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

    private static func rangeIsUsed(_ bits: [UInt64], _ lo: Int, _ hi: Int) -> Bool {
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

    private static func markUsed(_ bits: inout [UInt64], _ lo: Int, _ hi: Int) {
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
