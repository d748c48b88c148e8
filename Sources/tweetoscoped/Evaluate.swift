// `tweetoscoped evaluate`: offline backtests of the forecasts. The project's own stages run
// in-process through the runtime's Pipeline (evaluate names stage types in the pipelines it
// builds, as a configuration file does; it links no plugin code):
//   1. once per data file: replay -> collector -> estimator, keeping the cascade_properties
//      (Hawkes parameters and final sizes) in memory;
//   2. per fold: the training properties -> predictor (one per mode) -> samples -> learner
//      (final_fit: one forest per window on every training sample) -> models;
//   3. per fold: the test properties -> predictor (one per mode, models loaded at start from
//      `model_path`) -> alerts and stats.
// Then it scores every forecast against the true final size beside a naive baseline, and writes
// summary.json, forecasts.csv, report.md and the plots (scripts/plot-evaluation, matplotlib).
import ArgumentParser
import Glibc
import TweetoscopeCore
import TweetoscopeRuntime

struct Evaluate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Backtest the forecasts offline: train, forecast every test cascade at each window, score, plot.",
        discussion: """
            Runs the project's collector, estimator, predictor and learner in-process and \
            deterministically. Trains the models on every cascade of --train (or loads --model), \
            then forecasts every cascade of --test at each window. Without --test it \
            cross-validates --train (--folds folds by cascade, shuffled with --seed). Input: the \
            formats the replay source reads (gzip accepted): the long format `cascade,t,m`, or \
            the course's `time,magnitude[,msg]` rows with their index file (--train-index, \
            --test-index; cascade ids are then the index rows, and a test cascade counts as a \
            duplicate of a training one when their observed series and sizes agree). Writes into the \
            --report directory: summary.json, forecasts.csv, report.md and PNG plots (made by \
            plot-evaluation with python3-matplotlib). Exit status: 0; 1 when the input has no \
            usable cascade or a stage failed; 3 when everything but the plots was written (the \
            plotting library is missing or the plot script failed; --no-plots skips them).
            """)

    @Option(help: ArgumentHelp("Training data (cascade,t,m; or course rows with --train-index; gzip accepted).", valueName: "DATA"))
    var train: String?

    @Option(help: ArgumentHelp("Test data; without it --train is cross-validated.", valueName: "DATA"))
    var test: String?

    @Option(help: ArgumentHelp("Course index file of --train (start_ind,end_ind): --train is then in the course format.", valueName: "FILE"))
    var trainIndex: String?

    @Option(help: ArgumentHelp("Course index file of --test (start_ind,end_ind): --test is then in the course format.", valueName: "FILE"))
    var testIndex: String?

    @Option(help: ArgumentHelp("Directory the report is written into (created).", valueName: "DIR"))
    var report: String

    @Option(name: .long, help: ArgumentHelp("A tweetoscoped configuration: the options of its collector, estimator, predictor and learner stages are used (not windows, terminated, mode). Its stages are not built, so its data and model files need not exist where the file is.", valueName: "FILE"))
    var config: String?

    @Option(help: "Observation windows T_obs in seconds, comma-separated.")
    var windows = "600,1200,3600"

    @Option(help: "Seconds without an event after which a cascade ends: its true size is the events up to then (604800 = the 7 days of SEISMIC: the full size).")
    var terminated = 604_800

    @Option(help: "Correction modes to evaluate, comma-separated (default: every mode of the predictor).")
    var modes: String?

    @Option(help: ArgumentHelp("Models (JSON lines of model messages, e.g. a file sink's models.jsonl) used instead of training for their mode.", valueName: "FILE"))
    var model: String?

    @Option(help: "Cross-validation folds (without --test).")
    var folds = 5

    @Option(help: "Seed of the cross-validation shuffle.")
    var seed = 0

    @Option(help: "Plugin directory (default: the configuration's, else the build's or installed one).")
    var pluginDir: String?

    @Flag(help: "Do not make the plots.")
    var noPlots = false

    func validate() throws {
        guard train != nil || (model != nil && test != nil) else {
            throw ValidationError("give --train DATA (and --test DATA), or --model FILE with --test DATA")
        }
        guard folds >= 2 else { throw ValidationError("--folds must be >= 2") }
        if trainIndex != nil && train == nil { throw ValidationError("--train-index needs --train") }
        if testIndex != nil && test == nil { throw ValidationError("--test-index needs --test") }
        guard terminated > 0 else { throw ValidationError("--terminated must be > 0") }
        _ = try parsedWindows()
    }

    func parsedWindows() throws -> [Int] {
        var result: [Int] = []
        for part in windows.split(separator: ",") {
            guard let w = Int(trimmed(part)), w > 0 else {
                throw ValidationError("--windows: expected positive whole seconds separated by commas, found \(windows)")
            }
            if !result.contains(w) { result.append(w) }
        }
        guard !result.isEmpty else { throw ValidationError("--windows: no window") }
        return result.sorted()
    }

    func run() async throws {
        LoggingSystem.bootstrap { label in StderrLogHandler(label: label, level: .warning) }
        let logger = Logger(label: "tweetoscoped.evaluate")
        do {
            var evaluation = try Evaluation(command: self, logger: logger)
            let status = try await evaluation.run()
            if status != 0 { throw ExitCode(status) }
        } catch let error as EvaluationError {
            writeStandardError("tweetoscoped evaluate: \(error.message)\n")
            throw ExitCode(error.status)
        } catch let errors as ConfigErrors {
            for d in errors.diagnostics { writeStandardError("\(d)\n") }
            throw ExitCode(exitConfigError)
        }
    }
}

