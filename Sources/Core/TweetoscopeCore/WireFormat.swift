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

/// A message that could not be decoded; `description` says which field and why.
public struct WireFormatError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
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
}

private struct AlertWire: Codable {
    var type: String
    var cid: CascadeID
    var msg: String
    var T_obs: Int
    var n_tot: Double
}

private struct StatWire: Codable {
    var type: String
    var cid: CascadeID
    var T_obs: Int
    var ARE: Double
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
                    type: "serie", cid: s.cascade, msg: s.msg, T_obs: s.tObs, tweets: pairs))
            case .size(let s):
                data = try encoder.encode(SizeWire(
                    type: "size", cid: s.cascade, T_obs: s.tObs, n_tot: s.nTot, t_end: s.tEnd))
            case .parameters(let p):
                data = try encoder.encode(ParametersWire(
                    type: "parameters", cid: p.cascade, msg: p.msg, T_obs: p.tObs, n_obs: p.nObs,
                    n_supp: p.nSupp, params: [p.p, p.beta], n_star: p.nStar, G1: p.g1))
            case .sample(let s):
                data = try encoder.encode(SampleWire(type: "sample", cid: s.cascade, T_obs: s.tObs, X: s.x, W: s.w))
            case .model(let m):
                data = try encoder.encode(ModelWire(
                    type: "model", T_obs: m.tObs, version: m.version, mode: m.mode, samples: m.samples,
                    trees: m.trees.map {
                        TreeWire(feature: $0.feature, threshold: $0.threshold, left: $0.left,
                                 right: $0.right, value: $0.value)
                    }))
            case .alert(let a):
                data = try encoder.encode(AlertWire(type: "alert", cid: a.cascade, msg: a.msg, T_obs: a.tObs, n_tot: a.nTot))
            case .stat(let s):
                data = try encoder.encode(StatWire(type: "stat", cid: s.cascade, T_obs: s.tObs, ARE: s.are))
            case .log(let l):
                data = try encoder.encode(LogWire(t: l.time, source: l.source, level: l.level, message: l.message))
            }
            return Array(data)
        } catch {
            // Only non-finite numbers can fail; stages never emit them (the estimator rejects such fits).
            preconditionFailure("cannot encode \(message.kind): \(error)")
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
    /// - Throws: `WireFormatError` naming the problem (invalid JSON, unknown type, missing or
    ///   mistyped field, non-finite or negative number).
    public static func decode(_ bytes: some Collection<UInt8>, key: String? = nil) throws -> Message {
        let data = Data(bytes)
        let decoder = JSONDecoder()
        let type: String?
        do {
            type = try decoder.decode(TypeProbe.self, from: data).type
        } catch {
            throw WireFormatError("invalid JSON: \(describe(error))")
        }
        func keyedWindow(_ value: Int?) throws -> Int {
            if let value { return value }
            if let key, let w = Int(key) { return w }
            throw WireFormatError("no T_obs in the value and no numeric key")
        }
        do {
            switch type {
            case "tweet", "retweet":
                let w = try decoder.decode(TweetWire.self, from: data)
                guard w.t.isFinite, w.t >= 0 else { throw WireFormatError("field t: \(w.t) is not a finite time >= 0") }
                guard w.m.isFinite, w.m >= 0 else { throw WireFormatError("field m: \(w.m) is not a finite magnitude >= 0") }
                guard let cid = w.tweet_id else { throw WireFormatError("field tweet_id: missing") }
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
                    guard pair.count == 2, pair[0].isFinite, pair[1].isFinite, pair[1] >= 0 else {
                        throw WireFormatError("field tweets[\(i)]: expected [t, m] with finite t and m >= 0")
                    }
                    if let last = times.last, pair[0] < last {
                        throw WireFormatError("field tweets[\(i)]: time \(pair[0]) before \(last)")
                    }
                    times.append(pair[0])
                    marks.append(pair[1])
                }
                // Absolute times (2020 variant, spec §1.2) are shifted so the first tweet is at 0.
                if let first = times.first, first != 0 { times = times.map { $0 - first } }
                return .series(Series(cascade: w.cid, msg: w.msg, tObs: w.T_obs, times: times, magnitudes: marks))
            case "size":
                let w = try decoder.decode(SizeWire.self, from: data)
                return .size(CascadeSize(cascade: w.cid, tObs: try keyedWindow(w.T_obs), nTot: w.n_tot, tEnd: w.t_end))
            case "parameters":
                let w = try decoder.decode(ParametersWire.self, from: data)
                guard w.params.count >= 2 else { throw WireFormatError("field params: expected [p, beta]") }
                return .parameters(CascadeParameters(
                    cascade: w.cid, msg: w.msg, tObs: try keyedWindow(w.T_obs), nObs: w.n_obs, nSupp: w.n_supp,
                    p: w.params[0], beta: w.params[1], nStar: w.n_star ?? .nan, g1: w.G1 ?? .nan))
            case "sample":
                let w = try decoder.decode(SampleWire.self, from: data)
                return .sample(Sample(cascade: w.cid, tObs: try keyedWindow(w.T_obs), x: w.X, w: w.W))
            case "model":
                let w = try decoder.decode(ModelWire.self, from: data)
                var trees: [RegressionTree] = []
                for (i, t) in w.trees.enumerated() {
                    let n = t.feature.count
                    guard n > 0, t.threshold.count == n, t.left.count == n, t.right.count == n, t.value.count == n,
                          t.left.allSatisfy({ (0..<n).contains($0) || $0 < 0 }),
                          t.right.allSatisfy({ (0..<n).contains($0) || $0 < 0 })
                    else { throw WireFormatError("field trees[\(i)]: inconsistent node arrays") }
                    trees.append(RegressionTree(feature: t.feature, threshold: t.threshold, left: t.left,
                                                right: t.right, value: t.value))
                }
                return .model(Model(tObs: w.T_obs, version: w.version, mode: w.mode, samples: w.samples, trees: trees))
            case "alert":
                let w = try decoder.decode(AlertWire.self, from: data)
                return .alert(Alert(cascade: w.cid, msg: w.msg, tObs: w.T_obs, nTot: w.n_tot))
            case "stat":
                let w = try decoder.decode(StatWire.self, from: data)
                return .stat(Stat(cascade: w.cid, tObs: w.T_obs, are: w.ARE))
            case nil:
                let w = try decoder.decode(LogWire.self, from: data)
                return .log(LogRecord(time: w.t, source: w.source, level: w.level, message: w.message))
            case let other?:
                throw WireFormatError("unknown message type \"\(other)\"")
            }
        } catch let error as WireFormatError {
            throw error
        } catch {
            throw WireFormatError(describe(error))
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
