// A random-forest regressor of our own (Breiman 2001): CART regression trees grown on bootstrap
// samples, with a random subset of the features tried at every split. It replaces the course's
// scikit-learn RandomForestRegressor (spec §6) and produces the flat `RegressionTree`s that the
// `Model` message carries.
import TweetoscopeCore

/// Hyper-parameters of ``RandomForest``.
///
/// | parameter | default | meaning |
/// |---|---|---|
/// | `trees` | 100 | number of trees; the forest predicts the mean of their leaves |
/// | `maxDepth` | 12 | largest depth of a tree (the root is at depth 0), 1...64 |
/// | `minSamplesLeaf` | 5 | fewest (bootstrap) samples in a leaf; a split leaving fewer on a side is not considered |
/// | `maxFeatures` | 0.5 | fraction of the features tried at each split: `max(1, ceil(maxFeatures·d))` of the `d` features, drawn without replacement; constant features do not count, so the search goes on until that many non-constant features were tried (as scikit-learn does) |
/// | `bootstrap` | true | each tree sees `n` samples drawn with replacement; false: every tree sees every sample once |
/// | `treeSamples` | 0 | with `bootstrap`, each tree draws `min(n, treeSamples)` samples instead of `n` (0 = `n`), as scikit-learn's `max_samples`: a tree's size and cost stay bounded whatever `n`; with `treeSamples` >= `n` the trees are those of `0`, bit for bit |
/// | `seed` | 0 | seed of the SplitMix64 stream giving each tree its own xoshiro256** generator |
///
/// The same samples, parameters and seed give the same trees, bit for bit: the only randomness
/// is the seeded generators, split search visits candidates in a fixed order and breaks ties
/// by keeping the first best split.
public struct ForestParameters: Sendable, Hashable {
    public var trees: Int
    public var maxDepth: Int
    public var minSamplesLeaf: Int
    public var maxFeatures: Double
    public var bootstrap: Bool
    /// Bootstrap draws per tree when > 0 and < n (see the table above).
    public var treeSamples: Int
    public var seed: UInt64

    public init(trees: Int = 100, maxDepth: Int = 12, minSamplesLeaf: Int = 5, maxFeatures: Double = 0.5,
                bootstrap: Bool = true, treeSamples: Int = 0, seed: UInt64 = 0) {
        self.trees = trees
        self.maxDepth = maxDepth
        self.minSamplesLeaf = minSamplesLeaf
        self.maxFeatures = maxFeatures
        self.bootstrap = bootstrap
        self.treeSamples = treeSamples
        self.seed = seed
    }

    /// Throws ``ForestError/invalidParameter(_:)`` naming the first out-of-range parameter.
    public func validate() throws(ForestError) {
        guard trees >= 1 else { throw .invalidParameter("trees must be >= 1") }
        guard (1...64).contains(maxDepth) else { throw .invalidParameter("maxDepth must be in 1...64") }
        guard minSamplesLeaf >= 1 else { throw .invalidParameter("minSamplesLeaf must be >= 1") }
        guard maxFeatures > 0, maxFeatures <= 1 else { throw .invalidParameter("maxFeatures must be in (0, 1]") }
        guard treeSamples >= 0 else { throw .invalidParameter("treeSamples must be >= 0") }
    }

    /// Bootstrap slots of each tree for `n` samples: `min(n, treeSamples)` with `bootstrap` and
    /// `treeSamples` > 0, else `n`.
    public func slotsPerTree(_ n: Int) -> Int {
        bootstrap && treeSamples > 0 ? min(n, treeSamples) : n
    }

    /// Number of features tried per split among `d`.
    public func featuresPerSplit(_ d: Int) -> Int {
        let v = maxFeatures * Double(d)
        var k = Int(v)
        if Double(k) < v { k += 1 }
        return max(1, min(d, k))
    }
}

