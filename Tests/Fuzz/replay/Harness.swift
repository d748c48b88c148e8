// libFuzzer targets `replay_long` and `replay_course` (compiled with -D COURSE): the replay
// plugin's line reader and CSV parsers (Plugins/Replay/Input.swift, Dataset.swift) and the
// replay scheduler (Scheduler.swift) on arbitrary bytes; see scripts/fuzz.
//
// Input: the data file; for the course format, the data file, a NUL byte, then the index file
// (without a NUL byte, a fixed index is used). The reader's chunk size and line limit are derived
// from the input length, so that buffer boundaries fall everywhere.
//
// Properties checked beyond "no crash": every dataset invariant the replay relies on (ranges
// inside the rows, at least one valid row per cascade, non-decreasing valid times within a
// cascade, times and magnitudes within InputLimits, the event count), and the replay emits each
// valid event exactly once with non-decreasing times per source.
import Glibc
import TweetoscopeCore

final class MemorySource: ByteSource {
    let bytes: UnsafeBufferPointer<UInt8>
    var offset = 0
    init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }
    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        let n = min(count, bytes.count - offset)
        if n > 0 { buffer.copyMemory(from: bytes.baseAddress! + offset, byteCount: n) }
        offset += n
        return n
    }
}

let knownReasons: Set<String> = [
    RejectReason.oversized, RejectReason.invalidUTF8, RejectReason.invalidCSV, RejectReason.wrongType,
    RejectReason.nonFinite, RejectReason.negative, RejectReason.outOfRange, RejectReason.outOfOrder,
    "not_contiguous", "index_range", "index_overlap", "empty_cascade",
]

/// Feeds every line of `bytes` to `consume`; returns the number of rejections.
func parse(_ bytes: UnsafeBufferPointer<UInt8>, _ consume: (Line, (Rejection) -> Void) throws -> Void) throws -> Int {
    var reader = LineReader(MemorySource(bytes), maxLineBytes: 64 + bytes.count % 200, chunk: 1 + bytes.count % 97)
    var rejected = 0
    var lines = 0
    while let line = try reader.next() {
        lines += 1
        check(line.number == lines)
        check(line.oversized == (line.length > reader.maxLineBytes))
        if line.oversized {
            check(line.bytes.count == min(line.length, LineReader.prefixBytes))
        } else {
            check(line.bytes.count == line.length)
        }
        try consume(line) { r in
            check(knownReasons.contains(r.reason), "unknown reason \(r.reason)")
            rejected += 1
        }
    }
    return rejected
}

func check(_ data: Dataset) throws {
    check(data.ids.count == data.starts.count && data.starts.count == data.ends.count)
    var valid = 0
    for c in 0..<data.cascadeCount {
        check(data.starts[c] < data.ends[c] && data.ends[c] <= data.rows.count)
        let all = try data.rows.load(data.starts[c]..<data.ends[c])
        let kept = try data.cascade(c)
        var last = -Double.infinity
        var rows = 0
        for k in all.times.indices where !all.times[k].isNaN {
            check(all.times[k] >= last, "times decrease within a cascade")
            check(all.times[k] >= 0 && all.times[k] <= InputLimits.maxTime)
            check(all.magnitudes[k] >= 0 && all.magnitudes[k] <= InputLimits.maxMagnitude)
            check(kept.times[rows] == all.times[k] && kept.magnitudes[rows] == all.magnitudes[k], "cascade rows")
            check(kept.messages?[rows] == all.messages?[k], "cascade messages")
            last = all.times[k]
            rows += 1
        }
        check(rows > 0, "a cascade without a valid row")
        check(kept.times.count == rows, "cascade row count")
        check(data.hasMessages == (all.messages != nil), "message column")
        valid += rows
    }
    check(valid == data.events, "event count")
    // Replay it: every valid event once, times non-decreasing per source.
    var replay = try MergedReplay(data: data, plan: ReplayPlan(sources: 2, maxCascades: 3, randomStartRange: 600, seed: 7, limit: 0))
    var sent = 0
    var clock: [SourceID: Double] = [:]
    while replay.nextTime != nil {
        let t = try replay.next()
        check(t.time >= (clock[t.source] ?? 0), "source clock went back")
        check(t.time.isFinite)
        clock[t.source] = t.time
        sent += 1
    }
    check(sent == data.events, "replayed \(sent) of \(data.events) events")
}

/// Checks a dataset and its replay; an error of the scratch file there is a failure (a
/// ReplayError in parsing is a rejected input, by design).
func checkReplay(_ data: Dataset) throws {
    do { try check(data) } catch { failure("scratch file or replay error on a parsed dataset: \(error)") }
}

let fixedIndex: StaticString = "start_ind,end_ind\n1,3\n4,4\n2,6\n5,9\n"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzReplay(_ input: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: input, count: size)
    do {
        #if COURSE
        var dataBytes = bytes
        var indexBytes = UnsafeBufferPointer(start: fixedIndex.utf8Start, count: fixedIndex.utf8CodeUnitCount)
        if let nul = bytes.firstIndex(of: 0) {
            dataBytes = UnsafeBufferPointer(rebasing: bytes[..<nul])
            indexBytes = UnsafeBufferPointer(rebasing: bytes[(nul + 1)...])
        }
        var rows = try CourseRowsParser(path: "data.csv", secondsPerTimeUnit: 1.5)
        _ = try parse(dataBytes) { line, reject in try rows.consume(line, reject: reject) }
        let rowData = try rows.finish()
        var index = CourseIndexParser(path: "index.csv", dataPath: "data.csv", rows: rowData)
        _ = try parse(indexBytes) { line, reject in try index.consume(line, reject: reject) }
        let data = try index.finish()
        try checkReplay(data)
        #else
        var parser = try LongFormatParser(path: "data.csv")
        _ = try parse(bytes) { line, reject in try parser.consume(line, reject: reject) }
        try checkReplay(try parser.finish())
        #endif
    } catch is ReplayError {
        // A bad header or an empty file: the source fails with a message, by design.
    } catch {
        failure("unexpected error \(error)")
    }
    return 0
}

/// Stops the fuzzer with `message` on stderr when `condition` is false (a plain precondition
/// prints nothing in an optimized build).
@inline(__always)
func check(_ condition: Bool, _ message: @autoclosure () -> String = "property violated", line: Int = #line) {
    if !condition { failure(message(), line: line) }
}

func failure(_ message: String, line: Int = #line) -> Never {
    let text = "fuzz property violated (Harness.swift:\(line)): \(message)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    abort()
}
