// systemd integration through libsystemd: readiness and status notifications (sd_notify), the
// watchdog, and structured logging to the journal (sd_journal_sendv).
import CSystemd
import Glibc
import Synchronization
import TweetoscopeCore

/// Sends service notifications to systemd (`Type=notify` units); a no-op outside systemd.
///
/// `NOTIFY_SOCKET` is never unset, so later `STATUS=`, `WATCHDOG=1`, `RELOADING=1` and
/// `STOPPING=1` messages still reach systemd.
public struct SystemdNotifier: Sendable {
    public init() {}

    /// True when systemd is listening (NOTIFY_SOCKET is set).
    public var isActive: Bool { getenv("NOTIFY_SOCKET") != nil }

    /// Sends newline-separated `KEY=VALUE` assignments; returns false when nobody listens.
    @discardableResult
    public func notify(_ state: String) -> Bool {
        sd_notify(0, state) > 0
    }

    /// `READY=1`, with an optional status line.
    public func ready(status: String? = nil) {
        notify("READY=1" + (status.map { "\nSTATUS=\($0)" } ?? ""))
    }

    /// `RELOADING=1` with `MONOTONIC_USEC` (systemd 253 semantics, harmless on 252).
    public func reloading() {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let usec = Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
        notify("RELOADING=1\nMONOTONIC_USEC=\(usec)\nSTATUS=reloading configuration")
    }

    public func stopping() { notify("STOPPING=1\nSTATUS=stopping: sources stopped, draining") }

    public func status(_ line: String) { notify("STATUS=\(line)") }

    public func watchdogPing() { notify("WATCHDOG=1") }

    /// The watchdog period the unit asks for (`WatchdogSec=`), nil when disabled.
    public var watchdogInterval: Duration? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return .microseconds(Int64(usec))
    }
}

/// Whether standard error is connected to the journal: systemd sets `JOURNAL_STREAM=<dev>:<ino>`
/// of the stream it gives the service; it must match stderr (a child with redirected stderr
/// inherits the variable but not the stream).
public func standardErrorIsJournal() -> Bool {
    guard let value = getenv("JOURNAL_STREAM") else { return false }
    let parts = String(cString: value).split(separator: ":")
    guard parts.count == 2, let dev = UInt64(parts[0]), let ino = UInt64(parts[1]) else { return false }
    var st = stat()
    guard fstat(STDERR_FILENO, &st) == 0 else { return false }
    return UInt64(st.st_dev) == dev && UInt64(st.st_ino) == ino
}

/// The last error or warning logged, for the status line.
public final class LastProblem: Sendable {
    public static let shared = LastProblem()
    private let text = Mutex<String?>(nil)
    public func record(_ message: String) { text.withLock { $0 = message } }
    public var value: String? { text.withLock { $0 } }
}

/// A swift-log handler writing structured entries to the journal with `sd_journal_sendv`.
///
/// Fields: `MESSAGE`, `PRIORITY` (syslog levels), `SYSLOG_IDENTIFIER=tweetoscoped`, `STAGE` (the
/// stage name, "daemon" otherwise), `CASCADE` and `T_OBS` for cascade events (from the
/// `cascade` and `T_obs` metadata), every other metadata key upper-cased (e.g. `REASON`), and
/// `CODE_FILE`, `CODE_LINE`, `CODE_FUNC`. Use ``standardErrorIsJournal()`` to choose it: libsystemd
/// silently drops entries when journald is absent.
public struct JournaldLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]

    public init(label: String, level: Logger.Level) {
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let observed = observe(event, metadata: metadata)
        var all = observed.metadata
        var fields: [String] = [
            "MESSAGE=\(event.message)",
            "PRIORITY=\(Self.priority(event.level))",
            "SYSLOG_IDENTIFIER=tweetoscoped",
            "STAGE=\(observed.stage)",
            "CODE_FILE=\(event.file)",
            "CODE_LINE=\(event.line)",
            "CODE_FUNC=\(event.function)",
        ]
        if let cascade = all.removeValue(forKey: "cascade") { fields.append("CASCADE=\(cascade)") }
        if let window = all.removeValue(forKey: "T_obs") { fields.append("T_OBS=\(window)") }
        for (key, value) in all {
            let name = String(key.uppercased().map { $0.isLetter || $0.isNumber ? $0 : "_" })
            if let first = name.first, first.isLetter { fields.append("\(name)=\(value)") }
        }
        let strings = fields.map { strdup($0)! }
        defer { strings.forEach { free($0) } }
        var vectors = strings.map { iovec(iov_base: UnsafeMutableRawPointer($0), iov_len: strlen($0)) }
        _ = sd_journal_sendv(&vectors, Int32(vectors.count))
    }

    static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }
}
