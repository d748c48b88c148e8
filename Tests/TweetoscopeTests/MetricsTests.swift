// Metrics: the backend behind swift-metrics (names, labels, help, conflicts), the `metrics`
// configuration section, the mapping of stage counters to metric names, the forecast board, the
// HTTP endpoint and the `top` table.
import Glibc
import Synchronization
import Testing
import TweetoscopeCore
@testable import TweetoscopeRuntime

/// The exposition as text.
private func exposition() -> String {
    String(decoding: TweetoscopeMetrics.exposition(), as: UTF8.self)
}

/// The sample lines of `name` (exact family name, without `# ` lines).
private func samples(_ name: String, in text: String) -> [String] {
    text.split(separator: "\n").map(String.init).filter { $0.hasPrefix(name + "{") || $0.hasPrefix(name + " ") }
}

@Suite struct MetricsBackendTests {
    init() { TweetoscopeMetrics.bootstrap() }

    @Test func countersGaugesAndHistogramsAreRenderedWithHelpAndSortedLabels() {
        TweetoscopeMetrics.describe("tweetoscope_test_things_total", help: "Things counted by a test.")
        Counter(label: "tweetoscope_test_things_total", dimensions: [("t_obs", "600"), ("stage", "a")]).increment(by: 3)
        // Same labels in another order: the same series.
        Counter(label: "tweetoscope_test_things_total", dimensions: [("stage", "a"), ("t_obs", "600")]).increment(by: 2)
        Gauge(label: "tweetoscope_test_level", dimensions: [("stage", "a")]).record(7.5)
        Recorder(label: "tweetoscope_test_error_ratio", dimensions: [("t_obs", "1200")]).record(0.3)
        Timer(label: "tweetoscope_test_work_seconds").recordNanoseconds(2_000_000)
        let text = exposition()
        #expect(text.contains("# HELP tweetoscope_test_things_total Things counted by a test.\n"))
        #expect(text.contains("# TYPE tweetoscope_test_things_total counter\n"))
        #expect(samples("tweetoscope_test_things_total", in: text) == [#"tweetoscope_test_things_total{stage="a",t_obs="600"} 5"#])
        #expect(samples("tweetoscope_test_level", in: text) == [#"tweetoscope_test_level{stage="a"} 7.5"#])
        // Undescribed metrics still get a help line (promtool requires one).
        #expect(text.contains("# HELP tweetoscope_test_level tweetoscoped test level\n"))
        // A `_ratio` histogram gets the ratio buckets, a timer the seconds buckets (in seconds).
        #expect(text.contains(#"tweetoscope_test_error_ratio_bucket{t_obs="1200",le="0.3"} 1"#))
        #expect(text.contains(#"tweetoscope_test_error_ratio_bucket{t_obs="1200",le="0.2"} 0"#))
        #expect(text.contains("# TYPE tweetoscope_test_work_seconds histogram\n"))
        #expect(text.contains(#"tweetoscope_test_work_seconds_bucket{le="0.0025"} 1"#))
        #expect(text.contains(#"tweetoscope_test_work_seconds_bucket{le="0.001"} 0"#))
        #expect(text.contains("tweetoscope_test_work_seconds_count 1\n"))
    }

    @Test func aConflictingMetricIsIgnoredInsteadOfAborting() {
        Counter(label: "tweetoscope_test_conflict_total").increment()
        // A gauge with a counter's name, and the counter with labels: refused, no crash.
        Gauge(label: "tweetoscope_test_conflict_total").record(42)
        Counter(label: "tweetoscope_test_conflict_total", dimensions: [("stage", "x")]).increment()
        let text = exposition()
        #expect(samples("tweetoscope_test_conflict_total", in: text) == ["tweetoscope_test_conflict_total 1"])
    }

    @Test func destroyedGaugesLeaveTheExposition() {
        let g = Gauge(label: "tweetoscope_test_transient", dimensions: [("rank", "1")])
        g.record(1)
        #expect(samples("tweetoscope_test_transient", in: exposition()).count == 1)
        g.destroy()
        #expect(samples("tweetoscope_test_transient", in: exposition()).isEmpty)
    }

