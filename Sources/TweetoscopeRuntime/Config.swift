// The configuration file (/etc/tweetoscope.yaml): daemon settings and the stage graph, checked
// strictly. Every error carries file:line:column; unknown keys get a "did you mean".
import Glibc
import TweetoscopeCore
import TweetoscopeKafka

/// One configuration problem, printed as `file:line:column: error: message`.
public struct ConfigDiagnostic: Sendable, CustomStringConvertible, Equatable {
    public var mark: SourceMark?
    public var message: String

    public init(_ mark: SourceMark?, _ message: String) {
        self.mark = mark
        self.message = message
    }

    public var description: String {
        if let mark { return "\(mark): error: \(message)" }
        return "error: \(message)"
    }
}

/// Every problem found in a configuration (or in loading its plugins).
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [ConfigDiagnostic]
    public init(_ diagnostics: [ConfigDiagnostic]) { self.diagnostics = diagnostics }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// Daemon-wide settings: the top-level keys other than `stages`.
public struct DaemonSettings: Sendable, Equatable {
    /// Directory holding the `libtweetoscope-*.so` plugins; nil means the default.
    public var pluginDirectory: String?
    /// Plugins to load by name (`replay` for `libtweetoscope-replay.so`); nil loads every plugin found.
    public var plugins: [String]?
    public var logLevel: Logger.Level = .info
    /// The log line format (`log_format`): text lines or one JSON object per line.
    public var logFormat: LogFormat = .text
    /// Seconds between progress lines while running; 0 turns them off.
    public var progressInterval: Double = 10
    /// The metrics endpoint (`metrics:`); nil when metrics are off (the default).
    public var metrics: MetricsSettings?
    /// Seconds the stages have, after a stop signal, to finish their shutdown steps (drains,
    /// Kafka flushes, commits and closes); past it what is still waiting is dropped, counted,
    /// and the daemon exits. A second stop signal cuts it to now.
    public var shutdownTimeout: Double = 30

    public init() {}
}

/// The `metrics` section: a Prometheus endpoint `GET /metrics` over plain HTTP.
public struct MetricsSettings: Sendable, Equatable {
    /// Address to listen on (an IP address or a host name).
    public var host: String
    /// TCP port; 0 picks a free port (logged at start).
    public var port: Int
    /// Cascades in the `tweetoscope_top_cascade_forecast` gauge.
    public var topK: Int = 10
    /// Seconds the endpoint keeps serving after the pipeline has ended (finite runs), unless a
    /// stop signal arrives.
    public var linger: Double = 0
    /// Whether `GET /tap` serves the messages of the streams (`tweetoscoped tap`); only on a
    /// loopback address.
    public var tap: Bool = false

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Whether `host` is a loopback address (127.0.0.0/8, ::1, localhost).
    public static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// `host:port`, with an IPv6 address in brackets.
    public var listen: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses `host:port`, `[ipv6]:port`, `:port` or `port` (the last two listen on the loopback
    /// address 127.0.0.1). Nil when malformed.
    public static func parseListen(_ text: String) -> (host: String, port: Int)? {
        var host = "127.0.0.1"
        var portText = Substring(text)
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return nil }
            portText = rest.dropFirst()
        } else if let colon = text.lastIndex(of: ":") {
            let h = text[..<colon]
            guard !h.contains(":") else { return nil }  // an IPv6 address needs brackets
            if !h.isEmpty { host = String(h) }
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }),
              !portText.isEmpty, portText.allSatisfy(\.isASCII), portText.allSatisfy(\.isNumber),
              let port = Int(portText), (0...65535).contains(port) else { return nil }
        return (host, port)
    }
}

/// The format of log lines (`log_format`).
public enum LogFormat: String, Sendable, CaseIterable {
    /// `<time> <LEVEL> [<stage>] <message> key=value...`
    case text
    /// One JSON object per line: timestamp, level, stage, message and the structured fields.
    case json
}

