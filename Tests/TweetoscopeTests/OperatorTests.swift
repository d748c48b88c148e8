// The tap hub's bounded queues, JSON log lines and the DOT graph (issue 15).
import Foundation
import Testing
import TweetoscopeCore
@testable import TweetoscopeRuntime

@Suite struct TapHubTests {
    func tweets(_ n: Int, from start: Int = 0) -> [Message] {
        (start..<(start + n)).map { .tweet(Tweet(kind: .tweet, time: Double($0), magnitude: 1, source: 0, cascade: CascadeID($0))) }
    }

    @Test func aTapThatDoesNotReadDropsAndCountsWithoutBlocking() async throws {
        let hub = TapHub()
        hub.enable()
        let publish = try #require(hub.observer(stream: "tweets"))
        let id = hub.open(streams: ["tweets"])
        let other = hub.open(streams: ["alerts"])
        // Three times the queue: publish returns every time (nothing waits on the tap).
        for i in 0..<30 { publish(tweets(TapHub.queueCapacity / 10, from: i * TapHub.queueCapacity / 10)) }
        #expect(hub.droppedTotal == 2 * TapHub.queueCapacity)
        let first = try #require(await hub.next(id))
        #expect(first.messages.count == TapHub.queueCapacity)
        #expect(first.dropped == 2 * TapHub.queueCapacity)
        // The oldest messages are kept, in order.
        guard case .tweet(let t0) = first.messages[0].message, case .tweet(let tLast) = first.messages.last!.message else {
            Issue.record("not tweets"); return
        }
        #expect(t0.time == 0 && tLast.time == Double(TapHub.queueCapacity - 1))
        // A tap of another stream got nothing; once closed, next() ends.
        hub.close(other)
        #expect(await hub.next(other) == nil)
        publish(tweets(3))
        let second = try #require(await hub.next(id))
        #expect(second.messages.count == 3 && second.dropped == 0)
        hub.close(id)
        #expect(await hub.next(id) == nil)
    }

    @Test func offByDefault() {
        #expect(TapHub().observer(stream: "tweets") == nil)
    }

    @Test func tapLinesAreJSON() throws {
        let line = TapHub.line(stream: "tw\"eets", message: tweets(1)[0])
        #expect(line.last == 0x0A)
        let object = try JSONSerialization.jsonObject(with: Data(line.dropLast())) as? [String: Any]
        #expect(object?["stream"] as? String == "tw\"eets")
        #expect((object?["message"] as? [String: Any])?["type"] as? String == "tweet")
    }

    @Test func tapQueries() {
        let known = ["alerts", "stats"]
        guard case .success(let r) = TapRequest.parse(query: "stream=alerts&stream=st%61ts&limit=5", streams: known, enabled: true) else {
            Issue.record("refused"); return
        }
        #expect(r.streams == ["alerts", "stats"] && r.limit == 5)
        if case .failure(let p) = TapRequest.parse(query: "stream=alert", streams: known, enabled: true) {
            #expect(p.text == "unknown stream \"alert\"; did you mean \"alerts\"? (streams: alerts, stats)")
        } else { Issue.record("accepted an unknown stream") }
        if case .failure(let p) = TapRequest.parse(query: "stream=alerts", streams: known, enabled: false) {
            #expect(p.status == .notFound)
        } else { Issue.record("served while off") }
        if case .failure(let p) = TapRequest.parse(query: "limit=-1&stream=alerts", streams: known, enabled: true) {
            #expect(p.status == .badRequest)
        } else { Issue.record("accepted a negative limit") }
    }
}

@Suite struct JSONLogTests {
    @Test func oneObjectPerLineWithEscapesAndFields() throws {
        let line = JSONLogHandler.line(
            timestamp: "2026-12-02T20:00:00.123Z", level: .warning, stage: "sink",
            message: "bad \"line\"\n\tend\u{1}", fields: [
                "path": .string("/tmp/a b"), "count": .stringConvertible(3),
                "list": .array([.string("x"), .string("y")]), "nested": .dictionary(["k": .string("v")]),
                "message": .string("shadowed"),
            ])
        #expect(line.hasSuffix("}\n") && line.dropLast().allSatisfy { $0 != "\n" })
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["timestamp"] as? String == "2026-12-02T20:00:00.123Z")
        #expect(object["level"] as? String == "warning")
        #expect(object["stage"] as? String == "sink")
        #expect(object["message"] as? String == "bad \"line\"\n\tend\u{1}")
        #expect(object["path"] as? String == "/tmp/a b")
        #expect(object["count"] as? String == "3")
        #expect(object["list"] as? [String] == ["x", "y"])
        #expect((object["nested"] as? [String: String]) == ["k": "v"])
        #expect(object["field.message"] as? String == "shadowed")
    }
}
