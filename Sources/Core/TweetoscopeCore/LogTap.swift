// A hook in the daemon's log handlers: the log records, as they are written, offered to whoever
// subscribed (a stage that forwards them elsewhere, e.g. to the course's `logs` topic). Core only
// carries the records; it knows no subscriber.
import FoundationEssentials
import Synchronization

/// The daemon's log records, published by its log handlers to subscribers.
///
/// `publish` runs on the logging thread, under the tap's lock: a subscriber must return at once
/// (append to a bounded buffer and return) and must never log itself from the callback. With no
/// subscriber and no backlog kept, publishing costs one atomic load.
public final class LogTap: Sendable {
    /// The process's tap, fed by the runtime's log handlers.
    public static let shared = LogTap()

    /// One log line: unix time in seconds, level, the stage that logged it ("daemon" outside
    /// stages), and the message with its metadata as `key=value` pairs.
    public struct Record: Sendable, Hashable {
        public var time: Int64
        public var level: Logger.Level
        public var stage: String
        public var message: String
        public init(time: Int64, level: Logger.Level, stage: String, message: String) {
            self.time = time
            self.level = level
            self.stage = stage
            self.message = message
        }
    }

    public typealias Subscriber = @Sendable (Record) -> Void

    private struct State {
        var subscribers: [(id: Int, call: Subscriber)] = []
        var nextID = 1
        /// Records kept while nobody listens, for the first subscriber (at most `limit`).
        var backlog: [Record] = []
        var limit = 0
    }
    private let state = Mutex(State())
    private let active = Atomic<Bool>(false)

    public init() {}

    /// Whether anyone listens or a backlog is kept (handlers skip building records otherwise).
    public var isActive: Bool { active.load(ordering: .relaxed) }

    /// Keeps up to `limit` records published while nobody listens, for the next subscriber: a
    /// stage calls it when it is built, so that lines logged by stages that start before its
    /// `run` subscribes are not missed. The oldest are dropped beyond `limit`.
    public func keepBacklog(_ limit: Int) {
        state.withLock { s in
            s.limit = max(s.limit, limit)
            active.store(true, ordering: .relaxed)
        }
    }

    /// Adds `subscriber` and hands it the backlog first (which is then cleared and no longer
    /// kept); returns the token for ``unsubscribe(_:)``.
    public func subscribe(_ subscriber: @escaping Subscriber) -> Int {
        state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            for r in s.backlog { subscriber(r) }
            s.backlog = []
            s.limit = 0
            s.subscribers.append((id, subscriber))
            active.store(true, ordering: .relaxed)
            return id
        }
    }

    public func unsubscribe(_ id: Int) {
        state.withLock { s in
            s.subscribers.removeAll { $0.id == id }
            active.store(!s.subscribers.isEmpty || s.limit > 0, ordering: .relaxed)
        }
    }

    /// Offers `record` to every subscriber (in subscription order), or to the backlog.
    public func publish(_ record: Record) {
        guard isActive else { return }
        state.withLock { s in
            if s.subscribers.isEmpty {
                guard s.limit > 0 else { return }
                if s.backlog.count >= s.limit { s.backlog.removeFirst(s.backlog.count - s.limit + 1) }
                s.backlog.append(record)
            } else {
                for sub in s.subscribers { sub.call(record) }
            }
        }
    }

    /// The course logger's level names (Python's logging: DEBUG, INFO, WARNING, ERROR, CRITICAL)
    /// for swift-log's levels (trace → DEBUG, notice → INFO).
    public static func courseLevel(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: "DEBUG"
        case .info, .notice: "INFO"
        case .warning: "WARNING"
        case .error: "ERROR"
        case .critical: "CRITICAL"
        }
    }
}
