// The collector's hot path: plain structs mutated in place (no existentials, no generics, no
// per-event allocation beyond appending to a cascade's arrays). Semantics: see CollectorStage.
import TweetoscopeCore

/// What happened to one event in its source's processor.
enum EventOutcome {
    case accepted, outOfOrder, lateEvent, unknownCascade, duplicateTweet
}

/// Counts accumulated while processing, moved to the stage counters once per batch.
struct CollectorTally {
    var events = 0
    var opened = 0
    var ended = 0
    var belowMinSize = 0
    var evicted = 0
    var sourcesEvicted = 0
}

/// Messages built while processing one input batch, and whether each port is bound.
struct CollectorEmission {
    var buildSeries: Bool
    var buildSizes: Bool
    var series: [Message] = []
    var sizes: [Message] = []
    var tally = CollectorTally()
    /// Next stream-order number per window (``Series/seq``, ``CascadeSize/seq``): series and
    /// sizes of a window share one counter, numbered in the order they are emitted.
    var nextSeq: [Int: Int] = [:]

    /// The next stream-order number of window `tObs`.
    mutating func sequence(_ tObs: Int) -> Int {
        defer { nextSeq[tObs, default: 0] += 1 }
        return nextSeq[tObs, default: 0]
    }
}

/// A partition of a replayable input: the ledger of the source that read it, and its number.
struct PartitionKey: Hashable {
    var ledger: ObjectIdentifier
    var partition: Int32
    init(_ origin: RecordOrigin) {
        ledger = ObjectIdentifier(origin.ledger)
        partition = origin.partition
    }
}

/// Open cascades of one partition in opening order, with their first record's offset: the head
/// (once stale entries are skipped) is the oldest record the collector still needs there.
struct HeldQueue {
    var slots: [Int] = []
    var generations: [UInt32] = []
    var offsets: [Int64] = []
    var head = 0
}

/// A cascade id as the key of the collector's table of open cascades, hashed cheaply: an integer
/// id (the course's and SEISMIC's) is mixed with the table's seed by a 64-bit finalizer (the
/// splitmix64 one) instead of SipHash, which was ~5 % of the replay -> collector path (issue 17).
/// Only lookups use the hash (the table is never iterated), so outputs do not depend on it.
struct CascadeKey: Hashable {
    let id: CascadeID
    @inline(__always) init(_ id: CascadeID) { self.id = id }

    @inline(__always) static func == (a: CascadeKey, b: CascadeKey) -> Bool { sameCascade(a.id, b.id) }

    func hash(into hasher: inout Hasher) { hasher.combine(id) }

    @inline(__always) func _rawHashValue(seed: Int) -> Int {
        guard case .number(let n) = id else {
            var hasher = Hasher()
            hasher.combine(seed)
            hasher.combine(id)
            return hasher.finalize()
        }
        var z = UInt64(bitPattern: n) &+ UInt64(bitPattern: Int64(seed)) &* 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return Int(bitPattern: UInt(truncatingIfNeeded: z ^ (z >> 31)))
    }
}

/// `a == b` for cascade ids, with the integer case inlined.
@inline(__always) func sameCascade(_ a: CascadeID, _ b: CascadeID) -> Bool {
    if case .number(let x) = a, case .number(let y) = b { return x == y }
    return a == b
}

/// An open cascade, stored in a reusable slot of its source's slab.
struct CascadeSlot {
    var id: CascadeID = 0
    var msg: String = ""
    var firstTime: Double = 0
    var lastTime: Double = 0
    /// Event times relative to `firstTime`, non-decreasing; `times[0] == 0`. Once every window
    /// is settled no partial cascade needs them: they are dropped and later events only counted
    /// (`unstored`), so an open cascade holds its events only while a window is still open
    /// (issue 17: most of a cascade's events come after its last window, and they were all kept
    /// until it ended, 6-7 MB of SEISMIC's peak heap; every series emitted also made the next
    /// append copy the arrays it shared).
    var times: [Double] = []
    var magnitudes: [Double] = []
    /// Events counted but not stored (see `times`).
    var unstored = 0
    /// Events of the cascade so far.
    var events: Int { times.count + unstored }
    /// Number of windows (ascending) already settled: series emitted, or skipped as too small.
    var settled = 0
    /// Bumped each time the slot is freed, so stale entries of `SourceProcessor.order` are recognised.
    var generation: UInt32 = 0
    /// Engine-wide sequence number of the cascade's latest accepted event (eviction order across
    /// sources, whose clocks cannot be compared).
    var touch: UInt64 = 0
    /// Neighbours in the recency list (sorted by last time), -1 for none.
    var older = -1
    var newer = -1
}

