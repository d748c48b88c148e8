// The `tweetoscoped` command line: run (default), validate, plugins, version.
import ArgumentParser
import Glibc
import TweetoscopeCore
import TweetoscopeRuntime

/// Exit status for an invalid configuration or plugin set (sysexits EX_CONFIG); systemd's unit
/// does not restart on it.
let exitConfigError: Int32 = 78

struct ConfigOptions: ParsableArguments {
    @Option(name: .shortAndLong, help: "Configuration file.")
    var config = "/etc/tweetoscope.yaml"

    @Option(help: "Plugin directory (overrides the configuration's plugin_dir).")
    var pluginDir: String?
}

@main
struct Tweetoscoped: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tweetoscoped",
        abstract: "Predicts in real time which tweets will go viral: a Tweetoscope pipeline daemon.",
        discussion: "The pipeline (sources, collector, estimator, predictor, learner, sinks) is described in a YAML file, /etc/tweetoscope.yaml by default.",
        version: tweetoscopeVersion,
        subcommands: [Run.self, Validate.self, Plugins.self, Top.self, Version.self],
        defaultSubcommand: Run.self)
}

/// Loads the configuration, printing every error and exiting with 78 when it is invalid.
func loadOrExit(_ options: ConfigOptions) throws -> PipelineConfig {
    do {
        return try ConfigLoader.load(path: options.config, pluginDirectory: options.pluginDir).0
    } catch let errors as ConfigErrors {
        for d in errors.diagnostics { writeStandardError("\(d)\n") }
        writeStandardError("tweetoscoped: \(options.config): \(errors.diagnostics.count) error(s)\n")
        throw ExitCode(exitConfigError)
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the pipeline (the default command).")

    @OptionGroup var options: ConfigOptions

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical); overrides log_level.")
    var logLevel: String?

    func run() async throws {
        // The metrics backend must be installed before the stages are built (validation builds
        // them): a quick look at the daemon settings first.
        if let text = try? ConfigLoader.read(options.config) {
            var ignored: [ConfigDiagnostic] = []
            if ConfigLoader.parseSettings(text, file: options.config, errors: &ignored).0.metrics != nil {
                TweetoscopeMetrics.bootstrap()
            }
        }
        let config = try loadOrExit(options)
        var level = config.settings.logLevel
        if let logLevel {
            guard let l = Logger.Level(rawValue: logLevel) else {
                throw ValidationError("unknown log level \(logLevel)")
            }
            level = l
        }
        let chosen = level
        let journal = standardErrorIsJournal()
        LoggingSystem.bootstrap { label in
            journal ? JournaldLogHandler(label: label, level: chosen) as any LogHandler
                : StderrLogHandler(label: label, level: chosen)
        }
        let logger = Logger(label: "tweetoscoped")
        logger.info("tweetoscoped \(tweetoscopeVersion) starting", metadata: ["config": .string(options.config)])
        var metrics: RuntimeMetrics?
        var server: MetricsServer?
        if let settings = config.settings.metrics {
            do {
                (metrics, server) = try await Daemon.startMetrics(settings, logger: logger)
            } catch {
                logger.critical("cannot serve metrics on \(settings.listen): \(error)")
                throw ExitCode.failure
            }
        }
        let daemon = Daemon(configPath: options.config, pluginDirectory: options.pluginDir, logger: logger,
                            metrics: metrics, metricsSettings: config.settings.metrics)
        let summary = await daemon.run(config)
        await server?.stop()
        print(summary.table())
        if !summary.succeeded { throw ExitCode.failure }
    }
}

struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a configuration and its plugins; print every error and start nothing.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try loadOrExit(options)
        print("\(options.config): valid (\(config.stages.count) stage\(config.stages.count == 1 ? "" : "s"): \(config.stages.map(\.name).joined(separator: ", ")))")
    }
}

