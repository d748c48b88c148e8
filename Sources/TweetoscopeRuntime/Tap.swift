// `tweetoscoped tap`: a read-only copy of the messages flowing on streams of a running daemon,
// served as JSON lines by `GET /tap?stream=NAME[&stream=NAME...][&limit=N]` on the metrics
// listener when `metrics.tap: true` (off by default; loopback addresses only).
//
// A tap never slows the pipeline: the streams hand each batch to the hub without waiting (a
// lock and an append); each tap has a bounded queue, and what does not fit is dropped and
// counted, then reported to the tap as a `{"dropped":N}` line.
import Synchronization
import TweetoscopeCore

/// The taps of the daemon and the messages queued for each.
public final class TapHub: Sendable {
    /// The daemon's one hub (the pipelines publish to it, the metrics server reads from it).
    public static let shared = TapHub()

    /// Messages queued per tap before new ones are dropped.
    public static let queueCapacity = 10_000

    private struct Tap {
        var streams: Set<String>
        var queue: [(stream: String, message: Message)] = []
        var dropped = 0
        var waiter: CheckedContinuation<Void, Never>?
        var closed = false
    }

    private struct State {
        var enabled = false
        var taps: [Int: Tap] = [:]
        var nextID = 0
        var droppedTotal = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Turns publishing on (`metrics.tap: true`); off, streams get no tap observer at all.
    public func enable() { state.withLock { $0.enabled = true } }

    public var isEnabled: Bool { state.withLock { $0.enabled } }

    /// Messages dropped over every tap since the start.
    public var droppedTotal: Int { state.withLock { $0.droppedTotal } }

    /// The observer a stream named `stream` calls with each batch sent (nil when the tap is off).
    func observer(stream: String) -> (@Sendable ([Message]) -> Void)? {
        guard isEnabled else { return nil }
        return { [self] batch in publish(stream: stream, batch) }
    }

    /// Queues `batch` for every tap of `stream`, dropping what exceeds a tap's queue. Never waits.
    func publish(stream: String, _ batch: [Message]) {
        let wake: [CheckedContinuation<Void, Never>] = state.withLock { s in
            guard !s.taps.isEmpty else { return [] }
            var wake: [CheckedContinuation<Void, Never>] = []
            for id in s.taps.keys where s.taps[id]!.streams.contains(stream) && !s.taps[id]!.closed {
                let room = Self.queueCapacity - s.taps[id]!.queue.count
                let taken = min(room, batch.count)
                if taken > 0 { s.taps[id]!.queue += batch.prefix(taken).map { (stream, $0) } }
                if taken < batch.count {
                    s.taps[id]!.dropped += batch.count - taken
                    s.droppedTotal += batch.count - taken
                }
                if let w = s.taps[id]!.waiter { s.taps[id]!.waiter = nil; wake.append(w) }
            }
            return wake
        }
        for w in wake { w.resume() }
    }

    /// Registers a tap of `streams`; returns its id for ``next(_:)`` and ``close(_:)``.
    func open(streams: Set<String>) -> Int {
        state.withLock { s in
            s.nextID += 1
            s.taps[s.nextID] = Tap(streams: streams)
            return s.nextID
        }
    }

    /// The messages queued for tap `id` and the number dropped since the previous call, waiting
    /// while there is none; nil once the tap is closed.
    func next(_ id: Int) async -> (messages: [(stream: String, message: Message)], dropped: Int)? {
        while true {
            enum Step { case take([(stream: String, message: Message)], Int), end, wait }
            let step: Step = state.withLock { s in
                guard let tap = s.taps[id], !tap.closed else { return .end }
                if tap.queue.isEmpty && tap.dropped == 0 { return .wait }
                s.taps[id]!.queue = []
                s.taps[id]!.dropped = 0
                return .take(tap.queue, tap.dropped)
            }
            switch step {
            case .take(let messages, let dropped): return (messages, dropped)
            case .end: return nil
            case .wait:
                await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
                    let ready = state.withLock { s -> Bool in
                        guard let tap = s.taps[id], !tap.closed, tap.queue.isEmpty, tap.dropped == 0 else { return true }
                        s.taps[id]!.waiter = cont
                        return false
                    }
                    if ready { cont.resume() }
                }
            }
        }
    }

    /// Ends tap `id` (its client left, or the daemon stops).
    func close(_ id: Int) {
        let w = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.taps[id]?.closed = true
            let w = s.taps[id]?.waiter
            s.taps[id] = nil
            return w
        }
        w?.resume()
    }

    /// Ends every tap.
    func closeAll() {
        let ids = state.withLock { Array($0.taps.keys) }
        for id in ids { close(id) }
    }

    /// One line of the tap: `{"stream":"<name>","message":<the message in the wire format>}`.
    static func line(stream: String, message: Message) -> [UInt8] {
        Array("{\"stream\":\(JSONLogHandler.quoted(stream)),\"message\":".utf8) + WireFormat.encode(message) + Array("}\n".utf8)
    }
}
