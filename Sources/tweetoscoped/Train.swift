// `tweetoscoped train`: fits one model per window offline, on a file of training samples, as the
// learner does online; used by scripts/train-model to make the shipped model data/models/.
import ArgumentParser
import Forest
import Glibc
import TweetoscopeCore
import TweetoscopeRuntime

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fit one model per window (T_obs) on a file of samples; write them as JSON lines of `model` messages.",
        discussion: """
            The samples are JSON lines of `sample` messages (the predictor's `samples` stream, as the `file` \
            sink writes it). Each window's samples are sorted by cascade id (then X, W) so the model does not \
            depend on the order of the file; the forest is the learner's (same options and defaults, but for \
            --tree-samples: an offline fit draws as many samples per tree as the window holds unless told \
            otherwise, where the online learner bounds its refits' cost with tree_samples 200), and each \
            model carries its out-of-bag residuals (log(true/forecast)) for the predictor's prediction intervals. \
            The output is sorted by T_obs and byte-identical for the same samples and options. A line that is not \
            a valid sample is an error naming the file and line (exit 65).
            """)

    @Option(help: "Samples file (JSON lines).") var samples: String
    @Option(help: "Output file for the models (JSON lines); - for standard output.") var output: String = "-"
    @Option(help: "Correction mode of the samples: none, course or growth (must be the predictor's).") var mode: String = "growth"
    @Option(name: .customLong("model-version"), help: "Version written into every model (`--version` is the daemon's own version).")
    var version: Int = 1
    @Option(help: "Number of trees.") var trees: Int = 100
    @Option(help: "Largest depth of a tree (root = 0).") var maxDepth: Int = 16
    @Option(help: "Fewest bootstrap samples in a leaf.") var minSamplesLeaf: Int = 3
    @Option(help: "Fraction of the features tried at each split, in (0, 1].") var maxFeatures: Double = 0.8
    @Option(help: "Bootstrap draws per tree, at most (the learner's tree_samples); 0 = as many as the window's samples.")
    var treeSamples: Int = 0
    @Option(help: "Random seed.") var seed: Int = 0

    func run() throws {
        let featureCount: Int
        switch mode {
        case "none", "course": featureCount = 3
        case "growth": featureCount = 15
        default: throw ValidationError("--mode: expected none, course or growth")
        }
        let parameters = ForestParameters(trees: trees, maxDepth: maxDepth, minSamplesLeaf: minSamplesLeaf,
                                          maxFeatures: maxFeatures, bootstrap: true, treeSamples: treeSamples,
                                          seed: UInt64(bitPattern: Int64(seed)))
        do { try parameters.validate() } catch { throw ValidationError("\(error)") }

        guard let f = fopen(samples, "rb") else {
            writeStandardError("tweetoscoped train: \(samples): \(String(cString: strerror(errno)))\n")
            throw ExitCode(66)
        }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n > 0 { bytes.append(contentsOf: buffer[0..<n]) }
            if n < buffer.count { break }
        }
        fclose(f)

        var windows: [Int: [Sample]] = [:]
        for (i, line) in bytes.split(separator: 10, omittingEmptySubsequences: false).enumerated() {
            guard line.contains(where: { $0 != 32 && $0 != 9 && $0 != 13 }) else { continue }
            let at = "\(samples):\(i + 1)"
            let sample: Sample
            do {
                guard case .sample(let s) = try WireFormat.decode(line) else {
                    writeStandardError("tweetoscoped train: \(at): not a sample message\n")
                    throw ExitCode(65)
                }
                sample = s
            } catch let error as WireFormatError {
                writeStandardError("tweetoscoped train: \(at): \(error.reason): \(error.description)\n")
                throw ExitCode(65)
            }
            guard sample.x.count == featureCount, sample.w.isFinite, sample.x.allSatisfy(\.isFinite) else {
                writeStandardError("tweetoscoped train: \(at): expected \(featureCount) finite features and a finite W (mode \(mode))\n")
                throw ExitCode(65)
            }
            windows[sample.tObs, default: []].append(sample)
        }
        guard !windows.isEmpty else {
            writeStandardError("tweetoscoped train: \(samples): no sample\n")
            throw ExitCode(65)
        }

        var out: [UInt8] = []
        for tObs in windows.keys.sorted() {
            let ordered = windows[tObs]!.sorted { a, b in
                if a.cascade != b.cascade { return a.cascade < b.cascade }
                for (u, v) in zip(a.x, b.x) where u != v { return u < v }
                return a.w < b.w
            }
            let targets = ordered.map(\.w)
            let fit: OutOfBagFit
            do {
                fit = try RandomForest.fitWithOutOfBag(features: ordered.map(\.x), targets: targets, parameters: parameters)
            } catch {
                writeStandardError("tweetoscoped train: T_obs=\(tObs): \(error)\n")
                throw ExitCode(1)
            }
            // growth: the log-shift c minimising the out-of-bag median ARE (as the learner does).
            let shift = mode == "growth" ? fit.medianAREShift(targets) : 0
            let model = Model(tObs: tObs, version: version, mode: mode, samples: ordered.count, trees: fit.trees,
                              residuals: fit.logResiduals(targets, targetIsLog: mode == "growth", shift: shift),
                              shift: mode == "growth" ? shift : nil)
            out += WireFormat.encode(.model(model))
            out.append(10)
            writeStandardError("T_obs=\(tObs): \(ordered.count) samples, \(fit.predictions.compactMap { $0 }.count) with an out-of-bag prediction\n")
        }
        if output == "-" {
            var done = 0
            while done < out.count {
                let n = out[done...].withUnsafeBytes { Glibc.write(1, $0.baseAddress, $0.count) }
                guard n > 0 else { throw ExitCode(74) }
                done += n
            }
        } else {
            let tmp = output + ".tmp"
            guard let o = fopen(tmp, "wb") else {
                writeStandardError("tweetoscoped train: \(tmp): \(String(cString: strerror(errno)))\n")
                throw ExitCode(73)
            }
            let written = out.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, o) }
            guard written == out.count, fflush(o) == 0, fsync(fileno(o)) == 0, fclose(o) == 0, rename(tmp, output) == 0 else {
                writeStandardError("tweetoscoped train: \(output): \(String(cString: strerror(errno)))\n")
                throw ExitCode(74)
            }
        }
    }
}