/// The state of one source: its clock, its open cascades and the ids of its ended ones.
struct SourceProcessor {
    let source: SourceID
    /// Windows in seconds, ascending, as Double (comparisons) and Int (message keys).
    let windows: [Double]
    let windowKeys: [Int]
    var terminated: Double
    var minSize: Int

    /// The source's clock: time of the latest accepted-in-order event.
    private(set) var clock = -Double.infinity
    private var slots: [CascadeSlot] = []
    private var freeSlots: [Int] = []
    /// Open cascades: id -> slot.
    private var open: [CascadeKey: Int] = [:]
    /// The slot of the latest retweet's cascade and its generation then: consecutive events of a
    /// source often belong to the same cascade, which then needs no table lookup.
    private var lastSlot = -1
    private var lastGeneration: UInt32 = 0
    /// Cascades open in this source (metrics).
    var openCount: Int { open.count }
    /// Recency list: `oldest` has the smallest last time; times never decrease within a source, so
    /// moving a touched cascade to the `newest` end keeps the list sorted by last time.
    private var oldest = -1
    private var newest = -1
    /// Cascades in creation (= first-time) order, as (slot, generation); `cursors[k]` is the first
    /// entry window k has not yet passed. One shared queue with one cursor per window replaces the
    /// course's FIFO per window. Entries before the smallest cursor are dropped from time to time.
    private var order: [Int] = []
    private var orderGeneration: [UInt32] = []
    private var cursors: [Int]
    /// Ended cascade ids, the last `max_ended_remembered` of them.
    var ended: RecentKeys<CascadeID>
    /// For events read from a replayable input: the partition of the latest one, and the open
    /// cascades per partition with the offset of their first event.
    private(set) var partition: PartitionKey?
    private var held: [PartitionKey: HeldQueue] = [:]
    /// Partitions this source has open cascades from (or had).
    var heldPartitions: Dictionary<PartitionKey, HeldQueue>.Keys { held.keys }
    /// Engine-wide sequence number of the source's latest event (which sources are idle).
    private(set) var lastTouch: UInt64 = 0

    init(source: SourceID, settings: CollectorSettings) {
        self.source = source
        self.windows = settings.windows.map(Double.init)
        self.windowKeys = settings.windows
        self.terminated = Double(settings.terminated)
        self.minSize = settings.minCascadeSize
        self.ended = RecentKeys(capacity: settings.maxEndedRemembered)
        self.cursors = Array(repeating: 0, count: settings.windows.count)
    }

    /// The sequence number of the least recently touched open cascade (the one with the oldest
    /// last event), nil when none is open.
    var oldestTouch: UInt64? { oldest >= 0 ? slots[oldest].touch : nil }

    /// Ends the open cascade with the oldest last event as a termination would (series of its
    /// unsettled windows, sizes, id remembered as ended); returns its id, event count and last time.
    mutating func evictOldest(into out: inout CollectorEmission) -> (id: CascadeID, events: Int, last: Double)? {
        guard oldest >= 0 else { return nil }
        let s = oldest
        let evicted = (slots[s].id, slots[s].events, slots[s].lastTime)
        end(s, into: &out)
        return evicted
    }

    /// ``process(_:touch:into:)`` and the change it made to the number of open cascades, in one
    /// access to the processor.
    @inline(__always)
    mutating func processCounting(_ tweet: Tweet, touch: UInt64, into out: inout CollectorEmission)
        -> (outcome: EventOutcome, opened: Int) {
        let before = open.count
        let outcome = process(tweet, touch: touch, into: &out)
        return (outcome, open.count - before)
    }

