// Tests of the learner plugin (libtweetoscope-learner.so, loaded as the daemon does). The
// training sets are step functions, whose forest is known exactly: every tree's root separates
// the two levels and both sides are constant leaves.
import Testing
import TweetoscopeCore

@Suite struct LearnerTests {
    /// Course samples for window `tObs`: X = [beta, n*, G1] with W = 1 when n* < 0.5 and 5
    /// otherwise; beta and G1 are noise.
    static func courseSamples(_ count: Int, tObs: Int = 600, from first: Int = 0) -> [Message] {
        (first..<(first + count)).map { i in
            let nStar = Double((i * 37) % 100) / 100
            return .sample(Sample(cascade: CascadeID(i), tObs: tObs,
                                  x: [Double((i * 13) % 7) * 1e-4, nStar, Double((i * 11) % 17)],
                                  w: nStar < 0.5 ? 1 : 5))
        }
    }

    static func learn(_ batches: [[Message]], extra: [String: OptionValue] = [:]) async throws
        -> (models: [Model], counters: [String: Int])
    {
        var options: [String: OptionValue] = ["mode": .string("course"), "refit_every": .int(20), "refit_growth": .double(0), "trees": .int(25),
                                              "min_samples": .int(1)]
        for (k, v) in extra { options[k] = v }
        let r = try await runStage("learner", plugin: "learner", options: options,
                                   inputs: ["samples": batches], outputs: ["models"])
        let models = (r.outputs["models"] ?? []).compactMap { m -> Model? in
            if case .model(let model) = m { return model }
            return nil
        }
        return (models, r.counters)
    }

    @Test func descriptorDeclaresPortsAndDefaults() throws {
        let d = try stageDescriptor("learner", plugin: "learner")
        #expect(d.inputs.map(\.name) == ["samples"] && d.inputs[0].kinds == [.sample])
        #expect(d.outputs.map(\.name) == ["models"] && d.outputs[0].kinds == [.model])
        let defaults = Dictionary(uniqueKeysWithValues: d.options.map { ($0.key, $0.defaultValue) })
        #expect(defaults["mode"] == .string("growth"))
        #expect(defaults["refit_every"] == .int(20))
        #expect(defaults["refit_growth"] == .double(0.1))
        #expect(defaults["max_samples"] == .int(2000))
        #expect(defaults["max_windows"] == .int(64))
        #expect(defaults["trees"] == .int(100))
        #expect(defaults["seed"] == .int(0))
        #expect(defaults["min_samples"] == .int(50))
        #expect(defaults["state_dir"] == .string(""))
        #expect(defaults["shift"] == .bool(true))
    }

    /// `tree_samples` unset: 200 draws per tree in mode growth, every sample (0) in modes course
    /// and none. Seen from the trees: 400 samples with distinct features and targets, grown to
    /// one sample per leaf, so a tree has one leaf per distinct sample it drew — at most 200 with
    /// 200 draws; with 400 draws about 400·(1 − (1 − 1/400)^400) ≈ 253 (every one of the 25
    /// trees above 200: the standard deviation is about 6).
    @Test func treeSamplesDefaultDependsOnTheMode() async throws {
        func samples(features: Int) -> [Message] {
            (0..<400).map { i in
                var x = (0..<features).map { f in Double((i * (2 * f + 3)) % 401) }
                x[0] = Double(i)
                return .sample(Sample(cascade: CascadeID(i), tObs: 600, x: x, w: 1 + Double(i) / 100,
                                      growth: features == 15 ? 1 + Double(i) / 100 : nil))
            }
        }
        func largestLeafCount(_ mode: String, features: Int, _ extra: [String: OptionValue] = [:]) async throws -> (Int, Int) {
            var options: [String: OptionValue] = ["mode": .string(mode), "refit_every": .int(400), "min_samples_leaf": .int(1),
                                                  "max_depth": .int(64), "max_features": .double(1), "shift": .bool(false)]
            for (k, v) in extra { options[k] = v }
            let model = try #require(try await Self.learn([samples(features: features)], extra: options).models.last)
            let leaves = model.trees.map { tree in tree.feature.filter { $0 < 0 }.count }
            return (leaves.min()!, leaves.max()!)
        }
        for mode in ["course", "none"] {
            let (fewest, _) = try await largestLeafCount(mode, features: 3)
            #expect(fewest > 200, "mode \(mode): \(fewest)")
            let (_, most) = try await largestLeafCount(mode, features: 3, ["tree_samples": .int(200)])
            #expect(most <= 200 && most >= 150, "mode \(mode), tree_samples 200: \(most)")
        }
        let (_, growthMost) = try await largestLeafCount("growth", features: 15)
        #expect(growthMost <= 200 && growthMost >= 150, "mode growth: \(growthMost)")
        let (growthFewest, _) = try await largestLeafCount("growth", features: 15, ["tree_samples": .int(0)])
        #expect(growthFewest > 200, "mode growth, tree_samples 0: \(growthFewest)")
    }

