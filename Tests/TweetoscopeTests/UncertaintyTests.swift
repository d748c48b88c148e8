// Issue 12 (4): the predictor's 80 % prediction interval and p_viral, its extra alert and stat
// fields, `alert_min_p_viral`, and models loaded from `model_path`. Expected values were computed
// independently in Python: quantiles with numpy.quantile (linear, "type 7"), the normal survival
// function with scipy.stats.norm.sf, then checked by hand (see each test).
import Glibc
import Testing
import TweetoscopeCore

/// A temporary folder for model files.
private struct ModelFiles {
    let dir: String

    init() {
        var template = Array("/tmp/tweetoscope-models-XXXXXX".utf8CString)
        dir = template.withUnsafeMutableBufferPointer { buffer in
            guard let made = mkdtemp(buffer.baseAddress!) else { fatalError("mkdtemp failed") }
            return String(cString: made)
        }
    }

    /// Writes `lines` (each followed by a newline) to `<dir>/<name>` and returns the path.
    func write(_ name: String, _ lines: [String]) -> String {
        let path = dir + "/" + name
        let f = fopen(path, "wb")!
        for line in lines { fputs(line + "\n", f) }
        fclose(f)
        return path
    }

    func remove() {
        if let d = opendir(dir) {
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                if name != "." && name != ".." { unlink(dir + "/" + name) }
            }
            closedir(d)
        }
        rmdir(dir)
    }
}

private func line(_ model: Model) -> String { String(decoding: WireFormat.encode(.model(model)), as: UTF8.self) }

private func leaf(_ value: Double) -> RegressionTree {
    RegressionTree(feature: [-1], threshold: [0], left: [-1], right: [-1], value: [value])
}

/// 12 sorted residuals: numpy.quantile gives q10 = −0.48 (h = 11·0.1 = 1.1: −0.5 + 0.1·(−0.3 + 0.5))
/// and q90 = 0.925 (h = 9.9: 0.7 + 0.9·(0.95 − 0.7)).
private let residuals: [Double] = [-0.9, -0.5, -0.3, -0.1, 0.0, 0.05, 0.2, 0.35, 0.5, 0.7, 0.95, 1.3]

private func parameters(_ cid: CascadeID, tObs: Int = 600, nObs: Int, nStar: Double = 0.5, g1: Double = 4,
                        t0: Double? = nil) -> Message {
    .parameters(CascadeParameters(cascade: cid, msg: "m", tObs: tObs, nObs: nObs, nSupp: g1 / (1 - nStar),
                                  p: nStar / 35, beta: 0.001, nStar: nStar, g1: g1, t0: t0,
                                  features: PredictorTests.seriesFeatures))
}

private struct Run {
    var alerts: [Alert] = []
    var stats: [Stat] = []
    var counters: [String: Int] = [:]
}

private func predict(_ batches: [[Message]], _ options: [String: OptionValue]) async throws -> Run {
    let r = try await runStage("predictor", plugin: "predictor", options: options,
                               inputs: ["properties": batches], outputs: ["alerts", "stats"])
    var run = Run(counters: r.counters)
    for m in r.outputs["alerts"] ?? [] { if case .alert(let a) = m { run.alerts.append(a) } }
    for m in r.outputs["stats"] ?? [] { if case .stat(let s) = m { run.stats.append(s) } }
    return run
}

private func close(_ a: Double, _ b: Double, _ tol: Double = 1e-9) -> Bool { abs(a - b) <= tol * max(1, abs(b)) }

@Suite struct UncertaintyTests {
    /// growth, a loaded model (version 7) predicting ln 2: N̂ = 100·2 = 200; interval
    /// [200·e^−0.48, 200·e^0.925] = [123.75667836122817, 504.3736520716296]; viral_size 300:
    /// ln(300/200) = 0.405 and 4 of the 12 residuals (0.5, 0.7, 0.95, 1.3) are ≥ it: p = 1/3.
    @Test func growthIntervalFromResiduals() async throws {
        let files = ModelFiles()
        defer { files.remove() }
        let path = files.write("m.jsonl", [line(Model(tObs: 600, version: 7, mode: "growth", samples: 40,
                                                      trees: [leaf(log(2.0))], residuals: residuals))])
        let run = try await predict([[parameters(1, nObs: 100, t0: 1000), .size(CascadeSize(cascade: 1, tObs: 600, nTot: 250, tEnd: 9))]],
                                    ["mode": .string("growth"), "model_path": .string(path), "viral_size": .double(300)])
        let a = try #require(run.alerts.first)
        #expect(close(a.nTot, 200))
        #expect(a.nObs == 100 && a.model == 7 && a.t == 1600)
        let i = try #require(a.interval)
        #expect(close(i[0], 123.75667836122817) && close(i[1], 504.3736520716296))
        let p = try #require(a.pViral)
        #expect(close(p, 1.0 / 3))
        // The stat joins forecast and truth: ARE = |200 − 250|/250 = 0.2.
        let s = try #require(run.stats.first)
        let forecast = try #require(s.forecast)
        #expect(close(s.are, 0.2) && close(forecast, 200) && s.nTot == 250 && s.nObs == 100)
        #expect(run.counters["models_from_file"] == 1)
    }

