// Tests of the random forest. Expected trees and values were worked out by hand from the CART
// rules (squared-error reduction, midpoint thresholds, x <= threshold goes left); the generator
// reference values come from the published SplitMix64 / xoshiro256** algorithms run in Python.
import Forest
import Testing
import TweetoscopeCore

@Suite struct ForestRandomTests {
    /// SplitMix64 from seed 0: the reference sequence (e220a8397b1dcdaf, ...).
    @Test func splitMixReferenceValues() {
        var g = SplitMix64(seed: 0)
        #expect(g.next() == 0xE220_A839_7B1D_CDAF)
        #expect(g.next() == 0x6E78_9E6A_A1B9_65F4)
        #expect(g.next() == 0x06C4_5D18_8009_454F)
    }

    /// xoshiro256** seeded with four SplitMix64(42) outputs (computed in Python from the
    /// authors' C code).
    @Test func xoshiroReferenceValues() {
        var g = Xoshiro256StarStar(seed: 42)
        #expect(g.next() == 0x1578_0B2E_0C2E_C716)
        #expect(g.next() == 0x6104_D986_6D11_3A7E)
        #expect(g.next() == 0xAE17_5332_39E4_99A1)
    }

    @Test func belowStaysInRangeAndCoversIt() {
        var g = Xoshiro256StarStar(seed: 1)
        var seen = Set<Int>()
        for _ in 0..<1000 {
            let v = g.below(7)
            #expect((0..<7).contains(v))
            seen.insert(v)
        }
        #expect(seen.count == 7)
    }
}

@Suite struct ForestTests {
    static let single = ForestParameters(trees: 1, maxDepth: 2, minSamplesLeaf: 1, maxFeatures: 1, bootstrap: false, seed: 0)

