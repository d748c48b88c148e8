// The course generator's replay algorithm (spec §2.3), made reproducible: a seeded shuffle, one
// simulated clock per source, and a deterministic merge of the sources by (time, source id).

import TweetoscopeCore

/// A binary min-heap of (time, tie) keys carrying an Int32 payload; ties broken by `tie`.
struct MinHeap {
    struct Entry {
        var time: Double
        var tie: UInt64
        var payload: Int32
        @inline(__always) func precedes(_ o: Entry) -> Bool { time < o.time || (time == o.time && tie < o.tie) }
    }

    private(set) var entries: [Entry] = []

    var isEmpty: Bool { entries.isEmpty }
    var min: Entry? { entries.first }

    mutating func push(_ e: Entry) {
        entries.append(e)
        entries.withUnsafeMutableBufferPointer { h in
            // Moves the hole up to where `e` belongs (one write per level, not a swap).
            var i = h.count - 1
            while i > 0 {
                let parent = (i - 1) >> 1
                guard e.precedes(h[parent]) else { break }
                h[i] = h[parent]
                i = parent
            }
            h[i] = e
        }
    }

    /// Replaces the minimum by `e` (cheaper than pop + push).
    mutating func replaceMin(_ e: Entry) {
        siftDown(e)
    }

    @discardableResult
    mutating func popMin() -> Entry {
        let top = entries[0]
        let last = entries.removeLast()
        if !entries.isEmpty { siftDown(last) }
        return top
    }

    /// Puts `e` at the root and moves it down to its place: the hole moves down (one write per
    /// level, in place through the buffer: the swaps of the array were ~4 % of the replay ->
    /// collector path, issue 17). Keys are distinct (ties broken by `tie`), so the order in which
    /// entries come out is that of any binary heap.
    private mutating func siftDown(_ e: Entry) {
        entries.withUnsafeMutableBufferPointer { h in
            let n = h.count
            var i = 0
            while true {
                let l = 2 * i + 1
                guard l < n else { break }
                var best = l
                if l + 1 < n && h[l + 1].precedes(h[l]) { best = l + 1 }
                guard h[best].precedes(e) else { break }
                h[i] = h[best]
                i = best
            }
            h[i] = e
        }
    }
}

/// Replay parameters shared by all sources.
struct ReplayPlan: Sendable {
    var sources: Int
    var maxCascades: Int
    var randomStartRange: Double
    var seed: Int
    var limit: Int
}

/// One source (one generator thread of the course): replays its fold on its own clock. Only the
/// cascades it has open are in memory (read from the dataset's scratch file when they start).
struct SourceScheduler {
    struct Slot {
        var cascade: Int  // index in the dataset
        var rows = RowStore.Rows()  // its valid rows
        var next = 0  // next row to emit
        var start: Double
        var info: String
    }

    let id: SourceID
    private var fold: ArraySlice<Int>
    private var rng: SplitMix64
    private let range: Double
    private(set) var now = 0.0
    private var heap = MinHeap()
    private var slots: [Slot] = []
    private var sequence: UInt64 = 0
    private(set) var cascadesStarted = 0

    /// - Throws: ``ReplayError`` for an I/O error reading the first cascades.
    init(id: SourceID, fold: ArraySlice<Int>, plan: ReplayPlan, data: Dataset) throws {
        self.id = id
        self.fold = fold
        self.range = plan.randomStartRange
        // An independent stream per source, derived from the seed.
        var mixer = SplitMix64(seed: UInt64(bitPattern: Int64(plan.seed)) ^ (UInt64(id) &+ 1) &* 0xD1B5_4A32_D192_ED03)
        self.rng = SplitMix64(seed: mixer.next())
        for _ in 0..<min(plan.maxCascades, fold.count) {
            slots.append(Slot(cascade: 0, start: 0, info: ""))
            try startNext(slot: slots.count - 1, data: data)
        }
    }

    /// Source-clock time of the next event, nil once the fold is exhausted.
    var nextTime: Double? { heap.min?.time }

