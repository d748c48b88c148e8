// Tests of the `file` sink (Plugins/FileSink), run through the built plugin as the daemon loads it.
import Glibc
import Testing
import TweetoscopeCore

fileprivate func makeScratchDirectory() -> String {
    var template = Array("/tmp/tweetoscope-filesink-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { buffer in
        guard let made = mkdtemp(buffer.baseAddress!) else { fatalError("mkdtemp failed") }
        return String(cString: made)
    }
}

fileprivate func removeTree(_ path: String) {
    var pid: pid_t = 0
    let args: [String] = ["rm", "-rf", path]
    var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    guard posix_spawnp(&pid, "rm", nil, nil, &argv, environ) == 0 else { return }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
}

/// The bytes of a file, or nil if it cannot be read.
fileprivate func readBytes(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n == 0 { break }
        out += chunk[0..<n]
    }
    return out
}

/// The lines of a file (split at "\n"; a final "\n" ends the last line).
fileprivate func lines(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
    var parts = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
    if parts.last?.isEmpty == true { parts.removeLast() }
    return parts
}

/// One message of every kind; tweets from source 0 and series starting at 0, so that decoding
/// the written line gives back the same value.
fileprivate let everyKind: [Message] = [
    .tweet(Tweet(kind: .tweet, msg: "a \"quoted\" / text", time: 12, magnitude: 1234567, source: 0, cascade: 42, info: "cascade=42")),
    .tweet(Tweet(kind: .retweet, time: 15.5, magnitude: 0, source: 0, cascade: 42, info: "cascade=42")),
    .series(Series(cascade: 42, msg: "m", tObs: 600, times: [0, 3, 7.25], magnitudes: [10, 0, 2])),
    .size(CascadeSize(cascade: 42, tObs: 600, nTot: 127, tEnd: 4329)),
    .parameters(CascadeParameters(cascade: 42, msg: "m", tObs: 1200, nObs: 32, nSupp: 120.5, p: 0.0423,
                                  beta: 1.0 / 3600, nStar: 0.9, g1: 12.05)),
    .sample(Sample(cascade: 42, tObs: 600, x: [0.001, 0.5, 3], w: 1.25)),
    .model(Model(tObs: 600, version: 3, mode: "course", samples: 10,
                 trees: [RegressionTree(feature: [0, -1, -1], threshold: [0.5, 0, 0], left: [1, -1, -1],
                                        right: [2, -1, -1], value: [0, 1.5, 2.5])])),
    .alert(Alert(cascade: 42, msg: "m", tObs: 600, nTot: 158.5)),
    .stat(Stat(cascade: 42, tObs: 600, are: 0.93)),
    .log(LogRecord(time: 1_700_000_000, source: "collector", level: "INFO", message: "hello")),
]

/// Runs a `file` sink on two streams, `alpha` and `beta`, both bound to port `streams`.
fileprivate func runSink(directory: String, append: Bool, alpha: [[Message]], beta: [[Message]]) async throws
    -> [String: Int]
{
    let d = try stageDescriptor("file", plugin: "file")
    let stage = try d.make("sink", options(d, ["directory": .string(directory), "append": .bool(append)]))
    let a = MessageStream(name: "alpha"), b = MessageStream(name: "beta")
    let inputs = [StageInput(stream: a), StageInput(stream: b)]
    let feedA = StageOutput(stream: a), feedB = StageOutput(stream: b)
    let counters = StageCounters()
    let context = StageContext(name: "sink", type: "file", logger: Logger(label: "test"), counters: counters,
                               inputs: ["streams": inputs], outputs: [:], stop: StopSignal())
    let t1 = Task { for batch in alpha { await feedA.send(batch) }; feedA.finish() }
    let t2 = Task { for batch in beta { await feedB.send(batch) }; feedB.finish() }
    try await stage.run(context)
    await t1.value
    await t2.value
    return counters.snapshot
}

@Suite struct FileSinkTests {
    /// 5,000 tweets in batches of 1,000, each with a distinct cascade id.
    private var manyTweets: [[Message]] {
        var batches: [[Message]] = []
        for b in 0..<5 {
            var batch: [Message] = []
            for i in 0..<1000 {
                let n = b * 1000 + i
                let tweet = Tweet(kind: .retweet, time: Double(n), magnitude: Double(i), source: 0,
                                  cascade: CascadeID(n), info: "cascade=\(n)")
                batch.append(.tweet(tweet))
            }
            batches.append(batch)
        }
        return batches
    }

