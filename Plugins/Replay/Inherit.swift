// A replay rebuilt by a configuration reload keeps its position when only its pacing changed
// (`time_acceleration`): the same data, plan and seed give the same sequence of tweets, so the
// new stage goes on from where the old one stopped instead of sending everything again from t = 0.
import TweetoscopeCore

extension ReplayPlan {
    func same(as other: ReplayPlan) -> Bool {
        sources == other.sources && maxCascades == other.maxCascades && randomStartRange == other.randomStartRange
            && seed == other.seed && limit == other.limit
    }
}

extension ReplaySource: InheritingStage {
    /// Whether `other` replays the same tweets in the same order (pacing aside).
    func replaysSameTweets(as other: ReplaySource) -> Bool {
        path == other.path && index == other.index && format == other.format && plan.same(as: other.plan)
            && secondsPerTimeUnit == other.secondsPerTimeUnit && maxRecordBytes == other.maxRecordBytes
    }

    /// Takes over the previous replay's position when it replays the same tweets (only
    /// `time_acceleration` changed); otherwise the replay starts again from the beginning, which
    /// the returned line says.
    func inherit(from previous: any Stage) -> String {
        guard let previous = previous as? ReplaySource else { return "nothing to take over (not a replay)" }
        guard let state = previous.takePaused() else { return "no position to take over (the replay had ended)" }
        guard replaysSameTweets(as: previous) else {
            return "data, plan or seed changed: the replay starts again from the beginning (position t=\(state.lastTime) dropped)"
        }
        adoptPaused(state)
        return "resumes at source time t=\(state.lastTime) (time_acceleration \(previous.timeAcceleration) -> \(timeAcceleration))"
    }
}