struct EvaluationError: Error {
    var message: String
    var status: Int32 = 1
}

/// The parameters and final sizes of one cascade, per window.
struct CascadeProperties {
    var parameters: [Int: CascadeParameters] = [:]
    var sizes: [Int: CascadeSize] = [:]

    /// What identifies a cascade's content whatever its id and replay start time: per window,
    /// the final size and the fit of the observed series (the estimator is deterministic and
    /// works on times relative to the first tweet, so equal series give equal fits).
    var fingerprint: String {
        let windows = Set(parameters.keys).union(sizes.keys).sorted()
        return windows.map { w in
            let s = sizes[w].map { "\($0.nTot)" } ?? "-"
            let p = parameters[w].map { "\($0.nObs),\($0.p),\($0.beta),\($0.nStar),\($0.g1)" } ?? "-"
            return "\(w):\(s):\(p)"
        }.joined(separator: ";")
    }
}

/// One scored forecast.
struct ForecastRow {
    var cascade: CascadeID
    var tObs: Int
    var mode: String
    var fold: Int
    var nObs: Int
    var forecast: Double
    var lo: Double?
    var hi: Double?
    var pViral: Double?
    var nTot: Int
    var are: Double
}

struct Evaluation {
    let command: Evaluate
    let logger: Logger
    let windows: [Int]
    let registry = StageRegistry()
    /// Stage options taken from --config, as YAML lines per stage type.
    var userOptions: [String: [String]] = [:]
    var modes: [String] = []
    var defaultMode = ""
    let work: String

    init(command: Evaluate, logger: Logger) throws {
        self.command = command
        self.logger = logger
        windows = try command.parsedWindows()
        var template = Array("/tmp/tweetoscope-evaluate-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else {
            throw EvaluationError(message: "cannot create a temporary directory: \(String(cString: strerror(errno)))")
        }
        work = String(cString: made)
    }

    // MARK: - set-up

    mutating func setUp() throws {
        var pluginDirectory = command.pluginDir
        if let path = command.config {
            // Only the stages' options are read: the stages are not built, so what only their
            // factories check (the source's data file, the predictor's model_path) need not exist.
            let (config, _) = try ConfigLoader.load(sources: ConfigSources(paths: [path]), pluginDirectory: command.pluginDir,
                                                    buildStages: false)
            if pluginDirectory == nil { pluginDirectory = config.settings.pluginDirectory }
            let controlled: [String: Set<String>] = [
                "collector": ["windows", "terminated"],
                "estimator": [],
                "predictor": ["mode", "model_path", "alert_min_size", "alert_min_p_viral", "refit_every", "refit_growth", "max_samples", "min_samples", "model_wait"],
                "learner": ["mode", "refit_every", "refit_growth", "max_samples", "final_fit", "min_samples", "state_dir"],
            ]
            for stage in config.stages {
                guard let skip = controlled[stage.type], userOptions[stage.type] == nil else { continue }
                userOptions[stage.type] = stage.options.values.keys.sorted().filter { !skip.contains($0) }.map {
                    "\($0): \(yaml(stage.options.values[$0]!))"
                }
            }
        }
        let directory = pluginDirectory ?? PluginLoader.defaultDirectory()
        try registry.loadPlugins(directory: directory, names: ["replay", "collector", "estimator", "predictor", "learner"])
        for d in EvaluationSlots.descriptors { try registry.register(d, from: "tweetoscoped evaluate") }
        guard let predictor = registry.lookup("predictor")?.0,
              let modeOption = predictor.options.first(where: { $0.key == "mode" }),
              case .choice(let choices) = modeOption.type, case .string(let d)? = modeOption.defaultValue else {
            throw EvaluationError(message: "the predictor plugin declares no `mode` choice with a default")
        }
        guard predictor.options.contains(where: { $0.key == "model_path" }) else {
            throw EvaluationError(message: "the predictor plugin has no `model_path` option: it cannot load trained models (rebuild the plugins with this daemon)")
        }
        defaultMode = d
        if let list = command.modes {
            modes = []
            for m in list.split(separator: ",").map(trimmed) where !m.isEmpty {
                guard choices.contains(m) else {
                    throw EvaluationError(message: "--modes: unknown mode \(m) (the predictor's modes: \(choices.joined(separator: ", ")))")
                }
                if !modes.contains(m) { modes.append(m) }
            }
        } else {
            modes = choices
        }
        guard !modes.isEmpty else { throw EvaluationError(message: "--modes: no mode") }
    }

    // MARK: - running pipelines

