// Issue 12 items 1, 2 and 5 at the stage level: the predictor handles each window's messages in
// the collector's numbering (`seq`), picks the model version the stream calls for, bounds what a
// model forecasts; the learner fits every version, from min_samples on, and keeps its state.
// Expected values are computed by hand in the comments.
import Glibc
import Testing
import TweetoscopeCore

@Suite struct StreamOrderTests {
    static func parameters(_ cid: CascadeID, seq: Int?, tObs: Int = 600, nObs: Int = 10) -> Message {
        // n* = 0.5, G1 = 4: n_supp = 8, raw forecast 18.
        .parameters(CascadeParameters(cascade: cid, msg: "m", tObs: tObs, nObs: nObs, nSupp: 8,
                                      p: 0.01, beta: 0.001, nStar: 0.5, g1: 4, seq: seq, features: PredictorTests.seriesFeatures))
    }

    static func size(_ cid: CascadeID, seq: Int?, tObs: Int = 600, nTot: Int) -> Message {
        .size(CascadeSize(cascade: cid, tObs: tObs, nTot: nTot, tEnd: 5000, seq: seq))
    }

    static func leafModel(version: Int, value: Double, mode: String = "growth", wMin: Double? = nil,
                          wMax: Double? = nil, growthMax: Double? = nil) -> Model {
        Model(tObs: 600, version: version, mode: mode, samples: 10,
              trees: [RegressionTree(feature: [-1], threshold: [0], left: [-1], right: [-1], value: [value])],
              wMin: wMin, wMax: wMax, growthMax: growthMax)
    }

    /// Cascade 2 ends before cascade 1: the collector numbers parameters 1 (0), parameters 2
    /// (1), size 2 (2), size 1 (3). They arrive sizes first (each stream in its order): in
    /// arrival order pair 1 would complete first; in stream order pair 2 does (its size is number
    /// 2, cascade 1's is 3), so the samples are [2, 1].
    @Test func messagesAreHandledInSequenceOrder() async throws {
        let batch = [Self.size(2, seq: 2, nTot: 40), Self.size(1, seq: 3, nTot: 20), Self.parameters(1, seq: 0),
                     Self.parameters(2, seq: 1)]
        let o = try await PredictorTests.predict([batch], mode: "growth")
        #expect(o.samples.map(\.cascade) == [2, 1])
        #expect(o.alerts.map(\.cascade) == [1, 2])
        // Unnumbered: arrival order.
        let plain = [Self.size(2, seq: nil, nTot: 40), Self.size(1, seq: nil, nTot: 20), Self.parameters(1, seq: nil),
                     Self.parameters(2, seq: nil)]
        let p = try await PredictorTests.predict([plain], mode: "growth")
        #expect(p.samples.map(\.cascade) == [1, 2])
    }

    /// Number 0 never comes (its Hawkes fit failed): once parameters 2 and size 1 have gone past
    /// it, it is skipped, and the rest is handled.
    @Test func aLostNumberIsSkippedOnceBothStreamsArePastIt() async throws {
        let o = try await PredictorTests.predict([[Self.size(1, seq: 1, nTot: 20)], [Self.parameters(2, seq: 2)],
                                                  [Self.size(2, seq: 3, nTot: 40)]], mode: "growth")
        #expect(o.counters["sequence_skipped"] == 1)
        #expect(o.stats.map(\.cascade) == [2])
        #expect(o.counters["pending_sizes_at_end"] == 1)
    }