    /// growth without a model: N̂ = min(10 + 4/(1 − 0.5), 10·10) = 18; fallback_sigma 0.5:
    /// [18·e^(−1.2815515655446004·0.5), 18·e^(+…)] = [9.483903329328658, 34.16314873202479], whose
    /// lower end is raised to n_obs = 10;
    /// viral_size 30: P(18·e^ε ≥ 30) = 1 − Φ(ln(30/18)/0.5) = 1 − Φ(1.0216512…) = 0.15347299656473
    /// (scipy.stats.norm.sf; tables: 1 − Φ(1.02) = 0.1539).
    @Test func fallbackIsLogNormal() async throws {
        let run = try await predict([[parameters(1, nObs: 10)]],
                                    ["mode": .string("growth"), "fallback_sigma": .double(0.5), "viral_size": .double(30)])
        let a = try #require(run.alerts.first)
        #expect(close(a.nTot, 18) && a.model == 0 && a.t == nil)
        let i = try #require(a.interval)
        #expect(i[0] == 10 && close(i[1], 34.16314873202479))
        let p = try #require(a.pViral)
        #expect(close(p, 0.15347299656473, 1e-12))
    }

    /// course with a model W = 2: N̂ = 10 + 2·8 = 26; the residuals scale the supplementary count
    /// 16: [10 + 16·e^−0.48, 10 + 16·e^0.925] = [19.900534268898255, 50.34989216573037];
    /// viral_size 30: 16·e^ε ≥ 20 ⇔ ε ≥ ln 1.25 = 0.223: 5 of 12 residuals, p = 5/12.
    @Test func courseIntervalScalesTheSupplementaryCount() async throws {
        let files = ModelFiles()
        defer { files.remove() }
        let path = files.write("m.jsonl", [line(Model(tObs: 600, version: 3, mode: "course", samples: 40,
                                                      trees: [leaf(2)], residuals: residuals))])
        let run = try await predict([[parameters(1, nObs: 10)]],
                                    ["mode": .string("course"), "model_path": .string(path), "viral_size": .double(30)])
        let a = try #require(run.alerts.first)
        #expect(close(a.nTot, 26) && a.model == 3)
        let i = try #require(a.interval)
        #expect(close(i[0], 19.900534268898255) && close(i[1], 50.34989216573037))
        let p = try #require(a.pViral)
        #expect(close(p, 5.0 / 12))
    }

    /// The lower bound never goes below n_obs, and n_obs ≥ viral_size gives p_viral = 1: N̂ = 200
    /// with fallback_sigma 3 would give 200·e^−3.84 = 4.3 < n_obs = 100.
    @Test func intervalIsAtLeastObservedAndObservedViralIsCertain() async throws {
        let files = ModelFiles()
        defer { files.remove() }
        let path = files.write("m.jsonl", [line(Model(tObs: 600, version: 1, mode: "growth", samples: 40, trees: [leaf(log(2.0))]))])
        let run = try await predict([[parameters(1, nObs: 100)]],
                                    ["mode": .string("growth"), "model_path": .string(path), "fallback_sigma": .double(3),
                                     "viral_size": .double(50)])
        let a = try #require(run.alerts.first)
        let i = try #require(a.interval)
        #expect(i[0] == 100)
        #expect(a.pViral == 1)
    }

    /// alert_min_p_viral 0.2: of the two forecasts (p = 1/3 for N̂ = 200, and for N̂ = 2·20 = 40:
    /// ln(300/40) = 2.01 > 1.3, p = 0) only the first is alerted; the other is counted.
    @Test func alertsBelowMinPViralAreSuppressedAndCounted() async throws {
        let files = ModelFiles()
        defer { files.remove() }
        let path = files.write("m.jsonl", [line(Model(tObs: 600, version: 1, mode: "growth", samples: 40,
                                                      trees: [leaf(log(2.0))], residuals: residuals))])
        let run = try await predict([[parameters(1, nObs: 100), parameters(2, nObs: 20)]],
                                    ["mode": .string("growth"), "model_path": .string(path), "viral_size": .double(300),
                                     "alert_min_p_viral": .double(0.2)])
        #expect(run.alerts.map(\.cascade) == [1])
        #expect(run.counters["alerts_suppressed_p_viral"] == 1)
        #expect(run.counters["forecasts"] == 2)
    }

