// JSON wire format of the course's 2021 topics (spec §1), through Foundation's JSON coders: the
// REFERENCE implementation. The daemon reads and writes with ``WireFormat`` (WireFormat.swift, a
// hand-written codec, 7-32x faster to encode and 3.5-12x to decode); this one stays as the oracle
// of the differential tests and of the `wire` fuzz target, and as the baseline of
// scripts/bench-codec. Both must agree byte for
// byte on encode and on the decoded message or the rejection reason on decode.
//
// Choices, all valid JSON (unlike the course's C++ collectors, spec §9.3):
// - series events are `[[t, m], ...]` arrays with t relative to the first tweet;
// - numbers are written exactly (shortest round-trip form: 1234567 stays 1234567, spec §9.4);
// - window-keyed values (`size`, `parameters`, `sample`, `model`) also carry `T_obs` in the value,
//   so a JSON-lines file keeps the window that Kafka would carry in the key; course consumers
//   ignore the extra field;
// - `parameters` carries `n_supp` as its writer set it (the estimator's `n_supp` option:
//   G1/(1 − n*), the supplementary count, by default) plus `n_star` and `G1` (spec §1.3);
// - keys are written sorted, so equal messages give equal bytes.
//
// Reading, the course's variants are accepted (spec §1): cids and tweet_ids that are integers or
// strings (kept as they came, see ``CascadeID``); a `msg` of any JSON type, converted to text
// (null → "None", as Python's str(None); a number or boolean → its JSON text; an array or object
// → its compact JSON) and reported through `coercedMsg`, since msg is only ever displayed;
// `parameters` without `n_star`/`G1` (NaN, for the reader to derive), with `params` of four
// elements `[p, beta, n_star, G1]` or three `[p, beta, G1]` (fields win over params).

import FoundationEssentials

/// A message that could not be decoded: `reason` is a short counter name (one of
/// ``RejectReason``), `description` says which field and why.
public struct WireFormatError: Error, CustomStringConvertible, Sendable {
    public var reason: String
    public var description: String
    public init(_ reason: String, _ description: String) {
        self.reason = reason
        self.description = description
    }
    /// An `invalid_field` error.
    public init(_ description: String) { self.init(RejectReason.invalidField, description) }
}

/// A `msg` field: any JSON value, as text; `coerced` when it was not a JSON string.
struct WireText: Codable {
    var text: String
    var coerced = false

    init(_ text: String) { self.text = text }

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            text = s
            return
        }
        coerced = true
        if c.decodeNil() {
            text = "None"
        } else {
            text = try c.decode(AnyJSON.self).json
        }
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(text)
    }
}

