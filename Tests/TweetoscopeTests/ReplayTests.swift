// Tests of the `replay` and `jsonl` sources (Plugins/Replay), run through the built plugin as the
// daemon loads it. Expected values are worked out by hand from the small files written here.
import Glibc
import Testing
import TweetoscopeCore

/// Scratch files for the replay tests; `remove()` deletes them.
fileprivate struct Scratch {
    let dir: String

    init() {
        var template = Array("/tmp/tweetoscope-replay-XXXXXX".utf8CString)
        dir = template.withUnsafeMutableBufferPointer { buffer in
            guard let made = mkdtemp(buffer.baseAddress!) else { fatalError("mkdtemp failed") }
            return String(cString: made)
        }
    }

    func remove() { _ = spawn(["rm", "-rf", dir]) }

    /// Writes `text` to `<dir>/<name>` and returns the path.
    func write(_ name: String, _ text: String) -> String {
        let path = dir + "/" + name
        let f = fopen(path, "w")!
        fputs(text, f)
        fclose(f)
        return path
    }

    /// Gzip-compresses `<dir>/<name>` with /bin/gzip, in place; returns the `.gz` path.
    func gzip(_ name: String) -> String {
        #expect(spawn(["gzip", "-f", dir + "/" + name]) == 0)
        return dir + "/" + name + ".gz"
    }
}