    /// x = 1, 2, 3, 4 and y = 1, 1, 5, 7. Root (mean 3.5): splits after 1 | 2 | 3 leave squared
    /// errors 168/9, 2 and 96/9, so the root splits at 2.5. Left {1, 1} is constant (leaf 1);
    /// right {5, 7} splits at 3.5 into leaves 5 and 7. Nodes are numbered root, left, right,
    /// then the right node's children.
    @Test func handWorkedTree() throws {
        let trees = try RandomForest.fit(features: [[1], [2], [3], [4]], targets: [1, 1, 5, 7], parameters: Self.single)
        #expect(trees == [RegressionTree(feature: [0, -1, 0, -1, -1], threshold: [2.5, 0, 3.5, 0, 0],
                                         left: [1, -1, 3, -1, -1], right: [2, -1, 4, -1, -1],
                                         value: [3.5, 1, 6, 5, 7])])
        #expect(RandomForest.predict(trees, [2.5]) == 1)
        #expect(RandomForest.predict(trees, [3.2]) == 5)
        #expect(RandomForest.predict(trees, [100]) == 7)
    }

    /// minSamplesLeaf 2: only the split after the second sample is allowed; its children have
    /// 2 < 2·2 samples and stay leaves.
    @Test func minSamplesLeafIsRespected() throws {
        var p = Self.single
        p.minSamplesLeaf = 2
        let trees = try RandomForest.fit(features: [[1], [2], [3], [4]], targets: [1, 1, 5, 7], parameters: p)
        #expect(trees == [RegressionTree(feature: [0, -1, -1], threshold: [2.5, 0, 0], left: [1, -1, -1],
                                         right: [2, -1, -1], value: [3.5, 1, 6])])
    }

    /// maxDepth 1: a stump.
    @Test func maxDepthIsRespected() throws {
        var p = Self.single
        p.maxDepth = 1
        let trees = try RandomForest.fit(features: [[1], [2], [3], [4]], targets: [1, 1, 5, 7], parameters: p)
        #expect(trees[0].value == [3.5, 1, 6])
    }

    /// A step function y = 0 for x < 50, 10 for x >= 50 on x = 0...99. In every bootstrap sample
    /// the only split with no error left is between the largest x < 50 and the smallest x >= 50
    /// drawn, so every tree's root splits there and both sides are leaves: the forest is exact
    /// away from the step (a bootstrap sample missing all of 40...49 or 50...59 is very unlikely).
    @Test(arguments: [UInt64(0), 1, 12345])
    func stepFunctionIsLearnedExactly(seed: UInt64) throws {
        let x = (0..<100).map { [Double($0)] }
        let y = (0..<100).map { $0 < 50 ? 0.0 : 10.0 }
        let trees = try RandomForest.fit(features: x, targets: y, parameters: ForestParameters(seed: seed))
        #expect(trees.count == 100)
        for t in trees {
            #expect(t.feature[0] == 0)
            #expect(t.threshold[0] > 40 && t.threshold[0] < 60)
            #expect(t.value.count == 3)
        }
        #expect(RandomForest.predict(trees, [10]) == 0)
        #expect(RandomForest.predict(trees, [40]) == 0)
        #expect(RandomForest.predict(trees, [60]) == 10)
        #expect(RandomForest.predict(trees, [90]) == 10)
    }

    /// Two features: the step on feature 1, noise on feature 0. With every feature tried, the
    /// root of every tree picks feature 1.
    @Test func informativeFeatureIsChosen() throws {
        let x = (0..<200).map { i in [Double((i * 37) % 101), Double(i)] }
        let y = (0..<200).map { $0 < 120 ? -3.0 : 4.0 }
        let trees = try RandomForest.fit(features: x, targets: y, parameters: ForestParameters(trees: 20, maxFeatures: 1, seed: 3))
        #expect(trees.allSatisfy { $0.feature[0] == 1 })
        #expect(RandomForest.predict(trees, [50, 10]) == -3)
        #expect(RandomForest.predict(trees, [50, 190]) == 4)
    }

    /// With feature subsampling the noise feature is sometimes tried alone at the root, but the
    /// forest still separates the two levels (each tree ends in pure leaves within depth 12).
    @Test func subsampledForestStillLearnsTheStep() throws {
        let x = (0..<200).map { i in [Double((i * 37) % 101), Double(i)] }
        let y = (0..<200).map { $0 < 120 ? -3.0 : 4.0 }
        let trees = try RandomForest.fit(features: x, targets: y,
                                         parameters: ForestParameters(trees: 50, maxDepth: 12, minSamplesLeaf: 1, maxFeatures: 0.5, seed: 9))
        #expect(Set(trees.map { $0.feature[0] }) == [0, 1])
        let low = try #require(RandomForest.predict(trees, [50, 10]))
        let high = try #require(RandomForest.predict(trees, [50, 190]))
        #expect(abs(low + 3) < 0.5 && abs(high - 4) < 0.5)
    }

    /// One tree without bootstrap, leaves of one sample and enough depth interpolates the data.
    @Test func fullTreeFitsTrainingData() throws {
        let x = (0..<64).map { [Double($0), Double(($0 * 13) % 64)] }
        let y = (0..<64).map { Double(($0 * $0) % 17) }
        let trees = try RandomForest.fit(features: x, targets: y, parameters: ForestParameters(
            trees: 1, maxDepth: 64, minSamplesLeaf: 1, maxFeatures: 1, bootstrap: false))
        for i in 0..<64 { #expect(RandomForest.predict(trees, x[i]) == y[i]) }
    }

    @Test func sameSeedSameForestOtherSeedOtherForest() throws {
        let x: [[Double]] = (0..<300).map { (i: Int) -> [Double] in [Double(i % 17), Double((i * 7) % 23), Double(i) / 3] }
        let y: [Double] = x.map { (r: [Double]) -> Double in
            let step: Double = r[1] > 11 ? 5 : 0
            return r[0] * 2 + step + r[2] / 50
        }
        let a = try RandomForest.fit(features: x, targets: y, parameters: ForestParameters(trees: 30, seed: 77))
        let b = try RandomForest.fit(features: x, targets: y, parameters: ForestParameters(trees: 30, seed: 77))
        let c = try RandomForest.fit(features: x, targets: y, parameters: ForestParameters(trees: 30, seed: 78))
        #expect(a == b)
        #expect(a != c)
    }

    @Test func constantTargetsGiveSingleLeaves() throws {
        let trees = try RandomForest.fit(features: [[1], [2], [3], [4], [5], [6], [7], [8], [9], [10], [11]],
                                         targets: Array(repeating: 2.5, count: 11), parameters: ForestParameters(trees: 3))
        #expect(trees.allSatisfy { $0.feature == [-1] && $0.value == [2.5] })
    }

    @Test func invalidInputIsRejected() {
        #expect(throws: ForestError.noSamples) { try RandomForest.fit(features: [], targets: []) }
        #expect(throws: ForestError.lengthMismatch(features: 2, targets: 1)) {
            try RandomForest.fit(features: [[1], [2]], targets: [1])
        }
        #expect(throws: ForestError.raggedRow(row: 1)) { try RandomForest.fit(features: [[1], [2, 3]], targets: [1, 2]) }
        #expect(throws: ForestError.nonFinite(row: 1)) { try RandomForest.fit(features: [[1], [.nan]], targets: [1, 2]) }
        #expect(throws: ForestError.nonFinite(row: 0)) { try RandomForest.fit(features: [[1], [2]], targets: [.infinity, 2]) }
        for p in [ForestParameters(trees: 0), ForestParameters(maxDepth: 0), ForestParameters(minSamplesLeaf: 0),
                  ForestParameters(maxFeatures: 0), ForestParameters(maxFeatures: 1.5)] {
            #expect(throws: ForestError.self) { try RandomForest.fit(features: [[1]], targets: [1], parameters: p) }
        }
    }

    @Test func featuresPerSplit() {
        #expect(ForestParameters(maxFeatures: 0.8).featuresPerSplit(5) == 4)
        #expect(ForestParameters(maxFeatures: 0.8).featuresPerSplit(3) == 3)
        #expect(ForestParameters(maxFeatures: 0.5).featuresPerSplit(3) == 2)
        #expect(ForestParameters(maxFeatures: 0.01).featuresPerSplit(3) == 1)
    }

    /// A fitted forest survives the JSON wire format unchanged, and so do its predictions.
    @Test func modelJSONRoundTrip() throws {
        let x: [[Double]] = (0..<120).map { (i: Int) -> [Double] in
            [Double(i % 11) * 0.1, Double(i) * 1e-5, Double((i * 7) % 13) + 0.25]
        }
        let y: [Double] = x.map { (r: [Double]) -> Double in r[0] * 3 - r[2] + 1e-7 * r[1] }
        let trees = try RandomForest.fit(features: x, targets: y, parameters: ForestParameters(trees: 7, seed: 5))
        let model = Model(tObs: 600, version: 3, mode: "growth", samples: 120, trees: trees)
        let bytes = WireFormat.encode(.model(model))
        let decoded = try WireFormat.decode(bytes)
        #expect(decoded == .model(model))
        guard case .model(let back) = decoded else { return }
        for row in x { #expect(back.predict(row) == model.predict(row)) }
        #expect(WireFormat.key(.model(model)) == "600")
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("{\"T_obs\":600,\"mode\":\"growth\",\"samples\":120,\"trees\":[{"))
        #expect(text.hasSuffix("\"type\":\"model\",\"version\":3}"))
    }
}
