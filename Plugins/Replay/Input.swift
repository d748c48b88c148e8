// Byte-level input for the replay sources: whole-line reading of plain or gzip-compressed files
// (zlib), and fast parsing of the numeric CSV fields. No Foundation.

import CZlib
import Glibc
import TweetoscopeCore

/// An I/O or format error that stops a source; the message names the file (and line).
struct ReplayError: Error, CustomStringConvertible, Sendable {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The text of `errno`.
func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

/// A readable file: plain bytes through read(2), or gzip-compressed bytes through zlib. The
/// format is chosen by the gzip magic bytes (1f 8b) at the start of the file.
final class ByteFile {
    let path: String
    private var fd: Int32 = -1
    private var gz: gzFile?
    let compressed: Bool

    init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ReplayError("cannot open \(path): \(errnoText())") }
        var st = stat()
        if fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw ReplayError("cannot read \(path): is a directory")
        }
        var magic: (UInt8, UInt8) = (0, 0)
        let n = withUnsafeMutableBytes(of: &magic) { Glibc.read(fd, $0.baseAddress, 2) }
        guard n >= 0, lseek(fd, 0, SEEK_SET) == 0 else {
            let text = errnoText()
            close(fd)
            throw ReplayError("cannot read \(path): \(text)")
        }
        compressed = n == 2 && magic.0 == 0x1f && magic.1 == 0x8b
        if compressed {
            guard let gz = gzdopen(fd, "rb") else {  // takes ownership of fd on success
                close(fd)
                throw ReplayError("cannot read \(path): zlib could not open the stream")
            }
            gzbuffer(gz, 1 << 17)
            self.gz = gz
        } else {
            self.fd = fd
        }
    }

    deinit {
        if let gz { gzclose(gz) }
        if fd >= 0 { close(fd) }
    }

    /// Reads up to `count` bytes into `buffer`; 0 at the end of the file.
    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        if let gz {
            let n = gzread(gz, buffer, UInt32(min(count, 1 << 30)))
            if n < 0 {
                var code: Int32 = 0
                let text = gzerror(gz, &code).map { String(cString: $0) } ?? "zlib error"
                throw ReplayError("cannot read \(path): \(text)")
            }
            if n == 0 {
                // A truncated gzip stream ends without error in gzread; gzerror tells.
                var code: Int32 = 0
                let msg = gzerror(gz, &code)
                if code != Z_OK && code != Z_STREAM_END, let msg {
                    throw ReplayError("cannot read \(path): \(String(cString: msg))")
                }
            }
            return Int(n)
        }
        while true {
            let n = Glibc.read(fd, buffer, count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw ReplayError("cannot read \(path): \(errnoText())")
        }
    }
}

/// Something that reads bytes: a file (``ByteFile``), or memory in the fuzz targets.
protocol ByteSource: AnyObject {
    /// Reads up to `count` bytes into `buffer`; 0 at the end of the input.
    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int
}

extension ByteFile: ByteSource {}

/// Reads a byte source on a thread of its own, up to `depth` chunks of `chunkSize` bytes ahead
/// of the reader, so that gzip decoding runs beside the parsing instead of before each chunk of
/// it (issue 17: zlib was ~6 % of the replay's CPU, all of it on the load's critical path).
/// The reader gets the same bytes in the same order, and a read error after every byte read
/// before it (where reading the source directly would have raised it). Memory: `depth` chunks.
final class ReadAhead: ByteSource {
    /// What the reading thread and the reader share, under `mutex`.
    private final class Shared: @unchecked Sendable {
        let source: any ByteSource
        let chunkSize: Int
        let depth: Int
        let buffers: [UnsafeMutableRawPointer]
        var lengths: [Int]
        /// The next chunk the reader takes, and the number of chunks ready for it.
        var head = 0
        var filled = 0
        /// Set by the thread once the source ended (with `error` if it failed).
        var finished = false
        var error: (any Error)?
        /// Set by the reader when it stops reading (the thread returns).
        var stopping = false
        let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        let changed = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

        init(_ source: any ByteSource, chunkSize: Int, depth: Int) {
            self.source = source
            self.chunkSize = chunkSize
            self.depth = depth
            buffers = (0..<depth).map { _ in .allocate(byteCount: chunkSize, alignment: 64) }
            lengths = Array(repeating: 0, count: depth)
            pthread_mutex_init(mutex, nil)
            pthread_cond_init(changed, nil)
        }

        deinit {
            for b in buffers { b.deallocate() }
            pthread_cond_destroy(changed)
            pthread_mutex_destroy(mutex)
            changed.deallocate()
            mutex.deallocate()
        }

