// JSON wire format of the course's 2021 topics (spec §1): a hand-written codec.
//
// Why hand-written: JSON is what the daemon does most between Kafka and the stages. Foundation's
// generic Codable coders (FoundationWireFormat.swift, kept as the reference) cost 7-32x more per
// message to encode and 3.5-12x more to decode (scripts/bench-codec prints both in one run;
// README, "Wire format"): an encoder and a `[[Double]]` per series, a type-probe pass, a Data
// copy and metadata lookups per decode.
// This codec writes straight into a byte buffer and reads the bytes once, and is held to
// Foundation's behaviour by a differential test (WireCodecTests) and by the `wire` fuzz target,
// which both run the two and require equal bytes, equal messages or equal rejection reasons.
//
// Choices, all valid JSON (unlike the course's C++ collectors, spec §9.3):
// - series events are `[[t, m], ...]` arrays with t relative to the first tweet;
// - numbers are written exactly (shortest round-trip form: 1234567 stays 1234567, spec §9.4),
//   as Foundation writes them: integers without a fraction, a Double as Swift's `description`
//   without a trailing ".0" (1e+20, 1e-07, -0, 0.1), a non-finite Double as the string "inf",
//   "-inf" or "nan" (which decoders reject as `wrong_type`);
// - strings escape `"`, `\` and control characters (\b \t \n \f \r, else \u00xx), not `/`;
// - window-keyed values (`size`, `parameters`, `sample`, `model`) also carry `T_obs` in the value,
//   so a JSON-lines file keeps the window that Kafka would carry in the key; course consumers
//   ignore the extra field;
// - `parameters` carries `n_supp` as its writer set it (the estimator's `n_supp` option:
//   G1/(1 − n*), the supplementary count, by default) plus `n_star` and `G1` (spec §1.3);
// - keys are written sorted by their UTF-8 bytes, optional fields omitted when nil, so equal
//   messages give equal bytes.
//
// Reading accepts what Foundation's JSONDecoder accepts, with the same verdicts: a UTF-8 BOM,
// trailing commas, duplicate keys (the first one wins), a number written 3.0 or 1e3 for an
// integer field (a whole Double below 2^53; above, the decimal value without its fraction),
// string contents and numbers checked only for the fields read. The course's variants are
// accepted (spec §1): cids and tweet_ids that are integers or strings (kept as they came, see
// ``CascadeID``); a `msg` of any JSON type, converted to text (null → "None", as Python's
// str(None); a number or boolean → its JSON text; an array or object → its compact JSON) and
// reported through `coercedMsg`, since msg is only ever displayed; `parameters` without
// `n_star`/`G1` (NaN, for the reader to derive), with `params` of four elements
// `[p, beta, n_star, G1]` or three `[p, beta, G1]` (fields win over params); `T_obs` from the
// Kafka key for window-keyed messages; log records without `type`.
//
// Not matched, on purpose: Foundation reads a document whose first bytes hold a NUL as UTF-16 or
// UTF-32; such input (never valid JSON as UTF-8) is handed to the reference decoder as is.

import FoundationEssentials

/// Encoding and decoding of messages in the course's wire format.
public enum WireFormat {
    // MARK: Encoding

    /// The JSON value of `message`, UTF-8, without a trailing newline.
    public static func encode(_ message: Message) -> [UInt8] {
        var out: [UInt8] = []
        encode(message, into: &out)
        return out
    }

    /// Appends the JSON value of `message` (UTF-8, no trailing newline) to `out`: the same bytes
    /// as ``encode(_:)``, without a buffer of its own (a sink reuses one buffer for every line).
    public static func encode(_ message: Message, into out: inout [UInt8]) {
        var w = Writer(out: [])
        swap(&w.out, &out)
        defer { swap(&w.out, &out) }
        switch message {
        case .tweet(let t):
            w.out.reserveCapacity(w.out.count + 96 + t.msg.utf8.count + t.info.utf8.count)
            w.raw("{\"info\":"); w.string(t.info)
            w.raw(",\"m\":"); w.double(t.magnitude)
            w.raw(",\"msg\":"); w.string(t.msg)
            w.raw(",\"t\":"); w.double(t.time)
            w.raw(",\"tweet_id\":"); w.cascade(t.cascade)
            w.raw(",\"type\":"); w.raw(t.kind == .tweet ? "\"tweet\"}" : "\"retweet\"}")
        case .series(let s):
            w.out.reserveCapacity(w.out.count + 96 + s.msg.utf8.count + 24 * s.times.count)
            w.raw("{\"T_obs\":"); w.int(s.tObs)
            w.raw(",\"cid\":"); w.cascade(s.cascade)
            w.raw(",\"msg\":"); w.string(s.msg)
            if let q = s.seq { w.raw(",\"seq\":"); w.int(q) }
            if let t0 = s.t0 { w.raw(",\"t0\":"); w.double(t0) }
            w.raw(",\"tweets\":[")
            for i in 0..<min(s.times.count, s.magnitudes.count) {
                w.raw(i == 0 ? "[" : ",[")
                w.double(s.times[i]); w.byte(0x2C); w.double(s.magnitudes[i]); w.byte(0x5D)
            }
            w.raw("],\"type\":\"serie\"}")
        case .size(let s):
            w.raw("{\"T_obs\":"); w.int(s.tObs)
            w.raw(",\"cid\":"); w.cascade(s.cascade)
            w.raw(",\"n_tot\":"); w.int(s.nTot)
            if let q = s.seq { w.raw(",\"seq\":"); w.int(q) }
            w.raw(",\"t_end\":"); w.double(s.tEnd)
            w.raw(",\"type\":\"size\"}")
        case .parameters(let p):
            w.byte(0x7B)
            if !p.g1.isNaN { w.raw("\"G1\":"); w.double(p.g1); w.byte(0x2C) }
            w.raw("\"T_obs\":"); w.int(p.tObs)
            w.raw(",\"cid\":"); w.cascade(p.cascade)
            if let f = p.features {
                w.raw(",\"features\":{")
                let keys = f.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
                for (i, k) in keys.enumerated() {
                    if i > 0 { w.byte(0x2C) }
                    w.string(k); w.byte(0x3A); w.double(f[k]!)
                }
                w.byte(0x7D)
            }
            w.raw(",\"msg\":"); w.string(p.msg)
            w.raw(",\"n_obs\":"); w.int(p.nObs)
            if !p.nStar.isNaN { w.raw(",\"n_star\":"); w.double(p.nStar) }
            w.raw(",\"n_supp\":"); w.double(p.nSupp)
            w.raw(",\"params\":["); w.double(p.p); w.byte(0x2C); w.double(p.beta); w.byte(0x5D)
            if let q = p.seq { w.raw(",\"seq\":"); w.int(q) }
            if let t0 = p.t0 { w.raw(",\"t0\":"); w.double(t0) }
            w.raw(",\"type\":\"parameters\"}")
        case .sample(let s):
            w.raw("{\"T_obs\":"); w.int(s.tObs)
            w.raw(",\"W\":"); w.double(s.w)
            w.raw(",\"X\":"); w.doubles(s.x)
            w.raw(",\"cid\":"); w.cascade(s.cascade)
            if let g = s.growth { w.raw(",\"growth\":"); w.double(g) }
            w.raw(",\"type\":\"sample\"}")
        case .model(let m):
            w.raw("{\"T_obs\":"); w.int(m.tObs)
            if let g = m.growthMax { w.raw(",\"growth_max\":"); w.double(g) }
            w.raw(",\"mode\":"); w.string(m.mode)
            if !m.residuals.isEmpty { w.raw(",\"residuals\":"); w.doubles(m.residuals) }
            w.raw(",\"samples\":"); w.int(m.samples)
            if let c = m.shift { w.raw(",\"shift\":"); w.double(c) }
            w.raw(",\"trees\":[")
            for (i, t) in m.trees.enumerated() {
                w.raw(i == 0 ? "{\"feature\":" : ",{\"feature\":"); w.ints(t.feature)
                w.raw(",\"left\":"); w.ints(t.left)
                w.raw(",\"right\":"); w.ints(t.right)
                w.raw(",\"threshold\":"); w.doubles(t.threshold)
                w.raw(",\"value\":"); w.doubles(t.value)
                w.byte(0x7D)
            }
            w.raw("],\"type\":\"model\",\"version\":"); w.int(m.version)
            if let v = m.wMax { w.raw(",\"w_max\":"); w.double(v) }
            if let v = m.wMin { w.raw(",\"w_min\":"); w.double(v) }
            w.byte(0x7D)
        case .alert(let a):
            w.raw("{\"T_obs\":"); w.int(a.tObs)
            w.raw(",\"cid\":"); w.cascade(a.cascade)
            if let i = a.interval { w.raw(",\"interval\":"); w.doubles(i) }
            if let m = a.model { w.raw(",\"model\":"); w.int(m) }
            w.raw(",\"msg\":"); w.string(a.msg)
            if let n = a.nObs { w.raw(",\"n_obs\":"); w.int(n) }
            w.raw(",\"n_tot\":"); w.double(a.nTot)
            if let p = a.pViral { w.raw(",\"p_viral\":"); w.double(p) }
            if let t = a.t { w.raw(",\"t\":"); w.double(t) }
            w.raw(",\"type\":\"alert\"}")
        case .stat(let s):
            w.raw("{\"ARE\":"); w.double(s.are)
            w.raw(",\"T_obs\":"); w.int(s.tObs)
            w.raw(",\"cid\":"); w.cascade(s.cascade)
            if let f = s.forecast { w.raw(",\"forecast\":"); w.double(f) }
            if let n = s.nObs { w.raw(",\"n_obs\":"); w.int(n) }
            if let n = s.nTot { w.raw(",\"n_tot\":"); w.int(n) }
            w.raw(",\"type\":\"stat\"}")
        case .log(let l):
            w.raw("{\"level\":"); w.string(l.level)
            w.raw(",\"message\":"); w.string(l.message)
            w.raw(",\"source\":"); w.string(l.source)
            w.raw(",\"t\":"); w.int(l.time)
            w.byte(0x7D)
        }
    }

