// Out-of-bag predictions of a random forest (Breiman 2001, "Random Forests", §3.1; Breiman 1996,
// "Out-of-bag estimation"): each training sample is predicted by the trees whose bootstrap sample
// did not draw it, which gives held-out residuals for free, without a separate validation set.
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
    public static func fitWithOutOfBag(features: [[Double]], targets: [Double],
                                       parameters: ForestParameters = ForestParameters()) throws(ForestError) -> OutOfBagFit {
        try parameters.validate()
        let data = try Columns(features: features, targets: targets)
        var seeds = SplitMix64(seed: parameters.seed)
        var trees: [RegressionTree] = []
        trees.reserveCapacity(parameters.trees)
        var builder = TreeBuilder(data: data, parameters: parameters)
        var sums = [Double](repeating: 0, count: data.n)
        var counts = [Int](repeating: 0, count: data.n)
        for _ in 0..<parameters.trees {
            var rng = Xoshiro256StarStar(seed: seeds.next())
            let tree = builder.build(&rng)
            trees.append(tree)
            guard parameters.bootstrap else { continue }
            // `start[i + 1] − start[i]` is the number of times sample i was drawn by this tree.
            for i in 0..<data.n where builder.start[i + 1] == builder.start[i] {
                sums[i] += tree.predict(features[i])
                counts[i] += 1
            }
        }
        let predictions: [Double?] = (0..<data.n).map { counts[$0] > 0 ? sums[$0] / Double(counts[$0]) : nil }
        return OutOfBagFit(trees: trees, predictions: predictions, counts: counts)
    }
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
    public func logResiduals(_ targets: [Double], targetIsLog: Bool) -> [Double] {
        var residuals: [Double] = []
        residuals.reserveCapacity(targets.count)
        for (i, p) in predictions.enumerated() {
            guard let p else { continue }
            let r = targetIsLog ? targets[i] - p : log(max(targets[i], 1e-3) / max(p, 1e-3))
            if r.isFinite { residuals.append(r) }
        }
        return boundedSortedSample(residuals, count: Self.modelResidualCount)
    }
}
