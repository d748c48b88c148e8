// The daemon's life cycle: a swift-service-lifecycle ServiceGroup of the pipeline runner, the
// signal handler, the systemd reporter and the metrics endpoint (Services.swift). The runner runs
// the pipeline and its reloaded successors: a reload keeps the stages whose settings did not
// change, builds and start-checks the others before it stops the running pipeline (a reload that
// cannot start is rejected and the running pipeline goes on), and hands each rebuilt stage the
// state of the one it replaces. A stop (SIGTERM/SIGINT) is graceful and bounded by
// `shutdown_timeout`; a second signal cuts every wait.
import Glibc
import ServiceLifecycle
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

/// A reloaded configuration ready to replace the running one: its kept stages carry the running
/// stage objects, its rebuilt ones are new and passed their start check.
struct PlannedReload: Sendable {
    var config: PipelineConfig
    var kept: [String]
    var rebuilt: [String]
}

/// Runs a pipeline configuration for the lifetime of the process.
public final class Daemon: Sendable {
    struct State {
        var stop = StopSignal()
        var pipeline: Pipeline?
        /// The configuration of the running generation (what a reload is planned against).
        var running: PipelineConfig?
        var pending: PlannedReload?
        var shuttingDown = false
        var stopSignals = 0
        /// Set once the pipeline runner has returned.
        var ended = false
    }

    let sources: ConfigSources
    let pluginDirectory: String?
    let logger: Logger
    let notifier = SystemdNotifier()
    let state = Mutex(State())
    let metrics: RuntimeMetrics?
    let metricsSettings: MetricsSettings?
    /// Seconds the stages have to finish after the first stop signal (`shutdown_timeout`).
    let shutdownTimeout = Mutex<Double>(30)

    /// - Parameters:
    ///   - configPath: the configuration file, re-read on SIGHUP.
    ///   - pluginDirectory: the command line's plugin directory override, if any.
    ///   - metrics: the metrics exported by the endpoint (``startMetrics(_:logger:)``), if on.
    ///   - metricsSettings: the `metrics` section the endpoint was started with.
    public convenience init(configPath: String, pluginDirectory: String?, logger: Logger,
                            metrics: RuntimeMetrics? = nil, metricsSettings: MetricsSettings? = nil) {
        self.init(sources: ConfigSources(file: configPath), pluginDirectory: pluginDirectory, logger: logger,
                  metrics: metrics, metricsSettings: metricsSettings)
    }

    /// - Parameter sources: the configuration files and directories, all re-read on SIGHUP (a
    ///   drop-in added to a directory since the start is read too).
    public init(sources: ConfigSources, pluginDirectory: String?, logger: Logger,
                metrics: RuntimeMetrics? = nil, metricsSettings: MetricsSettings? = nil) {
        self.sources = sources
        self.pluginDirectory = pluginDirectory
        self.logger = logger
        self.metrics = metrics
        self.metricsSettings = metricsSettings
    }

    /// Starts the metrics endpoint of `settings`: installs the backend and binds the address.
    /// - Throws: the bind error.
    public static func startMetrics(_ settings: MetricsSettings, logger: Logger) async throws -> (RuntimeMetrics, MetricsServer) {
        let metrics = RuntimeMetrics(topK: settings.topK)
        if settings.tap { TapHub.shared.enable() }
        let server = try await MetricsServer.start(host: settings.host, port: settings.port)
        logger.info("metrics endpoint listening", metadata: ["address": .string(server.address),
                                                            "url": .string("http://\(server.address)/metrics")])
        return (metrics, server)
    }