    /// The Kafka key of `message` in the course's topics: the source id for tweets, T_obs for
    /// window-keyed messages (size, parameters, sample, model), none otherwise (spec §1).
    public static func key(_ message: Message) -> String? {
        switch message {
        case .tweet(let t): String(t.source)
        case .size(let s): String(s.tObs)
        case .parameters(let p): String(p.tObs)
        case .sample(let s): String(s.tObs)
        case .model(let m): String(m.tObs)
        case .series, .alert, .stat, .log: nil
        }
    }

    // MARK: Decoding

    /// Decodes one JSON value.
    ///
    /// - Parameters:
    ///   - bytes: the UTF-8 JSON value.
    ///   - key: the Kafka key, when there is one: the source id of a tweet, T_obs of window-keyed
    ///     messages whose value has no `T_obs`.
    /// - Throws: `WireFormatError` whose `reason` names the problem: `invalid_utf8`,
    ///   `invalid_json` (syntax, with the byte offset, or not an object), `unknown_type`,
    ///   `missing_field`, `wrong_type` (a string or null for a number...), `out_of_range` (a
    ///   number too large for its field or not an integer where one is expected; a time or
    ///   magnitude above ``InputLimits``; a window <= 0), `negative` (times, magnitudes, counts),
    ///   `out_of_order` (series times), `invalid_field` (other inconsistencies).
    public static func decode(_ bytes: some Collection<UInt8>, key: String? = nil) throws -> Message {
        var coerced = false
        return try decode(bytes, key: key, coercedMsg: &coerced)
    }

    /// Decodes one JSON value as ``decode(_:key:)`` does, setting `coercedMsg` when the value's
    /// `msg` was not a JSON string and was converted to text (readers count it `coerced_msg`).
    public static func decode(_ bytes: some Collection<UInt8>, key: String?, coercedMsg: inout Bool) throws -> Message {
        if let result = try bytes.withContiguousStorageIfAvailable({ try decode(buffer: $0, key: key, coercedMsg: &coercedMsg) }) {
            return result
        }
        return try Array(bytes).withUnsafeBufferPointer { try decode(buffer: $0, key: key, coercedMsg: &coercedMsg) }
    }

    /// Decodes one JSON value held in `buffer` (see ``decode(_:key:)``).
    public static func decode(buffer: UnsafeBufferPointer<UInt8>, key: String?, coercedMsg: inout Bool) throws -> Message {
        if let bad = UTF8Validation.firstInvalidByte(buffer) {
            throw WireFormatError(RejectReason.invalidUTF8, "invalid UTF-8 at byte \(bad)")
        }
        // Foundation reads a document whose first bytes hold a NUL as UTF-16/32: left to it.
        for i in 0..<min(4, buffer.count) where buffer[i] == 0 {
            return try FoundationWireFormat.decode(buffer, key: key, coercedMsg: &coercedMsg)
        }
        var r = Reader(doc: buffer)
        return try r.message(key: key, coercedMsg: &coercedMsg)
    }

    /// ``decode(buffer:key:coercedMsg:)`` with the members of `features` and of a `msg` object
    /// visited in another order (`memberOrder` > 0): for the differential test, since Foundation
    /// visits them in an order that varies between runs.
    @_spi(WireTesting)
    public static func decode(buffer: UnsafeBufferPointer<UInt8>, key: String?, coercedMsg: inout Bool, memberOrder: Int) throws -> Message {
        if memberOrder == 0 || UTF8Validation.firstInvalidByte(buffer) != nil || buffer.prefix(4).contains(0) {
            // (memberOrder −1: Foundation's dictionary order, see `objectMembers`.)
            return try decode(buffer: buffer, key: key, coercedMsg: &coercedMsg)
        }
        var r = Reader(doc: buffer)
        r.memberOrder = memberOrder
        return try r.message(key: key, coercedMsg: &coercedMsg)
    }
}

// MARK: - Writer

/// Appends JSON text to a byte buffer, formatting as Foundation's JSONEncoder does.
struct Writer {
    var out: [UInt8]

