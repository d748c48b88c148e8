// Read positions of replayable inputs (Kafka partitions) and when they may be committed, so that a
// daemon killed at any moment loses nothing: a record's position is committed only once every
// stage downstream is done with it, and everything after the committed position is read again.
import Synchronization

/// Where a record came from in a replayable input: a partition of the topic a `kafka_source`
/// reads, and the record's offset there. Attached to tweets (``Tweet/origin``) when a stage
/// downstream holds positions (the collector), never sent on the wire.
public struct RecordOrigin: Sendable, Hashable {
    /// The positions ledger of the source that read the record.
    public let ledger: OffsetLedger
    /// Partition number within the source's topic.
    public let partition: Int32
    /// Offset of the record within its partition.
    public let offset: Int64
    /// The source's assignment generation when the record was read: below the partition's
    /// ``OffsetLedger/assignedAt`` the record predates the partition's (re)assignment, after
    /// which reading restarted from the committed offset, and is stale.
    public let generation: Int

    public init(ledger: OffsetLedger, partition: Int32, offset: Int64, generation: Int = 0) {
        self.ledger = ledger
        self.partition = partition
        self.offset = offset
        self.generation = generation
    }

    public static func == (a: RecordOrigin, b: RecordOrigin) -> Bool {
        a.ledger === b.ledger && a.partition == b.partition && a.offset == b.offset && a.generation == b.generation
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(ObjectIdentifier(ledger))
        hasher.combine(partition)
        hasher.combine(offset)
    }
}

/// The commit positions of one replayable source, shared with the stages downstream that keep
/// records beyond their batch ("holders": the collector keeps a cascade's events until it ends).
///
/// Protocol:
/// - The source records every partition assignment with, per partition, the generation that
///   (re)assigned it (``assign(_:)``): reading a (re)assigned partition restarts from its
///   committed offset, so holders drop the state they built from it before, and releases made
///   for an earlier assignment of a partition are forgotten.
/// - A holder, after processing records, proposes per partition the offset from which it still
///   needs records (`keepFrom`: the first event of its oldest open cascade, or the next offset
///   when it needs none) and the offset up to which it has processed (`processed`), tagged with
///   the partition's assignment generation its state was built under, with a condition that
///   becomes true once the outputs it has produced so far are durable
///   (``propose(holder:positions:when:)``).
/// - The source commits, per partition, the smallest `keepFrom` of the holders' latest proposals
///   whose condition holds (``committable()``). After a crash the holders' state is rebuilt by
///   reading again from there; outputs produced again are dropped downstream by (cid, T_obs).
public final class OffsetLedger: Sendable {
    /// A holder's position in one partition.
    public struct HeldPosition: Sendable, Hashable {
        /// First offset the holder still needs (everything before may be committed).
        public var keepFrom: Int64
        /// Next offset after the last record the holder has processed.
        public var processed: Int64
        /// The partition's assignment generation the holder's state was built under.
        public var assignedAt: Int
        public init(keepFrom: Int64, processed: Int64, assignedAt: Int = 0) {
            self.keepFrom = keepFrom
            self.processed = processed
            self.assignedAt = assignedAt
        }
    }

    private struct Proposal {
        var positions: [Int32: HeldPosition]
        var ready: @Sendable () -> Bool
    }

    private struct State {
        /// Assigned partitions, with the generation that (re)assigned each.
        var assignedAt: [Int32: Int] = [:]
        /// Latest applied positions per holder.
        var released: [String: [Int32: HeldPosition]] = [:]
        /// Proposals waiting for their outputs to be durable, oldest first, per holder.
        var waiting: [String: [Proposal]] = [:]
    }

    /// How many holders must release a partition before it is committed.
    public let holders: Int
    /// Most proposals kept waiting per holder; further ones are skipped until some are applied.
    public static let maxWaiting = 256
    private let state = Mutex(State())

    public init(holders: Int) {
        self.holders = holders
    }

    /// The assigned partitions, each with the generation that (re)assigned it.
    public var assignedAt: [Int32: Int] { state.withLock { $0.assignedAt } }

    /// Records the source's current assignment (partition -> generation that (re)assigned it).
    /// Releases of partitions revoked or reassigned since are forgotten.
    public func assign(_ assignedAt: [Int32: Int]) {
        state.withLock { s in
            guard assignedAt != s.assignedAt else { return }
            s.assignedAt = assignedAt
            for holder in s.released.keys {
                s.released[holder] = s.released[holder]!.filter { assignedAt[$0.key] == $0.value.assignedAt }
            }
        }
    }

