// The `replay` and `jsonl` source stages: replay a cascade dataset the way the course's tweet
// generator does (spec §2), or read tweets back from JSON lines.

import Synchronization
import TweetoscopeCore

@_cdecl("tweetoscope_plugin_register")
public func tweetoscopePluginRegister(_ abi: UInt32, _ registrar: UnsafeMutableRawPointer) -> Int32 {
    PluginABI.entry(abi, registrar) {
        $0.register(ReplaySource.descriptor)
        $0.register(JSONLinesSource.descriptor)
    }
}

/// Messages per batch sent downstream.
let batchSize = 1024

/// The optional dead-letter port of the sources.
let rejectedPort = PortSpec(
    "rejected", kinds: [.log], required: false,
    doc: "dead letters: one WARNING log message per rejected record, \"<reason>: <file>:<line>: <record, at most 1 KiB>\"")

/// The `max_record_bytes` option of the sources.
let maxRecordBytesOption = OptionSpec(
    "max_record_bytes", .int, default: .int(InputLimits.defaultMaxRecordBytes),
    range: 64...1_073_741_824, doc: "longest line in bytes (terminator excluded); longer ones are skipped in bounded memory and rejected as `oversized`; 64 to 1073741824")

/// The `allow_empty` option of the sources.
let allowEmptyOption = OptionSpec(
    "allow_empty", .bool, default: .bool(false),
    doc: "true: a file without a single accepted event (empty, or every record rejected) is not an error; by default it fails the stage, so the run exits non-zero")

/// The error of a source that read no event at all: names the file and what was rejected.
func nothingAccepted(_ path: String, _ context: StageContext) -> ReplayError {
    let rejected = context.counters.snapshot.filter { $0.key.hasPrefix("rejected.") }
    let total = rejected.values.reduce(0, +)
    let reasons = rejected.keys.sorted().map { "\($0.dropFirst("rejected.".count))=\(rejected[$0]!)" }.joined(separator: ", ")
    return ReplayError(total == 0
        ? "\(path): no event in the file (set allow_empty: true if that is expected)"
        : "\(path): every one of the \(total) records was rejected (\(reasons)); no event to process (set allow_empty: true if that is expected)")
}

/// The validated `max_record_bytes` option.
func parseMaxRecordBytes(_ options: StageOptions) throws -> Int {
    let n = try options.int("max_record_bytes")
    guard InputLimits.maxRecordBytesRange.contains(n) else {
        throw StageConfigError(option: "max_record_bytes",
                               "must be within \(InputLimits.maxRecordBytesRange.lowerBound)...\(InputLimits.maxRecordBytesRange.upperBound) bytes, got \(n)")
    }
    return n
}

/// Replays a dataset of cascades as a stream of tweets, one simulated clock per source.
final class ReplaySource: Stage {
    enum Format: String, Sendable { case long, course }

    let path: String
    let index: String?
    let format: Format
    let plan: ReplayPlan
    let timeAcceleration: Double
    let secondsPerTimeUnit: Double
    /// Longest data line in bytes; longer ones are rejected as `oversized`.
    let maxRecordBytes: Int
    /// Where a configuration reload stopped the replay; the next run resumes there.
    private let paused = Mutex<PausedReplay?>(nil)

    /// The position a reload stop kept, taken (for the stage that replaces this one).
    func takePaused() -> PausedReplay? { paused.withLock { $0.take() } }

    /// Makes `state` the position the next run resumes from.
    func adoptPaused(_ state: PausedReplay) { paused.withLock { $0 = state } }

    static let descriptor = StageDescriptor(
        type: "replay",
        summary: "Replays real retweet cascades from a file as the course's tweet generator does: sources with their own clocks, overlapping cascades, reproducible for a seed.",
        inputs: [],
        outputs: [
            PortSpec("tweets", kinds: [.tweet], doc: "tweets and retweets, ordered by (source time, source id)"),
            rejectedPort,
        ],
        options: [
            OptionSpec("path", .path, required: true,
                       doc: "data file: `cascade,t,m` (long format) or `time,magnitude[,msg]` (course format); may be gzip-compressed"),
            OptionSpec("index", .path,
                       doc: "course index file (`start_ind,end_ind`, 1-based inclusive row ranges of the data file); selects the course format"),
            OptionSpec("format", .choice(["auto", "long", "course"]), default: .string("auto"),
                       doc: "data format; auto = course when `index` is set, long otherwise"),
            OptionSpec("sources", .int, default: .int(1),
                       range: 1...1_000_000, doc: "number of sources (the generator's threads), each replaying its own share of the cascades; >= 1"),
            OptionSpec("max_cascades", .int, default: .int(10),
                       range: 1...1_000_000, doc: "cascades running at the same time in each source; >= 1"),
            OptionSpec("random_start_range", .double, default: .double(600),
                       range: 0...31_536_000, doc: "seconds (source clock): a cascade starts at a uniform random time in [now, now + range], rounded down to whole seconds; >= 0"),
            OptionSpec("seed", .int, default: .int(0),
                       doc: "seed of the shuffle and of the start times; the same seed gives the same replay"),
            OptionSpec("time_acceleration", .double, default: .double(0),
                       range: 0...1e9, doc: "source seconds per wall-clock second; 0 = as fast as possible"),
            OptionSpec("limit", .int, default: .int(0),
                       range: 0...1e12, doc: "number of cascades to replay, chosen by the seeded shuffle; 0 = all"),
            OptionSpec("seconds_per_time_unit", .double, default: .double(1),
                       range: 1e-9...31_536_000, doc: "seconds per time unit of the course data file (times are rounded to whole seconds); > 0"),
            maxRecordBytesOption,
            allowEmptyOption,
        ],
        make: { _, options in try ReplaySource(options) })