        /// The thread's loop: fills free chunks in turn until the source ends or fails.
        func produce() {
            var tail = 0
            while true {
                pthread_mutex_lock(mutex)
                while filled == depth && !stopping { pthread_cond_wait(changed, mutex) }
                let stop = stopping
                pthread_mutex_unlock(mutex)
                if stop { return }
                // Chunk `tail` is free: the reader only touches chunks counted in `filled`.
                var n = 0
                var ended = false
                var failure: (any Error)?
                do {
                    while n < chunkSize {
                        let got = try source.read(into: buffers[tail] + n, count: chunkSize - n)
                        if got == 0 { ended = true; break }
                        n += got
                    }
                } catch {
                    failure = error
                }
                pthread_mutex_lock(mutex)
                if n > 0 {
                    lengths[tail] = n
                    filled += 1
                    tail = (tail + 1) % depth
                }
                if ended || failure != nil {
                    finished = true
                    error = failure
                }
                pthread_cond_broadcast(changed)
                pthread_mutex_unlock(mutex)
                if ended || failure != nil { return }
            }
        }
    }

    private let shared: Shared
    private var thread = pthread_t()
    /// The chunk the reader is copying from (valid while `holding`), and its read position.
    private var holding = false
    private var current = 0
    private var offset = 0
    private var length = 0

    private init(shared: Shared) { self.shared = shared }

    /// `source` read ahead on a thread of its own; `source` itself when no thread can be started.
    static func wrap(_ source: any ByteSource, chunkSize: Int = 1 << 20, depth: Int = 4) -> any ByteSource {
        let reader = ReadAhead(shared: Shared(source, chunkSize: chunkSize, depth: depth))
        let context = Unmanaged.passRetained(reader.shared).toOpaque()
        let rc = pthread_create(&reader.thread, nil, { arg in
            let shared = Unmanaged<Shared>.fromOpaque(arg!).takeRetainedValue()
            shared.produce()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Shared>.fromOpaque(context).release()
            return source
        }
        return reader
    }

    deinit {
        pthread_mutex_lock(shared.mutex)
        shared.stopping = true
        pthread_cond_broadcast(shared.changed)
        pthread_mutex_unlock(shared.mutex)
        pthread_join(thread, nil)
    }

    func read(into buffer: UnsafeMutableRawPointer, count: Int) throws -> Int {
        guard count > 0 else { return 0 }
        if !holding || offset == length {
            pthread_mutex_lock(shared.mutex)
            if holding {
                // The chunk is used up: hand it back to the thread.
                holding = false
                shared.head = (shared.head + 1) % shared.depth
                shared.filled -= 1
                pthread_cond_broadcast(shared.changed)
            }
            while shared.filled == 0 && !shared.finished { pthread_cond_wait(shared.changed, shared.mutex) }
            guard shared.filled > 0 else {
                let error = shared.error
                pthread_mutex_unlock(shared.mutex)
                if let error { throw error }
                return 0
            }
            holding = true
            current = shared.head
            length = shared.lengths[current]
            offset = 0
            pthread_mutex_unlock(shared.mutex)
        }
        let n = min(count, length - offset)
        buffer.copyMemory(from: shared.buffers[current] + offset, byteCount: n)
        offset += n
        return n
    }
}

/// One line of a ``LineReader``: its bytes without the terminator (`\n` or `\r\n`) and its
/// 1-based number. A line longer than the reader's limit is `oversized`: `bytes` then holds only
/// its first ``LineReader/prefixBytes`` bytes and `length` its full length.
struct Line {
    var bytes: UnsafeBufferPointer<UInt8>
    var number: Int
    var length: Int
    var oversized: Bool
}

/// Reads a byte source line by line, in bounded memory: a line longer than `maxLineBytes`
/// (terminator excluded) is skipped as it streams by (only its first bytes are kept) and reported
/// as oversized, so one endless line cannot exhaust memory.
struct LineReader: ~Copyable {
    /// Bytes kept of an oversized line (for the log and the dead letter): one more than a dead
    /// letter keeps, so that the dead letter shows the record was cut.
    static let prefixBytes = DeadLetter.maxRawBytes + 1

    private let source: any ByteSource
    let maxLineBytes: Int
    private let chunk: Int
    private var buffer: UnsafeMutablePointer<UInt8>
    private var capacity: Int
    private var start = 0, end = 0
    private var eof = false
    private var number = 0
    /// Skipping the rest of an oversized line: its first bytes and its length so far.
    private var skipping = false
    private let prefix: UnsafeMutablePointer<UInt8>
    private var prefixCount = 0
    private var skipped = 0

