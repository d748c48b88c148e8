// Tests of the predictor plugin (libtweetoscope-predictor.so, loaded as the daemon does). Every
// expected forecast, ARE and sample below was computed by hand from the formulas of spec §5 and
// the mode table in the plugin's documentation.
import Testing
import TweetoscopeCore

@Suite struct PredictorTests {
    // MARK: helpers

    /// Hawkes parameters with n_supp = G1/(1 − n*) as the estimator sends it.
    static func parameters(_ cid: CascadeID, tObs: Int = 600, nObs: Int = 10, beta: Double = 0.001,
                           nStar: Double = 0.5, g1: Double = 4, msg: String = "m",
                           features: [String: Double]? = Self.seriesFeatures) -> Message {
        .parameters(CascadeParameters(cascade: cid, msg: msg, tObs: tObs, nObs: nObs, nSupp: g1 / (1 - nStar),
                                      p: nStar / 35, beta: beta, nStar: nStar, g1: g1, features: features))
    }

    /// The estimator's series features of the test parameters (seismic_exposure = e − 1 so that
    /// ln(1 + S) = 1).
    static let seriesFeatures: [String: Double] = [
        "root_m": 100, "max_m": 300, "median_m": 50, "sum_m": 1000, "share_after_3q": 0.2, "share_after_half": 0.4,
        "share_first_quarter": 0.3, "seismic_exposure": 1.718281828459045, "seismic_p": 0.01,
    ]

    /// X of the growth mode for ``parameters(_:tObs:nObs:beta:nStar:g1:msg:features:)``'s defaults,
    /// by hand: [n_obs, n_supp/n_obs, n*, beta, G1/n_obs] = [10, 8/10, 0.5, 0.001, 4/10], then
    /// ln(1+100), ln(1+300), ln(1+50), ln(1+1000) (Python math.log1p), the three shares,
    /// ln(1 + e − 1) = 1, p̂ = 0.01 and T_obs = 600.
    static let growthX: [Double] = [10, 0.8, 0.5, 0.001, 0.4, 4.61512051684126, 5.707110264748875, 3.9318256327243257,
                                    6.90875477931522, 0.2, 0.4, 0.3, 1.0, 0.01, 600]

    static func closeVectors(_ a: [Double]?, _ b: [Double]) -> Bool {
        guard let a, a.count == b.count else { return false }
        return zip(a, b).allSatisfy { abs($0 - $1) <= 1e-12 * max(1, abs($1)) }
    }

    static func size(_ cid: CascadeID, tObs: Int = 600, nTot: Int) -> Message {
        .size(CascadeSize(cascade: cid, tObs: tObs, nTot: nTot, tEnd: 5000))
    }

    static func leaf(_ value: Double) -> RegressionTree {
        RegressionTree(feature: [-1], threshold: [0], left: [-1], right: [-1], value: [value])
    }

    struct Output {
        var alerts: [Alert] = []
        var stats: [Stat] = []
        var samples: [Sample] = []
        var counters: [String: Int] = [:]
    }

    static func split(_ r: (outputs: [String: [Message]], counters: [String: Int])) -> Output {
        var o = Output(counters: r.counters)
        for m in r.outputs["alerts"] ?? [] { if case .alert(let a) = m { o.alerts.append(a) } }
        for m in r.outputs["stats"] ?? [] { if case .stat(let s) = m { o.stats.append(s) } }
        for m in r.outputs["samples"] ?? [] { if case .sample(let s) = m { o.samples.append(s) } }
        return o
    }

    /// Runs the predictor on `properties` batches (no models).
    static func predict(_ batches: [[Message]], mode: String, extra: [String: OptionValue] = [:]) async throws -> Output {
        var options: [String: OptionValue] = ["mode": .string(mode)]
        for (k, v) in extra { options[k] = v }
        return split(try await runStage("predictor", plugin: "predictor", options: options,
                                        inputs: ["properties": batches], outputs: ["alerts", "stats", "samples"]))
    }

    /// A predictor stage wired to a `properties` and a `models` feed, its outputs collected.
    struct Harness {
        let stage: any Stage
        let context: StageContext
        let counters: StageCounters
        let propsFeed: StageOutput, modelsFeed: StageOutput
        let outs: [String: StageOutput]
        let collect: [String: StageInput]