/// Why a forest could not be fitted.
public enum ForestError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidParameter(String)
    case noSamples
    case lengthMismatch(features: Int, targets: Int)
    /// Row `row` has a different number of features than row 0 (or none).
    case raggedRow(row: Int)
    /// A feature or target is NaN or infinite.
    case nonFinite(row: Int)

    public var description: String {
        switch self {
        case .invalidParameter(let s): "invalid parameter: \(s)"
        case .noSamples: "no samples"
        case .lengthMismatch(let f, let t): "\(f) feature rows for \(t) targets"
        case .raggedRow(let r): "row \(r) has a different number of features than row 0"
        case .nonFinite(let r): "row \(r) has a non-finite feature or target"
        }
    }
}

/// Random-forest regression: CART trees (squared-error criterion, i.e. variance reduction) on
/// bootstrap samples with per-split feature subsampling. See ``ForestParameters``.
public enum RandomForest {
    /// Fits a forest on rows `features[i]` (all of one length `d ≥ 1`) and targets `targets[i]`.
    ///
    /// Each tree gets its own generator, seeded by the next value of `SplitMix64(seed)`; it draws
    /// the bootstrap sample, then, at each node, a random order of the features. A node becomes
    /// a leaf (value = mean target of its samples) when it is at `maxDepth`, has fewer than
    /// `2·minSamplesLeaf` samples, has constant targets, or no split reduces the squared error.
    /// Otherwise it splits on the `(feature, threshold)` with the largest reduction; thresholds
    /// are midpoints between consecutive distinct values, and `x <= threshold` goes left.
    public static func fit(features: [[Double]], targets: [Double],
                           parameters: ForestParameters = ForestParameters()) throws(ForestError) -> [RegressionTree] {
        try parameters.validate()
        let data = try Columns(features: features, targets: targets)
        var seeds = SplitMix64(seed: parameters.seed)
        var trees: [RegressionTree] = []
        trees.reserveCapacity(parameters.trees)
        var builder = TreeBuilder(data: data, parameters: parameters)
        for _ in 0..<parameters.trees {
            var rng = Xoshiro256StarStar(seed: seeds.next())
            trees.append(builder.build(&rng))
        }
        return trees
    }

    /// Mean prediction of `trees` for `x` (nil for no trees); the same rule as `Model.predict`.
    public static func predict(_ trees: [RegressionTree], _ x: [Double]) -> Double? {
        guard !trees.isEmpty else { return nil }
        var total = 0.0
        for t in trees { total += t.predict(x) }
        return total / Double(trees.count)
    }
}

/// The training set in column-major order.
struct Columns {
    let n: Int
    let d: Int
    /// `x[f * n + i]` is feature `f` of sample `i`.
    let x: [Double]
    let y: [Double]

    init(features: [[Double]], targets: [Double]) throws(ForestError) {
        guard !features.isEmpty else { throw .noSamples }
        guard features.count == targets.count else {
            throw .lengthMismatch(features: features.count, targets: targets.count)
        }
        n = features.count
        d = features[0].count
        guard d >= 1 else { throw .raggedRow(row: 0) }
        var x = [Double](repeating: 0, count: n * d)
        for (i, row) in features.enumerated() {
            guard row.count == d else { throw .raggedRow(row: i) }
            guard targets[i].isFinite else { throw .nonFinite(row: i) }
            for f in 0..<d {
                guard row[f].isFinite else { throw .nonFinite(row: i) }
                x[f * n + i] = row[f]
            }
        }
        self.x = x
        self.y = targets
    }
}