/// Any JSON value, kept only to be written back as compact JSON text.
indirect enum AnyJSON: Decodable {
    case null, bool(Bool), integer(Int64), number(Double), string(String), array([AnyJSON]), object([String: AnyJSON])

    init(from decoder: any Decoder) throws {
        if let c = try? decoder.container(keyedBy: AnyKey.self) {
            var o: [String: AnyJSON] = [:]
            for k in c.allKeys { o[k.stringValue] = try c.decode(AnyJSON.self, forKey: k) }
            self = .object(o)
        } else if var c = try? decoder.unkeyedContainer() {
            var a: [AnyJSON] = []
            while !c.isAtEnd { a.append(try c.decode(AnyJSON.self)) }
            self = .array(a)
        } else {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() { self = .null }
            else if let b = try? c.decode(Bool.self) { self = .bool(b) }
            else if let i = try? c.decode(Int64.self) { self = .integer(i) }
            else if let d = try? c.decode(Double.self) { self = .number(d) }
            else { self = .string(try c.decode(String.self)) }
        }
    }

    /// Compact JSON, object keys sorted.
    var json: String {
        switch self {
        case .null: "null"
        case .bool(let b): b ? "true" : "false"
        case .integer(let i): String(i)
        case .number(let d): "\(d)"
        case .string(let s): Self.quote(s)
        case .array(let a): "[" + a.map(\.json).joined(separator: ",") + "]"
        case .object(let o): "{" + o.keys.sorted().map { Self.quote($0) + ":" + o[$0]!.json }.joined(separator: ",") + "}"
        }
    }

    private static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20: out += "\\u00" + (u.value < 0x10 ? "0" : "") + String(u.value, radix: 16)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

private struct TweetWire: Codable {
    var type: String
    var msg: WireText?
    var t: Double
    var m: Double
    var tweet_id: CascadeID?
    var source: SourceID?
    var info: String?

    init(type: String, msg: WireText?, t: Double, m: Double, tweet_id: CascadeID?, source: SourceID?, info: String?) {
        self.type = type
        self.msg = msg
        self.t = t
        self.m = m
        self.tweet_id = tweet_id
        self.source = source
        self.info = info
    }

    private enum CodingKeys: String, CodingKey { case type, msg, t, m, tweet_id, source, info }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decode(String.self, forKey: .type)
        // A null msg is a value to convert ("None", counted), not a missing field.
        msg = c.contains(.msg) ? try c.decode(WireText.self, forKey: .msg) : nil
        t = try c.decode(Double.self, forKey: .t)
        m = try c.decode(Double.self, forKey: .m)
        tweet_id = try c.decodeIfPresent(CascadeID.self, forKey: .tweet_id)
        source = try c.decodeIfPresent(SourceID.self, forKey: .source)
        info = try c.decodeIfPresent(String.self, forKey: .info)
    }
}

private struct SeriesWire: Codable {
    var type: String
    var cid: CascadeID
    var msg: WireText
    var T_obs: Int
    var tweets: [[Double]]
    var seq: Int?
    var t0: Double?
}

private struct SizeWire: Codable {
    var type: String
    var cid: CascadeID
    var T_obs: Int?
    var n_tot: Int
    var t_end: Double
    var seq: Int?
}

private struct ParametersWire: Codable {
    var type: String
    var cid: CascadeID
    var msg: WireText
    var T_obs: Int?
    var n_obs: Int
    var n_supp: Double
    var params: [Double]
    var n_star: Double?
    var G1: Double?
    var seq: Int?
    var t0: Double?
    var features: [String: Double]?
}

private struct SampleWire: Codable {
    var type: String
    var cid: CascadeID
    var T_obs: Int?
    var X: [Double]
    var W: Double
    var growth: Double?
}

private struct TreeWire: Codable {
    var feature: [Int]
    var threshold: [Double]
    var left: [Int]
    var right: [Int]
    var value: [Double]
}

private struct ModelWire: Codable {
    var type: String
    var T_obs: Int
    var version: Int
    var mode: String
    var samples: Int
    var trees: [TreeWire]
    var w_min: Double?
    var w_max: Double?
    var growth_max: Double?
    var residuals: [Double]?
    var shift: Double?
}

private struct AlertWire: Codable {
    var type: String
    var cid: CascadeID
    var msg: WireText
    var T_obs: Int
    var n_tot: Double
    var n_obs: Int?
    var t: Double?
    var model: Int?
    var interval: [Double]?
    var p_viral: Double?
}

private struct StatWire: Codable {
    var type: String
    var cid: CascadeID
    var T_obs: Int
    var ARE: Double
    var forecast: Double?
    var n_tot: Int?
    var n_obs: Int?
}

private struct LogWire: Codable {
    var t: Int64
    var source: String
    var level: String
    var message: String
}

private struct TypeProbe: Decodable { var type: String? }

