// Profile-likelihood global search over log beta (internal engine of HawkesEstimator).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One evaluation of the profile `F(u) = max_p objective(p, e^u)`, `u = log beta`.
struct ProfilePoint {
    var u: Double
    var beta: Double
    /// profile value F(u)
    var f: Double
    /// dF/du (envelope theorem: ∂objective/∂u at the optimal log p)
    var f1: Double
    /// d²F/du² (includes the implicit dependence of the optimal log p on u)
    var f2: Double
    var p: Double
    /// statistics at `beta` (to finish the fit without another pass)
    var stats: BetaStatistics
}

/// Global maximisation of the profile over `[log βmin, log βmax]`.
///
/// Objective in log coordinates (`v = log p`, `u = log β`, `n1 = n − 1`):
///     f(v, u) = n1 (v + u) + L(β) − e^v K(β) + Q(v, u),
/// with `L = Σ log A_i`, `K` the compensator weight and `Q` the prior quadratic form (0 for MLE).
/// `∂f/∂v = n1 − e^v K − (P00 d0 + P01 d1)` is strictly decreasing in `v`, so the optimal `v`
/// is unique (clipped to the bounds).
struct ProfileSearch {
    let t: UnsafeBufferPointer<Double>
    let m: UnsafeBufferPointer<Double>
    let end: Double
    let n1: Double
    let hasPrior: Bool
    let a: Double, b: Double            // prior log means
    let p00: Double, p01: Double, p11: Double
    let pLo: Double, pHi: Double, vLo: Double, vHi: Double
    let betaLo: Double, betaHi: Double, uLo: Double, uHi: Double
    var passes = 0
    /// size of the whole-second gap table of the fast pass (0: no table)
    let tableSize: Int

    init(t: UnsafeBufferPointer<Double>, m: UnsafeBufferPointer<Double>, end: Double, prior: HawkesPrior?,
         pBounds: ClosedRange<Double>, betaBounds: ClosedRange<Double>) {
        self.t = t
        self.m = m
        self.end = end
        n1 = Double(t.count - 1)
        if let prior {
            hasPrior = true
            a = prior.logMeanP; b = prior.logMeanBeta
            p00 = prior.logPrecision.pp; p01 = prior.logPrecision.pBeta; p11 = prior.logPrecision.betaBeta
        } else {
            hasPrior = false
            a = 0; b = 0; p00 = 0; p01 = 0; p11 = 0
        }
        pLo = pBounds.lowerBound; pHi = pBounds.upperBound
        vLo = log(pLo); vHi = log(pHi)
        betaLo = betaBounds.lowerBound; betaHi = betaBounds.upperBound
        uLo = log(betaLo); uHi = log(betaHi)
        // table of e^{-β k} for whole-second gaps k < tableSize, if the cascade has enough of them
        var maxInt = -1, count = 0
        if t.count >= 32 {
            for i in 1..<t.count {
                let dt = t[i] - t[i - 1]
                if dt > 0, dt < 64, Double(Int(dt)) == dt { count += 1; maxInt = max(maxInt, Int(dt)) }
            }
        }
        tableSize = count >= 16 ? maxInt + 1 : 0
    }

    /// Optimal `v = log p` for fixed `u` given `K(β)`: root of the strictly decreasing
    /// `g(v) = n1 − e^v K − P00 (v − a) − P01 (u − b)`, clipped to `[vLo, vHi]`.
    /// Returns the exact bound value of `p` when clipped.
    func solveP(k: Double, logBeta u: Double) -> (v: Double, p: Double, interior: Bool) {
        let kk = max(k, 0)
        let c = n1 - p01 * (u - b) + p00 * a      // g(v) = c − e^v K − P00 v
        if !hasPrior {
            if n1 == 0 { return (vLo, pLo, false) }
            if kk == 0 { return (vHi, pHi, false) }
            let v = log(n1 / kk)
            if v <= vLo { return (vLo, pLo, false) }
            if v >= vHi { return (vHi, pHi, false) }
            return (v, exp(v), true)
        }
        if c - pLo * kk - p00 * vLo <= 0 { return (vLo, pLo, false) }
        if c - pHi * kk - p00 * vHi >= 0 { return (vHi, pHi, false) }
        var lo = vLo, hi = vHi
        var v: Double
        if n1 > 0 && kk > 0 {
            v = log(n1 / kk)
            if !(v > lo && v < hi) { v = min(max(a, lo), hi) }
        } else {
            v = min(max(a, lo), hi)
        }
        var p = exp(v)
        for _ in 0..<100 {
            let g = c - p * kk - p00 * v
            if g > 0 { lo = v } else if g < 0 { hi = v } else { break }
            var vn = v + g / (p * kk + p00)
            if !(vn > lo && vn < hi) { vn = 0.5 * (lo + hi) }
            let done = abs(vn - v) <= 1e-15 * max(1, abs(v))
            v = vn
            p = exp(v)
            if done || hi - lo <= 1e-15 * max(1, abs(v)) { break }
        }
        return (v, p, true)
    }

