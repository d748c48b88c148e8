// `log_format: json`: one JSON object per line on stderr, for log shippers (Vector, Fluent Bit,
// Filebeat): {"timestamp":..., "level":..., "stage":..., "message":..., <structured fields>}.
import TweetoscopeCore

/// A swift-log handler writing one JSON object per line to stderr.
///
/// Keys: `timestamp` (RFC 3339 UTC, milliseconds), `level` (swift-log level name), `stage`
/// ("daemon" outside a stage), `message`, then every metadata field (strings, arrays and
/// objects as JSON); a field named like one of the four keys is written as `field.<name>`.
public struct JSONLogHandler: LogHandler {
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
        writeStandardError(Self.line(timestamp: StderrLogHandler.timestamp(), level: event.level, stage: stage,
                                     message: "\(event.message)", fields: all))
    }

    static let reserved: Set<String> = ["timestamp", "level", "stage", "message"]

    /// One log line: the JSON object and a newline. Field keys are sorted (stable output).
    public static func line(timestamp: String, level: Logger.Level, stage: String, message: String,
                            fields: Logger.Metadata) -> String {
        var out = "{\"timestamp\":\(quoted(timestamp)),\"level\":\(quoted(level.rawValue)),\"stage\":\(quoted(stage)),\"message\":\(quoted(message))"
        for key in fields.keys.sorted() {
            let name = reserved.contains(key) ? "field.\(key)" : key
            out += ",\(quoted(name)):\(json(fields[key]!))"
        }
        return out + "}\n"
    }

    static func json(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let s): quoted(s)
        case .stringConvertible(let c): quoted(c.description)
        case .array(let items): "[" + items.map(json).joined(separator: ",") + "]"
        case .dictionary(let d): "{" + d.keys.sorted().map { "\(quoted($0)):\(json(d[$0]!))" }.joined(separator: ",") + "}"
        }
    }

    /// `s` as a JSON string literal (RFC 8259: quote, backslash and control characters escaped).
    static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 || u.value == 0x7F || u.value == 0x2028 || u.value == 0x2029 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
