// The collector stage plugin (spec §3): turns the `tweets` stream into partial cascades (`series`,
// one per observation window) and final sizes (`sizes`, one per window once a cascade has ended).
import Synchronization
import TweetoscopeCore

@_cdecl("tweetoscope_plugin_register")
public func tweetoscopePluginRegister(_ abi: UInt32, _ registrar: UnsafeMutableRawPointer) -> Int32 {
    PluginABI.entry(abi, registrar) { $0.register(CollectorStage.descriptor) }
}

/// The `collector` stage: groups tweets into cascades, per source, on that source's clock.
///
/// One processor per source (``Tweet/source``); "now" is the time of the event that has just
/// arrived at that source, never a wall clock and never another source's clock. When an event at
/// time `t` arrives at a source whose clock is `c`:
///
/// 0. `t < c`: rejected as `out_of_order` (the clock does not move). Otherwise the clock becomes `t`,
///    and steps 1 and 2 run even if step 3 then rejects the event (a late, unknown or duplicate
///    event still proves that the source's time has advanced).
/// 1. **Windows.** For each window `T` (ascending), every open cascade with `first_time + T < t`
///    whose window is not yet settled, in first-time order, is settled: its series is emitted if it
///    has at least `min_cascade_size` events.
/// 2. **Termination.** Every open cascade with `last_time + terminated < t` ends, **oldest last
///    event first** (ties: the cascade touched first): its not-yet-settled windows are settled as in
///    step 1, then one `CascadeSize` per window (ascending) is emitted if its event count is at
///    least `min_cascade_size`; its memory is freed and its id is remembered as ended (at most
///    `max_ended_remembered` ids per source, oldest forgotten first).
/// 3. **Insert.** `.tweet` opens a cascade (its `msg` becomes the cascade's); `.retweet` appends
///    `(t − first_time, magnitude)` to its open cascade.
///
/// Boundary choices (spec §3.2 and §9 leave them open or get them wrong):
/// - an event exactly at `first_time + T` **is included** in window `T`'s series (a window is
///   settled only once an event strictly after its end arrives, or at termination);
/// - the minimum size test is `count >= min_cascade_size`, for series and sizes alike;
/// - termination is strict: an event exactly at `last_time + terminated` extends the cascade;
/// - a cascade below the minimum size at its end produces no size, and a window whose series had
///   fewer than `min_cascade_size` events when it settled produces no series (it is not retried).
///
/// Anomalies are skipped, counted as `rejected.<reason>` and logged (rate-limited):
/// `late_event` (retweet of an ended cascade still remembered), `unknown_cascade` (retweet of a
/// cascade never opened, or ended and forgotten), `out_of_order` (time before the source's clock),
/// `duplicate_tweet` (`.tweet` for a cascade open or remembered as ended), `invalid_time` (time not
/// finite), `unexpected_message` (a message other than a tweet). Plain counters: `events` (every
/// tweet message received, rejected ones included), `cascades_opened`, `cascades_ended`,
/// `cascades_below_min_size` (ended without a size message), `evicted` (see below).
///
/// Bounded memory: at most `max_open_cascades` cascades are open at once across all sources, and
/// an open cascade keeps its events only until its largest window is settled (then it counts
/// them: its final size needs nothing else).
/// When a new cascade would exceed it, the open cascade whose latest event arrived first (the
/// oldest last event; source clocks cannot be compared, so arrival order decides across sources)
/// ends at once as in step 2 — its unsettled series and its sizes are emitted, its id is
/// remembered as ended (its later events are `late_event`) — and is counted `evicted`, with a
/// rate-limited warning.
///
/// Bounded sources: at most `max_sources` sources are tracked (clock, open cascades, ended ids).
/// A new source beyond it makes the least recently active tenth end their open cascades as in
/// step 2 and be forgotten (counted `sources_evicted`, with a rate-limited warning); their later
/// events are then unknown or new.
///
/// End of input: every open cascade of every source ends as in step 2 (sources in the order they
/// first appeared, within a source oldest last event first), so no series or size is lost.
/// Input cut by a failed source (``StageInput/upstreamFailed``, e.g. a read error in a truncated
/// file): the open cascades did not end, so they are dropped without output (no series, no size),
/// counted `cascades_incomplete` and logged as an error.
/// A daemon stop ends the input once the sources stop, so it is covered by the same flush —
/// except for tweets read from Kafka (they carry a ``RecordOrigin``).
///
/// Tweets from Kafka (crash safety): the collector holds positions
/// (``InputAcknowledgement/holdsPositions``). Every 100 ms, and whenever its input is idle, it
/// proposes to the source, per partition, the first event of its oldest open cascade (or the
/// next offset), applied once everything it sent is acknowledged by the sinks downstream
/// (``OffsetLedger``); the source commits only that. So after a kill the next run reads again
/// from there and rebuilds every open cascade exactly. A stop (shutdown or reload) does not flush
/// them: they are rebuilt from the committed offsets. A partition revoked or reassigned by a
/// rebalance (reading restarts at its committed offset) takes the sources whose latest events came
/// from it along (counted `revoked_cascades`); records read before that are skipped
/// (`revoked_skipped`).
///
/// Series times are relative to the cascade's first event (first element 0); magnitudes are
/// unchanged. Output messages of one input batch are sent as one batch per output port; an unbound
/// output port is skipped entirely (its messages are not even built).
final class CollectorStage: Stage {
    let settings: CollectorSettings