    /// ``processRetweet(time:magnitude:cascade:touch:into:)`` and the change it made to the
    /// number of open cascades, in one access to the processor.
    @inline(__always)
    mutating func processRetweetCounting(time: Double, magnitude: Double, cascade: CascadeID, touch: UInt64,
                                         into out: inout CollectorEmission) -> (outcome: EventOutcome, opened: Int) {
        let before = open.count
        let outcome = processRetweet(time: time, magnitude: magnitude, cascade: cascade, touch: touch, into: &out)
        return (outcome, open.count - before)
    }

    /// Moves the source's clock to `now` (steps 1 and 2); false when `now` is before the clock.
    @inline(__always)
    private mutating func tick(_ now: Double, touch: UInt64, into out: inout CollectorEmission) -> Bool {
        lastTouch = touch
        if now < clock { return false }
        if now > clock {
            clock = now
            advance(to: now, into: &out)
        }
        return true
    }

    /// Processes one retweet (its time is finite) given by its fields, as ``process(_:touch:into:)``
    /// does: the collector reads a retweet's fields in place in its input batch instead of
    /// copying the whole tweet out of it.
    mutating func processRetweet(time now: Double, magnitude: Double, cascade: CascadeID, touch: UInt64,
                                 into out: inout CollectorEmission) -> EventOutcome {
        guard tick(now, touch: touch, into: &out) else { return .outOfOrder }
        return appendRetweet(time: now, magnitude: magnitude, cascade: cascade, touch: touch)
    }

    /// Step 3 for a retweet, once the clock is at `now`.
    @inline(__always)
    private mutating func appendRetweet(time now: Double, magnitude: Double, cascade: CascadeID, touch: UInt64) -> EventOutcome {
        let s: Int
        if lastSlot >= 0 && slots[lastSlot].generation == lastGeneration && sameCascade(slots[lastSlot].id, cascade) {
            s = lastSlot
        } else {
            guard let found = open[CascadeKey(cascade)] else {
                return ended.contains(cascade) ? .lateEvent : .unknownCascade
            }
            s = found
            lastSlot = s
            lastGeneration = slots[s].generation
        }
        if slots[s].settled < windows.count {
            slots[s].times.append(now - slots[s].firstTime)
            slots[s].magnitudes.append(magnitude)
        } else {
            slots[s].unstored += 1
        }
        slots[s].lastTime = now
        slots[s].touch = touch
        if s != newest {
            unlink(s)
            linkNewest(s)
        }
        return .accepted
    }

    /// Processes one event (its time is finite); `touch` is the engine's sequence number for it.
    mutating func process(_ tweet: Tweet, touch: UInt64, into out: inout CollectorEmission) -> EventOutcome {
        let now = tweet.time
        guard tick(now, touch: touch, into: &out) else { return .outOfOrder }
        switch tweet.kind {
        case .retweet:
            return appendRetweet(time: now, magnitude: tweet.magnitude, cascade: tweet.cascade, touch: touch)
        case .tweet:
            if open[CascadeKey(tweet.cascade)] != nil || ended.contains(tweet.cascade) { return .duplicateTweet }
            let s = allocateSlot()
            slots[s].id = tweet.cascade
            slots[s].msg = tweet.msg
            slots[s].firstTime = now
            slots[s].lastTime = now
            slots[s].times.append(0)
            slots[s].magnitudes.append(tweet.magnitude)
            slots[s].settled = 0
            slots[s].touch = touch
            open[CascadeKey(tweet.cascade)] = s
            linkNewest(s)
            order.append(s)
            orderGeneration.append(slots[s].generation)
            if let origin = tweet.origin {
                let key = PartitionKey(origin)
                partition = key
                held[key, default: HeldQueue()].slots.append(s)
                held[key]!.generations.append(slots[s].generation)
                held[key]!.offsets.append(origin.offset)
            }
            out.tally.opened += 1
            return .accepted
        }
    }

    /// Ends every open cascade, oldest last event first (end of input).
    mutating func flush(into out: inout CollectorEmission) {
        while oldest >= 0 { end(oldest, into: &out) }
        order.removeAll()
        orderGeneration.removeAll()
        for k in cursors.indices { cursors[k] = 0 }
        held.removeAll()
    }

