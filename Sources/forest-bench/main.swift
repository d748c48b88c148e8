// forest-bench: fits the learner's forests on a file of training samples the way the learner
// fits them in a run, and times the fits, so that a driver (scripts/bench-forest) can compare
// them with a peer (scikit-learn's RandomForestRegressor) on the same samples.
//
// Usage: forest-bench SAMPLES.jsonl [--repeat K] [--threads T]
//
// SAMPLES.jsonl: `sample` messages (the `samples` wire format, as the file sink writes them),
// in the order the learner received them. For each window (T_obs) the fits are those of the
// learner's defaults: refit points of `RefitSchedule(every: 20, growth: 0.1, minSamples: 50,
// maxSamples: 2000)` (each on the window's latest min(p, 2000) samples), forests of 100 trees,
// depth <= 16, >= 3 samples per leaf, 80 % of the features tried per split, 200 bootstrap draws
// per tree, with the out-of-bag predictions and the median-ARE shift search of the growth mode.
// Output (stdout): header then `T_obs,seen,n,seconds,nodes`, one line per fit (at the window's
// `seen`-th sample, on its latest `n`): the median wall time
// of K timed repetitions (after one untimed pass) and the fit's node count; then a line
// `# digest <hex>`: a hash of every tree (features, thresholds, values), out-of-bag prediction
// and shift of the first pass, equal between builds that grow the same forests.

#if canImport(Glibc)
import Glibc
#endif
import Forest
import TweetoscopeCore

func fail(_ message: String) -> Never {
    let text = "forest-bench: \(message)\n"
    _ = text.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
    exit(2)
}

func nowNS() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func run() {
    var arguments = Array(CommandLine.arguments.dropFirst())
    var repeats = 3, threads = 1
    var path: String?
    while !arguments.isEmpty {
        let a = arguments.removeFirst()
        switch a {
        case "--repeat", "--threads":
            guard let v = arguments.first.flatMap({ Int($0) }), v >= 1 else { fail("\(a) needs an integer >= 1") }
            arguments.removeFirst()
            if a == "--repeat" { repeats = v } else { threads = v }
        default:
            guard path == nil, !a.hasPrefix("-") else { fail("usage: forest-bench SAMPLES.jsonl [--repeat K] [--threads T]") }
            path = a
        }
    }
    guard let path else { fail("usage: forest-bench SAMPLES.jsonl [--repeat K] [--threads T]") }

    // The samples of each window, in file order.
    guard let file = fopen(path, "r") else { fail("cannot open \(path)") }
    var windows: [Int: (x: [[Double]], y: [Double])] = [:]
    var line: UnsafeMutablePointer<CChar>?
    var capacity = 0
    var number = 0
    while getline(&line, &capacity, file) > 0 {
        number += 1
        let bytes = UnsafeRawBufferPointer(start: line!, count: strlen(line!))
        let text = bytes.last == 0x0A ? UnsafeRawBufferPointer(rebasing: bytes.dropLast()) : bytes
        if text.isEmpty { continue }
        guard case .sample(let s) = try? WireFormat.decode(text) else { fail("\(path):\(number): not a sample message") }
        windows[s.tObs, default: ([], [])].x.append(s.x)
        windows[s.tObs, default: ([], [])].y.append(s.w)
    }
    fclose(file)
    guard !windows.isEmpty else { fail("\(path): no samples") }

    let schedule = RefitSchedule(every: 20, growth: 0.1, minSamples: 50, maxSamples: 2000)
    var fits: [(tObs: Int, version: Int, seen: Int, n: Int, x: [[Double]], y: [Double])] = []
    for tObs in windows.keys.sorted() {
        let (x, y) = windows[tObs]!
        for seen in 1...x.count where schedule.fits(at: seen) {
            let version = seen / schedule.every  // as the learner numbers them
            let lo = max(0, seen - schedule.maxSamples)
            fits.append((tObs, version, seen, seen - lo, Array(x[lo..<seen]), Array(y[lo..<seen])))
        }
    }

    var digest: UInt64 = 0xcbf2_9ce4_8422_2325
    func mix(_ v: UInt64) { digest = (digest ^ v) &* 0x0000_0100_0000_01b3 }
    print("T_obs,seen,n,seconds,nodes")
    for fit in fits {
        var seeder = SplitMix64(seed: UInt64(fit.tObs) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(fit.version))
        let parameters = ForestParameters(trees: 100, maxDepth: 16, minSamplesLeaf: 3, maxFeatures: 0.8,
                                          bootstrap: true, treeSamples: 200, seed: seeder.next())
        var times: [UInt64] = []
        var nodes = 0
        for pass in 0...repeats {
            let start = nowNS()
            let result: OutOfBagFit
            do {
                result = try RandomForest.fitWithOutOfBag(features: fit.x, targets: fit.y, parameters: parameters, threads: threads)
            } catch {
                fail("T_obs \(fit.tObs), \(fit.n) samples: \(error)")
            }
            let shift = result.medianAREShift(fit.y, threads: threads)
            let elapsed = nowNS() - start
            if pass == 0 {
                for tree in result.trees {
                    nodes += tree.feature.count
                    for f in tree.feature { mix(UInt64(bitPattern: Int64(f))) }
                    for v in tree.threshold { mix(v.bitPattern) }
                    for v in tree.value { mix(v.bitPattern) }
                }
                for p in result.predictions { mix((p ?? .nan).bitPattern) }
                mix(shift.bitPattern)
            } else {
                times.append(elapsed)
            }
        }
        times.sort()
        print("\(fit.tObs),\(fit.seen),\(fit.n),\(Double(times[times.count / 2]) / 1e9),\(nodes)")
    }
    print("# digest \(String(digest, radix: 16))")
}

run()
