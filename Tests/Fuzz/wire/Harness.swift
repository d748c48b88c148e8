// libFuzzer target `wire`: WireFormat.decode on arbitrary bytes (compiled together with
// Messages.swift, WireFormat.swift, FoundationWireFormat.swift and InputChecks.swift of
// TweetoscopeCore; see scripts/fuzz).
//
// Properties checked beyond "no crash": the hand-written reader agrees with Foundation's
// (FoundationWireFormat, the oracle) on every input: an equal message and `coercedMsg`, or the
// same rejection reason, and both encoders write the same bytes for the decoded message (a
// disagreement stops the fuzzer with the input; the count of comparisons is printed at exit,
// "wire: N inputs compared with Foundation, 0 disagreements"); a decoded message re-encodes to
// valid UTF-8 JSON that decodes to an equal message (up to the series' time shift), and the
// reason of a rejection is one of the documented ones.
import Glibc

nonisolated(unsafe) var comparedWithFoundation = 0
nonisolated(unsafe) var exitReportInstalled = false

/// The outcome of a decode: the message (and coercedMsg) or the rejection reason.
func outcome(_ value: UnsafeBufferPointer<UInt8>, key: String?, reference: Bool, memberOrder: Int = 0) -> (Message?, Bool, String?) {
    var coerced = false
    do {
        let m = reference ? try FoundationWireFormat.decode(value, key: key, coercedMsg: &coerced)
            : try WireFormat.decode(buffer: value, key: key, coercedMsg: &coerced, memberOrder: memberOrder)
        return (m, coerced, nil)
    } catch let error as WireFormatError {
        return (nil, false, error.reason)
    } catch {
        failure("decode threw \(error)")
    }
}

/// Whether two decoded messages are equal (NaN fields compared through the reference's bytes).
func same(_ a: Message, _ b: Message) -> Bool {
    guard a.kind == b.kind else { return false }
    if a == b { return true }
    if case .tweet = a { return false }
    return FoundationWireFormat.encode(a) == FoundationWireFormat.encode(b)
}

/// The deepest nesting of arrays and objects in `value` (brackets outside strings).
func nesting(_ value: UnsafeBufferPointer<UInt8>) -> Int {
    var depth = 0, deepest = 0, inString = false, escaped = false
    for b in value {
        if inString {
            if escaped { escaped = false } else if b == 0x5C { escaped = true } else if b == 0x22 { inString = false }
        } else if b == 0x22 { inString = true }
        else if b == 0x5B || b == 0x7B { depth += 1; deepest = max(deepest, depth) }
        else if b == 0x5D || b == 0x7D { depth -= 1 }
    }
    return deepest
}

/// Stops the fuzzer when the hand-written codec and Foundation disagree on `value`.
func compareWithFoundation(_ value: UnsafeBufferPointer<UInt8>, key: String?) {
    if !exitReportInstalled {
        exitReportInstalled = true
        atexit {
            let text = "wire: \(comparedWithFoundation) inputs compared with Foundation, 0 disagreements\n"
            _ = text.withCString { write(2, $0, strlen($0)) }
        }
    }
    // Foundation's scanner recurses once per level and, with ASan's larger frames, overflows
    // the stack before its own limit of 512 levels: deeper inputs are not given to the oracle
    // (the reader, recursive too but with smaller frames, reaches the limit; the properties
    // below still apply to it).
    if nesting(value) > 200 { return }
    let mine = outcome(value, key: key, reference: false)
    let oracle = outcome(value, key: key, reference: true)
    comparedWithFoundation += 1
    switch (mine.0, oracle.0) {
    case (let a?, let b?):
        check(same(a, b) && mine.1 == oracle.1, "WireFormat and Foundation decode different messages")
        check(WireFormat.encode(a) == FoundationWireFormat.encode(a), "WireFormat and Foundation encode different bytes")
    case (nil, nil):
        if mine.2 == oracle.2 { return }
        // Foundation reports one of several bad members of an object in its dictionary's
        // order, which scripts/fuzz makes deterministic (SWIFT_DETERMINISTIC_HASHING=1) and the
        // reader reproduces with memberOrder −1; else (another environment) any rotation.
        if outcome(value, key: key, reference: false, memberOrder: -1).2 == oracle.2 { return }
        for order in 1..<1024 where outcome(value, key: key, reference: false, memberOrder: order).2 == oracle.2 { return }
        failure("WireFormat rejects as \(mine.2!), Foundation as \(oracle.2!)")
    default:
        failure("WireFormat \(mine.2 ?? "decodes"), Foundation \(oracle.2 ?? "decodes")")
    }
}

let documentedReasons: Set<String> = [
    RejectReason.invalidUTF8, RejectReason.invalidJSON, RejectReason.unknownType, RejectReason.missingField,
    RejectReason.wrongType, RejectReason.negative, RejectReason.outOfRange, RejectReason.outOfOrder,
    RejectReason.invalidField,
]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWire(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    // The key is the first line when the input has two lines (as a Kafka record's key).
    var key: String? = nil
    var value = bytes
    if let nl = bytes.firstIndex(of: 0x0A), nl < 24 {
        key = String(decoding: UnsafeBufferPointer(rebasing: bytes[..<nl]), as: UTF8.self)
        value = UnsafeBufferPointer(rebasing: bytes[(nl + 1)...])
    }
    compareWithFoundation(value, key: key)
    let message: Message
    do {
        message = try WireFormat.decode(value, key: key)
    } catch let error as WireFormatError {
        check(documentedReasons.contains(error.reason), "undocumented reason \(error.reason)")
        // The syntax checker and the UTF-8 validator must agree with the decoder's verdict.
        if error.reason == RejectReason.invalidUTF8 { check(!UTF8Validation.isValid(value)) }
        return 0
    } catch {
        failure("decode threw \(error)")
    }
    // A decoded value was valid UTF-8 (Foundation's parser is more lenient than RFC 8259 on
    // control characters and escapes in strings, so JSONSyntax may refuse what it accepted).
    check(UTF8Validation.isValid(value))
    let encoded = WireFormat.encode(message)
    check(UTF8Validation.isValid(encoded))
    encoded.withUnsafeBufferPointer { check(JSONSyntax.firstError($0) == nil, "encode wrote invalid JSON") }
    if case .tweet(let t) = message {
        check(t.time >= 0 && t.time <= InputLimits.maxTime && t.magnitude >= 0 && t.magnitude <= InputLimits.maxMagnitude)
    }
    if case .model(let m) = message {
        // Evaluating every tree must end at a leaf.
        for tree in m.trees { _ = tree.predict([1, 2, 3, 4, 5]) }
    }
    do {
        let again = try WireFormat.decode(encoded, key: key)
        switch (message, again) {
        case (.tweet(let a), .tweet(let b)):
            check(a.kind == b.kind && a.time == b.time && a.magnitude == b.magnitude && a.cascade == b.cascade
                         && a.msg == b.msg && a.info == b.info, "tweet round trip")
        case (.series(let a), .series(let b)):
            check(a.times == b.times && a.magnitudes == b.magnitudes && a.cascade == b.cascade, "series round trip")
        case (.log(let a), .log(let b)):
            check(a == b, "log round trip")
        default:
            check(message.kind == again.kind, "kind changed in a round trip")
        }
    } catch {
        // Non-finite values (a parameters message whose p is not finite cannot come from JSON)
        // are the only way a re-encoded message may fail to decode.
        failure("re-encoded message does not decode: \(error)")
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
