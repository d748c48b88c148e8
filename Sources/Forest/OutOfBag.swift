// Out-of-bag predictions of a random forest (Breiman 2001, "Random Forests", §3.1; Breiman 1996,
// "Out-of-bag estimation"): each training sample is predicted by the trees whose bootstrap sample
// did not draw it, which gives held-out residuals for free, without a separate validation set.
import Dispatch
import Glibc
import TweetoscopeCore

/// A forest with the out-of-bag prediction of each of its training samples.
public struct OutOfBagFit: Sendable {
    /// The trees, the same as ``RandomForest/fit(features:targets:parameters:)`` gives for the
    /// same samples, parameters and seed.
    public var trees: [RegressionTree]
    /// `predictions[i]`: mean prediction for sample `i` of the trees that did not draw it in
    /// their bootstrap sample; nil when every tree drew it (or bootstrap is off: then no sample
    /// is ever out of bag).
    public var predictions: [Double?]
    /// `counts[i]`: number of trees sample `i` was out of bag for (about 36.8 % of the trees,
    /// (1 − 1/n)^n → e^−1).
    public var counts: [Int]

    public init(trees: [RegressionTree], predictions: [Double?], counts: [Int]) {
        self.trees = trees
        self.predictions = predictions
        self.counts = counts
    }

    /// `targets[i] − predictions[i]` for the samples that have an out-of-bag prediction, in
    /// sample order.
    public func residuals(_ targets: [Double]) -> [Double] {
        var out: [Double] = []
        out.reserveCapacity(targets.count)
        for (i, p) in predictions.enumerated() {
            if let p { out.append(targets[i] - p) }
        }
        return out
    }
}