    /// Runs the pipeline of `stages` (YAML of the `stages` mapping) and returns its summary.
    func runPipeline(_ stages: String, name: String) async throws -> RunSummary {
        let text = "progress_interval: 0\nlog_level: warning\nstages:\n" + stages
        let config = try ConfigLoader.load(text: text, file: "\(work)/\(name).yaml", registry: registry)
        let pipeline = Pipeline(config: config, logger: logger)
        let summary = await pipeline.run(stop: StopSignal())
        if let failed = summary.stages.first(where: { $0.error != nil }) {
            throw EvaluationError(message: "\(name): stage \(failed.name) (\(failed.type)) failed: \(failed.error!)")
        }
        return summary
    }

    func options(_ type: String) -> String {
        (userOptions[type] ?? []).map { "    \($0)\n" }.joined()
    }

    /// Replays `path` through the collector and the estimator; the properties of every cascade.
    /// `index`: the course index file of `path` (course format), nil for the long format.
    func readProperties(_ path: String, index: String?, role: String) async throws -> [CascadeID: CascadeProperties] {
        for file in [path] + (index.map { [$0] } ?? []) where access(file, R_OK) != 0 {
            throw EvaluationError(message: "\(file): cannot be read: \(String(cString: strerror(errno)))")
        }
        let slot = "properties.\(role)"
        let stages = """
              source:
                type: replay
                outputs: { tweets: tweets }
                path: \(quoted(absolute(path)))
            \(index.map { "    index: \(quoted(absolute($0)))\n" } ?? "")    sources: 1
                max_cascades: 50
                seed: 0
              collector:
                type: collector
                inputs: { tweets: tweets }
                outputs: { series: series, sizes: properties }
                windows: [\(windows.map(String.init).joined(separator: ", "))]
                terminated: \(command.terminated)
            \(options("collector"))  estimator:
                type: estimator
                inputs: { series: series }
                outputs: { parameters: properties }
            \(options("estimator"))  keep:
                type: evaluate_output
                inputs: { messages: [properties] }
                slot: \(slot)

            """
        progress("\(role): replaying \(path) through the collector and the estimator")
        let summary = try await runPipeline(stages, name: "read-\(role)")
        var rejected: [String] = []
        for s in summary.stages where s.type != "evaluate_output" {
            for key in s.counters.keys.sorted() where key.hasPrefix("rejected.") {
                rejected.append("\(s.name): \(key.dropFirst("rejected.".count))=\(s.counters[key]!)")
            }
        }
        var result: [CascadeID: CascadeProperties] = [:]
        for message in EvaluationSlots.shared.collected(slot) {
            switch message {
            case .parameters(let p): result[p.cascade, default: CascadeProperties()].parameters[p.tObs] = p
            case .size(let s): result[s.cascade, default: CascadeProperties()].sizes[s.tObs] = s
            default: break
            }
        }
        let events = summary.total(.tweet)
        let withSize = result.values.filter { !$0.sizes.isEmpty }.count
        progress("\(role): \(events) events, \(withSize) cascades of at least the collector's min_cascade_size; "
                 + windows.map { w in "T_obs=\(w): \(result.values.filter { $0.parameters[w] != nil && $0.sizes[w] != nil }.count) fitted" }.joined(separator: ", ")
                 + "; rejected records: " + (rejected.isEmpty ? "none" : rejected.joined(separator: ", ")))
        if withSize == 0 {
            throw EvaluationError(message: "\(path): no cascade of at least the collector's min_cascade_size events (\(events) events read)")
        }
        return result
    }

    /// The properties messages of `ids` in a fixed order (cascade, window; parameters before size).
    func messages(of ids: [CascadeID], in data: [CascadeID: CascadeProperties]) -> [Message] {
        var result: [Message] = []
        for id in ids {
            guard let c = data[id] else { continue }
            for w in windows {
                if let p = c.parameters[w] { result.append(.parameters(p)) }
                if let s = c.sizes[w] { result.append(.size(s)) }
            }
        }
        return result
    }

    /// Puts the properties of `ids` in the evaluation slot `slot`; the YAML of the `input` stage
    /// that sends them on the stream `properties`.
    func provideInput(_ slot: String, ids: [CascadeID], data: [CascadeID: CascadeProperties]) -> String {
        EvaluationSlots.shared.provide(slot, messages(of: ids, in: data))
        return """
              input:
                type: evaluate_input
                outputs: { messages: properties }
                slot: \(slot)

            """
    }

    /// Trains the models of `trainModes` on `ids`; returns the models file of each mode.
    func train(_ trainModes: [String], ids: [CascadeID], data: [CascadeID: CascadeProperties], fold: Int) async throws -> [String: String] {
        guard !trainModes.isEmpty else { return [:] }
        var stages = provideInput("train.\(fold)", ids: ids, data: data)
        for m in trainModes {
            stages += """
                  predictor_\(m):
                    type: predictor
                    inputs: { properties: [properties] }
                    outputs: { samples: samples_\(m) }
                    mode: \(m)
                    refit_every: 1000000000
                    refit_growth: 0
                    min_samples: 1
                \(options("predictor"))  learner_\(m):
                    type: learner
                    inputs: { samples: samples_\(m) }
                    outputs: { models: models_\(m) }
                    mode: \(m)
                    refit_every: 1000000000
                    refit_growth: 0
                    max_samples: 1000000000
                    min_samples: 1
                    final_fit: true
                \(options("learner"))  keep_\(m):
                    type: evaluate_output
                    inputs: { messages: [models_\(m)] }
                    slot: models.\(fold).\(m)

                """
        }
        _ = try await runPipeline(stages, name: "train-\(fold)")
        var files: [String: String] = [:]
        for m in trainModes {
            let models = EvaluationSlots.shared.collected("models.\(fold).\(m)")
            let file = "\(work)/models-\(fold)-\(m).jsonl"
            var bytes: [UInt8] = []
            // Latest version per window, in T_obs order.
            var latest: [Int: Model] = [:]
            for case .model(let model) in models where model.version >= (latest[model.tObs]?.version ?? 0) {
                latest[model.tObs] = model
            }
            for w in latest.keys.sorted() {
                bytes += WireFormat.encode(.model(latest[w]!))
                bytes.append(10)
            }
            try writeFile(file, bytes)
            files[m] = file
        }
        return files
    }

