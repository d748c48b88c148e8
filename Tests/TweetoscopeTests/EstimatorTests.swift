// The estimator stage as the daemon runs it (plugin loaded with dlopen), checked against the
// golden MAP values of ../shared/golden/hawkes_golden.json (60-digit reference computations).
import Foundation
import Testing
import TweetoscopeCore

private struct GoldenCase {
    var id: String
    var tObs: Int
    var times: [Double]
    var marks: [Double]
    var p: Double, beta: Double, g1: Double, nStar: Double, n: Double
}

private func goldenCases() throws -> [GoldenCase] {
    let path = repositoryRoot() + "/../shared/golden/hawkes_golden.json"
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let cases = try #require(root["cases"] as? [[String: Any]])
    return cases.compactMap { c in
        guard let T = c["T"] as? Double, T == T.rounded(), let map = c["map_global"] as? [String: Any],
              let prediction = map["prediction"] as? [String: Any] else { return nil }
        return GoldenCase(id: c["id"] as! String, tObs: Int(T), times: c["t"] as! [Double], marks: c["m"] as! [Double],
                          p: map["p"] as! Double, beta: map["beta"] as! Double, g1: prediction["G1"] as! Double,
                          nStar: prediction["n_star"] as! Double, n: prediction["N"] as! Double)
    }
}

private func close(_ a: Double, _ b: Double, _ rel: Double) -> Bool { abs(a - b) <= rel * max(abs(b), 1e-300) }

@Suite struct EstimatorTests {
    @Test func parametersMatchGoldenMAPForEverySyntheticCascade() async throws {
        let cases = try goldenCases().filter { $0.id.hasPrefix("synthetic") && $0.marks.first != 0 }
        #expect(cases.count >= 20)
        let series = cases.enumerated().map { i, c in
            Message.series(Series(cascade: CascadeID(i), msg: c.id, tObs: c.tObs, times: c.times, magnitudes: c.marks))
        }
        let (out, counters) = try await runStage("estimator", plugin: "estimator",
                                                 inputs: ["series": [series]], outputs: ["parameters"])
        let params = out["parameters"]!.compactMap { m -> CascadeParameters? in
            if case .parameters(let p) = m { return p }
            return nil
        }
        #expect(params.count == cases.count)
        #expect(counters["fits"] == cases.count)
        for (i, c) in cases.enumerated() {
            let p = params[i]
            #expect(p.cascade == CascadeID(i) && p.msg == c.id && p.tObs == c.tObs && p.nObs == c.times.count)
            #expect(close(p.p, c.p, 1e-6), "\(c.id): p \(p.p) vs \(c.p)")
            #expect(close(p.beta, c.beta, 1e-6), "\(c.id): beta \(p.beta) vs \(c.beta)")
            #expect(close(p.g1, c.g1, 1e-6), "\(c.id): G1")
            #expect(close(p.nStar, c.nStar, 1e-6), "\(c.id): n_star")
            // n_supp is the supplementary count: N - n_obs.
            #expect(close(p.nSupp, c.n - Double(c.times.count), 1e-5), "\(c.id): n_supp \(p.nSupp) vs \(c.n - Double(c.times.count))")
        }
    }

    @Test func failedFitIsCountedAndSkipped() async throws {
        // A root with 0 followers and later events has no MAP; with zero_root_mark 0 it is rejected.
        let bad = Message.series(Series(cascade: 1, msg: "m", tObs: 600, times: [0, 10, 20], magnitudes: [0, 5, 7]))
        let good = Message.series(Series(cascade: 2, msg: "m", tObs: 600, times: [0, 10, 20], magnitudes: [100, 5, 7]))
        let (out, counters) = try await runStage("estimator", plugin: "estimator", options: ["zero_root_mark": .double(0)],
                                                 inputs: ["series": [[bad, good]]], outputs: ["parameters"])
        #expect(out["parameters"]!.map(\.cascade) == [2])
        #expect(counters["rejected.fit_zero_root_mark"] == 1)
        // By default the root's 0 is read as 1 follower and the cascade gets parameters.
        let (again, _) = try await runStage("estimator", plugin: "estimator",
                                            inputs: ["series": [[bad]]], outputs: ["parameters"])
        #expect(again["parameters"]!.map(\.cascade) == [1])
    }

    @Test func rejectsInvalidOptions() throws {
        let d = try stageDescriptor("estimator", plugin: "estimator")
        #expect(throws: StageConfigError.self) { try d.make("e", options(d, ["alpha": .double(1.5)])) }
        #expect(throws: StageConfigError.self) { try d.make("e", options(d, ["max_n_star": .double(1.5)])) }
        #expect(throws: StageConfigError.self) { try d.make("e", options(d, ["prior": .list([.double(1)])])) }
    }

    // MARK: series features (the `features` object of parameters), checked against hand computations

