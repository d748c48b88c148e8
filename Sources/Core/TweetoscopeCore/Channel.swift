import Synchronization

/// A bounded, multi-producer, broadcast channel: every consumer receives every element, in the
/// order they were sent.
///
/// This is how stages of one daemon talk: a stream is a channel of message batches. A producer
/// that finds any consumer's buffer full waits (back-pressure), so memory stays bounded by
/// `capacity` elements per consumer. The channel ends for a consumer once every registered
/// producer has called ``finish()`` and the consumer has drained its buffer.
///
/// Wiring contract: ``addProducer()`` and ``addConsumer()`` are called before any element is
/// sent; a consumer that stops reading must call ``detach(_:)`` so producers never wait on it.
public final class Channel<Element: Sendable>: Sendable {
    private struct Consumer {
        /// Elements sent to this consumer; slots before `head` were delivered and are nil, so a
        /// delivered element is released as soon as the consumer drops it (issue 17: keeping
        /// them until the consumer caught up held ~150 tweet batches alive at the peak).
        var buffer: [Element?] = []
        var head = 0
        var waiter: CheckedContinuation<Element?, Never>?
        var detached = false
        /// Elements handed to this consumer so far (its position in the stream).
        var delivered = 0
        /// Elements this consumer has acknowledged (made durable, see ``acknowledge(_:through:)``).
        var acked = 0
        /// Whether receiving an element acknowledges it.
        var autoAck = true
        var pending: Int { buffer.count - head }

        /// Takes the element at `head` out of the buffer (its slot becomes nil) and advances.
        /// The delivered prefix is dropped once it is as long as what is left, so the buffer's
        /// storage stays within twice the pending elements (amortised O(1) per element).
        mutating func take() -> Element {
            let element = buffer[head].take()!
            head += 1
            if head == buffer.count {
                buffer.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 16 && head * 2 >= buffer.count {
                buffer.removeFirst(head)
                head = 0
            }
            return element
        }

        mutating func handedOne() {
            delivered += 1
            if autoAck { acked = delivered }
        }
    }

    private struct State {
        var consumers: [Consumer] = []
        var producers = 0
        /// Producers that ended because they failed (see ``finishFailed()``).
        var failedProducers = 0
        /// Elements sent so far: the sequence number of the latest one (the first is 1).
        var sent = 0
        var producerWaiters: [CheckedContinuation<Void, Never>] = []

        func full(_ capacity: Int) -> Bool {
            consumers.contains { !$0.detached && $0.pending >= capacity }
        }
    }

    private enum NextAction {
        case deliver(Element, [CheckedContinuation<Void, Never>])
        case end
        case wait
    }

    /// Maximum number of elements buffered per consumer.
    public let capacity: Int
    private let state = Mutex(State())

    public init(capacity: Int = 16) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    /// Registers a producer; the channel stays open until each one has called ``finish()``.
    public func addProducer() {
        state.withLock { $0.producers += 1 }
    }

    /// Registers a consumer and returns its id for ``next(_:)``.
    ///
    /// - Parameter autoAck: true (default) when receiving an element is all the consumer does
    ///   before the element counts as done; false when the consumer acknowledges elements itself
    ///   with ``acknowledge(_:through:)`` once their effect is durable (a sink).
    public func addConsumer(autoAck: Bool = true) -> Int {
        state.withLock { s in
            var c = Consumer()
            c.autoAck = autoAck
            s.consumers.append(c)
            return s.consumers.count - 1
        }
    }

    /// Marks the first `count` elements received by consumer `id` as done (durable). Counts only
    /// grow; a count beyond what the consumer has received is capped.
    public func acknowledge(_ id: Int, through count: Int) {
        state.withLock { s in
            let c = min(count, s.consumers[id].delivered)
            if c > s.consumers[id].acked { s.consumers[id].acked = c }
        }
    }

    /// The number of leading elements of the stream every attached consumer has acknowledged:
    /// element number `n` (as returned by ``send(_:)``) is done everywhere once `durable >= n`.
    /// Detached consumers are not waited for; with no consumer, everything sent is done.
    public var durable: Int {
        state.withLock { s in
            var low = s.sent
            for c in s.consumers where !c.detached && c.acked < low { low = c.acked }
            return low
        }
    }