    /// Records that the latest event came from partition `key` (for events of replayable inputs).
    mutating func noteOrigin(_ key: PartitionKey) { partition = key }

    /// The offset of the first event of the oldest cascade still open from partition `key`, nil
    /// when none is (entries of ended cascades are dropped on the way).
    mutating func keepFrom(_ key: PartitionKey) -> Int64? {
        guard var q = held[key] else { return nil }
        held[key] = nil  // mutate the queue in place, without a copy
        defer { held[key] = q }
        while q.head < q.slots.count && slots[q.slots[q.head]].generation != q.generations[q.head] { q.head += 1 }
        if q.head >= 1024 && q.head * 2 >= q.slots.count {
            q.slots.removeFirst(q.head)
            q.generations.removeFirst(q.head)
            q.offsets.removeFirst(q.head)
            q.head = 0
        }
        return q.head < q.slots.count ? q.offsets[q.head] : nil
    }

    /// Steps 1 and 2 at source time `now`.
    private mutating func advance(to now: Double, into out: inout CollectorEmission) {
        // 1. Windows whose end is strictly before now, in first-time order.
        let count = order.count
        for k in 0..<windows.count {
            let window = windows[k]
            var c = cursors[k]
            while c < count {
                let s = order[c]
                if slots[s].generation == orderGeneration[c] {
                    if !(slots[s].firstTime + window < now) { break }
                    if slots[s].settled <= k {
                        emitSeries(s, window: k, into: &out)
                        slots[s].settled = k + 1
                        if k + 1 == windows.count {
                            // Every window settled: from now on events are only counted.
                            slots[s].unstored = slots[s].times.count
                            slots[s].times = []
                            slots[s].magnitudes = []
                        }
                    }
                }
                c += 1
            }
            cursors[k] = c
        }
        compactOrder()
        // 2. Cascades idle for more than `terminated`, oldest last event first.
        while oldest >= 0 && slots[oldest].lastTime + terminated < now {
            end(oldest, into: &out)
        }
    }

    private mutating func emitSeries(_ s: Int, window k: Int, into out: inout CollectorEmission) {
        guard out.buildSeries, slots[s].times.count >= minSize else { return }
        let seq = out.sequence(windowKeys[k])
        out.series.append(.series(Series(cascade: slots[s].id, msg: slots[s].msg, tObs: windowKeys[k],
                                         times: slots[s].times, magnitudes: slots[s].magnitudes, seq: seq,
                                         t0: slots[s].firstTime)))
    }

    /// Ends the cascade in slot `s`: pending series, sizes, memory, ended id.
    private mutating func end(_ s: Int, into out: inout CollectorEmission) {
        unlink(s)
        // Every event of the cascade is within its unsettled windows: had an event arrived after a
        // window's end, that window would have been settled in step 1 before the event was added.
        for k in slots[s].settled..<windows.count { emitSeries(s, window: k, into: &out) }
        let id = slots[s].id
        let nTot = slots[s].events
        if nTot >= minSize {
            if out.buildSizes {
                let tEnd = slots[s].lastTime
                for key in windowKeys {
                    let seq = out.sequence(key)
                    out.sizes.append(.size(CascadeSize(cascade: id, tObs: key, nTot: nTot, tEnd: tEnd, seq: seq)))
                }
            }
        } else {
            out.tally.belowMinSize += 1
        }
        open[CascadeKey(id)] = nil
        _ = ended.insert(id)
        slots[s].times = []
        slots[s].magnitudes = []
        slots[s].unstored = 0
        slots[s].msg = ""
        slots[s].generation &+= 1
        freeSlots.append(s)
        out.tally.ended += 1
    }


    private mutating func allocateSlot() -> Int {
        if let s = freeSlots.popLast() { return s }
        slots.append(CascadeSlot())
        return slots.count - 1
    }

    private mutating func unlink(_ s: Int) {
        let older = slots[s].older, newer = slots[s].newer
        if older >= 0 { slots[older].newer = newer } else { oldest = newer }
        if newer >= 0 { slots[newer].older = older } else { newest = older }
        slots[s].older = -1
        slots[s].newer = -1
    }