    /// The open cascades kept between two runs when the configuration is reloaded.
    private let kept = Mutex<CollectorEngine?>(nil)
    /// Open cascades a reload could not carry over (``inherit(from:)``), counted at the next run.
    private let droppedAtReload = Mutex(0)

    init(settings: CollectorSettings) { self.settings = settings }

    /// The open cascades kept by a reload stop, taken (for the stage that replaces this one).
    func takeKept() -> CollectorEngine? { kept.withLock { $0.take() } }

    /// Makes `engine` the state the next run resumes; `dropped` cascades could not be carried over.
    func adopt(_ engine: CollectorEngine, dropped: Int) {
        kept.withLock { $0 = engine }
        droppedAtReload.withLock { $0 += dropped }
    }

    static let descriptor = StageDescriptor(
        type: "collector",
        summary: "Groups tweets into cascades per source; emits partial cascades per observation window and final sizes",
        inputs: [
            PortSpec("tweets", kinds: [.tweet], doc: "Tweets and retweets; times must not decrease within a source"),
        ],
        outputs: [
            PortSpec("series", kinds: [.series], required: false,
                     doc: "One partial cascade per cascade and observation window (times relative to the first tweet)"),
            PortSpec("sizes", kinds: [.size], required: false,
                     doc: "Final size of each ended cascade, one message per observation window"),
        ],
        options: [
            OptionSpec("windows", .intList, default: .list([.int(600), .int(1200)]),
                       range: 1...31_536_000, doc: "Observation windows T_obs in seconds after the first tweet; each > 0, no duplicates"),
            OptionSpec("terminated", .int, default: .int(1800),
                       range: 1...31_536_000, doc: "Seconds of source time without a new event after which a cascade ends; > 0"),
            OptionSpec("min_cascade_size", .int, default: .int(10),
                       range: 1...1e9, doc: "Minimum number of events (original tweet included) for a series or size to be sent; >= 1"),
            OptionSpec("max_ended_remembered", .int, default: .int(100_000),
                       range: 0...1e9, doc: "Ended cascade ids remembered per source to recognise late events (count); >= 0"),
            OptionSpec("max_sources", .int, default: .int(100_000),
                       range: 1...1e9, doc: "Most sources tracked at once (count); a new source beyond it makes the tenth least recently active end their open cascades as if terminated and be forgotten, counted `sources_evicted`; >= 1"),
            OptionSpec("max_open_cascades", .int, default: .int(1_000_000),
                       range: 1...1e9, doc: "Most cascades open at once across all sources (count); above it the cascade with the oldest last event (by arrival) ends early as if terminated, counted `evicted`; >= 1"),
        ],
        acknowledgement: .holdsPositions,
        make: { _, options in try CollectorStage(settings: CollectorSettings(options)) })
        .declaring(
            metrics: [MetricSpec("tweetoscope_collector_open_cascades", help: "Cascades open in a collector stage.")],
            statusGauges: [StatusGauge(gauge: "open_cascades", text: "open cascades")])

