// Differential checking of the wire codec (WireFormat) against Foundation's coders
// (FoundationWireFormat, the reference): random messages from a seeded generator, and byte-level
// mutations of their JSON. Used by WireCodecTests; plain Swift (no test framework), so that it can
// also be compiled on its own with the Core sources (its generator is Core's SplitMix64) for a long run.
#if canImport(TweetoscopeCore)
@_spi(WireTesting) import TweetoscopeCore
#endif

enum WireDifferential {
    /// Characters that exercise escaping: quotes, backslashes, slashes, every control character,
    /// DEL, non-ASCII letters, combining marks, BOM, line separators, astral emoji.
    static let alphabet: [Unicode.Scalar] = {
        var a: [Unicode.Scalar] = (0..<0x20).map { Unicode.Scalar(UInt8($0)) }
        a += ["\"", "\\", "/", "\u{7F}", "a", "Z", "0", " ", "é", "\u{301}", "ß", "\u{FEFF}", "\u{2028}", "\u{2029}",
              "€", "\u{FFFD}", "\u{E000}", "😀", "𝄞", "中", "_", "~", "{", "}", "[", "]", ":", ","]
        return a
    }()

    static func string(_ r: inout SplitMix64, max: Int = 12) -> String {
        let n = Int.random(in: 0...max, using: &r)
        var s = String.UnicodeScalarView()
        for _ in 0..<n {
            if Bool.random(using: &r) {
                s.append(Unicode.Scalar(UInt8.random(in: 0x20...0x7E, using: &r)))
            } else {
                s.append(alphabet.randomElement(using: &r)!)
            }
        }
        return String(s)
    }

    static let specialDoubles: [Double] = [
        0, -0.0, 1, -1, 0.1, 0.5, 1.0 / 3, 100, 1234567, 1e15, 1e15 + 1, 999999999999999, 1e16, 9007199254740992,
        9007199254740993, 1e20, 1e21, 1e22, 1e23, 1e100, 1e300, 1.7976931348623157e308, 1e-4, 1e-5, 1e-7,
        2.5e-5, 5e-324, 2.2250738585072014e-308, 123456.789, 0.000123, 1e12, 1e12 + 0.5, -1e-300, 3.14159,
        .infinity, -.infinity, .nan,
    ]

    static func double(_ r: inout SplitMix64, finite: Bool = false) -> Double {
        switch Int.random(in: 0..<5, using: &r) {
        case 0:
            let d = specialDoubles.randomElement(using: &r)!
            return finite && !d.isFinite ? 1 : d
        case 1: return Double(Int.random(in: -1_000_000...1_000_000, using: &r))
        case 2: return Double.random(in: 0..<1_000_000, using: &r)
        case 3:
            var d = Double(bitPattern: r.next())
            while !d.isFinite { d = Double(bitPattern: r.next()) }
            return d
        default: return Double.random(in: 0..<1, using: &r) * pow10(Int.random(in: -30...30, using: &r))
        }
    }

    static func pow10(_ e: Int) -> Double {
        var v = 1.0
        for _ in 0..<abs(e) { v *= 10 }
        return e < 0 ? 1 / v : v
    }

    static func int(_ r: inout SplitMix64) -> Int {
        switch Int.random(in: 0..<4, using: &r) {
        case 0: return [0, 1, -1, Int.max, Int.min, 9, 10, 600, 43200].randomElement(using: &r)!
        case 1: return Int.random(in: -100...100_000, using: &r)
        default: return Int(truncatingIfNeeded: r.next())
        }
    }

    static func cascade(_ r: inout SplitMix64) -> CascadeID {
        Bool.random(using: &r) ? .number(Int64(int(&r))) : .string(string(&r))
    }

    static func maybe<T>(_ r: inout SplitMix64, _ make: (inout SplitMix64) -> T) -> T? {
        Bool.random(using: &r) ? make(&r) : nil
    }

