import Synchronization
import Testing
import TweetoscopeCore

@Suite struct ChannelTests {
    @Test func broadcastsInOrderToEveryConsumerAndEndsAfterAllProducers() async {
        let channel = Channel<Int>(capacity: 2)
        let a = channel.addConsumer(), b = channel.addConsumer()
        channel.addProducer()
        channel.addProducer()
        let p1 = Task { for i in 0..<100 { await channel.send(i) }; channel.finish() }
        let p2 = Task { for i in 1000..<1100 { await channel.send(i) }; channel.finish() }
        async let ra: [Int] = { var r: [Int] = []; while let x = await channel.next(a) { r.append(x) }; return r }()
        async let rb: [Int] = { var r: [Int] = []; while let x = await channel.next(b) { r.append(x) }; return r }()
        let (xa, xb) = await (ra, rb)
        await p1.value
        await p2.value
        #expect(xa == xb)
        #expect(xa.count == 200)
        #expect(xa.filter { $0 < 1000 } == Array(0..<100))
        #expect(xa.filter { $0 >= 1000 } == Array(1000..<1100))
    }

    @Test func detachedConsumerDoesNotBlockProducers() async {
        let channel = Channel<Int>(capacity: 1)
        let slow = channel.addConsumer(), fast = channel.addConsumer()
        channel.addProducer()
        channel.detach(slow)
        let producer = Task { for i in 0..<50 { await channel.send(i) }; channel.finish() }
        var got: [Int] = []
        while let x = await channel.next(fast) { got.append(x) }
        await producer.value
        #expect(got == Array(0..<50))
        #expect(await channel.next(slow) == nil)
    }

    /// Counts the instances of ``Tracked`` alive (a deinit counter).
    final class Tracked: Sendable {
        static let alive = Synchronization.Atomic<Int>(0)
        let value: Int
        init(_ value: Int) { self.value = value; Self.alive.add(1, ordering: .relaxed) }
        deinit { Self.alive.subtract(1, ordering: .relaxed) }
    }

    /// Issue 17: a delivered element must not stay referenced by the channel while the consumer
    /// still has later elements pending (the old channel kept every delivered batch until the
    /// consumer fully caught up, so memory grew with the input, not with `capacity`).
    @Test func deliveredElementsAreReleasedWhileOthersArePending() async {
        let channel = Channel<Tracked>(capacity: 4)
        let id = channel.addConsumer()
        channel.addProducer()
        var total = 0
        // Keep the consumer behind by two elements for 1000 elements: after each receive, the
        // only live objects are the ones still buffered (2) plus none held here.
        for _ in 0..<2 { total += 1; await channel.send(Tracked(total)) }
        for _ in 0..<1000 {
            total += 1
            await channel.send(Tracked(total))
            do {
                let x = await channel.next(id)
                #expect(x?.value == total - 2)
            }
            #expect(Tracked.alive.load(ordering: .relaxed) == 2, "buffered 2, delivered ones freed")
        }
        channel.finish()
        var rest: [Int] = []
        while let x = await channel.next(id) { rest.append(x.value) }
        #expect(rest == [total - 1, total])
        #expect(Tracked.alive.load(ordering: .relaxed) == 0)
    }
}