    /// A folder of model files: read in name order, the later file's model of a window wins.
    @Test func modelFolderLaterFileWins() async throws {
        let files = ModelFiles()
        defer { files.remove() }
        _ = files.write("a.jsonl", [line(Model(tObs: 600, version: 1, mode: "growth", samples: 5, trees: [leaf(log(3.0))]))])
        _ = files.write("b.jsonl", [line(Model(tObs: 600, version: 2, mode: "growth", samples: 5, trees: [leaf(log(2.0))]))])
        let run = try await predict([[parameters(1, nObs: 100)]], ["mode": .string("growth"), "model_path": .string(files.dir)])
        let a = try #require(run.alerts.first)
        #expect(close(a.nTot, 200) && a.model == 2)
    }

    /// A corrupt or incompatible model file is a configuration error naming the file and line.
    @Test(arguments: [
        ("{\"type\": \"model\", \"T_obs\": 600", "m.jsonl:2: invalid_json"),
        ("{\"type\": \"stat\", \"cid\": 1, \"T_obs\": 600, \"ARE\": 0.1}", "m.jsonl:2: a stat message, expected a model"),
        (line(Model(tObs: 600, version: 1, mode: "course", samples: 5, trees: [leaf(1)])), "m.jsonl:2: a model of mode course"),
        (line(Model(tObs: 600, version: 1, mode: "growth", samples: 5,
                    trees: [RegressionTree(feature: [15, -1, -1], threshold: [0, 0, 0], left: [1, -1, -1], right: [2, -1, -1], value: [0, 1, 2])])),
         "m.jsonl:2: tree 0 splits on a feature beyond the 15 of mode growth"),
    ])
    func badModelFileIsAConfigurationError(bad: String, expected: String) throws {
        let files = ModelFiles()
        defer { files.remove() }
        let path = files.write("m.jsonl", [line(Model(tObs: 600, version: 1, mode: "growth", samples: 5, trees: [leaf(0)])), bad])
        let d = try stageDescriptor("predictor", plugin: "predictor")
        do {
            _ = try d.make("predictor", options(d, ["mode": .string("growth"), "model_path": .string(path)]))
            Issue.record("no error for \(bad)")
        } catch let error as StageConfigError {
            #expect(error.option == "model_path")
            #expect(error.message.contains(files.dir + "/" + expected), "\(error.message)")
        }
    }

    // MARK: wire format of the new fields

    /// The alert's and stat's new fields are written with the course's (keys sorted) and read back;
    /// absent, they are omitted, so a course alert keeps its exact bytes.
    @Test func alertAndStatFieldsRoundTrip() throws {
        let alert = Alert(cascade: 5, msg: "m", tObs: 600, nTot: 200.5, nObs: 100, t: 1600, model: 7,
                          interval: [120.25, 500], pViral: 0.25)
        let bytes = String(decoding: WireFormat.encode(.alert(alert)), as: UTF8.self)
        #expect(bytes == #"{"T_obs":600,"cid":5,"interval":[120.25,500],"model":7,"msg":"m","n_obs":100,"n_tot":200.5,"p_viral":0.25,"t":1600,"type":"alert"}"#)
        #expect(try WireFormat.decode(Array(bytes.utf8)) == .alert(alert))
        let course = String(decoding: WireFormat.encode(.alert(Alert(cascade: 5, msg: "m", tObs: 600, nTot: 3))), as: UTF8.self)
        #expect(course == #"{"T_obs":600,"cid":5,"msg":"m","n_tot":3,"type":"alert"}"#)
        let stat = Stat(cascade: 5, tObs: 600, are: 0.25, forecast: 250, nTot: 200, nObs: 100)
        let statBytes = String(decoding: WireFormat.encode(.stat(stat)), as: UTF8.self)
        #expect(statBytes == #"{"ARE":0.25,"T_obs":600,"cid":5,"forecast":250,"n_obs":100,"n_tot":200,"type":"stat"}"#)
        #expect(try WireFormat.decode(Array(statBytes.utf8)) == .stat(stat))
    }

    @Test(arguments: [
        #"{"type":"alert","cid":1,"msg":"m","T_obs":600,"n_tot":3,"interval":[5,2]}"#,
        #"{"type":"alert","cid":1,"msg":"m","T_obs":600,"n_tot":3,"interval":[5]}"#,
        #"{"type":"alert","cid":1,"msg":"m","T_obs":600,"n_tot":3,"p_viral":1.5}"#,
        #"{"type":"model","T_obs":600,"version":1,"mode":"growth","samples":1,"trees":[],"residuals":[0.5,0.1]}"#,
    ])
    func badNewFieldsAreRejected(json: String) {
        #expect(throws: WireFormatError.self) { try WireFormat.decode(Array(json.utf8)) }
    }
}