struct Plugins: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the stage types the plugins provide, with their ports and options.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        var directory = options.pluginDir
        if directory == nil, let text = try? ConfigLoader.read(options.config) {
            var ignored: [ConfigDiagnostic] = []
            directory = ConfigLoader.parseSettings(text, file: options.config, errors: &ignored).0.pluginDirectory
        }
        let dir = directory ?? PluginLoader.defaultDirectory()
        let registry = StageRegistry()
        var failed = false
        do {
            try registry.loadPlugins(directory: dir, names: nil)
        } catch let errors as ConfigErrors {
            // List what did load; the broken plugins are named on stderr and set the exit status.
            for d in errors.diagnostics { writeStandardError("\(d)\n") }
            failed = true
        }
        print("plugin directory: \(dir)")
        for type in registry.types {
            let (d, file) = registry.lookup(type)!
            print("\n\(type) — \(d.summary)\n  plugin: \(file)")
            for (title, ports) in [("input", d.inputs), ("output", d.outputs)] {
                for p in ports {
                    let kinds = p.kinds.map(\.rawValue).sorted().joined(separator: "|")
                    let flags = [p.required ? "required" : "optional", p.multiple ? "list" : nil].compactMap { $0 }
                    print("  \(title) \(p.name) [\(kinds)] (\(flags.joined(separator: ", "))): \(p.doc)")
                }
            }
            for o in d.options {
                let value = o.required ? "required" : o.defaultValue.map { "default \($0.description.isEmpty ? "\"\"" : $0.description)" } ?? "optional"
                print("  option \(o.key): \(o.type), \(value) — \(o.doc)")
            }
        }
        if failed { throw ExitCode(exitConfigError) }
    }
}

struct Top: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the cascades with the largest forecast and the running median ARE per window.",
        discussion: """
            Reads a running daemon's output: JSON-lines files written by the file sink (followed like \
            tail -f; a truncated file is read again) or Kafka topics (kafka://host:port/topic, read \
            from the beginning). Each source may carry alerts, stats and parameters (the latter give \
            the observed size n_obs); other lines are ignored. A cascade's forecast is its latest \
            alert (largest T_obs); a cascade with a stat has ended and is hidden unless --all.
            """)

    @Option(name: .customLong("alerts"), help: "Alerts: a JSON-lines file or kafka://host:port/topic (repeatable).")
    var alerts: [String] = []

    @Option(name: .customLong("stats"), help: "Stats (ARE of ended cascades), same forms (repeatable).")
    var stats: [String] = []

    @Option(name: .customLong("properties"),
            help: "Parameters (cascade_properties) for the observed sizes n_obs, same forms (repeatable).")
    var properties: [String] = []

    @Option(name: .short, help: "Number of cascades shown.")
    var k = 10

    @Option(help: "Seconds between refreshes.")
    var interval = 2.0

    @Flag(help: "Print one table (after reading every source to its end) and exit.")
    var once = false

    @Flag(help: "Include ended cascades (with the ARE of their forecast).")
    var all = false

    @Option(help: "Table width in columns (default: the terminal's, else 80).")
    var width: Int?

    func validate() throws {
        guard !(alerts + stats + properties).isEmpty else {
            throw ValidationError("give at least one source: --alerts, --stats or --properties")
        }
        guard k >= 1 else { throw ValidationError("-k must be >= 1") }
        guard interval > 0 else { throw ValidationError("--interval must be > 0") }
    }

    func run() async throws {
        var options = TopCommand.Options(sources: try (alerts + stats + properties).map(TopSource.init))
        options.k = k
        options.interval = interval
        options.once = once
        options.includeEnded = all
        options.width = width
        do {
            try await TopCommand.run(options)
        } catch let error as TopError {
            writeStandardError("tweetoscoped top: \(error)\n")
            throw ExitCode.failure
        }
    }
}

struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the daemon's version and the libraries it runs with.")

    func run() {
        print("tweetoscoped \(tweetoscopeVersion) (plugin ABI \(PluginABI.version))")
        print("librdkafka \(librdkafkaVersion)")
        print("libyaml \(libyamlVersion)")
        print("libsystemd \(libsystemdVersion)")
    }
}