    private mutating func linkNewest(_ s: Int) {
        slots[s].older = newest
        slots[s].newer = -1
        if newest >= 0 { slots[newest].newer = s } else { oldest = s }
        newest = s
    }

    /// Drops the queue entries every window has passed, once they are the larger half.
    private mutating func compactOrder() {
        var done = cursors[0]
        for c in cursors where c < done { done = c }
        guard done >= 1024, done * 2 >= order.count else { return }
        order.removeFirst(done)
        orderGeneration.removeFirst(done)
        for k in cursors.indices { cursors[k] -= done }
    }
}

/// All sources of one collector stage.
struct CollectorEngine {
    var settings: CollectorSettings
    var processors: [SourceProcessor] = []
    private var index: [SourceID: Int] = [:]
    private var lastSource: SourceID = 0
    private var lastIndex = -1
    var out: CollectorEmission
    /// Cascades open across all sources.
    private(set) var openCascades = 0
    /// Sequence number of the latest event.
    private var touches: UInt64 = 0
    /// Replayable inputs (Kafka sources) the events came from, with the assignment last seen
    /// (partition -> generation that (re)assigned it).
    private var ledgers: [ObjectIdentifier: (ledger: OffsetLedger, assignedAt: [Int32: Int])] = [:]
    /// Per partition of a replayable input: the offset after the latest event processed, and the
    /// assignment generation the state built from the partition belongs to.
    private var processed: [PartitionKey: Int64] = [:]
    private var epochs: [PartitionKey: Int] = [:]

    /// True once events came from a replayable input: the open cascades can be rebuilt by reading
    /// again from the committed positions, so they are not flushed when the daemon stops.
    var holdsPositions: Bool { !ledgers.isEmpty }

    init(settings: CollectorSettings, buildSeries: Bool, buildSizes: Bool) {
        self.settings = settings
        self.out = CollectorEmission(buildSeries: buildSeries, buildSizes: buildSizes)
    }


    /// Processes one input batch; output accumulates until ``takeOutput()``.
    mutating func consume(_ batch: [Message], context: StageContext) {
        if !ledgers.isEmpty { followAssignments(context) }
        var lastKey: PartitionKey?
        var lastAt: Int?
        // Read in place through the buffer: iterating the array copied (and then destroyed)
        // every message, ~10 % of the replay -> collector path (issue 17).
        batch.withUnsafeBufferPointer { messages in
            for i in messages.indices {
                // The bulk, retweets without a record origin, are processed from their fields
                // read in place: copying each 176-byte message's tweet out of the batch (and
                // destroying the copy) was ~7 % of the replay -> collector path (issue 17).
                if let base = messages.baseAddress, let r = Message.tweetScalars(at: base + i), r.kind == .retweet,
                   !r.hasOrigin, let cascade = r.cascadeNumber, r.time.isFinite {
                    out.tally.events += 1
                    let p = processorIndex(r.source, context)
                    touches &+= 1
                    let (outcome, opened) = processors[p].processRetweetCounting(
                        time: r.time, magnitude: r.magnitude, cascade: .number(cascade), touch: touches, into: &out)
                    openCascades += opened
                    if openCascades > settings.maxOpenCascades { evictOldest(context) }
                    if outcome != .accepted, case .tweet(let tweet) = messages[i] {
                        rejectOutcome(outcome, tweet, processor: p, context)
                    }
                    continue
                }
                guard case .tweet(let tweet) = messages[i] else {
                    context.counters.reject("unexpected_message")
                    context.warnRateLimited("unexpected_message", "collector: skipped a \(messages[i].kind) message")
                    continue
                }
                out.tally.events += 1
                var key: PartitionKey?
                if let origin = tweet.origin {
                    let k = PartitionKey(origin)
                    if k != lastKey {
                        if ledgers[k.ledger] == nil { ledgers[k.ledger] = (origin.ledger, origin.ledger.assignedAt) }
                        lastKey = k
                        lastAt = ledgers[k.ledger]!.assignedAt[k.partition]
                        if let at = lastAt, epochs[k] != at {
                            // First event of this assignment of the partition: reading restarted
                            // from the committed offset, so what was built from it before goes.
                            reset(k, context)
                            epochs[k] = at
                        }
                    }
                    guard let at = lastAt, origin.generation >= at else {
                        // Read before its partition was revoked or reassigned: the partition's
                        // (new) owner reads it again from the committed position.
                        context.counters.add("revoked_skipped")
                        continue
                    }
                    processed[k] = max(processed[k] ?? 0, origin.offset + 1)
                    key = k
                }
                guard tweet.time.isFinite else {
                    reject("invalid_time", tweet, "non-finite time \(tweet.time)", context)
                    continue
                }
                let p = processorIndex(tweet.source, context)
                if let key { processors[p].noteOrigin(key) }
                touches &+= 1
                let (outcome, opened) = processors[p].processCounting(tweet, touch: touches, into: &out)
                openCascades += opened
                if openCascades > settings.maxOpenCascades { evictOldest(context) }
                if outcome != .accepted { rejectOutcome(outcome, tweet, processor: p, context) }
            }
        }
    }

