// A predictor rebuilt by a configuration reload (its options changed) takes over the waiting
// pairs and the accuracy tallies of the one it replaces instead of starting empty (which loses
// every forecast still waiting for its size, and so its stat and training sample).
import TweetoscopeCore

extension PredictorStage: InheritingStage {
    /// Takes over the previous predictor's run state under this stage's `max_pending` and
    /// `pending_ttl`: halves beyond a smaller `max_pending` are evicted oldest first (counted
    /// `evicted`), a shorter `pending_ttl` applies from the next batch (counted `expired`).
    func inherit(from previous: any Stage) -> String {
        guard let previous = previous as? PredictorStage else { return "nothing to take over (not a predictor)" }
        guard let state = previous.takeKept() else { return "no waiting pairs to take over" }
        let waiting = state.pending.count
        let evicted = adopt(state)
        return "kept \(waiting - evicted) of \(waiting) waiting forecasts and sizes"
            + (evicted > 0 ? " (\(evicted) evicted by the smaller max_pending, counted evicted)" : "")
    }
}
