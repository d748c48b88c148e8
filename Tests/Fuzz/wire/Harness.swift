// libFuzzer target `wire`: WireFormat.decode on arbitrary bytes (compiled together with
// Messages.swift, WireFormat.swift and InputChecks.swift of TweetoscopeCore; see scripts/fuzz).
//
// Properties checked beyond "no crash": a decoded message re-encodes to valid UTF-8 JSON that
// decodes to an equal message (up to the series' time shift), and the reason of a rejection is
// one of the documented ones.
import Glibc

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
