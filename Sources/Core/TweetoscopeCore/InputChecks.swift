// Checks shared by every decoder of outside input (wire-format JSON, replay CSV): bounds of the
// numbers, UTF-8 validation, and a JSON syntax scanner that explains why a document is invalid.
// Standard library only (the fuzz targets compile this file on its own).

/// Bounds of the values a source accepts; a record outside them is rejected as `out_of_range`.
public enum InputLimits {
    /// Largest event time in seconds (about 31,700 years): every source-clock time stays finite
    /// and exactly representable to the millisecond.
    public static let maxTime = 1e12
    /// Largest magnitude (follower count) of an event; no account comes close to 10^12 followers.
    public static let maxMagnitude = 1e12
    /// Default largest record (one JSON or CSV line, one Kafka value) in bytes: 1 MiB.
    public static let defaultMaxRecordBytes = 1 << 20
    /// Smallest and largest values allowed for a `max_record_bytes` option, in bytes.
    public static let maxRecordBytesRange = 64...(1 << 30)
}

/// UTF-8 validation (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
public enum UTF8Validation {
    /// The offset of the first byte that does not start or continue a valid UTF-8 sequence, or
    /// nil when the whole buffer is valid UTF-8. A sequence cut short by the end of the buffer is
    /// invalid at its first byte.
    public static func firstInvalidByte(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        let n = bytes.count
        var i = 0
        while i < n {
            let b0 = bytes[i]
            if b0 < 0x80 { i += 1; continue }
            // The allowed range of the second byte and the sequence length, by first byte.
            let length: Int
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch b0 {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lo = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; hi = 0x9F
            case 0xF0: length = 4; lo = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; hi = 0x8F
            default: return i
            }
            guard i + length <= n else { return i }
            let b1 = bytes[i + 1]
            guard b1 >= lo && b1 <= hi else { return i }
            for k in 2..<length where bytes[i + k] & 0xC0 != 0x80 { return i }
            i += length
        }
        return nil
    }

    /// Whether the buffer is valid UTF-8.
    public static func isValid(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool { firstInvalidByte(bytes) == nil }

    /// Whether the bytes are valid UTF-8 (any collection; contiguous ones are checked in place).
    public static func isValid(_ bytes: some Collection<UInt8>) -> Bool {
        if let answer = bytes.withContiguousStorageIfAvailable({ isValid($0) }) { return answer }
        return Array(bytes).withUnsafeBufferPointer { isValid($0) }
    }
}

/// A JSON syntax checker (RFC 8259), used to explain a document the JSON decoder refused.
public enum JSONSyntax {
    /// Deepest nesting of arrays and objects accepted (as Foundation's decoder).
    public static let maxDepth = 512

    /// The first syntax problem of `bytes` as (byte offset, explanation), or nil when the bytes
    /// hold exactly one valid JSON value (blanks around it allowed). Iterative: any nesting depth
    /// is safe; nesting beyond ``maxDepth`` is reported as a problem. Strings must be valid UTF-8
    /// with well-paired `\u` surrogate escapes.
    public static func firstError(_ bytes: UnsafeBufferPointer<UInt8>) -> (offset: Int, problem: String)? {
        var scanner = Scanner(bytes: bytes)
        return scanner.run()
    }

    private struct Scanner {
        let bytes: UnsafeBufferPointer<UInt8>
        var i = 0
        /// Open containers: true for an object, false for an array.
        var stack: [Bool] = []

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        mutating func skipBlanks() {
            while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x0A || bytes[i] == 0x0D || bytes[i] == 0x09 { i += 1 }
        }

        func describe(_ what: String) -> (offset: Int, problem: String) {
            if i >= bytes.count { return (i, "\(what), found the end of the input") }
            let b = bytes[i]
            let found = b >= 0x20 && b < 0x7F ? "'\(Character(Unicode.Scalar(b)))'" : "byte 0x\(String(b, radix: 16))"
            return (i, "\(what), found \(found)")
        }

        mutating func run() -> (offset: Int, problem: String)? {
            // Each turn parses one value, then the punctuation after it, until the top level ends.
            value: while true {
                skipBlanks()
                guard i < bytes.count else { return describe("expected a value") }
                switch bytes[i] {
                case UInt8(ascii: "{"):
                    guard stack.count < JSONSyntax.maxDepth else { return (i, "nesting deeper than \(JSONSyntax.maxDepth) levels") }
                    i += 1
                    skipBlanks()
                    if i < bytes.count && bytes[i] == UInt8(ascii: "}") {
                        i += 1
                    } else {
                        stack.append(true)
                        if let e = key() { return e }
                        continue value
                    }
                case UInt8(ascii: "["):
                    guard stack.count < JSONSyntax.maxDepth else { return (i, "nesting deeper than \(JSONSyntax.maxDepth) levels") }
                    i += 1
                    skipBlanks()
                    if i < bytes.count && bytes[i] == UInt8(ascii: "]") {
                        i += 1
                    } else {
                        stack.append(false)
                        continue value
                    }
                case UInt8(ascii: "\""):
                    if let e = string() { return e }
                case UInt8(ascii: "t"):
                    if let e = literal("true") { return e }
                case UInt8(ascii: "f"):
                    if let e = literal("false") { return e }
                case UInt8(ascii: "n"):
                    if let e = literal("null") { return e }
                case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                    if let e = number() { return e }
                default:
                    return describe("expected a value")
                }
                // After a value: close containers or move to the next element.
                while true {
                    skipBlanks()
                    guard let isObject = stack.last else {
                        return i == bytes.count ? nil : describe("expected the end of the input after the value")
                    }
                    guard i < bytes.count else { return describe(isObject ? "expected ',' or '}'" : "expected ',' or ']'") }
                    let b = bytes[i]
                    if b == UInt8(ascii: ",") {
                        i += 1
                        if isObject, let e = key() { return e }
                        continue value
                    }
                    if b == (isObject ? UInt8(ascii: "}") : UInt8(ascii: "]")) {
                        i += 1
                        stack.removeLast()
                        continue
                    }
                    return describe(isObject ? "expected ',' or '}'" : "expected ',' or ']'")
                }
            }
        }