    /// - Parameters:
    ///   - maxLineBytes: longest accepted line in bytes, terminator excluded (>= 1).
    ///   - chunk: bytes read at a time (the buffer grows up to about 2 × `maxLineBytes` for
    ///     longer lines).
    init(_ source: any ByteSource, maxLineBytes: Int, chunk: Int = 1 << 20) {
        precondition(maxLineBytes >= 1 && chunk >= 1)
        self.source = source
        self.maxLineBytes = maxLineBytes
        self.chunk = chunk
        capacity = chunk
        buffer = .allocate(capacity: capacity)
        prefix = .allocate(capacity: Self.prefixBytes)
    }

    deinit {
        buffer.deallocate()
        prefix.deallocate()
    }

    /// The next line, or nil at the end of the input. The bytes stay valid until the next call.
    mutating func next() throws -> Line? {
        while true {
            if start < end {
                if let nl = memchr(buffer + start, 0x0A, end - start) {
                    let stop = nl.assumingMemoryBound(to: UInt8.self) - buffer
                    if skipping {
                        skipped += stop - start
                        start = stop + 1
                        return endSkip()
                    }
                    let s = start
                    start = stop + 1
                    return line(from: s, to: stop)
                }
                if skipping {
                    skipped += end - start
                    start = end
                } else if end - start > max(maxLineBytes + 1, Self.prefixBytes) {  // + 1: a final \r does not count
                    skipping = true
                    prefixCount = min(Self.prefixBytes, end - start)
                    prefix.update(from: buffer + start, count: prefixCount)
                    skipped = end - start
                    start = end
                }
            }
            if eof {
                if skipping { return endSkip() }
                if start < end {
                    let s = start
                    start = end
                    return line(from: s, to: end)
                }
                return nil
            }
            // Keep the partial line at the front, grow for a line longer than the buffer, refill.
            if start > 0 {
                if end > start { memmove(buffer, buffer + start, end - start) }
                end -= start
                start = 0
            }
            if end == capacity {
                let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity * 2)
                bigger.update(from: buffer, count: end)
                buffer.deallocate()
                buffer = bigger
                capacity *= 2
            }
            let n = try source.read(into: buffer + end, count: capacity - end)
            if n == 0 { eof = true } else { end += n }
        }
    }

    /// The line in `buffer[s..<stop]` (stop = its `\n` or the end of the input).
    @inline(__always)
    private mutating func line(from s: Int, to stop: Int) -> Line {
        var lineEnd = stop
        if lineEnd > s && buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
        number += 1
        let length = lineEnd - s
        if length > maxLineBytes {
            return Line(bytes: UnsafeBufferPointer(start: buffer + s, count: min(length, Self.prefixBytes)), number: number,
                        length: length, oversized: true)
        }
        return Line(bytes: UnsafeBufferPointer(start: buffer + s, count: length), number: number,
                    length: length, oversized: false)
    }

    private mutating func endSkip() -> Line {
        skipping = false
        number += 1
        return Line(bytes: UnsafeBufferPointer(start: prefix, count: prefixCount), number: number,
                    length: skipped, oversized: true)
    }
}

/// Why a field did not parse as a number.
enum NumberProblem: Error {
    case notANumber, nonFinite, outOfRange
    /// The rejection reason: `wrong_type`, `non_finite` or `out_of_range`.
    var reason: String {
        switch self {
        case .notANumber: RejectReason.wrongType
        case .nonFinite: RejectReason.nonFinite
        case .outOfRange: RejectReason.outOfRange
        }
    }
}

@inline(__always) private func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 }

/// The field with surrounding blanks removed.
@inline(__always)
func trimmed(_ field: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
    var lo = 0, hi = field.count
    while lo < hi && isSpace(field[lo]) { lo += 1 }
    while hi > lo && isSpace(field[hi - 1]) { hi -= 1 }
    return UnsafeBufferPointer(rebasing: field[lo..<hi])
}

private let exactPowersOf10: [Double] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
]