    /// A random message of `kind` (0...8: tweet, serie, size, parameters, sample, model, alert,
    /// stat, log), with optional fields present or absent and extreme values.
    static func message(_ r: inout SplitMix64, kind: Int) -> Message {
        switch kind {
        case 0:
            return .tweet(Tweet(kind: Bool.random(using: &r) ? .tweet : .retweet, msg: string(&r), time: double(&r),
                                magnitude: double(&r), source: Int64(int(&r)), cascade: cascade(&r), info: string(&r)))
        case 1:
            let n = Int.random(in: 0...20, using: &r)
            var times: [Double] = [], marks: [Double] = []
            var t = 0.0
            for _ in 0..<n {
                times.append(t)
                t += Bool.random(using: &r) ? Double.random(in: 0..<100, using: &r) : double(&r)
                marks.append(double(&r))
            }
            return .series(Series(cascade: cascade(&r), msg: string(&r), tObs: int(&r), times: times, magnitudes: marks,
                                  seq: maybe(&r) { int(&$0) }, t0: maybe(&r) { double(&$0) }))
        case 2:
            return .size(CascadeSize(cascade: cascade(&r), tObs: int(&r), nTot: int(&r), tEnd: double(&r), seq: maybe(&r) { int(&$0) }))
        case 3:
            var features: [String: Double]? = nil
            if Bool.random(using: &r) {
                var f: [String: Double] = [:]
                for _ in 0..<Int.random(in: 0...6, using: &r) { f[string(&r, max: 6)] = double(&r) }
                features = f
            }
            return .parameters(CascadeParameters(
                cascade: cascade(&r), msg: string(&r), tObs: int(&r), nObs: int(&r), nSupp: double(&r), nSuppMeaning: nil,
                p: double(&r), beta: double(&r), nStar: Bool.random(using: &r) ? .nan : double(&r),
                g1: Bool.random(using: &r) ? .nan : double(&r), seq: maybe(&r) { int(&$0) }, t0: maybe(&r) { double(&$0) },
                features: features))
        case 4:
            return .sample(Sample(cascade: cascade(&r), tObs: int(&r), x: (0..<Int.random(in: 0...6, using: &r)).map { _ in double(&r) },
                                  w: double(&r), growth: maybe(&r) { double(&$0) }))
        case 5:
            var trees: [RegressionTree] = []
            for _ in 0..<Int.random(in: 0...3, using: &r) {
                let n = Int.random(in: 1...5, using: &r)
                trees.append(RegressionTree(feature: (0..<n).map { _ in Int.random(in: -2...5, using: &r) },
                                            threshold: (0..<n).map { _ in double(&r) },
                                            left: (0..<n).map { _ in Int.random(in: -1...6, using: &r) },
                                            right: (0..<n).map { _ in Int.random(in: -1...6, using: &r) },
                                            value: (0..<n).map { _ in double(&r) }))
            }
            return .model(Model(tObs: int(&r), version: int(&r), mode: string(&r), samples: int(&r), trees: trees,
                                wMin: maybe(&r) { double(&$0) }, wMax: maybe(&r) { double(&$0) },
                                growthMax: maybe(&r) { double(&$0) },
                                residuals: Bool.random(using: &r) ? [] : (0..<Int.random(in: 1...5, using: &r)).map { _ in double(&r) }.sorted(),
                                shift: maybe(&r) { double(&$0) }))
        case 6:
            return .alert(Alert(cascade: cascade(&r), msg: string(&r), tObs: int(&r), nTot: double(&r), nObs: maybe(&r) { int(&$0) },
                                t: maybe(&r) { double(&$0) }, model: maybe(&r) { int(&$0) },
                                interval: maybe(&r) { r in [double(&r), double(&r)] }, pViral: maybe(&r) { double(&$0) }))
        case 7:
            return .stat(Stat(cascade: cascade(&r), tObs: int(&r), are: double(&r), forecast: maybe(&r) { double(&$0) },
                              nTot: maybe(&r) { int(&$0) }, nObs: maybe(&r) { int(&$0) }))
        default:
            return .log(LogRecord(time: Int64(int(&r)), source: string(&r), level: string(&r), message: string(&r)))
        }
    }