        init(_ given: [String: OptionValue]) throws {
            let d = try stageDescriptor("predictor", plugin: "predictor")
            stage = try d.make("predictor", options(d, given))
            let props = MessageStream(name: "properties"), modelStream = MessageStream(name: "models")
            propsFeed = StageOutput(stream: props)
            modelsFeed = StageOutput(stream: modelStream)
            var outs: [String: StageOutput] = [:], collect: [String: StageInput] = [:]
            for port in ["alerts", "stats", "samples"] {
                let s = MessageStream(name: port, capacity: 1 << 20)
                collect[port] = StageInput(stream: s)
                outs[port] = StageOutput(stream: s)
            }
            (self.outs, self.collect) = (outs, collect)
            counters = StageCounters()
            context = StageContext(name: "predictor", type: "predictor", logger: Logger(label: "test"), counters: counters,
                                   inputs: ["properties": [StageInput(stream: props)], "models": [StageInput(stream: modelStream)]],
                                   outputs: outs, stop: StopSignal())
        }

        /// Once the stage has returned: ends every stream and returns what the outputs received.
        func finish() async -> Output {
            for o in outs.values { o.finish() }
            modelsFeed.finish()
            var result: [String: [Message]] = [:]
            for (port, input) in collect {
                var all: [Message] = []
                while let batch = await input.next() { all += batch }
                result[port] = all
            }
            return split((result, counters.snapshot))
        }
    }

    /// Runs the predictor with `models` delivered (and loaded: the test waits for the
    /// `models_loaded` counter) before any properties are sent.
    static func predictWithModels(_ models: [Model], _ batches: [[Message]], mode: String,
                                  extra: [String: OptionValue] = [:]) async throws -> Output {
        var given: [String: OptionValue] = ["mode": .string(mode)]
        for (k, v) in extra { given[k] = v }
        let h = try Harness(given)
        let (stage, context, counters) = (h.stage, h.context, h.counters)
        let running = Task { try await stage.run(context) }
        await h.modelsFeed.send(models.map { .model($0) })
        let expected = mode == "none" ? 0 : models.filter { $0.mode == mode }.count
        var waited = 0
        while counters["models_loaded"] + counters["models_other_mode"] + counters["models_unused"] < models.count,
              waited < 10_000 {
            try await Task.sleep(for: .milliseconds(1))
            waited += 1
        }
        #expect(counters["models_loaded"] == expected)
        for b in batches { await h.propsFeed.send(b) }
        h.propsFeed.finish()
        try await running.value
        return await h.finish()
    }

    /// Runs the predictor (growth mode, a refit every sample from the first: the forecast after
    /// one sample wants version 1) on parameters 1, size 1, parameters 2, with `model` sent on
    /// `models` once the predictor counts a wait (nil: never). Returns the output and the
    /// seconds it took.
    static func predictWaitingForVersion1(model: Model?, modelWait: Double) async throws
        -> (Output, Double) {
        let h = try Harness([
            "mode": .string("growth"), "refit_every": .int(1), "refit_growth": .double(0), "min_samples": .int(1),
            "model_wait": .double(modelWait),
        ])
        let (stage, context, counters, modelsFeed) = (h.stage, h.context, h.counters, h.modelsFeed)
        let start = ContinuousClock.now
        let running = Task { try await stage.run(context) }
        let sender = Task {
            guard let model else { return }
            // The model comes only once the forecast waits for it (whatever the machine's load).
            var polls = 0
            while counters["model_waits"] == 0 && polls < 30_000 {
                try await Task.sleep(for: .milliseconds(1))
                polls += 1
            }
            await modelsFeed.send([.model(model)])
        }
        await h.propsFeed.send([Self.parameters(1)])
        await h.propsFeed.send([Self.size(1, nTot: 30)])
        await h.propsFeed.send([Self.parameters(2)])
        h.propsFeed.finish()
        try await running.value
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        try await sender.value
        return (await h.finish(), seconds)
    }

    /// A forecast whose version has not arrived waits for it and is woken when it comes: the
    /// version-1 model (ln-growth 1: N̂ = 10·e), sent once the forecast waits, is the one cascade
    /// 2's forecast uses, and no timeout is counted (a wait that the model did not wake would end
    /// at the 20 s deadline and count one).
    @Test func forecastWaitsForItsVersionAndIsWokenByIt() async throws {
        let model = Model(tObs: 600, version: 1, mode: "growth", samples: 1, trees: [Self.leaf(1)])
        let (o, _) = try await Self.predictWaitingForVersion1(model: model, modelWait: 20)
        #expect(o.counters["model_waits"] == 1)
        #expect((o.counters["model_wait_timeouts"] ?? 0) == 0)
        let second = o.alerts.first { $0.cascade == 2 }
        #expect(second?.model == 1)
        #expect(abs((second?.nTot ?? 0) - 27.18281828459045) < 1e-12)
    }