    @Test func writesOneValidJSONLinePerMessageOfEachStream() async throws {
        let root = makeScratchDirectory()
        defer { removeTree(root) }
        let dir = root + "/nested/out"  // created like mkdir -p
        // A series long enough to make a single line larger than the sink's 1 MiB buffer.
        let big = Message.series(Series(cascade: 7, msg: "big", tObs: 600,
                                        times: (0..<100_000).map { Double($0) },
                                        magnitudes: (0..<100_000).map { Double($0 % 977) }))
        let counters = try await runSink(directory: dir, append: false, alpha: manyTweets,
                                         beta: [Array(everyKind.prefix(5)), [big], Array(everyKind.dropFirst(5))])
        #expect(counters["lines.alpha"] == 5000)
        #expect(counters["lines.beta"] == everyKind.count + 1)

        let alphaBytes = try #require(readBytes(dir + "/alpha.jsonl"))
        #expect(alphaBytes.last == 0x0A)
        let alphaLines = lines(alphaBytes)
        #expect(alphaLines.count == 5000)
        let expectedAlpha = manyTweets.flatMap { $0 }
        for (i, line) in alphaLines.enumerated() {
            #expect(try WireFormat.decode(line) == expectedAlpha[i])
        }

        let betaBytes = try #require(readBytes(dir + "/beta.jsonl"))
        #expect(betaBytes.last == 0x0A)
        let betaLines = lines(betaBytes)
        let expectedBeta = Array(everyKind.prefix(5)) + [big] + Array(everyKind.dropFirst(5))
        #expect(betaLines.count == expectedBeta.count)
        for (line, expected) in zip(betaLines, expectedBeta) {
            #expect(try WireFormat.decode(line) == expected)
        }
    }

    @Test func truncatesByDefaultAndAppendsOnRequest() async throws {
        let root = makeScratchDirectory()
        defer { removeTree(root) }
        let one: [[Message]] = [Array(everyKind.prefix(3))]
        _ = try await runSink(directory: root, append: false, alpha: manyTweets, beta: one)
        _ = try await runSink(directory: root, append: true, alpha: manyTweets, beta: one)
        #expect(lines(try #require(readBytes(root + "/alpha.jsonl"))).count == 10_000)
        #expect(lines(try #require(readBytes(root + "/beta.jsonl"))).count == 6)
        _ = try await runSink(directory: root, append: false, alpha: [], beta: one)
        #expect(try #require(readBytes(root + "/alpha.jsonl")).isEmpty)
        #expect(lines(try #require(readBytes(root + "/beta.jsonl"))).count == 3)
    }

    /// A run killed in the middle of a write leaves a torn last line; appending cuts it off first
    /// (after the last "\n"; a file with no "\n" at all is emptied), so every line stays whole.
    @Test func appendingCutsATornLastLine() async throws {
        let root = makeScratchDirectory()
        defer { removeTree(root) }
        let whole = String(decoding: WireFormat.encode(everyKind[0]), as: UTF8.self) + "\n"
        // alpha: one whole line then 100 KB of a torn one (longer than the 64 KiB search chunk);
        // beta: only a torn line.
        let tornAlpha = whole + "{\"type\": \"tweet\", \"msg\": \"" + String(repeating: "z", count: 100_000)
        for (name, text) in [("alpha", tornAlpha), ("beta", "{\"type\": \"ser")] {
            let f = try #require(fopen(root + "/\(name).jsonl", "w"))
            fputs(text, f)
            fclose(f)
        }
        let counters = try await runSink(directory: root, append: true, alpha: [[everyKind[3]]], beta: [[everyKind[8]]])
        #expect(counters["torn_lines_truncated"] == 2)
        let alpha = lines(try #require(readBytes(root + "/alpha.jsonl")))
        #expect(try alpha.map { try WireFormat.decode($0) } == [everyKind[0], everyKind[3]])
        let beta = lines(try #require(readBytes(root + "/beta.jsonl")))
        #expect(try beta.map { try WireFormat.decode($0) } == [everyKind[8]])
        // Whole files are left alone.
        let again = try await runSink(directory: root, append: true, alpha: [], beta: [])
        #expect(again["torn_lines_truncated"] == nil)
        #expect(lines(try #require(readBytes(root + "/alpha.jsonl"))).count == 2)
    }

    @Test func singleStreamThroughTheStandardHarness() async throws {
        let root = makeScratchDirectory()
        defer { removeTree(root) }
        let r = try await runStage("file", plugin: "file", options: ["directory": .string(root)],
                                   inputs: ["streams": [everyKind, everyKind]], outputs: [])
        #expect(r.counters["lines.in.streams"] == 2 * everyKind.count)
        let bytes = try #require(readBytes(root + "/in.streams.jsonl"))
        let decoded = try lines(bytes).map { try WireFormat.decode($0) }
        #expect(decoded == everyKind + everyKind)
    }

    @Test func unusableDirectoryIsAnErrorNamingThePath() async throws {
        let root = makeScratchDirectory()
        defer { removeTree(root) }
        let plainFile = root + "/file"
        let f = try #require(fopen(plainFile, "w"))
        fclose(f)
        do {
            _ = try await runSink(directory: plainFile + "/sub", append: false, alpha: [], beta: [])
            Issue.record("a directory below a regular file must be an error")
        } catch {
            #expect("\(error)".contains(plainFile))
        }
    }
}