    /// Number of registered consumers.
    public var consumerCount: Int { state.withLock { $0.consumers.count } }

    /// Elements buffered for consumer `id` (0 once detached): the depth of its queue.
    public func pending(_ id: Int) -> Int {
        state.withLock { s in s.consumers[id].detached ? 0 : s.consumers[id].pending }
    }

    /// Sends `element` to every attached consumer, waiting while any of their buffers is full.
    /// Returns the element's sequence number in the stream (1 for the first element sent).
    @discardableResult
    public func send(_ element: Element) async -> Int {
        while true {
            let delivered: (wake: [CheckedContinuation<Element?, Never>], seq: Int)? = state.withLock { s in
                if s.full(capacity) { return nil }
                s.sent += 1
                var wake: [CheckedContinuation<Element?, Never>] = []
                for i in s.consumers.indices where !s.consumers[i].detached {
                    if let waiter = s.consumers[i].waiter {
                        s.consumers[i].waiter = nil
                        s.consumers[i].handedOne()
                        wake.append(waiter)
                    } else {
                        s.consumers[i].buffer.append(element)
                    }
                }
                return (wake, s.sent)
            }
            if let delivered {
                for waiter in delivered.wake { waiter.resume(returning: element) }
                return delivered.seq
            }
            await withCheckedContinuation { (cont: CheckedContinuation<Void, Never>) in
                let retryNow = state.withLock { s -> Bool in
                    if s.full(capacity) {
                        s.producerWaiters.append(cont)
                        return false
                    }
                    return true
                }
                if retryNow { cont.resume() }
            }
        }
    }

    /// Called once by each producer when it will send nothing more.
    public func finish() {
        let waiters: [CheckedContinuation<Element?, Never>] = state.withLock { s in
            s.producers -= 1
            guard s.producers <= 0 else { return [] }
            var wake: [CheckedContinuation<Element?, Never>] = []
            for i in s.consumers.indices {
                if let w = s.consumers[i].waiter {
                    s.consumers[i].waiter = nil
                    wake.append(w)
                }
            }
            return wake
        }
        for w in waiters { w.resume(returning: nil) }
    }

    /// Called once by a producer that stops because it failed (instead of ``finish()``): the
    /// channel ends the same way, and ``producerFailed`` tells consumers that what they received
    /// may be cut short.
    public func finishFailed() {
        state.withLock { $0.failedProducers += 1 }
        finish()
    }

    /// True once a producer ended with ``finishFailed()``: the stream was cut, not completed.
    public var producerFailed: Bool { state.withLock { $0.failedProducers > 0 } }

    /// The next element for consumer `id`, or nil once the channel has ended for it.
    public func next(_ id: Int) async -> Element? {
        await withCheckedContinuation { (cont: CheckedContinuation<Element?, Never>) in
            let action: NextAction = state.withLock { s in
                if s.consumers[id].pending > 0 {
                    let element = s.consumers[id].take()
                    s.consumers[id].handedOne()
                    let wake = s.producerWaiters
                    s.producerWaiters.removeAll()
                    return .deliver(element, wake)
                }
                if s.producers <= 0 || s.consumers[id].detached { return .end }
                s.consumers[id].waiter = cont
                return .wait
            }
            switch action {
            case .deliver(let element, let wake):
                for w in wake { w.resume() }
                cont.resume(returning: element)
            case .end:
                cont.resume(returning: nil)
            case .wait:
                break
            }
        }
    }

    /// Detaches consumer `id`: its buffer is dropped and producers no longer wait for it.
    public func detach(_ id: Int) {
        let wake: [CheckedContinuation<Void, Never>] = state.withLock { s in
            s.consumers[id].detached = true
            s.consumers[id].buffer = []
            s.consumers[id].head = 0
            let w = s.producerWaiters
            s.producerWaiters.removeAll()
            return w
        }
        for w in wake { w.resume() }
    }
}
