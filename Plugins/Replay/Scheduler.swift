// The course generator's replay algorithm (spec §2.3), made reproducible: a seeded shuffle, one
// simulated clock per source, and a deterministic merge of the sources by (time, source id).

import TweetoscopeCore

/// A tournament of loser trees over `count` lanes, each with a key (time, tie): the winner is
/// the lane of the smallest key (ties by `tie`, which the replay makes unique). After the
/// winner's key changes, ``replay()`` plays its way back up: log2 of the lanes comparisons,
/// each a select rather than a branch (issue 17: which cascade comes next is a coin flip, about
/// half the events change cascade, and the binary heaps' mispredicted branches made the
/// replay's scheduling ~20 % of the event path's CPU). A key is one 128-bit integer, the time's
/// bits above the tie: times are >= +0 (or +inf), whose bit patterns order as the numbers do.
/// Lanes beyond `count` and lanes without a next event hold (+inf, UInt64.max).
struct LoserTree {
    /// Leaves: a power of two >= the lanes.
    let leaves: Int
    private(set) var keys: [UInt128]
    /// `losers[node]` for the inner nodes 1..<leaves: the lane that lost the match there.
    private var losers: [Int32]
    /// The overall winner.
    private(set) var winner: Int32 = 0

    static let none = UInt128(Double.infinity.bitPattern) << 64 | UInt128(UInt64.max)

    init(count: Int) {
        var leaves = 1
        while leaves < max(count, 1) { leaves *= 2 }
        self.leaves = leaves
        keys = Array(repeating: Self.none, count: leaves)
        losers = Array(repeating: 0, count: leaves)
    }

    /// Sets lane `lane`'s key (before ``build()``, or for the winner before ``replay()``):
    /// `time` >= 0 or +inf (-0 counts as +0).
    @inline(__always)
    mutating func set(_ lane: Int, time: Double, tie: UInt64) {
        keys[lane] = UInt128((time + 0).bitPattern) << 64 | UInt128(tie)
    }

    /// The tie of lane `lane`'s key.
    func tie(_ lane: Int) -> UInt64 { UInt64(truncatingIfNeeded: keys[lane]) }

    /// Plays every match (after the keys were set).
    mutating func build() {
        var winners = [Int32](repeating: 0, count: 2 * leaves)
        for k in 0..<leaves { winners[leaves + k] = Int32(k) }
        var node = leaves - 1
        while node >= 1 {
            let a = winners[2 * node], b = winners[2 * node + 1]
            let bWins = keys[Int(b)] < keys[Int(a)]
            winners[node] = bWins ? b : a
            losers[node] = bWins ? a : b
            node -= 1
        }
        winner = leaves > 1 ? winners[1] : 0
    }

    /// Replays the matches of the winner's lane after its key changed.
    @inline(__always)
    mutating func replay() {
        let leaves = self.leaves
        var w = winner
        keys.withUnsafeBufferPointer { keys in
            losers.withUnsafeMutableBufferPointer { losers in
                var node = (Int(w) + leaves) >> 1
                var kw = keys[Int(w)]
                while node >= 1 {
                    let l = losers[node]
                    let kl = keys[Int(l)]
                    // The stored loser wins when its key comes first: swap, without a branch.
                    let lWins = kl < kw
                    losers[node] = lWins ? w : l
                    w = lWins ? l : w
                    kw = lWins ? kl : kw
                    node >>= 1
                }
            }
        }
        winner = w
    }

    /// The winner's time: +inf when no lane has an event.
    var winnerTime: Double { Double(bitPattern: UInt64(truncatingIfNeeded: keys[Int(winner)] >> 64)) }
}

/// Replay parameters shared by all sources.
struct ReplayPlan: Sendable {
    var sources: Int
    var maxCascades: Int
    var randomStartRange: Double
    var seed: Int
    var limit: Int
}

/// One source (one generator thread of the course): its fold of the shuffled cascades, its
/// clock and its generator of start offsets. Its open cascades are lanes of the merge.
struct SourceState {
    let id: SourceID
    var fold: ArraySlice<Int>
    var rng: SplitMix64
    /// Source-clock time of its latest event.
    var now = 0.0
    /// Cascades started, numbered in start order (the tie between its lanes).
    var sequence: UInt64 = 0
}

/// A cascade being replayed: one lane of the merge. Only the open cascades' rows are in
/// memory (read from the dataset's scratch file when they start).
struct Lane {
    var source: Int
    var cascade = 0  // index in the dataset
    var rows = RowStore.Rows()  // its valid rows
    var next = 0  // next row to emit
    var start = 0.0
    var info = ""
}

/// All sources merged into one stream ordered by (source time, source id): each source replays
/// its fold on its own clock, at most `maxCascades` cascades at a time, each starting when one
/// of its open cascades ends, at now + U[0, range] (whole seconds); the events of a source are
/// ordered by (time, start order). One tournament over every open cascade of every source,
/// keyed by (time, source, start number), gives that order.
struct MergedReplay {
    private var sources: [SourceState]
    private var lanes: [Lane]
    private var tree: LoserTree
    private let range: Double
    let data: Dataset
    /// Cascades selected for the replay (after `limit`).
    let cascades: Int
    /// Cascades started so far, over all sources.
    private(set) var cascadesStarted = 0
    /// Source-clock time of the latest event ``fill(_:upTo:)`` appended (0 before the first).
    private(set) var lastEmitted = 0.0

