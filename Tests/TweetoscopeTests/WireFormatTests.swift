// Tests of the input checks of TweetoscopeCore: the wire-format decoder's rejection reasons, the
// UTF-8 validator, the JSON syntax checker and the dead letters. Expected values are worked out
// by hand from the bytes given.
import Testing
import TweetoscopeCore

/// The reason `WireFormat.decode` gives for `text` (nil when it decodes).
fileprivate func reason(_ text: String, key: String? = nil) -> String? {
    reason(Array(text.utf8), key: key)
}

fileprivate func reason(_ bytes: [UInt8], key: String? = nil) -> String? {
    do {
        _ = try WireFormat.decode(bytes, key: key)
        return nil
    } catch let e as WireFormatError {
        return e.reason
    } catch {
        return "not a WireFormatError: \(error)"
    }
}

@Suite struct WireFormatDecodeTests {
    @Test(arguments: [
        // (line, reason)
        (#"{"type": "tweet", "t": 1, "m": 2, "tweet_id": 3}"#, nil),
        (#"{"type": "tweet", "t": 1, "m": 2, "tweet_id": 3"#, "invalid_json"),
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ("", "invalid_json"),
        (#"{"type": "gossip"}"#, "unknown_type"),
        (#"{"type": "tweet", "m": 2, "tweet_id": 3}"#, "missing_field"),
        (#"{"type": "tweet", "t": 1, "m": 2}"#, "missing_field"),
        (#"{"type": "tweet", "t": "1", "m": 2, "tweet_id": 3}"#, "wrong_type"),
        (#"{"type": "tweet", "t": null, "m": 2, "tweet_id": 3}"#, "wrong_type"),
        (#"{"type": "tweet", "t": 1, "m": 2, "tweet_id": [3]}"#, "wrong_type"),  // "3" is a valid (string) id
        (#"{"type": "tweet", "t": -1, "m": 2, "tweet_id": 3}"#, "negative"),
        (#"{"type": "tweet", "t": 1, "m": -2, "tweet_id": 3}"#, "negative"),
        (#"{"type": "tweet", "t": 1e13, "m": 2, "tweet_id": 3}"#, "out_of_range"),
        (#"{"type": "tweet", "t": 1, "m": 2e12, "tweet_id": 3}"#, "out_of_range"),
        (#"{"type": "tweet", "t": 1e400, "m": 2, "tweet_id": 3}"#, "out_of_range"),
        (#"{"type": "tweet", "t": 1, "m": 2, "tweet_id": 99999999999999999999}"#, "out_of_range"),
        (#"{"type": "tweet", "t": 1, "m": 2, "tweet_id": 1.5}"#, "out_of_range"),
        (#"{"type": "tweet", "t": NaN, "m": 2, "tweet_id": 3}"#, "invalid_json"),
        (#"{"type": "serie", "cid": 1, "msg": "", "T_obs": 600, "tweets": [[0, 1], [5, 2], [3, 1]]}"#, "out_of_order"),
        (#"{"type": "serie", "cid": 1, "msg": "", "T_obs": 0, "tweets": [[0, 1]]}"#, "out_of_range"),
        (#"{"type": "serie", "cid": 1, "msg": "", "T_obs": 600, "tweets": []}"#, "invalid_field"),
        (#"{"type": "size", "cid": 1, "n_tot": -3, "t_end": 9, "T_obs": 600}"#, "negative"),
        (#"{"type": "size", "cid": 1, "n_tot": 3, "t_end": 9}"#, "missing_field"),
        (#"{"type": "stat", "cid": 1, "T_obs": -600, "ARE": 0.5}"#, "out_of_range"),
    ] as [(String, String?)])
    func reasons(_ line: String, _ expected: String?) {
        #expect(reason(line) == expected, "\(line)")
    }

    @Test func invalidUTF8IsNamedBeforeJSON() {
        // {"type": "tweet", "msg": "<FF>", ...}
        var bytes = Array(#"{"type": "tweet", "msg": "x"#.utf8)
        bytes.append(0xFF)
        bytes += Array(#"", "t": 1, "m": 2, "tweet_id": 3}"#.utf8)
        #expect(reason(bytes) == "invalid_utf8")
        do {
            _ = try WireFormat.decode(bytes)
        } catch {
            #expect("\(error)" == "invalid UTF-8 at byte 27")
        }
    }

    @Test func syntaxErrorsGiveTheirOffset() {
        do {
            _ = try WireFormat.decode(Array(#"{"type": "tweet",, "t": 1}"#.utf8))
            Issue.record("must not decode")
        } catch {
            #expect("\(error)" == "invalid JSON at byte 17: expected a string key, found ','")
        }
    }

    @Test func modelTreesMustPointForward() {
        // Node 0 splits to nodes 1 and 2 (leaves): valid. A child pointing back to the root (a
        // cycle) or outside the arrays is rejected, so evaluating a tree always ends.
        func model(_ left: [Int], _ right: [Int]) -> String {
            #"{"type": "model", "T_obs": 600, "version": 1, "mode": "growth", "samples": 3, "trees": [{"feature": [0, -1, -1], "threshold": [1, 0, 0], "left": \#(left), "right": \#(right), "value": [0, 1, 2]}]}"#
        }
        #expect(reason(model([1, -1, -1], [2, -1, -1])) == nil)
        #expect(reason(model([0, -1, -1], [2, -1, -1])) == "invalid_field")
        #expect(reason(model([-1, -1, -1], [2, -1, -1])) == "invalid_field")
        #expect(reason(model([1, -1, -1], [3, -1, -1])) == "invalid_field")
    }

    @Test func nonFiniteNumbersNeitherCrashNorMakeInvalidJSON() throws {
        // A sample with a NaN feature (a failed forecast) encodes as valid JSON, which the
        // decoder then rejects as a wrong type.
        let bytes = WireFormat.encode(.sample(Sample(cascade: 1, tObs: 600, x: [1, .nan, .infinity], w: 2)))
        #expect(String(decoding: bytes, as: UTF8.self) == #"{"T_obs":600,"W":2,"X":[1,"nan","inf"],"cid":1,"type":"sample"}"#)
        #expect(reason(bytes) == "wrong_type")
        // Parameters without n_star and G1 (course producers) round-trip without them.
        let p = try WireFormat.decode(Array(#"{"type": "parameters", "cid": 1, "msg": "m", "T_obs": 600, "n_obs": 10, "n_supp": 2.5, "params": [0.1, 0.001]}"#.utf8))
        #expect(String(decoding: WireFormat.encode(p), as: UTF8.self)
                == #"{"T_obs":600,"cid":1,"msg":"m","n_obs":10,"n_supp":2.5,"params":[0.1,0.001],"type":"parameters"}"#)
    }
}

/// The course's variants (spec §1, issue 14), decoded as the course means them.
@Suite struct CourseVariantTests {
    func decode(_ text: String, key: String? = nil) throws -> (Message, coerced: Bool) {
        var coerced = false
        let m = try WireFormat.decode(Array(text.utf8), key: key, coercedMsg: &coerced)
        return (m, coerced)
    }

    @Test(arguments: [
        // (msg JSON, text, coerced)
        (#""hello""#, "hello", false),
        ("null", "None", true),
        ("42", "42", true),
        ("-3.5", "-3.5", true),
        ("true", "true", true),
        (#"[1, "a", null]"#, #"[1,"a",null]"#, true),
        (#"{"b": 1, "a": "x\"y"}"#, #"{"a":"x\"y","b":1}"#, true),
    ])
    func msgOfAnyTypeIsText(msg: String, text: String, coerced: Bool) throws {
        let (m, c) = try decode(#"{"type": "alert", "cid": 1, "msg": \#(msg), "T_obs": 600, "n_tot": 158}"#)
        #expect(m == .alert(Alert(cascade: 1, msg: text, tObs: 600, nTot: 158)))
        #expect(c == coerced)
        let (t, ct) = try decode(#"{"type": "tweet", "msg": \#(msg), "t": 0, "m": 1, "tweet_id": 5}"#, key: "2")
        #expect(t == .tweet(Tweet(kind: .tweet, msg: text, time: 0, magnitude: 1, source: 2, cascade: 5)))
        #expect(ct == coerced)
    }

    @Test func cidsRoundTripAsTheyCame() throws {
        let string = #"{"ARE":0.5,"T_obs":600,"cid":"tw23981","type":"stat"}"#
        let number = #"{"ARE":0.5,"T_obs":600,"cid":23981,"type":"stat"}"#
        let quoted = #"{"ARE":0.5,"T_obs":600,"cid":"23981","type":"stat"}"#
        for text in [string, number, quoted] {
            let (m, _) = try decode(text)
            #expect(String(decoding: WireFormat.encode(m), as: UTF8.self) == text)
        }
        #expect(try decode(string).0.cascade == "tw23981")
        #expect(try decode(number).0.cascade == 23981)
        #expect(try decode(quoted).0.cascade != 23981)
        #expect(reason(#"{"ARE":0.5,"T_obs":600,"cid":1.5,"type":"stat"}"#) == "out_of_range")
        #expect(reason(#"{"ARE":0.5,"T_obs":600,"cid":null,"type":"stat"}"#) == "wrong_type")
        #expect(reason(#"{"type": "tweet", "t": 0, "m": 1, "tweet_id": "tw1"}"#) == nil)
    }

    @Test func parametersVariants() throws {
        func params(_ text: String) throws -> CascadeParameters {
            guard case .parameters(let p) = try decode(text, key: "600").0 else { throw WireFormatError("not parameters") }
            return p
        }
        // Base spec: [p, beta], no n_star/G1 (NaN: the predictor derives them), T_obs from the key.
        let base = try params(#"{"type": "parameters", "cid": "tw23981", "msg": "blah blah", "n_obs": 32, "n_supp": 120, "params": [0.0423, 124.312]}"#)
        #expect(base.tObs == 600 && base.p == 0.0423 && base.beta == 124.312 && base.nStar.isNaN && base.g1.isNaN)
        #expect(base.nSuppMeaning == nil && base.supplementary(assuming: .total) == 88 && base.supplementary(assuming: .supplementary) == 120)
        // GAS: [p, beta, n_star, G1].
        let four = try params(#"{"type": "parameters", "cid": 1, "msg": "m", "n_obs": 32, "n_supp": 120, "params": [0.02, 0.001, 0.7, 12.5]}"#)
        #expect(four.nStar == 0.7 && four.g1 == 12.5)
        // AHM: [p, beta, G1].
        let three = try params(#"{"type": "parameters", "cid": 1, "msg": "m", "n_obs": 32, "n_supp": 120, "params": [0.02, 0.001, 12.5]}"#)
        #expect(three.nStar.isNaN && three.g1 == 12.5)
        // Fields win over params.
        let both = try params(#"{"type": "parameters", "cid": 1, "msg": "m", "n_obs": 32, "n_supp": 120, "params": [0.02, 0.001, 0.7, 12.5], "n_star": 0.6, "G1": 3}"#)
        #expect(both.nStar == 0.6 && both.g1 == 3)
        #expect(reason(#"{"type": "parameters", "cid": 1, "msg": "m", "n_obs": 32, "n_supp": 120, "params": [0.02, 0.001, 0.7, 12.5, 1]}"#, key: "600") == "invalid_field")
        // This project's `features` object: read as sent, absent = nil, written back the same.
        #expect(base.features == nil)
        let f = try params(#"{"type": "parameters", "cid": 1, "msg": "m", "n_obs": 32, "n_supp": 120, "params": [0.02, 0.001], "features": {"root_m": 10, "seismic_p": 0.25}}"#)
        #expect(f.features == ["root_m": 10, "seismic_p": 0.25])
        #expect(String(decoding: WireFormat.encode(.parameters(f)), as: UTF8.self).contains(#""features":{"root_m":10,"seismic_p":0.25}"#))
        #expect(reason(#"{"type": "parameters", "cid": 1, "msg": "m", "n_obs": 32, "n_supp": 120, "params": [0.02, 0.001], "features": {"root_m": "x"}}"#, key: "600") != nil)
    }

    /// A model's `shift` round-trips; absent = nil; a non-finite or huge one is rejected.
    @Test func modelShift() throws {
        let m = Model(tObs: 600, version: 2, mode: "growth", samples: 3, trees: [RegressionTree(feature: [-1], threshold: [0], left: [-1], right: [-1], value: [1])], shift: -0.25)
        let text = WireFormat.encode(.model(m))
        #expect(String(decoding: text, as: UTF8.self).contains(#""shift":-0.25"#))
        guard case .model(let back) = try WireFormat.decode(text) else { throw WireFormatError("not a model") }
        #expect(back.shift == -0.25 && back == m)
        let plain = #"{"type": "model", "T_obs": 600, "version": 1, "mode": "growth", "samples": 3, "trees": [{"feature": [-1], "threshold": [0], "left": [-1], "right": [-1], "value": [1]}]"#
        guard case .model(let none) = try WireFormat.decode(Array((plain + "}").utf8)) else { throw WireFormatError("not a model") }
        #expect(none.shift == nil)
        #expect(throws: WireFormatError.self) { try WireFormat.decode(Array((plain + #", "shift": 1000}"#).utf8)) }
    }
}

@Suite struct InputCheckTests {
    @Test(arguments: [
        // (bytes, offset of the first invalid byte)
        ([0x61, 0x62], nil),
        ([0xC3, 0xA9], nil),                     // é
        ([0xE2, 0x82, 0xAC], nil),               // €
        ([0xF0, 0x9F, 0x98, 0x80], nil),         // 😀
        ([0x61, 0xFF], 1),
        ([0xC0, 0x80], 0),                       // overlong NUL
        ([0xE0, 0x80, 0x80], 0),                 // overlong
        ([0xED, 0xA0, 0x80], 0),                 // surrogate U+D800
        ([0xF4, 0x90, 0x80, 0x80], 0),           // above U+10FFFF
        ([0x61, 0x62, 0xE2, 0x82], 2),           // cut short
        ([0x80], 0),                             // lone continuation
        ([0xC3, 0xA9, 0xA9], 2),                 // continuation after a complete character
    ] as [([UInt8], Int?)])
    func utf8(_ bytes: [UInt8], _ expected: Int?) {
        #expect(bytes.withUnsafeBufferPointer { UTF8Validation.firstInvalidByte($0) } == expected)
    }

    @Test(arguments: [
        // (text, offset of the problem or nil when valid)
        (#"{"a": [1, -2.5e+3, true, false, null, "x\n\u00e9\ud83d\ude00"], "b": {}}"#, nil),
        (" 0 ", nil),
        (#"{"a": 1,}"#, 8),
        ("[1 2]", 3),
        ("01", 0),
        ("1.", 0),
        ("-", 0),
        (#"{"a" 1}"#, 5),
        (#""\ud800""#, 1),
        (#""\x""#, 1),
        ("\"a\u{01}\"", 2),
        ("[1] 2", 4),
        ("tru", 0),
        ("", 0),
        ("[[[", 3),
    ] as [(String, Int?)])
    func jsonSyntax(_ text: String, _ expected: Int?) {
        let bytes = Array(text.utf8)
        #expect(bytes.withUnsafeBufferPointer { JSONSyntax.firstError($0)?.offset } == expected, "\(text)")
    }

    @Test func deepNestingIsAProblemNotACrash() {
        let deep = Array(repeating: UInt8(ascii: "["), count: 100_000)
        #expect(deep.withUnsafeBufferPointer { JSONSyntax.firstError($0) }?.offset == JSONSyntax.maxDepth)
        #expect(reason(deep) == "invalid_json")
    }

    @Test func deadLetterTextIsCutAtACharacterAndCleaned() {
        // 1023 'a' then 'é' (2 bytes) straddling the 1 KiB cut: the cut moves before 'é'.
        let long = Array(repeating: UInt8(ascii: "a"), count: 1023) + [0xC3, 0xA9] + Array(repeating: UInt8(ascii: "b"), count: 10)
        let text = long.withUnsafeBufferPointer { DeadLetter.text($0) }
        #expect(text == String(repeating: "a", count: 1023) + "…")
        let bad: [UInt8] = [0x61, 0xFF, 0x62]
        #expect(bad.withUnsafeBufferPointer { DeadLetter.text($0) } == "a\u{FFFD}b")
        let record = bad.withUnsafeBufferPointer { DeadLetter.record(stage: "src", reason: "invalid_utf8", location: "f:3", raw: $0) }
        #expect(record.message == "invalid_utf8: f:3: a\u{FFFD}b" && record.level == "WARNING" && record.source == "src")
    }
}
