// Tests of the collector plugin (libtweetoscope-collector.so, loaded as the daemon does). Every
// expected output below was worked out by hand from the rules in CollectorStage's docstring.
import Testing
import TweetoscopeCore

@Suite struct CollectorTests {
    // MARK: helpers

    static func tweet(_ source: SourceID, _ cascade: CascadeID, _ t: Double, m: Double = 1,
                      msg: String = "None") -> Message {
        .tweet(Tweet(kind: .tweet, msg: msg, time: t, magnitude: m, source: source, cascade: cascade))
    }

    static func retweet(_ source: SourceID, _ cascade: CascadeID, _ t: Double, m: Double = 1) -> Message {
        .tweet(Tweet(kind: .retweet, time: t, magnitude: m, source: source, cascade: cascade))
    }

    static func series(_ cascade: CascadeID, _ tObs: Int, _ times: [Double], _ magnitudes: [Double],
                       msg: String = "None", t0: Double? = nil) -> Message {
        .series(Series(cascade: cascade, msg: msg, tObs: tObs, times: times, magnitudes: magnitudes, t0: t0))
    }

    /// `series` without their `t0` (the tests that do not check it).
    static func withoutT0(_ series: [Message]) -> [Message] {
        series.map { m in
            guard case .series(var s) = m else { return m }
            s.t0 = nil
            return .series(s)
        }
    }

    static func size(_ cascade: CascadeID, _ tObs: Int, _ nTot: Int, _ tEnd: Double) -> Message {
        .size(CascadeSize(cascade: cascade, tObs: tObs, nTot: nTot, tEnd: tEnd))
    }

    /// Runs the collector with windows [10, 20] and terminated 30 unless overridden.
    /// Series lose their `t0` unless `keepT0`.
    static func collect(_ batches: [[Message]], minSize: Int, windows: [Int] = [10, 20], terminated: Int = 30,
                        extra: [String: OptionValue] = [:], outputs: [String] = ["series", "sizes"], keepT0: Bool = false)
        async throws -> (series: [Message], sizes: [Message], counters: [String: Int])
    {
        var options: [String: OptionValue] = [
            "windows": .list(windows.map { .int($0) }), "terminated": .int(terminated),
            "min_cascade_size": .int(minSize),
        ]
        for (k, v) in extra { options[k] = v }
        let r = try await runStage("collector", plugin: "collector", options: options,
                                   inputs: ["tweets": batches], outputs: outputs)
        let series = unnumbered(r.outputs["series"] ?? [])
        return (keepT0 ? series : withoutT0(series), unnumbered(r.outputs["sizes"] ?? []), r.counters)
    }

    // MARK: tests

    @Test func descriptorDeclaresPortsAndDefaults() throws {
        let d = try stageDescriptor("collector", plugin: "collector")
        #expect(d.inputs.map(\.name) == ["tweets"])
        #expect(d.inputs[0].kinds == [.tweet] && d.inputs[0].required)
        #expect(d.outputs.map(\.name) == ["series", "sizes"])
        #expect(d.outputs.allSatisfy { !$0.required })
        let defaults = Dictionary(uniqueKeysWithValues: d.options.map { ($0.key, $0.defaultValue) })
        #expect(defaults["windows"] == .list([.int(600), .int(1200)]))
        #expect(defaults["terminated"] == .int(1800))
        #expect(defaults["min_cascade_size"] == .int(10))
        #expect(defaults["max_ended_remembered"] == .int(100_000))
        #expect(defaults["max_open_cascades"] == .int(1_000_000))
        #expect(defaults["max_sources"] == .int(100_000))
    }