/// One configured stage, validated against its plugin's descriptor.
public struct StageConfig: Sendable {
    public var name: String
    public var type: String
    public var mark: SourceMark
    /// Input port -> streams bound to it, with their positions.
    public var inputs: [String: [(stream: String, mark: SourceMark)]]
    /// Output port -> stream, with its position.
    public var outputs: [String: (stream: String, mark: SourceMark)]
    public var options: StageOptions
    /// The options as written (for change detection and display), secrets excluded.
    public var optionText: [String: String]
    public var descriptor: StageDescriptor
    /// The stage built from these settings by its plugin; nil when the settings have errors.
    public var stage: (any Stage)?
}

/// A fully validated configuration.
public struct PipelineConfig: Sendable {
    public var file: String
    public var settings: DaemonSettings
    public var stages: [StageConfig]
}

/// Largest duration setting in seconds (a year): durations are converted to integer
/// milliseconds or nanoseconds, which must not overflow.
let maxSeconds = 31_536_000.0

/// Keys of the top-level mapping.
let topLevelKeys = ["plugin_dir", "plugins", "log_level", "log_format", "progress_interval", "shutdown_timeout", "metrics", "stages"]
/// Keys of the `metrics` mapping.
let metricsKeys = ["listen", "top_k", "linger", "tap"]
/// Keys of a stage entry that are not options.
let stageReservedKeys = ["type", "inputs", "outputs"]

/// Reads and checks configuration files.
public enum ConfigLoader {
    /// Largest configuration file in bytes (16 MiB): a configuration is a few kilobytes.
    public static let maxFileBytes = 16 << 20

    /// Reads `path` into text.
    /// - Throws: `ConfigErrors` naming the file when it cannot be read, is larger than
    ///   ``maxFileBytes``, or is not valid UTF-8 (with the line and column of the first bad byte).
    public static func read(_ path: String) throws -> String {
        guard let file = fopen(path, "rb") else {
            throw ConfigErrors([ConfigDiagnostic(nil, "cannot read \(path): \(String(cString: strerror(errno)))")])
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n > 0 { bytes += chunk[0..<n] }
            if bytes.count > maxFileBytes {
                throw ConfigErrors([ConfigDiagnostic(nil, "cannot read \(path): larger than \(maxFileBytes >> 20) MiB, not a configuration file")])
            }
            if n < chunk.count { break }
        }
        return try text(of: bytes, file: path)
    }

