// A collector rebuilt by a configuration reload (its options changed) takes over the open
// cascades of the one it replaces instead of starting empty (which loses them: every later
// retweet of an open cascade would be an `unknown_cascade`, and no size would ever be sent).
import TweetoscopeCore

extension CollectorEngine {
    /// Applies `new` settings to the open state: limits, `terminated`, `min_cascade_size` and
    /// `max_ended_remembered` apply from now on (a cascade open for longer than the new
    /// `terminated` ends at its next event's time). With other `windows`, the open cascades cannot
    /// be carried over (their settled windows would not match): they are dropped.
    /// - Returns: the cascades kept and the cascades dropped.
    mutating func reconfigure(_ new: CollectorSettings, buildSeries: Bool, buildSizes: Bool) -> (kept: Int, dropped: Int) {
        out.buildSeries = buildSeries
        out.buildSizes = buildSizes
        guard new.windows == settings.windows else {
            let dropped = openCascades
            self = CollectorEngine(settings: new, buildSeries: buildSeries, buildSizes: buildSizes)
            return (0, dropped)
        }
        settings = new
        for p in processors.indices {
            processors[p].terminated = Double(new.terminated)
            processors[p].minSize = new.minCascadeSize
            if processors[p].ended.capacity != new.maxEndedRemembered {
                processors[p].ended = processors[p].ended.resized(capacity: new.maxEndedRemembered)
            }
        }
        return (openCascades, 0)
    }
}

extension CollectorStage: InheritingStage {
    /// Takes over the open cascades the previous collector kept when the reload stopped it
    /// (none when its tweets came from Kafka: they are rebuilt from the committed offsets). With
    /// changed `windows` they are dropped, counted `reload_dropped_cascades` and logged.
    func inherit(from previous: any Stage) -> String {
        guard let previous = previous as? CollectorStage else { return "nothing to take over (not a collector)" }
        guard var engine = previous.takeKept() else { return "no open cascades to take over" }
        let (kept, dropped) = engine.reconfigure(settings, buildSeries: engine.out.buildSeries,
                                                 buildSizes: engine.out.buildSizes)
        adopt(engine, dropped: dropped)
        if dropped > 0 {
            return "dropped \(dropped) open cascades: their windows changed (counted reload_dropped_cascades)"
        }
        return "kept \(kept) open cascades under the new options"
    }
}
