// The predictor's waiting half-pairs survive a kill -9 when its input comes from Kafka: like the
// collector (Sources/Core/TweetoscopeCore/Positions.swift), it releases to the source only the
// offsets before its oldest waiting half, once the outputs it produced so far are durable. After a
// crash the next run reads again from there and rebuilds the waiting halves.
import TweetoscopeCore

/// The replayable partitions `parameters` and `size` messages came from, and how far the
/// predictor got in each.
struct PredictorPositions {
    private struct Key: Hashable {
        var ledger: ObjectIdentifier
        var partition: Int32
    }
    private var ledgers: [ObjectIdentifier: OffsetLedger] = [:]
    private var processed: [Key: Int64] = [:]

    /// True once messages came from a replayable input.
    var holdsPositions: Bool { !ledgers.isEmpty }

    /// Notes that the message read at `origin` was handled (or is buffered).
    mutating func note(_ origin: RecordOrigin) {
        let id = ObjectIdentifier(origin.ledger)
        if ledgers[id] == nil { ledgers[id] = origin.ledger }
        let key = Key(ledger: id, partition: origin.partition)
        processed[key] = max(processed[key] ?? 0, origin.offset + 1)
    }

    /// Per ledger and partition: commit everything before the oldest half still needed (`held`:
    /// the waiting halves and the messages still in the reorder buffers), or everything handled.
    func held(_ needed: [RecordOrigin]) -> [(OffsetLedger, [Int32: OffsetLedger.HeldPosition])] {
        var keep: [Key: Int64] = [:]
        for origin in needed {
            let key = Key(ledger: ObjectIdentifier(origin.ledger), partition: origin.partition)
            keep[key] = min(keep[key] ?? .max, origin.offset)
        }
        var result: [ObjectIdentifier: [Int32: OffsetLedger.HeldPosition]] = [:]
        for (key, next) in processed {
            guard let ledger = ledgers[key.ledger], let at = ledger.assignedAt[key.partition] else { continue }
            result[key.ledger, default: [:]][key.partition] = OffsetLedger.HeldPosition(
                keepFrom: min(keep[key] ?? next, next), processed: next, assignedAt: at)
        }
        return ledgers.map { id, ledger in (ledger, result[id] ?? [:]) }
    }
}

extension PendingPairs {
    /// Where the waiting halves that must be read again after a crash were read from: every
    /// waiting forecast; a waiting size only while its parameters may still come — for at most
    /// `sizeHold`, and not once parameters numbered after it were seen (`parametersSeen`):
    /// a size whose cascade had no series at T_obs never gets parameters and must not hold
    /// the commit forever.
    func origins(now: ContinuousClock.Instant, sizeHold: Duration, parametersSeen: [Int: Int]) -> [RecordOrigin] {
        waitingHalves.compactMap { half, since in
            switch half {
            case .forecast(let f): return f.origin
            case .size(let s):
                guard now - since < sizeHold else { return nil }
                if let seq = s.seq, let seen = parametersSeen[s.tObs], seen > seq { return nil }
                return s.origin
            }
        }
    }
}

extension StreamOrder {
    /// Where the buffered messages were read from.
    var origins: [RecordOrigin] {
        windows.values.flatMap { $0.bufferedMessages }.compactMap { m in
            switch m {
            case .parameters(let p): p.origin
            case .size(let s): s.origin
            default: nil
            }
        }
    }
}

extension PendingPairs {
    /// When the last waiting size still holding its offset stops holding it (nil: none holds).
    func sizesReleased(now: ContinuousClock.Instant, sizeHold: Duration, parametersSeen: [Int: Int]) -> ContinuousClock.Instant? {
        var last: ContinuousClock.Instant?
        for (half, since) in waitingHalves {
            guard case .size(let s) = half, s.origin != nil, now - since < sizeHold else { continue }
            if let seq = s.seq, let seen = parametersSeen[s.tObs], seen > seq { continue }
            last = max(last ?? since + sizeHold, since + sizeHold)
        }
        return last
    }
}

extension PredictorStage {
    /// Tells each Kafka source which offsets it may commit once the outputs sent so far are
    /// durable. When the input is idle and waiting sizes hold offsets, a second proposal
    /// releases them once `size_hold` has passed (applied after the first, in order).
    func proposePositions(_ state: RunState, _ context: StageContext, idle: Bool) {
        let outputs = ["alerts", "stats", "samples"].compactMap { context.output($0) }
        let sent = outputs.map { ($0, $0.latestSequence) }
        let durable: @Sendable () -> Bool = { sent.allSatisfy { $0.0.durable >= $0.1 } }
        let now = ContinuousClock.now
        let seen = state.order.parametersSeen
        let waiting = state.pending.origins(now: now, sizeHold: sizeHold, parametersSeen: seen)
        for (ledger, positions) in state.positions.held(waiting + state.order.origins) where !positions.isEmpty {
            if !ledger.propose(holder: context.name, positions: positions, when: durable) {
                context.counters.add("proposals_skipped")
            }
        }
        guard idle, let release = state.pending.sizesReleased(now: now, sizeHold: sizeHold, parametersSeen: seen) else { return }
        let later = state.pending.origins(now: release, sizeHold: sizeHold, parametersSeen: seen)
        let whenReleased: @Sendable () -> Bool = { durable() && ContinuousClock.now >= release }
        for (ledger, positions) in state.positions.held(later + state.order.origins) where !positions.isEmpty {
            if !ledger.propose(holder: context.name, positions: positions, when: whenReleased) {
                context.counters.add("proposals_skipped")
            }
        }
    }
}

extension PredictorStage {
    /// Notes the positions of the batch's messages read from a replayable input.
    func notePositions(_ batch: [Message], _ state: inout RunState) {
        for message in batch {
            switch message {
            case .parameters(let p): if let o = p.origin { state.positions.note(o) }
            case .size(let s): if let o = s.origin { state.positions.note(o) }
            default: break
            }
        }
    }
}