    /// Without the version, the forecast waits `model_wait` (0.3 s), counts a timeout and uses
    /// the newest model it has: none, so the model-less forecast (`model` 0).
    @Test func forecastWaitsModelWaitWhenItsVersionNeverComes() async throws {
        let (o, seconds) = try await Self.predictWaitingForVersion1(model: nil, modelWait: 0.3)
        #expect(o.counters["model_waits"] == 1)
        #expect(o.counters["model_wait_timeouts"] == 1)
        #expect(o.alerts.first { $0.cascade == 2 }?.model == 0)
        #expect(seconds >= 0.3, "took \(seconds) s")
    }

    // MARK: descriptor and options

    @Test func descriptorDeclaresPortsAndDefaults() throws {
        let d = try stageDescriptor("predictor", plugin: "predictor")
        #expect(d.inputs.map(\.name) == ["properties", "models"])
        #expect(d.inputs[0].kinds == [.parameters, .size] && d.inputs[0].required)
        #expect(d.inputs[1].kinds == [.model] && !d.inputs[1].required)
        #expect(d.outputs.map(\.name) == ["alerts", "stats", "samples"])
        #expect(d.outputs.allSatisfy { !$0.required })
        let defaults = Dictionary(uniqueKeysWithValues: d.options.map { ($0.key, $0.defaultValue) })
        #expect(defaults["mode"] == .string("growth"))
        #expect(defaults["alert_min_size"] == .double(0))
        #expect(defaults["max_pending"] == .int(100_000))
        #expect(defaults["pending_ttl"] == .double(86_400))
        #expect(d.options.first { $0.key == "mode" }?.type == .choice(["none", "course", "growth"]))
    }

    @Test(arguments: [
        ("fallback_max_growth", OptionValue.double(0.5)),
        ("alert_min_size", .double(-1)),
        ("max_pending", .int(0)),
        ("pending_ttl", .double(-1)),
    ])
    func factoryRejectsInvalidOptions(key: String, value: OptionValue) throws {
        let d = try stageDescriptor("predictor", plugin: "predictor")
        let error = #expect(throws: StageConfigError.self) { _ = try d.make("p", options(d, [key: value])) }
        #expect(error?.option == key)
    }

    // MARK: course mode

