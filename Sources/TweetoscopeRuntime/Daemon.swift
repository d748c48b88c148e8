// The daemon's life cycle: run the pipeline, reload it on SIGHUP (keeping the state of stages
// whose settings did not change), stop it gracefully on SIGTERM/SIGINT, and keep systemd informed.
import Dispatch
import Glibc
import Synchronization
import TweetoscopeCore

extension StageConfig {
    /// What identifies a stage's settings: a reload keeps the running stage (and its state) when
    /// this did not change.
    var fingerprint: String {
        let ins = inputs.keys.sorted().map { "\($0)=\(inputs[$0]!.map(\.stream).joined(separator: ","))" }
        let outs = outputs.keys.sorted().map { "\($0)=\(outputs[$0]!.stream)" }
        let opts = options.values.keys.sorted().map { "\($0)=\(options.values[$0]!)" }
        return ([type] + ins + ["->"] + outs + ["|"] + opts).joined(separator: ";")
    }
}

/// Runs a pipeline configuration for the lifetime of the process.
public final class Daemon: Sendable {
    private struct State {
        var stop = StopSignal()
        var pipeline: Pipeline?
        var pending: PipelineConfig?
        var shuttingDown = false
    }

    private let configPath: String
    private let pluginDirectory: String?
    private let logger: Logger
    private let notifier = SystemdNotifier()
    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "tweetoscoped.signals")
    private let metrics: RuntimeMetrics?
    private let metricsSettings: MetricsSettings?

    /// - Parameters:
    ///   - configPath: the configuration file, re-read on SIGHUP.
    ///   - pluginDirectory: the command line's plugin directory override, if any.
    ///   - metrics: the metrics exported by the endpoint (``startMetrics(_:logger:)``), if on.
    ///   - metricsSettings: the `metrics` section the endpoint was started with.
    public init(configPath: String, pluginDirectory: String?, logger: Logger,
                metrics: RuntimeMetrics? = nil, metricsSettings: MetricsSettings? = nil) {
        self.configPath = configPath
        self.pluginDirectory = pluginDirectory
        self.logger = logger
        self.metrics = metrics
        self.metricsSettings = metricsSettings
    }

    /// Starts the metrics endpoint of `settings`: installs the backend and binds the address.
    /// - Throws: the bind error.
    public static func startMetrics(_ settings: MetricsSettings, logger: Logger) async throws -> (RuntimeMetrics, MetricsServer) {
        let metrics = RuntimeMetrics(topK: settings.topK)
        let server = try await MetricsServer.start(host: settings.host, port: settings.port)
        logger.info("metrics endpoint listening", metadata: ["address": .string(server.address),
                                                            "url": .string("http://\(server.address)/metrics")])
        return (metrics, server)
    }

    /// Runs `initial` (already validated) and its reloaded successors until the sources end or
    /// a stop signal arrives. Returns the summary of the whole run.
    public func run(_ initial: PipelineConfig) async -> RunSummary {
        let signals = installSignalHandlers()
        defer { signals.forEach { $0.cancel() } }
        let background = startBackgroundTasks()
        defer { background.forEach { $0.cancel() } }

        var config = initial
        var previous: [String: StageConfig] = [:]
        var summary: RunSummary?
        var generation = 0
        while true {
            generation += 1
            var kept: [String] = []
            config.stages = config.stages.map { stage in
                guard let old = previous[stage.name], old.fingerprint == stage.fingerprint else { return stage }
                kept.append(stage.name)
                var reused = stage
                reused.stage = old.stage
                return reused
            }
            let pipeline = Pipeline(config: config, logger: logger, metrics: metrics)
            let stop: StopSignal = state.withLock { s in
                s.stop = StopSignal()
                if s.shuttingDown { s.stop.request(.shutdown) }
                s.pipeline = pipeline
                return s.stop
            }
            if generation > 1 {
                let rebuilt = config.stages.map(\.name).filter { !kept.contains($0) }
                logger.notice("configuration reloaded", metadata: [
                    "kept": .string(kept.joined(separator: ",")), "rebuilt": .string(rebuilt.joined(separator: ",")),
                ])
            }
            let notifier = self.notifier
            let stageCount = config.stages.count
            let result = await pipeline.run(stop: stop) {
                notifier.ready(status: "running \(stageCount) stages")
            }
            summary = summary.map { $0.merged(with: result) } ?? result
            let next: PipelineConfig? = state.withLock { s in
                defer { s.pending = nil }
                return stop.reason == .reload && !s.shuttingDown ? s.pending : nil
            }
            guard let next else { break }
            previous = Dictionary(config.stages.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            config = next
        }
        await linger()
        notifier.stopping()
        return summary!
    }

    /// Keeps the process (and its metrics endpoint) up `metrics.linger` seconds after the
    /// pipeline has ended, so that a last scrape gets the final figures; a stop signal ends it.
    private func linger() async {
        guard metrics != nil, let seconds = metricsSettings?.linger, seconds > 0,
              !state.withLock({ $0.shuttingDown }) else { return }
        logger.notice("pipeline ended: serving metrics for \(seconds) s more (SIGTERM to exit now)")
        notifier.status("pipeline ended; serving metrics for \(seconds) s")
        let end = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
        while ContinuousClock.now < end, !state.withLock({ $0.shuttingDown }) {
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    private func installSignalHandlers() -> [any DispatchSourceSignal] {
        // SIGHUP's default action kills the process: ignore the signals before listening to them.
        [SIGHUP, SIGINT, SIGTERM].map { (number: Int32) -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { [self] in
                if number == SIGHUP { reload() } else { shutdown(signal: number) }
            }
            source.resume()
            return source
        }
    }

    private func shutdown(signal number: Int32) {
        let again = state.withLock { s in
            defer { s.shuttingDown = true }
            return s.shuttingDown
        }
        if again {
            logger.warning("second stop signal: exiting now")
            exit(128 + number)
        }
        logger.notice("signal \(number): stopping (sources stop, in-flight work drains, sinks flush); send again to exit at once")
        notifier.stopping()
        state.withLock { $0.stop.request(.shutdown) }
    }

    /// Re-reads and validates the configuration; a valid one replaces the running pipeline, an
    /// invalid one is logged (every error) and the running pipeline goes on unchanged.
    private func reload() {
        notifier.reloading()
        logger.notice("SIGHUP: reloading \(configPath)")
        do {
            let (config, _) = try ConfigLoader.load(path: configPath, pluginDirectory: pluginDirectory)
            if config.settings.metrics != metricsSettings {
                logger.warning("reload: the `metrics` section changed; it applies at the next start (the endpoint keeps \(metricsSettings?.listen ?? "off"))")
            }
            metrics?.reloaded(applied: true)
            state.withLock { s in
                s.pending = config
                s.stop.request(.reload)
            }
        } catch let errors as ConfigErrors {
            metrics?.reloaded(applied: false)
            for d in errors.diagnostics { logger.error("reload rejected: \(d)") }
            logger.error("reload rejected: \(errors.diagnostics.count) error(s); the previous configuration keeps running")
            notifier.ready(status: "reload failed (\(errors.diagnostics.count) errors): running the previous configuration")
        } catch {
            metrics?.reloaded(applied: false)
            logger.error("reload rejected: \(error)")
            notifier.ready(status: "reload failed: running the previous configuration")
        }
    }

    /// The systemd status line (every 5 s) and watchdog pings (at half the interval, only while
    /// no stage has failed).
    private func startBackgroundTasks() -> [Task<Void, Never>] {
        var tasks: [Task<Void, Never>] = []
        let notifier = self.notifier
        guard notifier.isActive else { return tasks }
        tasks.append(Task { [self] in
            var lastEvents = 0
            var last = ContinuousClock.now
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(5))
                guard let status = state.withLock({ $0.pipeline?.status }) else { continue }
                let now = ContinuousClock.now
                let elapsed = Double((now - last).components.seconds) + Double((now - last).components.attoseconds) / 1e18
                let rate = elapsed > 0 ? Double(status.events - lastEvents) / elapsed : 0
                (lastEvents, last) = (status.events, now)
                var line = "\(status.stages) stages, \(Int(rate)) tweets/s, \(status.events) tweets, \(status.openCascades) open cascades"
                if !status.failedStages.isEmpty { line += ", FAILED: \(status.failedStages.joined(separator: ","))" }
                if !status.troubles.isEmpty { line += "; " + status.troubles.joined(separator: "; ") }
                if let problem = LastProblem.shared.value { line += ", last error: \(problem.prefix(120))" }
                notifier.status(line)
            }
        })
        if let interval = notifier.watchdogInterval {
            tasks.append(Task { [self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: interval / 2)
                    let healthy = state.withLock { $0.pipeline?.status.failedStages.isEmpty ?? true }
                    if healthy { notifier.watchdogPing() }
                }
            })
        }
        return tasks
    }
}
