// JSON wire format of the course's 2021 topics (spec §1), through Foundation's JSON coders.
//
// Choices, all valid JSON (unlike the course's C++ collectors, spec §9.3):
// - series events are `[[t, m], ...]` arrays with t relative to the first tweet;
// - numbers are written exactly (shortest round-trip form: 1234567 stays 1234567, spec §9.4);
// - window-keyed values (`size`, `parameters`, `sample`, `model`) also carry `T_obs` in the value,
//   so a JSON-lines file keeps the window that Kafka would carry in the key; course consumers
//   ignore the extra field;
// - `parameters` carries `n_supp` = G1/(1 − n*) (the supplementary count, as the name says) plus
//   `n_star` and `G1` (spec §1.3);
// - keys are written sorted, so equal messages give equal bytes.

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

private struct TweetWire: Codable {
    var type: String
    var msg: String?
    var t: Double
    var m: Double
    var tweet_id: CascadeID?
    var source: SourceID?
    var info: String?
}

private struct SeriesWire: Codable {
    var type: String
    var cid: CascadeID
    var msg: String
    var T_obs: Int
    var tweets: [[Double]]
    var t0: Double?
}

private struct SizeWire: Codable {
    var type: String
    var cid: CascadeID
    var T_obs: Int?
    var n_tot: Int
    var t_end: Double
}

private struct ParametersWire: Codable {
    var type: String
    var cid: CascadeID
    var msg: String
    var T_obs: Int?
    var n_obs: Int
    var n_supp: Double
    var params: [Double]
    var n_star: Double?
    var G1: Double?
    var t0: Double?
}

private struct SampleWire: Codable {
    var type: String
    var cid: CascadeID
    var T_obs: Int?
    var X: [Double]
    var W: Double
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
    var residuals: [Double]?
}

private struct AlertWire: Codable {
    var type: String
    var cid: CascadeID
    var msg: String
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

/// Encoding and decoding of messages in the course's wire format.
public enum WireFormat {
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
                    type: t.kind.rawValue, msg: t.msg, t: t.time, m: t.magnitude,
                    tweet_id: t.cascade, source: nil, info: t.info))
            case .series(let s):
                var pairs: [[Double]] = []
                pairs.reserveCapacity(s.times.count)
                for i in s.times.indices { pairs.append([s.times[i], s.magnitudes[i]]) }
                data = try encoder.encode(SeriesWire(
                    type: "serie", cid: s.cascade, msg: s.msg, T_obs: s.tObs, tweets: pairs, t0: s.t0.isFinite ? s.t0 : nil))
            case .size(let s):
                data = try encoder.encode(SizeWire(
                    type: "size", cid: s.cascade, T_obs: s.tObs, n_tot: s.nTot, t_end: s.tEnd))
            case .parameters(let p):
                data = try encoder.encode(ParametersWire(
                    type: "parameters", cid: p.cascade, msg: p.msg, T_obs: p.tObs, n_obs: p.nObs,
                    n_supp: p.nSupp, params: [p.p, p.beta], n_star: p.nStar.isNaN ? nil : p.nStar,
                    G1: p.g1.isNaN ? nil : p.g1, t0: p.t0.isFinite ? p.t0 : nil))
            case .sample(let s):
                data = try encoder.encode(SampleWire(type: "sample", cid: s.cascade, T_obs: s.tObs, X: s.x, W: s.w))
            case .model(let m):
                data = try encoder.encode(ModelWire(
                    type: "model", T_obs: m.tObs, version: m.version, mode: m.mode, samples: m.samples,
                    trees: m.trees.map {
                        TreeWire(feature: $0.feature, threshold: $0.threshold, left: $0.left,
                                 right: $0.right, value: $0.value)
                    }, residuals: m.residuals.isEmpty ? nil : m.residuals))
            case .alert(let a):
                data = try encoder.encode(AlertWire(type: "alert", cid: a.cascade, msg: a.msg, T_obs: a.tObs, n_tot: a.nTot,
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
                return .tweet(Tweet(kind: type == "tweet" ? .tweet : .retweet, msg: w.msg ?? "None",
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
                return .series(Series(cascade: w.cid, msg: w.msg, tObs: try window(w.T_obs), times: times, magnitudes: marks,
                                      t0: try sourceTime("t0", w.t0)))
            case "size":
                let w = try decoder.decode(SizeWire.self, from: data)
                guard w.n_tot >= 0 else { throw WireFormatError(RejectReason.negative, "field n_tot: \(w.n_tot) < 0") }
                try check("t_end", w.t_end, max: InputLimits.maxTime, what: "time")
                return .size(CascadeSize(cascade: w.cid, tObs: try keyedWindow(w.T_obs), nTot: w.n_tot, tEnd: w.t_end))
            case "parameters":
                let w = try decoder.decode(ParametersWire.self, from: data)
                guard w.params.count >= 2 else { throw WireFormatError("field params: expected [p, beta]") }
                guard w.n_obs >= 0 else { throw WireFormatError(RejectReason.negative, "field n_obs: \(w.n_obs) < 0") }
                return .parameters(CascadeParameters(
                    cascade: w.cid, msg: w.msg, tObs: try keyedWindow(w.T_obs), nObs: w.n_obs, nSupp: w.n_supp,
                    p: w.params[0], beta: w.params[1], nStar: w.n_star ?? .nan, g1: w.G1 ?? .nan,
                    t0: try sourceTime("t0", w.t0)))
            case "sample":
                let w = try decoder.decode(SampleWire.self, from: data)
                return .sample(Sample(cascade: w.cid, tObs: try keyedWindow(w.T_obs), x: w.X, w: w.W))
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
                return .model(Model(tObs: try window(w.T_obs), version: w.version, mode: w.mode, samples: w.samples, trees: trees,
                                    residuals: residuals))
            case "alert":
                let w = try decoder.decode(AlertWire.self, from: data)
                if let i = w.interval, i.count != 2 || !(i[0] <= i[1]) {
                    throw WireFormatError("field interval: expected [lo, hi] with lo <= hi")
                }
                if let p = w.p_viral, !(0...1).contains(p) {
                    throw WireFormatError(RejectReason.outOfRange, "field p_viral: \(p) not in [0, 1]")
                }
                return .alert(Alert(cascade: w.cid, msg: w.msg, tObs: try window(w.T_obs), nTot: w.n_tot, nObs: w.n_obs,
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

    /// Checks a time or magnitude: finite (always, from JSON), >= 0 and <= `max`.
    private static func check(_ field: String, _ value: Double, max: Double, what: String) throws {
        guard value >= 0 else { throw WireFormatError(RejectReason.negative, "field \(field): negative \(what) \(value)") }
        guard value <= max else {
            throw WireFormatError(RejectReason.outOfRange, "field \(field): \(what) \(value) beyond \(max)")
        }
    }

    /// A source-clock time field: NaN when absent, else checked like an event time.
    private static func sourceTime(_ field: String, _ value: Double?) throws -> Double {
        guard let value else { return .nan }
        try check(field, value, max: InputLimits.maxTime, what: "time")
        return value
    }

    /// Checks an observation window: > 0 seconds.
    private static func window(_ value: Int) throws -> Int {
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
