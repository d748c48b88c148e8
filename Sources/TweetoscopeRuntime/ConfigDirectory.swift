// Configuration made of several files: `--config` given several times, each a file or a directory
// of `*.yaml` drop-ins (lexical order), by default /etc/tweetoscope.yaml plus /etc/tweetoscope.d/.
// The documents are interpolated (environment), then merged: stages by name (a stage defined in
// two places is an error naming both), daemon settings by key (set at most once).
import Glibc
import TweetoscopeCore

/// The configuration files of a daemon, as given on the command line.
public struct ConfigSources: Sendable, Equatable, CustomStringConvertible {
    /// The packaged configuration file.
    public static let defaultFile = "/etc/tweetoscope.yaml"
    /// The drop-in directory read after ``defaultFile`` when no `--config` is given.
    public static let defaultDirectory = "/etc/tweetoscope.d"

    /// Files and directories as given (`--config`, in order); empty for the default.
    public var paths: [String]

    public init(paths: [String] = []) {
        self.paths = paths
    }

    /// One file.
    public init(file: String) {
        self.paths = [file]
    }

    public var isDefault: Bool { paths.isEmpty }

    public var description: String {
        isDefault ? "\(Self.defaultFile) + \(Self.defaultDirectory)/*.yaml" : paths.joined(separator: " + ")
    }

    /// The files to read, in order: each file given, and each directory's `*.yaml` files in
    /// lexical (byte) order, hidden files excluded. Read again at every reload, so a drop-in
    /// added since the start is seen.
    ///
    /// - Throws: `ConfigErrors` when a path given does not exist or cannot be listed; the default
    ///   drop-in directory may be absent. With the default sources, a missing
    ///   /etc/tweetoscope.yaml is an error that suggests `--config` (e.g. on a development checkout).
    public func files() throws -> [String] {
        var result: [String] = []
        var problems: [ConfigDiagnostic] = []
        let given = isDefault ? [Self.defaultFile, Self.defaultDirectory] : paths
        for (index, path) in given.enumerated() {
            var info = stat()
            guard stat(path, &info) == 0 else {
                let reason = String(cString: strerror(errno))
                if isDefault && index == 1 { continue }  // no drop-in directory
                var message = "cannot read \(path): \(reason)"
                if isDefault {
                    message += "; pass --config FILE (on a development checkout: --config etc/tweetoscope.yaml)"
                }
                problems.append(ConfigDiagnostic(nil, message))
                continue
            }
            if (info.st_mode & S_IFMT) == S_IFDIR {
                guard let dir = opendir(path) else {
                    problems.append(ConfigDiagnostic(nil, "cannot list \(path): \(String(cString: strerror(errno)))"))
                    continue
                }
                var names: [String] = []
                while let entry = readdir(dir) {
                    let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                        String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
                    }
                    if name.hasPrefix(".") || !name.hasSuffix(".yaml") { continue }
                    names.append(name)
                }
                closedir(dir)
                // Lexical order of the UTF-8 bytes, like ls with LC_ALL=C (not locale dependent).
                names.sort { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
                let prefix = path.hasSuffix("/") ? path : path + "/"
                result += names.map { prefix + $0 }
            } else {
                result.append(path)
            }
        }
        guard problems.isEmpty else { throw ConfigErrors(problems) }
        if result.isEmpty {
            throw ConfigErrors([ConfigDiagnostic(nil, "no configuration file in \(description) (a directory holds *.yaml files)")])
        }
        return result
    }
}

/// The merged documents of a configuration.
public struct ConfigDocument: Sendable {
    /// The files read, in order.
    public var files: [String]
    /// The merged root mapping (nil when no file gave a usable document).
    public var root: YAMLNode?
    /// Where interpolated values came from, by the position of their scalar.
    public var notes: [SourceMark: InterpolationNote]
}