    /// k = 2, min_samples = 2, versions 0 (leaf 0), 1 (leaf ln 2), 2 (leaf ln 3), growth mode
    /// (N = n_obs·exp(f), n_obs = 10). Forecast i is preceded by i − 1 samples: versions
    /// floor(0/2)=0, floor(1/2)=0, floor(2/2)=1, floor(3/2)=1, floor(4/2)=2 → 10, 10, 20, 20, 30.
    @Test func eachForecastUsesTheVersionItsSamplesCallFor() async throws {
        let models = [Self.leafModel(version: 0, value: 0), Self.leafModel(version: 1, value: log(2.0)),
                      Self.leafModel(version: 2, value: log(3.0))]
        var batch: [Message] = []
        for cid in 1...5 {
            batch.append(Self.parameters(CascadeID(cid), seq: 2 * (cid - 1)))
            batch.append(Self.size(CascadeID(cid), seq: 2 * (cid - 1) + 1, nTot: 15))
        }
        let o = try await PredictorTests.predictWithModels(models, [batch], mode: "growth",
            extra: ["refit_every": .int(2), "min_samples": .int(2)])
        let n = o.alerts.map(\.nTot)
        let want = [10.0, 10, 20, 20, 30]
        #expect(n.count == 5)
        for (a, b) in zip(n, want) { #expect(abs(a - b) < 1e-9) }
        // Samples carry the growth factor n_tot/n_obs = 1.5.
        #expect(o.samples.allSatisfy { $0.growth == 1.5 })
    }

    /// refit_growth 1, k = 1, min_samples 1 (max_samples 8): the learner's refit points are 1, 2,
    /// 4, 8 samples (RefitSchedule), so forecast i, preceded by i − 1 samples, uses versions
    /// 0, 1, 2, 2, 4, 4, 4, 4, 8 (leaf ln v+1: forecasts 10·(v+1)); versions 3, 5, 6, 7 exist
    /// (leaf ln 100) but are no refit points, so no forecast may use them.
    @Test func sparseVersionsFollowTheRefitPoints() async throws {
        var models = [0, 1, 2, 4, 8].map { Self.leafModel(version: $0, value: log(Double($0 + 1))) }
        models += [3, 5, 6, 7].map { Self.leafModel(version: $0, value: log(100.0)) }
        var batch: [Message] = []
        for cid in 1...9 {
            batch.append(Self.parameters(CascadeID(cid), seq: 2 * (cid - 1)))
            batch.append(Self.size(CascadeID(cid), seq: 2 * (cid - 1) + 1, nTot: 15))
        }
        let o = try await PredictorTests.predictWithModels(models, [batch], mode: "growth",
            extra: ["refit_every": .int(1), "min_samples": .int(1), "refit_growth": .double(1), "max_samples": .int(8)])
        #expect(o.alerts.map(\.nTot).map { ($0 * 1e6).rounded() / 1e6 } == [10, 20, 30, 30, 50, 50, 50, 50, 90])
    }

    /// With min_samples 4 and k 2, the forecast preceded by 2 samples still uses version 0.
    @Test func versionsBelowMinSamplesAreNotWaitedFor() async throws {
        let models = [Self.leafModel(version: 0, value: 0), Self.leafModel(version: 1, value: log(2.0))]
        var batch: [Message] = []
        for cid in 1...3 {
            batch.append(Self.parameters(CascadeID(cid), seq: 2 * (cid - 1)))
            batch.append(Self.size(CascadeID(cid), seq: 2 * (cid - 1) + 1, nTot: 15))
        }
        let o = try await PredictorTests.predictWithModels(models, [batch], mode: "growth",
            extra: ["refit_every": .int(2), "min_samples": .int(4)])
        #expect(o.alerts.map(\.nTot) == [10, 10, 10])
    }

    /// Course mode, n_obs 10, n_supp 8. A model predicting W = 100 trained on W in [0.5, 3]: W is
    /// bounded to 3, N = 10 + 3·8 = 34; with growth_max 2 as well, N = 2·10 = 20. Each bound counted.
    @Test func modelForecastsAreBoundedByTheirTrainingRange() async throws {
        let o = try await PredictorTests.predictWithModels([Self.leafModel(version: 1, value: 100, mode: "course", wMin: 0.5, wMax: 3)],
                                                           [[Self.parameters(1, seq: nil)]], mode: "course")
        #expect(o.alerts.map(\.nTot) == [34])
        #expect(o.counters["bounded"] == 1)
        let g = try await PredictorTests.predictWithModels([Self.leafModel(version: 1, value: 100, mode: "course", wMin: 0.5, wMax: 3, growthMax: 2)],
                                                           [[Self.parameters(1, seq: nil)]], mode: "course")
        #expect(g.alerts.map(\.nTot) == [20])
    }

    /// Course mode without a model: the raw forecast n_obs + n_supp = 10 + 8·... here n_supp 80
    /// (G1 40) gives 90 > fallback_max_growth (5) · 10 = 50: bounded to 50.
    @Test func courseFallbackIsBounded() async throws {
        let p: Message = .parameters(CascadeParameters(cascade: 1, msg: "m", tObs: 600, nObs: 10, nSupp: 80,
                                                       p: 0.01, beta: 0.001, nStar: 0.5, g1: 40))
        let o = try await PredictorTests.predict([[p]], mode: "course", extra: ["fallback_max_growth": .double(5)])
        #expect(o.alerts.map(\.nTot) == [50])
        #expect(o.counters["bounded"] == 1)
    }
}

@Suite struct LearnerVersionTests {
    /// refit_every 10, min_samples 25, 60 samples: versions 3 (30 samples) to 6 (60), every one,
    /// in order; each model carries its targets' range (W is 1 or 5) and the growth bound.
    @Test func everyVersionFromMinSamplesOn() async throws {
        let samples = LearnerTests.courseSamples(60).map { m -> Message in
            guard case .sample(var s) = m else { return m }
            s.growth = 1 + Double(s.cascade.number! % 4)
            return .sample(s)
        }
        let r = try await LearnerTests.learn([samples], extra: ["refit_every": .int(10), "min_samples": .int(25)])
        #expect(r.models.map(\.version) == [3, 4, 5, 6])
        #expect(r.models.map(\.samples) == [30, 40, 50, 60])
        #expect(r.models.allSatisfy { $0.wMin == 1 && $0.wMax == 5 && $0.growthMax == 4 })
    }

