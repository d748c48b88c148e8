// Out-of-bag predictions (Breiman 2001 §3.1) and the bounded residual list a model carries.
import Forest
import Glibc
import Testing
import TweetoscopeCore

@Suite struct OutOfBagTests {
    /// 60 samples, y = x₀ + noise-free step on x₁.
    static let features: [[Double]] = (0..<60).map { [Double($0), Double($0 % 7)] }
    static let targets: [Double] = (0..<60).map { Double($0) + ($0 % 7 > 3 ? 10 : 0) }

    /// The trees are those of `fit` for the same samples, parameters and seed, bit for bit.
    @Test func sameTreesAsFit() throws {
        let p = ForestParameters(trees: 25, maxDepth: 6, minSamplesLeaf: 2, seed: 9)
        let plain = try RandomForest.fit(features: Self.features, targets: Self.targets, parameters: p)
        let oob = try RandomForest.fitWithOutOfBag(features: Self.features, targets: Self.targets, parameters: p)
        #expect(oob.trees == plain)
    }

    /// `treeSamples` m = 15 of n = 60 (scikit-learn's max_samples): a sample is out of bag for a
    /// tree with probability (1 − 1/60)^15 = 0.7772; over 400 trees × 60 samples the share is
    /// within 0.02 of it, and a tree grown to single-sample leaves has at most 15 leaves (one per
    /// distinct drawn sample at most).
    @Test func treeSamplesBoundEachTree() throws {
        let p = ForestParameters(trees: 400, maxDepth: 30, minSamplesLeaf: 1, maxFeatures: 1, treeSamples: 15, seed: 3)
        let oob = try RandomForest.fitWithOutOfBag(features: Self.features, targets: Self.targets, parameters: p)
        let share = Double(oob.counts.reduce(0, +)) / Double(400 * 60)
        #expect(abs(share - 0.7772) < 0.02, "share \(share)")
        #expect(oob.trees.allSatisfy { tree in tree.feature.filter { $0 < 0 }.count <= 15 })
        #expect(oob.trees.contains { tree in tree.feature.filter { $0 < 0 }.count >= 10 })
        #expect(ForestParameters(treeSamples: 15).slotsPerTree(60) == 15)
        #expect(ForestParameters(bootstrap: false, treeSamples: 15).slotsPerTree(60) == 60)
        #expect(throws: ForestError.invalidParameter("treeSamples must be >= 0")) {
            try ForestParameters(treeSamples: -1).validate()
        }
    }

    /// `treeSamples` >= n draws n samples per tree, as 0 does: the same trees, bit for bit.
    @Test func treeSamplesAtLeastNChangesNothing() throws {
        let p = ForestParameters(trees: 25, maxDepth: 6, minSamplesLeaf: 2, seed: 9)
        let plain = try RandomForest.fit(features: Self.features, targets: Self.targets, parameters: p)
        for m in [60, 61, 1000] {
            var capped = p
            capped.treeSamples = m
            #expect(try RandomForest.fit(features: Self.features, targets: Self.targets, parameters: capped) == plain)
        }
    }

    /// A sample is out of bag for a tree with probability (1 − 1/n)^n = (59/60)^60 = 0.3648 (n = 60);
    /// over 400 trees × 60 samples the share is within 0.02 of it.
    @Test func outOfBagShareIsAboutOneOverE() throws {
        let p = ForestParameters(trees: 400, maxDepth: 4, minSamplesLeaf: 2, seed: 3)
        let oob = try RandomForest.fitWithOutOfBag(features: Self.features, targets: Self.targets, parameters: p)
        let share = Double(oob.counts.reduce(0, +)) / Double(400 * 60)
        #expect(abs(share - 0.3648) < 0.02, "share \(share)")
        #expect(oob.predictions.allSatisfy { $0 != nil })
    }

    /// With constant targets c every tree is one leaf c, so every out-of-bag prediction is c
    /// and every residual 0; without bootstrap no sample is ever out of bag.
    @Test func constantTargetsAndNoBootstrap() throws {
        let c = 2.5
        let oob = try RandomForest.fitWithOutOfBag(features: Self.features, targets: Array(repeating: c, count: 60),
                                                   parameters: ForestParameters(trees: 30, seed: 1))
        #expect(oob.predictions.allSatisfy { $0 == c })
        #expect(oob.logResiduals(Array(repeating: c, count: 60), targetIsLog: true).allSatisfy { $0 == 0 })
        let none = try RandomForest.fitWithOutOfBag(features: Self.features, targets: Self.targets,
                                                    parameters: ForestParameters(trees: 5, bootstrap: false))
        #expect(none.predictions.allSatisfy { $0 == nil } && none.counts == Array(repeating: 0, count: 60))
    }

    /// An out-of-bag prediction is the mean of the trees that did not draw the sample: with one
    /// tree, it is that tree's prediction for the samples it did not draw, nil for the others.
    @Test func singleTreeOutOfBagIsTheTreesPrediction() throws {
        let oob = try RandomForest.fitWithOutOfBag(features: Self.features, targets: Self.targets,
                                                   parameters: ForestParameters(trees: 1, maxDepth: 3, minSamplesLeaf: 1, seed: 5))
        let tree = oob.trees[0]
        var outside = 0
        for i in 0..<60 {
            if oob.counts[i] == 1 {
                outside += 1
                #expect(oob.predictions[i] == tree.predict(Self.features[i]))
            } else {
                #expect(oob.predictions[i] == nil)
            }
        }
        #expect(outside > 0 && outside < 60)
    }

    /// Course-type targets: ln(W/Ŵ) with both floored at 1e-3: W = 0 against Ŵ = 0.5 gives
    /// ln(0.001/0.5) = −6.2146080984221914.
    @Test func courseResidualsAreLogRatios() {
        let fit = OutOfBagFit(trees: [], predictions: [0.5, 2, nil], counts: [1, 1, 0])
        let r = fit.logResiduals([0, 4, 1], targetIsLog: false)
        #expect(r.count == 2)
        #expect(abs(r[0] - -6.2146080984221914) < 1e-12 && abs(r[1] - 0.6931471805599453) < 1e-12)
    }

    /// 1000 values 0…999 bounded to 200: ranks round(k·999/199), so 0, 5 (5.02), 10 (10.04), …, 999.
    @Test func boundedSampleKeepsEvenlySpacedOrderStatistics() {
        let values = (0..<1000).reversed().map(Double.init)
        let b = boundedSortedSample(values, count: 200)
        #expect(b.count == 200)
        #expect(b[0] == 0 && b[1] == 5 && b[2] == 10 && b[199] == 999)
        #expect(boundedSortedSample([3, 1, 2], count: 200) == [1, 2, 3])
    }

    /// Out-of-bag predictions 0, 0, 0 of log targets 0, 0.2, 1: with shift c the AREs are
    /// |e^c − 1|, |e^(c−0.2) − 1|, |e^(c−1) − 1|; the third stays above 0.5 for c ≤ 0.2, so the
    /// median is the larger of the first two, lowest where they cross: e^c − 1 = 1 − e^(c−0.2),
    /// c = ln(2/(1 + e^−0.2)) = 0.0950083. On the 0.002 grid: c = 0.094 gives 1 − e^−0.106 =
    /// 0.1005754, c = 0.096 gives e^0.096 − 1 = 0.1007591: 0.094 wins.
    @Test func medianAREShiftMinimisesTheMedian() {
        let fit = OutOfBagFit(trees: [], predictions: [0, 0, nil, 0], counts: [1, 1, 0, 1])
        let targets = [0, 0.2, 7, 1.0]
        #expect(abs(fit.medianAREShift(targets) - 0.094) < 1e-12)
        // Residuals of the shifted forecasts: y − (ŷ + c) = −0.094, 0.106, 0.906.
        let r = fit.logResiduals(targets, targetIsLog: true, shift: 0.094)
        #expect(r.count == 3 && abs(r[0] + 0.094) < 1e-12 && abs(r[1] - 0.106) < 1e-12 && abs(r[2] - 0.906) < 1e-12)
        // With predictions clamped below at 0.3 (w_min), every c ≤ 0.3 gives the same median
        // e^0.3 − 1 = 0.3498588 and a larger c a larger one: the tie goes to c = 0.
        #expect(fit.medianAREShift(targets, lower: 0.3) == 0)
        // No out-of-bag prediction: no shift.
        #expect(OutOfBagFit(trees: [], predictions: [nil], counts: [0]).medianAREShift([1]) == 0)
    }

    /// Growing the trees on several threads (issue 17) gives the same forest, out-of-bag
    /// predictions and counts as one thread: each tree has its own seeded generator and the
    /// out-of-bag sums are added in tree order. 15 features with ties, 301 samples, odd tree
    /// counts so the threads get unequal shares.
    @Test func threadsGiveTheSameFit() throws {
        var g = Xoshiro256StarStar(seed: 77)
        let x: [[Double]] = (0..<301).map { _ in (0..<15).map { _ in Double(g.below(40)) / 4 } }
        let y: [Double] = x.map { $0[0] * 0.3 + ($0[3] > 5 ? 2 : 0) + $0[7] * $0[7] / 50 }
        let p = ForestParameters(trees: 37, maxDepth: 16, minSamplesLeaf: 3, maxFeatures: 0.8, seed: 4)
        let one = try RandomForest.fitWithOutOfBag(features: x, targets: y, parameters: p, threads: 1)
        #expect(one.trees == (try RandomForest.fit(features: x, targets: y, parameters: p)))
        for threads in [2, 3, 8, 64] {
            let many = try RandomForest.fitWithOutOfBag(features: x, targets: y, parameters: p, threads: threads)
            #expect(many.trees == one.trees)
            #expect(many.counts == one.counts)
            #expect(many.predictions == one.predictions)
        }
    }

    /// Core's `selectMedian` (the shift search's and the estimator's median mark) equals the
    /// median of a full sort: odd and even counts, ties, counts around quickselect's small-range
    /// cut-off (16).
    @Test func selectMedianEqualsTheSortedMedian() {
        var g = Xoshiro256StarStar(seed: 11)
        for n in [1, 2, 3, 4, 15, 16, 17, 32, 33, 200, 1001] {
            for range in [3, 1000] {
                var values: [Double] = (0..<n).map { _ in Double(g.below(range)) / 7 }
                let sorted = values.sorted()
                let expected = n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
                #expect(values.withUnsafeMutableBufferPointer { selectMedian($0) } == expected)
            }
        }
    }

    /// The median of the shift search is found by selection, not sorting: the shift equals a
    /// brute-force search written here with a full sort (odd and even counts, ties, clamping).
    @Test func medianAREShiftMatchesASortedSearch() {
        var g = Xoshiro256StarStar(seed: 5)
        // Values on a grid (many equal errors: ties), then continuous ones (n = 333, 334), whose
        // errors fall anywhere relative to the pruning bound.
        for n in [1, 2, 3, 8, 51, 200, 333, 334] {
            let continuous = n > 300
            let predictions: [Double?] = (0..<n).map { _ in
                continuous ? Double(g.next() >> 11) / Double(1 << 53) * 4 - 1 : Double(g.below(200)) / 100
            }
            let targets: [Double] = (0..<n).map { _ in
                continuous ? Double(g.next() >> 11) / Double(1 << 53) * 3 : Double(g.below(300)) / 100
            }
            let fit = OutOfBagFit(trees: [], predictions: predictions, counts: Array(repeating: 1, count: n))
            for (lo, hi) in [(nil, nil), (0.5, 2.5)] as [(Double?, Double?)] {
                var best = 0.0, bestMedian = Double.infinity
                for k in 0...1000 {
                    let c = k == 0 ? 0 : (k % 2 == 1 ? 1.0 : -1.0) * Double((k + 1) / 2) * 0.002
                    let e = (0..<n).map { i -> Double in
                        var v = predictions[i]! + c
                        if let lo, v < lo { v = lo }
                        if let hi, v > hi { v = hi }
                        return abs(exp(v - targets[i]) - 1)
                    }.sorted()
                    let m = n % 2 == 1 ? e[n / 2] : (e[n / 2 - 1] + e[n / 2]) / 2
                    if m < bestMedian || (m == bestMedian && abs(c) == abs(best) && c < best) { bestMedian = m; best = c }
                }
                #expect(fit.medianAREShift(targets, lower: lo, upper: hi) == best)
                // Split over threads (each part its own pruning bound), the same shift.
                for threads in [2, 3, 7] {
                    #expect(fit.medianAREShift(targets, lower: lo, upper: hi, threads: threads) == best)
                }
            }
        }
    }
}