extension ConfigLoader {
    /// Reads, interpolates and merges the files of `sources`.
    ///
    /// Merging: the top-level mappings are concatenated; `stages` mappings are merged by stage
    /// name, and a stage name defined twice (in one file or two) is an error at the second
    /// definition naming the first; any other top-level key set in two files is an error too.
    /// A file with an empty document is allowed among several (a drop-in with comments only).
    ///
    /// - Parameter environment: the variables for `${VAR}` references (the process's by default).
    /// - Throws: `ConfigErrors` only when the file list cannot be made; read, syntax and
    ///   interpolation errors go to `errors`.
    public static func readDocument(_ sources: ConfigSources, environment: [String: String]? = nil,
                                    errors: inout [ConfigDiagnostic]) throws -> ConfigDocument {
        let files = try sources.files()
        let interpolator = environment.map(Interpolator.init(environment:)) ?? Interpolator.process()
        var notes: [SourceMark: InterpolationNote] = [:]
        var top: [(key: String, keyMark: SourceMark, value: YAMLNode)] = []
        var stageEntries: [(key: String, keyMark: SourceMark, value: YAMLNode)] = []
        var stagesMark: SourceMark?
        var stagesProblem = false
        var rootMark: SourceMark?
        for file in files {
            let text: String
            do { text = try read(file) } catch let e as ConfigErrors { errors += e.diagnostics; continue }
            let parsed: YAMLNode?
            do {
                parsed = try parseYAML(text, file: file)
            } catch let e as YAMLSyntaxError {
                errors.append(ConfigDiagnostic(e.mark, e.message))
                continue
            } catch {
                errors.append(ConfigDiagnostic(nil, "\(file): \(error)"))
                continue
            }
            guard let parsed else {
                if files.count == 1 {
                    errors.append(ConfigDiagnostic(SourceMark(file: file, line: 1, column: 1), "empty configuration: expected a mapping with `stages`"))
                }
                continue
            }
            errors += duplicateKeyDiagnostics(parsed)  // at every level, within the file (YAMLChecks.swift)
            let root = interpolator.interpolate(parsed, errors: &errors, notes: &notes)
            guard case .mapping(let pairs, let mark) = root else {
                errors.append(ConfigDiagnostic(root.mark, "expected a mapping at the top level, found \(root.kindName)"))
                continue
            }
            if rootMark == nil { rootMark = mark }
            for pair in pairs {
                if pair.key == "stages" {
                    if stagesMark == nil { stagesMark = pair.keyMark }
                    guard case .mapping(let entries, _) = pair.value else {
                        errors.append(ConfigDiagnostic(pair.value.mark, "stages: expected a mapping of stage names to stages, found \(pair.value.kindName)"))
                        stagesProblem = true
                        continue
                    }
                    for entry in entries {
                        if let first = stageEntries.first(where: { $0.key == entry.key }) {
                            // Twice in one mapping of one file: duplicateKeyDiagnostics said so.
                            if first.keyMark.file == entry.keyMark.file && pairs.filter({ $0.key == "stages" }).count == 1 { continue }
                            errors.append(ConfigDiagnostic(entry.keyMark, "stage \"\(entry.key)\" is defined twice: first at \(first.keyMark), again here"))
                            continue
                        }
                        stageEntries.append(entry)
                    }
                } else if let first = top.first(where: { $0.key == pair.key }), first.keyMark.file != pair.keyMark.file {
                    errors.append(ConfigDiagnostic(pair.keyMark, "`\(pair.key)` is set in two files: first at \(first.keyMark), again here (set it once)"))
                } else {
                    top.append(pair)
                }
            }
        }
        guard let rootMark else { return ConfigDocument(files: files, root: nil, notes: notes) }
        if let stagesMark {
            // A `stages` that was not a mapping is reported above; an empty merged mapping is
            // left for validateStages ("no stage configured").
            if !stagesProblem || !stageEntries.isEmpty {
                top.append(("stages", stagesMark, .mapping(stageEntries, stagesMark)))
            } else {
                top.append(("stages", stagesMark, .mapping([], stagesMark)))
            }
        }
        return ConfigDocument(files: files, root: .mapping(top, rootMark), notes: notes)
    }

    /// `diagnostics` with the source of interpolated values appended to the errors at (or on
    /// the line of) an interpolated scalar: `... (value interpolated: ${KAFKA_BROKERS} from the
    /// environment)`. The values themselves are never added (they may be secrets).
    public static func annotate(_ diagnostics: [ConfigDiagnostic], notes: [SourceMark: InterpolationNote]) -> [ConfigDiagnostic] {
        guard !notes.isEmpty else { return diagnostics }
        var byLine: [String: InterpolationNote] = [:]
        for (mark, note) in notes { byLine["\(mark.file):\(mark.line)"] = note }
        return diagnostics.map { d in
            guard let mark = d.mark, let note = notes[mark] ?? byLine["\(mark.file):\(mark.line)"] else { return d }
            return ConfigDiagnostic(mark, d.message + " (\(note.description))")
        }
    }