    /// Counts and logs an event that processor `p` did not accept.
    private func rejectOutcome(_ outcome: EventOutcome, _ tweet: Tweet, processor p: Int, _ context: StageContext) {
        switch outcome {
        case .accepted: break
        case .outOfOrder:
            reject("out_of_order", tweet,
                   "time before the source clock \(processors[p].clock)", context)
        case .lateEvent: reject("late_event", tweet, "retweet of an ended cascade", context)
        case .unknownCascade: reject("unknown_cascade", tweet, "retweet of an unknown cascade", context)
        case .duplicateTweet: reject("duplicate_tweet", tweet, "tweet of an already opened cascade", context)
        }
    }

    /// Checks the replayable inputs' partition assignments: the state built from a partition
    /// since revoked or reassigned (reading it restarts from the committed offset) is dropped.
    private mutating func followAssignments(_ context: StageContext) {
        for (id, entry) in ledgers {
            let assignedAt = entry.ledger.assignedAt
            guard assignedAt != entry.assignedAt else { continue }
            ledgers[id] = (entry.ledger, assignedAt)
            for (key, epoch) in epochs where key.ledger == id && assignedAt[key.partition] != epoch {
                reset(key, context)
                epochs[key] = nil
            }
        }
    }

    /// Drops, without output, the sources whose latest events came from partition `key`, and
    /// what is known of the partition: the next owner of the partition (this collector after a
    /// reassignment, or another daemon of the group) rebuilds them from the committed position.
    /// Counted `revoked_cascades`.
    private mutating func reset(_ key: PartitionKey, _ context: StageContext) {
        processed[key] = nil
        guard processors.contains(where: { $0.partition == key }) else { return }
        let dropped = removeSources(ending: false) { $0.partition == key }.cascades
        context.counters.add("revoked_cascades", dropped)
        context.logger.info("partition revoked or reassigned: dropped the open cascades built from it (they are rebuilt from the committed offset)", metadata: [
            "partition": .stringConvertible(key.partition), "cascades": .stringConvertible(dropped),
        ])
    }

    /// Per replayable input, per partition: the position the source may commit once the output
    /// so far is durable (``OffsetLedger/HeldPosition``).
    mutating func heldPositions() -> [(ledger: OffsetLedger, positions: [Int32: OffsetLedger.HeldPosition])] {
        var result: [ObjectIdentifier: [Int32: OffsetLedger.HeldPosition]] = [:]
        for (key, next) in processed {
            guard let epoch = epochs[key] else { continue }
            result[key.ledger, default: [:]][key.partition] = OffsetLedger.HeldPosition(keepFrom: next, processed: next, assignedAt: epoch)
        }
        for p in processors.indices {
            for key in Array(processors[p].heldPartitions) {
                guard let first = processors[p].keepFrom(key), let current = result[key.ledger]?[key.partition] else { continue }
                result[key.ledger]![key.partition]!.keepFrom = min(current.keepFrom, first)
            }
        }
        return ledgers.map { id, entry in (entry.ledger, result[id] ?? [:]) }
    }

    /// Ends every open cascade of every source (end of input).
    mutating func flushAll() {
        for p in processors.indices { processors[p].flush(into: &out) }
        openCascades = 0
    }

