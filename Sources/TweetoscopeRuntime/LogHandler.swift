// The daemon's log output: one line per event on stderr, carrying the stage name.
import Glibc
import Synchronization
import TweetoscopeCore

/// A swift-log handler writing `<time> <level> [<stage>] <message> key=value...` lines to stderr.
/// The `stage` metadata (set by ``StageContext``) becomes the bracketed prefix.
public struct StderrLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    private let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let (stage, all) = observe(event, metadata: metadata)
        var line = "\(Self.timestamp()) \(event.level.rawValue.uppercased()) [\(stage)] \(event.message)"
        for key in all.keys.sorted() { line += " \(key)=\(all[key]!)" }
        line += "\n"
        writeStandardError(line)
    }

    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var t = now.tv_sec
        var parts = tm()
        gmtime_r(&t, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S", &parts)
        let millis = now.tv_nsec / 1_000_000
        let ms = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } + ".\(ms)Z"
    }
}

/// Writes `text` to standard error in one write(2) call (lines from several threads never mix).
public func writeStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeMutableBufferPointer { write(STDERR_FILENO, $0.baseAddress! + offset, $0.count - offset) }
        if n <= 0 { break }
        offset += n
    }
}

/// What both log handlers do with an event before writing it: the handler's metadata merged with
/// the event's, the stage taken out of it ("daemon" when none), the line counted per level and
/// stage, and a warning or worse remembered for the status line.
func observe(_ event: LogEvent, metadata: Logger.Metadata) -> (stage: String, metadata: Logger.Metadata) {
    var all = metadata
    if let extra = event.metadata { all.merge(extra) { _, new in new } }
    let stage = all.removeValue(forKey: "stage").map { "\($0)" } ?? "daemon"
    countLogLine(event.level, stage: stage)
    if event.level >= .warning { LastProblem.shared.record("\(event.message)") }
    if LogTap.shared.isActive {
        var text = "\(event.message)"
        for key in all.keys.sorted() { text += " \(key)=\(all[key]!)" }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        LogTap.shared.publish(LogTap.Record(time: Int64(now.tv_sec), level: event.level, stage: stage, message: text))
    }
    return (stage, all)
}