    /// Starts the fold's next cascade in `slot` at now + U[0, range] (whole seconds, never before
    /// now); returns false when the fold is exhausted (the slot's rows are then released).
    /// - Throws: ``ReplayError`` for an I/O error reading the cascade.
    @discardableResult
    private mutating func startNext(slot: Int, data: Dataset) throws -> Bool {
        guard let cascade = fold.popFirst() else {
            slots[slot].rows = RowStore.Rows()
            return false
        }
        let offset = range > 0 ? rng.nextUnit() * range : 0
        let start = Swift.max(now, (now + offset).rounded(.down))
        let rows = try data.cascade(cascade)  // a cascade always has a valid row
        slots[slot] = Slot(cascade: cascade, rows: rows, next: 0, start: start, info: "cascade=\(data.ids[cascade])")
        sequence += 1
        cascadesStarted += 1
        heap.push(.init(time: start + rows.times[0], tie: sequence, payload: Int32(slot)))
        return true
    }

    /// Appends the earliest event of this source to `batch` and schedules what follows it.
    /// The tweet is built in the batch's append: built apart and returned, it was copied twice
    /// and destroyed once on its way to the batch (issue 17).
    /// - Throws: ``ReplayError`` for an I/O error reading the next cascade.
    @inline(__always)
    mutating func emit(_ data: Dataset, into batch: inout [Message]) throws {
        let top = heap.min!
        let s = Int(top.payload)
        now = top.time
        let k = slots[s].next
        batch.append(.tweet(Tweet(kind: k == 0 ? .tweet : .retweet, msg: slots[s].rows.messages?[k] ?? "None",
                                  time: top.time, magnitude: slots[s].rows.magnitudes[k], source: id,
                                  cascade: data.ids[slots[s].cascade], info: slots[s].info)))
        if k + 1 < slots[s].rows.times.count {
            slots[s].next = k + 1
            heap.replaceMin(.init(time: slots[s].start + slots[s].rows.times[k + 1], tie: top.tie, payload: top.payload))
        } else {
            heap.popMin()
            try startNext(slot: s, data: data)
        }
    }
}

/// All sources merged into one stream ordered by (source time, source id).
struct MergedReplay {
    private var sources: [SourceScheduler]
    private var heap = MinHeap()
    let data: Dataset
    /// Cascades selected for the replay (after `limit`).
    let cascades: Int
    /// Source-clock time of the latest event ``fill(_:upTo:)`` appended (0 before the first).
    private(set) var lastEmitted = 0.0

    /// - Throws: ``ReplayError`` for an I/O error reading the first cascades.
    init(data: Dataset, plan: ReplayPlan) throws {
        self.data = data
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
        // Contiguous folds; the first (n mod k) folds get one cascade more.
        var sources: [SourceScheduler] = []
        let k = plan.sources, n = order.count
        var lo = 0
        for s in 0..<k {
            let size = n / k + (s < n % k ? 1 : 0)
            sources.append(try SourceScheduler(id: SourceID(s), fold: order[lo..<(lo + size)], plan: plan, data: data))
            lo += size
        }
        self.sources = sources
        for (s, source) in sources.enumerated() {
            if let t = source.nextTime { heap.push(.init(time: t, tie: UInt64(s), payload: Int32(s))) }
        }
    }

    /// Source-clock time of the next event, nil at the end of the replay.
    var nextTime: Double? { heap.min?.time }

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
    /// replay ends. The sources are reached through one buffer for the whole batch (each
    /// access through the array checked its uniqueness).
    /// - Throws: ``ReplayError`` for an I/O error reading the next cascade.
    mutating func fill(_ batch: inout [Message], upTo count: Int) throws {
        let data = self.data
        try sources.withUnsafeMutableBufferPointer { sources in
            while batch.count < count, let top = heap.min {
                let s = Int(top.payload)
                lastEmitted = top.time
                try sources[s].emit(data, into: &batch)
                if let t = sources[s].nextTime {
                    heap.replaceMin(.init(time: t, tie: top.tie, payload: top.payload))
                } else {
                    heap.popMin()
                }
            }
        }
    }

    var cascadesStarted: Int { sources.reduce(0) { $0 + $1.cascadesStarted } }
}