    /// Runs the estimator on one series and returns the `features` it sent.
    private func features(_ times: [Double], _ marks: [Double], tObs: Int) async throws -> [String: Double] {
        let series = Message.series(Series(cascade: 1, msg: "m", tObs: tObs, times: times, magnitudes: marks))
        let (out, _) = try await runStage("estimator", plugin: "estimator", inputs: ["series": [[series]]], outputs: ["parameters"])
        guard case .parameters(let p)? = out["parameters"]?.first else {
            Issue.record("no parameters")
            return [:]
        }
        return try #require(p.features)
    }

    /// Five events up to T_obs = 600 s, one after (left out), marks [10, 40, 20, 0, 30]:
    /// root 10; max 40; median of 0,10,20,30,40 = 20; sum 100; after 0.75·600 = 450: t = 500
    /// (1 of 5 = 0.2); after 300: t = 400, 500 (0.4); in (0, 150]: t = 100 (0.2).
    @Test func shapeFeaturesOfAHandMadeSeries() async throws {
        let f = try await features([0, 100, 160, 400, 500, 700], [10, 40, 20, 0, 30, 1000], tObs: 600)
        #expect(f["root_m"] == 10)
        #expect(f["max_m"] == 40)
        #expect(f["median_m"] == 20)
        #expect(f["sum_m"] == 100)
        #expect(f["share_after_3q"] == 0.2)
        #expect(f["share_after_half"] == 0.4)
        #expect(f["share_first_quarter"] == 0.2)
        // An even count: the median is the mean of the two middle marks, (2 + 4)/2.
        let even = try await features([0, 10, 20, 30], [1, 2, 4, 8], tObs: 600)
        #expect(even["median_m"] == 3)
        #expect(even["share_first_quarter"] == 0.75 && even["share_after_half"] == 0)
    }

    /// Series longer than the estimator's selection cut-off (it picks the median by selection,
    /// not by a sort): the median and max equal those of the test's own sort of the marks, for
    /// odd and even counts, with many ties, an adversarial sawtooth and an already-sorted run.
    @Test func medianAndMaxOfLongSeriesMatchASort() async throws {
        var rng = SplitMix64(seed: 17)
        let shapes: [(String, (Int) -> Double)] = [
            ("random with ties", { _ in Double(rng.next(below: 50)) }),
            ("sawtooth", { i in Double(i % 7 == 0 ? 3000 - i : i % 13) }),
            ("ascending", { i in Double(i) }),
            ("descending", { i in Double(5000 - i) }),
            ("constant", { _ in 3 }),
        ]
        for (name, mark) in shapes {
            for n in [17, 100, 101, 1000, 2001] {
                let marks = (0..<n).map(mark)
                let times = (0..<n).map { Double($0 * 1800 / n) }
                let f = try await features(times, marks, tObs: 3600)
                let sorted = marks.sorted()
                let median = n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
                #expect(f["median_m"] == median, "\(name), n = \(n)")
                #expect(f["max_m"] == sorted[n - 1], "\(name), n = \(n)")
                #expect(f["sum_m"] == marks.reduce(0, +), "\(name), n = \(n)")
            }
        }
    }

    /// SEISMIC on 3 events, t = [0, 100, 400] s, marks [10, 20, 30], T_obs = 600 s; s0 = 300,
    /// θ = 0.242, c = θ/(s0(1+θ)) = 0.242/372.6 = 6.4949007e-4 /s. Ages T − t = 600, 500, 200:
    ///   Φ(600) = 1 − 2^−0.242/1.242 = 1 − 0.8455723/1.242 = 0.3191850
    ///   Φ(500) = 1 − (5/3)^−0.242/1.242 = 1 − 0.8837158/1.242 = 0.2884736
    ///   Φ(200) = c·200 = 0.1298980 (within s0: linear)
    /// effective exposure 10·0.3191850 + 20·0.2884736 + 30·0.1298980 = 12.858262;
    /// S = 60 − 12.858262 = 47.141738; p̂ = (3 − 1)/12.858262 = 0.155542.
    @Test func seismicExposureAndInfectiousnessOfThreeEvents() async throws {
        let f = try await features([0, 100, 400], [10, 20, 30], tObs: 600)
        #expect(abs(try #require(f["seismic_exposure"]) - 47.141738) < 1e-5)
        #expect(abs(try #require(f["seismic_p"]) - 0.155542) < 1e-6)
        // Both ages within s0 (T_obs = 200, t = [0, 50], marks [10, 30]): Φ linear, Φ(200) = 0.1298980,
        // Φ(150) = 0.0974235; effective 1.298980 + 2.922705 = 4.221685; S = 40 − 4.221685 = 35.778315;
        // p̂ = 1/4.221685 = 0.236872.
        let young = try await features([0, 50], [10, 30], tObs: 200)
        #expect(abs(try #require(young["seismic_exposure"]) - 35.778315) < 1e-5)
        #expect(abs(try #require(young["seismic_p"]) - 0.236872) < 1e-6)
    }
}
