// Tests of the hand-written wire codec (WireFormat) against Foundation's coders
// (FoundationWireFormat, the reference): equal bytes on encode, equal messages or equal rejection
// reasons on decode, over seeded random messages, mutations of their JSON, the fuzz seed corpus
// and real SEISMIC cascades (../shared/data/real/auspol.csv). The literal expectations below were
// read off Foundation's JSONEncoder/JSONDecoder (swift-foundation, Swift 6.3) by hand.
import Glibc
import Testing
@_spi(WireTesting) import TweetoscopeCore

@Suite struct WireCodecTests {
    @Test func randomMessagesAndMutationsAgreeWithFoundation() {
        // 9 kinds × 150 messages, each encoded by both, decoded by both, and 8 mutations of it.
        let (disagreements, comparisons) = WireDifferential.run(seed: 17, count: 150, mutations: 8)
        #expect(comparisons == 9 * 150 * 10)
        #expect(disagreements.isEmpty, "\(disagreements.prefix(5).joined(separator: "\n"))")
    }

    @Test func fuzzCorpusAgreesWithFoundation() throws {
        let folder = repositoryRoot() + "/Tests/Fuzz/corpus/wire"
        let names = try #require(listFolder(folder), "cannot list \(folder)")
        #expect(names.count >= 15)
        var r = SplitMix64(seed: 5)
        for name in names {
            let bytes = try #require(readFile(folder + "/" + name), "cannot read \(name)")
            // As the fuzz target: a first line shorter than 24 bytes is the Kafka key.
            var key: String? = nil
            var value = bytes
            if let nl = bytes.firstIndex(of: 0x0A), nl < 24 {
                key = String(decoding: bytes[..<nl], as: UTF8.self)
                value = Array(bytes[(nl + 1)...])
            }
            #expect(WireDifferential.decodeDisagreement(value, key: key) == nil, "\(name)")
            for _ in 0..<200 {
                let mutated = WireDifferential.mutate(value, &r)
                let d = WireDifferential.decodeDisagreement(mutated, key: key)
                #expect(d == nil, "\(name): \(d ?? "")")
            }
        }
    }

    @Test func realCascadesAgreeWithFoundation() throws {
        // Every event of the real cascades as a tweet, every cascade as a series, size and stat.
        let path = repositoryRoot() + "/../shared/data/real/auspol.csv"
        let text = try #require(readFile(path), "cannot read \(path)")
        var rows = String(decoding: text, as: UTF8.self).split(separator: "\n").dropFirst().map { $0.split(separator: ",") }
        rows.removeAll { $0.count != 3 }
        #expect(rows.count > 3000)
        var cascades: [String: (times: [Double], marks: [Double])] = [:]
        var order: [String] = []
        for row in rows {
            let (c, t, m) = (String(row[0]), Double(row[1])!, Double(row[2])!)
            if cascades[c] == nil { order.append(c) }
            cascades[c, default: ([], [])].times.append(t)
            cascades[c, default: ([], [])].marks.append(m)
            let tweet = Message.tweet(Tweet(kind: t == 0 ? .tweet : .retweet, msg: "cascade \(c) — «t=\(t)»\n", time: t,
                                            magnitude: m, source: 3, cascade: CascadeID(c)!, info: "cascade=\(c)"))
            try expectAgreement(tweet)
        }
        for c in order {
            let (times, marks) = cascades[c]!
            try expectAgreement(.series(Series(cascade: CascadeID(c)!, msg: "None", tObs: 600, times: times.map { $0 - times[0] },
                                               magnitudes: marks, seq: 4, t0: times[0])))
            try expectAgreement(.size(CascadeSize(cascade: CascadeID(c)!, tObs: 600, nTot: times.count, tEnd: times.last!)))
            try expectAgreement(.stat(Stat(cascade: CascadeID(c)!, tObs: 600, are: Double(times.count) / 7, forecast: 12.5)))
        }
    }