    /// Forgets every open cascade of every source without emitting anything (their input was
    /// cut by a failed source: a size or series built from them would be wrong). Returns how many
    /// open cascades went.
    mutating func dropAll() -> Int {
        removeSources(ending: false) { _ in true }.cascades
    }

    /// Ends the open cascade whose last event is the oldest across sources (by arrival), as a
    /// termination would: counted `evicted`, logged (rate-limited).
    private mutating func evictOldest(_ context: StageContext) {
        var victim = -1
        var oldest = UInt64.max
        for p in processors.indices {
            if let touch = processors[p].oldestTouch, touch < oldest {
                oldest = touch
                victim = p
            }
        }
        guard victim >= 0, let (id, events, last) = processors[victim].evictOldest(into: &out) else { return }
        openCascades -= 1
        out.tally.evicted += 1
        let source = processors[victim].source
        context.warnRateLimited(
            "evicted",
            "collector: more than max_open_cascades (\(settings.maxOpenCascades)) open cascades: ended cascade \(id) of source \(source) early (\(events) events, last at t=\(last)), as if terminated",
            metadata: ["cascade": .string(String(id)), "source": .string(String(source))])
    }

    /// Makes room for new sources when `max_sources` are known: the tenth least recently active
    /// end their open cascades as if terminated (series and sizes emitted) and are forgotten with
    /// their ended ids (counted `sources_evicted`, logged rate-limited).
    private mutating func evictIdleSources(_ context: StageContext) {
        let count = max(1, processors.count / 10)
        let idlest = processors.map(\.lastTouch).sorted()[count - 1]
        let evicted = removeSources(ending: true) { $0.lastTouch <= idlest }.sources
        out.tally.sourcesEvicted += evicted
        context.warnRateLimited("sources_evicted",
            "collector: more than max_sources (\(settings.maxSources)) sources: the \(evicted) least recently active ended their open cascades and were forgotten")
    }

    /// Forgets the sources matching `remove`; with `ending`, their open cascades end first as if
    /// terminated (series and sizes emitted), otherwise they go without output. Returns how many
    /// sources and open cascades went.
    private mutating func removeSources(ending: Bool, where remove: (SourceProcessor) -> Bool) -> (sources: Int, cascades: Int) {
        var kept: [SourceProcessor] = []
        var removed = (sources: 0, cascades: 0)
        for var processor in processors {
            guard remove(processor) else { kept.append(processor); continue }
            removed.sources += 1
            removed.cascades += processor.openCount
            if ending { processor.flush(into: &out) }
        }
        processors = kept
        index = [:]
        for (i, processor) in processors.enumerated() { index[processor.source] = i }
        lastIndex = -1
        openCascades -= removed.cascades
        return removed
    }

    /// The messages built since the last call.
    mutating func takeOutput() -> (series: [Message], sizes: [Message]) {
        let result = (out.series, out.sizes)
        out.series = []
        out.sizes = []
        return result
    }

    /// The counts accumulated since the last call.
    mutating func takeTally() -> CollectorTally {
        let t = out.tally
        out.tally = CollectorTally()
        return t
    }

    private mutating func processorIndex(_ source: SourceID, _ context: StageContext) -> Int {
        if lastIndex >= 0 && source == lastSource { return lastIndex }
        let p: Int
        if let known = index[source] {
            p = known
        } else {
            if processors.count >= settings.maxSources { evictIdleSources(context) }
            p = processors.count
            processors.append(SourceProcessor(source: source, settings: settings))
            index[source] = p
        }
        lastSource = source
        lastIndex = p
        return p
    }


    private func reject(_ reason: String, _ tweet: Tweet, _ what: String, _ context: StageContext) {
        context.counters.reject(reason)
        context.warnRateLimited(
            reason,
            "collector: skipped \(tweet.kind.rawValue) of cascade \(tweet.cascade) from source \(tweet.source) at t=\(tweet.time): \(what)",
            metadata: ["cascade": .string(String(tweet.cascade)), "source": .string(String(tweet.source)),
                       "t": .string(String(tweet.time))])
    }
}