    /// The daemon settings of `sources`, ignoring errors (what `run` needs before validation:
    /// whether metrics are on, the plugin directory).
    public static func peekSettings(_ sources: ConfigSources) -> DaemonSettings? {
        var ignored: [ConfigDiagnostic] = []
        guard let document = try? readDocument(sources, errors: &ignored), let root = document.root else { return nil }
        return parseSettings(root: root, errors: &ignored)
    }

    /// Loads, checks and builds the configuration of `sources` with the plugins it names.
    ///
    /// - Parameters:
    ///   - pluginDirectory: overrides the configuration's `plugin_dir` (command line).
    ///   - environment: the variables for `${VAR}` (the process's by default).
    ///   - buildStages: false checks keys, types, ranges and the stream graph without calling the
    ///     stages' factories (no stage is built, `StageConfig.stage` stays nil, and what only a
    ///     factory checks — a data file that must exist, a model file — is not checked): for a
    ///     command that only reads the options (`tweetoscoped evaluate --config`).
    /// - Throws: `ConfigErrors` with every problem found (files, syntax, interpolation, keys,
    ///   types, plugins, graph), errors on interpolated values naming their source.
    public static func load(sources: ConfigSources, pluginDirectory: String? = nil,
                            environment: [String: String]? = nil,
                            buildStages: Bool = true) throws -> (PipelineConfig, StageRegistry) {
        var errors: [ConfigDiagnostic] = []
        let document = try readDocument(sources, environment: environment, errors: &errors)
        // Without a document there is no plugin list to trust: report the syntax errors alone.
        guard let root = document.root else {
            if errors.isEmpty { errors.append(ConfigDiagnostic(nil, "empty configuration in \(sources): expected a mapping with `stages`")) }
            throw ConfigErrors(annotate(errors, notes: document.notes))
        }
        var settings = parseSettings(root: root, errors: &errors)
        if let pluginDirectory { settings.pluginDirectory = pluginDirectory }
        let registry = StageRegistry()
        do {
            try registry.loadPlugins(directory: settings.pluginDirectory ?? PluginLoader.defaultDirectory(),
                                     names: settings.plugins)
        } catch let e as ConfigErrors {
            errors += e.diagnostics
        }
        var stages: [StageConfig] = []
        if registry.isEmpty == false {
            stages = validateStages(root: root, registry: registry, errors: &errors, buildStages: buildStages)
        }
        guard errors.isEmpty else { throw ConfigErrors(annotate(errors, notes: document.notes)) }
        let file = document.files.joined(separator: ", ")
        return (PipelineConfig(file: file, settings: settings, stages: stages), registry)
    }
}

extension ConfigLoader {
    /// Checks and builds a configuration held in memory (a command that assembles pipelines
    /// itself, such as `tweetoscoped evaluate`) against an already loaded `registry`, which may
    /// hold stage types registered in-process besides the plugins'.
    ///
    /// - Parameters:
    ///   - text: the YAML document; its `plugin_dir` and `plugins` keys are read but no plugin is
    ///     loaded (the registry is used as given).
    ///   - file: the name its diagnostics carry, and the directory relative paths are resolved from.
    /// - Throws: `ConfigErrors` with every problem found (syntax, keys, types, option values, graph).
    public static func load(text: String, file: String, registry: StageRegistry) throws -> PipelineConfig {
        var errors: [ConfigDiagnostic] = []
        guard let root = try parseYAML(text, file: file) else {
            throw ConfigErrors([ConfigDiagnostic(nil, "\(file): empty configuration")])
        }
        errors += duplicateKeyDiagnostics(root)
        let settings = parseSettings(root: root, errors: &errors)
        let stages = validateStages(root: root, registry: registry, errors: &errors)
        guard errors.isEmpty else { throw ConfigErrors(errors) }
        return PipelineConfig(file: file, settings: settings, stages: stages)
    }
}
