// The predictor's bounded memory of half pairs: a forecast waiting for its cascade's size, or a
// size waiting for its forecast (spec §9.8: both orders happen, and either half can be missing).
import TweetoscopeCore

/// A (cascade, window) pair: the unit the predictor matches.
struct PairKey: Hashable, Sendable {
    var cascade: CascadeID
    var tObs: Int
}

/// What the predictor remembers of a forecast until the size arrives.
struct Forecast: Sendable {
    var inputs: HawkesInputs
    /// X of the mode; nil when the parameters lacked the features (no sample then).
    var features: [Double]?
    var nHat: Double
    /// Where its parameters were read from (a replayable input), to hold their offset.
    var origin: RecordOrigin? = nil
}

/// One half of a pair.
enum Half: Sendable {
    case forecast(Forecast)
    case size(CascadeSize)
}

/// Pending halves keyed by (cascade, window), in arrival order, bounded in number and in age.
///
/// - At most `capacity` halves wait; inserting one more evicts the oldest (counted by the caller
///   from the returned number).
/// - A half older than `ttl` (wall clock) is dropped by ``expire(now:)``.
/// - The last `capacity` completed keys are remembered, so a half arriving again after its pair
///   was completed is recognised as a duplicate.
struct PendingPairs {
    enum KeyState {
        case unknown
        case waitingForecast
        case waitingSize(CascadeSize)
        case completed
    }

    private(set) var capacity: Int
    private(set) var ttl: Duration

    private var entries: [PairKey: (half: Half, seq: Int, since: ContinuousClock.Instant)] = [:]
    /// Arrival order; entries removed since are skipped lazily (their seq no longer matches).
    private var order: [(key: PairKey, seq: Int, since: ContinuousClock.Instant)] = []
    private var head = 0
    private var nextSeq = 0
    private var completed: RecentKeys<PairKey>

    init(capacity: Int, ttl: Duration) {
        precondition(capacity >= 1)
        self.capacity = capacity
        self.ttl = ttl
        completed = RecentKeys(capacity: capacity)
    }

    /// Applies a new capacity and time-to-live (a reload): halves beyond the new capacity are
    /// evicted oldest first; a shorter ttl applies at the next ``expire(now:)``.
    /// - Returns: the halves evicted.
    mutating func reconfigure(capacity: Int, ttl: Duration) -> Int {
        precondition(capacity >= 1)
        self.capacity = capacity
        self.ttl = ttl
        if completed.capacity != capacity { completed = completed.resized(capacity: capacity) }
        var evicted = 0
        while entries.count > capacity, let oldest = popOldest() {
            entries[oldest] = nil
            evicted += 1
        }
        return evicted
    }

    /// Number of halves waiting.
    var count: Int { entries.count }

    /// The waiting halves with when they started waiting, in no particular order.
    var waitingHalves: [(half: Half, since: ContinuousClock.Instant)] { entries.values.map { ($0.half, $0.since) } }

    /// Waiting halves by kind: (forecasts, sizes).
    var waiting: (forecasts: Int, sizes: Int) {
        var f = 0, s = 0
        for e in entries.values {
            if case .forecast = e.half { f += 1 } else { s += 1 }
        }
        return (f, s)
    }

    func state(of key: PairKey) -> KeyState {
        if let e = entries[key] {
            switch e.half {
            case .forecast: return .waitingForecast
            case .size(let s): return .waitingSize(s)
            }
        }
        return completed.contains(key) ? .completed : .unknown
    }

    /// Stores a half for a key in state `.unknown`; returns how many old halves were evicted.
    mutating func insert(_ key: PairKey, _ half: Half, now: ContinuousClock.Instant) -> Int {
        let seq = nextSeq
        nextSeq += 1
        entries[key] = (half, seq, now)
        order.append((key, seq, now))
        var evicted = 0
        while entries.count > capacity, let oldest = popOldest() {
            entries[oldest] = nil
            evicted += 1
        }
        compactIfNeeded()
        return evicted
    }

    /// Removes the waiting half of `key` and remembers the key as completed.
    mutating func complete(_ key: PairKey) -> Half? {
        let half = entries.removeValue(forKey: key)?.half
        _ = completed.insert(key)
        compactIfNeeded()
        return half
    }

    /// Drops every half that has waited longer than `ttl`; returns how many.
    mutating func expire(now: ContinuousClock.Instant) -> Int {
        var expired = 0
        while head < order.count {
            let o = order[head]
            guard let e = entries[o.key], e.seq == o.seq else {
                head += 1
                continue
            }
            guard now - o.since > ttl else { break }
            entries[o.key] = nil
            head += 1
            expired += 1
        }
        compactIfNeeded()
        return expired
    }

    /// The key of the oldest live entry, removed from the order queue.
    private mutating func popOldest() -> PairKey? {
        while head < order.count {
            let o = order[head]
            head += 1
            if let e = entries[o.key], e.seq == o.seq { return o.key }
        }
        return nil
    }

    /// Keeps the order queue within a constant factor of the live entries.
    private mutating func compactIfNeeded() {
        guard order.count > 2 * entries.count + 1024 else { return }
        order = order[head...].filter { o in entries[o.key].map { $0.seq == o.seq } ?? false }
        head = 0
    }
}