    /// n_obs 10, n* 0.5, G1 4: n_supp = 4/(1 − 0.5) = 8; no model, so W = 1 and N̂ = 10 + 8 = 18.
    /// n_tot 30: ARE = |18 − 30|/30 = 0.4; W = (30 − 10)(1 − 0.5)/4 = 2.5; X = [beta, n*, G1].
    /// Same result whichever half arrives first.
    @Test(arguments: [false, true])
    func courseWithoutModelBothOrders(sizeFirst: Bool) async throws {
        let p = Self.parameters(1, msg: "hello"), s = Self.size(1, nTot: 30)
        let o = try await Self.predict(sizeFirst ? [[s], [p]] : [[p], [s]], mode: "course")
        // The course fields (the interval and p_viral are tested in UncertaintyTests).
        #expect(o.alerts.map { Alert(cascade: $0.cascade, msg: $0.msg, tObs: $0.tObs, nTot: $0.nTot) }
                == [Alert(cascade: 1, msg: "hello", tObs: 600, nTot: 18)])
        #expect(o.alerts.map(\.nObs) == [10] && o.alerts.map(\.model) == [0])
        #expect(o.stats == [Stat(cascade: 1, tObs: 600, are: 0.4, forecast: 18, nTot: 30, nObs: 10)])
        #expect(o.samples == [Sample(cascade: 1, tObs: 600, x: [0.001, 0.5, 4], w: 2.5, growth: 3)])
        #expect(o.counters["forecasts"] == 1 && o.counters["stats"] == 1 && o.counters["samples"] == 1)
        #expect(o.counters["are600_median_milli"] == 400)
        #expect(o.counters["are600_mean_milli"] == 400)
        #expect(o.counters["are600_within20_milli"] == 0)
    }

    /// A course model whose one tree splits on n* (feature 1) at 0.6: W = 0.5 below, 3 above.
    /// Cascade 1 (n* 0.5): N̂ = 10 + 0.5·8 = 14, ARE = |14 − 30|/30 = 16/30.
    /// Cascade 2 (n* 0.75, G1 1, n_supp 4): N̂ = 10 + 3·4 = 22, n_tot 22: ARE 0.
    @Test func courseWithModel() async throws {
        let tree = RegressionTree(feature: [1, -1, -1], threshold: [0.6, 0, 0], left: [1, -1, -1],
                                  right: [2, -1, -1], value: [0, 0.5, 3])
        let model = Model(tObs: 600, version: 1, mode: "course", samples: 20, trees: [tree])
        let o = try await Self.predictWithModels([model], [
            [Self.parameters(1), Self.parameters(2, nStar: 0.75, g1: 1)],
            [Self.size(2, nTot: 22), Self.size(1, nTot: 30)],
        ], mode: "course")
        #expect(o.alerts.map(\.nTot) == [14, 22])
        #expect(o.stats == [Stat(cascade: 2, tObs: 600, are: 0, forecast: 22, nTot: 22, nObs: 10),
                            Stat(cascade: 1, tObs: 600, are: 16.0 / 30, forecast: 14, nTot: 30, nObs: 10)])
        #expect(o.alerts.map(\.model) == [1, 1])
        // Samples carry the true W: (22 − 10)(1 − 0.75)/1 = 3 and 2.5.
        #expect(o.samples.map(\.w) == [3, 2.5])
        #expect(o.counters["models_loaded"] == 1)
    }

    /// A model of another window is not used for this one.
    @Test func modelOfAnotherWindowIsNotUsed() async throws {
        let model = Model(tObs: 1200, version: 1, mode: "course", samples: 20, trees: [Self.leaf(5)])
        let o = try await Self.predictWithModels([model], [[Self.parameters(1)]], mode: "course")
        #expect(o.alerts.map(\.nTot) == [18])
    }

    // MARK: growth mode

    /// No model: N̂ = min(10 + 8, 10·10) = 18; n_tot 30: ARE 0.4.
    /// X = ``growthX``; W = ln(30/10).
    @Test(arguments: [false, true])
    func growthWithoutModelBothOrders(sizeFirst: Bool) async throws {
        let p = Self.parameters(7), s = Self.size(7, nTot: 30)
        let o = try await Self.predict(sizeFirst ? [[s, p]] : [[p, s]], mode: "growth")
        #expect(o.alerts.map(\.nTot) == [18])
        #expect(o.stats == [Stat(cascade: 7, tObs: 600, are: 0.4, forecast: 18, nTot: 30, nObs: 10)])
        #expect(o.samples.count == 1)
        #expect(Self.closeVectors(o.samples.first?.x, Self.growthX))
        #expect(abs((o.samples.first?.w ?? 0) - 1.0986122886681098) < 1e-15)  // ln 3
    }

    /// No model, G1 100 and n* 0.5: the raw forecast 10 + 200 = 210 is capped at 10·n_obs = 100;
    /// with fallback_max_growth 50 it is not.
    @Test func growthFallbackIsCapped() async throws {
        let o = try await Self.predict([[Self.parameters(1, g1: 100)]], mode: "growth")
        #expect(o.alerts.map(\.nTot) == [100])
        let wide = try await Self.predict([[Self.parameters(1, g1: 100)]], mode: "growth",
                                          extra: ["fallback_max_growth": .double(50)])
        #expect(wide.alerts.map(\.nTot) == [210])
    }

    /// A growth model predicting ln-growth 1: N̂ = 10·e = 27.18281828459045;
    /// n_tot 30: ARE = (30 − 27.18281828459045)/30 = 0.0939060571803183.
    @Test func growthWithModel() async throws {
        let model = Model(tObs: 600, version: 4, mode: "growth", samples: 80, trees: [Self.leaf(1), Self.leaf(1)])
        let o = try await Self.predictWithModels([model], [[Self.parameters(3)], [Self.size(3, nTot: 30)]], mode: "growth")
        #expect(o.alerts.count == 1)
        #expect(abs(o.alerts[0].nTot - 27.18281828459045) < 1e-12)
        #expect(abs(o.stats[0].are - 0.0939060571803183) < 1e-14)
    }

    /// The model's shift c is added to its prediction: ln-growth 1 + 0.5, N̂ = 10·e^1.5 = 44.81689070338064;
    /// n_tot 30: ARE = 14.81689070338064/30 = 0.4938963567793548.
    @Test func growthModelShiftIsAdded() async throws {
        let model = Model(tObs: 600, version: 4, mode: "growth", samples: 80, trees: [Self.leaf(1)], shift: 0.5)
        let o = try await Self.predictWithModels([model], [[Self.parameters(3)], [Self.size(3, nTot: 30)]], mode: "growth")
        #expect(abs(o.alerts[0].nTot - 44.81689070338064) < 1e-11)
        #expect(abs(o.stats[0].are - 0.4938963567793548) < 1e-13)
    }

    /// Parameters without the series features (a course estimator over Kafka): even with a model,
    /// the forecast is the fallback min(10 + 8, 10·10) = 18, counted `no_features`, and no sample.
    @Test func growthWithoutFeaturesFallsBack() async throws {
        let model = Model(tObs: 600, version: 4, mode: "growth", samples: 80, trees: [Self.leaf(1)])
        let o = try await Self.predictWithModels([model], [[Self.parameters(3, features: nil)], [Self.size(3, nTot: 30)]],
                                                 mode: "growth")
        #expect(o.alerts.map(\.nTot) == [18])
        #expect(o.stats.map(\.are) == [0.4])
        #expect(o.samples.isEmpty)
        #expect(o.counters["no_features"] == 1 && o.counters["rejected.sample_no_features"] == 1)
        // A feature missing from the object is the same as none.
        var partial = Self.seriesFeatures
        partial["seismic_p"] = nil
        let p = try await Self.predictWithModels([model], [[Self.parameters(4, features: partial)]], mode: "growth")
        #expect(p.alerts.map(\.nTot) == [18] && p.counters["no_features"] == 1)
    }

    /// A course model reaching a growth predictor is ignored and counted.
    @Test func modelOfAnotherModeIsIgnored() async throws {
        let model = Model(tObs: 600, version: 1, mode: "course", samples: 20, trees: [Self.leaf(7)])
        let o = try await Self.predictWithModels([model], [[Self.parameters(1)]], mode: "growth")
        #expect(o.counters["models_other_mode"] == 1)
        #expect(o.alerts.map(\.nTot) == [18])
    }

    // MARK: none mode

    /// Raw Hawkes: N̂ = 18 even with a model of mode none; samples are the course's.
    @Test func noneIgnoresModels() async throws {
        let model = Model(tObs: 600, version: 1, mode: "none", samples: 20, trees: [Self.leaf(7)])
        let o = try await Self.predictWithModels([model], [[Self.parameters(1)], [Self.size(1, nTot: 20)]], mode: "none")
        #expect(o.counters["models_unused"] == 1)
        #expect(o.alerts.map(\.nTot) == [18])
        #expect(o.stats.map(\.are) == [0.1])   // |18 − 20|/20
        #expect(o.samples == [Sample(cascade: 1, tObs: 600, x: [0.001, 0.5, 4], w: 1.25, growth: 2)])  // 10·0.5/4; 20/10
    }

    // MARK: guards

    /// G1 = 0: N̂ = n_obs = 10; n_tot 20: ARE 0.5; the course W is undefined: no sample.
    @Test func zeroG1GivesNoCourseSample() async throws {
        let o = try await Self.predict([[Self.parameters(1, g1: 0), Self.size(1, nTot: 20)]], mode: "course")
        #expect(o.alerts.map(\.nTot) == [10])
        #expect(o.stats.map(\.are) == [0.5])
        #expect(o.samples.isEmpty)
        #expect(o.counters["rejected.sample_g1_zero"] == 1)
    }

    /// n* ≥ 1 is clamped: everything emitted stays finite (JSON-encodable) and is counted.
    @Test(arguments: ["none", "course", "growth"])
    func explodingBranchingFactorStaysFinite(mode: String) async throws {
        let p = CascadeParameters(cascade: 1, msg: "m", tObs: 600, nObs: 10, nSupp: .infinity, p: 0.05,
                                  beta: 0.001, nStar: 1.5, g1: 4, features: Self.seriesFeatures)
        let o = try await Self.predict([[.parameters(p), Self.size(1, nTot: 20)]], mode: mode)
        #expect(o.counters["clamped_n_star"] == 1)
        #expect(o.alerts.count == 1 && o.stats.count == 1 && o.samples.count == 1)
        for m in o.alerts.map(Message.alert) + o.stats.map(Message.stat) + o.samples.map(Message.sample) {
            _ = WireFormat.encode(m)  // traps on NaN or infinity
        }
        #expect(o.alerts.allSatisfy { $0.nTot.isFinite && $0.nTot >= 10 })
    }

    @Test func invalidParametersAreRejected() async throws {
        let nan = CascadeParameters(cascade: 1, msg: "m", tObs: 600, nObs: 10, nSupp: 3, p: 0.01, beta: 0.001,
                                    nStar: -0.5, g1: 1)
        let noObs = CascadeParameters(cascade: 2, msg: "m", tObs: 600, nObs: 0, nSupp: 3, p: 0.01, beta: 0.001,
                                      nStar: 0.5, g1: 1)
        let o = try await Self.predict([[.parameters(nan), .parameters(noObs)]], mode: "course")
        #expect(o.alerts.isEmpty)
        #expect(o.counters["rejected.invalid_n_star"] == 1)
        #expect(o.counters["rejected.invalid_n_obs"] == 1)
    }

    /// A course-format message without G1: G1 = n_supp·(1 − n*) = 8·0.5 = 4, as in the first test.
    @Test func missingG1IsDerivedFromNSupp() async throws {
        let p = CascadeParameters(cascade: 1, msg: "m", tObs: 600, nObs: 10, nSupp: 8, p: 0.01, beta: 0.001,
                                  nStar: 0.5, g1: .nan)
        let o = try await Self.predict([[.parameters(p), Self.size(1, nTot: 30)]], mode: "course")
        #expect(o.samples == [Sample(cascade: 1, tObs: 600, x: [0.001, 0.5, 4], w: 2.5, growth: 3)])
    }

    /// The base spec's parameters (issue 14): no n_star, no G1. n* = p·E[m] = 0.01·35 = 0.35 with
    /// the course's alpha 2.4, mu 10 (E[m] = 10·1.4/0.4 = 35); G1 = s·(1 − n*) = 8·0.65 = 5.2
    /// with s = 8 supplementary events (n_supp 8 read as supplementary, or 18 read as the total
    /// with n_obs 10). Course mode without a model: N = 10 + 5.2/0.65 = 18, ARE = |18 − 30|/30 =
    /// 0.4, W = (30 − 10)·0.65/5.2 = 2.5.
    @Test(arguments: [(8.0, "supplementary"), (18.0, "total")])
    func missingNStarAndG1AreDerived(nSupp: Double, meaning: String) async throws {
        let p = CascadeParameters(cascade: "tw1", msg: "m", tObs: 600, nObs: 10, nSupp: nSupp, nSuppMeaning: nil,
                                  p: 0.01, beta: 0.001, nStar: .nan, g1: .nan)
        let o = try await Self.predict([[.parameters(p), .size(CascadeSize(cascade: "tw1", tObs: 600, nTot: 30, tEnd: 0))]],
                                       mode: "course", extra: ["n_supp": .string(meaning)])
        #expect(o.counters["computed_n_star"] == 1 && o.counters["computed_G1"] == 1)
        #expect(o.alerts.count == 1 && abs(o.alerts[0].nTot - 18) < 1e-9)
        #expect(o.stats.count == 1 && abs(o.stats[0].are - 0.4) < 1e-12)
        #expect(o.samples.count == 1 && o.samples[0].cascade == "tw1")
        let x = o.samples[0].x
        #expect(x.count == 3 && x[0] == 0.001 && abs(x[1] - 0.35) < 1e-12 && abs(x[2] - 5.2) < 1e-12)
        #expect(abs(o.samples[0].w - 2.5) < 1e-9)
    }

    /// alpha 3, mu 2: E[m] = 2·2/1 = 4, so n* = 0.1·4 = 0.4 and G1 = 6·0.6 = 3.6; N = 10 + 6 = 16.
    @Test func markOptionsSetTheDerivedNStar() async throws {
        let p = CascadeParameters(cascade: 1, msg: "m", tObs: 600, nObs: 10, nSupp: 6, nSuppMeaning: nil,
                                  p: 0.1, beta: 0.001, nStar: .nan, g1: .nan)
        let o = try await Self.predict([[.parameters(p)]], mode: "course",
                                       extra: ["alpha": .double(3), "mu": .double(2)])
        #expect(o.alerts.count == 1 && abs(o.alerts[0].nTot - 16) < 1e-9)
    }

    // MARK: duplicates, alerts, memory bounds

    @Test func duplicatesAreIgnoredAndCounted() async throws {
        let o = try await Self.predict([
            [Self.parameters(1), Self.parameters(1, nObs: 12)],  // waiting duplicate
            [Self.size(1, nTot: 30)],
            [Self.size(1, nTot: 31), Self.parameters(1)],         // after completion
            [Self.size(2, nTot: 5), Self.size(2, nTot: 5)],       // waiting size duplicate
        ], mode: "course")
        #expect(o.alerts.count == 1 && o.stats.count == 1)
        #expect(o.stats[0].are == 0.4)
        #expect(o.counters["rejected.duplicate_parameters"] == 2)
        #expect(o.counters["rejected.duplicate_size"] == 2)
        #expect(o.counters["pending_sizes_at_end"] == 1)
    }

    /// Same cascade id, other window: a different pair.
    @Test func windowsArePairedSeparately() async throws {
        let o = try await Self.predict([
            [Self.parameters(1, tObs: 600), Self.parameters(1, tObs: 1200, nObs: 20, g1: 2)],
            [Self.size(1, tObs: 1200, nTot: 30), Self.size(1, tObs: 600, nTot: 30)],
        ], mode: "course")
        // 1200: N̂ = 20 + 2/(1 − 0.5) = 24, ARE = 6/30 = 0.2; 600: ARE 0.4.
        #expect(o.stats == [Stat(cascade: 1, tObs: 1200, are: 0.2, forecast: 24, nTot: 30, nObs: 20),
                            Stat(cascade: 1, tObs: 600, are: 0.4, forecast: 18, nTot: 30, nObs: 10)])
        #expect(o.alerts.map(\.tObs) == [600, 1200])
    }

    /// alert_min_size 20: the forecast 18 raises no alert, but is still measured.
    @Test func alertThreshold() async throws {
        let o = try await Self.predict([[Self.parameters(1), Self.parameters(2, g1: 10), Self.size(1, nTot: 30)]],
                                       mode: "course", extra: ["alert_min_size": .double(20)])
        // Cascade 2: 10 + 10/0.5 = 30 >= 20.
        #expect(o.alerts.map(\.cascade) == [2])
        #expect(o.stats.map(\.cascade) == [1])
    }

    /// max_pending 2: the third forecast evicts the first; its size then waits alone.
    @Test func oldestPendingIsEvicted() async throws {
        let o = try await Self.predict([
            [Self.parameters(1), Self.parameters(2), Self.parameters(3)],
            [Self.size(3, nTot: 18), Self.size(2, nTot: 18), Self.size(1, nTot: 18)],
        ], mode: "course", extra: ["max_pending": .int(2)])
        #expect(o.stats.map(\.cascade) == [3, 2])
        #expect(o.counters["evicted"] == 1)
        #expect(o.counters["pending_sizes_at_end"] == 1)
    }

    /// A TTL of a nanosecond: the forecast has expired when the next batch comes.
    @Test func waitingHalvesExpire() async throws {
        let o = try await Self.predict([[Self.parameters(1)], [Self.size(1, nTot: 30)]], mode: "course",
                                       extra: ["pending_ttl": .double(1e-9)])
        #expect(o.alerts.count == 1)
        #expect(o.stats.isEmpty)
        #expect(o.counters["expired"] == 1)
        #expect(o.counters["pending_sizes_at_end"] == 1)
    }

    /// AREs 0.4, 0.1 and 0.9 (course, no model): median 0.4, mean 0.4667, one of three within 20 %.
    @Test func windowSummaryCounters() async throws {
        // Cascade 2: N̂ = 18, n_tot 20: ARE 0.1. Cascade 3: N̂ = 18, n_tot 180: ARE 0.9.
        let o = try await Self.predict([
            [Self.parameters(1), Self.parameters(2), Self.parameters(3)],
            [Self.size(1, nTot: 30), Self.size(2, nTot: 20), Self.size(3, nTot: 180)],
        ], mode: "course")
        #expect(o.counters["are600_median_milli"] == 400)
        #expect(o.counters["are600_mean_milli"] == 467)
        #expect(o.counters["are600_within20_milli"] == 333)
    }
}