        /// An object key and its colon.
        mutating func key() -> (offset: Int, problem: String)? {
            skipBlanks()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { return describe("expected a string key") }
            if let e = string() { return e }
            skipBlanks()
            guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { return describe("expected ':'") }
            i += 1
            return nil
        }

        mutating func literal(_ word: StaticString) -> (offset: Int, problem: String)? {
            let w = UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount)
            for k in 0..<w.count {
                guard i + k < bytes.count, bytes[i + k] == w[k] else {
                    return (i, "invalid literal (expected \(word))")
                }
            }
            i += w.count
            return nil
        }

        mutating func number() -> (offset: Int, problem: String)? {
            let start = i
            func digits(_ scanner: inout Scanner) -> Int {
                var n = 0
                while scanner.i < scanner.bytes.count, scanner.bytes[scanner.i] &- 0x30 < 10 { scanner.i += 1; n += 1 }
                return n
            }
            if bytes[i] == UInt8(ascii: "-") { i += 1 }
            guard i < bytes.count, bytes[i] &- 0x30 < 10 else { return (start, "invalid number: expected a digit") }
            if bytes[i] == UInt8(ascii: "0") {
                i += 1
                if i < bytes.count, bytes[i] &- 0x30 < 10 { return (start, "invalid number: leading zero") }
            } else {
                _ = digits(&self)
            }
            if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
                i += 1
                guard digits(&self) > 0 else { return (start, "invalid number: expected a digit after '.'") }
            }
            if i < bytes.count, bytes[i] | 0x20 == UInt8(ascii: "e") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "+") || bytes[i] == UInt8(ascii: "-") { i += 1 }
                guard digits(&self) > 0 else { return (start, "invalid number: expected a digit in the exponent") }
            }
            return nil
        }

        /// A string from its opening quote; checks escapes, control characters and UTF-8.
        mutating func string() -> (offset: Int, problem: String)? {
            let start = i
            i += 1
            while i < bytes.count {
                let b = bytes[i]
                switch b {
                case UInt8(ascii: "\""):
                    i += 1
                    return nil
                case UInt8(ascii: "\\"):
                    guard i + 1 < bytes.count else { return (i, "unterminated escape") }
                    switch bytes[i + 1] {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                         UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                        i += 2
                    case UInt8(ascii: "u"):
                        guard let unit = hex4(i + 2) else { return (i, "invalid \\u escape: expected 4 hex digits") }
                        if unit >= 0xDC00 && unit <= 0xDFFF { return (i, "invalid \\u escape: unpaired low surrogate") }
                        if unit >= 0xD800 && unit <= 0xDBFF {
                            guard i + 7 < bytes.count, bytes[i + 6] == UInt8(ascii: "\\"), bytes[i + 7] == UInt8(ascii: "u"),
                                  let low = hex4(i + 8), low >= 0xDC00 && low <= 0xDFFF
                            else { return (i, "invalid \\u escape: unpaired high surrogate") }
                            i += 12
                        } else {
                            i += 6
                        }
                    default:
                        return (i, "invalid escape")
                    }
                case 0..<0x20:
                    return (i, "control character in a string (must be escaped)")
                case 0x80...:
                    // A multi-byte UTF-8 sequence: validate it in place.
                    var end = i + 1
                    while end < bytes.count && end < i + 4 && bytes[end] & 0xC0 == 0x80 { end += 1 }
                    let sequence = UnsafeBufferPointer(rebasing: bytes[i..<end])
                    if let bad = UTF8Validation.firstInvalidByte(sequence) { return (i + bad, "invalid UTF-8 in a string") }
                    i = end
                default:
                    i += 1
                }
            }
            return (start, "unterminated string")
        }

        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= bytes.count else { return nil }
            var v: UInt32 = 0
            for k in 0..<4 {
                let c = bytes[at + k]
                let d: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
                default: return nil
                }
                v = v << 4 | UInt32(d)
            }
            return v
        }
    }
}

/// The reasons under which sources count rejected records (`rejected.<reason>`), shared so that
/// every decoder names a problem the same way.
public enum RejectReason {
    /// The record's bytes are not valid UTF-8.
    public static let invalidUTF8 = "invalid_utf8"
    /// The record is longer than the source's `max_record_bytes`.
    public static let oversized = "oversized"
    /// Not a JSON object (syntax error, or another kind of value).
    public static let invalidJSON = "invalid_json"
    /// A CSV row with the wrong number of fields.
    public static let invalidCSV = "invalid_csv"
    /// A JSON `type` the wire format does not know.
    public static let unknownType = "unknown_type"
    /// A required field is absent.
    public static let missingField = "missing_field"
    /// A field of the wrong type: a string or null for a number, text in a numeric CSV column.
    public static let wrongType = "wrong_type"
    /// NaN or an infinity (CSV `nan`, `inf`, or a number that overflows a double).
    public static let nonFinite = "non_finite"
    /// A negative time, magnitude or count.
    public static let negative = "negative"
    /// A number beyond its bound (``InputLimits``), an integer too large for 64 bits, a
    /// window that is not positive.
    public static let outOfRange = "out_of_range"
    /// An event time before the previous one where times must not decrease.
    public static let outOfOrder = "out_of_order"
    /// Any other inconsistent value (empty series, malformed model trees...).
    public static let invalidField = "invalid_field"
}
