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
}
