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
    public var seed: UInt64

    public init(trees: Int = 100, maxDepth: Int = 12, minSamplesLeaf: Int = 5, maxFeatures: Double = 0.5,
                bootstrap: Bool = true, seed: UInt64 = 0) {
        self.trees = trees
        self.maxDepth = maxDepth
        self.minSamplesLeaf = minSamplesLeaf
        self.maxFeatures = maxFeatures
        self.bootstrap = bootstrap
        self.seed = seed
    }

    /// Throws ``ForestError/invalidParameter(_:)`` naming the first out-of-range parameter.
    public func validate() throws(ForestError) {
        guard trees >= 1 else { throw .invalidParameter("trees must be >= 1") }
        guard (1...64).contains(maxDepth) else { throw .invalidParameter("maxDepth must be in 1...64") }
        guard minSamplesLeaf >= 1 else { throw .invalidParameter("minSamplesLeaf must be >= 1") }
        guard maxFeatures > 0, maxFeatures <= 1 else { throw .invalidParameter("maxFeatures must be in (0, 1]") }
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
struct TreeBuilder {
    let data: Columns
    let parameters: ForestParameters
    let tried: Int
    /// `sorted[f * n + r]`: the sample of rank r by feature f (ties by sample index).
    let sorted: [Int32]
    /// Original sample of each bootstrap slot.
    var sampleOf: [Int32]
    /// Target of each slot.
    var ys: [Double]
    /// `order[f * n + k]`: slots sorted by feature f; a node owns `lo..<hi` of every feature.
    var order: [Int32]
    /// Slots of each sample, grouped (counting sort): `slots[start[i]..<start[i + 1]]`.
    var start: [Int32]
    var slots: [Int32]
    var goesLeft: [Bool]
    var scratch: [Int32]
    var features: [Int]

    init(data: Columns, parameters: ForestParameters) {
        self.data = data
        self.parameters = parameters
        tried = parameters.featuresPerSplit(data.d)
        let n = data.n, d = data.d
        var sorted = [Int32](repeating: 0, count: n * d)
        var ranks = Array(0..<n)
        for f in 0..<d {
            let base = f * n
            let x = data.x
            ranks.sort { a, b in
                let xa = x[base + a], xb = x[base + b]
                return xa < xb || (xa == xb && a < b)
            }
            for r in 0..<n { sorted[base + r] = Int32(ranks[r]) }
        }
        self.sorted = sorted
        sampleOf = [Int32](repeating: 0, count: n)
        ys = [Double](repeating: 0, count: n)
        order = [Int32](repeating: 0, count: n * d)
        start = [Int32](repeating: 0, count: n + 1)
        slots = [Int32](repeating: 0, count: n)
        goesLeft = [Bool](repeating: false, count: n)
        scratch = [Int32](repeating: 0, count: n)
        features = Array(0..<d)
    }

    private struct Work {
        var node: Int
        var lo: Int
        var hi: Int
        var depth: Int
    }

    mutating func build(_ rng: inout Xoshiro256StarStar) -> RegressionTree {
        let n = data.n, d = data.d
        // Bootstrap slots, then each feature's order over the slots.
        for k in 0..<n { sampleOf[k] = Int32(parameters.bootstrap ? rng.below(n) : k) }
        for i in 0...n { start[i] = 0 }
        for k in 0..<n { start[Int(sampleOf[k]) + 1] += 1 }
        for i in 0..<n { start[i + 1] += start[i] }
        var fill = Array(start[0..<n])
        for k in 0..<n {
            let i = Int(sampleOf[k])
            slots[Int(fill[i])] = Int32(k)
            fill[i] += 1
            ys[k] = data.y[i]
        }
        for f in 0..<d {
            let base = f * n
            var out = base
            for r in 0..<n {
                let i = Int(sorted[base + r])
                for s in Int(start[i])..<Int(start[i + 1]) {
                    order[out] = slots[s]
                    out += 1
                }
            }
        }

        var feature: [Int] = [-1], threshold: [Double] = [0], left: [Int] = [-1], right: [Int] = [-1]
        var value: [Double] = [0]
        var stack = [Work(node: 0, lo: 0, hi: n, depth: 0)]
        let minLeaf = parameters.minSamplesLeaf
        while let w = stack.popLast() {
            let count = w.hi - w.lo
            var sum = 0.0
            for k in w.lo..<w.hi { sum += ys[Int(order[k])] }
            let mean = sum / Double(count)
            value[w.node] = mean
            guard w.depth < parameters.maxDepth, count >= 2 * minLeaf else { continue }
            var ss = 0.0
            for k in w.lo..<w.hi {
                let r = ys[Int(order[k])] - mean
                ss += r * r
            }
            guard ss > 0 else { continue }
            guard let split = bestSplit(lo: w.lo, hi: w.hi, mean: mean, ss: ss, rng: &rng) else { continue }
            let mid = partition(lo: w.lo, hi: w.hi, feature: split.feature, threshold: split.threshold)
            let l = feature.count, r = l + 1
            feature += [-1, -1]; threshold += [0, 0]; left += [-1, -1]; right += [-1, -1]; value += [0, 0]
            feature[w.node] = split.feature
            threshold[w.node] = split.threshold
            left[w.node] = l
            right[w.node] = r
            stack.append(Work(node: r, lo: mid, hi: w.hi, depth: w.depth + 1))
            stack.append(Work(node: l, lo: w.lo, hi: mid, depth: w.depth + 1))
        }
        return RegressionTree(feature: feature, threshold: threshold, left: left, right: right, value: value)
    }

    /// Stably partitions every feature's range `lo..<hi` into the slots with
    /// `x[feature] <= threshold`, then the others; returns the boundary.
    private mutating func partition(lo: Int, hi: Int, feature: Int, threshold: Double) -> Int {
        let n = data.n, d = data.d
        let base = feature * n
        var mid = lo
        for k in lo..<hi {
            let slot = Int(order[base + k])
            let l = data.x[base + Int(sampleOf[slot])] <= threshold
            goesLeft[slot] = l
            if l { mid += 1 }
        }
        for f in 0..<d where f != feature {
            let b = f * n
            var a = b + lo, c = 0
            for k in lo..<hi {
                let slot = order[b + k]
                if goesLeft[Int(slot)] {
                    order[a] = slot
                    a += 1
                } else {
                    scratch[c] = slot
                    c += 1
                }
            }
            for j in 0..<c { order[a + j] = scratch[j] }
        }
        return mid
    }

    /// The split of the node `lo..<hi` with the largest squared-error reduction among the
    /// features tried, or nil when none reduces it (by more than a relative 1e-12).
    private mutating func bestSplit(lo: Int, hi: Int, mean: Double, ss: Double,
                                    rng: inout Xoshiro256StarStar) -> (feature: Int, threshold: Double)? {
        let n = data.n, d = data.d
        let count = hi - lo
        let minLeaf = parameters.minSamplesLeaf
        // A fresh random order of the features (Fisher-Yates on a fixed starting order).
        for f in 0..<d { features[f] = f }
        for f in stride(from: d - 1, to: 0, by: -1) { features.swapAt(f, rng.below(f + 1)) }
        var best: (feature: Int, threshold: Double)?
        var bestGain = ss * 1e-12
        var visited = 0
        let total = Double(count)
        for f in features {
            if visited >= tried { break }
            let base = f * n
            let first = data.x[base + Int(sampleOf[Int(order[base + lo])])]
            let last = data.x[base + Int(sampleOf[Int(order[base + hi - 1])])]
            guard first < last else { continue }  // constant in this node: not counted
            visited += 1
            // Sums of centred targets: gain = sL²/nL + sR²/nR with sR = -sL (the total is 0).
            var sL = 0.0
            var a = first
            for k in 0..<(count - 1) {
                let slot = Int(order[base + lo + k])
                sL += ys[slot] - mean
                let b = data.x[base + Int(sampleOf[Int(order[base + lo + k + 1])])]
                defer { a = b }
                let nL = k + 1
                guard nL >= minLeaf else { continue }
                if count - nL < minLeaf { break }
                guard a < b else { continue }
                let dl = Double(nL)
                let gain = sL * sL * total / (dl * (total - dl))
                if gain > bestGain {
                    bestGain = gain
                    var t = a + (b - a) / 2
                    if !(t < b) { t = a }
                    best = (f, t)
                }
            }
        }
        return best
    }
}