    /// Forecasts `ids` with every mode; alerts and stats per mode.
    func forecast(ids: [CascadeID], data: [CascadeID: CascadeProperties], models: [String: String], fold: Int) async throws
        -> [String: (alerts: [PairID: (Alert, AlertExtrasValue)], stats: [PairID: Double])]
    {
        var stages = provideInput("test.\(fold)", ids: ids, data: data)
        for m in modes {
            stages += """
                  predictor_\(m):
                    type: predictor
                    inputs: { properties: [properties] }
                    outputs: { alerts: alerts_\(m), stats: stats_\(m) }
                    mode: \(m)
                \(models[m].map { "    model_path: \(quoted($0))\n" } ?? "")\(options("predictor"))  keep_\(m):
                    type: evaluate_output
                    inputs: { messages: [alerts_\(m), stats_\(m)] }
                    slot: forecasts.\(fold).\(m)

                """
        }
        _ = try await runPipeline(stages, name: "test-\(fold)")
        var result: [String: (alerts: [PairID: (Alert, AlertExtrasValue)], stats: [PairID: Double])] = [:]
        for m in modes {
            var alerts: [PairID: (Alert, AlertExtrasValue)] = [:]
            var stats: [PairID: Double] = [:]
            for message in EvaluationSlots.shared.collected("forecasts.\(fold).\(m)") {
                switch message {
                case .alert(let a):
                    var v = AlertExtrasValue()
                    if let i = a.interval, i.count == 2 { (v.lo, v.hi) = (i[0], i[1]) }
                    v.pViral = a.pViral
                    alerts[PairID(cascade: a.cascade, tObs: a.tObs)] = (a, v)
                case .stat(let s): stats[PairID(cascade: s.cascade, tObs: s.tObs)] = s.are
                default: break
                }
            }
            result[m] = (alerts, stats)
        }
        return result
    }

    // MARK: - the evaluation

