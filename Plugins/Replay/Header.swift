// Checks of a data file's first bytes made when the configuration is validated, so that
// `validate` rejects what `run` would reject at once: an unreadable file or header, UTF-16 text,
// CR-only line ends.

import Glibc
import TweetoscopeCore

/// The first line of a data file, as `validate` sees it.
enum DataHeader {
    /// Bytes read from the start of the file: enough for any header.
    static let probeBytes = 65536

    /// The first line of `path` (gzip-compressed or not) without its terminator, after checking
    /// the encoding and the line ends.
    /// - Throws: ``StageConfigError`` for `option`, naming the file: unreadable, UTF-16 (a byte
    ///   order mark or NUL bytes), or CR-only line ends. A first line longer than ``probeBytes``
    ///   is returned cut there.
    static func firstLine(_ path: String, option: String) throws -> [UInt8] {
        let file: ByteFile
        do { file = try ByteFile(path: path) } catch { throw StageConfigError(option: option, "\(error)") }
        var bytes = [UInt8](repeating: 0, count: probeBytes)
        var count = 0
        do {
            while count < probeBytes {
                let n = try bytes.withUnsafeMutableBytes { try file.read(into: $0.baseAddress! + count, count: probeBytes - count) }
                if n == 0 { break }
                count += n
            }
        } catch {
            throw StageConfigError(option: option, "\(error)")
        }
        let head = Array(bytes[0..<count])
        if head.starts(with: [0xFF, 0xFE]) || head.starts(with: [0xFE, 0xFF]) || head.prefix(256).contains(0) {
            throw StageConfigError(option: option, "\(path) looks like UTF-16 text (byte-order mark or NUL bytes); data files are UTF-8 (convert with iconv -f UTF-16 -t UTF-8)")
        }
        let newline = head.firstIndex(of: 0x0A)
        var line = Array(head[0..<(newline ?? head.count)])
        if line.last == 0x0D { line.removeLast() }
        if line.contains(0x0D) {
            throw StageConfigError(option: option, "\(path) has CR-only line ends (old Mac style); data files need LF or CRLF line ends (convert with tr '\\r' '\\n')")
        }
        if line.starts(with: [0xEF, 0xBB, 0xBF]) { line.removeFirst(3) }
        return line
    }

    /// Checks that the first line of `path` is a header `valid` accepts.
    /// - Throws: ``StageConfigError`` for `option` naming the file and `expected`.
    static func check(_ path: String, option: String, expected: String, valid: (String) -> Bool) throws {
        let line = try firstLine(path, option: option)
        let header = String(decoding: line, as: UTF8.self).filter { $0 != " " && $0 != "\t" }
        guard valid(header) else {
            throw StageConfigError(option: option, "\(path):1: expected the header \(expected), found \(String(header.prefix(80)).debugDescription)")
        }
    }
}
