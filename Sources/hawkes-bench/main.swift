// hawkes-bench: fits every cascade of a file with the Hawkes MAP estimator, single-threaded,
// and prints one CSV line per fit (time and log-posterior) so a driver can compare with a peer.
//
// Usage: hawkes-bench INPUT.csv [--repeat K] [--grid G] [--max-n-star X] [--mle]
//
// INPUT.csv: header `id,T,t,m`, one event per line, the events of a cascade contiguous and in
// time order; `T` (observation end, same clock as `t`) is repeated on every line of the cascade.
// Output (stdout): header then `id,T,n,p,beta,log_posterior,n_star,G1,n_supp,N,ns,passes,error`;
// `ns` is the wall time of the fit (validation + fit) in nanoseconds, the median of K timed
// repetitions after one untimed warm-up pass over the whole file. Failed fits print `error`.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Hawkes

struct Job {
    var id: String
    var end: Double
    var t: [Double] = []
    var m: [Double] = []
}

func fail(_ msg: String) -> Never {
    let text = "hawkes-bench: \(msg)\n"
    _ = text.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
    exit(2)
}

func nowNS() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func readJobs(path: String) -> [Job] {
    guard let f = fopen(path, "r") else { fail("cannot open \(path)") }
    defer { fclose(f) }
    var jobs: [Job] = []
    var linePtr: UnsafeMutablePointer<CChar>? = nil
    var cap = 0
    var lineNo = 0
    while getline(&linePtr, &cap, f) > 0 {
        lineNo += 1
        let line = String(cString: linePtr!)
        let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmed() }
        if fields.count < 4 { continue }
        guard let end = Double(fields[1]), let t = Double(fields[2]), let m = Double(fields[3]) else {
            if lineNo == 1 { continue }   // header
            fail("bad line \(lineNo): \(line)")
        }
        let id = String(fields[0])
        if jobs.last?.id != id || jobs.last?.end != end { jobs.append(Job(id: id, end: end)) }
        jobs[jobs.count - 1].t.append(t)
        jobs[jobs.count - 1].m.append(m)
    }
    free(linePtr)
    return jobs
}

extension Substring {
    /// Drops leading/trailing blanks and line ends (note "\r\n" is one Character).
    func trimmed() -> Substring {
        let blank: Set<Character> = [" ", "\t", "\r", "\n", "\r\n"]
        var s = self
        while let c = s.first, blank.contains(c) { s = s.dropFirst() }
        while let c = s.last, blank.contains(c) { s = s.dropLast() }
        return s
    }
}

var args = Array(CommandLine.arguments.dropFirst())
var repeatCount = 1
var grid = 12
var maxNStar = 1.0
var mle = false
var input: String? = nil
while !args.isEmpty {
    let a = args.removeFirst()
    switch a {
    case "--repeat":
        guard let v = args.first.flatMap({ Int($0) }), v >= 1 else { fail("--repeat K") }
        repeatCount = v; args.removeFirst()
    case "--grid":
        guard let v = args.first.flatMap({ Int($0) }) else { fail("--grid G") }
        grid = v; args.removeFirst()
    case "--max-n-star":
        guard let v = args.first.flatMap({ Double($0) }) else { fail("--max-n-star X") }
        maxNStar = v; args.removeFirst()
    case "--mle": mle = true
    case "-h", "--help":
        print("usage: hawkes-bench INPUT.csv [--repeat K] [--grid G] [--max-n-star X] [--mle]")
        exit(0)
    default: input = a
    }
}
guard let input else { fail("usage: hawkes-bench INPUT.csv [--repeat K] [--grid G] [--max-n-star X] [--mle]") }
let jobs = readJobs(path: input)
let estimator: HawkesEstimator
do {
    estimator = try HawkesEstimator(prior: mle ? nil : .course, maxNStar: maxNStar, gridSize: grid)
} catch {
    fail("\(error)")
}

@inline(never)
func runFit(_ j: Job) -> Result<HawkesFit, HawkesError> {
    do {
        return .success(try estimator.fit(times: j.t, marks: j.m, observationEnd: j.end))
    } catch {
        return .failure(error)
    }
}

// warm-up (untimed)
var sink = 0.0
for j in jobs { if case let .success(f) = runFit(j) { sink += f.p } }

func fmt(_ x: Double) -> String { "\(x)" }

print("id,T,n,p,beta,log_posterior,n_star,G1,n_supp,N,ns,passes,error")
var samples = [UInt64](repeating: 0, count: repeatCount)
for j in jobs {
    var result: Result<HawkesFit, HawkesError> = .failure(.emptyCascade)
    for r in 0..<repeatCount {
        let t0 = nowNS()
        result = runFit(j)
        samples[r] = nowNS() - t0
    }
    samples.sort()
    let ns = samples[repeatCount / 2]
    switch result {
    case let .success(f):
        print("\(j.id),\(fmt(j.end)),\(f.nObs),\(fmt(f.p)),\(fmt(f.beta)),\(fmt(f.logPosterior)),\(fmt(f.nStar)),"
              + "\(fmt(f.g1)),\(fmt(f.nSupp)),\(fmt(f.forecast)),\(ns),\(f.passes),")
    case let .failure(e):
        print("\(j.id),\(fmt(j.end)),\(j.t.count),,,,,,,,\(ns),0,\(String(String(describing: e).map { $0 == "," ? ";" : $0 }))")
    }
}
if sink.isNaN { print("# warm-up produced NaN") }
