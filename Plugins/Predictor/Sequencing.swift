// Reproducible forecasts: the predictor handles each window's parameters and sizes in the
// collector's stream order (their `seq`), whatever the paths and timing that brought them, and
// each forecast uses the model version the stream says it should (not the latest to arrive).
import Synchronization
import TweetoscopeCore

/// The models of each window, by version, written by the models reader and read by the forecasts.
///
/// Versions: 0 is a pretrained model loaded at start (if any); learned versions v ≥ 1 come from
/// the learner (version v of a window = the fit on its first v·k samples). The newest few
/// versions of each window are kept (and version 0), so a forecast can use the exact version it needs.
final class ModelTable: Sendable {
    /// Versions kept per window besides version 0.
    static let kept = 8
    private let models = Mutex<[Int: [Int: Model]]>([:])
    /// Forecasts waiting for a model to arrive (``waitForChange(since:timeout:)``), and the
    /// number of models set so far.
    private let waiters = Mutex<Waiters>(Waiters())

    private struct Waiters {
        var generation: UInt64 = 0
        var nextID: UInt64 = 0
        var waiting: [UInt64: Waiter] = [:]
    }

    private struct Waiter {
        var continuation: CheckedContinuation<Bool, Never>
        /// Ends the wait at its timeout; cancelled when a model ends it first.
        var timer: Task<Void, Never>?
    }

    /// Number of models set so far: read it before a lookup, then wait with it.
    var generation: UInt64 { waiters.withLock { $0.generation } }

    /// Adds `model` as version `slot` of its window (default: its own version), replacing what
    /// that slot held. A pretrained model goes to slot 0 and keeps its own version number, which
    /// the alerts report.
    func set(_ model: Model, slot: Int? = nil) {
        models.withLock { table in
            var versions = table[model.tObs] ?? [:]
            versions[slot ?? model.version] = model
            if versions.count > Self.kept + 1, let newest = versions.keys.max() {
                versions = versions.filter { $0.key == 0 || $0.key > newest - Self.kept }
            }
            table[model.tObs] = versions
        }
        let woken = waiters.withLock { w in
            w.generation += 1
            defer { w.waiting = [:] }
            return Array(w.waiting.values)
        }
        for waiter in woken {
            waiter.timer?.cancel()
            waiter.continuation.resume(returning: true)
        }
    }

    /// Waits until a model is set after `generation` was read: true then (at once if one
    /// already was), false when `timeout` passed first. A wake-up instead of a poll (issue 17:
    /// the forecast that needs a version slept in 1 ms steps; the version comes from a fit of a
    /// few ms, 45 times a SEISMIC run).
    func waitForChange(since generation: UInt64, timeout: Duration) async -> Bool {
        await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let id: UInt64? = waiters.withLock { w in
                guard w.generation == generation else { return nil }
                let id = w.nextID
                w.nextID += 1
                w.waiting[id] = Waiter(continuation: c)
                return id
            }
            guard let id else { return c.resume(returning: true) }
            let timer = Task {
                try? await Task.sleep(for: timeout)
                guard !Task.isCancelled else { return }
                self.waiters.withLock { $0.waiting.removeValue(forKey: id) }?.continuation.resume(returning: false)
            }
            // A model set meanwhile already took the waiter (and cannot cancel this timer).
            let stillWaiting = waiters.withLock { w in
                guard w.waiting[id] != nil else { return false }
                w.waiting[id]!.timer = timer
                return true
            }
            if !stillWaiting { timer.cancel() }
        }
    }

    /// The newest model of window `tObs`.
    func model(_ tObs: Int) -> Model? {
        models.withLock { table in table[tObs].flatMap { v in v.keys.max().flatMap { v[$0] } } }
    }

    /// What a lookup found.
    enum Lookup {
        /// The wanted version.
        case exact(Model)
        /// Only newer versions than wanted (restored from a learner's state): the newest.
        case ahead(Model)
        /// The wanted version has not arrived yet: the newest older one, if any.
        case behind(Model?)
    }

    /// What the table holds for a forecast that needs version `wanted` of window `tObs`.
    ///
    /// Memory (issue 17): the versions a forecast wants never decrease (``VersionPolicy/wanted(samples:)``
    /// grows with the window's samples), so a learned version below the newest one at or below
    /// `wanted` can no longer be chosen (not exact, not the newest): it is dropped here, and a
    /// window holds about one or two models instead of ``kept`` (a model of 100 trees grown on
    /// 2,000 samples is ~3 MB). The choice of every later lookup is unchanged.
    func lookup(_ tObs: Int, wanted: Int) -> Lookup {
        models.withLock { table in
            guard var versions = table[tObs], let newest = versions.keys.max() else { return .behind(nil) }
            if let keep = versions.keys.filter({ $0 > 0 && $0 <= wanted }).max() {
                let stale = versions.keys.filter { $0 > 0 && $0 < keep }
                if !stale.isEmpty {
                    for v in stale { versions[v] = nil }
                    table[tObs] = versions
                }
            }
            if let m = versions[wanted] { return .exact(m) }
            if newest > wanted { return .ahead(versions[newest]!) }
            return .behind(versions[newest])
        }
    }
}