    @inline(__always) mutating func byte(_ b: UInt8) { out.append(b) }

    @inline(__always) mutating func raw(_ s: StaticString) {
        s.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    mutating func int(_ v: Int) { int(Int64(v)) }

    mutating func int(_ v: Int64) {
        if v >= 0 && v < 10 { out.append(0x30 &+ UInt8(v)); return }
        var x = v.magnitude
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { buf in
            var i = 20
            while x > 0 {
                i -= 1
                buf[i] = 0x30 &+ UInt8(x % 10)
                x /= 10
            }
            if v < 0 { out.append(0x2D) }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: buf[i..<20]))
        }
    }

    /// A Double as Foundation writes it: Swift's shortest round-trip `description` without a
    /// trailing ".0" (1e+20, 1e-07, 100, -0, 0.1); non-finite values as "inf", "-inf", "nan".
    mutating func double(_ d: Double) {
        guard d.isFinite else {
            raw(d.isNaN ? "\"nan\"" : d < 0 ? "\"-inf\"" : "\"inf\"")
            return
        }
        // Whole numbers below 10^15 are written with all their digits by `description` too.
        if d.magnitude < 1e15, d == d.rounded(.towardZero) {
            if d == 0 && d.sign == .minus { raw("-0") } else { int(Int64(d)) }
            return
        }
        var s = d.description
        if s.hasSuffix(".0") { s.removeLast(2) }
        s.withUTF8 { out.append(contentsOf: $0) }
    }

    mutating func doubles(_ a: [Double]) {
        byte(0x5B)
        for (i, d) in a.enumerated() {
            if i > 0 { byte(0x2C) }
            double(d)
        }
        byte(0x5D)
    }

    mutating func ints(_ a: [Int]) {
        byte(0x5B)
        for (i, v) in a.enumerated() {
            if i > 0 { byte(0x2C) }
            int(v)
        }
        byte(0x5D)
    }

    mutating func cascade(_ c: CascadeID) {
        switch c {
        case .number(let n): int(n)
        case .string(let s): string(s)
        }
    }

    /// A JSON string with Foundation's escaping: `"` and `\` escaped, control characters as
    /// \b \t \n \f \r or \u00xx (lowercase hex), everything else (`/`, U+007F, non-ASCII) as is.
    mutating func string(_ s: String) {
        var s = s
        byte(0x22)
        s.withUTF8 { u in
            var start = 0
            for i in 0..<u.count {
                let b = u[i]
                if b >= 0x20 && b != 0x22 && b != 0x5C { continue }
                if start < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[start..<i])) }
                start = i + 1
                switch b {
                case 0x22: raw("\\\"")
                case 0x5C: raw("\\\\")
                case 0x08: raw("\\b")
                case 0x09: raw("\\t")
                case 0x0A: raw("\\n")
                case 0x0C: raw("\\f")
                case 0x0D: raw("\\r")
                default:
                    let hex: [UInt8] = Array("0123456789abcdef".utf8)
                    raw("\\u00")
                    byte(hex[Int(b >> 4)])
                    byte(hex[Int(b & 15)])
                }
            }
            if start < u.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[start..<u.count])) }
        }
        byte(0x22)
    }
}

// MARK: - Reader

/// A single-pass reader of one wire-format document, with Foundation's JSONDecoder verdicts.
///
/// `scan` checks the document's structure as Foundation's scanner does (lenient: trailing commas
/// allowed, string contents and numbers not checked) and records the top-level members; fields
/// are then read in the order of the reference's Codable structs, so that the first problem
/// found is the one Foundation reports. A problem Foundation reports as "data corrupted" is
/// `invalid_json` (with the offset of the first syntax error of the document by ``JSONSyntax``)
/// when the document has one, else `out_of_range`, as the reference classifies it.
struct Reader {
    let doc: UnsafeBufferPointer<UInt8>
    /// The bytes after a UTF-8 BOM, if any.
    var start = 0
    /// 0, or a permutation of object members for the differential test (see `objectMembers`).
    var memberOrder = 0
    /// Top-level members in document order: key (its text, unescaped) and value offset.
    var members: [(keyStart: Int, keyEnd: Int, escaped: String?, value: Int)] = []

    init(doc: UnsafeBufferPointer<UInt8>) { self.doc = doc }

    // MARK: Errors

    /// The error for what Foundation calls corrupted data (see ``Reader``).
    func corrupted(_ what: @autoclosure () -> String) -> WireFormatError {
        if let (offset, problem) = JSONSyntax.firstError(doc) {
            return WireFormatError(RejectReason.invalidJSON, "invalid JSON at byte \(offset): \(problem)")
        }
        return WireFormatError(RejectReason.outOfRange, "\(what()): does not fit its field (too large, or not an integer where one is expected)")
    }

    func wrongType(_ field: @autoclosure () -> String, _ expected: String, at i: Int) -> WireFormatError {
        let found: String
        switch doc[i] {
        case 0x6E: return WireFormatError(RejectReason.wrongType, "field \(field()): expected \(expected), found null")
        case 0x22: found = "a string"
        case 0x7B: found = "an object"
        case 0x5B: found = "an array"
        case 0x74, 0x66: found = "a boolean"
        default: found = "a number"
        }
        return WireFormatError(RejectReason.wrongType, "field \(field()): expected \(expected), found \(found)")
    }

    static func missing(_ field: String) -> WireFormatError {
        WireFormatError(RejectReason.missingField, "field \(field): missing")
    }

    // MARK: Structure (Foundation's scanner rules)

    @inline(__always) func isBlank(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }

    @inline(__always) func skipBlanks(_ i: Int) -> Int {
        var i = i
        while i < doc.count && isBlank(doc[i]) { i += 1 }
        return i
    }

    struct ScanError: Error {}

    /// The offset after the value at `i` (blanks skipped before it), checking its structure.
    func skipValue(_ i: Int, depth: Int) throws(ScanError) -> Int {
        var i = skipBlanks(i)
        guard i < doc.count else { throw ScanError() }
        switch doc[i] {
        case 0x22:
            return try skipString(i).end
        case 0x7B:
            guard depth < 512 else { throw ScanError() }
            i = skipBlanks(i + 1)
            guard i < doc.count else { throw ScanError() }
            if doc[i] == 0x7D { return i + 1 }
            while true {
                i = skipBlanks(i)
                guard i < doc.count, doc[i] == 0x22 else { throw ScanError() }
                i = skipBlanks(try skipString(i).end)
                guard i < doc.count, doc[i] == 0x3A else { throw ScanError() }
                i = skipBlanks(try skipValue(i + 1, depth: depth + 1))
                guard i < doc.count else { throw ScanError() }
                if doc[i] == 0x7D { return i + 1 }
                guard doc[i] == 0x2C else { throw ScanError() }
                i = skipBlanks(i + 1)
                guard i < doc.count else { throw ScanError() }
                if doc[i] == 0x7D { return i + 1 }
            }
        case 0x5B:
            guard depth < 512 else { throw ScanError() }
            i = skipBlanks(i + 1)
            guard i < doc.count else { throw ScanError() }
            if doc[i] == 0x5D { return i + 1 }
            while true {
                i = skipBlanks(try skipValue(i, depth: depth + 1))
                guard i < doc.count else { throw ScanError() }
                if doc[i] == 0x5D { return i + 1 }
                guard doc[i] == 0x2C else { throw ScanError() }
                i = skipBlanks(i + 1)
                guard i < doc.count else { throw ScanError() }
                if doc[i] == 0x5D { return i + 1 }
            }
        case 0x74: return try literal(i, "true")
        case 0x66: return try literal(i, "false")
        case 0x6E: return try literal(i, "null")
        case 0x2D, 0x30...0x39: return numberEnd(i)
        default: throw ScanError()
        }
    }