extension RandomForest {
    /// Fits a forest exactly as ``fit(features:targets:parameters:)`` does (same trees, bit for
    /// bit) and also computes each sample's out-of-bag prediction.
    ///
    /// - Parameters: as ``fit(features:targets:parameters:)``; `features` is n rows of d values.
    /// - Returns: the trees and, per sample, the mean of the out-of-bag trees' predictions.
    /// - Throws: the errors of ``fit(features:targets:parameters:)``.
    /// - Complexity: the fit, plus one tree evaluation per (tree, out-of-bag sample) pair.
    /// - Parameter threads: trees grown at once (each tree has its own seeded generator, so the
    ///   result does not depend on it).
    public static func fitWithOutOfBag(features: [[Double]], targets: [Double],
                                       parameters: ForestParameters = ForestParameters(),
                                       threads: Int = 1) throws(ForestError) -> OutOfBagFit {
        try parameters.validate()
        let data = try Columns(features: features, targets: targets)
        var seeder = SplitMix64(seed: parameters.seed)
        let seeds = (0..<parameters.trees).map { _ in seeder.next() }
        let ranking = TreeBuilder.ranks(data)
        // Trees are independent given their seeds: `threads` builders grow contiguous runs of
        // them; the out-of-bag sums are then added up in tree order, as a single builder would.
        let parts = max(1, min(threads, parameters.trees))
        let results = UnsafeMutableBufferPointer<[RegressionTree]>.allocate(capacity: parts)
        defer { results.deallocate() }
        let shared = SharedSlots(results)
        let grow: @Sendable (Int) -> Void = { part in
            let lo = part * seeds.count / parts, hi = (part + 1) * seeds.count / parts
            var builder = TreeBuilder(data: data, parameters: parameters, ranking: ranking)
            var out: [RegressionTree] = []
            out.reserveCapacity(hi - lo)
            for t in lo..<hi {
                var rng = Xoshiro256StarStar(seed: seeds[t])
                out.append(builder.build(&rng))
            }
            (shared.base + part).initialize(to: out)
        }
        if parts == 1 { grow(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: grow) }
        var trees: [RegressionTree] = []
        trees.reserveCapacity(parameters.trees)
        for part in results.indices { trees += (results.baseAddress! + part).move() }
        let n = data.n
        guard parameters.bootstrap else {
            return OutOfBagFit(trees: trees, predictions: Array(repeating: nil, count: n), counts: Array(repeating: 0, count: n))
        }
        // Out-of-bag sums, per sample in tree order (so the same bits whatever `threads`): which
        // samples a tree drew is replayed from its seed (`TreeBuilder.drawBootstrap`, as `build`
        // draws them), one bit per sample, instead of keeping every tree's
        // out-of-bag list (issue 17: those lists grew with the window, 3 MB at 2,000 samples).
        let m = parameters.slotsPerTree(n), words = (n + 63) / 64
        var drawnBits = [UInt64](repeating: 0, count: parameters.trees * words)
        for t in 0..<parameters.trees {
            var rng = Xoshiro256StarStar(seed: seeds[t])
            TreeBuilder.drawBootstrap(&rng, n: n, m: m) { _, i in drawnBits[t * words + i >> 6] |= 1 << UInt64(i & 63) }
        }
        var sums = [Double](repeating: 0, count: n)
        var counts = [Int](repeating: 0, count: n)
        let chunks = max(1, min(parts, n / 64))
        let flat = FlatForest(trees), bits = drawnBits, d = data.d
        // The samples row-major (each row is read once per out-of-bag tree).
        var rows = [Double](repeating: 0, count: n * d)
        for i in 0..<n { for f in 0..<d { rows[i * d + f] = features[i][f] } }
        let table = rows
        sums.withUnsafeMutableBufferPointer { sumBuffer in
            counts.withUnsafeMutableBufferPointer { countBuffer in
                let out = SharedSums(sums: sumBuffer.baseAddress!, counts: countBuffer.baseAddress!)
                // Tree by tree, each sample's sum takes its trees in tree order (the same
                // additions as sample by sample); the out-of-bag samples of a tree go down it
                // four at a time, branch-free, so their walks overlap.
                let add: @Sendable (Int) -> Void = { chunk in
                    table.withUnsafeBufferPointer { table in
                        let lo = chunk * n / chunks, hi = (chunk + 1) * n / chunks
                        var pending = [Int](repeating: 0, count: hi - lo)
                        for t in 0..<flat.roots.count {
                            var p = 0
                            for i in lo..<hi where bits[t * words + i >> 6] & (UInt64(1) << UInt64(i & 63)) == 0 {
                                pending[p] = i
                                p += 1
                            }
                            var q = 0
                            while q + 4 <= p {
                                let i0 = pending[q], i1 = pending[q + 1], i2 = pending[q + 2], i3 = pending[q + 3]
                                let v = flat.predict4(tree: t, table.baseAddress! + i0 * d, table.baseAddress! + i1 * d,
                                                      table.baseAddress! + i2 * d, table.baseAddress! + i3 * d)
                                out.sums[i0] += v.0; out.sums[i1] += v.1; out.sums[i2] += v.2; out.sums[i3] += v.3
                                q += 4
                            }
                            while q < p {
                                let i = pending[q]
                                out.sums[i] += flat.predict(tree: t, table.baseAddress! + i * d)
                                q += 1
                            }
                            for k in 0..<p { out.counts[pending[k]] += 1 }
                        }
                    }
                }
                if chunks == 1 { add(0) } else { DispatchQueue.concurrentPerform(iterations: chunks, execute: add) }
            }
        }
        let predictions: [Double?] = (0..<n).map { counts[$0] > 0 ? sums[$0] / Double(counts[$0]) : nil }
        return OutOfBagFit(trees: trees, predictions: predictions, counts: counts)
    }
}

/// A forest's trees in one node table, for the out-of-bag predictions (issue 17: the
/// `RegressionTree.predict` calls, five bounds-checked arrays per node, were a tenth of the fits'
/// time). The same comparisons (`x[feature] <= threshold`) and leaf values, so the same
/// predictions bit for bit.
struct FlatForest: @unchecked Sendable {
    /// A node: `feature` is `Int32.min` for a leaf, whose value is in `threshold` and whose
    /// children are itself (`feature & Int32.max` = 0, a valid feature index, is read and
    /// ignored); children are table indices.
    struct Node {
        var threshold: Double
        var feature: Int32
        var left: Int32
        var right: Int32
    }

