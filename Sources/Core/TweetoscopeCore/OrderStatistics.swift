// Order statistics by selection, shared by the estimator (median mark of a partial cascade) and
// the forest (median ARE of the out-of-bag predictions): O(n) on average instead of a sort.

/// The `k`-th smallest value of `a` (0-based), by quickselect (Hoare partition, median-of-three
/// pivots). `a` is reordered so that `a[..<k]` holds values `<=` the result and `a[(k+1)...]`
/// values `>=` it. A range that shrinks too slowly (64 rounds) or is small (< 16) is sorted
/// instead, so the worst case stays O(n log n). Not NaN-safe: the values must be comparable.
/// - Precondition: `0 <= k < a.count`.
public func selectOrderStatistic(_ a: UnsafeMutableBufferPointer<Double>, _ k: Int) -> Double {
    precondition(k >= 0 && k < a.count)
    var a = a  // the same memory; `var` for the slice sort
    var lo = 0, hi = a.count - 1
    var rounds = 0
    while hi > lo {
        rounds += 1
        if rounds > 64 || hi - lo < 16 {
            a[lo...hi].sort()
            break
        }
        let mid = lo + (hi - lo) / 2
        if a[mid] < a[lo] { a.swapAt(mid, lo) }
        if a[hi] < a[lo] { a.swapAt(hi, lo) }
        if a[hi] < a[mid] { a.swapAt(hi, mid) }
        let pivot = a[mid]
        var i = lo, j = hi
        while i <= j {
            while a[i] < pivot { i += 1 }
            while pivot < a[j] { j -= 1 }
            if i <= j {
                a.swapAt(i, j)
                i += 1
                j -= 1
            }
        }
        // Now a[lo...j] <= pivot <= a[i...hi], and a[j+1..<i] == pivot.
        if k <= j {
            hi = j
        } else if k >= i {
            lo = i
        } else {
            break
        }
    }
    return a[k]
}

/// The median of `a` by selection: the middle value of an odd count, the mean of the two middle
/// values of an even one (the same values as after a sort). `a` is reordered. Not NaN-safe.
/// - Precondition: `a` is not empty.
public func selectMedian(_ a: UnsafeMutableBufferPointer<Double>) -> Double {
    let n = a.count
    let upper = selectOrderStatistic(a, n / 2)
    guard n % 2 == 0 else { return upper }
    // a[..<n/2] holds the values <= upper: the lower middle value is their largest.
    var lower = a[0]
    for j in 1..<(n / 2) where a[j] > lower { lower = a[j] }
    return (lower + upper) / 2
}
