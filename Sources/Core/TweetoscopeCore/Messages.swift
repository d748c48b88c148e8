// Message types of the Tweetoscope pipeline (spec §1). In one daemon they travel as Swift values
// through in-memory streams; between daemons they travel as JSON in the course's 2021 wire format
// (see WireFormat.swift).

/// Identifier of a cascade (`cid` on the wire; `tweet_id` in `tweets`), shared by all its events.
///
/// An opaque id: the course generator writes integers, the spec's own examples strings
/// (`"cid": "tw23981"`, spec §1). Both are accepted and written back **as they came** (an integer
/// stays a JSON number, a string stays a string, so `"42"` and `42` are different ids). Integers
/// must fit in 64 bits; ids are only compared for equality, and ordered (numbers before strings,
/// numbers by value, strings by their UTF-8 bytes) only to break ties deterministically.
public enum CascadeID: Sendable, Hashable, Comparable, Codable, ExpressibleByIntegerLiteral,
    ExpressibleByStringLiteral, LosslessStringConvertible {
    case number(Int64)
    case string(String)

    public init(_ value: Int64) { self = .number(value) }
    public init(_ value: Int) { self = .number(Int64(value)) }
    public init(integerLiteral value: Int64) { self = .number(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    /// The id whose text is `description`: a number when it is a decimal integer, else a string.
    public init?(_ description: String) {
        self = Int64(description).map(CascadeID.number) ?? .string(description)
    }

    /// The integer id, nil for a string id.
    public var number: Int64? { if case .number(let n) = self { n } else { nil } }

    public var description: String {
        switch self {
        case .number(let n): String(n)
        case .string(let s): s
        }
    }

    public static func < (a: CascadeID, b: CascadeID) -> Bool {
        switch (a, b) {
        case (.number(let x), .number(let y)): x < y
        case (.number, .string): true
        case (.string, .number): false
        case (.string(let x), .string(let y)): Array(x.utf8).lexicographicallyPrecedes(Array(y.utf8))
        }
    }

    /// Decodes a JSON integer or string; anything else (a fraction, null, an array...) throws
    /// a type mismatch (`wrong_type`), and an integer beyond 64 bits a corrupted-data error
    /// (`out_of_range`).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) {
            self = .string(s)
        } else {
            self = .number(try c.decode(Int64.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .number(let n): try c.encode(n)
        case .string(let s): try c.encode(s)
        }
    }
}

/// Identifier of a tweet source: the generator thread number, i.e. the Kafka key of `tweets`.
public typealias SourceID = Int64

/// One event of the `tweets` topic: an original tweet (the first event of a cascade) or a retweet.
///
/// Spec §1.1. `t` is in seconds on the clock of `source` (clocks of different sources are
/// unrelated); `magnitude` is the follower count of the user who (re)tweeted.
public struct Tweet: Sendable, Hashable {
    /// `tweet` opens a cascade, `retweet` extends it.
    public enum Kind: String, Sendable, Hashable { case tweet, retweet }

    public var kind: Kind
    /// Text of the tweet; `"None"` when the data has no message column (course convention).
    public var msg: String
    /// Time in seconds on the source's clock.
    public var time: Double
    /// Follower count of the (re)tweeting user; finite and >= 0.
    public var magnitude: Double
    /// Source the event came from (the Kafka key of `tweets`).
    public var source: SourceID
    /// Cascade the event belongs to (`tweet_id` on the wire).
    public var cascade: CascadeID
    /// Free-form debugging information (`cascade=<n>` from the course generator).
    public var info: String
    /// Where the event was read from when it came from a replayable input (a Kafka partition)
    /// and a stage downstream holds positions; nil otherwise. Not part of the wire format, and
    /// ignored by `==` and hashing.
    public var origin: RecordOrigin?

    public init(kind: Kind, msg: String = "None", time: Double, magnitude: Double,
                source: SourceID, cascade: CascadeID, info: String = "", origin: RecordOrigin? = nil) {
        self.kind = kind
        self.msg = msg
        self.time = time
        self.magnitude = magnitude
        self.source = source
        self.cascade = cascade
        self.info = info
        self.origin = origin
    }

    public static func == (a: Tweet, b: Tweet) -> Bool {
        a.kind == b.kind && a.msg == b.msg && a.time == b.time && a.magnitude == b.magnitude
            && a.source == b.source && a.cascade == b.cascade && a.info == b.info
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(kind)
        hasher.combine(msg)
        hasher.combine(time)
        hasher.combine(magnitude)
        hasher.combine(source)
        hasher.combine(cascade)
        hasher.combine(info)
    }
}

/// A partial cascade: every event of a cascade observed up to `first_time + T_obs` (spec §1.2).
///
/// Times are **relative to the first event** (the first element is 0) and non-decreasing;
/// `times` and `magnitudes` have the same length, at least 1.
public struct Series: Sendable, Hashable {
    public var cascade: CascadeID
    /// Text of the cascade's original tweet.
    public var msg: String
    /// Observation window in seconds.
    public var tObs: Int
    /// Event times in seconds since the original tweet.
    public var times: [Double]
    /// Follower counts, one per event.
    public var magnitudes: [Double]
    /// Stream-order number of this message among the collector's messages of its window (series
    /// and sizes share one counter per window, 0, 1, 2...): the predictor processes the window's
    /// parameters and sizes in this order, whatever the timing of the paths they took. nil from
    /// producers that do not number (the course's collectors).
    public var seq: Int?

    /// Source-clock time in seconds of the cascade's first event (wire field `t0`); nil when
    /// unknown (a course producer). The window ends at `t0 + tObs` on the source clock.
    public var t0: Double?

    public init(cascade: CascadeID, msg: String, tObs: Int, times: [Double], magnitudes: [Double], seq: Int? = nil,
                t0: Double? = nil) {
        self.cascade = cascade
        self.msg = msg
        self.tObs = tObs
        self.times = times
        self.magnitudes = magnitudes
        self.seq = seq
        self.t0 = t0
    }

    /// Number of events observed.
    public var count: Int { times.count }
}

/// Final size of an ended cascade, sent once per observation window (spec §1.3, key = T_obs).
public struct CascadeSize: Sendable, Hashable {
    public var cascade: CascadeID
    /// The observation window this copy is addressed to (the Kafka key).
    public var tObs: Int
    /// Number of events of the cascade seen before it ended.
    public var nTot: Int
    /// Source-clock time in seconds of the cascade's last event.
    public var tEnd: Double
    /// Stream-order number within the window (see ``Series/seq``); nil when not numbered.
    public var seq: Int?
    /// Where the message was read from when a stage downstream holds positions (the predictor
    /// keeps a size until its parameters arrive); not part of the wire format.
    public var origin: RecordOrigin?

    public init(cascade: CascadeID, tObs: Int, nTot: Int, tEnd: Double, seq: Int? = nil) {
        self.cascade = cascade
        self.tObs = tObs
        self.nTot = nTot
        self.tEnd = tEnd
        self.seq = seq
    }

    public static func == (a: CascadeSize, b: CascadeSize) -> Bool {
        a.cascade == b.cascade && a.tObs == b.tObs && a.nTot == b.nTot && a.tEnd == b.tEnd && a.seq == b.seq
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(cascade)
        hasher.combine(tObs)
        hasher.combine(nTot)
        hasher.combine(tEnd)
        hasher.combine(seq)
    }
}

/// Marked-Hawkes parameters estimated on one partial cascade (spec §1.3, §4.4; key = T_obs).
///
/// `nSupp` is the `n_supp` field as written on the wire. Its meaning is an open point of the
/// course (spec §1.3): the **supplementary** count G1/(1 − n*) (the events still to come, so the
/// raw forecast is `nObs + nSupp`; the name's meaning and our default) or the **total** forecast
/// n_obs + G1/(1 − n*) (five course implementations). `nSuppMeaning` says which when the writer
/// knows (the estimator stage sets it); a decoded message has nil and the reader's option decides.
/// `nStar` and `g1` are NaN when the writer did not send them (the base spec's
/// `{"params": [p, beta]}`); readers then derive them (spec §5).
public struct CascadeParameters: Sendable, Hashable {
    public var cascade: CascadeID
    public var msg: String
    /// Observation window in seconds.
    public var tObs: Int
    /// Events observed in the window.
    public var nObs: Int
    /// The `n_supp` field: supplementary events G1/(1 − n*), or the total forecast (see `nSuppMeaning`).
    public var nSupp: Double
    /// What `nSupp` means; nil when unknown (decoded from the wire). Ignored by `==` and hashing
    /// (NaN `nStar`/`g1`, "not sent", compare equal).
    public var nSuppMeaning: NSuppMeaning?
    /// Infectiousness p (dimensionless).
    public var p: Double
    /// Decay rate beta in 1/s.
    public var beta: Double
    /// Branching factor n* = p·E[m]; NaN when not sent.
    public var nStar: Double
    /// Expected number of direct offspring still to come from the observed events; NaN when not sent.
    public var g1: Double
    /// The ``Series/seq`` of the partial cascade the parameters were estimated on; nil when not numbered.
    public var seq: Int?
    /// Where the message was read from when a stage downstream holds positions (the predictor
    /// keeps a forecast until its size arrives); not part of the wire format.
    public var origin: RecordOrigin?
    /// Source-clock time in seconds of the cascade's first event, copied from its series (wire
    /// field `t0`); nil when unknown.
    public var t0: Double?
    /// Features of the observed partial series beyond the Hawkes fit, by name (wire object
    /// `features`, an extension of this project: course consumers ignore it): finite numbers,
    /// see the estimator's `SeriesFeatures` for names, units and formulas. nil when the writer
    /// did not send them (a course estimator); readers then forecast without them.
    public var features: [String: Double]?

    public init(cascade: CascadeID, msg: String, tObs: Int, nObs: Int, nSupp: Double,
                nSuppMeaning: NSuppMeaning? = .supplementary,
                p: Double, beta: Double, nStar: Double, g1: Double, seq: Int? = nil, t0: Double? = nil,
                features: [String: Double]? = nil) {
        self.features = features
        self.seq = seq
        self.t0 = t0
        self.cascade = cascade
        self.msg = msg
        self.tObs = tObs
        self.nObs = nObs
        self.nSupp = nSupp
        self.nSuppMeaning = nSuppMeaning
        self.p = p
        self.beta = beta
        self.nStar = nStar
        self.g1 = g1
    }

    public static func == (a: CascadeParameters, b: CascadeParameters) -> Bool {
        a.cascade == b.cascade && a.msg == b.msg && a.tObs == b.tObs && a.nObs == b.nObs
            && a.nSupp == b.nSupp && a.p == b.p && a.beta == b.beta
            && (a.nStar == b.nStar || (a.nStar.isNaN && b.nStar.isNaN))
            && (a.g1 == b.g1 || (a.g1.isNaN && b.g1.isNaN)) && a.seq == b.seq && a.t0 == b.t0
            && a.features == b.features
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(cascade)
        hasher.combine(msg)
        hasher.combine(tObs)
        hasher.combine(nObs)
        hasher.combine(nSupp)
        hasher.combine(p)
        hasher.combine(beta)
        hasher.combine(nStar.isNaN ? 0 : nStar)
        hasher.combine(g1.isNaN ? 0 : g1)
        hasher.combine(seq)
        hasher.combine(features)
    }

    /// The supplementary count G1/(1 − n*) that `nSupp` stands for, reading it as `assumed`
    /// when the message does not say (`total` → nSupp − nObs).
    public func supplementary(assuming assumed: NSuppMeaning) -> Double {
        (nSuppMeaning ?? assumed) == .total ? nSupp - Double(nObs) : nSupp
    }
}

/// The meaning of a `parameters` message's `n_supp` (spec §1.3, open point).
public enum NSuppMeaning: String, Sendable, Hashable, CaseIterable {
    /// G1/(1 − n*), the events still to come (the name's meaning; tweetoscoped's default).
    case supplementary
    /// n_obs + G1/(1 − n*), the total forecast (the majority of the course's implementations).
    case total
}

/// A training sample for the learner (spec §1.4, key = T_obs): features `x` and target `w`.
public struct Sample: Sendable, Hashable {
    public var cascade: CascadeID
    public var tObs: Int
    /// Feature vector; [beta, n_star, G1] in the course design, longer in richer modes.
    public var x: [Double]
    /// Target: the correction factor W (or its transform, depending on the correction mode).
    public var w: Double
    /// The cascade's growth factor n_tot / n_obs (dimensionless, >= 1), so that the learner can
    /// bound what its models forecast by the growth seen in training (wire field `growth`); nil
    /// from producers that do not send it.
    public var growth: Double?

    public init(cascade: CascadeID, tObs: Int, x: [Double], w: Double, growth: Double? = nil) {
        self.cascade = cascade
        self.tObs = tObs
        self.x = x
        self.w = w
        self.growth = growth
    }
}

/// A regression model for one observation window, sent by the learner to the predictor
/// (spec §1.5; key = T_obs). Replaces the course's pickled scikit-learn forest with a versioned
/// JSON document.
public struct Model: Sendable, Hashable {
    public var tObs: Int
    /// Increases by one at every refit of this window's model.
    public var version: Int
    /// The correction mode the model was trained for (`course`, `log`, ...).
    public var mode: String
    /// Number of samples the model was fitted on.
    public var samples: Int
    /// The forest: regression trees whose predictions are averaged.
    public var trees: [RegressionTree]
    /// Smallest and largest target of the training samples (wire `w_min`, `w_max`): a consumer
    /// bounds the model's prediction to this range. nil when unknown.
    public var wMin: Double?
    public var wMax: Double?
    /// Largest growth factor n_tot / n_obs among the training samples that carried one (wire
    /// `growth_max`): a consumer bounds a forecast to `growth_max · n_obs`. nil when unknown.
    public var growthMax: Double?
    /// Out-of-bag residuals of the forest on its training samples, sorted ascending, at most a
    /// few hundred (wire field `residuals`, omitted when empty): in the target's log scale,
    /// log(true / forecast) of the quantity the mode forecasts (the predictor's `Uncertainty`
    /// turns them into prediction intervals). Empty for a model without them.
    public var residuals: [Double]
    /// Constant added to the forest's prediction before it is used (wire field `shift`, omitted
    /// when nil): the `growth` mode's log-shift c, chosen by the learner on the out-of-bag
    /// predictions to minimise their median ARE (`residuals` are then those of the shifted
    /// prediction). nil (= 0) for other modes and older models.
    public var shift: Double?

    /// Most residuals a model may carry (decoding rejects more).
    public static let maxResiduals = 1000

    public init(tObs: Int, version: Int, mode: String, samples: Int, trees: [RegressionTree],
                wMin: Double? = nil, wMax: Double? = nil, growthMax: Double? = nil, residuals: [Double] = [],
                shift: Double? = nil) {
        self.residuals = residuals
        self.shift = shift
        self.tObs = tObs
        self.version = version
        self.mode = mode
        self.samples = samples
        self.trees = trees
        self.wMin = wMin
        self.wMax = wMax
        self.growthMax = growthMax
    }

    /// Mean of the trees' predictions for the feature vector `x`; nil for an empty forest.
    public func predict(_ x: [Double]) -> Double? {
        guard !trees.isEmpty else { return nil }
        var total = 0.0
        for tree in trees { total += tree.predict(x) }
        return total / Double(trees.count)
    }
}

/// A binary regression tree in flat form. Node `i` is a leaf when `feature[i] < 0`, with value
/// `value[i]`; otherwise it sends `x` to `left[i]` when `x[feature[i]] <= threshold[i]` and to
/// `right[i]` otherwise. Node 0 is the root.
public struct RegressionTree: Sendable, Hashable {
    public var feature: [Int]
    public var threshold: [Double]
    public var left: [Int]
    public var right: [Int]
    public var value: [Double]

    public init(feature: [Int], threshold: [Double], left: [Int], right: [Int], value: [Double]) {
        self.feature = feature
        self.threshold = threshold
        self.left = left
        self.right = right
        self.value = value
    }

    /// The leaf value reached by `x`. Missing features read as 0.
    public func predict(_ x: [Double]) -> Double {
        var node = 0
        while feature[node] >= 0 {
            let f = feature[node]
            let v = f < x.count ? x[f] : 0
            node = v <= threshold[node] ? left[node] : right[node]
        }
        return value[node]
    }
}

/// A forecast of a cascade's final size (spec §1.6).
public struct Alert: Sendable, Hashable {
    public var cascade: CascadeID
    public var msg: String
    public var tObs: Int
    /// Forecast final size N̂.
    public var nTot: Double
    /// Events observed in the window (nil: not given, a course producer).
    public var nObs: Int?
    /// Source-clock time in seconds of the forecast: the cascade's first event + T_obs (nil when unknown).
    public var t: Double?
    /// Version of the model used (0 = none), nil when not given.
    public var model: Int?
    /// 80 % prediction interval [lo, hi] of the final size, lo ≥ n_obs (nil when not given).
    public var interval: [Double]?
    /// Probability that the final size reaches the predictor's `viral_size`, in [0, 1].
    public var pViral: Double?

    public init(cascade: CascadeID, msg: String, tObs: Int, nTot: Double, nObs: Int? = nil, t: Double? = nil,
                model: Int? = nil, interval: [Double]? = nil, pViral: Double? = nil) {
        self.nObs = nObs
        self.t = t
        self.model = model
        self.interval = interval
        self.pViral = pViral
        self.cascade = cascade
        self.msg = msg
        self.tObs = tObs
        self.nTot = nTot
    }
}

/// Accuracy of one forecast once the true size is known (spec §1.7):
/// ARE = |N̂ − n_tot| / n_tot.
public struct Stat: Sendable, Hashable {
    public var cascade: CascadeID
    public var tObs: Int
    public var are: Double
    /// The forecast N̂ (nil when not given).
    public var forecast: Double?
    /// The true final size n_tot (nil when not given).
    public var nTot: Int?
    /// Events observed in the window when the forecast was made (nil when not given).
    public var nObs: Int?

    public init(cascade: CascadeID, tObs: Int, are: Double, forecast: Double? = nil, nTot: Int? = nil, nObs: Int? = nil) {
        self.forecast = forecast
        self.nTot = nTot
        self.nObs = nObs
        self.cascade = cascade
        self.tObs = tObs
        self.are = are
    }
}

/// A log record in the course's `logs` format (spec §1.8).
public struct LogRecord: Sendable, Hashable {
    /// Unix time in seconds.
    public var time: Int64
    /// Logger name (the stage).
    public var source: String
    /// DEBUG, INFO, WARNING, ERROR or CRITICAL.
    public var level: String
    public var message: String

    public init(time: Int64, source: String, level: String, message: String) {
        self.time = time
        self.source = source
        self.level = level
        self.message = message
    }
}

/// The kinds of message a stream can carry; used to type-check stage ports.
public enum MessageKind: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case tweet, series, size, parameters, sample, model, alert, stat, log
    public var description: String { rawValue }

    /// Whether messages of this kind carry a ``RecordOrigin`` when read from a replayable input
    /// for a stage that holds positions (tweets for the collector; sizes and parameters for the
    /// predictor).
    public var carriesOrigin: Bool { self == .tweet || self == .size || self == .parameters }
}

/// Any message of the pipeline.
///
/// Every case but `tweet` (the bulk of the traffic) is boxed (`indirect`): a message is as large
/// as its largest inline payload, and the parameters' 170 bytes made every tweet message 176
/// bytes to build, copy and destroy (issue 17); the other kinds are a few per cascade.
public enum Message: Sendable, Hashable {
    case tweet(Tweet)
    indirect case series(Series)
    indirect case size(CascadeSize)
    indirect case parameters(CascadeParameters)
    indirect case sample(Sample)
    indirect case model(Model)
    indirect case alert(Alert)
    indirect case stat(Stat)
    indirect case log(LogRecord)

    public var kind: MessageKind {
        switch self {
        case .tweet: .tweet
        case .series: .series
        case .size: .size
        case .parameters: .parameters
        case .sample: .sample
        case .model: .model
        case .alert: .alert
        case .stat: .stat
        case .log: .log
        }
    }

    /// The observation window a message is about, if any (the Kafka key of window-keyed topics).
    public var tObs: Int? {
        switch self {
        case .series(let s): s.tObs
        case .size(let s): s.tObs
        case .parameters(let p): p.tObs
        case .sample(let s): s.tObs
        case .model(let m): m.tObs
        case .alert(let a): a.tObs
        case .stat(let s): s.tObs
        case .tweet, .log: nil
        }
    }

    /// The cascade a message is about, if any.
    public var cascade: CascadeID? {
        switch self {
        case .tweet(let t): t.cascade
        case .series(let s): s.cascade
        case .size(let s): s.cascade
        case .parameters(let p): p.cascade
        case .sample(let s): s.cascade
        case .alert(let a): a.cascade
        case .stat(let s): s.cascade
        case .model, .log: nil
        }
    }
}

/// The fields of a tweet that copy without reference counting, read in place by
/// ``Message/tweetScalars(at:)``.
public struct TweetScalars: Sendable, Hashable {
    public var kind: Tweet.Kind
    /// Time in seconds on the source's clock.
    public var time: Double
    /// Follower count of the (re)tweeting user.
    public var magnitude: Double
    public var source: SourceID
    /// The cascade id when it is an integer (``CascadeID/number``), nil for a string id.
    public var cascadeNumber: Int64?
    /// Whether the tweet carries a ``RecordOrigin``.
    public var hasOrigin: Bool
}

extension Message {
    /// The scalar fields of the tweet at `message`, nil when it is not a tweet. Reads them in
    /// place: matching `case .tweet(let t)` on an element of a batch outside this module copies
    /// the whole message and then the tweet (~7 % of the replay -> collector path, issue 17).
    public static func tweetScalars(at message: UnsafePointer<Message>) -> TweetScalars? {
        switch message.pointee {
        case .tweet(let t):
            return TweetScalars(kind: t.kind, time: t.time, magnitude: t.magnitude, source: t.source,
                                cascadeNumber: t.cascade.number, hasOrigin: t.origin != nil)
        default:
            return nil
        }
    }
}