    /// Versions are seeded apart: the same 20 samples fitted as version 1 and as version 2 (after
    /// 20 more identical samples) give different bootstrap draws.
    @Test func versionsHaveTheirOwnSeeds() async throws {
        let r = try await LearnerTests.learn([LearnerTests.courseSamples(20) + LearnerTests.courseSamples(20)],
                                             extra: ["refit_every": .int(20), "max_samples": .int(20)])
        #expect(r.models.count == 2)
        #expect(r.models[0].trees != r.models[1].trees)
    }

    /// state_dir: a second learner with no samples sends the first one's last models at once.
    @Test func stateIsRestoredAtStart() async throws {
        let dir = "/tmp/tweetoscope-learner-state-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        defer { _ = system("rm -rf '\(dir)'") }
        let first = try await LearnerTests.learn([LearnerTests.courseSamples(40) + LearnerTests.courseSamples(20, tObs: 1200)],
                                                 extra: ["state_dir": .string(dir)])
        #expect(first.models.count == 3)
        let second = try await LearnerTests.learn([], extra: ["state_dir": .string(dir)])
        #expect(second.counters["models_restored"] == 2)
        let last600 = first.models.last { $0.tObs == 600 }, last1200 = first.models.last { $0.tObs == 1200 }
        #expect(Set(second.models) == Set([last600!, last1200!]))
        // 20 more samples of 600 continue the version numbering: 40 + 20 = 60 → version 3.
        let third = try await LearnerTests.learn([LearnerTests.courseSamples(20, from: 40)], extra: ["state_dir": .string(dir)])
        #expect(third.models.map(\.version) == [2, 1, 3])
    }

    /// A corrupt state file is set aside and counted; the learner runs on.
    @Test func corruptStateIsSetAside() async throws {
        let dir = "/tmp/tweetoscope-learner-bad-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        defer { _ = system("rm -rf '\(dir)'") }
        _ = system("mkdir -p '\(dir)' && echo 'not json' > '\(dir)/learner-learner-T600.jsonl'")
        let r = try await LearnerTests.learn([LearnerTests.courseSamples(20)], extra: ["state_dir": .string(dir)])
        #expect(r.counters["state_rejected"] == 1)
        #expect(r.models.map(\.version) == [1])
        #expect(access("\(dir)/learner-learner-T600.jsonl", F_OK) == 0, "rewritten by the new fit")
        #expect(system("ls '\(dir)' | grep -q 'learner-learner-T600.jsonl.rejected-'") == 0)
    }
}

/// The messages with their stream-order numbers removed (tests of other behaviour compare
/// contents only; ``CollectorNumberingTests`` checks the numbers).
func unnumbered(_ messages: [Message]) -> [Message] {
    messages.map { m in
        switch m {
        case .series(var s): s.seq = nil; return .series(s)
        case .size(var s): s.seq = nil; return .size(s)
        case .parameters(var p): p.seq = nil; return .parameters(p)
        default: return m
        }
    }
}

@Suite struct CollectorNumberingTests {
    /// Three cascades on one source, windows [10, 20], terminated 30, min size 1: per window the
    /// series and sizes are numbered 0, 1, 2... in the order the collector emits them (one
    /// counter per window, shared), and a cascade's series comes before its size.
    @Test func seriesAndSizesAreNumberedPerWindowInEmissionOrder() async throws {
        let tweets: [Message] = [
            .tweet(Tweet(kind: .tweet, time: 0, magnitude: 1, source: 1, cascade: 1)),
            .tweet(Tweet(kind: .retweet, time: 2, magnitude: 1, source: 1, cascade: 1)),
            .tweet(Tweet(kind: .tweet, time: 40, magnitude: 1, source: 1, cascade: 2)),
            .tweet(Tweet(kind: .tweet, time: 100, magnitude: 1, source: 1, cascade: 3)),
        ]
        let r = try await runStage("collector", plugin: "collector",
                                   options: ["windows": .list([.int(10), .int(20)]), "terminated": .int(30), "min_cascade_size": .int(1)],
                                   inputs: ["tweets": [tweets]], outputs: ["series", "sizes"])
        for w in [10, 20] {
            var numbered: [(seq: Int, kind: MessageKind, cascade: CascadeID)] = []
            for m in (r.outputs["series"] ?? []) + (r.outputs["sizes"] ?? []) where m.tObs == w {
                switch m {
                case .series(let s): numbered.append((s.seq!, .series, s.cascade))
                case .size(let s): numbered.append((s.seq!, .size, s.cascade))
                default: break
                }
            }
            numbered.sort { $0.seq < $1.seq }
            // Cascade 1 ends at t = 40 (2 + 30 < 40): its series (settled at 10/20 already) then
            // its size; cascade 2 ends at 100: series, size; cascade 3 is flushed at the end.
            #expect(numbered.map(\.seq) == [0, 1, 2, 3, 4, 5])
            #expect(numbered.map(\.cascade) == [1, 1, 2, 2, 3, 3])
            #expect(numbered.map(\.kind) == [.series, .size, .series, .size, .series, .size])
        }
    }
}