    /// Table index of each tree's root.
    let roots: [Int]
    let nodes: UnsafeMutableBufferPointer<Node>
    private let owner: Owner

    private final class Owner: @unchecked Sendable {
        let nodes: UnsafeMutableBufferPointer<Node>
        init(_ nodes: UnsafeMutableBufferPointer<Node>) { self.nodes = nodes }
        deinit { nodes.deallocate() }
    }

    init(_ trees: [RegressionTree]) {
        var roots: [Int] = []
        roots.reserveCapacity(trees.count)
        let total = trees.reduce(0) { $0 + $1.feature.count }
        let nodes = UnsafeMutableBufferPointer<Node>.allocate(capacity: max(1, total))
        var next = 0
        for tree in trees {
            roots.append(next)
            let base = next
            for k in tree.feature.indices {
                let leaf = tree.feature[k] < 0
                nodes[next] = Node(threshold: leaf ? tree.value[k] : tree.threshold[k],
                                   feature: leaf ? Int32.min : Int32(tree.feature[k]),
                                   left: Int32(leaf ? next : base + tree.left[k]),
                                   right: Int32(leaf ? next : base + tree.right[k]))
                next += 1
            }
        }
        self.roots = roots
        self.nodes = nodes
        owner = Owner(nodes)
    }

    /// Tree `t`'s leaf values for four rows, their walks interleaved without a branch (a leaf
    /// points to itself, so a walk that reached its leaf stays there until all four have).
    @inline(__always)
    func predict4(tree t: Int, _ x0: UnsafePointer<Double>, _ x1: UnsafePointer<Double>,
                  _ x2: UnsafePointer<Double>, _ x3: UnsafePointer<Double>) -> (Double, Double, Double, Double) {
        let root = roots[t]
        var a = nodes[root], b = a, c = a, d = a
        while a.feature >= 0 || b.feature >= 0 || c.feature >= 0 || d.feature >= 0 {
            a = nodes[Self.next(a, x0)]
            b = nodes[Self.next(b, x1)]
            c = nodes[Self.next(c, x2)]
            d = nodes[Self.next(d, x3)]
        }
        return (a.threshold, b.threshold, c.threshold, d.threshold)
    }

    /// The child of `node` that `x` goes to, computed without a branch.
    @inline(__always)
    static func next(_ node: Node, _ x: UnsafePointer<Double>) -> Int {
        let goesLeft = x[Int(node.feature & Int32.max)] <= node.threshold
        let right = Int32(unsafeBitCast(goesLeft, to: UInt8.self) ^ 1)
        return Int(node.left &+ (node.right &- node.left) &* right)
    }

    /// Tree `t`'s leaf value for the row `x` (every feature of the trees present in it).
    @inline(__always)
    func predict(tree t: Int, _ x: UnsafePointer<Double>) -> Double {
        var node = nodes[roots[t]]
        while node.feature >= 0 {
            node = nodes[Int(x[Int(node.feature)] <= node.threshold ? node.left : node.right)]
        }
        return node.threshold
    }
}

/// Where the parallel out-of-bag chunks write their samples' sums and counts (each chunk its
/// own range of samples; read once `concurrentPerform` has returned).
struct SharedSums: @unchecked Sendable {
    let sums: UnsafeMutablePointer<Double>
    let counts: UnsafeMutablePointer<Int>
}

/// The result slots of parallel parts (the tree builders, the shift search's parts): each part
/// writes only its own slot, and the slots are read once every part has returned
/// (`concurrentPerform` waits for them).
struct SharedSlots<T>: @unchecked Sendable {
    let base: UnsafeMutablePointer<T>
    init(_ buffer: UnsafeMutableBufferPointer<T>) { base = buffer.baseAddress! }
}