/// Grows one tree at a time, reusing its scratch buffers.
///
/// Split search without sorting at every node: the samples are sorted once per feature for the
/// whole forest; each tree expands that order over its bootstrap slots (a counting pass), and
/// every split stably partitions each feature's order, so every node owns the same range
/// `lo..<hi` of all the per-feature orders, already sorted. A node costs O(d·count) instead of
/// O(d·count·log count).
///
/// Speed (issue 17; the learner's refits were 60 % of the whole pipeline's CPU): each position
/// of a feature's order is one 8-byte item, the value's dense rank above the slot (`items`), so
/// the split search reads ranks sequentially instead of values through two indirections and the
/// partition moves one word per position; the scratch buffers are raw memory (no bounds checks
/// in the inner loops). The arithmetic and the order of every operation are those of the plain
/// version (`ReferenceForestTests` grows it), so the trees are the same bit for bit. The inner
/// loops take no data-dependent branch (the partition writes each item to both sides, the split
/// scan keeps its bests with SIMD selects, the order expansion writes a sample's first slot
/// whatever its count): SEISMIC's 47 refits 0.89 → 0.34 s on one thread (`forest-bench`, shift
/// search included), the same trees.
struct TreeBuilder {
    let data: Columns
    let parameters: ForestParameters
    let tried: Int
    /// Bootstrap slots per tree (m <= n): the stride of the per-feature orders.
    let m: Int
    /// Each feature's sorted samples and their dense ranks (shared by a forest's builders).
    let ranking: Ranking
    private let scratch: Scratch

    /// Raw scratch memory of one builder (one tree at a time).
    final class Scratch {
        let n: Int, m: Int, d: Int
        /// Original sample of each bootstrap slot.
        let sampleOf: UnsafeMutablePointer<Int32>
        /// Target of each slot.
        let ys: UnsafeMutablePointer<Double>
        /// `items[f * m + k]`: the slots sorted by feature f, each with its feature value's dense
        /// rank, `rank << 32 | slot`; a node owns `lo..<hi` of every feature (m = slots per tree:
        /// the per-slot buffers hold m, the per-sample ones n; issue 17, memory: with
        /// `treeSamples` a window of 2,000 samples needs 200 slots, not 2,000).
        let items: UnsafeMutablePointer<UInt64>
        /// Slots of each sample, grouped (counting sort): `slots[start[i]..<start[i + 1]]`.
        let start: UnsafeMutablePointer<Int32>
        let fill: UnsafeMutablePointer<Int32>
        /// Per sample, `count << 32 | first slot` (the first slot is meaningless for count 0).
        let entry: UnsafeMutablePointer<UInt64>
        let slots: UnsafeMutablePointer<Int32>
        /// 1 when the slot goes to the left child of the node being split, else 0.
        let goesLeft: UnsafeMutablePointer<UInt8>
        let scratchItems: UnsafeMutablePointer<UInt64>
        let features: UnsafeMutablePointer<Int>

        init(n: Int, m: Int, d: Int) {
            self.n = n
            self.m = m
            self.d = d
            sampleOf = .allocate(capacity: m)
            ys = .allocate(capacity: m)
            // One spare element in `items` and `slots`: the order expansion in `build` writes
            // (and reads) one past the last slot.
            items = .allocate(capacity: m * d + 1)
            start = .allocate(capacity: n + 1)
            fill = .allocate(capacity: n)
            entry = .allocate(capacity: n)
            slots = .allocate(capacity: m + 1)
            slots[m] = 0
            goesLeft = .allocate(capacity: m)
            goesLeft.initialize(repeating: 0, count: m)
            scratchItems = .allocate(capacity: m)
            features = .allocate(capacity: d)
        }

        deinit {
            sampleOf.deallocate(); ys.deallocate(); items.deallocate()
            start.deallocate(); fill.deallocate(); entry.deallocate(); slots.deallocate(); goesLeft.deallocate()
            scratchItems.deallocate(); features.deallocate()
        }
    }

    /// Each feature's ranking of the samples: `positions[f * n + r]`, for position r by feature
    /// f, is `rank << 32 | sample`, the samples sorted by value (ties by sample index) and `rank`
    /// the value's dense rank (0 for the smallest value, +1 at each larger distinct value: equal
    /// values, equal ranks). Within a feature, comparing dense ranks is comparing values, which
    /// lets the split search and the partition move 8-byte `rank << 32 | slot` items instead of
    /// a slot and a value.
    struct Ranking: Sendable {
        let positions: [UInt64]
    }