    /// Replacement texts for a number or a value: the integer and number forms Foundation
    /// accepts or refuses, other types, broken syntax.
    static let replacements: [String] = [
        "3.0", "1e3", "1E2", "-0", "-0.0", "3.5", "1e400", "-1e400", "1e-400", "0e-999", "01", "-", "1.", ".5", "1e", "1e+",
        "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809",
        "12345678901234567890e-1", "52345678901234567890e-1", "9007199254740993.50000000000000000000", "9007199254740993.5", "9.223372036854775807e18", "2e18", "1.0000000000000001",
        "null", "true", "false", "\"3\"", "\"inf\"", "\"nan\"", "[]", "{}", "[1,2]", "[[1,2],]", "[1,]", "{\"a\":1,}",
        "\"\\u00e9\"", "\"\\ud800\"", "\"\\ud83d\\ude00\"", "\"\\x\"", "\"a\u{01}b\"", "\"\\/\"", "0", "-1", "1e12", "1e13",
        "[0,1]", "[[0,1],[2,3]]", "[[1,0],[0,1]]", "[1,2,3]", "[1,2,3,4]", "[\"a\"]", "[null]", "{\"x\":1}", "{\"x\":\"y\",\"x\":2}",
    ]

    static let keyNames = ["type", "msg", "t", "m", "tweet_id", "source", "info", "cid", "T_obs", "tweets", "seq", "t0", "n_tot",
                           "t_end", "n_obs", "n_supp", "params", "n_star", "G1", "features", "X", "W", "growth", "version",
                           "mode", "samples", "trees", "w_min", "w_max", "growth_max", "residuals", "shift", "interval",
                           "p_viral", "ARE", "forecast", "model", "level", "message", "t\\u0079pe", "typ"]
    static let typeNames = ["tweet", "retweet", "serie", "size", "parameters", "sample", "model", "alert", "stat", "log", "Tweet"]

    /// A mutation of `bytes`: byte edits, a value replaced, a member removed or duplicated, a
    /// different type.
    static func mutate(_ bytes: [UInt8], _ r: inout SplitMix64) -> [UInt8] {
        var b = bytes
        for _ in 0..<Int.random(in: 1...2, using: &r) {
            switch Int.random(in: 0..<8, using: &r) {
            case 0 where !b.isEmpty:
                b.remove(at: Int.random(in: 0..<b.count, using: &r))
            case 1:
                let c: [UInt8] = [0x22, 0x5C, 0x2C, 0x3A, 0x7B, 0x7D, 0x5B, 0x5D, 0x20, 0x30, 0x2D, 0x2E, 0x65, 0x01, 0x0A, 0x00, 0xC3, 0xA9]
                b.insert(c.randomElement(using: &r)!, at: Int.random(in: 0...b.count, using: &r))
            case 2, 3, 4:
                // Replace one value (after a colon, up to the next ',' or '}' at the same level).
                let colons = b.indices.filter { b[$0] == 0x3A }
                guard let c = colons.randomElement(using: &r) else { break }
                var e = c + 1, depth = 0, inString = false
                while e < b.count {
                    let x = b[e]
                    if inString { if x == 0x5C { e += 1 } else if x == 0x22 { inString = false } }
                    else if x == 0x22 { inString = true }
                    else if x == 0x7B || x == 0x5B { depth += 1 }
                    else if x == 0x7D || x == 0x5D { if depth == 0 { break }; depth -= 1 }
                    else if x == 0x2C && depth == 0 { break }
                    e += 1
                }
                let with: String
                if Int.random(in: 0..<4, using: &r) == 0 {
                    with = "\"" + typeNames.randomElement(using: &r)! + "\""
                } else {
                    with = replacements.randomElement(using: &r)!
                }
                b.replaceSubrange((c + 1)..<min(e, b.count), with: Array(with.utf8))
            case 5:
                // Add a member (maybe a duplicate) at the start of the object.
                if let open = b.firstIndex(of: 0x7B) {
                    let m = "\"\(keyNames.randomElement(using: &r)!)\":\(replacements.randomElement(using: &r)!),"
                    b.insert(contentsOf: Array(m.utf8), at: open + 1)
                }
            case 6:
                // Remove a member.
                let starts = b.indices.filter { b[$0] == 0x2C }
                if let s = starts.randomElement(using: &r), let e = b[(s + 1)...].firstIndex(of: 0x2C) { b.removeSubrange(s..<e) }
            default:
                if !b.isEmpty { b[Int.random(in: 0..<b.count, using: &r)] = UInt8.random(in: 0...255, using: &r) }
            }
        }
        return b
    }