    /// ``skipValue(_:depth:)`` for the top-level object at `i`, recording its members.
    mutating func scanTopObject(_ i: Int) throws(ScanError) -> Int {
        members.reserveCapacity(16)
        var i = skipBlanks(i + 1)
        guard i < doc.count else { throw ScanError() }
        if doc[i] == 0x7D { return i + 1 }
        while true {
            i = skipBlanks(i)
            guard i < doc.count, doc[i] == 0x22 else { throw ScanError() }
            let (end, simple) = try skipString(i)
            var escaped: String? = nil
            if !simple {
                guard let s = stringText(i) else { throw ScanError() }
                escaped = s
            }
            let keyStart = i + 1
            i = skipBlanks(end)
            guard i < doc.count, doc[i] == 0x3A else { throw ScanError() }
            let value = skipBlanks(i + 1)
            members.append((keyStart, end - 1, escaped, value))
            i = skipBlanks(try skipValue(value, depth: 1))
            guard i < doc.count else { throw ScanError() }
            if doc[i] == 0x7D { return i + 1 }
            guard doc[i] == 0x2C else { throw ScanError() }
            i = skipBlanks(i + 1)
            guard i < doc.count else { throw ScanError() }
            if doc[i] == 0x7D { return i + 1 }
        }
    }

    func literal(_ i: Int, _ word: StaticString) throws(ScanError) -> Int {
        let n = word.utf8CodeUnitCount
        guard i + n <= doc.count else { throw ScanError() }
        for k in 0..<n where doc[i + k] != word.utf8Start[k] { throw ScanError() }
        return i + n
    }

    /// The end of the number at `i`: the run of digits, '.', '+', '-', 'e', 'E'.
    @inline(__always) func numberEnd(_ i: Int) -> Int {
        var j = i + 1
        while j < doc.count {
            let b = doc[j]
            if (b >= 0x30 && b <= 0x39) || b == 0x2E || b == 0x2B || b == 0x2D || b == 0x65 || b == 0x45 { j += 1 } else { break }
        }
        return j
    }

    /// The string at `i` (on its quote): the offset after its closing quote, and whether it is
    /// simple (no escape, no control character: its bytes are its text).
    func skipString(_ i: Int) throws(ScanError) -> (end: Int, simple: Bool) {
        var j = i + 1
        var simple = true
        while j < doc.count {
            let b = doc[j]
            if b == 0x22 { return (j + 1, simple) }
            if b == 0x5C {
                simple = false
                j += 1
                guard j < doc.count else { throw ScanError() }
                if doc[j] == 0x75 {
                    guard j + 5 <= doc.count else { throw ScanError() }
                    for k in 1...4 where doc[j + k] == 0x22 { throw ScanError() }
                    j += 5
                } else {
                    j += 1
                }
                continue
            }
            if b < 0x20 { simple = false }
            j += 1
        }
        throw ScanError()
    }

    // MARK: Values

    /// The text of the string at `i` (on its quote), or nil when Foundation cannot read it
    /// (a control character, a bad escape, an unpaired surrogate).
    func stringText(_ i: Int) -> String? {
        var j = i + 1
        var fast = j
        while fast < doc.count, doc[fast] != 0x22, doc[fast] != 0x5C, doc[fast] >= 0x20 { fast += 1 }
        if fast < doc.count, doc[fast] == 0x22 {
            return String(decoding: UnsafeBufferPointer(rebasing: doc[j..<fast]), as: UTF8.self)
        }
        var out: [UInt8] = []
        out.reserveCapacity(fast - j + 16)
        func hex4(_ k: Int) -> UInt16? {
            guard k + 4 <= doc.count else { return nil }
            var v: UInt16 = 0
            for m in 0..<4 {
                let c = doc[k + m]
                let d: UInt8
                switch c {
                case 0x30...0x39: d = c - 0x30
                case 0x41...0x46: d = c - 0x41 + 10
                case 0x61...0x66: d = c - 0x61 + 10
                default: return nil
                }
                v = v << 4 | UInt16(d)
            }
            return v
        }
        while j < doc.count {
            let b = doc[j]
            if b == 0x22 { return String(decoding: out, as: UTF8.self) }
            if b < 0x20 { return nil }
            if b != 0x5C { out.append(b); j += 1; continue }
            j += 1
            guard j < doc.count else { return nil }
            switch doc[j] {
            case 0x22: out.append(0x22)
            case 0x5C: out.append(0x5C)
            case 0x2F: out.append(0x2F)
            case 0x62: out.append(0x08)
            case 0x66: out.append(0x0C)
            case 0x6E: out.append(0x0A)
            case 0x72: out.append(0x0D)
            case 0x74: out.append(0x09)
            case 0x75:
                guard let u = hex4(j + 1) else { return nil }
                j += 5
                let scalar: Unicode.Scalar
                if UTF16.isLeadSurrogate(u) {
                    guard j + 1 < doc.count, doc[j] == 0x5C, doc[j + 1] == 0x75,
                          let low = hex4(j + 2), UTF16.isTrailSurrogate(low) else { return nil }
                    j += 6
                    scalar = Unicode.Scalar(0x10000 + (UInt32(u - 0xD800) << 10) + UInt32(low - 0xDC00))!
                } else {
                    guard let s = Unicode.Scalar(u) else { return nil }
                    scalar = s
                }
                out.append(contentsOf: UTF8.encode(scalar)!)
                continue
            default: return nil
            }
            j += 1
        }
        return nil
    }

    /// A String field.
    func string(_ i: Int, _ field: @autoclosure () -> String) throws -> String {
        guard doc[i] == 0x22 else { throw wrongType(field(), "a string", at: i) }
        guard let s = stringText(i) else { throw corrupted("field \(field())") }
        return s
    }

    /// The parts of the number at `i..<end` when it is a JSON number (RFC 8259 grammar).
    struct Number {
        var negative = false
        /// The significant digits as an integer, as many as fit 64 bits, and how many there are.
        var mantissa: UInt64 = 0
        var digits = 0
        /// Some digits did not fit in `mantissa`.
        var truncated = false
        /// The power of ten of the mantissa's last digit (exponent − digits after it dropped).
        var exponent = 0
        /// No fraction and no exponent.
        var plain = true
        var allZero = true
    }

