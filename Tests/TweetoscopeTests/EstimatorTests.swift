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
}
