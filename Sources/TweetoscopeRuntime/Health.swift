// Liveness and readiness of the daemon for load balancers and Kubernetes probes, served on the
// metrics listener: GET /health (alive: 200 while the process answers) and GET /ready (200 when
// every stage of the running pipeline has started, none has failed and no source reports a
// trouble such as an unreachable broker; 503 otherwise, with the reasons).
import Synchronization
import TweetoscopeCore

/// The state /ready reports, fed by the running pipeline.
public final class DaemonHealth: Sendable {
    /// The daemon's one instance (the metrics server and the pipelines share it).
    public static let shared = DaemonHealth()

    private struct State {
        var pipeline: Pipeline?
        var started = false
        var ended = false
    }

    private let state = Mutex(State())

    public init() {}

    /// A pipeline has wired its stages and is starting them.
    func pipelineWired(_ pipeline: Pipeline) {
        state.withLock { $0 = State(pipeline: pipeline, started: false, ended: false) }
    }

    /// Every stage task of `pipeline` runs.
    func pipelineStarted(_ pipeline: Pipeline) {
        state.withLock { s in if s.pipeline === pipeline { s.started = true } }
    }

    /// `pipeline` has returned (sources ended, stop or reload).
    func pipelineEnded(_ pipeline: Pipeline) {
        state.withLock { s in if s.pipeline === pipeline { s.ended = true } }
    }

    /// The streams of the current pipeline, by name (for the tap).
    var streamNames: [String] {
        state.withLock { s in
            guard let p = s.pipeline else { return [] }
            return Array(Set(p.config.stages.flatMap { $0.outputs.values.map(\.stream) })).sorted()
        }
    }

    /// Whether the daemon is ready, and why not: an empty list means ready.
    public var readinessProblems: [String] {
        let (pipeline, started, ended) = state.withLock { ($0.pipeline, $0.started, $0.ended) }
        guard let pipeline else { return ["no pipeline running yet"] }
        var problems: [String] = []
        let status = pipeline.status
        for name in status.failedStages { problems.append("stage \(name) failed") }
        if !started { problems.append("stages starting") }
        if ended && status.failedStages.isEmpty { problems.append("pipeline ended") }
        problems += status.troubles
        return problems
    }
}