    /// The outcome of a decode, comparable between the two decoders.
    enum Outcome: Equatable, CustomStringConvertible {
        case message(Message, coerced: Bool)
        case rejected(String)

        static func == (a: Outcome, b: Outcome) -> Bool {
            switch (a, b) {
            case (.rejected(let x), .rejected(let y)): return x == y
            case (.message(let x, let cx), .message(let y, let cy)):
                // NaN fields make `==` false on equal messages: compare the reference's bytes too.
                guard cx == cy, x.kind == y.kind else { return false }
                if x == y { return true }
                if case .tweet = x { return false }
                return FoundationWireFormat.encode(x) == FoundationWireFormat.encode(y)
            default: return false
            }
        }

        var description: String {
            switch self {
            case .rejected(let r): "rejected \(r)"
            case .message(let m, let c): "\(String(decoding: FoundationWireFormat.encode(m), as: UTF8.self)) coerced=\(c)"
            }
        }
    }

    static func outcome(_ bytes: [UInt8], key: String?, reference: Bool, memberOrder: Int = 0) -> Outcome {
        var coerced = false
        do {
            let m = reference ? try FoundationWireFormat.decode(bytes, key: key, coercedMsg: &coerced)
                : try bytes.withUnsafeBufferPointer {
                    try WireFormat.decode(buffer: $0, key: key, coercedMsg: &coerced, memberOrder: memberOrder)
                }
            return .message(m, coerced: coerced)
        } catch let e as WireFormatError {
            return .rejected(e.reason)
        } catch {
            return .rejected("not a WireFormatError: \(error)")
        }
    }

    /// A disagreement between the two codecs, described, or nil.
    static func decodeDisagreement(_ bytes: [UInt8], key: String?) -> String? {
        let mine = outcome(bytes, key: key, reference: false)
        let reference = outcome(bytes, key: key, reference: true)
        if mine == reference { return nil }
        // Foundation reports one of several bad values of an object (features, a msg object) in
        // an order that varies between runs: the same reason in another order is an agreement.
        if case .rejected = reference, case .rejected = mine {
            for order in 1..<1024 where outcome(bytes, key: key, reference: false, memberOrder: order) == reference { return nil }
        }
        return "decode of \(String(reflecting: String(decoding: bytes, as: UTF8.self))) key \(key ?? "nil"): WireFormat \(mine), Foundation \(reference)"
    }

    static func encodeDisagreement(_ message: Message) -> String? {
        let mine = WireFormat.encode(message)
        let reference = FoundationWireFormat.encode(message)
        if mine == reference { return nil }
        return "encode: WireFormat \(String(reflecting: String(decoding: mine, as: UTF8.self))), Foundation \(String(reflecting: String(decoding: reference, as: UTF8.self)))"
    }

    /// Runs `count` random messages per kind from `seed`: encodes each with both codecs, decodes
    /// its JSON and `mutations` mutations of it with both. Returns the disagreements (at most
    /// `limit`) and the number of comparisons made.
    static func run(seed: UInt64, count: Int, mutations: Int, limit: Int = 20) -> (disagreements: [String], comparisons: Int) {
        var r = SplitMix64(seed: seed)
        var found: [String] = []
        var comparisons = 0
        for kind in 0..<9 {
            for _ in 0..<count {
                let m = message(&r, kind: kind)
                comparisons += 1
                if let d = encodeDisagreement(m) { found.append(d) }
                let bytes = FoundationWireFormat.encode(m)
                let key: String? = Bool.random(using: &r) ? WireFormat.key(m) : [nil, "600", "x", "-5", "0"].randomElement(using: &r)!
                comparisons += 1
                if let d = decodeDisagreement(bytes, key: key) { found.append(d) }
                for _ in 0..<mutations {
                    comparisons += 1
                    if let d = decodeDisagreement(mutate(bytes, &r), key: key) { found.append(d) }
                }
                if found.count >= limit { return (found, comparisons) }
            }
        }
        return (found, comparisons)
    }
}
