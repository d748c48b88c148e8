// Message types of the Tweetoscope pipeline (spec §1). In one daemon they travel as Swift values
// through in-memory streams; between daemons they travel as JSON in the course's 2021 wire format
// (see WireFormat.swift).

/// Identifier of a cascade: the generator's `tweet_id` (2021 format), shared by all its events.
public typealias CascadeID = Int64

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
    /// Source-clock time in seconds of the cascade's first event (wire field `t0`); NaN when
    /// unknown (a course producer). The window ends at `t0 + tObs` on the source clock.
    public var t0: Double

    public init(cascade: CascadeID, msg: String, tObs: Int, times: [Double], magnitudes: [Double], t0: Double = .nan) {
        self.cascade = cascade
        self.msg = msg
        self.tObs = tObs
        self.times = times
        self.magnitudes = magnitudes
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

    public init(cascade: CascadeID, tObs: Int, nTot: Int, tEnd: Double) {
        self.cascade = cascade
        self.tObs = tObs
        self.nTot = nTot
        self.tEnd = tEnd
    }
}

/// Marked-Hawkes parameters estimated on one partial cascade (spec §1.3, §4.4; key = T_obs).
///
/// `nSupp` is the **supplementary** count G1/(1 − n*): the events still to come according to the
/// raw Hawkes model, so the raw forecast of the final size is `nObs + nSupp`.
public struct CascadeParameters: Sendable, Hashable {
    public var cascade: CascadeID
    public var msg: String
    /// Observation window in seconds.
    public var tObs: Int
    /// Events observed in the window.
    public var nObs: Int
    /// Supplementary events forecast by the Hawkes model, G1/(1 − n*).
    public var nSupp: Double
    /// Infectiousness p (dimensionless).
    public var p: Double
    /// Decay rate beta in 1/s.
    public var beta: Double
    /// Branching factor n* = p·E[m].
    public var nStar: Double
    /// Expected number of direct offspring still to come from the observed events.
    public var g1: Double
    /// Source-clock time in seconds of the cascade's first event, copied from its series (wire
    /// field `t0`); NaN when unknown.
    public var t0: Double

    public init(cascade: CascadeID, msg: String, tObs: Int, nObs: Int, nSupp: Double,
                p: Double, beta: Double, nStar: Double, g1: Double, t0: Double = .nan) {
        self.t0 = t0
        self.cascade = cascade
        self.msg = msg
        self.tObs = tObs
        self.nObs = nObs
        self.nSupp = nSupp
        self.p = p
        self.beta = beta
        self.nStar = nStar
        self.g1 = g1
    }
}

/// A training sample for the learner (spec §1.4, key = T_obs): features `x` and target `w`.
public struct Sample: Sendable, Hashable {
    public var cascade: CascadeID
    public var tObs: Int
    /// Feature vector; [beta, n_star, G1] in the course design, longer in richer modes.
    public var x: [Double]
    /// Target: the correction factor W (or its transform, depending on the correction mode).
    public var w: Double

    public init(cascade: CascadeID, tObs: Int, x: [Double], w: Double) {
        self.cascade = cascade
        self.tObs = tObs
        self.x = x
        self.w = w
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
    /// Out-of-bag residuals of the forest on its training samples, sorted ascending, at most a
    /// few hundred (wire field `residuals`, omitted when empty): in the target's log scale,
    /// log(true / forecast) of the quantity the mode forecasts (the predictor's `Uncertainty`
    /// turns them into prediction intervals). Empty for a model without them.
    public var residuals: [Double]

    /// Most residuals a model may carry (decoding rejects more).
    public static let maxResiduals = 1000

    public init(tObs: Int, version: Int, mode: String, samples: Int, trees: [RegressionTree],
                residuals: [Double] = []) {
        self.residuals = residuals
        self.tObs = tObs
        self.version = version
        self.mode = mode
        self.samples = samples
        self.trees = trees
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
}

/// Any message of the pipeline.
public enum Message: Sendable, Hashable {
    case tweet(Tweet)
    case series(Series)
    case size(CascadeSize)
    case parameters(CascadeParameters)
    case sample(Sample)
    case model(Model)
    case alert(Alert)
    case stat(Stat)
    case log(LogRecord)

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