/// `count` evenly spaced order statistics of `values` (sorted ascending), at most `count` values:
/// all of `values`, sorted, when there are at most `count`; otherwise the values at ranks
/// round(k·(n − 1)/(count − 1)), k = 0…count − 1, so the smallest and largest are kept.
/// Bounds the size of a model's residual list while keeping its distribution.
public func boundedSortedSample(_ values: [Double], count: Int) -> [Double] {
    let sorted = values.sorted()
    let n = sorted.count
    guard n > count else { return sorted }
    guard count >= 2 else { return count == 1 ? [sorted[n / 2]] : [] }
    return (0..<count).map { k in
        sorted[Int((Double(k) * Double(n - 1) / Double(count - 1)).rounded())]
    }
}

extension OutOfBagFit {
    /// Most residuals a model carries: evenly spaced order statistics of the out-of-bag
    /// residuals (``boundedSortedSample(_:count:)``), enough for the 10 % and 90 % quantiles to
    /// ±0.25 % in rank.
    public static let modelResidualCount = 200

    /// The out-of-bag residuals as log(true / forecast), sorted, bounded to ``modelResidualCount``
    /// values: what a `Model` carries in `residuals`.
    ///
    /// - `targetIsLog` (the predictor's `growth` mode, target ln(n_tot/n_obs), forecast
    ///   n_obs·exp(ŷ)): the residual y − ŷ, which is exactly ln(n_tot / N̂).
    /// - otherwise (`course`, `none`: the target is the factor W of the supplementary count):
    ///   ln(W / Ŵ), both floored at 1e-3 (W = 0 when the cascade did not grow after T_obs).
    /// Non-finite values are left out.
    /// - `shift` (log targets only): a constant added to every prediction first (the model's
    ///   ``medianAREShift(_:lower:upper:threads:)``), with the shifted prediction clamped to
    ///   [`lower`, `upper`] as the predictor does, so the residuals are those of the forecasts made.
    public func logResiduals(_ targets: [Double], targetIsLog: Bool, shift: Double = 0,
                             lower: Double? = nil, upper: Double? = nil) -> [Double] {
        var residuals: [Double] = []
        residuals.reserveCapacity(targets.count)
        for (i, p) in predictions.enumerated() {
            guard let p else { continue }
            let r = targetIsLog ? targets[i] - Self.clamped(p + shift, lower, upper) : log(max(targets[i], 1e-3) / max(p, 1e-3))
            if r.isFinite { residuals.append(r) }
        }
        return boundedSortedSample(residuals, count: Self.modelResidualCount)
    }
}

extension OutOfBagFit {
    /// Step of the grid ``medianAREShift(_:lower:upper:threads:)`` searches.
    public static let shiftStep = 0.002
    /// Largest |c| ``medianAREShift(_:lower:upper:threads:)`` considers.
    public static let shiftRange = 1.0

    static func clamped(_ y: Double, _ lower: Double?, _ upper: Double?) -> Double {
        var y = y
        if let lower, y < lower { y = lower }
        if let upper, y > upper { y = upper }
        return y
    }