    @Test func stageContextRecordsProcessingTimePerStage() {
        let context = StageContext(name: "proc-test", type: "x", logger: Logger(label: "t"), inputs: [:], outputs: [:],
                                   stop: StopSignal())
        context.recordProcessing(.milliseconds(3))
        #expect(samples("tweetoscope_stage_processing_seconds_count", in: exposition())
            .contains(#"tweetoscope_stage_processing_seconds_count{stage="proc-test"} 1"#))
    }

    @Test func collectHooksRunBeforeEachExposition() {
        let calls = Atomic<Int>(0)
        let id = TweetoscopeMetrics.addCollectHook { calls.add(1, ordering: .relaxed) }
        _ = TweetoscopeMetrics.exposition()
        _ = TweetoscopeMetrics.exposition()
        TweetoscopeMetrics.removeCollectHook(id)
        // Other tests render expositions concurrently: the hook ran at least for our two, and
        // never after its removal.
        let atRemoval = calls.load(ordering: .relaxed)
        #expect(atRemoval >= 2)
        _ = TweetoscopeMetrics.exposition()
        #expect(calls.load(ordering: .relaxed) == atRemoval)
    }
}

@Suite struct MetricsConfigTests {
    @Test func listenAddressForms() {
        #expect(MetricsSettings.parseListen("127.0.0.1:9464")! == ("127.0.0.1", 9464))
        #expect(MetricsSettings.parseListen("0.0.0.0:80")! == ("0.0.0.0", 80))
        #expect(MetricsSettings.parseListen(":9464")! == ("127.0.0.1", 9464))
        #expect(MetricsSettings.parseListen("9464")! == ("127.0.0.1", 9464))
        #expect(MetricsSettings.parseListen("[::1]:9464")! == ("::1", 9464))
        #expect(MetricsSettings.parseListen("localhost:0")! == ("localhost", 0))
        for bad in ["", ":", "host:", "host:port", "::1:9464", "[::1]9464", "127.0.0.1:65536", "1.2.3.4:-1", "a b:1"] {
            #expect(MetricsSettings.parseListen(bad) == nil, "\(bad)")
        }
    }

    private func settings(_ yaml: String) -> (DaemonSettings, [ConfigDiagnostic]) {
        var errors: [ConfigDiagnostic] = []
        let (s, _) = ConfigLoader.parseSettings(yaml + "stages: {}\n", file: "m.yaml", errors: &errors)
        return (s, errors)
    }

    @Test func metricsSectionIsOffByDefaultAndParsed() {
        #expect(settings("log_level: info\n").0.metrics == nil)
        let (s, errors) = settings("metrics:\n  listen: \"127.0.0.1:9999\"\n  top_k: 5\n  linger: 2.5\n")
        #expect(errors.isEmpty)
        var want = MetricsSettings(host: "127.0.0.1", port: 9999)
        want.topK = 5
        want.linger = 2.5
        #expect(s.metrics == want)
        #expect(settings("metrics: { listen: 9464 }\n").0.metrics == MetricsSettings(host: "127.0.0.1", port: 9464))
    }

    @Test func metricsSectionErrorsHavePositions() {
        let (_, e1) = settings("metrics:\n  listn: \":9464\"\n")
        #expect(e1.map(\.description) == [
            "m.yaml:2:3: error: unknown key of `metrics` `listn`; did you mean `listen`?",
            "m.yaml:1:1: error: metrics: missing key `listen` (host:port of the Prometheus endpoint, e.g. \"127.0.0.1:9464\")",
        ])
        let (_, e2) = settings("metrics:\n  listen: \"nowhere\"\n")
        #expect(e2.count == 1 && e2[0].description.hasPrefix("m.yaml:2:11: error: metrics.listen: expected host:port"))
        let (_, e3) = settings("metrics: 9464\n")
        #expect(e3.count == 1 && e3[0].description.hasPrefix("m.yaml:1:10: error: metrics: expected a mapping"))
        let (_, e4) = settings("metrics: { listen: \":1\", top_k: -1 }\n")
        #expect(e4.count == 1 && e4[0].description.contains("metrics.top_k: expected an integer in 0...1000"))
    }
}