    /// The ``Ranking`` of `data`'s samples.
    static func ranks(_ data: Columns) -> Ranking {
        let n = data.n, d = data.d
        var positions = [UInt64](repeating: 0, count: n * d)
        var ranks = Array(0..<n)
        let x = data.x
        for f in 0..<d {
            let base = f * n
            ranks.sort { a, b in
                let xa = x[base + a], xb = x[base + b]
                return xa < xb || (xa == xb && a < b)
            }
            var rank: UInt64 = 0
            for r in 0..<n {
                if r > 0, x[base + ranks[r - 1]] < x[base + ranks[r]] { rank += 1 }
                positions[base + r] = rank << 32 | UInt64(ranks[r])
            }
        }
        return Ranking(positions: positions)
    }

    init(data: Columns, parameters: ForestParameters, ranking: Ranking? = nil) {
        self.data = data
        self.parameters = parameters
        tried = parameters.featuresPerSplit(data.d)
        m = parameters.slotsPerTree(data.n)
        self.ranking = ranking ?? Self.ranks(data)
        scratch = Scratch(n: data.n, m: m, d: data.d)
    }

    /// The samples a tree draws into its `m` bootstrap slots, `body(slot, sample)` in slot order:
    /// the first `m` draws of its generator. ``RandomForest/fitWithOutOfBag(features:targets:parameters:threads:)``
    /// replays them from the tree's seed to find its out-of-bag samples.
    @inline(__always)
    static func drawBootstrap(_ rng: inout Xoshiro256StarStar, n: Int, m: Int, _ body: (_ slot: Int, _ sample: Int) -> Void) {
        for k in 0..<m { body(k, rng.below(n)) }
    }

    private struct Work {
        var node: Int
        var lo: Int
        var hi: Int
        var depth: Int
    }