/// How a forecast picks its model version from the stream (see ``PredictorStage``).
struct VersionPolicy: Sendable {
    /// The learner's refit points (its `refit_every`, `refit_growth`, `min_samples`, `max_samples`).
    var schedule: RefitSchedule
    /// Longest wall-clock wait for a version not received yet; zero = never wait (use the newest).
    var modelWait: Duration

    /// The version a forecast uses when `samples` samples of its window preceded it in stream
    /// order: p/k for the learner's last refit point p <= samples, or 0 (pretrained or none)
    /// before its first one.
    func wanted(samples: Int) -> Int { schedule.wanted(samples: samples) }
}

/// One window's reorder buffer: messages numbered by the collector (`seq`) are released in
/// number order. A number that never comes (a partial cascade whose Hawkes fit failed, so no
/// parameters) is skipped once both streams (parameters and sizes, each in order) have gone past
/// it, or after `gapWait` of wall-clock time, or when the buffer is full.
struct WindowSequence {
    var next = 0
    private(set) var buffered = 0
    private var buffer: [Int: [Message]] = [:]
    private var lastParameters = -1
    private var lastSize = -1
    private var blockedSince: ContinuousClock.Instant?

    /// Counts of what happened since the last ``takeCounts()``.
    var late = 0, skipped = 0, timeouts = 0

    /// Adds a numbered message; returns the messages now released, in order.
    mutating func offer(_ message: Message, seq: Int, now: ContinuousClock.Instant,
                        gapWait: Duration, capacity: Int) -> [Message] {
        if seq < next {
            // Below what was already released: a copy delivered again, or numbering restarted
            // (a restarted collector); handled at once.
            late += 1
            return [message]
        }
        if case .parameters = message { lastParameters = max(lastParameters, seq) } else { lastSize = max(lastSize, seq) }
        buffer[seq, default: []].append(message)
        buffered += 1
        return drain(now: now, gapWait: gapWait, capacity: capacity)
    }

    /// Releases what is in order; skips numbers known lost, or waited for too long.
    mutating func drain(now: ContinuousClock.Instant, gapWait: Duration, capacity: Int) -> [Message] {
        var out: [Message] = []
        while buffered > 0 {
            if let ready = buffer.removeValue(forKey: next) {
                out += ready
                buffered -= ready.count
                next += 1
                blockedSince = nil
                continue
            }
            let first = buffer.keys.min()!
            // Every number below min(lastParameters, lastSize) is past both streams: lost.
            let passed = min(lastParameters, lastSize)
            if passed > next {
                let to = min(first, passed)
                skipped += to - next
                next = to
                continue
            }
            if blockedSince == nil { blockedSince = now }
            if buffered > capacity || now - blockedSince! >= gapWait {
                if buffered <= capacity { timeouts += 1 }
                skipped += first - next
                next = first
                blockedSince = nil
                continue
            }
            break
        }
        return out
    }

    /// The messages waiting in the buffer.
    var bufferedMessages: [Message] { buffer.values.flatMap { $0 } }

    /// Everything buffered, in order (end of input).
    mutating func flush() -> [Message] {
        let out = buffer.keys.sorted().flatMap { buffer[$0]! }
        if let last = buffer.keys.max() { next = last + 1 }
        buffer = [:]
        buffered = 0
        return out
    }
}

/// The reorder buffers of every window, and the samples each window has produced (which decide
/// the model version a forecast uses).
struct StreamOrder {
    var windows: [Int: WindowSequence] = [:]
    /// Samples emitted per window so far in this run.
    var samples: [Int: Int] = [:]
    /// Highest number of the parameters received per window.
    var parametersSeen: [Int: Int] = [:]

