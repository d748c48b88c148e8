// scripts/bench-codec: encode and decode rates of the hand-written wire codec (WireFormat) and of
// Foundation's coders (FoundationWireFormat) in the same run, per message kind, on messages made
// from the real cascades of ../shared/data/real (auspol.csv: every event a tweet, every cascade a
// series, size, parameters, sample, alert and stat) plus models and log records. Compiled with
// the Core sources by scripts/bench-codec (swiftc -O, outside SwiftPM).
import Glibc

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// The best of `repeats` rates (items per second) of `body` over `items` items, each timing at
/// least `minimum` seconds.
func rate(items: Int, repeats: Int, minimum: Double, _ body: () -> Int) -> Double {
    var best = 0.0
    var sink = 0
    for _ in 0..<repeats {
        var rounds = 0
        let start = now()
        var elapsed = 0.0
        repeat {
            sink &+= body()
            rounds += 1
            elapsed = now() - start
        } while elapsed < minimum
        best = max(best, Double(items * rounds) / elapsed)
    }
    if sink == 42 { print("") }
    return best
}

func readLines(_ path: String) -> [Substring] {
    guard let f = fopen(path, "rb") else { fatalError("bench-codec: cannot read \(path)") }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n <= 0 { break }
        bytes += chunk[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self).split(separator: "\n")
}