    /// A holder's proposal: its positions may be committed once `ready` returns true (checked
    /// by the source, in order). Positions built under an earlier assignment of their partition
    /// are ignored when applied. Returns false when the proposal was skipped (too many waiting).
    @discardableResult
    public func propose(holder: String, positions: [Int32: HeldPosition],
                        when ready: @escaping @Sendable () -> Bool) -> Bool {
        state.withLock { s in
            guard (s.waiting[holder]?.count ?? 0) < Self.maxWaiting else { return false }
            s.waiting[holder, default: []].append(Proposal(positions: positions, ready: ready))
            return true
        }
    }

    /// Applies the proposals whose condition now holds, then returns, per assigned partition
    /// released by every holder, the position to commit: the smallest `keepFrom` and the smallest
    /// `processed` across holders. Partitions some holder has not released are absent.
    public func committable() -> [Int32: HeldPosition] {
        state.withLock { s in
            for holder in s.waiting.keys {
                let queue = s.waiting[holder]!
                var applied = 0
                for proposal in queue {
                    guard proposal.ready() else { break }
                    for (p, position) in proposal.positions where s.assignedAt[p] == position.assignedAt {
                        s.released[holder, default: [:]][p] = position
                    }
                    applied += 1
                }
                s.waiting[holder] = Array(queue.dropFirst(applied))
            }
            guard s.released.count >= holders, holders > 0 else { return [:] }
            var result: [Int32: HeldPosition] = [:]
            for (p, at) in s.assignedAt {
                var low: HeldPosition?
                var all = true
                for positions in s.released.values {
                    guard let h = positions[p], h.assignedAt == at else { all = false; break }
                    low = HeldPosition(keepFrom: min(low?.keepFrom ?? .max, h.keepFrom),
                                       processed: min(low?.processed ?? .max, h.processed), assignedAt: at)
                }
                if all, let low { result[p] = low }
            }
            return result
        }
    }
}

/// The last `capacity` distinct keys seen, oldest forgotten first: ``insert(_:)`` answers whether
/// the key is new. Drops messages delivered again (at-least-once transports), and bounds the
/// memory of ended cascades (collector) and completed pairs (predictor).
public struct RecentKeys<Key: Hashable & Sendable>: Sendable {
    public let capacity: Int
    private var seen: Set<Key> = []
    private var ring: [Key] = []
    private var next = 0

    /// - Parameter capacity: keys remembered (>= 0; 0 remembers nothing).
    public init(capacity: Int) {
        precondition(capacity >= 0)
        self.capacity = capacity
    }

    /// Number of keys remembered.
    public var count: Int { seen.count }

    /// Whether `key` is remembered.
    public func contains(_ key: Key) -> Bool { seen.contains(key) }

    /// Remembers `key`; returns false if it was already remembered (a duplicate).
    public mutating func insert(_ key: Key) -> Bool {
        guard capacity > 0 else { return true }
        guard !seen.contains(key) else { return false }
        if ring.count < capacity {
            ring.append(key)
        } else {
            seen.remove(ring[next])
            ring[next] = key
            next = (next + 1) % capacity
        }
        seen.insert(key)
        return true
    }

    /// The same keys under another capacity: the newest `capacity` of them are kept, oldest
    /// forgotten first (a reload that changes how many keys a stage remembers).
    public func resized(capacity: Int) -> RecentKeys<Key> {
        var result = RecentKeys(capacity: capacity)
        let oldestFirst = ring.count < self.capacity ? ring : Array(ring[next...] + ring[..<next])
        for key in oldestFirst.suffix(capacity) { _ = result.insert(key) }
        return result
    }
}

/// The identity of a window-keyed message for duplicate detection: kind, cascade and T_obs (nil
/// for messages that are not about one cascade and window: tweets, models, logs).
public struct WindowKey: Hashable, Sendable {
    public var kind: MessageKind
    public var cascade: CascadeID
    public var tObs: Int

    public init?(_ message: Message) {
        guard let cascade = message.cascade, let tObs = message.tObs else { return nil }
        kind = message.kind
        self.cascade = cascade
        self.tObs = tObs
    }
}