    /// The messages of `batch` ready to be handled, in stream order per window (unnumbered
    /// messages are ready at once).
    mutating func order(_ batch: [Message], now: ContinuousClock.Instant, gapWait: Duration, capacity: Int) -> [Message] {
        var out: [Message] = []
        out.reserveCapacity(batch.count)
        var touched = Set<Int>()
        for message in batch {
            let seq: Int?
            switch message {
            case .parameters(let p): seq = p.seq
            case .size(let s): seq = s.seq
            default: seq = nil
            }
            guard let seq, let tObs = message.tObs else {
                out.append(message)
                continue
            }
            touched.insert(tObs)
            if case .parameters = message { parametersSeen[tObs] = max(parametersSeen[tObs] ?? -1, seq) }
            out += windows[tObs, default: WindowSequence()].offer(message, seq: seq, now: now, gapWait: gapWait, capacity: capacity)
        }
        // Windows blocked on a gap are checked again against the clock.
        for tObs in windows.keys where !touched.contains(tObs) && windows[tObs]!.buffered > 0 {
            out += windows[tObs]!.drain(now: now, gapWait: gapWait, capacity: capacity)
        }
        return out
    }

    /// Every buffered message (end of input), by window then number.
    mutating func flush() -> [Message] {
        var out: [Message] = []
        for tObs in windows.keys.sorted() { out += windows[tObs]!.flush() }
        return out
    }

    /// Moves the counts to the stage counters.
    mutating func report(_ counters: StageCounters) {
        for tObs in windows.keys {
            let w = windows[tObs]!
            if w.late > 0 { counters.add("sequence_late", w.late) }
            if w.skipped > 0 { counters.add("sequence_skipped", w.skipped) }
            if w.timeouts > 0 { counters.add("sequence_gap_timeouts", w.timeouts) }
            windows[tObs]!.late = 0
            windows[tObs]!.skipped = 0
            windows[tObs]!.timeouts = 0
        }
    }
}

/// The outputs of the predictor accumulated while handling a batch.
struct Outbox {
    var alerts: [Message] = []
    var stats: [Message] = []
    var samples: [Message] = []

    /// Sends what accumulated (counted `alerts`, `stats`, `samples`) and empties the box.
    mutating func send(_ context: StageContext) async {
        let counters = context.counters
        if !alerts.isEmpty { counters.add("alerts", alerts.count) }
        if !stats.isEmpty { counters.add("stats", stats.count) }
        if !samples.isEmpty { counters.add("samples", samples.count) }
        let (a, s, x) = (alerts, stats, samples)
        self = Outbox()
        await context.output("alerts")?.send(a)
        await context.output("stats")?.send(s)
        await context.output("samples")?.send(x)
    }
}

extension PredictorStage {
    /// The model a forecast of window `tObs` uses (see ``VersionPolicy``): the version the
    /// window's samples so far call for; waits for it (at most `model_wait`) when it has not
    /// arrived, after sending what `out` holds (the learner needs those samples to fit it).
    func chooseModel(_ tObs: Int, _ state: inout RunState, _ table: ModelTable, _ context: StageContext,
                     _ out: inout Outbox, waitForModels: Bool) async -> Model? {
        let wanted = versions.wanted(samples: state.order.samples[tObs] ?? 0)
        switch table.lookup(tObs, wanted: wanted) {
        case .exact(let m): return m
        case .ahead(let m):
            context.counters.add("models_ahead")
            return m
        case .behind(let newest):
            guard waitForModels, wanted >= 1, (state.abandoned[tObs] ?? -1) < wanted else { return newest }
            await out.send(context)
            let deadline = ContinuousClock.now + versions.modelWait
            context.counters.add("model_waits")
            // The table's generation is read before each lookup: a model set between the lookup
            // and the wait ends the wait at once. Only a model (any window's) ends a wait before
            // the deadline; at the deadline the forecast counts a timeout.
            var generation = table.generation
            while true {
                switch table.lookup(tObs, wanted: wanted) {
                case .exact(let m): return m
                case .ahead(let m):
                    context.counters.add("models_ahead")
                    return m
                case .behind: break
                }
                let now = ContinuousClock.now
                guard now < deadline else { break }
                guard await table.waitForChange(since: generation, timeout: deadline - now) else { break }
                generation = table.generation
            }
            state.abandoned[tObs] = wanted
            context.counters.add("model_wait_timeouts")
            context.warnRateLimited("model_wait_timeout",
                "model version \(wanted) of T_obs=\(tObs) did not arrive within model_wait; forecasting with the newest received (is the learner's refit_every/min_samples this predictor's?)")
            if case .behind(let m) = table.lookup(tObs, wanted: wanted) { return m }
            return table.model(tObs)
        }
    }
}