    /// - Throws: ``ReplayError`` for an I/O error reading the first cascades.
    init(data: Dataset, plan: ReplayPlan) throws {
        self.data = data
        range = plan.randomStartRange
        // Seeded Fisher–Yates shuffle of the cascade order.
        var order = Array(0..<data.cascadeCount)
        var rng = SplitMix64(seed: UInt64(bitPattern: Int64(plan.seed)))
        if order.count > 1 {
            for i in stride(from: order.count - 1, to: 0, by: -1) {
                let j = Int(rng.next(below: UInt64(i + 1)))
                order.swapAt(i, j)
            }
        }
        if plan.limit > 0 && plan.limit < order.count { order.removeLast(order.count - plan.limit) }
        cascades = order.count
        // Contiguous folds; the first (n mod k) folds get one cascade more. Each source has an
        // independent stream of start offsets, derived from the seed, and `min(maxCascades,
        // fold)` lanes.
        var sources: [SourceState] = []
        var lanes: [Lane] = []
        let k = plan.sources, n = order.count
        var lo = 0
        for s in 0..<k {
            let size = n / k + (s < n % k ? 1 : 0)
            var mixer = SplitMix64(seed: UInt64(bitPattern: Int64(plan.seed)) ^ (UInt64(s) &+ 1) &* 0xD1B5_4A32_D192_ED03)
            sources.append(SourceState(id: SourceID(s), fold: order[lo..<(lo + size)], rng: SplitMix64(seed: mixer.next())))
            for _ in 0..<min(plan.maxCascades, size) { lanes.append(Lane(source: s)) }
            lo += size
        }
        self.sources = sources
        self.lanes = lanes
        tree = LoserTree(count: lanes.count)
        for lane in lanes.indices { try startNext(lane: lane) }
        tree.build()
    }

    /// Starts the next cascade of the lane's source in the lane at now + U[0, range] (whole
    /// seconds, never before now) and sets the lane's key; without one left in the fold the
    /// lane's rows are released and its key is (+inf, max).
    /// - Throws: ``ReplayError`` for an I/O error reading the cascade.
    private mutating func startNext(lane: Int) throws {
        let s = lanes[lane].source
        guard let cascade = sources[s].fold.popFirst() else {
            lanes[lane].rows = RowStore.Rows()
            tree.set(lane, time: .infinity, tie: .max)
            return
        }
        let now = sources[s].now
        let offset = range > 0 ? sources[s].rng.nextUnit() * range : 0
        let start = Swift.max(now, (now + offset).rounded(.down))
        let rows = try data.cascade(cascade)  // a cascade always has a valid row
        lanes[lane] = Lane(source: s, cascade: cascade, rows: rows, next: 0, start: start, info: "cascade=\(data.ids[cascade])")
        sources[s].sequence += 1
        cascadesStarted += 1
        tree.set(lane, time: start + rows.times[0], tie: UInt64(s) << 40 | sources[s].sequence)
    }

    /// Source-clock time of the next event, nil at the end of the replay.
    var nextTime: Double? {
        let t = tree.winnerTime
        return t < .infinity ? t : nil
    }

    /// The next event in (time, source) order; call only when `nextTime` is not nil.
    /// - Throws: ``ReplayError`` for an I/O error reading the next cascade.
    mutating func next() throws -> Tweet {
        var one: [Message] = []
        try next(into: &one)
        guard case .tweet(let tweet) = one[0] else { preconditionFailure("the replay emits tweets") }
        return tweet
    }

    /// Appends the next event in (time, source) order to `batch`; call only when `nextTime` is not nil.
    /// - Throws: ``ReplayError`` for an I/O error reading the next cascade.
    mutating func next(into batch: inout [Message]) throws {
        try fill(&batch, upTo: batch.count + 1)
    }

    /// Appends events in (time, source) order to `batch` until it holds `count` messages or the
    /// replay ends. The tweet is built in the batch's append (built apart and returned, it was
    /// copied twice and destroyed once on its way to the batch).
    /// - Throws: ``ReplayError`` for an I/O error reading the next cascade.
    mutating func fill(_ batch: inout [Message], upTo count: Int) throws {
        let ids = data.ids
        while batch.count < count {
            let w = Int(tree.winner)
            let time = tree.winnerTime
            guard time < .infinity else { return }
            lastEmitted = time
            let s = lanes[w].source
            sources[s].now = time
            let (k, more) = lanes.withUnsafeMutableBufferPointer { lanes -> (Int, Bool) in
                let k = lanes[w].next
                batch.append(.tweet(Tweet(kind: k == 0 ? .tweet : .retweet, msg: lanes[w].rows.messages?[k] ?? "None",
                                          time: time, magnitude: lanes[w].rows.magnitudes[k], source: SourceID(s),
                                          cascade: ids[lanes[w].cascade], info: lanes[w].info)))
                let more = k + 1 < lanes[w].rows.times.count
                if more { lanes[w].next = k + 1 }
                return (k, more)
            }
            if more {
                tree.set(w, time: lanes[w].start + lanes[w].rows.times[k + 1], tie: tree.tie(w))
            } else {
                try startNext(lane: w)
            }
            tree.replay()
        }
    }
}
