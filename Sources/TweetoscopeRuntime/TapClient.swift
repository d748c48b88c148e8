// The client side of `tweetoscoped tap`: one HTTP/1.0 request to the daemon's `/tap` (plain
// sockets: a request and a stream of lines, no HTTP library needed), lines copied to stdout.
import Glibc
import TweetoscopeCore

/// Why a tap could not run.
public struct TapError: Error, CustomStringConvertible {
    public var description: String
}

public enum TapClient {
    /// Connects to `host:port`, asks for `streams` (at most `limit` messages, 0: no limit), and
    /// calls `line` with each JSON line received (without its newline) until the daemon closes
    /// the tap. Returns the number of messages dropped because this tap was too slow (the
    /// daemon's `{"dropped":N}` lines, also passed to `dropped`).
    ///
    /// - Throws: ``TapError`` when the address cannot be reached or the daemon refuses the tap
    ///   (the tap is off, an unknown stream), with the daemon's explanation.
    public static func run(host: String, port: Int, streams: [String], limit: Int,
                           line: (String) -> Void, dropped: (Int) -> Void) throws -> Int {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, "\(port)", &hints, &list) == 0, let first = list else {
            throw TapError(description: "cannot resolve \(host)")
        }
        defer { freeaddrinfo(list) }
        var fd: Int32 = -1
        var lastError = ECONNREFUSED
        var current: UnsafeMutablePointer<addrinfo>? = first
        while let ai = current {
            fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype, ai.pointee.ai_protocol)
            if fd >= 0 {
                if connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 { break }
                lastError = errno
                close(fd)
                fd = -1
            }
            current = ai.pointee.ai_next
        }
        guard fd >= 0 else {
            throw TapError(description: "cannot connect to \(host):\(port): \(String(cString: strerror(lastError))) (is the daemon running with a `metrics` section?)")
        }
        defer { close(fd) }
        let query = streams.map { "stream=" + percentEncoded($0) }.joined(separator: "&") + (limit > 0 ? "&limit=\(limit)" : "")
        let request = Array("GET /tap?\(query) HTTP/1.0\r\nHost: \(host)\r\nAccept: application/x-ndjson\r\n\r\n".utf8)
        var offset = 0
        while offset < request.count {
            let n = request.withUnsafeBufferPointer { write(fd, $0.baseAddress! + offset, $0.count - offset) }
            guard n > 0 else { throw TapError(description: "cannot send the request: \(String(cString: strerror(errno)))") }
            offset += n
        }
        // Header, then lines.
        var pending: [UInt8] = []
        var headerDone = false
        var status = 0
        var chunked = false
        var body: [UInt8] = []
        var totalDropped = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        func emit(_ bytes: ArraySlice<UInt8>) {
            let text = String(decoding: bytes, as: UTF8.self)
            if text.hasPrefix("{\"dropped\":"), let n = Int(text.dropFirst(11).dropLast()) {
                totalDropped += n
                dropped(n)
            } else if !text.isEmpty {
                line(text)
            }
        }
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            pending += buffer[0..<n]
            if !headerDone {
                guard let end = headerEnd(pending) else { continue }
                let head = String(decoding: pending[..<end], as: UTF8.self)
                pending.removeFirst(end + 4)
                headerDone = true
                let statusLine = head.split(separator: "\r\n").first ?? ""
                status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0
                chunked = head.lowercased().contains("transfer-encoding: chunked")
            }
            if status != 200 || chunked {
                body += pending
                pending = []
                continue
            }
            while let nl = pending.firstIndex(of: 0x0A) {
                emit(pending[..<nl])
                pending.removeFirst(nl + 1)
            }
        }
        if status != 200 {
            let text = String(decoding: body, as: UTF8.self).trimmingTrailingNewlines
            throw TapError(description: status == 0 ? "no HTTP answer from \(host):\(port)" : "the daemon refused the tap (HTTP \(status)): \(text)")
        }
        if chunked {
            // Decode `<hex size>\r\n<data>\r\n` chunks, then split lines.
            var data: [UInt8] = []
            var rest = body[...]
            while let crlf = rest.firstIndex(of: 0x0D), let size = Int(String(decoding: rest[..<crlf], as: UTF8.self), radix: 16), size > 0 {
                let start = crlf + 2
                guard start + size <= rest.endIndex else { break }
                data += rest[start..<(start + size)]
                rest = rest[min(rest.endIndex, start + size + 2)...]
            }
            pending = data
        }
        for part in pending.split(separator: 0x0A) { emit(part) }
        return totalDropped
    }

    private static func headerEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return i
        }
        return nil
    }

    private static func percentEncoded(_ s: String) -> String {
        var out = ""
        for b in s.utf8 {
            let c = Character(Unicode.Scalar(b))
            if b < 0x80, c.isLetter || c.isNumber || "-._~".contains(c) { out.append(c) }
            else { out += "%" + (b < 16 ? "0" : "") + String(b, radix: 16, uppercase: true) }
        }
        return out
    }
}

extension String {
    var trimmingTrailingNewlines: String {
        var s = self
        while s.last == "\n" || s.last == "\r" { s.removeLast() }
        return s
    }
}
