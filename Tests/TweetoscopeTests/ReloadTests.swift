// Reloads that rebuild stages (issue 16): a rebuilt stage takes over the state of the one it
// replaces (InheritingStage), a rebuilt file sink checks it can start (StartCheckedStage), and
// the Core declarations a plugin makes instead of the runtime knowing it (summary columns).
// Expected values are worked out by hand from the collector's rules (CollectorStage docstring).
import Glibc
import Testing
import TweetoscopeCore
@testable import TweetoscopeRuntime

/// Runs an already built `stage` on input batches; returns what it sent per output port.
private func run(_ stage: any Stage, type: String, inputs: [String: [[Message]]], outputs: [String],
                 stop: StopSignal) async throws -> (outputs: [String: [Message]], counters: [String: Int]) {
    let r = await runBuiltStage(stage, type: type, inputs: inputs, outputs: outputs, stop: stop)
    if let error = r.error { throw error }
    return (r.outputs, r.counters)
}

@Suite struct ReloadTests {
    static func tweet(_ cascade: CascadeID, _ t: Double) -> Message {
        .tweet(Tweet(kind: .tweet, msg: "m", time: t, magnitude: 1, source: 1, cascade: cascade))
    }

    static func retweet(_ cascade: CascadeID, _ t: Double) -> Message {
        .tweet(Tweet(kind: .retweet, time: t, magnitude: 1, source: 1, cascade: cascade))
    }

    static func collector(_ given: [String: OptionValue]) throws -> any Stage {
        let d = try stageDescriptor("collector", plugin: "collector")
        return try d.make("collector", options(d, given))
    }

    static var reloading: StopSignal {
        let stop = StopSignal()
        stop.request(.reload)
        return stop
    }