@main struct BenchCodec {
    static func main() {
        let args = CommandLine.arguments
        let data = args.count > 1 ? args[1] : "../shared/data/real/auspol.csv"
        let minimum = args.count > 2 ? Double(args[2])! : 0.3
        var cascades: [(id: Int64, times: [Double], marks: [Double])] = []
        var tweets: [Message] = []
        for line in readLines(data).dropFirst() {
            let f = line.split(separator: ",")
            guard f.count == 3, let c = Int64(f[0]), let t = Double(f[1]), let m = Double(f[2]) else { continue }
            if cascades.last?.id != c { cascades.append((c, [], [])) }
            cascades[cascades.count - 1].times.append(t)
            cascades[cascades.count - 1].marks.append(m)
            tweets.append(.tweet(Tweet(kind: t == 0 ? .tweet : .retweet, msg: "None", time: 1_500_000_000 + t, magnitude: m,
                                       source: 1, cascade: .number(c), info: "cascade=\(c)")))
        }
        var kinds: [(String, [Message], Int)] = [("tweet", tweets, tweets.count)]
        let series = cascades.map {
            Message.series(Series(cascade: .number($0.id), msg: "None", tObs: 600, times: $0.times, magnitudes: $0.marks, seq: 0,
                                  t0: 1_500_000_000))
        }
        kinds.append(("serie", series, cascades.reduce(0) { $0 + $1.times.count }))
        kinds.append(("size", cascades.map {
            .size(CascadeSize(cascade: .number($0.id), tObs: 600, nTot: $0.times.count, tEnd: $0.times.last!, seq: 1))
        }, cascades.count))
        kinds.append(("parameters", cascades.map {
            let n = Double($0.times.count)
            return .parameters(CascadeParameters(cascade: .number($0.id), msg: "None", tObs: 600, nObs: $0.times.count,
                                                 nSupp: n * 0.7, nSuppMeaning: nil, p: 0.0123 + 1 / (n + 7), beta: 1 / (n + 3.3),
                                                 nStar: 0.41 + 1 / (n + 2), g1: n * 1.234567, seq: 2, t0: 1_500_000_000,
                                                 features: ["root_m": $0.marks[0], "seismic_p": 0.25 + 1 / (n + 9)]))
        }, cascades.count))
        kinds.append(("sample", cascades.map {
            let n = Double($0.times.count)
            return .sample(Sample(cascade: .number($0.id), tObs: 600, x: [0.1 + 1 / n, 1 / (n + 3), n * 3.3, 0.5 + 1 / (n + 1)],
                                  w: 1 + 1 / (n + 0.7), growth: n / 3))
        }, cascades.count))
        let models: [Message] = (0..<20).map { k in
            let trees = (0..<50).map { t in
                // A complete binary tree of 15 nodes, children after parents.
                RegressionTree(feature: (0..<15).map { $0 < 7 ? ($0 + t) % 4 : -1 },
                               threshold: (0..<15).map { 0.1 * Double($0 + k) + 1 / Double(t + 3) },
                               left: (0..<15).map { $0 < 7 ? 2 * $0 + 1 : -1 }, right: (0..<15).map { $0 < 7 ? 2 * $0 + 2 : -1 },
                               value: (0..<15).map { 1 + Double($0) / Double(t + 7) })
            }
            return .model(Model(tObs: 600, version: k, mode: "forest", samples: 1000 + k, trees: trees, wMin: 0.5, wMax: 3.25,
                                growthMax: 40, residuals: (0..<50).map { -1 + Double($0) / 25 }, shift: 0.125))
        }
        kinds.append(("model", models, models.count))
        kinds.append(("alert", cascades.map {
            let n = Double($0.times.count)
            return .alert(Alert(cascade: .number($0.id), msg: "None", tObs: 600, nTot: n * 2.345678, nObs: $0.times.count,
                                t: 1_500_000_600, model: 3, interval: [n, n * 4.5], pViral: 1 / (n + 1)))
        }, cascades.count))
        kinds.append(("stat", cascades.map {
            let n = Double($0.times.count)
            return .stat(Stat(cascade: .number($0.id), tObs: 600, are: 0.5 / (n + 1.5), forecast: n * 2.25, nTot: $0.times.count * 2,
                              nObs: $0.times.count))
        }, cascades.count))
        kinds.append(("log", cascades.map {
            .log(LogRecord(time: 1_700_000_000_000 + $0.id, source: "estimator", level: "INFO",
                           message: "cascade \($0.id): fitted \($0.times.count) events, \"n_star\" below 1 / OK"))
        }, cascades.count))

        print("bench-codec: \(tweets.count) events in \(cascades.count) cascades of \(data); best of 3 runs of >= \(minimum) s each")
        print("rates: messages/s (events/s for serie) and MB/s of JSON; ratio = hand-written / Foundation, same run")
        let header = ["kind", "msgs", "B/msg", "enc new", "enc Fdn", "ratio", "enc MB/s", "dec new", "dec Fdn", "ratio", "dec MB/s"]
        let widths = [10, 6, 6, 11, 10, 6, 14, 11, 10, 6, 14]
        func row(_ cells: [String]) {
            print(zip(cells, widths).map { String(repeating: " ", count: max(0, $1 - $0.count)) + $0 }.joined(separator: " "))
        }
        row(header)
        for (name, messages, units) in kinds {
            let encoded = messages.map { FoundationWireFormat.encode($0) }
            let bytes = encoded.reduce(0) { $0 + $1.count }
            for (i, m) in messages.enumerated() where WireFormat.encode(m) != encoded[i] {
                fatalError("bench-codec: the codecs disagree on a \(name) message")
            }
            let perUnit = Double(units) / Double(messages.count)
            var buffer: [UInt8] = []
            buffer.reserveCapacity(1 << 20)
            let encNew = rate(items: messages.count, repeats: 3, minimum: minimum) {
                var total = 0
                for m in messages {
                    buffer.removeAll(keepingCapacity: true)
                    WireFormat.encode(m, into: &buffer)
                    total &+= buffer.count
                }
                return total
            }
            let encRef = rate(items: messages.count, repeats: 3, minimum: minimum) {
                messages.reduce(0) { $0 &+ FoundationWireFormat.encode($1).count }
            }
            let decNew = rate(items: messages.count, repeats: 3, minimum: minimum) {
                var total = 0
                for e in encoded { if (try? WireFormat.decode(e, key: nil)) != nil { total += 1 } }
                precondition(total == encoded.count, "bench-codec: a \(name) message does not decode")
                return total
            }
            let decRef = rate(items: messages.count, repeats: 3, minimum: minimum) {
                var total = 0
                for e in encoded { if (try? FoundationWireFormat.decode(e, key: nil)) != nil { total += 1 } }
                return total
            }
            let mb = Double(bytes) / Double(messages.count) / 1e6
            func f(_ x: Double) -> String {
                x >= 1e6 ? "\(Int((x / 1e4).rounded()) / 100).\(String(format2(Int((x / 1e4).rounded()) % 100)))M" :
                    x >= 1e3 ? "\(Int((x / 1e3).rounded()))k" : "\(Int(x.rounded()))"
            }
            func g(_ x: Double) -> String { "\(Int((x * 10).rounded()) / 10).\(Int((x * 10).rounded()) % 10)" }
            row([name, "\(messages.count)", "\(bytes / messages.count)",
                 f(encNew * perUnit), f(encRef * perUnit), g(encNew / encRef) + "x", "\(g(encNew * mb))/\(g(encRef * mb))",
                 f(decNew * perUnit), f(decRef * perUnit), g(decNew / decRef) + "x", "\(g(decNew * mb))/\(g(decRef * mb))"])
        }
    }

    static func format2(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }
}