    @Test(arguments: [
        ("refit_every", OptionValue.int(0)),
        ("max_samples", .int(0)),
        ("max_windows", .int(0)),
        ("trees", .int(0)),
        ("max_depth", .int(0)),
        ("min_samples_leaf", .int(0)),
        ("max_features", .double(0)),
        ("max_features", .double(1.5)),
        ("min_samples", .int(0)),
    ])
    func factoryRejectsInvalidOptions(key: String, value: OptionValue) throws {
        let d = try stageDescriptor("learner", plugin: "learner")
        let error = #expect(throws: StageConfigError.self) { _ = try d.make("l", options(d, [key: value])) }
        #expect(error?.option == key)
    }

    /// 40 samples, refit every 20: two refits, both done (versions are never skipped); the last
    /// model is fitted on all 40 and has learned the step on n*.
    @Test func refitsEveryKSamplesAndLearnsTheStep() async throws {
        let r = try await Self.learn([Array(Self.courseSamples(40).prefix(25)), Array(Self.courseSamples(40).suffix(15))])
        #expect(r.models.map(\.version) == [1, 2])
        #expect(r.models.map(\.samples) == [20, 40])
        let last = try #require(r.models.last)
        #expect(last.tObs == 600 && last.mode == "course" && last.samples == 40 && last.trees.count == 25)
        #expect(last.predict([0.0003, 0.2, 5]) == 1)
        #expect(last.predict([0.0003, 0.8, 5]) == 5)
        #expect(r.counters["samples"] == 40)
    }

    /// refit_growth 0.5, k = 10, min_samples 20, max_samples 40, 150 samples: refit points by
    /// hand (step = 10·⌈⌈0.5·min(p, 40)⌉/10⌉): 20, +10 30, +20 50, then every 20: 70, 90, 110, 130,
    /// 150; versions p/10; the window keeps the last 40 samples.
    @Test func refitGrowthSpacesTheVersions() async throws {
        let r = try await Self.learn([Self.courseSamples(150)],
                                     extra: ["refit_every": .int(10), "refit_growth": .double(0.5),
                                             "min_samples": .int(20), "max_samples": .int(40)])
        #expect(r.models.map(\.version) == [2, 3, 5, 7, 9, 11, 13, 15])
        #expect(r.models.map(\.samples) == [20, 30, 40, 40, 40, 40, 40, 40])
    }

    /// final_fit with a refit_every never reached (what `tweetoscoped evaluate` trains with): one
    /// model per window at the end, on every sample, the same whatever the samples' order.
    @Test func finalFitFitsEachWindowOnceOnEverySample() async throws {
        let extra: [String: OptionValue] = ["refit_every": .int(1_000_000_000), "final_fit": .bool(true)]
        let samples = Self.courseSamples(30, tObs: 600) + Self.courseSamples(13, tObs: 1200)
        let r = try await Self.learn([samples], extra: extra)
        #expect(r.models.map(\.tObs).sorted() == [600, 1200])
        #expect(r.models.allSatisfy { $0.version == 1 })
        #expect(r.models.first { $0.tObs == 600 }?.samples == 30)
        #expect(r.models.first { $0.tObs == 1200 }?.samples == 13)
        let m600 = try #require(r.models.first { $0.tObs == 600 })
        #expect(m600.predict([0.0003, 0.2, 5]) == 1)
        #expect(m600.predict([0.0003, 0.8, 5]) == 5)
        let reversed = try await Self.learn([samples.reversed()], extra: extra)
        #expect(reversed.models.first { $0.tObs == 600 }?.trees == m600.trees)
        // Without final_fit the same samples give no model at all.
        let none = try await Self.learn([samples], extra: ["refit_every": .int(1_000_000_000)])
        #expect(none.models.isEmpty)
    }

    /// Each window has its own forest and version sequence; 19 samples of 1200 give no model.
    @Test func oneForestPerWindow() async throws {
        let r = try await Self.learn([Self.courseSamples(20, tObs: 600) + Self.courseSamples(19, tObs: 1200)
                                      + Self.courseSamples(20, tObs: 3600)])
        #expect(Set(r.models.map(\.tObs)) == [600, 3600])
        #expect(r.models.allSatisfy { $0.version == 1 && $0.samples == 20 })
    }