    mutating func run() async throws -> Int32 {
        try setUp()
        defer { removeTree(work) }
        let reportDir = command.report
        try makeDirectory(reportDir)

        // Models given with --model, by mode; checked before any data is read. Without --train
        // and --modes, the modes of the model file are evaluated (and `none`, which needs none).
        var givenModels: [String: String] = [:]
        if let path = command.model {
            let inFile = try modesOfModelFile(path)
            if command.train == nil && command.modes == nil {
                modes = modes.filter { $0 == "none" || inFile[$0] != nil }
            }
            for mode in modes where inFile[mode] != nil {
                givenModels[mode] = absolute(path)
                let missing = windows.filter { !inFile[mode]!.contains($0) }
                if !missing.isEmpty {
                    writeStandardError("tweetoscoped evaluate: warning: \(path) has no \(mode) model for T_obs = \(missing.map(String.init).joined(separator: ", ")) s: "
                                       + "the \(mode) forecasts there are the predictor's model-less fallback\n")
                }
            }
            if givenModels.isEmpty {
                throw EvaluationError(message: "\(path): no model of the evaluated modes (\(modes.joined(separator: ", ")))")
            }
        }
        let trainModes = modes.filter { $0 != "none" && givenModels[$0] == nil }
        if !trainModes.isEmpty && command.train == nil {
            throw EvaluationError(message: "modes \(trainModes.joined(separator: ", ")) need --train (or their models in --model; or choose --modes)")
        }

        var trainData: [CascadeID: CascadeProperties] = [:]
        if let t = command.train { trainData = try await readProperties(t, index: command.trainIndex, role: "train") }
        var testData: [CascadeID: CascadeProperties] = [:]
        if let t = command.test { testData = try await readProperties(t, index: command.testIndex, role: "test") }

        // Duplicates across train and test leak the answer: reported, and left out of the test set.
        var duplicates: [CascadeID] = []
        if command.test != nil && command.train != nil {
            if command.trainIndex == nil && command.testIndex == nil {
                // Long format: cascade ids are the datasets' own (SEISMIC: the tweet id).
                duplicates = testData.keys.filter { trainData[$0] != nil }.sorted()
            } else {
                // Course format: ids are index rows, equal across unrelated files; a duplicate is
                // a test cascade whose observed series (its fits) and sizes equal a training one's.
                let seen = Set(trainData.values.map(\.fingerprint))
                duplicates = testData.filter { seen.contains($0.value.fingerprint) }.map(\.key).sorted()
            }
            if !duplicates.isEmpty {
                let names = duplicates.prefix(20).map(String.init).joined(separator: ", ")
                writeStandardError("tweetoscoped evaluate: \(duplicates.count) cascade(s) of --test are also in --train, left out of the test set: \(names)\(duplicates.count > 20 ? ", ..." : "")\n")
                for d in duplicates { testData.removeValue(forKey: d) }
            }
            if testData.isEmpty { throw EvaluationError(message: "every cascade of --test is in --train: nothing left to test") }
        }


        // Folds: (train ids, test ids).
        var plan: [(train: [CascadeID], test: [CascadeID])] = []
        if command.test != nil {
            plan = [(trainData.keys.sorted(), testData.keys.sorted())]
        } else {
            var ids = trainData.keys.sorted()
            guard ids.count >= command.folds else {
                throw EvaluationError(message: "\(ids.count) cascades: fewer than --folds \(command.folds)")
            }
            var rng = SplitMix64(seed: UInt64(bitPattern: Int64(command.seed)))
            for i in stride(from: ids.count - 1, to: 0, by: -1) {
                let j = Int(rng.next(below: UInt64(i + 1)))
                ids.swapAt(i, j)
            }
            for k in 0..<command.folds {
                let test = ids.indices.filter { $0 % command.folds == k }.map { ids[$0] }.sorted()
                let train = ids.indices.filter { $0 % command.folds != k }.map { ids[$0] }.sorted()
                plan.append((train, test))
            }
            testData = trainData
        }

        var rows: [ForecastRow] = []
        var unforecast: [String: Int] = [:]
        for (k, fold) in plan.enumerated() {
            let training = trainModes.isEmpty
                ? "nothing to train (models from --model)"
                : "training \(trainModes.joined(separator: ", ")) on \(fold.train.count) cascades"
            progress(plan.count > 1
                ? "fold \(k + 1)/\(plan.count): \(training), testing on \(fold.test.count)"
                : "\(training), testing on \(fold.test.count)")
            var models = try await train(trainModes, ids: fold.train, data: trainData, fold: k)
            models.merge(givenModels) { a, _ in a }
            let results = try await forecast(ids: fold.test, data: testData, models: models, fold: k)
            for m in modes {
                let (byPair, stats) = results[m]!
                for id in fold.test {
                    for w in windows {
                        guard let p = testData[id]?.parameters[w], let size = testData[id]?.sizes[w] else { continue }
                        guard let found = byPair[PairID(cascade: id, tObs: w)] else {
                            // The predictor rejected these parameters (counted in its summary).
                            unforecast["\(m) T_obs=\(w)", default: 0] += 1
                            continue
                        }
                        let (alert, extras) = found
                        let nTot = size.nTot
                        let are = stats[PairID(cascade: id, tObs: w)] ?? abs(alert.nTot - Double(nTot)) / Double(nTot)
                        rows.append(ForecastRow(cascade: id, tObs: w, mode: m, fold: k + 1, nObs: p.nObs,
                                                forecast: alert.nTot, lo: extras.lo, hi: extras.hi,
                                                pViral: extras.pViral, nTot: nTot, are: are))
                    }
                }
            }
            // The naive baseline: n_obs times the median growth n_tot/n_obs of the training cascades.
            if command.train != nil {
                for w in windows {
                    let ratios = fold.train.compactMap { id -> Double? in
                        guard let p = trainData[id]?.parameters[w], let s = trainData[id]?.sizes[w], p.nObs > 0 else { return nil }
                        return Double(s.nTot) / Double(p.nObs)
                    }
                    guard let ratio = median(ratios) else { continue }
                    for id in fold.test {
                        guard let p = testData[id]?.parameters[w], let s = testData[id]?.sizes[w], s.nTot >= 1 else { continue }
                        let f = Double(p.nObs) * ratio
                        rows.append(ForecastRow(cascade: id, tObs: w, mode: "naive", fold: k + 1, nObs: p.nObs, forecast: f,
                                                lo: nil, hi: nil, pViral: nil, nTot: s.nTot,
                                                are: abs(f - Double(s.nTot)) / Double(s.nTot)))
                    }
                }
            }
        }

        for key in unforecast.keys.sorted() {
            writeStandardError("tweetoscoped evaluate: \(key): \(unforecast[key]!) test cascade(s) with parameters and a size got no forecast (the predictor rejected their parameters); left out of that mode's figures\n")
        }
        let keys = summaryKeys()
        let order = Dictionary(uniqueKeysWithValues: (modes + ["naive"]).enumerated().map { ($1, $0) })
        rows.sort { a, b in
            (a.tObs, order[a.mode] ?? 99, a.cascade) < (b.tObs, order[b.mode] ?? 99, b.cascade)
        }
        let evaluated = Set(plan.flatMap(\.test)).count
        let summary = SummaryFigures(rows: rows, windows: windows, keys: keys, defaultMode: defaultMode)
        try writeFile("\(reportDir)/forecasts.csv", Array(forecastsCSV(rows).utf8))
        try writeFile("\(reportDir)/summary.json", Array(summaryJSON(summary, duplicates: duplicates, cascades: evaluated, folds: plan.count).utf8))
        let table = summary.table()
        print(table)
        if !duplicates.isEmpty {
            print("duplicates: \(duplicates.count) cascade(s) in both --train and --test, left out of the test set: \(duplicates.map(String.init).joined(separator: ", "))")
        }
        var status: Int32 = 0
        var plotNote = ""
        if !command.noPlots {
            switch makePlots(reportDir) {
            case .success: break
            case .failure(let e):
                writeStandardError("tweetoscoped evaluate: plots not made: \(e.message)\n")
                plotNote = "Plots not made: \(e.message)\n\n"
                status = 3
            }
        }
        try writeFile("\(reportDir)/report.md", Array(reportMarkdown(summary, table: table, duplicates: duplicates,
                                                                     cascades: evaluated, folds: plan.count,
                                                                     plots: !command.noPlots && status == 0,
                                                                     note: plotNote).utf8))
        progress("report written to \(reportDir) (summary.json, forecasts.csv, report.md\(!command.noPlots && status == 0 ? ", plots" : ""))")
        return status
    }