    /// Cascade 7 opens at t=0 with 3 events before the reload and gets 2 more after it; the
    /// rebuilt collector (another max_ended_remembered and terminated) ends it at end of input:
    /// size 5 for windows 10 and 20, no unknown_cascade.
    @Test func rebuiltCollectorKeepsOpenCascades() async throws {
        let windows: OptionValue = .list([.int(10), .int(20)])
        let old = try Self.collector(["windows": windows, "min_cascade_size": .int(1), "max_ended_remembered": .int(100)])
        let first = try await run(old, type: "collector", inputs: ["tweets": [[Self.tweet(7, 0), Self.retweet(7, 1), Self.retweet(7, 2)]]],
                                  outputs: ["series", "sizes"], stop: Self.reloading)
        #expect(first.outputs["sizes"] == [])
        let new = try Self.collector(["windows": windows, "min_cascade_size": .int(1), "max_ended_remembered": .int(5),
                                      "terminated": .int(40)])
        let heir = try #require(new as? any InheritingStage)
        #expect(heir.inherit(from: old) == "kept 1 open cascades under the new options")
        let second = try await run(new, type: "collector", inputs: ["tweets": [[Self.retweet(7, 3), Self.retweet(7, 4)]]],
                                   outputs: ["series", "sizes"], stop: StopSignal())
        #expect(second.counters["rejected.unknown_cascade"] == nil)
        #expect(unnumbered(second.outputs["sizes"] ?? []) == [
            .size(CascadeSize(cascade: 7, tObs: 10, nTot: 5, tEnd: 4)), .size(CascadeSize(cascade: 7, tObs: 20, nTot: 5, tEnd: 4)),
        ])
    }

    /// Other windows: the open cascade cannot be carried over; it is dropped and counted.
    @Test func rebuiltCollectorWithOtherWindowsCountsWhatItDrops() async throws {
        let old = try Self.collector(["windows": .list([.int(10)]), "min_cascade_size": .int(1)])
        _ = try await run(old, type: "collector", inputs: ["tweets": [[Self.tweet(7, 0), Self.tweet(8, 1)]]],
                          outputs: ["sizes"], stop: Self.reloading)
        let new = try Self.collector(["windows": .list([.int(15)]), "min_cascade_size": .int(1)])
        let note = try #require(new as? any InheritingStage).inherit(from: old)
        #expect(note.hasPrefix("dropped 2 open cascades"))
        let after = try await run(new, type: "collector", inputs: ["tweets": [[Self.retweet(7, 3)]]],
                                  outputs: ["sizes"], stop: StopSignal())
        #expect(after.counters["reload_dropped_cascades"] == 2)
        #expect(after.counters["rejected.unknown_cascade"] == 1)
    }

    /// A file sink whose directory is a regular file cannot start: the reload is rejected
    /// before the running pipeline stops.
    @Test func fileSinkStartCheckRejectsAFileAsDirectory() throws {
        let d = try stageDescriptor("file", plugin: "file")
        let path = "/tmp/tweetoscope-startcheck-\(getpid())"
        // The directory exists when the stage is made (validation checks it), then is replaced
        // by a regular file before the stage starts, as an operator's script might do.
        #expect(mkdir(path, 0o755) == 0)
        let sink = try d.make("sink", options(d, ["directory": .string(path)]))
        #expect(rmdir(path) == 0)
        let fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
        close(fd)
        defer { unlink(path) }
        let checked = try #require(sink as? any StartCheckedStage)
        #expect(throws: (any Error).self) { try checked.checkStart() }
        let fine = try d.make("sink", options(d, ["directory": .string(path + ".d/sub")]))
        try #require(fine as? any StartCheckedStage).checkStart()
        #expect(access(path + ".d/sub", W_OK) == 0)
        rmdir(path + ".d/sub")
        rmdir(path + ".d")
    }

    /// The newest keys survive a smaller capacity; order is kept (the oldest is forgotten first).
    @Test func recentKeysResized() {
        var keys = RecentKeys<Int>(capacity: 4)
        for k in 1...6 { _ = keys.insert(k) }  // remembers 3, 4, 5, 6
        var small = keys.resized(capacity: 2)
        #expect(!small.contains(4) && small.contains(5) && small.contains(6))
        _ = small.insert(7)  // forgets 5
        #expect(!small.contains(5) && small.contains(6) && small.contains(7))
        let large = keys.resized(capacity: 10)
        #expect((1...6).filter { large.contains($0) } == [3, 4, 5, 6])
    }

    /// The predictor declares its ARE columns; the summary shows them per window and hides the
    /// counters they come from, with fixed decimals. 412 thousandths -> 0.412; 500 -> 0.500;
    /// 333 -> 33.3%; 400 -> 40.0%; 7 -> 0.007.
    @Test func summaryColumnsComeFromTheDescriptor() throws {
        let d = try stageDescriptor("predictor", plugin: "predictor")
        #expect(d.summaryColumns.map(\.header) == ["median ARE", "mean ARE", "within 20%"])
        var streams = StreamStats.Snapshot()
        streams.byKind[.stat] = 3
        streams.byKindAndWindow[.stat] = [600: 2, 1200: 1]
        let report = RunSummary.StageReport(name: "p", type: "predictor",
                                            counters: ["are600_median_milli": 412, "are600_mean_milli": 500,
                                                       "are600_within20_milli": 333, "are1200_median_milli": 7,
                                                       "are1200_mean_milli": 1500, "are1200_within20_milli": 400,
                                                       "alerts": 3],
                                            seconds: 1, error: nil, columns: d.summaryColumns)
        let table = RunSummary(stages: [report], streams: ["s": streams], seconds: 1).table()
        let lines = table.split(separator: "\n").map(String.init)
        #expect(lines.contains("T_obs   stats       median ARE  mean ARE    within 20%"))
        #expect(lines.contains("600     2           0.412       0.500       33.3%"))
        #expect(lines.contains("1200    1           0.007       1.500       40.0%"))
        let stageLine = try #require(lines.first { $0.hasPrefix("p ") })
        #expect(stageLine.hasSuffix("alerts=3"))
    }
}