/// Parses a decimal number (`-12`, `3.25`, `1e6`, `.5`), blanks around it allowed. The common
/// case (at most 19 significant digits, small exponent) is computed exactly with one correctly
/// rounded IEEE operation; other cases fall back to strtod. `nan`/`inf` and overflow are
/// `nonFinite`, anything else that is not a number is `notANumber`.
func parseDouble(_ raw: UnsafeBufferPointer<UInt8>) throws(NumberProblem) -> Double {
    let f = trimmed(raw)
    let n = f.count
    var i = 0
    var negative = false
    if i < n && (f[i] == 0x2D || f[i] == 0x2B) { negative = f[i] == 0x2D; i += 1 }
    var mantissa: UInt64 = 0
    var digits = 0, dropped = 0, exp10 = 0
    while i < n, f[i] &- 0x30 < 10 {
        if mantissa < 1_000_000_000_000_000_000 { mantissa = mantissa &* 10 &+ UInt64(f[i] &- 0x30) } else { dropped += 1; exp10 += 1 }
        digits += 1
        i += 1
    }
    if i < n && f[i] == 0x2E {
        i += 1
        while i < n, f[i] &- 0x30 < 10 {
            if mantissa < 1_000_000_000_000_000_000 {
                mantissa = mantissa &* 10 &+ UInt64(f[i] &- 0x30)
                exp10 -= 1
            } else {
                dropped += 1
            }
            digits += 1
            i += 1
        }
    }
    guard digits > 0 else {
        if isNonFiniteWord(f) { throw .nonFinite }
        throw .notANumber
    }
    if i < n && (f[i] | 0x20) == 0x65 {  // e or E
        i += 1
        var expNegative = false
        if i < n && (f[i] == 0x2D || f[i] == 0x2B) { expNegative = f[i] == 0x2D; i += 1 }
        var e = 0, expDigits = 0
        while i < n, f[i] &- 0x30 < 10 {
            if e < 100_000 { e = e * 10 + Int(f[i] &- 0x30) }
            expDigits += 1
            i += 1
        }
        guard expDigits > 0 else { throw .notANumber }
        exp10 += expNegative ? -e : e
    }
    guard i == n else { throw .notANumber }
    var value: Double
    if dropped == 0 && mantissa <= (1 << 53) && exp10 >= -22 && exp10 <= 22 {
        value = Double(mantissa)
        if exp10 > 0 { value *= exactPowersOf10[exp10] } else if exp10 < 0 { value /= exactPowersOf10[-exp10] }
        if negative { value = -value }
    } else {
        value = slowParse(f)
    }
    guard value.isFinite else { throw .nonFinite }
    return value
}

private func slowParse(_ f: UnsafeBufferPointer<UInt8>) -> Double {
    withUnsafeTemporaryAllocation(of: CChar.self, capacity: f.count + 1) { tmp in
        for k in 0..<f.count { tmp[k] = CChar(bitPattern: f[k]) }
        tmp[f.count] = 0
        return strtod(tmp.baseAddress!, nil)
    }
}

/// `nan`, `inf` or `infinity`, any case, optionally signed.
private func isNonFiniteWord(_ f: UnsafeBufferPointer<UInt8>) -> Bool {
    var s = Substring(String(decoding: f, as: UTF8.self).lowercased())
    if s.first == "-" || s.first == "+" { s = s.dropFirst() }
    return s == "nan" || s == "inf" || s == "infinity"
}

/// Parses a decimal integer (optional sign, blanks around it allowed); `outOfRange` when it
/// does not fit in 64 bits.
func parseInt(_ raw: UnsafeBufferPointer<UInt8>) throws(NumberProblem) -> Int64 {
    let f = trimmed(raw)
    var i = 0
    var negative = false
    if i < f.count && (f[i] == 0x2D || f[i] == 0x2B) { negative = f[i] == 0x2D; i += 1 }
    guard i < f.count else { throw .notANumber }
    var value: Int64 = 0
    while i < f.count {
        let d = f[i] &- 0x30
        guard d < 10 else {
            if isNonFiniteWord(f) { throw .nonFinite }
            throw .notANumber
        }
        let (m, o1) = value.multipliedReportingOverflow(by: 10)
        let (a, o2) = m.addingReportingOverflow(Int64(d))
        guard !o1 && !o2 else {
            // Every remaining byte a digit: a valid integer, just too large for 64 bits.
            while i < f.count, f[i] &- 0x30 < 10 { i += 1 }
            throw i == f.count ? .outOfRange : .notANumber
        }
        value = a
        i += 1
    }
    return negative ? -value : value
}

/// Splits `line` at commas into at most `max` fields (the last one keeps any further commas);
/// returns the number of commas seen in total.
@inline(__always)
func splitFields(_ line: UnsafeBufferPointer<UInt8>, into fields: inout [UnsafeBufferPointer<UInt8>],
                 max: Int) -> Int {
    fields.removeAll(keepingCapacity: true)
    var commas = 0
    var fieldStart = 0
    for k in 0..<line.count where line[k] == 0x2C {
        commas += 1
        if fields.count < max - 1 {
            fields.append(UnsafeBufferPointer(rebasing: line[fieldStart..<k]))
            fieldStart = k + 1
        }
    }
    fields.append(UnsafeBufferPointer(rebasing: line[fieldStart..<line.count]))
    return commas
}

/// Whether the line holds nothing but blanks.
func isBlank(_ line: UnsafeBufferPointer<UInt8>) -> Bool { trimmed(line).isEmpty }

/// The line as text (for headers and messages), without a leading UTF-8 byte-order mark.
func text(_ line: UnsafeBufferPointer<UInt8>) -> String {
    var s = String(decoding: line, as: UTF8.self)
    if s.hasPrefix("\u{FEFF}") { s.removeFirst() }
    return s
}