    func number(_ i: Int, _ end: Int) -> Number? {
        var n = Number()
        var j = i
        if doc[j] == 0x2D { n.negative = true; j += 1 }
        guard j < end else { return nil }
        var dropped = 0
        @inline(__always) func digit(_ d: UInt8, fraction: Bool) {
            if d != 0 { n.allZero = false }
            if n.digits == 0 && d == 0 {
                if fraction { n.exponent -= 1 }
                return
            }
            let (p, o1) = n.mantissa.multipliedReportingOverflow(by: 10)
            let (q, o2) = p.addingReportingOverflow(UInt64(d))
            n.digits += 1
            if !n.truncated && !o1 && !o2 {
                n.mantissa = q
                if fraction { n.exponent -= 1 }
            } else {
                n.truncated = true
                if !fraction { dropped += 1 }
            }
        }
        if doc[j] == 0x30 {
            j += 1
        } else if doc[j] >= 0x31 && doc[j] <= 0x39 {
            while j < end, doc[j] >= 0x30 && doc[j] <= 0x39 { digit(doc[j] - 0x30, fraction: false); j += 1 }
        } else {
            return nil
        }
        if j < end && doc[j] == 0x2E {
            n.plain = false
            j += 1
            let first = j
            while j < end, doc[j] >= 0x30 && doc[j] <= 0x39 { digit(doc[j] - 0x30, fraction: true); j += 1 }
            guard j > first else { return nil }
        }
        if j < end && (doc[j] == 0x65 || doc[j] == 0x45) {
            n.plain = false
            j += 1
            var negativeExponent = false
            if j < end && (doc[j] == 0x2B || doc[j] == 0x2D) { negativeExponent = doc[j] == 0x2D; j += 1 }
            let first = j
            var e = 0
            while j < end, doc[j] >= 0x30 && doc[j] <= 0x39 { e = min(e * 10 + Int(doc[j] - 0x30), 100_000_000); j += 1 }
            guard j > first else { return nil }
            n.exponent += negativeExponent ? -e : e
        }
        guard j == end else { return nil }
        n.exponent += dropped
        return n
    }