    @Test(arguments: [
        ("windows", OptionValue.list([.int(10), .int(0)])),
        ("windows", .list([.int(-5)])),
        ("windows", .list([.int(20), .int(10), .int(20)])),
        ("windows", .list([])),
        ("terminated", .int(0)),
        ("min_cascade_size", .int(0)),
        ("max_ended_remembered", .int(-1)),
        ("max_open_cascades", .int(0)),
        ("max_sources", .int(0)),
    ])
    func factoryRejectsInvalidOptions(key: String, value: OptionValue) throws {
        let d = try stageDescriptor("collector", plugin: "collector")
        let error = #expect(throws: StageConfigError.self) {
            _ = try d.make("c", options(d, [key: value]))
        }
        #expect(error?.option == key)
    }

    /// Two sources whose clocks are 1000 s apart, interleaved: each is judged on its own clock
    /// (with a shared clock, every event of source 2 would look out of order). Also: flush at end.
    @Test func sourcesKeepTheirOwnClocks() async throws {
        let s1: SourceID = 1, s2: SourceID = 2
        let r = try await Self.collect([
            [Self.tweet(s1, 1, 1000, m: 100, msg: "one"), Self.retweet(s1, 1, 1005, m: 5),
             Self.tweet(s2, 2, 0, m: 200, msg: "two"), Self.retweet(s2, 2, 3, m: 7)],
            [Self.retweet(s1, 1, 1015, m: 6),   // 1000 + 10 < 1015: cascade 1 window 10 settles
             Self.retweet(s2, 2, 12, m: 8)],    // 0 + 10 < 12: cascade 2 window 10 settles
        ], minSize: 2, keepT0: true)
        // t0: each cascade's first event on its own source's clock (1000 and 0).
        #expect(r.series == [
            Self.series(1, 10, [0, 5], [100, 5], msg: "one", t0: 1000),
            Self.series(2, 10, [0, 3], [200, 7], msg: "two", t0: 0),
            // end of input: source 1 first (it appeared first), then source 2
            Self.series(1, 20, [0, 5, 15], [100, 5, 6], msg: "one", t0: 1000),
            Self.series(2, 20, [0, 3, 12], [200, 7, 8], msg: "two", t0: 0),
        ])
        #expect(r.sizes == [
            Self.size(1, 10, 3, 1015), Self.size(1, 20, 3, 1015),
            Self.size(2, 10, 3, 12), Self.size(2, 20, 3, 12),
        ])
        #expect(r.counters["events"] == 6)
        #expect(r.counters["cascades_opened"] == 2)
        #expect(r.counters["cascades_ended"] == 2)
        #expect(!r.counters.keys.contains { $0.hasPrefix("rejected.") })
    }

    /// `Message.tweetScalars(at:)` reads a tweet's scalar fields in place; other messages give nil.
    @Test func tweetScalarsReadTheTweetInPlace() throws {
        let ledger = OffsetLedger(holders: 1)
        let messages: [Message] = [
            .tweet(Tweet(kind: .retweet, msg: "a message longer than fifteen bytes", time: 12.5, magnitude: 300,
                         source: 4, cascade: 77, info: "cascade=77, also longer than fifteen bytes")),
            .tweet(Tweet(kind: .tweet, time: 3, magnitude: 0, source: -2, cascade: "tw23981",
                         origin: RecordOrigin(ledger: ledger, partition: 1, offset: 9))),
            Self.size(5, 10, 3, 40),
        ]
        let scalars = messages.withUnsafeBufferPointer { b in (0..<3).map { Message.tweetScalars(at: b.baseAddress! + $0) } }
        let first = try #require(scalars[0]), second = try #require(scalars[1])
        #expect(first.kind == .retweet && first.time == 12.5 && first.magnitude == 300 && first.source == 4)
        #expect(first.cascadeNumber == 77 && !first.hasOrigin)
        #expect(second.kind == .tweet && second.time == 3 && second.magnitude == 0 && second.source == -2)
        #expect(second.cascadeNumber == nil && second.hasOrigin)
        #expect(scalars[2] == nil)
    }

    /// Retweets of integer and string cascade ids interleaved in one source (the collector reads
    /// the integer ones in place, the others through a copy): same rules for both, and a
    /// non-finite time is rejected either way.
    @Test func integerAndStringCascadeIdsInterleaved() async throws {
        let s: SourceID = 1
        let a: CascadeID = 5, b: CascadeID = "5"
        let r = try await Self.collect([
            [Self.tweet(s, a, 0, m: 10), Self.tweet(s, b, 1, m: 20),
             Self.retweet(s, a, 2, m: 1), Self.retweet(s, b, 3, m: 2),
             Self.retweet(s, a, .nan), Self.retweet(s, b, .infinity),
             Self.retweet(s, b, 4, m: 3), Self.retweet(s, a, 5, m: 4)],
            [Self.retweet(s, "6", 6), Self.retweet(s, 6, 7)],  // unknown: neither is open
        ], minSize: 1, windows: [10], terminated: 30)
        // End of input: B (last event 4) ends before A (last event 5).
        #expect(r.series == [
            Self.series(b, 10, [0, 2, 3], [20, 2, 3]),
            Self.series(a, 10, [0, 2, 5], [10, 1, 4]),
        ])
        #expect(r.sizes == [Self.size(b, 10, 3, 4), Self.size(a, 10, 3, 5)])
        #expect(r.counters["events"] == 10)
        #expect(r.counters["rejected.invalid_time"] == 2)
        #expect(r.counters["rejected.unknown_cascade"] == 2)
    }

    /// One source, windows [10, 20], terminated 30, min size 2. Covers: an event exactly at a window
    /// end (included), an event exactly at the termination limit (extends), a cascade ending while
    /// another continues, ending order by last event (B ends before A although A is older), late,
    /// unknown, out-of-order and duplicate events, and state carried across batches.
    @Test func boundariesTerminationAndAnomalies() async throws {
        let s: SourceID = 7
        let a: CascadeID = 1, b: CascadeID = 2, c: CascadeID = 3
        let r = try await Self.collect([
            [Self.tweet(s, a, 0, m: 10),
             Self.retweet(s, a, 10, m: 1),   // exactly at A's 10 s window end: included
             Self.tweet(s, b, 15, m: 20),    // 10 < 15: A's window 10 = [0, 10]
             Self.retweet(s, b, 20, m: 2),
             Self.retweet(s, a, 20, m: 1)],  // exactly at A's 20 s window end: included
            [Self.retweet(s, b, 40, m: 3),   // settles B/10, A/20, B/20 (window 10 pass first)
             Self.retweet(s, a, 50, m: 4),   // A's last 20 + 30 = 50, not < 50: A continues
             Self.tweet(s, c, 60, m: 30),
             Self.retweet(s, c, 81, m: 5)],  // C's windows settle with 1 event: too small, no series;
                                             // B (last 40) ends, then A (last 50); C continues
            [Self.retweet(s, a, 82),          // late_event
             Self.retweet(s, 99, 83),         // unknown_cascade
             Self.retweet(s, c, 70),          // out_of_order (clock 83)
             Self.tweet(s, a, 84),            // duplicate_tweet (ended)
             Self.tweet(s, c, 84)],           // duplicate_tweet (open)
        ], minSize: 2)
        #expect(r.series == [
            Self.series(a, 10, [0, 10], [10, 1]),
            Self.series(b, 10, [0, 5], [20, 2]),
            Self.series(a, 20, [0, 10, 20], [10, 1, 1]),
            Self.series(b, 20, [0, 5], [20, 2]),
        ])
        #expect(r.sizes == [
            Self.size(b, 10, 3, 40), Self.size(b, 20, 3, 40),
            Self.size(a, 10, 4, 50), Self.size(a, 20, 4, 50),
            // end of input: C = [60, 81]; the rejected events did not extend it
            Self.size(c, 10, 2, 81), Self.size(c, 20, 2, 81),
        ])
        #expect(r.counters["events"] == 14)
        #expect(r.counters["cascades_opened"] == 3)
        #expect(r.counters["cascades_ended"] == 3)
        #expect(r.counters["rejected.late_event"] == 1)
        #expect(r.counters["rejected.unknown_cascade"] == 1)
        #expect(r.counters["rejected.out_of_order"] == 1)
        #expect(r.counters["rejected.duplicate_tweet"] == 2)
    }

    /// Min size 3: a cascade of exactly 3 events gets series and sizes, one of 2 gets nothing.
    @Test func minimumSizeIsInclusive() async throws {
        let r = try await Self.collect([[
            Self.tweet(1, 10, 0), Self.retweet(1, 10, 1), Self.retweet(1, 10, 2),
            Self.tweet(1, 11, 3), Self.retweet(1, 11, 4),
            Self.tweet(1, 12, 100),   // settles every window of 10 and 11, then ends both
        ]], minSize: 3)
        #expect(r.series == [
            Self.series(10, 10, [0, 1, 2], [1, 1, 1]),
            Self.series(10, 20, [0, 1, 2], [1, 1, 1]),
        ])
        #expect(r.sizes == [Self.size(10, 10, 3, 2), Self.size(10, 20, 3, 2)])
        #expect(r.counters["cascades_opened"] == 3)
        #expect(r.counters["cascades_ended"] == 3)
        #expect(r.counters["cascades_below_min_size"] == 2)   // 11, and 12 at end of input
    }

    /// End of input ends every open cascade, oldest last event first, with its pending windows.
    @Test func flushAtEndOfInputByLastEvent() async throws {
        let r = try await Self.collect([[
            Self.tweet(5, 1, 0, m: 3), Self.tweet(5, 2, 1, m: 4), Self.retweet(5, 1, 2, m: 5),
        ]], minSize: 1)
        #expect(r.series == [
            Self.series(2, 10, [0], [4]), Self.series(2, 20, [0], [4]),
            Self.series(1, 10, [0, 2], [3, 5]), Self.series(1, 20, [0, 2], [3, 5]),
        ])
        #expect(r.sizes == [
            Self.size(2, 10, 1, 1), Self.size(2, 20, 1, 1),
            Self.size(1, 10, 2, 2), Self.size(1, 20, 2, 2),
        ])
    }

    /// Issue 16 (5): an input cut by a failed source (a truncated file) does not end the open
    /// cascades: they are dropped, counted `cascades_incomplete`, and no size or unsettled series
    /// is sent for them. Cascade 1 ends by termination (t=2 + 30 < 40) before the cut and keeps
    /// its output; cascades 2 and 3 are open at the cut.
    @Test func failedSourceDropsOpenCascadesInsteadOfFlushingThem() async throws {
        let batch = [
            Self.tweet(5, 1, 0, m: 3), Self.retweet(5, 1, 2, m: 5),
            Self.tweet(5, 2, 40, m: 4), Self.tweet(5, 3, 41, m: 6), Self.retweet(5, 3, 45, m: 1),
        ]
        let r = try await runStageCapturingFailure(
            "collector", plugin: "collector",
            options: ["windows": .list([.int(10), .int(20)]), "terminated": .int(30), "min_cascade_size": .int(1)],
            inputs: ["tweets": [batch]], failedInputs: ["tweets"], outputs: ["series", "sizes"])
        #expect(r.error == nil)
        #expect(unnumbered(r.outputs["series"] ?? []) == [Self.series(1, 10, [0, 2], [3, 5], t0: 0), Self.series(1, 20, [0, 2], [3, 5], t0: 0)])
        #expect(unnumbered(r.outputs["sizes"] ?? []) == [Self.size(1, 10, 2, 2), Self.size(1, 20, 2, 2)])
        #expect(r.counters["cascades_incomplete"] == 2)
        #expect(r.counters["cascades_ended"] == 1)
    }

    /// Several cascades end on one event: the order is by last event, not by creation.
    @Test func endingOrderIsOldestLastEventFirst() async throws {
        let r = try await Self.collect([[
            Self.tweet(1, 1, 0), Self.tweet(1, 2, 1), Self.tweet(1, 3, 2),
            Self.retweet(1, 1, 5), Self.retweet(1, 3, 6), Self.retweet(1, 2, 7),
            Self.tweet(1, 4, 100),   // ends 1 (last 5), 3 (last 6), 2 (last 7)
        ]], minSize: 2, windows: [10])
        #expect(r.sizes == [Self.size(1, 10, 2, 5), Self.size(3, 10, 2, 6), Self.size(2, 10, 2, 7)])
        #expect(r.series.map(\.cascade) == [1, 2, 3])   // window passes go in first-time order
    }

    /// terminated shorter than a window: the cascade ends before the window closes, and its
    /// pending series (every event) goes out at the end.
    @Test func terminationBeforeWindowEnd() async throws {
        let r = try await Self.collect([[
            Self.tweet(1, 1, 0), Self.retweet(1, 1, 4),
            Self.tweet(1, 2, 12),   // 10 < 12: window 10 of 1; 4 + 5 < 12: 1 ends with window 20 pending
        ]], minSize: 1, terminated: 5)
        #expect(r.series == [
            Self.series(1, 10, [0, 4], [1, 1]), Self.series(1, 20, [0, 4], [1, 1]),
            Self.series(2, 10, [0], [1]), Self.series(2, 20, [0], [1]),
        ])
        #expect(r.sizes == [
            Self.size(1, 10, 2, 4), Self.size(1, 20, 2, 4), Self.size(2, 10, 1, 12), Self.size(2, 20, 1, 12),
        ])
    }

    /// Ended ids are remembered up to max_ended_remembered; an older one is then unknown.
    @Test func endedIdsAreBounded() async throws {
        let r = try await Self.collect([[
            Self.tweet(1, 1, 0), Self.tweet(1, 2, 1),
            Self.tweet(1, 3, 100),   // ends 1 then 2; only 2 is remembered
            Self.retweet(1, 1, 101), Self.retweet(1, 2, 102),
        ]], minSize: 1, extra: ["max_ended_remembered": .int(1)])
        #expect(r.counters["rejected.unknown_cascade"] == 1)
        #expect(r.counters["rejected.late_event"] == 1)
    }

    /// max_open_cascades 2 on one source: opening a third cascade ends the one whose last event is
    /// the oldest (B: A was touched after it) as a termination would; B's later retweet is late.
    @Test func evictionEndsTheCascadeWithTheOldestLastEvent() async throws {
        let r = try await Self.collect([[
            Self.tweet(1, 1, 0), Self.tweet(1, 2, 1), Self.retweet(1, 1, 2),
            Self.tweet(1, 3, 3),     // 3 open > 2: B (last event at 1) ends now
            Self.retweet(1, 2, 4),   // late
        ]], minSize: 1, extra: ["max_open_cascades": .int(2)])
        #expect(r.series == [
            Self.series(2, 10, [0], [1]), Self.series(2, 20, [0], [1]),
            Self.series(1, 10, [0, 2], [1, 1]), Self.series(1, 20, [0, 2], [1, 1]),
            Self.series(3, 10, [0], [1]), Self.series(3, 20, [0], [1]),
        ])
        #expect(r.sizes == [
            Self.size(2, 10, 1, 1), Self.size(2, 20, 1, 1), Self.size(1, 10, 2, 2), Self.size(1, 20, 2, 2),
            Self.size(3, 10, 1, 3), Self.size(3, 20, 1, 3),
        ])
        #expect(r.counters["evicted"] == 1)
        #expect(r.counters["rejected.late_event"] == 1)
        #expect(r.counters["cascades_opened"] == 3 && r.counters["cascades_ended"] == 3)
    }

    /// Across sources the eviction order is the arrival order of the last events (source clocks
    /// cannot be compared): B (source 2, t = 5000) is evicted before A (source 1, t = 1) because
    /// A's retweet arrived after B's tweet.
    @Test func evictionAcrossSourcesFollowsArrivalOrder() async throws {
        let r = try await Self.collect([
            [Self.tweet(1, 1, 0), Self.tweet(2, 2, 5000)],
            [Self.retweet(1, 1, 1), Self.tweet(2, 3, 5001)],
        ], minSize: 1, extra: ["max_open_cascades": .int(2)])
        #expect(r.sizes == [
            Self.size(2, 10, 1, 5000), Self.size(2, 20, 1, 5000), Self.size(1, 10, 2, 1), Self.size(1, 20, 2, 1),
            Self.size(3, 10, 1, 5001), Self.size(3, 20, 1, 5001),
        ])
        #expect(r.counters["evicted"] == 1)
    }

    /// max_sources 3: the fourth source makes the least recently active one (source 2) end its
    /// cascade (sizes emitted) and be forgotten: its later retweet is an unknown cascade, from a
    /// source tracked anew, which in turn makes source 3 (now the least recently active) go.
    @Test func sourcesAreBoundedLeastRecentlyActiveFirst() async throws {
        let r = try await Self.collect([[
            Self.tweet(1, 1, 0), Self.tweet(2, 2, 0), Self.tweet(3, 3, 0),
            Self.retweet(1, 1, 1),          // source 2 is now the least recently active
            Self.tweet(4, 4, 0),            // 4 sources > 3: source 2 ends and goes
            Self.retweet(2, 2, 2),          // unknown: source 2 was forgotten; source 3 goes
        ]], minSize: 1, extra: ["max_sources": .int(3)])
        #expect(r.counters["sources_evicted"] == 2)
        #expect(r.counters["rejected.unknown_cascade"] == 1)
        #expect(r.sizes.prefix(4) == [Self.size(2, 10, 1, 0), Self.size(2, 20, 1, 0),
                                      Self.size(3, 10, 1, 0), Self.size(3, 20, 1, 0)])
        #expect(r.sizes.count == 8, "every cascade still gets its sizes")
    }

    /// Many more cascades than the bound: never more than max_open_cascades open (the gauge), and
    /// every cascade still produces its size once.
    @Test func evictionBoundsOpenCascades() async throws {
        var batch: [Message] = []
        for c in 0..<1000 { batch.append(Self.tweet(1, CascadeID(c), Double(c) * 0.001)) }
        let r = try await Self.collect([batch], minSize: 1, terminated: 1_000_000,
                                       extra: ["max_open_cascades": .int(50)])
        #expect(r.counters["evicted"] == 950)
        #expect(r.sizes.count == 2000)
        #expect(Set(r.sizes.map(\.cascade)).count == 1000)
        // The first 950 to end are the evicted ones, oldest first.
        #expect(r.sizes.prefix(1900).enumerated().allSatisfy { $0.element.cascade == CascadeID($0.offset / 2) })
    }

    /// An unbound output is skipped; the other still gets everything.
    @Test func unboundSeriesOutput() async throws {
        let r = try await Self.collect([[
            Self.tweet(1, 1, 0), Self.retweet(1, 1, 11), Self.tweet(1, 2, 50),
        ]], minSize: 2, outputs: ["sizes"])
        #expect(r.series.isEmpty)
        #expect(r.sizes == [Self.size(1, 10, 2, 11), Self.size(1, 20, 2, 11)])
    }

    /// Windows are given unsorted; messages still go out per window in ascending order.
    @Test func unsortedWindows() async throws {
        let r = try await Self.collect([[Self.tweet(1, 1, 0), Self.retweet(1, 1, 1)]],
                                       minSize: 1, windows: [20, 10])
        #expect(r.series.map(\.tObs) == [10, 20])
        #expect(r.sizes.map(\.tObs) == [10, 20])
    }

    /// A long random stream (3 sources, ties, anomalies, thousands of cascades so that slots are
    /// reused and the window queue is compacted) against a naive reference written from the rules
    /// above: quadratic scans instead of the plugin's queues and recency list.
    @Test func randomStreamMatchesNaiveReference() async throws {
        let windows = [10, 25, 40], terminated = 30, minSize = 3
        var rng = SplitMix(seed: 42)
        var events: [Tweet] = []
        var clocks: [SourceID: Double] = [0: 0, 1: 5000, 2: 70]
        var recent: [SourceID: [CascadeID]] = [0: [], 1: [], 2: []]
        var nextID: Int64 = 1
        for _ in 0..<30_000 {
            let source = SourceID(rng.below(3))
            clocks[source]! += Double(rng.below(4))   // 0 makes ties
            var t = clocks[source]!
            let roll = rng.below(100)
            if roll < 1 { t -= 2 }                    // out of order (or a tie when clock didn't move)
            let ids = recent[source]!
            if roll == 1 && !ids.isEmpty {                // duplicate tweet
                events.append(Tweet(kind: .tweet, time: t, magnitude: 1, source: source,
                                    cascade: ids[rng.below(ids.count)]))
            } else if roll == 2 {                          // unknown cascade
                events.append(Tweet(kind: .retweet, time: t, magnitude: 1, source: source, cascade: CascadeID(-nextID)))
            } else if roll >= 80 || ids.isEmpty {
                events.append(Tweet(kind: .tweet, msg: "m\(nextID)", time: t, magnitude: Double(rng.below(1000)),
                                    source: source, cascade: CascadeID(nextID)))
                recent[source]!.append(CascadeID(nextID))
                if recent[source]!.count > 12 { recent[source]!.removeFirst() }
                nextID += 1
            } else {                                   // recent ones are often already ended: late events
                let pick = ids[ids.count - 1 - min(rng.below(ids.count), rng.below(ids.count))]
                events.append(Tweet(kind: .retweet, time: t, magnitude: Double(rng.below(100)), source: source,
                                    cascade: pick))
            }
        }
        var reference = NaiveCollector(windows: windows, terminated: Double(terminated), minSize: minSize)
        for e in events { reference.process(e) }
        reference.flush()

        let batches = stride(from: 0, to: events.count, by: 777).map { start in
            events[start..<min(start + 777, events.count)].map { Message.tweet($0) }
        }
        let r = try await Self.collect(batches, minSize: minSize, windows: windows, terminated: terminated,
                                       extra: ["max_ended_remembered": .int(1_000_000)])
        #expect(r.series.count == reference.series.count)
        #expect(r.series == reference.series)
        #expect(r.sizes == reference.sizes)
        #expect(r.counters["events"] == events.count)
        #expect(r.counters["cascades_opened"] == reference.opened)
        #expect(r.counters["cascades_ended"] == reference.opened)
        for (reason, n) in reference.rejected { #expect(r.counters["rejected.\(reason)"] == n, "\(reason)") }
        #expect(reference.rejected.count == 4)   // every anomaly occurred
        #expect(reference.sizes.count > 3000 && reference.series.count > 3000)
        #expect(r.counters["evicted"] == nil)

        // The same stream with at most 8 open cascades: evictions by arrival order of the last event.
        var bounded = NaiveCollector(windows: windows, terminated: Double(terminated), minSize: minSize, maxOpen: 8)
        for e in events { bounded.process(e) }
        bounded.flush()
        let b = try await Self.collect(batches, minSize: minSize, windows: windows, terminated: terminated,
                                       extra: ["max_ended_remembered": .int(1_000_000), "max_open_cascades": .int(8)])
        #expect(bounded.evicted > 1000)
        #expect(b.counters["evicted"] == bounded.evicted)
        #expect(b.series == bounded.series)
        #expect(b.sizes == bounded.sizes)
        for (reason, n) in bounded.rejected { #expect(b.counters["rejected.\(reason)"] == n, "\(reason)") }
    }
}

/// Deterministic pseudo-random numbers for the stream above.
private struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// The collector rules, implemented as plainly as possible (quadratic, unbounded ended set).
private struct NaiveCollector {
    struct Cascade {
        var id: CascadeID, msg: String, first: Double, last: Double, touch: Int
        var times: [Double], magnitudes: [Double], settled: [Bool]
    }
    let windows: [Int], terminated: Double, minSize: Int, maxOpen: Int
    var evicted = 0
    var clock: [SourceID: Double] = [:]
    var open: [SourceID: [Cascade]] = [:]           // creation order
    var ended: [SourceID: Set<CascadeID>] = [:]
    var sourceOrder: [SourceID] = []
    var touches = 0, opened = 0
    var series: [Message] = [], sizes: [Message] = []
    var rejected: [String: Int] = [:]

    init(windows: [Int], terminated: Double, minSize: Int, maxOpen: Int = .max) {
        self.windows = windows.sorted()
        self.terminated = terminated
        self.minSize = minSize
        self.maxOpen = maxOpen
    }

    mutating func emitSeries(_ c: Cascade, _ k: Int) {
        if c.times.count >= minSize {
            series.append(.series(Series(cascade: c.id, msg: c.msg, tObs: windows[k], times: c.times,
                                         magnitudes: c.magnitudes)))
        }
    }

    mutating func end(_ s: SourceID, at i: Int) {
        let c = open[s]!.remove(at: i)
        for k in windows.indices where !c.settled[k] { emitSeries(c, k) }
        if c.times.count >= minSize {
            for w in windows { sizes.append(.size(CascadeSize(cascade: c.id, tObs: w, nTot: c.times.count, tEnd: c.last))) }
        }
        ended[s, default: []].insert(c.id)
    }

    /// Index of the open cascade with the oldest last event (ties: touched first) among those passing `filter`.
    func oldest(_ s: SourceID, _ filter: (Cascade) -> Bool) -> Int? {
        var best: Int?
        for (i, c) in open[s]!.enumerated() where filter(c) {
            if let b = best, (open[s]![b].last, open[s]![b].touch) <= (c.last, c.touch) { continue }
            best = i
        }
        return best
    }

    mutating func process(_ e: Tweet) {
        let s = e.source, t = e.time
        if clock[s] == nil { clock[s] = t; open[s] = []; ended[s] = []; sourceOrder.append(s) }
        if t < clock[s]! { rejected["out_of_order", default: 0] += 1; return }
        clock[s] = t
        for k in windows.indices {
            for i in open[s]!.indices where !open[s]![i].settled[k] && open[s]![i].first + Double(windows[k]) < t {
                open[s]![i].settled[k] = true
                emitSeries(open[s]![i], k)
            }
        }
        let term = terminated
        while let i = oldest(s, { $0.last + term < t }) { end(s, at: i) }
        touches += 1
        if let i = open[s]!.firstIndex(where: { $0.id == e.cascade }) {
            if e.kind == .tweet { rejected["duplicate_tweet", default: 0] += 1; return }
            open[s]![i].times.append(t - open[s]![i].first)
            open[s]![i].magnitudes.append(e.magnitude)
            open[s]![i].last = t
            open[s]![i].touch = touches
        } else if ended[s]!.contains(e.cascade) {
            rejected[e.kind == .tweet ? "duplicate_tweet" : "late_event", default: 0] += 1
        } else if e.kind == .retweet {
            rejected["unknown_cascade", default: 0] += 1
        } else {
            opened += 1
            open[s]!.append(Cascade(id: e.cascade, msg: e.msg, first: t, last: t, touch: touches, times: [0],
                                    magnitudes: [e.magnitude], settled: windows.map { _ in false }))
            if open.values.reduce(0, { $0 + $1.count }) > maxOpen {
                // Evict the least recently touched open cascade of any source.
                var victim: (source: SourceID, index: Int, touch: Int)?
                for (source, cascades) in open {
                    for (i, c) in cascades.enumerated() where victim == nil || c.touch < victim!.touch {
                        victim = (source, i, c.touch)
                    }
                }
                end(victim!.source, at: victim!.index)
                evicted += 1
            }
        }
    }

    mutating func flush() {
        for s in sourceOrder { while let i = oldest(s, { _ in true }) { end(s, at: i) } }
    }
}
