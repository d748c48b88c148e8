// Tests of the configuration loader on hostile input: invalid UTF-8, alias bombs, durations that
// would overflow, and the dead-letter port and bounds options in a full configuration.
import Glibc
import Testing
import TweetoscopeCore
@testable import TweetoscopeRuntime

/// The diagnostics of loading `bytes` as a configuration file (empty when it is valid).
fileprivate func diagnostics(_ bytes: [UInt8]) -> [String] {
    var template = Array("/tmp/tweetoscope-config-XXXXXX".utf8CString)
    let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    let path = dir + "/config.yaml"
    let f = fopen(path, "wb")!
    _ = bytes.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count, f) }
    fclose(f)
    defer { unlink(path); rmdir(dir) }
    do {
        _ = try ConfigLoader.load(path: path, pluginDirectory: buildFolder())
        return []
    } catch let e as ConfigErrors {
        return e.diagnostics.map { d in d.mark.map { "\($0.line):\($0.column): \(d.message)" } ?? d.message }
    } catch {
        return ["\(error)"]
    }
}

fileprivate func diagnostics(_ text: String) -> [String] { diagnostics(Array(text.utf8)) }

@Suite struct ConfigInputTests {
    @Test func invalidUTF8IsReportedAtItsPosition() {
        // Line 2, column 10 (1-based, bytes): the 0xFF after "  path: x".
        let bytes = Array("stages:\n  path: x".utf8) + [0xFF] + Array("\n".utf8)
        #expect(diagnostics(bytes) == ["2:10: invalid UTF-8 (byte 0xff): a configuration file is UTF-8 text"])
    }

    @Test func aliasBombIsRefused() {
        // 10 levels of 10 aliases each would expand to 10^10 nodes.
        var text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for k in 1...9 {
            text += "a\(k): &a\(k) [" + Array(repeating: "*a\(k - 1)", count: 10).joined(separator: ", ") + "]\n"
        }
        text += "stages: {}\n"
        let d = diagnostics(text)
        #expect(d.count == 1 && d[0].contains("more than 100000 nodes once aliases are expanded"), "\(d)")
    }

    @Test func durationsThatWouldOverflowAreRefused() {
        let d = diagnostics("progress_interval: 1e300\nmetrics: { listen: \":0\", linger: 1e20 }\nstages: {}\n")
        #expect(d.contains("1:20: progress_interval: expected seconds in 0...31536000, found 1e+300"), "\(d)")
        #expect(d.contains("2:34: metrics.linger: expected seconds in 0...31536000, found 1e+20"), "\(d)")
    }

    @Test func deadLetterPortAndBoundsAreAccepted() {
        let sample = repositoryRoot() + "/data/sample.csv"
        let valid = """
            stages:
              source:
                type: replay
                path: \(sample)
                max_record_bytes: 4096
                outputs: { tweets: tweets, rejected: dead }
              collector:
                type: collector
                inputs: { tweets: tweets }
                outputs: { series: series }
                max_open_cascades: 1000
              sink:
                type: file
                inputs: { streams: [series, dead] }
                directory: /tmp/unused-by-validation

            """
        #expect(diagnostics(valid) == [])
        let tooSmall = valid.replacingOccurrences(of: "max_record_bytes: 4096", with: "max_record_bytes: 10")
        let d = diagnostics(tooSmall)
        #expect(d.count == 1 && d[0].hasPrefix("5:23: stage \"source\": option `max_record_bytes`: 10 is out of its range 64...1073741824"), "\(d)")
        // The dead letters are log messages: a stage taking tweets cannot consume them.
        let wrongKind = valid.replacingOccurrences(of: "inputs: { tweets: tweets }", with: "inputs: { tweets: dead }")
        #expect(diagnostics(wrongKind).contains { $0.contains("stream \"dead\" carries log but input `tweets` takes tweet") })
    }
}

private extension String {
    func replacingOccurrences(of a: String, with b: String) -> String {
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: a) {
            out += rest[..<r.lowerBound] + b
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}