    func run(_ context: StageContext) async throws {
        let seriesOut = context.output("series")
        let sizesOut = context.output("sizes")
        var engine = kept.withLock { $0.take() }
            ?? CollectorEngine(settings: settings, buildSeries: seriesOut != nil, buildSizes: sizesOut != nil)
        engine.out.buildSeries = seriesOut != nil
        engine.out.buildSizes = sizesOut != nil
        for name in ["events", "cascades_opened", "cascades_ended"] { context.counters.add(name, 0) }
        let dropped = droppedAtReload.withLock { d in defer { d = 0 }; return d }
        if dropped > 0 {
            context.counters.add("reload_dropped_cascades", dropped)
            context.logger.warning("a reload changed the windows: dropped \(dropped) open cascades (no series or size will be sent for them)")
        }
        let openGauge = Gauge(label: "tweetoscope_collector_open_cascades", dimensions: context.metricDimensions)
        func recordOpen(_ n: Int) {
            openGauge.record(n)
            context.counters.set("open_cascades", n)
        }
        recordOpen(engine.openCascades)

        let outputs = [seriesOut, sizesOut].compactMap { $0 }
        var lastProposal = ContinuousClock.now
        func process(_ batch: [Message], idle: Bool) async {
            let began = ContinuousClock.now
            engine.consume(batch, context: context)
            context.recordProcessing(since: began)
            recordOpen(engine.openCascades)
            await publish(&engine, context: context, seriesOut: seriesOut, sizesOut: sizesOut)
            if engine.holdsPositions, idle || ContinuousClock.now - lastProposal >= Self.proposalInterval {
                proposePositions(&engine, outputs: outputs, context: context)
                lastProposal = ContinuousClock.now
            }
        }
        let inputs = context.inputs("tweets")
        if inputs.count == 1 {
            let input = inputs[0]
            while let batch = await input.next() { await process(batch, idle: input.pending == 0) }
        } else if !inputs.isEmpty {
            let (merged, consumer) = context.mergedInputs()
            while let tagged = await merged.next(consumer) {
                await process(tagged.messages, idle: merged.pending(consumer) == 0 && tagged.input.pending == 0)
            }
        }
        if let cut = inputs.first(where: \.upstreamFailed) {
            // A source upstream failed (e.g. a read error in a truncated file): the open cascades
            // were cut, not ended. Flushing them would emit wrong sizes, stats and training
            // samples, so they are dropped, counted and logged.
            await publish(&engine, context: context, seriesOut: seriesOut, sizesOut: sizesOut)
            let dropped = engine.dropAll()
            recordOpen(engine.openCascades)
            context.counters.add("cascades_incomplete", dropped)
            context.logger.error("a source upstream failed: open cascades dropped as incomplete, not flushed", metadata: [
                "stream": .string(cut.stream), "cascades": .stringConvertible(dropped),
            ])
            // No new proposal: Kafka offsets stay where the last one left them, so a next run
            // reads the cut cascades again.
            return
        }
        if engine.holdsPositions && context.stopRequested {
            // Tweets from Kafka: the open cascades are not flushed (that would emit truncated
            // sizes); the next run, here or in another daemon of the group, rebuilds them by reading
            // again from the committed offsets.
            await publish(&engine, context: context, seriesOut: seriesOut, sizesOut: sizesOut)
            proposePositions(&engine, outputs: outputs, context: context)
            context.logger.info("open cascades left to be rebuilt from the committed kafka offsets", metadata: [
                "cascades": .stringConvertible(engine.openCascades),
                "reason": .string(context.isReloading ? "reload" : "shutdown"),
            ])
            return
        }
        if context.isReloading {
            // The configuration is being reloaded: keep the open cascades for the next run.
            await publish(&engine, context: context, seriesOut: seriesOut, sizesOut: sizesOut)
            let open = engine
            kept.withLock { $0 = open }
            return
        }
        engine.flushAll()
        recordOpen(engine.openCascades)
        await publish(&engine, context: context, seriesOut: seriesOut, sizesOut: sizesOut)
        if engine.holdsPositions { proposePositions(&engine, outputs: outputs, context: context) }
    }

    /// Least time between two proposals of commit positions while busy (always when idle).
    static let proposalInterval: Duration = .milliseconds(100)