    /// Equal bytes from both encoders, and equal outcomes from both decoders on those bytes.
    func expectAgreement(_ m: Message) throws {
        #expect(WireDifferential.encodeDisagreement(m) == nil)
        let bytes = WireFormat.encode(m)
        #expect(WireDifferential.decodeDisagreement(bytes, key: WireFormat.key(m)) == nil)
    }

    @Test(arguments: [
        // (Double, Foundation's text)
        (1e20, "1e+20"), (1e16, "1e+16"), (1e15, "1000000000000000"), (9007199254740992, "9007199254740992"),
        (1e-7, "1e-07"), (1e-5, "1e-05"), (0.0001, "0.0001"), (-0.0, "-0"), (0.1, "0.1"), (1234567, "1234567"),
        (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"), (2.5e-5, "2.5e-05"),
        (123456789012345678, "1.2345678901234568e+17"), (Double.infinity, "\"inf\""), (-Double.infinity, "\"-inf\""),
        (Double.nan, "\"nan\""),
    ])
    func doublesAreWrittenAsFoundationWritesThem(value: Double, text: String) {
        let m = Message.stat(Stat(cascade: 1, tObs: 600, are: value))
        let expected = "{\"ARE\":\(text),\"T_obs\":600,\"cid\":1,\"type\":\"stat\"}"
        #expect(String(decoding: WireFormat.encode(m), as: UTF8.self) == expected)
        #expect(String(decoding: FoundationWireFormat.encode(m), as: UTF8.self) == expected)
    }

    @Test func stringsAreEscapedAsFoundationEscapesThem() {
        let m = Message.log(LogRecord(time: -3, source: "a/b\u{7F}é😀", level: "\u{0}\u{8}\t\n\u{B}\u{C}\r\u{1F}", message: "\"\\"))
        let expected = #"{"level":"\u0000\b\t\n\u000b\f\r\u001f","message":"\"\\","source":"a/b"# + "\u{7F}é😀" + #"","t":-3}"#
        #expect(String(decoding: WireFormat.encode(m), as: UTF8.self) == expected)
        #expect(String(decoding: FoundationWireFormat.encode(m), as: UTF8.self) == expected)
    }

    @Test func featureKeysAreSortedByTheirUTF8Bytes() {
        let p = CascadeParameters(cascade: "c", msg: "m", tObs: 600, nObs: 3, nSupp: 1, nSuppMeaning: nil, p: 0.1, beta: 0.5,
                                  nStar: .nan, g1: .nan, features: ["😀": 4, "b": 1, "B": 2, "\u{E000}": 3, "a10": 5, "a9": 6])
        let expected = #"{"T_obs":600,"cid":"c","features":{"B":2,"a10":5,"a9":6,"b":1,""# + "\u{E000}\":3,\"😀\":4},"
            + #""msg":"m","n_obs":3,"n_supp":1,"params":[0.1,0.5],"type":"parameters"}"#
        #expect(String(decoding: WireFormat.encode(.parameters(p)), as: UTF8.self) == expected)
        #expect(String(decoding: FoundationWireFormat.encode(.parameters(p)), as: UTF8.self) == expected)
    }

    @Test(arguments: [
        // (an integer field's text, the value Foundation reads or the reason it rejects it)
        ("3", "3"), ("3.0", "3"), ("1e3", "1000"), ("1E2", "100"), ("-0", "0"), ("-0.0", "0"), ("1e-400", "0"),
        ("12345678901234567890e-1", "1234567890123456789"), ("52345678901234567890e-1", "5234567890123456789"),
        ("9007199254740993.50000000000000000000000000000", "9007199254740993"), ("92233720368547758070e-1", "out_of_range"),
        ("9223372036854775807", "9223372036854775807"),
        ("3.5", "out_of_range"), ("1e400", "out_of_range"), ("9223372036854775808", "out_of_range"),
        ("9.223372036854775807e18", "out_of_range"), ("01", "invalid_json"), ("1.", "invalid_json"), ("-", "invalid_json"),
        ("\"3\"", "wrong_type"), ("null", "wrong_type"), ("true", "wrong_type"),
    ])
    func integersAreReadAsFoundationReadsThem(text: String, expected: String) {
        let json = "{\"type\":\"size\",\"cid\":1,\"T_obs\":600,\"t_end\":3,\"n_tot\":\(text)}"
        for reference in [false, true] {
            switch WireDifferential.outcome(Array(json.utf8), key: nil, reference: reference) {
            case .message(.size(let s), _): #expect(String(s.nTot) == expected, "\(text)")
            case .rejected(let reason): #expect(reason == expected, "\(text)")
            case .message(let m, _): Issue.record("\(text): decoded as \(m.kind)")
            }
        }
    }

    @Test(arguments: [
        // Foundation's leniency, matched: a BOM, trailing commas, duplicate keys (first wins),
        // an unread bad string or number; and what it refuses.
        ("\u{FEFF}{\"type\":\"size\",\"cid\":1,\"n_tot\":2,\"t_end\":3,\"T_obs\":600}", nil),
        ("{\"type\":\"size\",\"cid\":1,\"n_tot\":2,\"t_end\":3,\"T_obs\":600,}", nil),
        ("{\"type\":\"size\",\"cid\":1,\"n_tot\":2,\"n_tot\":\"x\",\"t_end\":3,\"T_obs\":600}", nil),
        ("{\"type\":\"size\",\"cid\":1,\"n_tot\":\"x\",\"n_tot\":2,\"t_end\":3,\"T_obs\":600}", "wrong_type"),
        ("{\"type\":\"size\",\"cid\":1,\"n_tot\":2,\"t_end\":3,\"T_obs\":600,\"x\":\"\\q\",\"y\":01}", nil),
        ("{\"type\":\"size\",\"cid\":1,\"n_tot\":2,\"t_end\":0.00e01,\"T_obs\":600}", "out_of_range"),
        ("{\"type\":\"size\",\"cid\":1,\"n_tot\":2,\"t_end\":0e-999,\"T_obs\":600}", nil),
        ("{\"type\":\"size\",\"cid\":1,\"n_tot\":2,\"t_end\":3,\"T_obs\":600,\"k\\u0001\":1}", nil),
        ("{\"type\":\"size\",\"cid\":1,\"n_tot\":2,\"t_end\":3,\"T_obs\":600,\"k\u{1}\":1}", "invalid_json"),
        ("{\"t\\u0079pe\":\"log\"}", "unknown_type"),
        ("{\"type\":null,\"t\":1,\"source\":\"s\",\"level\":\"INFO\",\"message\":\"m\"}", nil),
        ("null", "wrong_type"),
        ("[]", "invalid_json"),
        ("{,}", "invalid_json"),
    ])
    func foundationsLeniencyIsMatched(json: String, expected: String?) {
        for reference in [false, true] {
            switch WireDifferential.outcome(Array(json.utf8), key: nil, reference: reference) {
            case .message: #expect(expected == nil, "\(json)")
            case .rejected(let reason): #expect(reason == expected, "\(json)")
            }
        }
    }

    @Test func encodeIntoAppendsTheSameBytes() {
        var r = SplitMix64(seed: 9)
        var buffer: [UInt8] = Array("prefix\n".utf8)
        var expected = buffer
        for kind in 0..<9 {
            let m = WireDifferential.message(&r, kind: kind)
            WireFormat.encode(m, into: &buffer)
            expected += FoundationWireFormat.encode(m)
        }
        #expect(buffer == expected)
    }
}

private func readFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&chunk, 1, chunk.count, f)
        if n <= 0 { break }
        out += chunk[0..<n]
    }
    return out
}

private func listFolder(_ path: String) -> [String]? {
    guard let d = opendir(path) else { return nil }
    defer { closedir(d) }
    var names: [String] = []
    while let e = readdir(d) {
        let name = withUnsafePointer(to: e.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
        if !name.hasPrefix(".") { names.append(name) }
    }
    return names.sorted()
}
