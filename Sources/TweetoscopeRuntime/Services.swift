// The services of the daemon's ServiceGroup (swift-service-lifecycle): every long-running task
// of the daemon is one of them or a child task of one, so none is left running unstructured.
import Glibc
import ServiceLifecycle
import Synchronization
import TweetoscopeCore
import UnixSignals

/// Runs the pipeline and its reloaded successors (``Daemon/runGenerations(_:)``); when it
/// returns, the group shuts the other services down. The group's graceful shutdown asks the
/// pipeline to stop like SIGTERM.
final class PipelineRunner: Service, Sendable {
    private let daemon: Daemon
    private let initial: PipelineConfig
    private let result = Mutex<RunSummary?>(nil)

    init(daemon: Daemon, initial: PipelineConfig) {
        self.daemon = daemon
        self.initial = initial
    }

    /// The summary of the whole run, once ``run()`` has returned.
    var summary: RunSummary? { result.withLock { $0 } }

    func run() async throws {
        let daemon = self.daemon
        let summary = await withGracefulShutdownHandler {
            await daemon.runGenerations(initial)
        } onGracefulShutdown: {
            daemon.shutdown(signal: nil)
        }
        result.withLock { $0 = summary }
        daemon.state.withLock { $0.ended = true }
    }
}

/// SIGHUP reloads; SIGTERM and SIGINT stop (``Daemon/shutdown(signal:)``): a second one cuts
/// every wait, and if the pipeline has not ended 2 s later the process exits at once with
/// 128 + the signal. After the first stop signal, the pipeline has `shutdown_timeout` seconds
/// (plus 5 s for the stages to count and report what they lost); past that the process exits 1,
/// naming the stages still running.
///
/// The signals must be blocked and caught from the process's start (the executable does it
/// before `main`, see CEarlySignals): one sent during start-up is recorded, and `trapped` re-sends
/// it once libdispatch's signal sources are registered, instead of the process being killed
/// (SIGHUP's default action).
final class SignalHandler: Service, Sendable {
    private let daemon: Daemon
    private let trapped: (@Sendable () -> Void)?

    init(daemon: Daemon, trapped: (@Sendable () -> Void)?) {
        self.daemon = daemon
        self.trapped = trapped
    }

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup, .sigterm, .sigint)
        trapped?()
        let daemon = self.daemon
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                for await signal in signals {
                    if signal == .sighup {
                        daemon.reload()
                        continue
                    }
                    let number = signal.rawValue
                    let count = daemon.shutdown(signal: number)
                    let timeout = daemon.shutdownTimeout.withLock { $0 }
                    let grace: Duration = count >= 2 ? .seconds(2) : .milliseconds(Int64(timeout * 1000)) + .seconds(5)
                    group.addTask { await Self.exitIfStillRunning(daemon, after: grace, code: count >= 2 ? 128 + number : 1) }
                }
                group.cancelAll()
            }
        }
    }

    /// Exits the process with `code` unless the pipeline ends within `grace`.
    private static func exitIfStillRunning(_ daemon: Daemon, after grace: Duration, code: Int32) async {
        let end = ContinuousClock.now + grace
        while ContinuousClock.now < end {
            do { try await Task.sleep(for: .milliseconds(100)) } catch { return }
            if daemon.state.withLock({ $0.ended }) { return }
        }
        let running = daemon.state.withLock { $0.pipeline }?.stageViews.filter(\.running).map(\.name) ?? []
        daemon.logger.critical("shutdown deadline passed: exiting with stages still running (\(running.joined(separator: ","))); what they held is lost")
        daemon.notifier.stopping()
        exit(code)
    }
}

/// Keeps systemd informed (`Type=notify` units): the status line every 5 s, and a watchdog ping
/// every half `WatchdogSec=` while every stage is healthy — none failed, none stuck with input
/// waiting and nothing read since the previous check — so that a stalled daemon is restarted.
final class SystemdReporter: Service, Sendable {
    private let daemon: Daemon

    init(daemon: Daemon) { self.daemon = daemon }

    func run() async throws {
        let daemon = self.daemon
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await Self.statusLoop(daemon) }
                if let interval = daemon.notifier.watchdogInterval {
                    group.addTask { await Self.watchdogLoop(daemon, interval: interval) }
                }
            }
        }
    }

    private static func statusLoop(_ daemon: Daemon) async {
        var lastEvents = 0
        var last = ContinuousClock.now
        while !Task.isCancelled {
            do { try await Task.sleep(for: .seconds(5)) } catch { return }
            guard let status = daemon.state.withLock({ $0.pipeline?.status }) else { continue }
            let now = ContinuousClock.now
            let elapsed = (now - last).seconds
            let rate = elapsed > 0 ? Double(status.events - lastEvents) / elapsed : 0
            (lastEvents, last) = (status.events, now)
            var line = "\(status.stages) stages, \(Int(rate)) tweets/s, \(status.events) tweets"
            for gauge in status.gauges { line += ", \(gauge.value) \(gauge.text)" }
            if !status.failedStages.isEmpty { line += ", FAILED: \(status.failedStages.joined(separator: ","))" }
            if !status.troubles.isEmpty { line += "; " + status.troubles.joined(separator: "; ") }
            if let problem = LastProblem.shared.value { line += ", last error: \(problem.prefix(120))" }
            daemon.notifier.status(line)
        }
    }

    private static func watchdogLoop(_ daemon: Daemon, interval: Duration) async {
        var memory = Daemon.HealthMemory()
        var withheld: String?
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval / 2) } catch { return }
            let health = daemon.healthy(memory: &memory)
            if health.ok {
                if withheld != nil { daemon.logger.notice("watchdog: stages healthy again, pings resumed") }
                withheld = nil
                daemon.notifier.watchdogPing()
            } else if withheld != health.reason {
                withheld = health.reason
                daemon.logger.error("watchdog ping withheld: \(health.reason ?? "")")
                daemon.notifier.status("watchdog withheld: \(health.reason ?? "")")
            }
        }
    }
}

/// The metrics endpoint: serves until the group shuts down (after the pipeline runner, so that
/// the final figures and `metrics.linger` are served), then closes its socket.
final class MetricsEndpointService: Service, Sendable {
    private let server: MetricsServer

    init(server: MetricsServer) { self.server = server }

    func run() async throws {
        try? await gracefulShutdown()
        await server.stop()
    }
}