    /// max_windows 2: the samples of a third window are rejected, the first two are learned.
    @Test func windowsAreBounded() async throws {
        let r = try await Self.learn([Self.courseSamples(20, tObs: 600) + Self.courseSamples(20, tObs: 999)
                                      + Self.courseSamples(20, tObs: 1200) + Self.courseSamples(5, tObs: 600, from: 20)],
                                     extra: ["max_windows": .int(2)])
        #expect(Set(r.models.map(\.tObs)) == [600, 999])
        #expect(r.counters["rejected.too_many_windows"] == 20)
        #expect(r.counters["samples"] == 45, "a known window still takes samples")
    }

    /// max_samples 15: the forest sees only the 15 most recent samples.
    @Test func windowOfRecentSamplesIsBounded() async throws {
        let r = try await Self.learn([Self.courseSamples(40)], extra: ["max_samples": .int(15)])
        #expect(r.models.last?.samples == 15)
    }

    /// The same samples and seed give the same forest; another seed another one.
    @Test func deterministicForASeed() async throws {
        let a = try await Self.learn([Self.courseSamples(60)], extra: ["seed": .int(11)])
        let b = try await Self.learn([Self.courseSamples(60)], extra: ["seed": .int(11)])
        let c = try await Self.learn([Self.courseSamples(60)], extra: ["seed": .int(12)])
        #expect(a.models.last?.trees == b.models.last?.trees)
        #expect(a.models.last?.trees != c.models.last?.trees)
    }

    /// Growth samples (15 features) whose target steps from ln 2 to ln 4 between x[2] < 0.2 and
    /// x[2] ≥ 0.8: the forest
    /// learns the step exactly, every out-of-bag prediction is its sample's target, so the median
    /// ARE is 0 at c = 0 and the model's `shift` is 0 with residuals all 0. A course model has no
    /// shift.
    @Test func growthModelsCarryTheirShift() async throws {
        let samples: [Message] = (0..<40).map { i in
            // Two clusters, [0.1, 0.2) and [0.8, 0.9): any threshold a tree picks between them
            // also sends the samples it did not draw (out of bag) to the right side.
            let level = (i % 2 == 0 ? 0.1 : 0.8) + Double(i % 10) / 100
            var x = [Double](repeating: 1, count: 15)
            x[2] = level
            x[0] = Double(10 + i % 7)
            return .sample(Sample(cascade: CascadeID(i), tObs: 600, x: x, w: level < 0.5 ? 0.6931471805599453 : 1.3862943611198906,
                                  growth: level < 0.5 ? 2 : 4))
        }
        // Every feature tried at each split, so every tree finds the step.
        let r = try await Self.learn([samples], extra: ["mode": .string("growth"), "max_features": .double(1)])
        let last = try #require(r.models.last)
        #expect(last.mode == "growth" && last.samples == 40)
        #expect(last.shift == 0)
        #expect(!last.residuals.isEmpty && last.residuals.allSatisfy { abs($0) < 1e-12 })
        let course = try await Self.learn([Self.courseSamples(40)])
        #expect(course.models.allSatisfy { $0.shift == nil })
    }

    /// A growth learner given course samples (3 features instead of 15) rejects them all.
    @Test func samplesOfAnotherModeAreRejected() async throws {
        let r = try await Self.learn([Self.courseSamples(40)], extra: ["mode": .string("growth")])
        #expect(r.models.isEmpty)
        #expect(r.counters["rejected.feature_count"] == 40)
    }

    @Test func nonFiniteSamplesAreRejected() async throws {
        let bad: [Message] = [
            .sample(Sample(cascade: 1, tObs: 600, x: [1, .nan, 2], w: 1)),
            .sample(Sample(cascade: 2, tObs: 600, x: [1, 0.5, 2], w: .infinity)),
        ]
        let r = try await Self.learn([bad + Self.courseSamples(20)])
        #expect(r.counters["rejected.non_finite_sample"] == 2)
        #expect(r.models.map(\.samples) == [20])
    }

    /// The model JSON the learner sends survives the wire format.
    @Test func modelsRoundTripThroughJSON() async throws {
        let r = try await Self.learn([Self.courseSamples(20)])
        let model = try #require(r.models.first)
        #expect(try WireFormat.decode(WireFormat.encode(.model(model))) == .model(model))
    }
}