    /// The keys of the summary per window: the default mode under its name and `default`, the
    /// other modes, then `naive`.
    func summaryKeys() -> [String] {
        var keys: [String] = []
        if modes.contains(defaultMode) { keys += ["default"] }
        keys += modes
        if command.train != nil { keys.append("naive") }
        return keys
    }

    /// The modes of the models in `path` (JSON lines of model messages), each with its windows.
    func modesOfModelFile(_ path: String) throws -> [String: Set<Int>] {
        let bytes = try readFile(path)
        var modes: [String: Set<Int>] = [:]
        var line = 0
        for chunk in bytes.split(separator: 10, omittingEmptySubsequences: false) {
            line += 1
            if chunk.allSatisfy({ $0 == 32 || $0 == 13 || $0 == 9 }) { continue }
            let message: Message
            do { message = try WireFormat.decode(chunk) } catch {
                throw EvaluationError(message: "\(path):\(line): \(error)")
            }
            guard case .model(let m) = message else {
                throw EvaluationError(message: "\(path):\(line): not a model (\(message.kind.rawValue))")
            }
            modes[m.mode, default: []].insert(m.tObs)
        }
        return modes
    }

    // MARK: - outputs

    func forecastsCSV(_ rows: [ForecastRow]) -> String {
        var text = "cid,T_obs,mode,fold,n_obs,forecast,lo,hi,p_viral,n_tot,ARE\n"
        for r in rows {
            text += "\(r.cascade),\(r.tObs),\(r.mode),\(r.fold),\(r.nObs),\(num(r.forecast)),\(r.lo.map(num) ?? ""),\(r.hi.map(num) ?? ""),\(r.pViral.map(num) ?? ""),\(r.nTot),\(num(r.are))\n"
        }
        return text
    }