    private static let powers: [Double] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14,
                                           1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]

    /// The Double value of a JSON number (correctly rounded); nil when not finite.
    func doubleValue(_ n: Number, _ i: Int, _ end: Int) -> Double? {
        if n.digits <= 15 && n.exponent >= -22 && n.exponent <= 22 {
            // Exact: both operands are exact doubles, so one correctly rounded operation.
            let m = Double(n.mantissa)
            let v = n.exponent >= 0 ? m * Self.powers[n.exponent] : m / Self.powers[-n.exponent]
            return n.negative ? -v : v
        }
        guard let v = Double(String(decoding: UnsafeBufferPointer(rebasing: doc[i..<end]), as: UTF8.self)), v.isFinite else { return nil }
        return v
    }

    /// Whether a number that strtod read as 0 is written as zero, exactly as Foundation's
    /// `isTrueZero` decides (including its quirk: the last `count % 4` bytes are checked last to
    /// first, so 0.00e01 is not a true zero while 0e-999 is).
    func trueZero(_ i: Int, _ end: Int) -> Bool {
        func check(_ b: UInt8) -> Bool? {
            if b >= 0x31 && b <= 0x39 { return false }
            if b == 0x65 || b == 0x45 { return true }
            return nil
        }
        var k = i
        while end - k >= 4 {
            for m in 0..<4 { if let r = check(doc[k + m]) { return r } }
            k += 4
        }
        for m in stride(from: end - k - 1, through: 0, by: -1) { if let r = check(doc[k + m]) { return r } }
        return true
    }

    /// A Double field (Foundation: a JSON number, finite, not rounded to zero).
    func double(_ i: Int, _ field: @autoclosure () -> String) throws -> Double {
        let b = doc[i]
        guard b == 0x2D || (b >= 0x30 && b <= 0x39) else { throw wrongType(field(), "a number", at: i) }
        let end = numberEnd(i)
        guard let n = number(i, end), let v = doubleValue(n, i, end), v != 0 || trueZero(i, end) else {
            throw corrupted("field \(field())")
        }
        return v
    }

    func optionalDouble(_ i: Int?, _ field: @autoclosure () -> String) throws -> Double? {
        guard let i, doc[i] != 0x6E else { return nil }
        return try double(i, field())
    }

    /// An integer field, as Foundation reads one: a plain integer that fits; else the number
    /// read as a Double, which must be whole; below 2^53 that Double, above the decimal value
    /// without its fraction (Foundation's `_slowpath_unwrapFixedWidthInteger`).
    func int64(_ i: Int, _ field: @autoclosure () -> String) throws -> Int64 {
        let b = doc[i]
        guard b == 0x2D || (b >= 0x30 && b <= 0x39) else { throw wrongType(field(), "an integer", at: i) }
        let end = numberEnd(i)
        guard let n = number(i, end) else { throw corrupted("field \(field())") }
        if n.plain && !n.truncated {
            let limit: UInt64 = n.negative ? UInt64(Int64.max) + 1 : UInt64(Int64.max)
            let m = n.mantissa
            if n.exponent == 0 && m <= limit {
                return n.negative ? (m == limit ? Int64.min : -Int64(m)) : Int64(m)
            }
        }
        // strtod's value (0 when it underflows), which must be whole and fit.
        let d = n.allZero ? 0 : (doubleValue(n, i, end) ?? .infinity)
        guard let whole = Int64(exactly: d) else { throw corrupted("field \(field())") }
        if d.magnitude < 9007199254740992 { return whole }
        // The decimal value without its fraction, as Foundation's Decimal gives it.
        guard let v = decimalWhole(i, end) else { throw corrupted("field \(field())") }
        return v
    }

    /// The number at `i..<end` (a valid JSON number) without its fraction, as Foundation's
    /// `Int64(Decimal)` gives it: the significant digits with trailing zeros moved to the
    /// exponent (Decimal's compact form) must fit 64 bits; nil when they or the value do not.
    func decimalWhole(_ i: Int, _ end: Int) -> Int64? {
        var j = i
        let negative = doc[j] == 0x2D
        if negative { j += 1 }
        var digits: [UInt8] = []
        var exponent = 0
        var fraction = false
        while j < end {
            let c = doc[j]
            if c >= 0x30 && c <= 0x39 {
                digits.append(c - 0x30)
                if fraction { exponent -= 1 }
            } else if c == 0x2E {
                fraction = true
            } else {
                break
            }
            j += 1
        }
        if j < end {  // the exponent
            j += 1
            var negativeExponent = false
            if doc[j] == 0x2B || doc[j] == 0x2D { negativeExponent = doc[j] == 0x2D; j += 1 }
            var e = 0
            while j < end { e = min(e * 10 + Int(doc[j] - 0x30), 100_000_000); j += 1 }
            exponent += negativeExponent ? -e : e
        }
        var first = 0
        while first < digits.count && digits[first] == 0 { first += 1 }
        var last = digits.count
        while last > first && digits[last - 1] == 0 { last -= 1; exponent += 1 }
        if first == last { return 0 }
        var m: UInt64 = 0
        for k in first..<last {
            let (p, o1) = m.multipliedReportingOverflow(by: 10)
            let (q, o2) = p.addingReportingOverflow(UInt64(digits[k]))
            guard !o1 && !o2 else { return nil }
            m = q
        }
        if exponent < 0 {
            for _ in 0..<min(-exponent, 40) { m /= 10 }
        } else {
            for _ in 0..<min(exponent, 40) {
                let (p, o) = m.multipliedReportingOverflow(by: 10)
                guard !o else { return nil }
                m = p
            }
        }
        guard m <= UInt64(Int64.max) else { return nil }
        return negative ? -Int64(m) : Int64(m)
    }

    func int(_ i: Int, _ field: @autoclosure () -> String) throws -> Int { Int(try int64(i, field())) }

    func optionalInt(_ i: Int?, _ field: @autoclosure () -> String) throws -> Int? {
        guard let i, doc[i] != 0x6E else { return nil }
        return try int(i, field())
    }

    /// Calls `body` with the offset of each element of the array at `i` (a wrong type if it is
    /// not an array).
    func elements(_ i: Int, _ field: @autoclosure () -> String, _ body: (Int, Int) throws -> Void) throws {
        guard doc[i] == 0x5B else { throw wrongType(field(), "an array", at: i) }
        var j = skipBlanks(i + 1)
        var k = 0
        while doc[j] != 0x5D {
            try body(j, k)
            k += 1
            j = skipBlanks((try? skipValue(j, depth: 0)) ?? doc.count)
            if doc[j] == 0x2C { j = skipBlanks(j + 1) }
        }
    }

    func doubles(_ i: Int, _ field: @autoclosure () -> String) throws -> [Double] {
        var a: [Double] = []
        try elements(i, field()) { j, k in a.append(try double(j, "\(field())[\(k)]")) }
        return a
    }

    func optionalDoubles(_ i: Int?, _ field: @autoclosure () -> String) throws -> [Double]? {
        guard let i, doc[i] != 0x6E else { return nil }
        return try doubles(i, field())
    }

    func ints(_ i: Int, _ field: @autoclosure () -> String) throws -> [Int] {
        var a: [Int] = []
        try elements(i, field()) { j, k in a.append(try int(j, "\(field())[\(k)]")) }
        return a
    }

    /// The members of the object at `i` as Foundation's keyed container holds them: every key
    /// read (nil when one cannot be), the first of duplicates kept (Swift string equality), in
    /// document order. (Foundation decodes a `[String: Double]` or an object's `allKeys` in the
    /// iteration order of a dictionary, which varies between runs: when two values are bad, the
    /// one it reports varies too. This reader reports the first in the document;
    /// `memberOrder` > 0 rotates the order to start at member `memberOrder % count` (reversed
    /// every other round), for the differential test to try Foundation's: every bad member can
    /// come first.)
    func objectMembers(_ i: Int) -> [(String, Int)]? {
        var out: [(String, Int)] = []
        var seen = Set<String>()
        var count = 0
        var j = skipBlanks(i + 1)
        while doc[j] != 0x7D {
            guard let key = stringText(j) else { return nil }
            j = skipBlanks((try? skipString(j).end) ?? doc.count)
            j = skipBlanks(j + 1)  // the colon
            if seen.insert(key).inserted { out.append((key, j)) }
            count += 1
            j = skipBlanks((try? skipValue(j, depth: 0)) ?? doc.count)
            if doc[j] == 0x2C { j = skipBlanks(j + 1) }
        }
        if memberOrder < 0 {
            // Foundation's order: a dictionary reserved for every member, filled first-wins
            // (the same order as Foundation's only under SWIFT_DETERMINISTIC_HASHING=1, when a
            // dictionary's seed depends on its capacity alone; the wire fuzz target runs so).
            var dictionary: [String: Int] = [:]
            dictionary.reserveCapacity(count)
            for (k, v) in out { dictionary[k] = v }
            return dictionary.map { ($0.key, $0.value) }
        }
        if memberOrder > 0 && out.count > 1 {
            let r = memberOrder % out.count
            out = Array(out[r...] + out[..<r])
            if memberOrder / out.count % 2 == 1 { out.reverse() }
        }
        return out
    }

    /// A cascade id: a string, or an integer that fits 64 bits (``CascadeID``'s decoding).
    func cascade(_ i: Int, _ field: @autoclosure () -> String) throws -> CascadeID {
        if doc[i] == 0x22, let s = stringText(i) { return .string(s) }
        return .number(try int64(i, field()))
    }

    /// A `msg` field: any JSON value, as text (see WireText); `coerced` when not a string.
    func text(_ i: Int, _ field: @autoclosure () -> String) throws -> (text: String, coerced: Bool) {
        if doc[i] == 0x22 {
            guard let s = stringText(i) else { throw corrupted("field \(field())") }
            return (s, false)
        }
        if doc[i] == 0x6E { return ("None", true) }
        return (try anyJSON(i, field()).json, true)
    }

    /// Any JSON value as WireText reads it through Foundation (AnyJSON).
    func anyJSON(_ i: Int, _ field: @autoclosure () -> String) throws -> AnyJSON {
        switch doc[i] {
        case 0x7B:
            guard let members = objectMembers(i) else { throw wrongType(field(), "a JSON value", at: i) }
            var o: [String: AnyJSON] = [:]
            for (k, j) in members where o[k] == nil { o[k] = try anyJSON(j, "\(field()).\(k)") }
            return .object(o)
        case 0x5B:
            var a: [AnyJSON] = []
            try elements(i, field()) { j, k in a.append(try anyJSON(j, "\(field())[\(k)]")) }
            return .array(a)
        case 0x6E: return .null
        case 0x74: return .bool(true)
        case 0x66: return .bool(false)
        case 0x22: return .string(try string(i, field()))
        default:
            if let v = try? int64(i, field()) { return .integer(v) }
            if let d = try? double(i, field()) { return .number(d) }
            throw wrongType(field(), "a JSON value", at: i)
        }
    }

    // MARK: Members of the top-level object

    /// The value offset of the first top-level member named `name`, if any.
    func member(_ name: StaticString) -> Int? {
        let n = name.utf8CodeUnitCount
        let p = name.utf8Start
        for m in members {
            if let s = m.escaped {
                if s.utf8.elementsEqual(UnsafeBufferPointer(start: p, count: n)) { return m.value }
            } else if m.keyEnd - m.keyStart == n {
                var equal = true
                for k in 0..<n where doc[m.keyStart + k] != p[k] { equal = false; break }
                if equal { return m.value }
            }
        }
        return nil
    }

    /// A required member's value offset.
    func required(_ name: StaticString) throws -> Int {
        guard let i = member(name) else { throw Self.missing("\(name)") }
        return i
    }

    /// An optional member's value offset: nil when absent or null (decodeIfPresent).
    func present(_ name: StaticString) -> Int? {
        guard let i = member(name), doc[i] != 0x6E else { return nil }
        return i
    }

    // MARK: The message

    mutating func message(key: String?, coercedMsg: inout Bool) throws -> Message {
        // The structure of the whole document first, as Foundation's scanner.
        if doc.count >= 3 && doc[0] == 0xEF && doc[1] == 0xBB && doc[2] == 0xBF { start = 3 }
        let top = skipBlanks(start)
        // One pass over the document: its structure as Foundation's scanner checks it, and the
        // top-level members with every key read (Foundation's keyed container reads them all; a
        // key it cannot read is corrupted data, as a syntax error is).
        do {
            guard top < doc.count else { throw ScanError() }
            let end = doc[top] == 0x7B ? try scanTopObject(top) : try skipValue(top, depth: 0)
            guard skipBlanks(end) == doc.count else { throw ScanError() }
        } catch {
            throw corrupted("the document")
        }
        switch doc[top] {
        case 0x7B: break
        case 0x6E: throw WireFormatError(RejectReason.wrongType, "expected an object, found null")
        default: throw WireFormatError(RejectReason.invalidJSON, "invalid JSON: the value is not an object")
        }

        let type: String?
        if let t = present("type") { type = try string(t, "type") } else { type = nil }
        switch type {
        case "tweet", "retweet": return try tweet(type!, key: key, coercedMsg: &coercedMsg)
        case "serie": return try series(coercedMsg: &coercedMsg)
        case "size": return try size(key: key)
        case "parameters": return try parameters(key: key, coercedMsg: &coercedMsg)
        case "sample": return try sample(key: key)
        case "model": return try model()
        case "alert": return try alert(coercedMsg: &coercedMsg)
        case "stat": return try stat()
        case nil: return try log()
        case let other?: throw WireFormatError(RejectReason.unknownType, "unknown message type \"\(other)\"")
        }
    }

    typealias Checks = FoundationWireFormat

    func keyedWindow(_ value: Int?, key: String?) throws -> Int {
        if let value { return try Checks.window(value) }
        if let key, let w = Int(key) { return try Checks.window(w) }
        throw WireFormatError(RejectReason.missingField, "field T_obs: missing, and no numeric key")
    }

    func tweet(_ type: String, key: String?, coercedMsg: inout Bool) throws -> Message {
        let msg = try member("msg").map { try text($0, "msg") }
        let t = try double(try required("t"), "t")
        let m = try double(try required("m"), "m")
        let cid = try present("tweet_id").map { try cascade($0, "tweet_id") }
        let src = try present("source").map { try int64($0, "source") }
        let info = try present("info").map { try string($0, "info") }
        try Checks.check("t", t, max: InputLimits.maxTime, what: "time")
        try Checks.check("m", m, max: InputLimits.maxMagnitude, what: "magnitude")
        guard let cid else { throw WireFormatError(RejectReason.missingField, "field tweet_id: missing") }
        let source: SourceID
        if let key, let k = SourceID(key) { source = k } else { source = src ?? 0 }
        coercedMsg = msg?.coerced ?? false
        return .tweet(Tweet(kind: type == "tweet" ? .tweet : .retweet, msg: msg?.text ?? "None",
                            time: t, magnitude: m, source: source, cascade: cid, info: info ?? ""))
    }

    func series(coercedMsg: inout Bool) throws -> Message {
        let cid = try cascade(try required("cid"), "cid")
        let msg = try text(try required("msg"), "msg")
        let tObs = try int(try required("T_obs"), "T_obs")
        // Every pair is read before any is checked (Foundation decodes [[Double]] first).
        var times: [Double] = [], marks: [Double] = []
        var badPair: Int? = nil
        let tweets = try required("tweets")
        try elements(tweets, "tweets") { j, k in
            var count = 0
            try elements(j, "tweets[\(k)]") { e, c in
                let v = try double(e, "tweets[\(k)][\(c)]")
                if c == 0 { times.append(v) } else if c == 1 { marks.append(v) }
                count += 1
            }
            if count != 2 {
                if badPair == nil { badPair = k }
                while times.count <= k { times.append(0) }
                while marks.count <= k { marks.append(0) }
            }
        }
        let seq = try optionalInt(present("seq"), "seq")
        let t0 = try optionalDouble(present("t0"), "t0")
        guard !times.isEmpty else { throw WireFormatError("field tweets: empty series") }
        let n = badPair ?? times.count
        for i in 0..<min(n + 1, times.count) {
            if i == badPair { throw WireFormatError("field tweets[\(i)]: expected [t, m]") }
            guard times[i].magnitude <= InputLimits.maxTime else {
                throw WireFormatError(RejectReason.outOfRange, "field tweets[\(i)]: time \(times[i]) beyond \(InputLimits.maxTime) s")
            }
            try Checks.check("tweets[\(i)][1]", marks[i], max: InputLimits.maxMagnitude, what: "magnitude")
            if i > 0, times[i] < times[i - 1] {
                throw WireFormatError(RejectReason.outOfOrder, "field tweets[\(i)]: time \(times[i]) before \(times[i - 1])")
            }
        }
        // Absolute times (2020 variant, spec §1.2) are shifted so the first tweet is at 0.
        if let first = times.first, first != 0 { for i in times.indices { times[i] -= first } }
        coercedMsg = msg.coerced
        return .series(Series(cascade: cid, msg: msg.text, tObs: try Checks.window(tObs), times: times, magnitudes: marks,
                              seq: try Checks.sequence(seq), t0: t0 == nil ? nil : try Checks.sourceTime("t0", t0)))
    }

    func size(key: String?) throws -> Message {
        let cid = try cascade(try required("cid"), "cid")
        let tObs = try optionalInt(present("T_obs"), "T_obs")
        let nTot = try int(try required("n_tot"), "n_tot")
        let tEnd = try double(try required("t_end"), "t_end")
        let seq = try optionalInt(present("seq"), "seq")
        guard nTot >= 0 else { throw WireFormatError(RejectReason.negative, "field n_tot: \(nTot) < 0") }
        try Checks.check("t_end", tEnd, max: InputLimits.maxTime, what: "time")
        return .size(CascadeSize(cascade: cid, tObs: try keyedWindow(tObs, key: key), nTot: nTot, tEnd: tEnd,
                                 seq: try Checks.sequence(seq)))
    }

    func parameters(key: String?, coercedMsg: inout Bool) throws -> Message {
        let cid = try cascade(try required("cid"), "cid")
        let msg = try text(try required("msg"), "msg")
        let tObs = try optionalInt(present("T_obs"), "T_obs")
        let nObs = try int(try required("n_obs"), "n_obs")
        let nSupp = try double(try required("n_supp"), "n_supp")
        let params = try doubles(try required("params"), "params")
        let nStarField = try optionalDouble(present("n_star"), "n_star")
        let g1Field = try optionalDouble(present("G1"), "G1")
        let seq = try optionalInt(present("seq"), "seq")
        let t0 = try optionalDouble(present("t0"), "t0")
        var features: [String: Double]? = nil
        if let f = present("features") {
            guard doc[f] == 0x7B else { throw wrongType("features", "an object", at: f) }
            guard let members = objectMembers(f) else { throw corrupted("field features") }
            var d: [String: Double] = [:]
            for (k, j) in members where d[k] == nil { d[k] = try double(j, "features.\(k)") }
            features = d
        }
        guard (2...4).contains(params.count) else {
            throw WireFormatError("field params: expected [p, beta], [p, beta, G1] or [p, beta, n_star, G1], found \(params.count) numbers")
        }
        guard nObs >= 0 else { throw WireFormatError(RejectReason.negative, "field n_obs: \(nObs) < 0") }
        // Course variants (spec §1.3): GAS appends [n_star, G1] to params, AHM appends G1.
        let nStar = nStarField ?? (params.count == 4 ? params[2] : .nan)
        let g1 = g1Field ?? (params.count >= 3 ? params[params.count - 1] : .nan)
        coercedMsg = msg.coerced
        if let f = features {
            guard f.count <= 64 else { throw WireFormatError(RejectReason.outOfRange, "field features: \(f.count) entries, at most 64") }
        }
        return .parameters(CascadeParameters(
            cascade: cid, msg: msg.text, tObs: try keyedWindow(tObs, key: key), nObs: nObs, nSupp: nSupp,
            nSuppMeaning: nil, p: params[0], beta: params[1], nStar: nStar, g1: g1, seq: try Checks.sequence(seq),
            t0: t0 == nil ? nil : try Checks.sourceTime("t0", t0), features: features))
    }

    func sample(key: String?) throws -> Message {
        let cid = try cascade(try required("cid"), "cid")
        let tObs = try optionalInt(present("T_obs"), "T_obs")
        let x = try doubles(try required("X"), "X")
        let w = try double(try required("W"), "W")
        let growth = try optionalDouble(present("growth"), "growth")
        if let g = growth, !(g >= 0) { throw WireFormatError(RejectReason.negative, "field growth: \(g) < 0") }
        return .sample(Sample(cascade: cid, tObs: try keyedWindow(tObs, key: key), x: x, w: w, growth: growth))
    }

    func model() throws -> Message {
        let tObs = try int(try required("T_obs"), "T_obs")
        let version = try int(try required("version"), "version")
        let mode = try string(try required("mode"), "mode")
        let samples = try int(try required("samples"), "samples")
        var trees: [RegressionTree] = []
        try elements(try required("trees"), "trees") { j, k in
            let name = "trees[\(k)]"
            guard doc[j] == 0x7B else { throw wrongType(name, "an object", at: j) }
            guard let members = objectMembers(j) else { throw corrupted("field \(name)") }
            func field(_ f: String) throws -> Int {
                guard let m = members.first(where: { $0.0 == f }) else { throw Self.missing("\(name).\(f)") }
                return m.1
            }
            let feature = try ints(try field("feature"), "\(name).feature")
            let threshold = try doubles(try field("threshold"), "\(name).threshold")
            let left = try ints(try field("left"), "\(name).left")
            let right = try ints(try field("right"), "\(name).right")
            let value = try doubles(try field("value"), "\(name).value")
            trees.append(RegressionTree(feature: feature, threshold: threshold, left: left, right: right, value: value))
        }
        let wMin = try optionalDouble(present("w_min"), "w_min")
        let wMax = try optionalDouble(present("w_max"), "w_max")
        let growthMax = try optionalDouble(present("growth_max"), "growth_max")
        let residuals = try optionalDoubles(present("residuals"), "residuals") ?? []
        let shift = try optionalDouble(present("shift"), "shift")
        for (i, t) in trees.enumerated() {
            // Children come after their parent (the learner's layout), so that evaluating
            // a tree always ends at a leaf and never reads outside the arrays.
            let n = t.feature.count
            guard n > 0, t.threshold.count == n, t.left.count == n, t.right.count == n, t.value.count == n,
                  (0..<n).allSatisfy({ k in
                      t.feature[k] < 0 || (t.left[k] > k && t.left[k] < n && t.right[k] > k && t.right[k] < n)
                  })
            else { throw WireFormatError("field trees[\(i)]: inconsistent node arrays") }
        }
        guard residuals.count <= Model.maxResiduals else {
            throw WireFormatError(RejectReason.outOfRange, "field residuals: \(residuals.count) values, at most \(Model.maxResiduals)")
        }
        guard zip(residuals, residuals.dropFirst()).allSatisfy({ $0 <= $1 }) else {
            throw WireFormatError("field residuals: not sorted ascending")
        }
        if let lo = wMin, let hi = wMax, !(lo <= hi) { throw WireFormatError("fields w_min, w_max: \(lo) > \(hi)") }
        if let g = growthMax, !(g >= 1) { throw WireFormatError(RejectReason.outOfRange, "field growth_max: \(g) < 1") }
        if let c = shift, !c.isFinite || abs(c) > 100 { throw WireFormatError(RejectReason.outOfRange, "field shift: \(c) not in [-100, 100]") }
        return .model(Model(tObs: try Checks.window(tObs), version: version, mode: mode, samples: samples, trees: trees,
                            wMin: wMin, wMax: wMax, growthMax: growthMax, residuals: residuals, shift: shift))
    }

    func alert(coercedMsg: inout Bool) throws -> Message {
        let cid = try cascade(try required("cid"), "cid")
        let msg = try text(try required("msg"), "msg")
        let tObs = try int(try required("T_obs"), "T_obs")
        let nTot = try double(try required("n_tot"), "n_tot")
        let nObs = try optionalInt(present("n_obs"), "n_obs")
        let t = try optionalDouble(present("t"), "t")
        let model = try optionalInt(present("model"), "model")
        let interval = try optionalDoubles(present("interval"), "interval")
        let pViral = try optionalDouble(present("p_viral"), "p_viral")
        coercedMsg = msg.coerced
        if let i = interval, i.count != 2 || !(i[0] <= i[1]) {
            throw WireFormatError("field interval: expected [lo, hi] with lo <= hi")
        }
        if let p = pViral, !(0...1).contains(p) {
            throw WireFormatError(RejectReason.outOfRange, "field p_viral: \(p) not in [0, 1]")
        }
        return .alert(Alert(cascade: cid, msg: msg.text, tObs: try Checks.window(tObs), nTot: nTot, nObs: nObs,
                            t: t == nil ? nil : try Checks.sourceTime("t", t), model: model,
                            interval: interval, pViral: pViral))
    }

    func stat() throws -> Message {
        let cid = try cascade(try required("cid"), "cid")
        let tObs = try int(try required("T_obs"), "T_obs")
        let are = try double(try required("ARE"), "ARE")
        let forecast = try optionalDouble(present("forecast"), "forecast")
        let nTot = try optionalInt(present("n_tot"), "n_tot")
        let nObs = try optionalInt(present("n_obs"), "n_obs")
        guard are >= 0 else { throw WireFormatError(RejectReason.negative, "field ARE: \(are) < 0") }
        return .stat(Stat(cascade: cid, tObs: try Checks.window(tObs), are: are, forecast: forecast, nTot: nTot, nObs: nObs))
    }

    func log() throws -> Message {
        let t = try int64(try required("t"), "t")
        let source = try string(try required("source"), "source")
        let level = try string(try required("level"), "level")
        let message = try string(try required("message"), "message")
        return .log(LogRecord(time: t, source: source, level: level, message: message))
    }
}
