// Byte-level input for the replay sources: whole-line reading of plain or gzip-compressed files
// (zlib), and fast parsing of the numeric CSV fields. No Foundation.

import CZlib
import Glibc

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

/// Calls `body(line, number)` for every line of the file (1-based numbers), without the line
/// terminator (`\n` or `\r\n`). The last line may lack its `\n`. `body` returns false to stop.
func forEachLine(of file: ByteFile,
                 _ body: (UnsafeBufferPointer<UInt8>, Int) throws -> Bool) throws {
    var capacity = 1 << 20
    var buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
    defer { buffer.deallocate() }
    var start = 0, end = 0, lineNumber = 0
    var eof = false
    while true {
        // Every complete line in [start, end).
        while start < end {
            let base = buffer.assumingMemoryBound(to: UInt8.self)
            guard let nl = memchr(base + start, 0x0A, end - start) else { break }
            let stop = nl.assumingMemoryBound(to: UInt8.self) - base
            var lineEnd = stop
            if lineEnd > start && base[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            lineNumber += 1
            if try !body(UnsafeBufferPointer(start: base + start, count: lineEnd - start), lineNumber) { return }
            start = stop + 1
        }
        if eof {
            if start < end {
                let base = buffer.assumingMemoryBound(to: UInt8.self)
                var lineEnd = end
                if base[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                lineNumber += 1
                _ = try body(UnsafeBufferPointer(start: base + start, count: lineEnd - start), lineNumber)
            }
            return
        }
        // Keep the partial line at the front, grow for lines longer than the buffer, refill.
        if start > 0 {
            if end > start { memmove(buffer, buffer + start, end - start) }
            end -= start
            start = 0
        }
        if end == capacity {
            let bigger = UnsafeMutableRawPointer.allocate(byteCount: capacity * 2, alignment: 16)
            bigger.copyMemory(from: buffer, byteCount: end)
            buffer.deallocate()
            buffer = bigger
            capacity *= 2
        }
        let n = try file.read(into: buffer + end, count: capacity - end)
        if n == 0 { eof = true } else { end += n }
    }
}

/// Why a field did not parse as a number.
enum NumberProblem: Error {
    case notANumber, nonFinite
    var reason: String {
        switch self {
        case .notANumber: "not_a_number"
        case .nonFinite: "non_finite"
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

/// Parses a decimal integer (optional sign, blanks around it allowed).
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
        guard !o1 && !o2 else { throw .notANumber }
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