    /// Runs `initial` (already validated) and its reloaded successors until the sources end or
    /// a stop signal arrives, as a ServiceGroup: the pipeline runner, the signal handler
    /// (SIGHUP, SIGTERM, SIGINT; the process must have them blocked from its start, see
    /// `tweetoscoped`'s main), the systemd reporter (status line, watchdog) and `server`, the
    /// metrics endpoint, stopped last. `signalsTrapped` runs once the signal handler's sources
    /// are registered (the executable re-sends there the signals that arrived during start-up).
    /// Returns the summary of the whole run.
    public func run(_ initial: PipelineConfig, metricsServer server: MetricsServer? = nil,
                    signalsTrapped: (@Sendable () -> Void)? = nil) async -> RunSummary {
        shutdownTimeout.withLock { $0 = initial.settings.shutdownTimeout }
        let runner = PipelineRunner(daemon: self, initial: initial)
        typealias Entry = ServiceGroupConfiguration.ServiceConfiguration
        // Shut down in reverse order: the runner first (it drains), the endpoint last.
        var services: [Entry] = []
        if let server {
            services.append(Entry(service: MetricsEndpointService(server: server), successTerminationBehavior: .ignore,
                                  failureTerminationBehavior: .ignore, serviceName: "metrics"))
        }
        if notifier.isActive {
            services.append(Entry(service: SystemdReporter(daemon: self), successTerminationBehavior: .ignore,
                                  failureTerminationBehavior: .ignore, serviceName: "systemd"))
        }
        services.append(Entry(service: SignalHandler(daemon: self, trapped: signalsTrapped), successTerminationBehavior: .ignore,
                              failureTerminationBehavior: .ignore, serviceName: "signals"))
        services.append(Entry(service: runner, successTerminationBehavior: .gracefullyShutdownGroup,
                              failureTerminationBehavior: .gracefullyShutdownGroup, serviceName: "pipeline"))
        var groupLogger = Logger(label: "tweetoscoped.lifecycle")
        groupLogger.logLevel = max(logger.logLevel, .notice)
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: services, logger: groupLogger))
        do {
            try await group.run()
        } catch {
            logger.error("service group ended with an error: \(error)")
        }
        notifier.stopping()
        return runner.summary ?? RunSummary(stages: [], streams: [:], seconds: 0)
    }

    /// The runner's loop: one pipeline per generation, a reload starting the next.
    func runGenerations(_ initial: PipelineConfig) async -> RunSummary {
        var config = initial
        var summary: RunSummary?
        var generation = 0
        state.withLock { $0.running = initial }
        while true {
            generation += 1
            let pipeline = Pipeline(config: config, logger: logger, metrics: metrics)
            let stop: StopSignal = state.withLock { s in
                s.stop = StopSignal()
                if s.shuttingDown {
                    s.stop.request(.shutdown)
                    s.stop.setDeadline(in: .seconds(shutdownTimeout.withLock { $0 }))
                }
                s.pipeline = pipeline
                return s.stop
            }
            let notifier = self.notifier
            let stageCount = config.stages.count
            let result = await pipeline.run(stop: stop) {
                notifier.ready(status: "running \(stageCount) stages")
            }
            summary = summary.map { $0.merged(with: result) } ?? result
            let next: PlannedReload? = state.withLock { s in
                defer { s.pending = nil }
                guard stop.reason == .reload, !s.shuttingDown, let next = s.pending else { return nil }
                s.running = next.config
                return next
            }
            guard let next else { break }
            // The previous stages have returned (their state kept): the rebuilt ones take it over.
            for stage in next.config.stages where next.rebuilt.contains(stage.name) {
                guard let old = config.stages.first(where: { $0.name == stage.name && $0.type == stage.type })?.stage,
                      let new = stage.stage else { continue }
                if let heir = new as? any InheritingStage {
                    logger.notice("reload: stage \(stage.name) rebuilt: \(heir.inherit(from: old))")
                } else {
                    logger.notice("reload: stage \(stage.name) rebuilt: its type keeps no state across a rebuild")
                }
            }
            logger.notice("configuration reloaded", metadata: [
                "kept": .string(next.kept.joined(separator: ",")), "rebuilt": .string(next.rebuilt.joined(separator: ",")),
            ])
            config = next.config
        }
        await linger()
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

    /// A stop signal (or the service group's graceful shutdown, `number` nil): the first asks the
    /// pipeline to stop and drain within `shutdown_timeout`; a second one cuts every wait at once.
    /// - Returns: how many stop signals arrived so far.
    @discardableResult
    func shutdown(signal number: Int32?) -> Int {
        let (count, stop) = state.withLock { s in
            if number != nil { s.stopSignals += 1 }
            s.shuttingDown = true
            return (s.stopSignals, s.stop)
        }
        let timeout = shutdownTimeout.withLock { $0 }
        if count >= 2 {
            logger.warning("second stop signal: cutting every shutdown wait (what is still undelivered is counted lost)")
            stop.setDeadline(in: .zero)
            stop.request(.shutdown)
            return count
        }
        if let number {
            logger.notice("signal \(number): stopping (sources stop, in-flight work drains, sinks flush, within \(timeout) s); send again to stop waiting")
        }
        notifier.stopping()
        stop.setDeadline(in: .milliseconds(Int64(timeout * 1000)))
        stop.request(.shutdown)
        return count
    }

    /// Re-reads and validates the configuration, keeps the unchanged stages, builds and
    /// start-checks the others: only then is the running pipeline asked to stop for the new one.
    /// An invalid configuration, or a stage that cannot start, is logged (every error) and the
    /// running pipeline goes on unchanged.
    func reload() {
        notifier.reloading()
        logger.notice("SIGHUP: reloading \(sources)")
        do {
            let (loaded, _) = try ConfigLoader.load(sources: sources, pluginDirectory: pluginDirectory)
            let planned = plan(loaded, running: state.withLock { $0.running })
            let failures = startCheck(planned)
            guard failures.isEmpty else {
                metrics?.reloaded(applied: false)
                for f in failures { logger.error("reload rejected: \(f)") }
                logger.error("reload rejected: \(failures.count) stage(s) cannot start; the running pipeline goes on unchanged")
                notifier.ready(status: "reload failed (\(failures.count) stages cannot start): running the previous configuration")
                return
            }
            if loaded.settings.metrics != metricsSettings {
                logger.warning("reload: the `metrics` section changed; it applies at the next start (the endpoint keeps \(metricsSettings?.listen ?? "off"))")
            }
            shutdownTimeout.withLock { $0 = loaded.settings.shutdownTimeout }
            metrics?.reloaded(applied: true)
            state.withLock { s in
                s.pending = planned
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

    /// `loaded` with the running stage objects in place of the stages whose settings did not change.
    func plan(_ loaded: PipelineConfig, running: PipelineConfig?) -> PlannedReload {
        var config = loaded
        var kept: [String] = [], rebuilt: [String] = []
        config.stages = loaded.stages.map { stage in
            guard let old = running?.stages.first(where: { $0.name == stage.name }), old.fingerprint == stage.fingerprint else {
                rebuilt.append(stage.name)
                return stage
            }
            kept.append(stage.name)
            var reused = stage
            reused.stage = old.stage
            return reused
        }
        return PlannedReload(config: config, kept: kept, rebuilt: rebuilt)
    }

    /// Runs the start check of every rebuilt stage that has one; returns what failed.
    func startCheck(_ planned: PlannedReload) -> [String] {
        var failures: [String] = []
        for stage in planned.config.stages where planned.rebuilt.contains(stage.name) {
            guard let checked = stage.stage as? any StartCheckedStage else { continue }
            do {
                try checked.checkStart()
            } catch {
                failures.append("stage \(stage.name) (\(stage.type)) cannot start: \(error)")
            }
        }
        return failures
    }

    /// What the watchdog saw of each stage at its previous checks.
    struct HealthMemory {
        /// Messages read per stage at the last check.
        var received: [String: Int] = [:]
        /// Consecutive checks at which the stage had input waiting and had read nothing since the check before.
        var idleChecks: [String: Int] = [:]
    }

    /// Whether the watchdog may be pinged: no stage failed, and none has had input waiting
    /// without reading any of it over two consecutive checks (a whole watchdog period when
    /// checked every half period). `memory` holds the figures of the previous checks.
    func healthy(memory: inout HealthMemory) -> (ok: Bool, reason: String?) {
        guard let pipeline = state.withLock({ $0.pipeline }) else { return (true, nil) }
        var next = HealthMemory()
        var stalled: [String] = []
        var failed: [String] = []
        for view in pipeline.stageViews {
            if view.failed { failed.append(view.name) }
            guard view.running else { continue }
            let received = view.inputs.reduce(0) { $0 + $1.received.current }
            let waiting = view.inputs.contains { $0.pending > 0 }
            next.received[view.name] = received
            if waiting, let before = memory.received[view.name], before == received {
                let checks = (memory.idleChecks[view.name] ?? 0) + 1
                next.idleChecks[view.name] = checks
                if checks >= 2 { stalled.append(view.name) }
            }
        }
        memory = next
        if !failed.isEmpty { return (false, "stage failed: \(failed.joined(separator: ","))") }
        if !stalled.isEmpty { return (false, "no progress with input waiting: \(stalled.joined(separator: ","))") }
        return (true, nil)
    }
}
