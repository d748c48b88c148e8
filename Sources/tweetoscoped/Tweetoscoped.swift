// The `tweetoscoped` command line: run (default), validate, graph, tap, plugins, top, version.
import ArgumentParser
import CEarlyMalloc
import CEarlySignals
import Glibc
import TweetoscopeCore
import TweetoscopeRuntime

/// Exit status for an invalid configuration or plugin set (sysexits EX_CONFIG); systemd's unit
/// does not restart on it.
let exitConfigError: Int32 = 78

struct ConfigOptions: ParsableArguments {
    @Option(name: .shortAndLong,
            help: ArgumentHelp("Configuration file, or directory of *.yaml files read in lexical order (repeatable; default: /etc/tweetoscope.yaml and /etc/tweetoscope.d/*.yaml).",
                               valueName: "path"))
    var config: [String] = []

    @Option(help: "Plugin directory (overrides the configuration's plugin_dir).")
    var pluginDir: String?

    var sources: ConfigSources { ConfigSources(paths: config) }
}

@main
struct Tweetoscoped: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tweetoscoped",
        abstract: "Predicts in real time which tweets will go viral: a Tweetoscope pipeline daemon.",
        discussion: "The pipeline (sources, collector, estimator, predictor, learner, sinks) is described in a YAML file, /etc/tweetoscope.yaml by default.",
        version: tweetoscopeVersion,
        subcommands: [Run.self, Validate.self, Graph.self, Tap.self, Plugins.self, Top.self, Train.self, Evaluate.self, Version.self],
        defaultSubcommand: Run.self)

    /// SIGHUP, SIGINT and SIGTERM are blocked before this runs (CEarlySignals); `run` handles
    /// them once its services start, the other commands get the default actions back.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if !(command is Run) { tweetoscope_unblock_stop_signals() }
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            if !(error is ExitCode) { tweetoscope_unblock_stop_signals() }
            exit(withError: error)
        }
    }
}

/// Loads the configuration, printing every error and exiting with 78 when it is invalid.
func loadOrExit(_ options: ConfigOptions) throws -> PipelineConfig {
    do {
        return try ConfigLoader.load(sources: options.sources, pluginDirectory: options.pluginDir).0
    } catch let errors as ConfigErrors {
        for d in errors.diagnostics { writeStandardError("\(d)\n") }
        writeStandardError("tweetoscoped: \(options.sources): \(errors.diagnostics.count) error(s)\n")
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
        if ConfigLoader.peekSettings(options.sources)?.metrics != nil {
            TweetoscopeMetrics.bootstrap()
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
        let format = config.settings.logFormat
        LoggingSystem.bootstrap { label in
            if format == .json { return JSONLogHandler(label: label, level: chosen) }
            return journal ? JournaldLogHandler(label: label, level: chosen) as any LogHandler
                : StderrLogHandler(label: label, level: chosen)
        }
        let logger = Logger(label: "tweetoscoped")
        logger.info("tweetoscoped \(tweetoscopeVersion) starting", metadata: [
            "config": .string(config.file),
            // CEarlyMalloc's options, or the operator's GLIBC_TUNABLES.
            "malloc": .string(tweetoscope_malloc_tuned() != 0 ? "one arena, mmap above 4 MiB, trim above 32 MiB" : "GLIBC_TUNABLES"),
        ])
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
        let daemon = Daemon(sources: options.sources, pluginDirectory: options.pluginDir, logger: logger,
                            metrics: metrics, metricsSettings: config.settings.metrics)
        let summary = await daemon.run(config, metricsServer: server) {
            let early = tweetoscope_redeliver_early_signals()
            if early > 0 { logger.notice("\(early) signal(s) received during start-up are handled now") }
        }
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
        print("\(config.file): valid (\(config.stages.count) stage\(config.stages.count == 1 ? "" : "s"): \(config.stages.map(\.name).joined(separator: ", ")))")
    }
}

struct Plugins: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the stage types the plugins provide, with their ports and options.")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        var directory = options.pluginDir
        if directory == nil {
            directory = ConfigLoader.peekSettings(options.sources)?.pluginDirectory
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

struct Graph: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the pipeline as a Graphviz DOT digraph (stages, streams, Kafka topics).",
        discussion: "Validates the configuration first. Render it with: tweetoscoped graph | dot -Tsvg > pipeline.svg")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try loadOrExit(options)
        print(PipelineGraph.dot(config), terminator: "")
    }
}

struct Tap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the messages flowing on streams of a running daemon, as JSON lines.",
        discussion: """
            Read-only. The daemon must run with `tap: true` in its `metrics` section (a loopback \
            listen address); the address is read from the configuration unless --address is given. \
            Each line is {"stream": NAME, "message": MESSAGE} (MESSAGE in the wire format). A tap \
            that reads too slowly never slows the pipeline: the daemon drops messages for it and \
            says how many (on stderr here). Stops after --limit messages, or when the daemon stops.
            """)

    @Argument(help: "Stream names (see `tweetoscoped graph`).")
    var streams: [String]

    @Option(help: "Stop after this many messages (0: no limit).")
    var limit = 0

    @Option(help: "The metrics listener, host:port (default: the configuration's metrics.listen).")
    var address: String?

    @OptionGroup var options: ConfigOptions

    func validate() throws {
        guard !streams.isEmpty else { throw ValidationError("give at least one stream name") }
        guard limit >= 0 else { throw ValidationError("--limit must be >= 0") }
    }

    func run() async throws {
        let host: String
        let port: Int
        if let address {
            guard let parsed = MetricsSettings.parseListen(address) else {
                throw ValidationError("--address: expected host:port, found \(address)")
            }
            (host, port) = parsed
        } else {
            guard let settings = ConfigLoader.peekSettings(options.sources)?.metrics else {
                writeStandardError("tweetoscoped tap: \(options.sources) has no `metrics` section (with `tap: true`); pass --address host:port\n")
                throw ExitCode.failure
            }
            (host, port) = (settings.host == "0.0.0.0" ? "127.0.0.1" : settings.host, settings.port)
        }
        signal(SIGPIPE, SIG_IGN)
        do {
            var count = 0
            let dropped = try TapClient.run(host: host, port: port, streams: streams, limit: limit, line: { line in
                print(line)
                fflush(nil)
                count += 1
            }, dropped: { n in
                writeStandardError("tweetoscoped tap: \(n) messages dropped (this tap read too slowly; the pipeline did not wait)\n")
            })
            writeStandardError("tweetoscoped tap: \(count) messages\(dropped > 0 ? ", \(dropped) dropped" : "")\n")
        } catch let error as TapError {
            writeStandardError("tweetoscoped tap: \(error)\n")
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