    mutating func build(_ rng: inout Xoshiro256StarStar) -> RegressionTree {
        let n = data.n, d = data.d, m = self.m
        let sc = scratch
        let sampleOf = sc.sampleOf, start = sc.start, fill = sc.fill, slots = sc.slots, ys = sc.ys
        let items = sc.items
        // Bootstrap slots, then each feature's order over the slots.
        if parameters.bootstrap {
            Self.drawBootstrap(&rng, n: n, m: m) { k, i in sampleOf[k] = Int32(i) }
        } else {
            for k in 0..<m { sampleOf[k] = Int32(k) }
        }
        for i in 0...n { start[i] = 0 }
        for k in 0..<m { start[Int(sampleOf[k]) + 1] += 1 }
        for i in 0..<n { start[i + 1] += start[i] }
        for i in 0..<n { fill[i] = start[i] }
        data.y.withUnsafeBufferPointer { y in
            for k in 0..<m {
                let i = Int(sampleOf[k])
                slots[Int(fill[i])] = Int32(k)
                fill[i] += 1
                ys[k] = y[i]
            }
        }
        let entry = sc.entry
        for i in 0..<n {
            let first = Int(start[i])
            entry[i] = UInt64(start[i + 1] - start[i]) << 32 | UInt64(UInt32(bitPattern: slots[first]))
        }
        ranking.positions.withUnsafeBufferPointer { positions in
            let high: UInt64 = 0xFFFF_FFFF_0000_0000, low: UInt64 = 0xFFFF_FFFF
            for f in 0..<d {
                let base = f * n
                var out = f * m
                // Most samples have no slot or one (m draws of n), so the first slot is written
                // whatever the count and kept only when there is one (no branch to mispredict;
                // a sample's further slots take the rare loop). The buffers have one spare
                // element for the write past the last slot.
                for r in 0..<n {
                    let p = positions[base + r]
                    let e = entry[Int(p & low)]
                    let rank = p & high
                    items[out] = rank | (e & low)
                    let count = Int(e >> 32)
                    out += min(count, 1)
                    if count > 1 {
                        let i = Int(p & low)
                        for s in Int(start[i]) + 1..<Int(start[i + 1]) {
                            items[out] = rank | UInt64(UInt32(bitPattern: slots[s]))
                            out += 1
                        }
                    }
                }
            }
        }

        var feature: [Int] = [-1], threshold: [Double] = [0], left: [Int] = [-1], right: [Int] = [-1]
        var value: [Double] = [0]
        var stack = [Work(node: 0, lo: 0, hi: m, depth: 0)]
        let minLeaf = parameters.minSamplesLeaf
        while let w = stack.popLast() {
            let count = w.hi - w.lo
            var sum = 0.0
            for k in w.lo..<w.hi { sum += ys[Self.slot(items[k])] }
            let mean = sum / Double(count)
            value[w.node] = mean
            guard w.depth < parameters.maxDepth, count >= 2 * minLeaf else { continue }
            var ss = 0.0
            for k in w.lo..<w.hi {
                let r = ys[Self.slot(items[k])] - mean
                ss += r * r
            }
            guard ss > 0 else { continue }
            guard let split = bestSplit(lo: w.lo, hi: w.hi, mean: mean, ss: ss, rng: &rng) else { continue }
            // A child that cannot split (too deep or too small) only needs feature 0's order,
            // which its mean is summed in: the other features are not partitioned for it.
            let mid = partition(lo: w.lo, hi: w.hi, feature: split.feature, rank: split.rank,
                                childrenSplit: { mid in
                                    w.depth + 1 < parameters.maxDepth
                                        && (mid - w.lo >= 2 * minLeaf || w.hi - mid >= 2 * minLeaf)
                                })
            let l = feature.count, r = l + 1
            for _ in 0..<2 {
                feature.append(-1); threshold.append(0); left.append(-1); right.append(-1); value.append(0)
            }
            feature[w.node] = split.feature
            threshold[w.node] = split.threshold
            left[w.node] = l
            right[w.node] = r
            stack.append(Work(node: r, lo: mid, hi: w.hi, depth: w.depth + 1))
            stack.append(Work(node: l, lo: w.lo, hi: mid, depth: w.depth + 1))
        }
        // Exact-size copies: the arrays grew by doubling, and a model keeps its trees for its life
        // (up to half of each array was spare capacity; issue 17, memory).
        return RegressionTree(feature: exactCopy(feature), threshold: exactCopy(threshold), left: exactCopy(left),
                              right: exactCopy(right), value: exactCopy(value))
    }

    /// `a`'s elements in a buffer of exactly their count.
    private func exactCopy<T>(_ a: [T]) -> [T] {
        [T](unsafeUninitializedCapacity: a.count) { buffer, count in
            _ = buffer.initialize(fromContentsOf: a)
            count = a.count
        }
    }

    /// The ranks of four items, as signed 32-bit lanes.
    @inline(__always)
    static func ranks(_ a: UInt64, _ b: UInt64, _ c: UInt64, _ d: UInt64) -> SIMD4<Int32> {
        SIMD4(Int32(truncatingIfNeeded: a >> 32), Int32(truncatingIfNeeded: b >> 32),
              Int32(truncatingIfNeeded: c >> 32), Int32(truncatingIfNeeded: d >> 32))
    }

    /// The slot of an item (`rank << 32 | slot`).
    @inline(__always)
    static func slot(_ item: UInt64) -> Int { Int(UInt32(truncatingIfNeeded: item)) }