    init(_ options: StageOptions) throws {
        path = try options.readableFile("path")
        index = options.has("index") ? try options.readableFile("index") : nil
        switch try options.string("format") {
        case "long":
            guard index == nil else { throw StageConfigError(option: "index", "is only used with format: course") }
            format = .long
        case "course":
            guard index != nil else { throw StageConfigError(option: "index", "is required with format: course") }
            format = .course
        default:
            format = index == nil ? .long : .course
        }
        let sources = try options.int("sources")
        guard sources >= 1 else { throw StageConfigError(option: "sources", "must be >= 1, got \(sources)") }
        let maxCascades = try options.int("max_cascades")
        guard maxCascades >= 1 else { throw StageConfigError(option: "max_cascades", "must be >= 1, got \(maxCascades)") }
        let range = try options.double("random_start_range")
        guard range.isFinite, range >= 0 else {
            throw StageConfigError(option: "random_start_range", "must be a finite number of seconds >= 0, got \(range)")
        }
        let limit = try options.int("limit")
        guard limit >= 0 else { throw StageConfigError(option: "limit", "must be >= 0, got \(limit)") }
        plan = ReplayPlan(sources: sources, maxCascades: maxCascades, randomStartRange: range,
                          seed: try options.int("seed"), limit: limit)
        timeAcceleration = try options.double("time_acceleration")
        guard timeAcceleration.isFinite, timeAcceleration >= 0 else {
            throw StageConfigError(option: "time_acceleration", "must be a finite number >= 0, got \(timeAcceleration)")
        }
        secondsPerTimeUnit = try options.double("seconds_per_time_unit")
        guard secondsPerTimeUnit.isFinite, secondsPerTimeUnit > 0 else {
            throw StageConfigError(option: "seconds_per_time_unit", "must be a finite number > 0, got \(secondsPerTimeUnit)")
        }
        maxRecordBytes = try parseMaxRecordBytes(options)
        allowEmpty = try options.bool("allow_empty")
        // What `run` would reject at once, caught by `validate`: the headers of the files.
        switch format {
        case .long:
            try DataHeader.check(path, option: "path", expected: "\"cascade,t,m\"") { $0 == "cascade,t,m" }
        case .course:
            try DataHeader.check(path, option: "path", expected: "time,magnitude[,msg]") { h in
                let commas = h.utf8.count(where: { $0 == 0x2C })
                return commas == 1 || commas == 2
            }
            try DataHeader.check(index!, option: "index", expected: "\"start_ind,end_ind\"") { h in
                h.utf8.count(where: { $0 == 0x2C }) == 1
            }
        }
    }

    /// Whether a file without any accepted event is fine (otherwise the stage fails).
    let allowEmpty: Bool