    /// Statistics at `beta`: fast pass, falling back to the log-space pass when needed.
    mutating func stats(_ beta: Double) -> BetaStatistics {
        passes += 1
        if let s = BetaStatistics.fast(beta: beta, t: t, m: m, end: end, tableSize: tableSize) { return s }
        passes += 1
        return BetaStatistics.accurate(beta: beta, t: t, m: m, end: end)
    }

    /// Evaluates the profile at `u` (with `beta` given exactly, so bound nodes use the exact bounds).
    mutating func evaluate(u: Double, beta: Double) -> ProfilePoint {
        point(u: u, beta: beta, stats: stats(beta))
    }

    /// Profile value and derivatives at `u = log beta` from the statistics at `beta`.
    func point(u: Double, beta: Double, stats st: BetaStatistics) -> ProfilePoint {
        let (v, p, interior) = solveP(k: st.k, logBeta: u)
        let d0 = v - a, d1 = u - b
        var f = n1 * (v + u) + st.sumLogA - p * st.k
        var f1 = n1 + beta * st.dSumLogA - p * beta * st.dK
        var fuu = beta * st.dSumLogA + beta * beta * st.d2SumLogA - p * (beta * st.dK + beta * beta * st.d2K)
        var fuv = -p * beta * st.dK
        var fvv = -p * st.k
        if hasPrior {
            f += -0.5 * (p00 * d0 * d0 + 2 * p01 * d0 * d1 + p11 * d1 * d1)
            f1 -= p01 * d0 + p11 * d1
            fuu -= p11
            fuv -= p01
            fvv -= p00
        }
        let f2 = interior && fvv < 0 ? fuu - fuv * fuv / fvv : fuu
        if !(f > -.infinity) || f.isNaN {
            return ProfilePoint(u: u, beta: beta, f: -.infinity, f1: 0, f2: 0, p: p, stats: st)
        }
        return ProfilePoint(u: u, beta: beta, f: f, f1: f1, f2: f2, p: p, stats: st)
    }

    /// Evaluates the profile at two nodes in one traversal (SIMD2 fast pass), falling back to
    /// one pass per node when the fast pass declines.
    mutating func evaluatePair(_ u0: Double, _ b0: Double, _ u1: Double, _ b1: Double) -> (ProfilePoint, ProfilePoint) {
        passes += 1
        if let (s0, s1) = BetaStatistics.fastPair(betas: SIMD2(b0, b1), t: t, m: m, end: end, tableSize: tableSize) {
            return (point(u: u0, beta: b0, stats: s0), point(u: u1, beta: b1, stats: s1))
        }
        return (evaluate(u: u0, beta: b0), evaluate(u: u1, beta: b1))
    }

    mutating func evaluate(u: Double) -> ProfilePoint {
        if u <= uLo { return evaluate(u: uLo, beta: betaLo) }
        if u >= uHi { return evaluate(u: uHi, beta: betaHi) }
        return evaluate(u: u, beta: exp(u))
    }

    /// Grid scan + refinement of every local maximum; returns the best point.
    mutating func run(gridSize: Int) -> ProfilePoint {
        let g = gridSize
        let h = (uHi - uLo) / Double(g - 1)
        return withUnsafeTemporaryAllocation(of: ProfilePoint.self, capacity: g) { grid in
            func node(_ k: Int) -> (u: Double, beta: Double) {
                if k == 0 { return (uLo, betaLo) }
                if k == g - 1 { return (uHi, betaHi) }
                let u = uLo + h * Double(k)
                return (u, exp(u))
            }
            var k = 0
            while k < g {
                let x = node(k)
                if k + 1 < g {
                    let y = node(k + 1)
                    let (px, py) = evaluatePair(x.u, x.beta, y.u, y.beta)
                    grid.initializeElement(at: k, to: px)
                    grid.initializeElement(at: k + 1, to: py)
                    k += 2
                } else {
                    grid.initializeElement(at: k, to: evaluate(u: x.u, beta: x.beta))
                    k += 1
                }
            }
            var best = grid[0]
            for k in 1..<g where grid[k].f > best.f { best = grid[k] }
            // boundary maxima are exact candidates (already in `best` if they win)
            for k in 0..<(g - 1) {
                let l = grid[k], r = grid[k + 1]
                if l.f1 > 0 && r.f1 < 0 {
                    let x = refine(lo: l, hi: r)
                    if x.f > best.f { best = x }
                } else if (l.f1 > 0) == (r.f1 > 0), let um = hermiteInteriorMax(l, r, above: best.f) {
                    // a bump between nodes that the derivative signs do not reveal
                    let mid = evaluate(u: um)
                    if mid.f > best.f { best = mid }
                    if l.f1 > 0 && mid.f1 < 0 {
                        let x = refine(lo: l, hi: mid)
                        if x.f > best.f { best = x }
                    } else if mid.f1 > 0 && r.f1 < 0 {
                        let x = refine(lo: mid, hi: r)
                        if x.f > best.f { best = x }
                    }
                }
            }
            _ = grid.deinitialize()
            return best
        }
    }