    /// Stably partitions every feature's range `lo..<hi` into the slots whose value of `feature`
    /// has a dense rank <= `rank` (those with `x[feature] <= threshold`), then the others;
    /// returns the boundary.
    @inline(never)
    private func partition(lo: Int, hi: Int, feature: Int, rank: UInt32,
                           childrenSplit: (Int) -> Bool) -> Int {
        let n = m, d = data.d
        let sc = scratch
        let items = sc.items, goesLeft = sc.goesLeft, spare = sc.scratchItems
        let split = items + feature * n
        // Items with a rank <= `rank` are exactly those below `(rank + 1) << 32`.
        let bound = (UInt64(rank) + 1) << 32
        var mid = lo
        for k in lo..<hi {
            let item = split[k]
            let l: UInt8 = item < bound ? 1 : 0
            goesLeft[Self.slot(item)] = l
            mid &+= Int(l)
        }
        let all = childrenSplit(mid)
        for f in 0..<d where f != feature && (all || f == 0) {
            let itemsOf = items + f * n
            var a = lo, c = 0, k = lo
            // Branch-free: each item is written to both places and only its side's cursor
            // advances (which side an item goes is unpredictable: a branch mispredicted half the time).
            while k < hi {
                let item = itemsOf[k]
                let l = Int(goesLeft[Self.slot(item)])
                itemsOf[a] = item
                spare[c] = item
                a &+= l
                c &+= 1 &- l
                k &+= 1
            }
            // The right side back behind the left (a loop: most ranges are short, and a memmove
            // call cost more than the copy).
            let right = itemsOf + a
            var j = 0
            while j < c {
                right[j] = spare[j]
                j &+= 1
            }
        }
        return mid
    }

    /// The split of the node `lo..<hi` with the largest squared-error reduction among the
    /// features tried, or nil when none reduces it (by more than a relative 1e-12): the feature,
    /// the threshold and the dense rank of the last value that goes left.
    ///
    /// The features tried are the first `tried` non-constant ones of a fresh random order; ties
    /// keep the first best split in (feature order, position) order. The running sums of each
    /// feature form a chain of dependent additions, so four features are scanned at once (their
    /// chains overlap in the processor); each keeps its own first maximum, and the features'
    /// maxima are then compared in feature order, which picks the same split as one scan after
    /// the other.
    private func bestSplit(lo: Int, hi: Int, mean: Double, ss: Double,
                           rng: inout Xoshiro256StarStar) -> (feature: Int, threshold: Double, rank: UInt32)? {
        let n = m, d = data.d, samples = data.n
        let count = hi - lo
        let minLeaf = parameters.minSamplesLeaf
        let sc = scratch
        let features = sc.features, items = sc.items, ys = sc.ys, sampleOf = sc.sampleOf
        // A fresh random order of the features (Fisher-Yates on a fixed starting order).
        for f in 0..<d { features[f] = f }
        for f in stride(from: d - 1, to: 0, by: -1) {
            let g = rng.below(f + 1)
            let t = features[f]
            features[f] = features[g]
            features[g] = t
        }
        // The features tried: the first `tried` ones not constant in this node, kept in place.
        var chosen = 0
        for j in 0..<d {
            if chosen >= tried { break }
            let f = features[j]
            let x = items + (f * n + lo)
            guard x[0] >> 32 < x[count - 1] >> 32 else { continue }  // constant in this node: not counted
            features[chosen] = f
            chosen += 1
        }
        let floor = ss * 1e-12
        var best: (feature: Int, threshold: Double, rank: UInt32)?
        var bestGain = floor
        var j = 0
        while j < chosen {
            let lanes = min(4, chosen - j)
            // Unused lanes repeat the first one; their results are ignored.
            let f0 = features[j], f1 = features[j + (lanes > 1 ? 1 : 0)]
            let f2 = features[j + (lanes > 2 ? 2 : 0)], f3 = features[j + (lanes > 3 ? 3 : 0)]
            let scan = scan4(lo: lo, count: count, mean: mean, minLeaf: minLeaf, floor: floor,
                             f0, f1, f2, f3, items: items, ys: ys)
            for lane in 0..<lanes {
                let gain = scan.gains[lane], k = scan.positions[lane]
                guard gain > bestGain else { continue }
                bestGain = gain
                let f = features[j + lane]
                let x = items + (f * n + lo)
                let a = data.x[f * samples + Int(sampleOf[Self.slot(x[k])])]
                let b = data.x[f * samples + Int(sampleOf[Self.slot(x[k + 1])])]
                var t = a + (b - a) / 2
                if !(t < b) { t = a }
                best = (f, t, UInt32(truncatingIfNeeded: x[k] >> 32))
            }
            j += lanes
        }
        return best
    }

