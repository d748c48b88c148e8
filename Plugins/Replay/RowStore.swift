// Where the replay keeps the rows of its data file: an unlinked temporary file, read back one
// cascade at a time, so that the replay's memory depends on the cascades open, not on the size of
// the input (issue 17: loading SEISMIC ×4 into memory cost 391 MB of RSS).

import Glibc
import TweetoscopeCore

/// An append-only scratch file, unlinked at once (it disappears with the process), written
/// through a 1 MiB buffer and read back with pread(2). Not thread-safe: one stage owns it.
final class SpillFile {
    /// The scratch directory: $TMPDIR, else /tmp.
    static var directory: String {
        if let dir = getenv("TMPDIR"), dir.pointee != 0 { return String(cString: dir) }
        return "/tmp"
    }

    private let fd: Int32
    private let dir: String
    private let capacity = 1 << 20
    private let buffer: UnsafeMutableRawPointer
    private var buffered = 0
    /// Bytes written to the file (the buffer excluded).
    private var flushed = 0

    /// Bytes appended so far.
    var count: Int { flushed + buffered }

    /// - Throws: ``ReplayError`` naming the directory when the file cannot be created.
    init() throws {
        dir = Self.directory
        var template = Array("\(dir)/tweetoscope-replay-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            throw ReplayError("cannot create the replay's scratch file in \(dir) (set TMPDIR to another directory): \(errnoText())")
        }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        self.fd = fd
        buffer = .allocate(byteCount: capacity, alignment: 16)
    }

    deinit {
        buffer.deallocate()
        close(fd)
    }

    private func failure(_ what: String) -> ReplayError {
        ReplayError("cannot \(what) the replay's scratch file in \(dir) (set TMPDIR to another directory): \(errnoText())")
    }

    /// Appends a 64-bit word (native byte order: the file never leaves this process).
    @inline(__always)
    func append(_ word: UInt64) throws {
        if buffered + 8 > capacity { try flush() }
        buffer.storeBytes(of: word, toByteOffset: buffered, as: UInt64.self)
        buffered += 8
    }

    /// Appends bytes.
    func append(_ bytes: UnsafeRawBufferPointer) throws {
        var rest = bytes
        while !rest.isEmpty {
            if buffered == capacity { try flush() }
            let n = min(rest.count, capacity - buffered)
            (buffer + buffered).copyMemory(from: rest.baseAddress!, byteCount: n)
            buffered += n
            rest = UnsafeRawBufferPointer(rebasing: rest[n...])
        }
    }

    /// Writes the buffer to the file.
    func flush() throws {
        var done = 0
        while done < buffered {
            let n = pwrite(fd, buffer + done, buffered - done, off_t(flushed + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("write")
            }
            done += n
        }
        flushed += buffered
        buffered = 0
    }

    /// Reads `count` bytes from byte `offset` (which must be within what was appended).
    func read(at offset: Int, count: Int, into target: UnsafeMutableRawPointer) throws {
        precondition(offset >= 0 && offset + count <= self.count)
        if offset + count > flushed { try flush() }
        var done = 0
        while done < count {
            let n = pread(fd, target + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("read")
            }
            guard n > 0 else { throw ReplayError("the replay's scratch file in \(dir) is shorter than what was written") }
            done += n
        }
    }

    /// Overwrites the 64-bit word at byte `offset`.
    func overwrite(_ word: UInt64, at offset: Int) throws {
        precondition(offset >= 0 && offset + 8 <= count)
        if offset >= flushed {
            buffer.storeBytes(of: word, toByteOffset: offset - flushed, as: UInt64.self)
            return
        }
        if offset + 8 > flushed { try flush() }
        var w = word
        let n = withUnsafeBytes(of: &w) { pwrite(fd, $0.baseAddress, 8, off_t(offset)) }
        guard n == 8 else { throw failure("write") }
    }
}

/// The rows of a data file (time, magnitude and, in the course format with 3 columns, the message),
/// row `r` at a fixed place of a ``SpillFile``: 16 bytes per row (24 with messages, whose bytes go
/// to a second file). Row numbers are those of the parsers (course format: rejected rows are kept
/// with a NaN time, so that index row numbers stay valid).
final class RowStore: @unchecked Sendable {
    // One stage owns it; a paused replay moves it to the next stage under a mutex, never shared.
    private let rows: SpillFile
    private var pool: SpillFile?
    private var rowBytes = 16
    private(set) var count = 0

    init() throws { rows = try SpillFile() }

    var hasMessages: Bool { pool != nil }

    /// Keeps a message per row from now on; call before the first row.
    func keepMessages() throws {
        precondition(count == 0)
        pool = try SpillFile()
        rowBytes = 24
    }

    /// Appends a row; with messages, `message` is its bytes (empty: none).
    @inline(__always)
    func append(time: Double, magnitude: Double, message: UnsafeRawBufferPointer? = nil) throws {
        try rows.append(time.bitPattern)
        try rows.append(magnitude.bitPattern)
        if let pool {
            if let message { try pool.append(message) }
            try rows.append(UInt64(pool.count))
        }
        count += 1
    }

    /// Sets the time of row `r` (NaN: the row is dropped from its cascade).
    func setTime(_ r: Int, _ t: Double) throws {
        try rows.overwrite(t.bitPattern, at: r * rowBytes)
    }

    /// Rows `range`: their times, magnitudes and messages ("None" when absent or empty; nil
    /// without a message column). Reads the file, one pread for the rows, one for the messages.
    func load(_ range: Range<Int>) throws -> Rows {
        precondition(range.lowerBound >= 0 && range.upperBound <= count)
        let words = rowBytes / 8
        // With messages, the row before the range too: its end is where the first message starts.
        let first = pool != nil && range.lowerBound > 0 ? range.lowerBound - 1 : range.lowerBound
        let n = range.upperBound - first
        var raw = [UInt64](repeating: 0, count: n * words)
        if n > 0 {
            try raw.withUnsafeMutableBytes { try rows.read(at: first * rowBytes, count: $0.count, into: $0.baseAddress!) }
        }
        let skip = range.lowerBound - first
        var out = Rows()
        out.times.reserveCapacity(range.count)
        out.magnitudes.reserveCapacity(range.count)
        for k in skip..<n {
            out.times.append(Double(bitPattern: raw[k * words]))
            out.magnitudes.append(Double(bitPattern: raw[k * words + 1]))
        }
        guard let pool else { return out }
        let base = skip == 1 ? Int(raw[2]) : 0
        let end = n > 0 ? Int(raw[(n - 1) * words + 2]) : base
        var bytes = [UInt8](repeating: 0, count: end - base)
        if end > base { try bytes.withUnsafeMutableBytes { try pool.read(at: base, count: $0.count, into: $0.baseAddress!) } }
        var messages: [String] = []
        messages.reserveCapacity(range.count)
        var lo = base
        for k in skip..<n {
            let hi = Int(raw[k * words + 2])
            messages.append(hi > lo ? String(decoding: bytes[(lo - base)..<(hi - base)], as: UTF8.self) : "None")
            lo = hi
        }
        out.messages = messages
        return out
    }

    /// Rows read back by ``load(_:)``.
    struct Rows {
        var times: [Double] = []
        var magnitudes: [Double] = []
        var messages: [String]?
    }
}