/// Encoding and decoding of messages in the course's wire format through Foundation's
/// `JSONEncoder`/`JSONDecoder`: the reference that ``WireFormat`` is tested against (same API,
/// same bytes, same messages, same rejection reasons).
public enum FoundationWireFormat {
    /// The JSON value of `message`, UTF-8, without a trailing newline.
    public static func encode(_ message: Message) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Stages do not emit non-finite numbers on purpose, but a stray NaN (a sample of a failed
        // forecast) must neither crash a sink nor produce invalid JSON: it is written as a
        // string, which decoders reject as `wrong_type`.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        do {
            let data: Data
            switch message {
            case .tweet(let t):
                data = try encoder.encode(TweetWire(
                    type: t.kind.rawValue, msg: WireText(t.msg), t: t.time, m: t.magnitude,
                    tweet_id: t.cascade, source: nil, info: t.info))
            case .series(let s):
                var pairs: [[Double]] = []
                pairs.reserveCapacity(s.times.count)
                for i in s.times.indices { pairs.append([s.times[i], s.magnitudes[i]]) }
                data = try encoder.encode(SeriesWire(
                    type: "serie", cid: s.cascade, msg: WireText(s.msg), T_obs: s.tObs, tweets: pairs, seq: s.seq, t0: s.t0))
            case .size(let s):
                data = try encoder.encode(SizeWire(
                    type: "size", cid: s.cascade, T_obs: s.tObs, n_tot: s.nTot, t_end: s.tEnd, seq: s.seq))
            case .parameters(let p):
                data = try encoder.encode(ParametersWire(
                    type: "parameters", cid: p.cascade, msg: WireText(p.msg), T_obs: p.tObs, n_obs: p.nObs,
                    n_supp: p.nSupp, params: [p.p, p.beta], n_star: p.nStar.isNaN ? nil : p.nStar,
                    G1: p.g1.isNaN ? nil : p.g1, seq: p.seq, t0: p.t0, features: p.features))
            case .sample(let s):
                data = try encoder.encode(SampleWire(type: "sample", cid: s.cascade, T_obs: s.tObs, X: s.x, W: s.w, growth: s.growth))
            case .model(let m):
                data = try encoder.encode(ModelWire(
                    type: "model", T_obs: m.tObs, version: m.version, mode: m.mode, samples: m.samples,
                    trees: m.trees.map {
                        TreeWire(feature: $0.feature, threshold: $0.threshold, left: $0.left,
                                 right: $0.right, value: $0.value)
                    }, w_min: m.wMin, w_max: m.wMax, growth_max: m.growthMax,
                    residuals: m.residuals.isEmpty ? nil : m.residuals, shift: m.shift))
            case .alert(let a):
                data = try encoder.encode(AlertWire(type: "alert", cid: a.cascade, msg: WireText(a.msg), T_obs: a.tObs, n_tot: a.nTot,
                                                    n_obs: a.nObs, t: a.t, model: a.model, interval: a.interval,
                                                    p_viral: a.pViral))
            case .stat(let s):
                data = try encoder.encode(StatWire(type: "stat", cid: s.cascade, T_obs: s.tObs, ARE: s.are,
                                                   forecast: s.forecast, n_tot: s.nTot, n_obs: s.nObs))
            case .log(let l):
                data = try encoder.encode(LogWire(t: l.time, source: l.source, level: l.level, message: l.message))
            }
            return Array(data)
        } catch {
            // Cannot happen (non-finite numbers are written as strings); a log line rather than a crash.
            return Array("{\"level\":\"ERROR\",\"message\":\"cannot encode a \(message.kind) message\",\"source\":\"wire_format\",\"t\":0}".utf8)
        }
    }

    /// Decodes one JSON value through Foundation's `JSONDecoder`: what ``WireFormat/decode(_:key:)``
    /// accepts and rejects, with the same reasons (the reference of the differential tests).
    public static func decode(_ bytes: some Collection<UInt8>, key: String? = nil) throws -> Message {
        var coerced = false
        return try decode(bytes, key: key, coercedMsg: &coerced)
    }

    /// As ``decode(_:key:)``, setting `coercedMsg` when `msg` was converted to text.
    public static func decode(_ bytes: some Collection<UInt8>, key: String?, coercedMsg: inout Bool) throws -> Message {
        let data = Data(bytes)
        if let bad = data.withUnsafeBytes({ UTF8Validation.firstInvalidByte($0.bindMemory(to: UInt8.self)) }) {
            throw WireFormatError(RejectReason.invalidUTF8, "invalid UTF-8 at byte \(bad)")
        }
        let decoder = JSONDecoder()
        let type: String?
        do {
            type = try decoder.decode(TypeProbe.self, from: data).type
        } catch {
            throw classify(error, data)
        }
        func keyedWindow(_ value: Int?) throws -> Int {
            if let value { return try window(value) }
            if let key, let w = Int(key) { return try window(w) }
            throw WireFormatError(RejectReason.missingField, "field T_obs: missing, and no numeric key")
        }
        do {
            switch type {
            case "tweet", "retweet":
                let w = try decoder.decode(TweetWire.self, from: data)
                try check("t", w.t, max: InputLimits.maxTime, what: "time")
                try check("m", w.m, max: InputLimits.maxMagnitude, what: "magnitude")
                guard let cid = w.tweet_id else { throw WireFormatError(RejectReason.missingField, "field tweet_id: missing") }
                let source: SourceID
                if let key, let k = SourceID(key) { source = k } else { source = w.source ?? 0 }
                coercedMsg = w.msg?.coerced ?? false
                return .tweet(Tweet(kind: type == "tweet" ? .tweet : .retweet, msg: w.msg?.text ?? "None",
                                    time: w.t, magnitude: w.m, source: source, cascade: cid, info: w.info ?? ""))
            case "serie":
                let w = try decoder.decode(SeriesWire.self, from: data)
                guard !w.tweets.isEmpty else { throw WireFormatError("field tweets: empty series") }
                var times: [Double] = [], marks: [Double] = []
                times.reserveCapacity(w.tweets.count)
                marks.reserveCapacity(w.tweets.count)
                for (i, pair) in w.tweets.enumerated() {
                    guard pair.count == 2 else { throw WireFormatError("field tweets[\(i)]: expected [t, m]") }
                    guard pair[0].magnitude <= InputLimits.maxTime else {
                        throw WireFormatError(RejectReason.outOfRange, "field tweets[\(i)]: time \(pair[0]) beyond \(InputLimits.maxTime) s")
                    }
                    try check("tweets[\(i)][1]", pair[1], max: InputLimits.maxMagnitude, what: "magnitude")
                    if let last = times.last, pair[0] < last {
                        throw WireFormatError(RejectReason.outOfOrder, "field tweets[\(i)]: time \(pair[0]) before \(last)")
                    }
                    times.append(pair[0])
                    marks.append(pair[1])
                }
                // Absolute times (2020 variant, spec §1.2) are shifted so the first tweet is at 0.
                if let first = times.first, first != 0 { times = times.map { $0 - first } }
                coercedMsg = w.msg.coerced
                return .series(Series(cascade: w.cid, msg: w.msg.text, tObs: try window(w.T_obs), times: times, magnitudes: marks,
                                      seq: try sequence(w.seq),
                                      t0: w.t0 == nil ? nil : try sourceTime("t0", w.t0)))
            case "size":
                let w = try decoder.decode(SizeWire.self, from: data)
                guard w.n_tot >= 0 else { throw WireFormatError(RejectReason.negative, "field n_tot: \(w.n_tot) < 0") }
                try check("t_end", w.t_end, max: InputLimits.maxTime, what: "time")
                return .size(CascadeSize(cascade: w.cid, tObs: try keyedWindow(w.T_obs), nTot: w.n_tot, tEnd: w.t_end,
                                         seq: try sequence(w.seq)))
            case "parameters":
                let w = try decoder.decode(ParametersWire.self, from: data)
                guard (2...4).contains(w.params.count) else {
                    throw WireFormatError("field params: expected [p, beta], [p, beta, G1] or [p, beta, n_star, G1], found \(w.params.count) numbers")
                }
                guard w.n_obs >= 0 else { throw WireFormatError(RejectReason.negative, "field n_obs: \(w.n_obs) < 0") }
                // Course variants (spec §1.3): GAS appends [n_star, G1] to params, AHM appends G1.
                let nStar = w.n_star ?? (w.params.count == 4 ? w.params[2] : .nan)
                let g1 = w.G1 ?? (w.params.count >= 3 ? w.params[w.params.count - 1] : .nan)
                coercedMsg = w.msg.coerced
                if let f = w.features {
                    guard f.count <= 64 else { throw WireFormatError(RejectReason.outOfRange, "field features: \(f.count) entries, at most 64") }
                    for (name, v) in f.sorted(by: { $0.key < $1.key }) where !v.isFinite {
                        throw WireFormatError("field features.\(name): not a finite number")
                    }
                }
                return .parameters(CascadeParameters(
                    cascade: w.cid, msg: w.msg.text, tObs: try keyedWindow(w.T_obs), nObs: w.n_obs, nSupp: w.n_supp,
                    nSuppMeaning: nil, p: w.params[0], beta: w.params[1], nStar: nStar, g1: g1, seq: try sequence(w.seq),
                    t0: w.t0 == nil ? nil : try sourceTime("t0", w.t0), features: w.features))
            case "sample":
                let w = try decoder.decode(SampleWire.self, from: data)
                if let g = w.growth, !(g >= 0) { throw WireFormatError(RejectReason.negative, "field growth: \(g) < 0") }
                return .sample(Sample(cascade: w.cid, tObs: try keyedWindow(w.T_obs), x: w.X, w: w.W, growth: w.growth))
            case "model":
                let w = try decoder.decode(ModelWire.self, from: data)
                var trees: [RegressionTree] = []
                for (i, t) in w.trees.enumerated() {
                    // Children come after their parent (the learner's layout), so that evaluating
                    // a tree always ends at a leaf and never reads outside the arrays.
                    let n = t.feature.count
                    guard n > 0, t.threshold.count == n, t.left.count == n, t.right.count == n, t.value.count == n,
                          (0..<n).allSatisfy({ k in
                              t.feature[k] < 0 || (t.left[k] > k && t.left[k] < n && t.right[k] > k && t.right[k] < n)
                          })
                    else { throw WireFormatError("field trees[\(i)]: inconsistent node arrays") }
                    trees.append(RegressionTree(feature: t.feature, threshold: t.threshold, left: t.left,
                                                right: t.right, value: t.value))
                }
                let residuals = w.residuals ?? []
                guard residuals.count <= Model.maxResiduals else {
                    throw WireFormatError(RejectReason.outOfRange, "field residuals: \(residuals.count) values, at most \(Model.maxResiduals)")
                }
                guard zip(residuals, residuals.dropFirst()).allSatisfy({ $0 <= $1 }) else {
                    throw WireFormatError("field residuals: not sorted ascending")
                }
                if let lo = w.w_min, let hi = w.w_max, !(lo <= hi) {
                    throw WireFormatError("fields w_min, w_max: \(lo) > \(hi)")
                }
                if let g = w.growth_max, !(g >= 1) { throw WireFormatError(RejectReason.outOfRange, "field growth_max: \(g) < 1") }
                if let c = w.shift, !c.isFinite || abs(c) > 100 { throw WireFormatError(RejectReason.outOfRange, "field shift: \(c) not in [-100, 100]") }
                return .model(Model(tObs: try window(w.T_obs), version: w.version, mode: w.mode, samples: w.samples, trees: trees,
                                    wMin: w.w_min, wMax: w.w_max, growthMax: w.growth_max, residuals: residuals, shift: w.shift))
            case "alert":
                let w = try decoder.decode(AlertWire.self, from: data)
                coercedMsg = w.msg.coerced
                if let i = w.interval, i.count != 2 || !(i[0] <= i[1]) {
                    throw WireFormatError("field interval: expected [lo, hi] with lo <= hi")
                }
                if let p = w.p_viral, !(0...1).contains(p) {
                    throw WireFormatError(RejectReason.outOfRange, "field p_viral: \(p) not in [0, 1]")
                }
                return .alert(Alert(cascade: w.cid, msg: w.msg.text, tObs: try window(w.T_obs), nTot: w.n_tot, nObs: w.n_obs,
                                    t: w.t == nil ? nil : try sourceTime("t", w.t), model: w.model,
                                    interval: w.interval, pViral: w.p_viral))
            case "stat":
                let w = try decoder.decode(StatWire.self, from: data)
                guard w.ARE >= 0 else { throw WireFormatError(RejectReason.negative, "field ARE: \(w.ARE) < 0") }
                return .stat(Stat(cascade: w.cid, tObs: try window(w.T_obs), are: w.ARE, forecast: w.forecast,
                                  nTot: w.n_tot, nObs: w.n_obs))
            case nil:
                let w = try decoder.decode(LogWire.self, from: data)
                return .log(LogRecord(time: w.t, source: w.source, level: w.level, message: w.message))
            case let other?:
                throw WireFormatError(RejectReason.unknownType, "unknown message type \"\(other)\"")
            }
        } catch let error as WireFormatError {
            throw error
        } catch {
            throw classify(error, data)
        }
    }

    /// Checks an optional stream-order number (`seq`): an integer >= 0.
    static func sequence(_ value: Int?) throws -> Int? {
        if let value, value < 0 { throw WireFormatError(RejectReason.negative, "field seq: \(value) < 0") }
        return value
    }

    /// Checks a time or magnitude: finite (always, from JSON), >= 0 and <= `max`.
    static func check(_ field: String, _ value: Double, max: Double, what: String) throws {
        guard value >= 0 else { throw WireFormatError(RejectReason.negative, "field \(field): negative \(what) \(value)") }
        guard value <= max else {
            throw WireFormatError(RejectReason.outOfRange, "field \(field): \(what) \(value) beyond \(max)")
        }
    }

    /// A source-clock time field: NaN when absent, else checked like an event time.
    static func sourceTime(_ field: String, _ value: Double?) throws -> Double {
        guard let value else { return .nan }
        try check(field, value, max: InputLimits.maxTime, what: "time")
        return value
    }

    /// Checks an observation window: > 0 seconds.
    static func window(_ value: Int) throws -> Int {
        guard value > 0 else { throw WireFormatError(RejectReason.outOfRange, "field T_obs: \(value) is not a window > 0 s") }
        return value
    }

    /// The error for a failure of Foundation's decoder, with a reason. Foundation reports every
    /// problem of the document itself as "not valid JSON"; our own syntax check then tells a
    /// syntax error (with its offset) from a valid document whose number does not fit its field.
    private static func classify(_ error: any Error, _ data: Data) -> WireFormatError {
        guard let error = error as? DecodingError else { return WireFormatError("\(error)") }
        switch error {
        case .keyNotFound:
            return WireFormatError(RejectReason.missingField, describe(error))
        case .typeMismatch(_, let context) where context.codingPath.isEmpty:
            return WireFormatError(RejectReason.invalidJSON, "invalid JSON: the value is not an object")
        case .typeMismatch, .valueNotFound:
            return WireFormatError(RejectReason.wrongType, describe(error))
        case .dataCorrupted:
            if let (offset, problem) = data.withUnsafeBytes({ JSONSyntax.firstError($0.bindMemory(to: UInt8.self)) }) {
                return WireFormatError(RejectReason.invalidJSON, "invalid JSON at byte \(offset): \(problem)")
            }
            return WireFormatError(RejectReason.outOfRange,
                                   "a number does not fit its field (too large, or not an integer where one is expected)")
        @unknown default:
            return WireFormatError(describe(error))
        }
    }

    private static func describe(_ error: any Error) -> String {
        guard let error = error as? DecodingError else { return "\(error)" }
        func path(_ context: DecodingError.Context) -> String {
            let p = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            return p.isEmpty ? "" : "field \(p): "
        }
        switch error {
        case .keyNotFound(let key, let context):
            return "\(path(context))field \(key.stringValue): missing"
        case .typeMismatch(let type, let context):
            return "\(path(context))expected \(type)"
        case .valueNotFound(let type, let context):
            return "\(path(context))expected \(type), found null"
        case .dataCorrupted(let context):
            return "\(path(context))\(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}