    /// For four features of the node `lo..<lo+count`: the largest gain above `floor` and the
    /// first position k where it occurs (the split after k + 1 samples), (floor, -1) for none.
    /// Gain of a split after nL samples: sL²·count / (nL·(count − nL)), sL the sum of the
    /// centred targets of the left part, between two distinct values, both parts >= minLeaf.
    @inline(__always)
    private func scan4(lo: Int, count: Int, mean: Double, minLeaf: Int, floor: Double,
                       _ f0: Int, _ f1: Int, _ f2: Int, _ f3: Int,
                       items: UnsafeMutablePointer<UInt64>,
                       ys: UnsafeMutablePointer<Double>) -> (gains: SIMD4<Double>, positions: SIMD4<Int>) {
        let n = m
        let x0 = items + (f0 * n + lo), x1 = items + (f1 * n + lo), x2 = items + (f2 * n + lo), x3 = items + (f3 * n + lo)
        let total = Double(count)
        let means = SIMD4<Double>(repeating: mean)
        var s = SIMD4<Double>(repeating: 0)
        var g = SIMD4<Double>(repeating: floor)
        var best = SIMD4<Int64>(repeating: -1)
        // Split after nL = k + 1 samples, nL in minLeaf...count − minLeaf.
        let firstCut = minLeaf - 1, endCut = count - minLeaf
        // The four lanes in SIMD, without a branch: every position's gain is divided and kept
        // where it beats its lane's best between two distinct values (a screen that divided only
        // when num >= g·den·(1 − 1e-6) cost more in mispredicted branches than the divisions it
        // saved: forest 0.54 → 0.41 s on SEISMIC's 47 fits). The same operations in the same
        // order as one scan per feature, so the same gains, bit for bit. Distinct values are
        // distinct dense ranks (the items' high halves).
        var k = 0
        while k < firstCut {
            s += SIMD4(ys[Self.slot(x0[k])], ys[Self.slot(x1[k])], ys[Self.slot(x2[k])], ys[Self.slot(x3[k])]) - means
            k += 1
        }
        // The current items as scalars (their slots index `ys`), their ranks as a 32-bit vector
        // (ranks < 2^31; the baseline x86-64 has no 64-bit vector compare, and an emulated one
        // cost more than the loads the items save).
        var c0 = x0[k], c1 = x1[k], c2 = x2[k], c3 = x3[k]
        var a = Self.ranks(c0, c1, c2, c3)
        while k < endCut {
            let n0 = x0[k + 1], n1 = x1[k + 1], n2 = x2[k + 1], n3 = x3[k + 1]
            s += SIMD4(ys[Self.slot(c0)], ys[Self.slot(c1)], ys[Self.slot(c2)], ys[Self.slot(c3)]) - means
            let b = Self.ranks(n0, n1, n2, n3)
            let dl = Double(k + 1)
            let denominator = dl * (total - dl)
            let num = s * s * total
            let gain = num / denominator
            let distinct = unsafeBitCast(a .< b, to: SIMD4<Int32>.self)
            let better = unsafeBitCast(SIMD4<Int64>(truncatingIfNeeded: distinct), to: SIMDMask<SIMD4<Int64>>.self)
                .& (gain .> g)
            g.replace(with: gain, where: better)
            best.replace(with: Int64(k), where: better)
            a = b
            c0 = n0; c1 = n1; c2 = n2; c3 = n3
            k += 1
        }
        return (g, SIMD4(truncatingIfNeeded: best))
    }
}