    func summaryJSON(_ s: SummaryFigures, duplicates: [CascadeID], cascades: Int, folds: Int) -> String {
        var out = "{\n  \"windows\": {\n"
        out += windows.map { w in
            "    \"\(w)\": {\n" + s.keys.compactMap { key -> String? in
                guard let f = s.figures[w]?[key] else { return nil }
                return "      \"\(key)\": {\"n\": \(f.n), \"median_are\": \(json(f.median)), \"mean_are\": \(json(f.mean)), \"within_20\": \(json(f.within20)), \"within_50\": \(json(f.within50)), \"coverage_80\": \(json(f.coverage80))}"
            }.joined(separator: ",\n") + "\n    }"
        }.joined(separator: ",\n")
        out += "\n  },\n"
        out += "  \"default_mode\": \(quoted(defaultMode)),\n"
        out += "  \"modes\": [\(modes.map(quoted).joined(separator: ", "))],\n"
        out += "  \"train\": \(command.train.map { quoted(baseName($0)) } ?? "null"),\n"
        out += "  \"test\": \(command.test.map { quoted(baseName($0)) } ?? "null"),\n"
        out += "  \"model\": \(command.model.map { quoted(baseName($0)) } ?? "null"),\n"
        out += "  \"validation\": \(command.test == nil ? "\"cross-validation\"" : "\"train/test\""),\n"
        out += "  \"folds\": \(folds),\n"
        out += "  \"seed\": \(command.seed),\n"
        out += "  \"terminated\": \(command.terminated),\n"
        out += "  \"cascades\": \(cascades),\n"
        out += "  \"duplicates\": {\"count\": \(duplicates.count), \"cascades\": [\(duplicates.map(String.init).joined(separator: ", "))]}\n"
        out += "}\n"
        return out
    }

    func reportMarkdown(_ s: SummaryFigures, table: String, duplicates: [CascadeID], cascades: Int, folds: Int,
                        plots: Bool, note: String) -> String {
        var md = "# tweetoscoped evaluate\n\n"
        md += command.test == nil
            ? "Cross-validation of `\(baseName(command.train ?? ""))`: \(folds) folds by cascade (seed \(command.seed)), \(cascades) cascades.\n"
            : (command.train.map { "Trained on `\(baseName($0))`" } ?? "Models from `\(baseName(command.model ?? ""))` (nothing trained)")
              + (command.model != nil && command.train != nil ? " and models from `\(baseName(command.model!))`" : "")
              + ", tested on `\(baseName(command.test!))` (\(cascades) cascades).\n"
        md += "Windows \(windows.map(String.init).joined(separator: ", ")) s; truth = the size at `terminated` = \(command.terminated) s. "
        md += "Default mode: `\(defaultMode)`. ARE = |forecast − n_tot| / n_tot; coverage_80 = share of true sizes inside the 80 % interval.\n\n"
        if !duplicates.isEmpty {
            md += "**Duplicates:** \(duplicates.count) cascade(s) of the test set are also in the training set and were left out: \(duplicates.map(String.init).joined(separator: ", ")).\n\n"
        }
        md += "| T_obs | mode | n | median ARE | mean ARE | within 20 % | within 50 % | coverage 80 % |\n|---|---|---|---|---|---|---|---|\n"
        for w in windows {
            for key in s.keys {
                guard let f = s.figures[w]?[key] else { continue }
                md += "| \(w) | \(key) | \(f.n) | \(fixed(f.median, 3)) | \(fixed(f.mean, 3)) | \(percent(f.within20)) | \(percent(f.within50)) | \(percent(f.coverage80)) |\n"
            }
        }
        md += "\n" + note
        if plots {
            md += "## Forecast vs true size\n\n![forecast vs true size](forecast_vs_truth.png)\n\n"
            md += "## ARE distribution\n\n![ARE CDF](are_cdf.png)\n\n"
            md += "## Interval calibration\n\n![calibration](calibration.png)\n\n"
        }
        md += "Files: `summary.json`, `forecasts.csv` (one row per cascade, window and mode).\n"
        return md
    }

    /// Runs the plot script (python3 + matplotlib) on the report directory.
    func makePlots(_ dir: String) -> Result<Void, EvaluationError> {
        guard let script = plotScript() else {
            return .failure(EvaluationError(message: "the plot script plot-evaluation was not found (looked next to the executable, in /usr/share/tweetoscope and $TWEETOSCOPE_PLOT_SCRIPT)", status: 3))
        }
        // The first Python that has matplotlib: $TWEETOSCOPE_PYTHON, python3 on PATH, then Debian's
        // (python3-matplotlib installs into /usr/bin/python3, which a pyenv on PATH may hide).
        let candidates = (getenv("TWEETOSCOPE_PYTHON").map { [String(cString: $0)] } ?? []) + ["python3", "/usr/bin/python3"]
        guard let python = candidates.first(where: { spawn([$0, "-c", "import matplotlib"], quiet: true) == 0 }) else {
            return .failure(EvaluationError(message: "python3 with matplotlib is needed: install it with `apt-get install python3-matplotlib` (or scripts/install-deps), then run evaluate again; or pass --no-plots", status: 3))
        }
        progress("plotting with \(python) \(script)")
        let status = spawn([python, script, dir], quiet: false)
        if status != 0 { return .failure(EvaluationError(message: "\(script) exited with status \(status)", status: 3)) }
        return .success(())
    }

    func plotScript() -> String? {
        if let env = getenv("TWEETOSCOPE_PLOT_SCRIPT") { return String(cString: env) }
        var exe = [CChar](repeating: 0, count: Int(PATH_MAX))
        let n = readlink("/proc/self/exe", &exe, exe.count - 1)
        let dir = n > 0 ? dirName(String(decoding: exe[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)) : "."
        for candidate in ["\(dir)/../share/tweetoscope/plot-evaluation", "/usr/share/tweetoscope/plot-evaluation",
                          // A development build: .build/<triple>/release/tweetoscoped.
                          "\(dir)/../../../scripts/plot-evaluation", "\(dir)/../../scripts/plot-evaluation"] where access(candidate, R_OK) == 0 {
            return candidate
        }
        return nil
    }

    func progress(_ text: String) {
        writeStandardError("evaluate: \(text)\n")
    }
}

/// The forecast's 80 % interval and probability of going viral, when the alert carries them.
struct AlertExtrasValue: Sendable {
    var lo: Double?
    var hi: Double?
    var pViral: Double?
}

struct PairID: Hashable {
    var cascade: CascadeID
    var tObs: Int
}

/// The figures of the summary: per window and key (mode, `default`, `naive`).
struct SummaryFigures {
    struct Figures {
        var n: Int
        var median: Double
        var mean: Double
        var within20: Double
        var within50: Double
        /// Share of rows with an interval whose interval holds n_tot; NaN when no row has one.
        var coverage80: Double
    }

    let windows: [Int]
    let keys: [String]
    var figures: [Int: [String: Figures]] = [:]

    init(rows: [ForecastRow], windows: [Int], keys: [String], defaultMode: String) {
        self.windows = windows
        self.keys = keys
        for w in windows {
            for key in keys {
                let mode = key == "default" ? defaultMode : key
                let selected = rows.filter { $0.tObs == w && $0.mode == mode }
                guard !selected.isEmpty else { continue }
                let ares = selected.map(\.are)
                let n = Double(ares.count)
                let withInterval = selected.filter { $0.lo != nil && $0.hi != nil }
                let covered = withInterval.filter { Double($0.nTot) >= $0.lo! && Double($0.nTot) <= $0.hi! }.count
                figures[w, default: [:]][key] = Figures(
                    n: ares.count, median: median(ares)!, mean: ares.reduce(0, +) / n,
                    within20: Double(ares.filter { $0 <= 0.2 }.count) / n,
                    within50: Double(ares.filter { $0 <= 0.5 }.count) / n,
                    coverage80: withInterval.isEmpty ? .nan : Double(covered) / Double(withInterval.count))
            }
        }
    }