    /// Interior local maximum `(u, value)` of the cubic Hermite interpolant of F on
    /// `[l.u, r.u]` built from the values and slopes at both ends, if it has one.
    func cubicMax(_ l: ProfilePoint, _ r: ProfilePoint) -> (u: Double, value: Double)? {
        guard l.f.isFinite, r.f.isFinite else { return nil }
        let h = r.u - l.u
        // p(s) = F_l + d0 s + c2 s^2 + c3 s^3 on [0, h]; p'(s) = d0 + 2 c2 s + 3 c3 s^2
        let d0 = l.f1, d1 = r.f1
        let delta = (r.f - l.f) / h
        let c2 = (3 * delta - 2 * d0 - d1) / h
        let c3 = (d0 + d1 - 2 * delta) / (h * h)
        let roots: (Double, Double)
        if abs(c3) * h < 1e-12 * (abs(c2) + abs(d0) / h) {
            guard c2 < 0 else { return nil }
            roots = (-d0 / (2 * c2), .nan)
        } else {
            let disc = c2 * c2 - 3 * c3 * d0
            guard disc > 0 else { return nil }
            let sq = disc.squareRoot()
            roots = ((-c2 - sq) / (3 * c3), (-c2 + sq) / (3 * c3))
        }
        var best: (u: Double, value: Double)? = nil
        func consider(_ s: Double) {   // a root of p' where p'' < 0 is a local maximum
            guard s > 0, s < h, 2 * c2 + 6 * c3 * s < 0 else { return }
            let val = l.f + s * (d0 + s * (c2 + s * c3))
            if best == nil || val > best!.value { best = (l.u + s, val) }
        }
        consider(roots.0)
        consider(roots.1)
        return best
    }

    /// A possible bump between two nodes whose slopes have the same sign: the interior maximum
    /// of the cubic interpolant, if it rises above both nodes or comes near the best value.
    func hermiteInteriorMax(_ l: ProfilePoint, _ r: ProfilePoint, above bestF: Double) -> Double? {
        guard let (u, value) = cubicMax(l, r) else { return nil }
        let margin = 1e-6 * max(1, abs(bestF))
        guard value > max(l.f, r.f) + margin || value > bestF - 1 - 1e-3 * abs(bestF) else { return nil }
        return u
    }

    /// Safeguarded Newton on F'(u) = 0 inside a bracket with `lo.f1 > 0 > hi.f1`.
    ///
    /// Newton steps from the latest point when they stay inside the bracket, otherwise false
    /// position on F' (kept off the bracket ends); a bisection is forced after two steps without
    /// enough progress (Newton step not halving, or bracket not halving). Stops when the Newton
    /// step is below `1e-9` in `log beta` (the current point is then within ~1e-9 of the root)
    /// or the bracket is that narrow.
    mutating func refine(lo loIn: ProfilePoint, hi hiIn: ProfilePoint) -> ProfilePoint {
        var lo = loIn, hi = hiIn
        var cur = lo.f >= hi.f ? lo : hi
        var best = cur
        let tol = 1e-9
        var poor = 0
        var lastStep = hi.u - lo.u
        // first trial: the maximum of the cubic Hermite interpolant (good to O(h^4))
        var first = cubicMax(lo, hi)?.u
        for _ in 0..<100 {
            let width = hi.u - lo.u
            var un = cur.f2 < 0 ? cur.u - cur.f1 / cur.f2 : .nan
            if first == nil && abs(un - cur.u) <= tol {
                // converged; prefer `cur` unless an earlier point is higher beyond rounding noise
                return best.f > cur.f + 1e-12 * max(1, abs(cur.f)) ? best : cur
            }
            if let f = first, f > lo.u, f < hi.u { un = f; lastStep = width }
            first = nil
            var newton = poor < 2 && un > lo.u && un < hi.u
            if !newton {
                un = lo.u + width * lo.f1 / (lo.f1 - hi.f1)     // false position
                if poor >= 2 || !(un > lo.u + 0.05 * width && un < hi.u - 0.05 * width) {
                    un = lo.u + 0.5 * width                     // bisection
                    poor = -1                                   // guaranteed halving
                }
                newton = false
            }
            let step = abs(un - cur.u)
            let pt = evaluate(u: un, beta: exp(un))
            if pt.f > best.f { best = pt }
            if pt.f1 > 0 { lo = pt } else if pt.f1 < 0 { hi = pt } else { return pt.f >= best.f ? pt : best }
            let good = newton ? step <= 0.5 * lastStep : (hi.u - lo.u) <= 0.5 * width
            poor = good ? 0 : poor + 1
            lastStep = step
            cur = pt
            if hi.u - lo.u <= tol { break }
        }
        return best
    }
}
