// The forest against a plain reference: CART grown exactly as `ForestParameters` and
// `RandomForest.fit` document it, sorting each node's samples for every feature (no presorted
// orders, no ranks, no partitions, no SIMD), on data full of ties (repeated values, -0.0 beside
// 0.0, a constant feature). The fast builder must give the same trees and the same out-of-bag
// predictions, bit for bit.
import Forest
import Testing
import TweetoscopeCore

@Suite struct ReferenceForestTests {
    /// 150 samples of 5 features: few distinct values (f0, f4), signed zeros (f1), continuous
    /// (f2), constant (f3); the targets a step, a slope and seeded noise.
    static let data: (features: [[Double]], targets: [Double]) = {
        var rng = Xoshiro256StarStar(seed: 77)
        var features: [[Double]] = [], targets: [Double] = []
        for i in 0..<150 {
            let f0 = Double(i % 7)
            let f1: Double = i % 3 == 0 ? 1 : (i % 2 == 0 ? 0.0 : -0.0)
            let f2 = Double(rng.below(1_000_000)) / 997
            let f4 = Double(i % 13) * 0.5
            features.append([f0, f1, f2, 4.25, f4])
            targets.append((f0 > 3 ? 10 : 0) + f4 + (f1 > 0 ? 3 : 0) + Double(rng.below(100)) / 50)
        }
        return (features, targets)
    }()

    /// One tree as documented, and the samples its bootstrap slots drew.
    static func referenceTree(_ x: [[Double]], _ y: [Double], _ p: ForestParameters,
                              _ rng: inout Xoshiro256StarStar) -> (RegressionTree, [Int]) {
        let n = x.count, d = x[0].count, m = p.slotsPerTree(n)
        let sampleOf = p.bootstrap ? (0..<m).map { _ in rng.below(n) } : Array(0..<m)
        let tried = p.featuresPerSplit(d)
        // The node's slots sorted by feature f: by value, then sample, then slot.
        func sorted(_ slots: [Int], _ f: Int) -> [Int] {
            slots.sorted { a, b in
                let va = x[sampleOf[a]][f], vb = x[sampleOf[b]][f]
                if va != vb { return va < vb }
                if sampleOf[a] != sampleOf[b] { return sampleOf[a] < sampleOf[b] }
                return a < b
            }
        }
        var feature = [-1], threshold = [0.0], left = [-1], right = [-1], value = [0.0]
        var stack: [(node: Int, slots: [Int], depth: Int)] = [(0, Array(0..<m), 0)]
        while let (node, slots, depth) = stack.popLast() {
            let order0 = sorted(slots, 0)
            let count = slots.count
            var sum = 0.0
            for k in order0 { sum += y[sampleOf[k]] }
            let mean = sum / Double(count)
            value[node] = mean
            guard depth < p.maxDepth, count >= 2 * p.minSamplesLeaf else { continue }
            var ss = 0.0
            for k in order0 {
                let r = y[sampleOf[k]] - mean
                ss += r * r
            }
            guard ss > 0 else { continue }
            var order = Array(0..<d)
            for f in stride(from: d - 1, to: 0, by: -1) { order.swapAt(f, rng.below(f + 1)) }
            var chosen: [Int] = []
            for f in order where chosen.count < tried {
                let values = slots.map { x[sampleOf[$0]][f] }
                if values.min()! < values.max()! { chosen.append(f) }
            }
            var best: (feature: Int, threshold: Double)?
            var bestGain = ss * 1e-12
            let total = Double(count)
            for f in chosen {
                let o = sorted(slots, f)
                var s = 0.0
                for k in 0..<(count - p.minSamplesLeaf) {
                    s += y[sampleOf[o[k]]] - mean
                    guard k + 1 >= p.minSamplesLeaf else { continue }
                    let a = x[sampleOf[o[k]]][f], b = x[sampleOf[o[k + 1]]][f]
                    let dl = Double(k + 1)
                    let gain = s * s * total / (dl * (total - dl))
                    guard a < b, gain > bestGain else { continue }
                    bestGain = gain
                    var t = a + (b - a) / 2
                    if !(t < b) { t = a }
                    best = (f, t)
                }
            }
            guard let best else { continue }
            let l = feature.count, r = l + 1
            for _ in 0..<2 {
                feature.append(-1); threshold.append(0); left.append(-1); right.append(-1); value.append(0)
            }
            feature[node] = best.feature
            threshold[node] = best.threshold
            left[node] = l
            right[node] = r
            stack.append((r, slots.filter { !(x[sampleOf[$0]][best.feature] <= best.threshold) }, depth + 1))
            stack.append((l, slots.filter { x[sampleOf[$0]][best.feature] <= best.threshold }, depth + 1))
        }
        return (RegressionTree(feature: feature, threshold: threshold, left: left, right: right, value: value), sampleOf)
    }

    static let cases: [ForestParameters] = [
        ForestParameters(trees: 12, maxDepth: 8, minSamplesLeaf: 2, maxFeatures: 0.6, seed: 1),
        ForestParameters(trees: 12, maxDepth: 16, minSamplesLeaf: 3, maxFeatures: 0.8, treeSamples: 60, seed: 2),
        ForestParameters(trees: 6, maxDepth: 30, minSamplesLeaf: 1, maxFeatures: 1, seed: 3),
        ForestParameters(trees: 4, maxDepth: 5, minSamplesLeaf: 4, maxFeatures: 0.4, bootstrap: false, seed: 4),
    ]

    @Test(arguments: cases)
    func sameTreesAndOutOfBagPredictionsAsTheReference(p: ForestParameters) throws {
        let (x, y) = Self.data
        var seeds = SplitMix64(seed: p.seed)
        var expected: [RegressionTree] = [], drawn: [Set<Int>] = []
        for _ in 0..<p.trees {
            var rng = Xoshiro256StarStar(seed: seeds.next())
            let (tree, samples) = Self.referenceTree(x, y, p, &rng)
            expected.append(tree)
            drawn.append(p.bootstrap ? Set(samples) : Set(0..<x.count))
        }
        #expect(expected.contains { $0.feature.count >= 9 }, "the reference trees split")
        #expect(try RandomForest.fit(features: x, targets: y, parameters: p) == expected)
        let oob = try RandomForest.fitWithOutOfBag(features: x, targets: y, parameters: p, threads: 2)
        #expect(oob.trees == expected)
        for i in x.indices {
            var sum = 0.0, count = 0
            for t in expected.indices where !drawn[t].contains(i) {
                sum += expected[t].predict(x[i])
                count += 1
            }
            #expect(oob.counts[i] == count)
            #expect(oob.predictions[i] == (count > 0 ? sum / Double(count) : nil), "sample \(i)")
        }
    }
}
