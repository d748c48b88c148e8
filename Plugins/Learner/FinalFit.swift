// The order of the learner's `final_fit`.

/// The samples `(x, y, growth)` sorted by X (lexicographically), then W: the order of the
/// `final_fit`, so that its model does not depend on the samples' arrival order.
func sortedSamples(_ samples: ([[Double]], [Double], [Double])) -> ([[Double]], [Double], [Double]) {
    let (x, y, g) = samples
    let order = x.indices.sorted { a, b in
        for (u, v) in zip(x[a], x[b]) where u != v { return u < v }
        if x[a].count != x[b].count { return x[a].count < x[b].count }
        return y[a] < y[b]
    }
    return (order.map { x[$0] }, order.map { y[$0] }, order.map { g[$0] })
}