    func run(_ context: StageContext) async throws {
        let loadStart = ContinuousClock.now
        var replay: MergedReplay
        var data: Dataset
        var resumedAt: Double?
        // A read error cutting a long-format file: the whole cascades before it are replayed,
        // then the stage fails with the error.
        var truncation: DatasetLoader.Truncation?
        if let saved = paused.withLock({ $0.take() }) {
            // Resumes after a configuration reload, on the same source clocks.
            (replay, data, resumedAt) = (saved.replay, saved.data, saved.lastTime)
        } else {
            let rejected = RejectedRecords(context)
            switch format {
            case .long:
                (data, truncation) = try await DatasetLoader.loadLongKeepingWhatWasRead(
                    path: path, maxRecordBytes: maxRecordBytes, rejected: rejected)
                if let truncation {
                    context.counters.add("events_cut", truncation.droppedEvents)
                    context.logger.error("reading failed: replaying the \(data.cascadeCount) whole cascades read before the error, then failing; the cascade it cut is dropped", metadata: [
                        "file": .string(path), "error": .string("\(truncation.error)"),
                        "dropped_events": .stringConvertible(truncation.droppedEvents),
                    ])
                }
            case .course:
                data = try await DatasetLoader.loadCourse(path: path, index: index!, secondsPerTimeUnit: secondsPerTimeUnit,
                                                          maxRecordBytes: maxRecordBytes, rejected: rejected)
            }
            if data.events == 0 && !allowEmpty {
                if let truncation { throw truncation.error }
                throw nothingAccepted(path, context)
            }
            replay = try MergedReplay(data: data, plan: plan)
        }
        let selectedEvents = replay.cascades == data.cascadeCount ? data.events : nil
        context.logger.info(
            resumedAt == nil ? "replay starting" : "replay resuming after a reload",
            metadata: [
                "file": .string(path), "format": .string(format.rawValue),
                "cascades": .stringConvertible(replay.cascades),
                "events": .string(selectedEvents.map(String.init) ?? "\(data.events) in the file"),
                "sources": .stringConvertible(plan.sources),
                "load_seconds": .string(seconds(ContinuousClock.now - loadStart)),
            ])
        guard let output = context.output("tweets") else {
            context.logger.warning("output tweets is not bound; nothing to replay")
            if let truncation { throw truncation.error }
            return
        }
        // Paced replays map source time t to wall time wallStart + t/acceleration.
        let wallStart = ContinuousClock.now - .nanoseconds(Int64(min((resumedAt ?? 0) / max(timeAcceleration, 1e-9), 1e9) * 1e9))
        var lastTime = resumedAt ?? 0
        var sent = 0
        // Cascades already counted: none on a fresh start (the replay may have started some
        // before its first event), those of the previous run after a reload.
        var countedCascades = resumedAt == nil ? 0 : replay.cascadesStarted
        var stopped = false
        var batch: [Message] = []
        batch.reserveCapacity(batchSize)
        if timeAcceleration == 0 {
            // As fast as possible: whole batches at a time, checking for a stop between batches.
            while replay.nextTime != nil {
                try replay.fill(&batch, upTo: batchSize)
                if !batch.isEmpty { lastTime = replay.lastEmitted }
                sent += await flush(&batch, output, context, cascades: &countedCascades, started: replay.cascadesStarted)
                if context.stopRequested || Task.isCancelled { stopped = true; break }
            }
        }
        replay: while timeAcceleration > 0, let t = replay.nextTime {
            let offset = min(t / timeAcceleration, 1e9)  // seconds; capped so the conversion cannot trap
            let due = wallStart + .nanoseconds(Int64((offset * 1e9).rounded(.down)))
            if due > ContinuousClock.now {
                // Send what is due, then wait for this event, checking for a stop request.
                sent += await flush(&batch, output, context, cascades: &countedCascades, started: replay.cascadesStarted)
                while ContinuousClock.now < due {
                    if context.stopRequested || Task.isCancelled { stopped = true; break replay }
                    let wait = min(due - ContinuousClock.now, .milliseconds(200))
                    try? await Task.sleep(for: wait)
                }
            }
            lastTime = t
            try replay.next(into: &batch)
            if batch.count >= batchSize {
                sent += await flush(&batch, output, context, cascades: &countedCascades, started: replay.cascadesStarted)
                if context.stopRequested || Task.isCancelled { stopped = true; break }
            }
        }
        sent += await flush(&batch, output, context, cascades: &countedCascades, started: replay.cascadesStarted)
        if stopped && context.isReloading && truncation == nil {
            let state = PausedReplay(replay: replay, data: data, lastTime: lastTime)
            paused.withLock { $0 = state }
        }
        if let truncation { throw truncation.error }
        let started = replay.cascadesStarted
        let elapsed = ContinuousClock.now - wallStart
        context.logger.info(
            stopped ? "replay stopped on request" : "replay done",
            metadata: [
                "file": .string(path), "events": .stringConvertible(sent), "cascades": .stringConvertible(started),
                "seconds": .string(seconds(elapsed)),
            ])
    }

    /// Sends and empties the batch; returns the number of events sent.
    private func flush(_ batch: inout [Message], _ output: StageOutput, _ context: StageContext,
                       cascades: inout Int, started: Int) async -> Int {
        if started > cascades {
            context.counters.add("cascades", started - cascades)
            cascades = started
        }
        let n = batch.count
        guard n > 0 else { return 0 }
        var full: [Message] = []
        full.reserveCapacity(batchSize)
        swap(&full, &batch)
        await output.send(full)
        context.counters.add("events", n)
        return n
    }
}

/// A duration as seconds with 3 decimals.
func seconds(_ d: Duration) -> String {
    let ms = d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
    let frac = ms % 1000
    return "\(ms / 1000).\(frac < 10 ? "00" : frac < 100 ? "0" : "")\(frac)"
}

/// A replay stopped by a configuration reload, to be resumed by the next run.
struct PausedReplay: @unchecked Sendable {
    // Moved between runs under the stage's mutex, never shared.
    var replay: MergedReplay
    var data: Dataset
    var lastTime: Double
}