/// Runs a command and returns its wait status (0 on success).
fileprivate func spawn(_ args: [String]) -> Int32 {
    var pid: pid_t = 0
    var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    guard posix_spawnp(&pid, args[0], nil, nil, &argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status
}

fileprivate func tweets(_ messages: [Message]?) -> [Tweet] {
    (messages ?? []).compactMap { if case .tweet(let t) = $0 { t } else { nil } }
}

/// Runs a `replay` stage and returns its tweets and counters.
fileprivate func replay(_ options: [String: OptionValue]) async throws -> (tweets: [Tweet], counters: [String: Int]) {
    let r = try await runStage("replay", plugin: "replay", options: options, outputs: ["tweets"])
    return (tweets(r.outputs["tweets"]), r.counters)
}

/// Groups tweets by cascade, keeping output order.
fileprivate func byCascade(_ tweets: [Tweet]) -> [CascadeID: [Tweet]] {
    var groups: [CascadeID: [Tweet]] = [:]
    for t in tweets { groups[t.cascade, default: []].append(t) }
    return groups
}

/// Three cascades: 10 = (0,100) (5,200) (9,300); 20 = (0,1000) (3,50); 30 = (0,7) (1,8) (1,9) (20,10).
fileprivate let threeCascades = """
    cascade,t,m
    10,0,100
    10,5,200
    10,9,300
    20,0,1000
    20,3,50
    30,0,7
    30,1,8
    30,1,9
    30,20,10

    """
fileprivate let threeCascadesData: [CascadeID: [(t: Double, m: Double)]] = [
    10: [(0, 100), (5, 200), (9, 300)],
    20: [(0, 1000), (3, 50)],
    30: [(0, 7), (1, 8), (1, 9), (20, 10)],
]

@Suite struct ReplayTests {
    @Test func longFormatReplaysEveryRowOncePerCascadeInOrder() async throws {
        let files = Scratch()
        defer { files.remove() }
        let path = files.write("three.csv", threeCascades)
        let (out, counters) = try await replay(["path": .string(path), "sources": .int(2), "seed": .int(7)])
        #expect(out.count == 9)
        #expect(counters["events"] == 9)
        #expect(counters["cascades"] == 3)
        // Ordered by (time, source); each source's clock never goes backwards.
        for (a, b) in zip(out, out.dropFirst()) {
            #expect(a.time < b.time || (a.time == b.time && a.source <= b.source))
        }
        let groups = byCascade(out)
        #expect(Set(groups.keys) == [10, 20, 30])
        for (id, events) in groups {
            let data = threeCascadesData[id]!
            #expect(events.map(\.kind) == [.tweet] + Array(repeating: .retweet, count: data.count - 1))
            #expect(events.map { $0.time - events[0].time } == data.map(\.t))
            #expect(events.map(\.magnitude) == data.map(\.m))
            #expect(Set(events.map(\.source)).count == 1)
            #expect(events.allSatisfy { $0.info == "cascade=\(id)" && $0.msg == "None" })
            #expect(events[0].time == events[0].time.rounded())  // whole-second starts
        }
        // 3 cascades in 2 contiguous folds: one source replays 2 cascades, the other 1.
        var perSource: [SourceID: Set<CascadeID>] = [:]
        for t in out { perSource[t.source, default: []].insert(t.cascade) }
        #expect(Set(perSource.keys) == [0, 1])
        #expect(perSource.values.map(\.count).sorted() == [1, 2])
    }

    @Test func oneCascadeAtATimeStartsEachWhenThePreviousEnds() async throws {
        let files = Scratch()
        defer { files.remove() }
        let path = files.write("two.csv", "cascade,t,m\n1,0,10\n1,5,11\n1,9,12\n2,0,20\n2,3,21\n")
        let (out, _) = try await replay(["path": .string(path), "max_cascades": .int(1),
                                         "random_start_range": .double(0), "seed": .int(3)])
        // With a zero range the next cascade starts at the previous one's last event.
        let aThenB: [Double] = [0, 5, 9, 9, 12], bThenA: [Double] = [0, 3, 3, 8, 12]
        let times = out.map(\.time)
        #expect(times == aThenB || times == bThenA)
        #expect(out.map(\.kind) == [.tweet, .retweet, .retweet, .tweet, .retweet]
            || out.map(\.kind) == [.tweet, .retweet, .tweet, .retweet, .retweet])
        #expect(out.allSatisfy { $0.source == 0 })
    }

    @Test func simultaneousCascadesStartTogetherWithZeroRange() async throws {
        let files = Scratch()
        defer { files.remove() }
        let path = files.write("three.csv", threeCascades)
        let (out, _) = try await replay(["path": .string(path), "max_cascades": .int(3),
                                         "random_start_range": .double(0)])
        #expect(out.map(\.time) == [0, 0, 0, 1, 1, 3, 5, 9, 20])
        #expect(out.prefix(3).allSatisfy { $0.kind == .tweet })
    }

    @Test func sameSeedSameReplayDifferentSeedDifferentOrder() async throws {
        let files = Scratch()
        defer { files.remove() }
        var text = "cascade,t,m\n"
        for c in 0..<40 { text += "\(c),0,\(c)\n\(c),\(c + 1),1\n\(c),\(3 * c + 7),2\n" }
        let path = files.write("forty.csv", text)
        let a = try await replay(["path": .string(path), "sources": .int(3), "seed": .int(11)]).tweets
        let b = try await replay(["path": .string(path), "sources": .int(3), "seed": .int(11)]).tweets
        let c = try await replay(["path": .string(path), "sources": .int(3), "seed": .int(12)]).tweets
        #expect(a.count == 120)
        #expect(a == b)
        let firsts = { (x: [Tweet]) in x.filter { $0.kind == .tweet }.map(\.cascade) }
        #expect(firsts(a) != firsts(c))
        #expect(Set(firsts(a)) == Set(firsts(c)))
        for source in 0..<3 {
            let times = a.filter { $0.source == SourceID(source) }.map(\.time)
            #expect(times == times.sorted())
        }
    }

    @Test func gzipFileGivesTheSameReplay() async throws {
        let files = Scratch()
        defer { files.remove() }
        let plain = files.write("plain.csv", threeCascades)
        _ = files.write("packed.csv", threeCascades)
        let packed = files.gzip("packed.csv")
        let a = try await replay(["path": .string(plain), "seed": .int(5), "sources": .int(2)])
        let b = try await replay(["path": .string(packed), "seed": .int(5), "sources": .int(2)])
        #expect(b.tweets.count == 9)
        #expect(a.tweets == b.tweets)
    }

    /// A compressed file of over 2 MiB (decoded ahead of the parser, 1 MiB at a time, on a
    /// thread of its own) replays exactly as the same file uncompressed: every event, same order.
    @Test func largeGzipFileGivesTheSameReplay() async throws {
        let files = Scratch()
        defer { files.remove() }
        var text = "cascade,t,m\n"
        for c in 0..<400 {
            for k in 0..<500 { text += "\(c),\(k * 3),\(100 + (c * 7 + k) % 997)\n" }
        }
        #expect(text.utf8.count > 2 << 20)
        let plain = files.write("plain.csv", text)
        _ = files.write("packed.csv", text)
        let packed = files.gzip("packed.csv")
        let a = try await replay(["path": .string(plain), "seed": .int(3), "sources": .int(2)])
        let b = try await replay(["path": .string(packed), "seed": .int(3), "sources": .int(2)])
        #expect(a.tweets.count == 200_000)
        #expect(a.tweets == b.tweets)
    }

    @Test func malformedRowsAreCountedByReasonAndGoodRowsPass() async throws {
        let files = Scratch()
        defer { files.remove() }
        let path = files.write("bad.csv", """
            cascade,t,m
            1,0,10
            1,5
            1,x,3
            1,nan,3
            1,7,-1
            1,6,2
            1,4,2
            2,0,1
            2,2,1,9

            1,8,1
            2,inf,1
            2,1e13,1
            2,3,5

            """)
        let (out, counters) = try await replay(["path": .string(path), "random_start_range": .double(0),
                                                "max_cascades": .int(2)])
        #expect(counters["rejected.invalid_csv"] == 2)
        #expect(counters["rejected.wrong_type"] == 1)
        #expect(counters["rejected.non_finite"] == 2)
        #expect(counters["rejected.negative"] == 1)
        #expect(counters["rejected.out_of_order"] == 1)
        #expect(counters["rejected.not_contiguous"] == 1)
        #expect(counters["rejected.out_of_range"] == 1)
        #expect(counters["events"] == 4)
        let groups = byCascade(out)
        #expect(groups[1]?.map(\.time) == [0, 6])
        #expect(groups[1]?.map(\.magnitude) == [10, 2])
        #expect(groups[2]?.map(\.time) == [0, 3])
        #expect(groups[2]?.map(\.magnitude) == [1, 5])
    }

    @Test func wrongHeaderOrMissingFileIsAnErrorNamingTheFile() async throws {
        let files = Scratch()
        defer { files.remove() }
        let wrong = files.write("wrong.csv", "id,time,magnitude\n1,0,1\n")
        do {
            _ = try await replay(["path": .string(wrong)])
            Issue.record("a wrong header must be an error")
        } catch {
            #expect("\(error)".contains("\(wrong):1"))
        }
        let courseData = files.write("course.csv", "a,b,c,d\n0,1\n")
        let courseIndex = files.write("index.csv", "start_ind,end_ind\n1,1\n")
        do {
            _ = try await replay(["path": .string(courseData), "index": .string(courseIndex)])
            Issue.record("a course header with 3 commas must be an error")
        } catch {
            #expect("\(error)".contains("\(courseData):1"))
        }
        let missing = files.dir + "/missing.csv"
        do {
            _ = try await replay(["path": .string(missing)])
            Issue.record("a missing file must be an error")
        } catch {
            #expect("\(error)".contains(missing))
        }
    }

    @Test func courseFormatUsesIndexRangesAndRoundsTimes() async throws {
        let files = Scratch()
        defer { files.remove() }
        // Rows (1-based) and times × 2 rounded half up: 1: 0 | 2: 0.6 -> 1 | 3: 2.5 -> 3 | 4: 0 |
        // 5: 0.4 -> 0 | 6: 0 | 7: bad | 8: 4 | 9: 2 (before 4 in its cascade: dropped).
        let data = files.write("news-data.csv", """
            time,magnitude,msg
            0,100,first A
            0.3,5,a reply
            1.25,6,"quoted, text"
            0,1000,first B
            0.2,2,x
            0,3,first C
            abc,1,bad
            2,4,late
            1,5,back

            """)
        _ = files.write("news-index.csv", "start_ind,end_ind\n1,3\n4,5\n7,12\n2,4\n6,9\n0,1\n")
        let index = files.gzip("news-index.csv")
        let (out, counters) = try await replay([
            "path": .string(data), "index": .string(index), "seconds_per_time_unit": .double(2),
            "random_start_range": .double(0), "max_cascades": .int(10),
        ])
        #expect(counters["rejected.index_range"] == 2)
        #expect(counters["rejected.index_overlap"] == 1)
        #expect(counters["rejected.wrong_type"] == 1)
        #expect(counters["rejected.out_of_order"] == 1)
        #expect(counters["events"] == 7)
        #expect(counters["cascades"] == 3)
        let groups = byCascade(out)
        #expect(Set(groups.keys) == [0, 1, 4])  // positions in the index file
        #expect(groups[0]?.map(\.time) == [0, 1, 3])
        #expect(groups[0]?.map(\.magnitude) == [100, 5, 6])
        #expect(groups[0]?.map(\.msg) == ["first A", "a reply", "quoted, text"])
        #expect(groups[1]?.map(\.time) == [0, 0])
        #expect(groups[1]?.map(\.msg) == ["first B", "x"])
        #expect(groups[4]?.map(\.time) == [0, 4])
        #expect(groups[4]?.map(\.magnitude) == [3, 4])
        #expect(groups[4]?.map(\.kind) == [.tweet, .retweet])
        #expect(groups[4]?.first?.info == "cascade=4")
    }

    @Test func limitReplaysThatManyWholeCascades() async throws {
        let files = Scratch()
        defer { files.remove() }
        var text = "cascade,t,m\n"
        for c in 1...10 { for k in 0..<c { text += "\(c),\(k * 10),1\n" } }  // cascade c has c events
        let path = files.write("ten.csv", text)
        let (out, counters) = try await replay(["path": .string(path), "limit": .int(4), "seed": .int(9)])
        let groups = byCascade(out)
        #expect(groups.count == 4)
        #expect(counters["cascades"] == 4)
        for (id, events) in groups { #expect(events.count == Int(id.number!)) }
        #expect(out.count == groups.keys.reduce(0) { $0 + Int($1.number!) })
    }

    @Test func timeAccelerationPacesTheReplay() async throws {
        let files = Scratch()
        defer { files.remove() }
        let path = files.write("slow.csv", "cascade,t,m\n1,0,1\n1,3,1\n")
        let start = ContinuousClock.now
        let (out, _) = try await replay(["path": .string(path), "random_start_range": .double(0),
                                         "time_acceleration": .double(10)])
        let elapsed = ContinuousClock.now - start
        #expect(out.map(\.time) == [0, 3])
        #expect(elapsed >= .milliseconds(290))  // 3 source seconds at 10 per wall second
        #expect(elapsed < .seconds(10))
    }

    @Test func stopRequestEndsTheReplayAfterTheCurrentBatch() async throws {
        let files = Scratch()
        defer { files.remove() }
        var text = "cascade,t,m\n"
        for c in 0..<3 { for k in 0..<2000 { text += "\(c),\(k),1\n" } }  // 6,000 events
        let path = files.write("six-thousand.csv", text)
        let d = try stageDescriptor("replay", plugin: "replay")
        let stage = try d.make("replay", options(d, ["path": .string(path)]))
        let stream = MessageStream(name: "tweets", capacity: 1 << 10)
        let collector = StageInput(stream: stream)
        let output = StageOutput(stream: stream)
        let stop = StopSignal()
        stop.request()
        let context = StageContext(name: "replay", type: "replay", logger: Logger(label: "test"),
                                   inputs: [:], outputs: ["tweets": output], stop: stop)
        try await stage.run(context)
        output.finish()
        var received = 0
        while let batch = await collector.next() { received += batch.count }
        // One full batch (the replay's 1,024 tweets), then the stop request is seen.
        #expect(received == 1024)
        #expect(context.counters["events"] == 1024)
    }

    @Test func embeddedSampleReplaysEveryEvent() async throws {
        let path = repositoryRoot() + "/data/sample.csv"
        // Independent count: lines of the file minus the header.
        let f = try #require(fopen(path, "r"))
        var lines = 0
        var c = getc(f)
        while c != EOF { if c == 0x0A { lines += 1 }; c = getc(f) }
        fclose(f)
        let (out, counters) = try await replay(["path": .string(path), "sources": .int(3), "seed": .int(1)])
        #expect(out.count == lines - 1)
        #expect(counters.keys.filter { $0.hasPrefix("rejected.") }.isEmpty)
        #expect(out.filter { $0.kind == .tweet }.count == 25)
        #expect(Set(out.map(\.cascade)).count == 25)
    }

    /// Issue 16 (5): a truncated gzip file fails the source, but only after every whole line read
    /// before the cut has been sent. The expected count comes from /bin/gzip's own decompression
    /// of the cut file (its whole lines).
    @Test func truncatedGzipJSONLinesDeliversTheLinesBeforeTheError() async throws {
        let files = Scratch()
        defer { files.remove() }
        var text = ""
        for i in 0..<20_000 {
            text += #"{"type": "retweet", "t": \#(i), "m": \#(i % 97), "tweet_id": \#(i % 13), "source": 1}"# + "\n"
        }
        _ = files.write("tweets.jsonl", text)
        let packed = files.gzip("tweets.jsonl")
        #expect(spawn(["sh", "-c", "size=$(stat -c %s '\(packed)'); truncate -s $((size * 2 / 3)) '\(packed)'"]) == 0)
        _ = spawn(["sh", "-c", "gzip -dc '\(packed)' > '\(files.dir)/readable' 2>/dev/null"])
        let readable = try #require(fopen(files.dir + "/readable", "r"))
        var wholeLines = 0
        while true { let c = fgetc(readable); if c == EOF { break }; if c == 0x0A { wholeLines += 1 } }
        fclose(readable)
        #expect(wholeLines > 4096 && wholeLines < 20_000)

        let r = try await runStageCapturingFailure("jsonl", plugin: "replay", options: ["path": .string(packed)],
                                                   outputs: ["tweets"])
        let error = try #require(r.error)
        #expect("\(error)".contains(packed))
        let out = tweets(r.outputs["tweets"])
        #expect(out.count == wholeLines)
        #expect(r.counters["events"] == wholeLines)
        #expect(out.map(\.time) == (0..<wholeLines).map(Double.init))
    }

    /// Issue 16 (5): a truncated gzip long-format file replays the whole cascades read before the
    /// cut (the cascade the cut falls in is dropped, counted `events_cut`), then fails.
    @Test func truncatedGzipReplayKeepsTheWholeCascadesBeforeTheError() async throws {
        let files = Scratch()
        defer { files.remove() }
        var text = "cascade,t,m\n"
        for c in 1...400 { for k in 0..<50 { text += "\(c),\(k * 7 + c % 5),\(100 + (c * k) % 89)\n" } }
        _ = files.write("long.csv", text)
        let packed = files.gzip("long.csv")
        #expect(spawn(["sh", "-c", "size=$(stat -c %s '\(packed)'); truncate -s $((size / 2)) '\(packed)'"]) == 0)
        _ = spawn(["sh", "-c", "gzip -dc '\(packed)' > '\(files.dir)/readable' 2>/dev/null"])
        let readable = try #require(fopen(files.dir + "/readable", "r"))
        var bytes: [UInt8] = []
        while true { let c = fgetc(readable); if c == EOF { break }; bytes.append(UInt8(c)) }
        fclose(readable)
        // Whole lines after the header, by cascade; the last cascade seen was cut.
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        let whole = lines.dropFirst().dropLast()  // the last element is the partial line (or "")
        let ids = whole.map { Int($0.split(separator: ",")[0])! }
        let cut = ids.last!
        let keptCascades = Set(ids).subtracting([cut])
        #expect(keptCascades.count > 10 && keptCascades.count < 399)

        let r = try await runStageCapturingFailure("replay", plugin: "replay",
                                                   options: ["path": .string(packed), "sources": .int(2)],
                                                   outputs: ["tweets"])
        #expect(r.error != nil)
        let out = tweets(r.outputs["tweets"])
        #expect(Set(out.map(\.cascade)) == Set(keptCascades.map { CascadeID($0) }))
        #expect(out.count == keptCascades.count * 50)
        #expect(r.counters["events_cut"] == ids.filter { $0 == cut }.count)
    }

    @Test func jsonLinesSourceReadsGoodLinesAndCountsBadOnes() async throws {
        let files = Scratch()
        defer { files.remove() }
        let path = files.write("tweets.jsonl", """
            {"type": "tweet", "msg": "hi", "t": 0, "m": 10, "tweet_id": 5, "info": "cascade=5"}

            {"type": "retweet", "t": 3, "m": 2, "tweet_id": 5, "source": 2}
            not json
            {"type": "size", "cid": 1, "T_obs": 600, "n_tot": 3, "t_end": 9}
            {"type": "retweet", "t": 4, "m": 2}
            {"type": "retweet", "t": -1, "m": 2, "tweet_id": 5}
            {"type": "blah"}
            """)
        let r = try await runStage("jsonl", plugin: "replay", options: ["path": .string(path)], outputs: ["tweets"])
        let out = tweets(r.outputs["tweets"])
        #expect(out == [
            Tweet(kind: .tweet, msg: "hi", time: 0, magnitude: 10, source: 0, cascade: 5, info: "cascade=5"),
            Tweet(kind: .retweet, msg: "None", time: 3, magnitude: 2, source: 2, cascade: 5, info: ""),
        ])
        #expect(r.counters["events"] == 2)
        #expect(r.counters["rejected.invalid_json"] == 1)
        #expect(r.counters["rejected.not_a_tweet"] == 1)
        #expect(r.counters["rejected.missing_field"] == 1)
        #expect(r.counters["rejected.negative"] == 1)
        #expect(r.counters["rejected.unknown_type"] == 1)

        let forced = try await runStage("jsonl", plugin: "replay",
                                        options: ["path": .string(path), "source": .int(7)], outputs: ["tweets"])
        #expect(tweets(forced.outputs["tweets"]).map(\.source) == [7, 7])
    }

    @Test func oversizedAndInvalidUTF8RowsAreRejectedAndDeadLettered() async throws {
        let files = Scratch()
        defer { files.remove() }
        // max_record_bytes 64: line 3 (70 bytes) and line 6 (100 KB, longer than the reader's
        // buffer is allowed to grow for it) are oversized; line 4 has a 0xFF byte.
        let long = "1,1," + String(repeating: "7", count: 66)
        let huge = "1,2," + String(repeating: "8", count: 100_000)
        var bytes = Array("cascade,t,m\n1,0,5\n\(long)\n1,3,".utf8) + [0xFF] + Array("\n1,4,6\n\(huge)\n1,9,1\n".utf8)
        let path = files.dir + "/mixed.csv"
        let f = fopen(path, "w")!
        fwrite(&bytes, 1, bytes.count, f)
        fclose(f)
        let r = try await runStage("replay", plugin: "replay",
                                   options: ["path": .string(path), "max_record_bytes": .int(64),
                                             "random_start_range": .double(0)],
                                   outputs: ["tweets", "rejected"])
        #expect(tweets(r.outputs["tweets"]).map(\.time) == [0, 4, 9])
        #expect(r.counters["rejected.oversized"] == 2)
        #expect(r.counters["rejected.invalid_utf8"] == 1)
        #expect(r.counters["dead_letters"] == 3)
        let letters = (r.outputs["rejected"] ?? []).compactMap { if case .log(let l) = $0 { l } else { nil } }
        #expect(letters.map(\.message) == [
            "oversized: \(path):3: \(long)",
            "invalid_utf8: \(path):4: 1,3,\u{FFFD}",
            "oversized: \(path):6: \(String(huge.prefix(1024)))…",
        ])
        #expect(letters.allSatisfy { $0.level == "WARNING" && $0.source == "replay" && $0.time > 1_700_000_000 })
    }

    @Test func jsonLinesDeadLettersCarryReasonLocationAndRecord() async throws {
        let files = Scratch()
        defer { files.remove() }
        let path = files.write("t.jsonl", """
            {"type": "tweet", "t": 0, "m": 1, "tweet_id": 1}
            {"type": "tweet", "t": 1e13, "m": 1, "tweet_id": 2}
            {"type": "retweet", "t": 2, "m": "many", "tweet_id": 1}
            \(String(repeating: " ", count: 80)){}
            """)
        let r = try await runStage("jsonl", plugin: "replay", options: ["path": .string(path), "max_record_bytes": .int(64)],
                                   outputs: ["tweets", "rejected"])
        #expect(tweets(r.outputs["tweets"]).map(\.cascade) == [1])
        let letters = (r.outputs["rejected"] ?? []).compactMap { if case .log(let l) = $0 { l.message } else { nil } }
        #expect(letters == [
            #"out_of_range: \#(path):2: {"type": "tweet", "t": 1e13, "m": 1, "tweet_id": 2}"#,
            #"wrong_type: \#(path):3: {"type": "retweet", "t": 2, "m": "many", "tweet_id": 1}"#,
            "oversized: \(path):4: \(String(repeating: " ", count: 80)){}",
        ])
        #expect(r.counters["rejected.out_of_range"] == 1 && r.counters["rejected.wrong_type"] == 1
                && r.counters["rejected.oversized"] == 1)
    }

    @Test func linesLongerThanTheChunkAreReadWhole() async throws {
        // A 3 MiB line within max_record_bytes (4 MiB) makes the line reader grow its 1 MiB buffer.
        let files = Scratch()
        defer { files.remove() }
        let msg = String(repeating: "x", count: 3 << 20)
        let path = files.write("long.jsonl", """
            {"type": "tweet", "msg": "\(msg)", "t": 0, "m": 1, "tweet_id": 1}
            {"type": "retweet", "t": 1, "m": 1, "tweet_id": 1}

            """)
        let r = try await runStage("jsonl", plugin: "replay", options: ["path": .string(path), "max_record_bytes": .int(4 << 20)],
                                   outputs: ["tweets"])
        let out = tweets(r.outputs["tweets"])
        #expect(out.count == 2 && out.first?.msg.utf8.count == 3 << 20)
    }
}