    /// Tells each Kafka source the tweets came from which offsets it may commit once the output
    /// sent so far is durable: per partition, the first event of the oldest cascade still open.
    private func proposePositions(_ engine: inout CollectorEngine, outputs: [StageOutput], context: StageContext) {
        let sent = outputs.map { ($0, $0.latestSequence) }
        let durable: @Sendable () -> Bool = { sent.allSatisfy { $0.0.durable >= $0.1 } }
        for (ledger, positions) in engine.heldPositions() where !positions.isEmpty {
            if !ledger.propose(holder: context.name, positions: positions, when: durable) {
                context.counters.add("proposals_skipped")
            }
        }
    }

    /// Moves the counts to the stage counters and sends the pending output batches.
    private func publish(_ engine: inout CollectorEngine, context: StageContext,
                         seriesOut: StageOutput?, sizesOut: StageOutput?) async {
        let tally = engine.takeTally()
        if tally.events > 0 { context.counters.add("events", tally.events) }
        if tally.opened > 0 { context.counters.add("cascades_opened", tally.opened) }
        if tally.ended > 0 { context.counters.add("cascades_ended", tally.ended) }
        if tally.belowMinSize > 0 { context.counters.add("cascades_below_min_size", tally.belowMinSize) }
        if tally.evicted > 0 { context.counters.add("evicted", tally.evicted) }
        if tally.sourcesEvicted > 0 { context.counters.add("sources_evicted", tally.sourcesEvicted) }
        let (series, sizes) = engine.takeOutput()
        if let seriesOut, !series.isEmpty { await seriesOut.send(series) }
        if let sizesOut, !sizes.isEmpty { await sizesOut.send(sizes) }
    }
}

/// Validated collector options.
struct CollectorSettings: Sendable {
    /// Observation windows in seconds, ascending.
    var windows: [Int]
    /// Inactivity, in seconds, after which a cascade ends.
    var terminated: Int
    var minCascadeSize: Int
    var maxEndedRemembered: Int
    /// Most cascades open at once across sources; beyond, the least recently touched one ends.
    var maxOpenCascades: Int
    /// Most sources tracked at once; beyond, the least recently active tenth is ended and forgotten.
    var maxSources: Int

    init(windows: [Int], terminated: Int, minCascadeSize: Int, maxEndedRemembered: Int,
         maxOpenCascades: Int = 1_000_000, maxSources: Int = 100_000) throws {
        guard !windows.isEmpty else { throw StageConfigError(option: "windows", "must list at least one window") }
        for w in windows where w <= 0 {
            throw StageConfigError(option: "windows", "window \(w) must be > 0 seconds")
        }
        let sorted = windows.sorted()
        for i in sorted.indices.dropFirst() where sorted[i] == sorted[i - 1] {
            throw StageConfigError(option: "windows", "window \(sorted[i]) is listed twice")
        }
        guard terminated > 0 else {
            throw StageConfigError(option: "terminated", "must be > 0 seconds, got \(terminated)")
        }
        guard minCascadeSize >= 1 else {
            throw StageConfigError(option: "min_cascade_size", "must be >= 1, got \(minCascadeSize)")
        }
        guard maxEndedRemembered >= 0 else {
            throw StageConfigError(option: "max_ended_remembered", "must be >= 0, got \(maxEndedRemembered)")
        }
        guard maxOpenCascades >= 1 else {
            throw StageConfigError(option: "max_open_cascades", "must be >= 1, got \(maxOpenCascades)")
        }
        guard maxSources >= 1 else {
            throw StageConfigError(option: "max_sources", "must be >= 1, got \(maxSources)")
        }
        self.maxOpenCascades = maxOpenCascades
        self.maxSources = maxSources
        self.windows = sorted
        self.terminated = terminated
        self.minCascadeSize = minCascadeSize
        self.maxEndedRemembered = maxEndedRemembered
    }

    init(_ options: StageOptions) throws {
        try self.init(windows: options.ints("windows"), terminated: options.int("terminated"),
                      minCascadeSize: options.int("min_cascade_size"),
                      maxEndedRemembered: options.int("max_ended_remembered"),
                      maxOpenCascades: options.int("max_open_cascades"),
                      maxSources: options.int("max_sources"))
    }
}
