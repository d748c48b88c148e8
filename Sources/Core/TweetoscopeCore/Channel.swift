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
        var buffer: [Element] = []
        var head = 0
        var waiter: CheckedContinuation<Element?, Never>?
        var detached = false
        var pending: Int { buffer.count - head }
    }

    private struct State {
        var consumers: [Consumer] = []
        var producers = 0
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
    public func addConsumer() -> Int {
        state.withLock { s in
            s.consumers.append(Consumer())
            return s.consumers.count - 1
        }
    }

    /// Number of registered consumers.
    public var consumerCount: Int { state.withLock { $0.consumers.count } }

    /// Elements buffered for consumer `id` (0 once detached): the depth of its queue.
    public func pending(_ id: Int) -> Int {
        state.withLock { s in s.consumers[id].detached ? 0 : s.consumers[id].pending }
    }

    /// Sends `element` to every attached consumer, waiting while any of their buffers is full.
    public func send(_ element: Element) async {
        while true {
            let delivered: [CheckedContinuation<Element?, Never>]? = state.withLock { s in
                if s.full(capacity) { return nil }
                var wake: [CheckedContinuation<Element?, Never>] = []
                for i in s.consumers.indices where !s.consumers[i].detached {
                    if let waiter = s.consumers[i].waiter {
                        s.consumers[i].waiter = nil
                        wake.append(waiter)
                    } else {
                        s.consumers[i].buffer.append(element)
                    }
                }
                return wake
            }
            if let delivered {
                for waiter in delivered { waiter.resume(returning: element) }
                return
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

    /// The next element for consumer `id`, or nil once the channel has ended for it.
    public func next(_ id: Int) async -> Element? {
        await withCheckedContinuation { (cont: CheckedContinuation<Element?, Never>) in
            let action: NextAction = state.withLock { s in
                if s.consumers[id].pending > 0 {
                    let element = s.consumers[id].buffer[s.consumers[id].head]
                    s.consumers[id].head += 1
                    if s.consumers[id].head == s.consumers[id].buffer.count {
                        s.consumers[id].buffer.removeAll(keepingCapacity: true)
                        s.consumers[id].head = 0
                    }
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