    /// The log-shift c that minimises the median ARE of the out-of-bag forecasts when the target
    /// is a log growth y = ln(N/n_obs) and the forecast is n_obs·exp(clamp(ŷ + c)):
    /// ARE_i(c) = |exp(clamp(ŷ_i + c) − y_i) − 1|, clamp to [`lower`, `upper`] (the model's
    /// `w_min`, `w_max`, as the predictor applies them).
    ///
    /// A forest's leaf means are unbiased for y, but the median of |e^(ŷ−y) − 1| is lowest for a
    /// prediction below the conditional mean (ARE is asymmetric: over-forecasts cost more than
    /// under-forecasts of the same log size), so a constant shift chosen on held-out (out-of-bag)
    /// predictions lowers it. c is searched on the grid k·``shiftStep``, |c| ≤ ``shiftRange``
    /// (deterministic); ties go to the smallest |c|, then the smaller c. The median of an even
    /// count is the mean of the two middle values.
    ///
    /// - Parameter threads: parts of the grid searched at once; the result does not depend on it.
    /// - Returns: c, 0 when no sample has an out-of-bag prediction.
    public func medianAREShift(_ targets: [Double], lower: Double? = nil, upper: Double? = nil,
                               threads: Int = 1) -> Double {
        var pairs: [(Double, Double)] = []
        for (i, p) in predictions.enumerated() {
            if let p, p.isFinite, targets[i].isFinite { pairs.append((p, targets[i])) }
        }
        guard !pairs.isEmpty else { return 0 }
        let steps = Int((Self.shiftRange / Self.shiftStep).rounded())
        let candidates = 2 * steps + 1
        let n = pairs.count
        let shared = pairs
        // The shifts in the order 0, +step, −step, +2 step, ...: the chosen one is the smallest
        // (median, |c|, c). `threads` parts search the shifts k ≡ part (mod parts) at once (issue
        // 17: the search ran alone while the pipeline waited for the model), each keeping its
        // smallest; the parts' are then compared in the same order, so the result does not
        // depend on `threads`.
        let parts = max(1, min(threads, candidates))
        let results = UnsafeMutableBufferPointer<(median: Double, shift: Double)?>.allocate(capacity: parts)
        defer { results.deallocate() }
        let out = SharedSlots(results)
        let search: @Sendable (Int) -> Void = { part in
            var best: (median: Double, shift: Double)?
            var errors = [Double](repeating: 0, count: n)
            var k = part
            while k < candidates {
                defer { k += parts }
                let c = k == 0 ? 0 : (k % 2 == 1 ? 1.0 : -1.0) * Double((k + 1) / 2) * Self.shiftStep
                // Errors at or below the part's best median: a shift with fewer than (n + 1)/2
                // of them has a larger median (odd n: the middle error is above it; even n: both
                // middle ones are, and so is their mean), so it cannot win and its median is not
                // computed (issue 17: most of the 1,001 shifts; the same shift is chosen).
                let bound = best?.median ?? .infinity
                if bound.isFinite {
                    // e = |exp(z) − 1| <= bound exactly when z is in [log(1 − bound), log(1 +
                    // bound)] (no lower end for bound >= 1), so z is compared with those ends
                    // instead of taking its exp; only a z within 1e-9 of an end (where the
                    // rounding of exp or log could decide) gets its e computed. The same count.
                    let zHi = log(1 + bound), zLo = bound < 1 ? log(1 - bound) : -Double.infinity
                    let margin = 1e-9
                    var atMostBest = 0
                    for (p, y) in shared {
                        let z = Self.clamped(p + c, lower, upper) - y
                        if z > zLo + margin && z < zHi - margin {
                            atMostBest += 1
                        } else if z >= zLo - margin && z <= zHi + margin, abs(exp(z) - 1) <= bound {
                            atMostBest += 1
                        }
                    }
                    guard atMostBest >= (n + 1) / 2 else { continue }
                }
                for (j, (p, y)) in shared.enumerated() {
                    errors[j] = abs(exp(Self.clamped(p + c, lower, upper) - y) - 1)
                }
                // The median by selection (O(n)) rather than a sort: the same value.
                let median = errors.withUnsafeMutableBufferPointer { selectMedian($0) }
                if best == nil || Self.precedes((median, c), best!) { best = (median, c) }
            }
            (out.base + part).initialize(to: best)
        }
        if parts == 1 { search(0) } else { DispatchQueue.concurrentPerform(iterations: parts, execute: search) }
        var best: (median: Double, shift: Double)?
        for part in 0..<parts {
            guard let b = (results.baseAddress! + part).move() else { continue }
            if best == nil || Self.precedes(b, best!) { best = b }
        }
        return best?.shift ?? 0
    }

    /// Whether `a` comes before `b` in the order (median, |c|, c).
    static func precedes(_ a: (median: Double, shift: Double), _ b: (median: Double, shift: Double)) -> Bool {
        if a.median != b.median { return a.median < b.median }
        if abs(a.shift) != abs(b.shift) { return abs(a.shift) < abs(b.shift) }
        return a.shift < b.shift
    }
}