    /// The bytes of a configuration file as text.
    /// - Throws: `ConfigErrors` at the line and column (in bytes) of the first byte that is not UTF-8.
    public static func text(of bytes: [UInt8], file: String) throws -> String {
        if let bad = bytes.withUnsafeBufferPointer({ UTF8Validation.firstInvalidByte($0) }) {
            let before = bytes[..<bad]
            let line = before.count(where: { $0 == 0x0A }) + 1
            let column = bad - (before.lastIndex(of: 0x0A).map { $0 + 1 } ?? 0) + 1
            throw ConfigErrors([ConfigDiagnostic(SourceMark(file: file, line: line, column: column),
                                                 "invalid UTF-8 (byte 0x\(String(bytes[bad], radix: 16))): a configuration file is UTF-8 text")])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Parses the document and its daemon settings (what is needed to find the plugins), with
    /// its environment references expanded. Returns the root node for
    /// ``validateStages(root:registry:errors:)``; problems go to `errors`.
    public static func parseSettings(_ text: String, file: String, errors: inout [ConfigDiagnostic])
        -> (DaemonSettings, YAMLNode?)
    {
        let parsed: YAMLNode?
        do {
            parsed = try parseYAML(text, file: file)
        } catch let e as YAMLSyntaxError {
            errors.append(ConfigDiagnostic(e.mark, e.message))
            return (DaemonSettings(), nil)
        } catch {
            errors.append(ConfigDiagnostic(nil, "\(file): \(error)"))
            return (DaemonSettings(), nil)
        }
        guard let parsed else {
            errors.append(ConfigDiagnostic(SourceMark(file: file, line: 1, column: 1), "empty configuration: expected a mapping with `stages`"))
            return (DaemonSettings(), nil)
        }
        errors += duplicateKeyDiagnostics(parsed)  // at every level (YAMLChecks.swift)
        var notes: [SourceMark: InterpolationNote] = [:]
        let root = Interpolator.process().interpolate(parsed, errors: &errors, notes: &notes)
        guard case .mapping = root else {
            errors.append(ConfigDiagnostic(root.mark, "expected a mapping at the top level, found \(root.kindName)"))
            return (DaemonSettings(), nil)
        }
        return (parseSettings(root: root, errors: &errors), root)
    }

    /// The daemon settings of a (merged, interpolated) root mapping; problems go to `errors`.
    /// Relative paths are relative to the directory of the file each value comes from.
    public static func parseSettings(root: YAMLNode, errors: inout [ConfigDiagnostic]) -> DaemonSettings {
        var settings = DaemonSettings()
        guard case .mapping(let pairs, _) = root else {
            errors.append(ConfigDiagnostic(root.mark, "expected a mapping at the top level, found \(root.kindName)"))
            return settings
        }
        checkKeys(pairs, allowed: topLevelKeys, context: "top-level key", errors: &errors)
        for (key, keyMark, value) in pairs {
            let directory = directoryOf(value.mark.file)
            switch key {
            case "plugin_dir":
                if case .string(let s)? = convert(value, to: .path, directory: directory, key: key, errors: &errors) {
                    settings.pluginDirectory = s
                }
            case "plugins":
                if case .list(let l)? = convert(value, to: .stringList, directory: directory, key: key, errors: &errors) {
                    settings.plugins = l.map(\.description)
                }
            case "log_level":
                let levels = Logger.Level.allCases.map(\.rawValue)
                if case .string(let s)? = convert(value, to: .choice(levels), directory: directory, key: key, errors: &errors) {
                    settings.logLevel = Logger.Level(rawValue: s) ?? .info
                }
            case "log_format":
                if case .string(let s)? = convert(value, to: .choice(LogFormat.allCases.map(\.rawValue)), directory: directory, key: key, errors: &errors) {
                    settings.logFormat = LogFormat(rawValue: s) ?? .text
                }
            case "progress_interval":
                if let v = convert(value, to: .double, directory: directory, key: key, errors: &errors),
                   case .double(let d) = v {
                    if d < 0 || d > maxSeconds {
                        errors.append(ConfigDiagnostic(value.mark, "progress_interval: expected seconds in 0...\(Int(maxSeconds)), found \(d)"))
                    } else {
                        settings.progressInterval = d
                    }
                }
            case "shutdown_timeout":
                if let v = convert(value, to: .double, directory: directory, key: key, errors: &errors),
                   case .double(let d) = v {
                    if !(d >= 1 && d <= 3600) {
                        errors.append(ConfigDiagnostic(value.mark, "shutdown_timeout: expected seconds in 1...3600, found \(d)"))
                    } else {
                        settings.shutdownTimeout = d
                    }
                }
            case "metrics":
                settings.metrics = parseMetrics(value, keyMark: keyMark, directory: directory, errors: &errors)
            default:
                break
            }
        }
        if !pairs.contains(where: { $0.key == "stages" }) {
            errors.append(ConfigDiagnostic(root.mark, "missing key `stages` (the pipeline's stages)"))
        }
        return settings
    }

    /// The `metrics` mapping: `listen` (required), `top_k`, `linger`.
    static func parseMetrics(_ node: YAMLNode, keyMark: SourceMark, directory: String,
                             errors: inout [ConfigDiagnostic]) -> MetricsSettings? {
        guard case .mapping(let pairs, _) = node else {
            errors.append(ConfigDiagnostic(node.mark, "metrics: expected a mapping with `listen` (e.g. listen: \"127.0.0.1:9464\"), found \(node.kindName)"))
            return nil
        }
        checkKeys(pairs, allowed: metricsKeys, context: "key of `metrics`", errors: &errors)
        guard let listenNode = pairs.first(where: { $0.key == "listen" })?.value else {
            errors.append(ConfigDiagnostic(keyMark, "metrics: missing key `listen` (host:port of the Prometheus endpoint, e.g. \"127.0.0.1:9464\")"))
            return nil
        }
        guard case .string(let listen)? = convert(listenNode, to: .string, directory: directory, key: "metrics.listen", errors: &errors) else {
            return nil
        }
        guard let (host, port) = MetricsSettings.parseListen(listen) else {
            errors.append(ConfigDiagnostic(listenNode.mark, "metrics.listen: expected host:port, [ipv6]:port or :port with a port in 0...65535, found \"\(listen)\""))
            return nil
        }
        var settings = MetricsSettings(host: host, port: port)
        if let node = pairs.first(where: { $0.key == "top_k" })?.value,
           case .int(let k)? = convert(node, to: .int, directory: directory, key: "metrics.top_k", errors: &errors) {
            if k < 0 || k > 1000 { errors.append(ConfigDiagnostic(node.mark, "metrics.top_k: expected an integer in 0...1000, found \(k)")) }
            settings.topK = k
        }
        if let node = pairs.first(where: { $0.key == "linger" })?.value,
           case .double(let d)? = convert(node, to: .double, directory: directory, key: "metrics.linger", errors: &errors) {
            if d < 0 || d > maxSeconds {
                errors.append(ConfigDiagnostic(node.mark, "metrics.linger: expected seconds in 0...\(Int(maxSeconds)), found \(d)"))
            } else {
                settings.linger = d
            }
        }
        if let node = pairs.first(where: { $0.key == "tap" })?.value,
           case .bool(let on)? = convert(node, to: .bool, directory: directory, key: "metrics.tap", errors: &errors) {
            if on && !MetricsSettings.isLoopback(host) {
                errors.append(ConfigDiagnostic(node.mark, "metrics.tap: the tap serves every message of the pipeline, so it needs a loopback `listen` address (127.0.0.1, ::1 or localhost), not \(host)"))
            }
            settings.tap = on
        }
        return settings
    }

    /// Checks the `stages` section against the registered stage types, builds each stage, and
    /// checks the stream graph (every consumed stream has a producer of a compatible kind).
    public static func validateStages(root: YAMLNode, file: String, registry: StageRegistry,
                                      errors: inout [ConfigDiagnostic]) -> [StageConfig]
    {
        validateStages(root: root, registry: registry, errors: &errors)
    }

    /// Checks the `stages` section against the registered stage types, builds each stage (unless
    /// `buildStages` is false), and checks the stream graph. Relative paths of a stage are
    /// relative to its file's directory.
    public static func validateStages(root: YAMLNode, registry: StageRegistry,
                                      errors: inout [ConfigDiagnostic], buildStages: Bool = true) -> [StageConfig]
    {
        guard case .mapping(let top, _) = root,
              let stagesNode = top.first(where: { $0.key == "stages" })?.value else { return [] }
        guard case .mapping(let entries, _) = stagesNode else {
            errors.append(ConfigDiagnostic(stagesNode.mark, "stages: expected a mapping of stage names to stages, found \(stagesNode.kindName)"))
            return []
        }
        if entries.isEmpty { errors.append(ConfigDiagnostic(stagesNode.mark, "stages: no stage configured")) }
        var result: [StageConfig] = []
        var seen = Set<String>()
        for (name, nameMark, node) in entries {
            let directory = directoryOf(nameMark.file)
            if !seen.insert(name).inserted { continue }  // reported by duplicateKeyDiagnostics / readDocument
            if let stage = validateStage(name: name, nameMark: nameMark, node: node, directory: directory,
                                         registry: registry, build: buildStages, errors: &errors) {
                result.append(stage)
            }
        }
        checkGraph(result, errors: &errors)
        return result
    }

    /// Loads, checks and builds one configuration file with the plugins it names (see
    /// ``load(sources:pluginDirectory:environment:)`` for several files and directories).
    ///
    /// - Parameter pluginDirectory: overrides the file's `plugin_dir` (command line).
    /// - Throws: `ConfigErrors` with every problem found (syntax, keys, types, plugins, graph).
    public static func load(path: String, pluginDirectory: String? = nil) throws -> (PipelineConfig, StageRegistry) {
        try load(sources: ConfigSources(file: path), pluginDirectory: pluginDirectory)
    }

    private static func validateStage(name: String, nameMark: SourceMark, node: YAMLNode, directory: String,
                                      registry: StageRegistry, build: Bool = true,
                                      errors: inout [ConfigDiagnostic]) -> StageConfig?
    {
        guard case .mapping(let pairs, let mark) = node else {
            errors.append(ConfigDiagnostic(node.mark, "stage \"\(name)\": expected a mapping with `type`, found \(node.kindName)"))
            return nil
        }
        guard let typeNode = pairs.first(where: { $0.key == "type" })?.value else {
            errors.append(ConfigDiagnostic(mark, "stage \"\(name)\": missing key `type` (one of: \(registry.types.joined(separator: ", ")))"))
            return nil
        }
        guard case .scalar(let type, _, let typeMark) = typeNode else {
            errors.append(ConfigDiagnostic(typeNode.mark, "stage \"\(name)\": `type` must be a string, found \(typeNode.kindName)"))
            return nil
        }
        guard let (descriptor, _) = registry.lookup(type) else {
            var message = "stage \"\(name)\": unknown stage type \"\(type)\""
            if let guess = suggestion(for: type, among: registry.types) { message += "; did you mean \"\(guess)\"?" }
            message += " (types available from the loaded plugins: \(registry.types.joined(separator: ", ")))"
            errors.append(ConfigDiagnostic(typeMark, message))
            return nil
        }
        let before = errors.count
        let optionKeys = descriptor.options.flatMap { $0.secret ? [$0.key, $0.key + secretFileSuffix] : [$0.key] }
        checkKeys(pairs, allowed: stageReservedKeys + optionKeys, context: "key of stage \"\(name)\" (type \(type))",
                  errors: &errors)

        // Ports.
        var inputs: [String: [(stream: String, mark: SourceMark)]] = [:]
        var outputs: [String: (stream: String, mark: SourceMark)] = [:]
        if let node = pairs.first(where: { $0.key == "inputs" })?.value {
            for (port, portMark, value) in portEntries(node, stage: name, what: "inputs", errors: &errors) {
                guard let spec = descriptor.inputs.first(where: { $0.name == port }) else {
                    errors.append(unknownPort(port, portMark, stage: name, what: "input", known: descriptor.inputs))
                    continue
                }
                switch value {
                case .scalar(let s, _, let m) where !s.isEmpty:
                    inputs[port] = [(s, m)]
                case .sequence(let items, _) where spec.multiple:
                    for item in items {
                        if case .scalar(let s, _, let m) = item, !s.isEmpty { inputs[port, default: []].append((s, m)) }
                        else { errors.append(ConfigDiagnostic(item.mark, "stage \"\(name)\": input `\(port)`: expected a stream name, found \(item.kindName)")) }
                    }
                default:
                    errors.append(ConfigDiagnostic(value.mark, "stage \"\(name)\": input `\(port)`: expected a stream name\(spec.multiple ? " or a list of stream names" : ""), found \(value.kindName)"))
                }
            }
        }
        if let node = pairs.first(where: { $0.key == "outputs" })?.value {
            for (port, portMark, value) in portEntries(node, stage: name, what: "outputs", errors: &errors) {
                guard descriptor.outputs.contains(where: { $0.name == port }) else {
                    errors.append(unknownPort(port, portMark, stage: name, what: "output", known: descriptor.outputs))
                    continue
                }
                if case .scalar(let s, _, let m) = value, !s.isEmpty { outputs[port] = (s, m) }
                else { errors.append(ConfigDiagnostic(value.mark, "stage \"\(name)\": output `\(port)`: expected a stream name, found \(value.kindName)")) }
            }
        }
        for spec in descriptor.inputs where spec.required && inputs[spec.name] == nil {
            errors.append(ConfigDiagnostic(mark, "stage \"\(name)\": input `\(spec.name)` is required (\(spec.doc))"))
        }
        for spec in descriptor.outputs where spec.required && outputs[spec.name] == nil {
            errors.append(ConfigDiagnostic(mark, "stage \"\(name)\": output `\(spec.name)` is required (\(spec.doc))"))
        }

        // Options.
        var values: [String: OptionValue] = [:]
        var optionText: [String: String] = [:]
        var optionMarks: [String: SourceMark] = [:]
        for spec in descriptor.options {
            let fileKey = spec.key + secretFileSuffix
            let fromFile = spec.secret ? pairs.first(where: { $0.key == fileKey }) : nil
            if let fromFile, let given = pairs.first(where: { $0.key == spec.key }) {
                errors.append(ConfigDiagnostic(fromFile.keyMark, "stage \"\(name)\": give `\(spec.key)` or `\(fileKey)`, not both (`\(spec.key)` is at \(given.keyMark))"))
            } else if let (_, keyMark, value) = fromFile {
                optionMarks[spec.key] = keyMark
                if let secret = readSecretFile(value, directory: directory, key: "stage \"\(name)\": option `\(fileKey)`", errors: &errors),
                   let v = convert(.scalar(secret, plain: false, value.mark), to: spec.type, directory: directory,
                                   key: "stage \"\(name)\": option `\(spec.key)` (from `\(fileKey)`)", errors: &errors) {
                    values[spec.key] = v
                    optionText[spec.key] = "<secret>"
                }
            } else if let (_, keyMark, value) = pairs.first(where: { $0.key == spec.key }) {
                optionMarks[spec.key] = keyMark
                if let v = convert(value, to: spec.type, directory: directory, key: "stage \"\(name)\": option `\(spec.key)`", errors: &errors) {
                    checkRange(v, of: spec, at: value.mark, stage: name, errors: &errors)
                    values[spec.key] = v
                    if spec.secret {
                        optionText[spec.key] = "<secret>"
                    } else if case .map(let m) = v {
                        optionText[spec.key] = OptionValue.map(KafkaConfig.redacted(m)).description
                    } else {
                        optionText[spec.key] = v.description
                    }
                }
            } else if let d = spec.defaultValue {
                values[spec.key] = d
            } else if spec.required {
                errors.append(ConfigDiagnostic(mark, "stage \"\(name)\": option `\(spec.key)` (\(spec.type)) is required: \(spec.doc)"))
            }
        }
        let options = StageOptions(values)
        var config = StageConfig(name: name, type: type, mark: mark, inputs: inputs, outputs: outputs, options: options,
                                 optionText: optionText, descriptor: descriptor, stage: nil)
        guard errors.count == before, build else { return config }
        do {
            config.stage = try descriptor.make(name, options)
        } catch let e as StageConfigError {
            let at = e.option.flatMap { optionMarks[$0] } ?? mark
            errors.append(ConfigDiagnostic(at, "stage \"\(name)\": \(e)"))
        } catch {
            errors.append(ConfigDiagnostic(mark, "stage \"\(name)\": \(error)"))
        }
        return config
    }

    private static func portEntries(_ node: YAMLNode, stage: String, what: String, errors: inout [ConfigDiagnostic])
        -> [(key: String, keyMark: SourceMark, value: YAMLNode)]
    {
        guard case .mapping(let pairs, _) = node else {
            errors.append(ConfigDiagnostic(node.mark, "stage \"\(stage)\": `\(what)` must map port names to stream names, found \(node.kindName)"))
            return []
        }
        return pairs
    }

    private static func unknownPort(_ port: String, _ mark: SourceMark, stage: String, what: String, known: [PortSpec])
        -> ConfigDiagnostic
    {
        let names = known.map(\.name)
        var message = "stage \"\(stage)\": unknown \(what) port `\(port)`"
        if let guess = suggestion(for: port, among: names) { message += "; did you mean `\(guess)`?" }
        message += names.isEmpty ? " (this stage type has no \(what)s)" : " (\(what) ports: \(names.joined(separator: ", ")))"
        return ConfigDiagnostic(mark, message)
    }

    /// Every consumed stream needs a producer whose kinds overlap the consumer's.
    private static func checkGraph(_ stages: [StageConfig], errors: inout [ConfigDiagnostic]) {
        var producers: [String: [(stage: String, kinds: Set<MessageKind>)]] = [:]
        for stage in stages {
            for (port, binding) in stage.outputs {
                let kinds = stage.descriptor.outputs.first { $0.name == port }?.kinds ?? []
                producers[binding.stream, default: []].append((stage.name, kinds))
            }
        }
        for stage in stages {
            for port in stage.inputs.keys.sorted() {
                let accepted = stage.descriptor.inputs.first { $0.name == port }?.kinds ?? []
                for (stream, mark) in stage.inputs[port]! {
                    guard let makers = producers[stream] else {
                        var message = "stage \"\(stage.name)\": stream \"\(stream)\" (input `\(port)`) has no producer"
                        if let guess = suggestion(for: stream, among: Array(producers.keys)) {
                            message += "; did you mean \"\(guess)\"?"
                        }
                        errors.append(ConfigDiagnostic(mark, message))
                        continue
                    }
                    if makers.allSatisfy({ $0.kinds.isDisjoint(with: accepted) }) {
                        let made = Set(makers.flatMap(\.kinds)).map(\.rawValue).sorted().joined(separator: ", ")
                        let wanted = accepted.map(\.rawValue).sorted().joined(separator: ", ")
                        errors.append(ConfigDiagnostic(mark, "stage \"\(stage.name)\": stream \"\(stream)\" carries \(made) but input `\(port)` takes \(wanted)"))
                    }
                }
            }
        }
        checkSameOptions(stages, errors: &errors)
    }

    /// Flags keys outside `allowed`, with a suggestion.
    static func checkKeys(_ pairs: [(key: String, keyMark: SourceMark, value: YAMLNode)], allowed: [String],
                          context: String, errors: inout [ConfigDiagnostic])
    {
        for (key, mark, _) in pairs where !allowed.contains(key) {
            var message = "unknown \(context) `\(key)`"
            if let guess = suggestion(for: key, among: allowed) { message += "; did you mean `\(guess)`?" }
            else { message += " (expected one of: \(allowed.joined(separator: ", ")))" }
            errors.append(ConfigDiagnostic(mark, message))
        }
    }

    /// Converts a node to a typed option value, or records an error and returns nil.
    static func convert(_ node: YAMLNode, to type: OptionType, directory: String, key: String,
                        errors: inout [ConfigDiagnostic]) -> OptionValue?
    {
        func fail(_ expected: String) -> OptionValue? {
            errors.append(ConfigDiagnostic(node.mark, "\(key): expected \(expected), found \(node.kindName)"))
            return nil
        }
        switch type {
        case .bool:
            guard case .scalar(let s, true, _) = node else { return fail("a boolean (true or false)") }
            switch s {
            case "true", "True", "TRUE": return .bool(true)
            case "false", "False", "FALSE": return .bool(false)
            default: return fail("a boolean (true or false)")
            }
        case .int:
            guard case .scalar(let s, true, _) = node, let i = Int(s) else { return fail("an integer") }
            return .int(i)
        case .double:
            guard case .scalar(let s, true, _) = node, let d = Double(s), d.isFinite,
                  s.allSatisfy({ "0123456789+-.eE".contains($0) }) else { return fail("a number") }
            return .double(d)
        case .string:
            guard case .scalar(let s, let plain, _) = node, !(plain && (s.isEmpty || s == "~" || s == "null")) else {
                return fail("a string")
            }
            return .string(s)
        case .path:
            guard case .scalar(let s, _, _) = node, !s.isEmpty else { return fail("a path") }
            return .string(normalizedPath(s.hasPrefix("/") ? s : directory + "/" + s))
        case .choice(let values):
            guard case .scalar(let s, _, _) = node else { return fail("one of \(values.joined(separator: ", "))") }
            guard values.contains(s) else {
                var message = "\(key): expected one of \(values.joined(separator: ", ")), found \"\(s)\""
                if let guess = suggestion(for: s, among: values) { message += "; did you mean \"\(guess)\"?" }
                errors.append(ConfigDiagnostic(node.mark, message))
                return nil
            }
            return .string(s)
        case .intList, .doubleList, .stringList:
            guard case .sequence(let items, _) = node else { return fail("a list") }
            let element: OptionType = type == .intList ? .int : type == .doubleList ? .double : .string
            var values: [OptionValue] = []
            var ok = true
            for item in items {
                if let v = convert(item, to: element, directory: directory, key: key, errors: &errors) { values.append(v) }
                else { ok = false }
            }
            return ok ? .list(values) : nil
        case .stringMap:
            guard case .mapping(let pairs, _) = node else { return fail("a mapping") }
            var map: [String: String] = [:]
            var fromFiles: [String: SourceMark] = [:]
            for (k, keyMark, v) in pairs {
                // `<secret key>_file: PATH` (e.g. sasl.password_file): the secret is the file's content.
                if k.hasSuffix(secretFileSuffix), KafkaConfig.isSecret(String(k.dropLast(secretFileSuffix.count))) {
                    let base = String(k.dropLast(secretFileSuffix.count))
                    if let secret = readSecretFile(v, directory: directory, key: "\(key).\(k)", errors: &errors) {
                        map[base] = secret
                        fromFiles[base] = keyMark
                    }
                    continue
                }
                guard case .scalar(let s, _, _) = v else {
                    errors.append(ConfigDiagnostic(v.mark, "\(key).\(k): expected a scalar, found \(v.kindName)"))
                    continue
                }
                map[k] = s
            }
            for (base, mark) in fromFiles.sorted(by: { $0.key < $1.key }) where pairs.contains(where: { $0.key == base }) {
                errors.append(ConfigDiagnostic(mark, "\(key): give `\(base)` or `\(base)\(secretFileSuffix)`, not both"))
            }
            return .map(map)
        }
    }

    static func directoryOf(_ file: String) -> String {
        let absolute: String
        if file.hasPrefix("/") {
            absolute = file
        } else {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
            let cwd = getcwd(&buffer, buffer.count) != nil ? buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) } : "."
            absolute = cwd + "/" + file
        }
        guard let slash = absolute.lastIndex(of: "/") else { return "." }
        return slash == absolute.startIndex ? "/" : String(absolute[..<slash])
    }
}

/// The closest candidate to `word` by edit distance, if close enough to be a likely typo.
public func suggestion(for word: String, among candidates: [String]) -> String? {
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = Swift.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
    let w = Array(word.lowercased())
    let scored = candidates.map { ($0, distance(w, Array($0.lowercased()))) }
    guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
    return best.1 <= Swift.max(2, w.count / 3) && best.1 < w.count ? best.0 : nil
}

/// `path` without `.` components, and with each `name/..` pair removed (purely lexical).
func normalizedPath(_ path: String) -> String {
    var parts: [Substring] = []
    for part in path.split(separator: "/", omittingEmptySubsequences: true) {
        if part == "." { continue }
        if part == "..", let last = parts.last, last != ".." { parts.removeLast(); continue }
        if part == "..", parts.isEmpty, path.hasPrefix("/") { continue }  // "/.." is "/"
        parts.append(part)
    }
    return (path.hasPrefix("/") ? "/" : "") + parts.joined(separator: "/")
}