@Suite struct RuntimeMetricsTests {
    @Test func stageCountersMapToPrometheusNames() {
        func m(_ c: String) -> String {
            let (name, labels) = RuntimeMetrics.counterMetric(c)
            return name + "{" + labels.map { "\($0.0)=\($0.1)" }.joined(separator: ",") + "}"
        }
        #expect(m("events") == "tweetoscope_stage_events_total{}")
        #expect(m("cascades_opened") == "tweetoscope_stage_cascades_opened_total{}")
        #expect(m("rejected.late_event") == "tweetoscope_stage_rejected_records_total{reason=late_event}")
        #expect(m("rejected.fit_numerical_failure") == "tweetoscope_stage_rejected_records_total{reason=fit_numerical_failure}")
        #expect(m("kafka_error.transport") == "tweetoscope_stage_errors_total{error=kafka_transport}")
        #expect(m("error.io") == "tweetoscope_stage_errors_total{error=io}")
        #expect(m("commit_failed") == "tweetoscope_stage_errors_total{error=commit_failed}")
        #expect(m("lines.cascade_series") == "tweetoscope_stage_lines_total{detail=cascade_series}")
        #expect(m("Odd-Name") == "tweetoscope_stage_odd_name_total{}")
        #expect(m("errors") == "tweetoscope_stage_counter_errors_total{}")
        #expect(m("input_records") == "tweetoscope_stage_counter_input_records_total{}")
    }

    @Test func forecastBoardKeepsTheLatestForecastOfRunningCascades() {
        TweetoscopeMetrics.bootstrap()
        let board = ForecastBoard()
        board.observe([
            .alert(Alert(cascade: 1, msg: "a", tObs: 600, nTot: 50)),
            .alert(Alert(cascade: 2, msg: "b", tObs: 600, nTot: 500)),
            .alert(Alert(cascade: 3, msg: "c", tObs: 600, nTot: 70)),
            .tweet(Tweet(kind: .tweet, time: 0, magnitude: 1, source: 0, cascade: 9)),
        ], stream: "board-test")
        board.observe([
            .alert(Alert(cascade: 1, msg: "a", tObs: 1200, nTot: 90)),  // later window: replaces
            .alert(Alert(cascade: 3, msg: "c", tObs: 300, nTot: 1000)), // earlier window: ignored
            .stat(Stat(cascade: 2, tObs: 600, are: 0.25)),              // ended: leaves the board
        ], stream: "board-test")
        let (top, tracked) = board.top(2)
        #expect(tracked == 2)
        #expect(top.map(\.cascade) == [1, 3])
        #expect(top.map(\.forecast) == [90, 70])
        #expect(top.map(\.tObs) == [1200, 600])
        let text = exposition()
        #expect(text.contains(#"tweetoscope_forecast_are_ratio_bucket{stream="board-test",t_obs="600",le="0.3"} 1"#))
        #expect(text.contains(#"tweetoscope_forecast_are_ratio_count{stream="board-test",t_obs="600"} 1"#))
    }
}

@Suite struct MetricsServerTests {
    /// One HTTP/1.0 request on a fresh connection; returns the status line and the body.
    private func request(_ port: Int, _ text: String) throws -> (status: String, body: String) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(rc == 0)
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { break }
            response += chunk[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        let parts = text.split(separator: "\r\n\r\n", maxSplits: 1, omittingEmptySubsequences: false)
        let status = parts[0].split(separator: "\r\n").first.map(String.init) ?? ""
        return (status, parts.count > 1 ? String(parts[1]) : "")
    }