    /// The table printed on stdout.
    func table() -> String {
        var lines = ["T_obs   mode       n      median ARE  mean ARE    <=20%    <=50%    cov80"]
        for w in windows {
            for key in keys {
                guard let f = figures[w]?[key] else { continue }
                lines.append(pad("\(w)", 8) + pad(key, 11) + pad("\(f.n)", 7) + pad(fixed(f.median, 3), 12)
                             + pad(fixed(f.mean, 3), 12) + pad(percent(f.within20), 9) + pad(percent(f.within50), 9)
                             + percent(f.coverage80))
            }
        }
        return lines.joined(separator: "\n")
    }
}

// MARK: - helpers

/// Median (the mean of the two middle values for an even count); nil when empty.
func median(_ xs: [Double]) -> Double? {
    guard !xs.isEmpty else { return nil }
    let s = xs.sorted()
    let n = s.count
    return n % 2 == 1 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2
}

/// Shortest round-trip decimal text of `x` (Swift's description): the same on every machine.
func num(_ x: Double) -> String { x.isFinite ? "\(x)" : "" }

func json(_ x: Double) -> String { x.isFinite ? "\(x)" : "null" }

func fixed(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite else { return "-" }
    let scale = pow(10.0, Double(digits))
    let v = (x * scale).rounded() / scale
    var text = "\(v)"
    if let dot = text.firstIndex(of: ".") {
        let decimals = text.distance(from: dot, to: text.endIndex) - 1
        if decimals < digits { text += String(repeating: "0", count: digits - decimals) }
    }
    return text
}

func percent(_ x: Double) -> String { x.isFinite ? fixed(100 * x, 1) + "%" : "-" }

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}

/// A JSON (and YAML double-quoted) string literal.
func quoted(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += "\\u" + String(repeating: "0", count: 4 - String(u.value, radix: 16).count) + String(u.value, radix: 16) }
            else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}

/// YAML text of an option value.
func yaml(_ v: OptionValue) -> String {
    switch v {
    case .bool(let b): String(b)
    case .int(let i): String(i)
    case .double(let d): "\(d)"
    case .string(let s): quoted(s)
    case .list(let l): "[" + l.map(yaml).joined(separator: ", ") + "]"
    case .map(let m): "{" + m.keys.sorted().map { "\(quoted($0)): \(quoted(m[$0]!))" }.joined(separator: ", ") + "}"
    }
}

func trimmed(_ s: Substring) -> String { String(s.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed()) }

func baseName(_ path: String) -> String { path.split(separator: "/").last.map(String.init) ?? path }

func dirName(_ path: String) -> String {
    guard let i = path.lastIndex(of: "/") else { return "." }
    return String(path[..<i])
}

func absolute(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
    guard getcwd(&buffer, buffer.count) != nil else { return path }
    return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/" + path
}

func makeDirectory(_ path: String) throws {
    var partial = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        partial += "/" + part
        if mkdir(partial, 0o755) != 0 && errno != EEXIST {
            throw EvaluationError(message: "cannot create \(partial): \(String(cString: strerror(errno)))")
        }
    }
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    guard let f = fopen(path, "w") else {
        throw EvaluationError(message: "cannot write \(path): \(String(cString: strerror(errno)))")
    }
    let written = bytes.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, f) }
    let closed = fclose(f)
    if written != bytes.count || closed != 0 {
        throw EvaluationError(message: "cannot write \(path): \(String(cString: strerror(errno)))")
    }
}

func readFile(_ path: String) throws -> [UInt8] {
    guard let f = fopen(path, "r") else {
        throw EvaluationError(message: "cannot read \(path): \(String(cString: strerror(errno)))")
    }
    defer { fclose(f) }
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buffer.withUnsafeMutableBufferPointer { fread($0.baseAddress, 1, $0.count, f) }
        if n == 0 { break }
        result += buffer[0..<n]
    }
    return result
}

func removeTree(_ path: String) {
    guard let dir = opendir(path) else { return }
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
        }
        if name != "." && name != ".." { unlink("\(path)/\(name)") }
    }
    closedir(dir)
    rmdir(path)
}

/// Runs `argv` (looked up on PATH) and waits; its exit status (127 when it cannot start).
func spawn(_ argv: [String], quiet: Bool) -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if quiet {
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    }
    var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
    cArgs.append(nil)
    defer { for p in cArgs { free(p) } }
    var pid: pid_t = 0
    guard posix_spawnp(&pid, argv[0], &actions, nil, cArgs, environ) == 0 else { return 127 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // WIFEXITED / WEXITSTATUS
    if status & 0x7f == 0 { return (status >> 8) & 0xff }
    return 128 + (status & 0x7f)
}