    @Test func servesMetricsOnlyAtSlashMetrics() async throws {
        TweetoscopeMetrics.bootstrap()
        Counter(label: "tweetoscope_test_served_total").increment()
        let server = try await MetricsServer.start(host: "127.0.0.1", port: 0)
        defer { Task { await server.stop() } }
        #expect(server.port > 0)
        let ok = try request(server.port, "GET /metrics HTTP/1.0\r\n\r\n")
        #expect(ok.status == "HTTP/1.0 200 OK")
        #expect(ok.body.contains("tweetoscope_test_served_total 1\n"))
        let query = try request(server.port, "GET /metrics?x=1 HTTP/1.0\r\n\r\n")
        #expect(query.status == "HTTP/1.0 200 OK")
        #expect(try request(server.port, "GET / HTTP/1.0\r\n\r\n").status == "HTTP/1.0 404 Not Found")
        #expect(try request(server.port, "GET /api/v1/query HTTP/1.0\r\n\r\n").status == "HTTP/1.0 404 Not Found")
        #expect(try request(server.port, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n").status
            == "HTTP/1.0 405 Method Not Allowed")
        let head = try request(server.port, "HEAD /metrics HTTP/1.0\r\n\r\n")
        #expect(head.status == "HTTP/1.0 200 OK" && head.body.isEmpty)
        // A second server on the same port fails with the bind error.
        await #expect(throws: (any Error).self) { try await MetricsServer.start(host: "127.0.0.1", port: server.port) }
    }
}

@Suite struct TopBoardTests {
    @Test func medianAndFormatting() {
        #expect(TopBoard.median([0.5, 0.1, 0.3]) == 0.3)
        #expect(TopBoard.median([0.2, 0.5]) == 0.35)
        #expect(TopBoard.median([]).isNaN)
        #expect(TopBoard.fixed(310, 1) == "310.0")
        #expect(TopBoard.fixed(10.04, 1) == "10.0")
        #expect(TopBoard.fixed(0.35, 3) == "0.350")
        #expect(TopBoard.fixed(2.5, 0) == "3")
        #expect(TopBoard.fixed(-0.04, 1) == "0.0")
        #expect(TopBoard.clip("héllo\tworld", 20) == "héllo world")
        #expect(TopBoard.clip("日本 ok", 20) == "?? ok")
        #expect(TopBoard.clip("abcdefghij", 8) == "abcde...")
    }

    @Test func rankingObservedSizesAndEndedCascades() {
        var board = TopBoard()
        for line in [
            #"{"type":"alert","cid":1,"msg":"one","T_obs":600,"n_tot":100}"#,
            #"{"type":"alert","cid":2,"msg":"two","T_obs":600,"n_tot":200}"#,
            #"{"type":"alert","cid":1,"msg":"one","T_obs":1200,"n_tot":150}"#,
            #"{"type":"parameters","cid":1,"msg":"one","T_obs":1200,"n_obs":33,"n_supp":5,"params":[0.1,0.001],"n_star":0.5,"G1":2.5}"#,
            #"{"type":"stat","cid":2,"T_obs":600,"ARE":0.5}"#,
            #"{"type":"serie","cid":7,"msg":"x","T_obs":600,"tweets":[[0,1]]}"#,
            "garbage",
            "   ",
        ] {
            board.ingest(line: Array(line.utf8))
        }
        #expect(board.alerts == 3 && board.stats == 1 && board.parameters == 1 && board.malformed == 1)
        #expect(board.running == 1)
        let running = board.top(10)
        #expect(running.map(\.forecast.cascade) == [1])
        #expect(running[0].observed == 33 && running[0].forecast.tObs == 1200 && running[0].are == nil)
        let all = board.top(10, includeEnded: true)
        #expect(all.map(\.forecast.cascade) == [2, 1])
        #expect(all[0].are == 0.5)
        let table = board.render(k: 10)
        #expect(table.hasPrefix("top 1 of 1 running cascades by forecast\n"))
        #expect(table.hasSuffix("\nread 3 alerts, 1 stats, 1 parameters; 1 malformed line skipped\n"))
    }

    @Test func emptyBoard() {
        #expect(TopBoard().render(k: 5) == """
            top 0 of 0 running cascades by forecast
            no forecasts yet

            median ARE per window: no stats yet
            read 0 alerts, 0 stats, 0 parameters

            """)
    }
}
