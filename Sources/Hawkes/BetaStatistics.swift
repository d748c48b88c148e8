// Sufficient statistics of the log-likelihood for a fixed decay beta (one O(n) pass).

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// For a fixed `beta`, everything the likelihood needs, with first and second derivatives in
/// `beta`. With these, `LL(p, β) = (n−1) log(pβ) + sumLogA − p·k` for every `p`.
///
/// - `sumLogA = Σ_{i≥2} log A_i`, `A_i = Σ_{j<i} m_j e^{−β(t_i−t_j)}`;
///   `dSumLogA = −Σ R_i` (R_i: A-weighted mean lag), `d2SumLogA = Σ V_i` (weighted lag variance).
/// - `k = Σ_i m_i (1 − e^{−β(T−t_i)})` (compensator weight), `dK = Σ m_i s_i e^{−β s_i}`,
///   `d2K = −Σ m_i s_i² e^{−β s_i}` with `s_i = T − t_i`.
/// - `g = Σ_i m_i e^{−β s_i}` (so `G1 = p·g`).
struct BetaStatistics {
    var sumLogA: Double
    var dSumLogA: Double
    var d2SumLogA: Double
    var k: Double
    var dK: Double
    var d2K: Double
    var g: Double

    /// Reference-accuracy pass: log-space recursion for `A_i` (logaddexp), direct
    /// `expm1` per event for the compensator. Handles zero marks and any underflow.
    /// Returns `sumLogA == -infinity` when some `A_i` is exactly 0 (root mark 0, `n >= 2`).
    static func accurate(beta: Double, cascade c: ObservedCascade) -> BetaStatistics {
        c.times.withUnsafeBufferPointer { t in
            c.marks.withUnsafeBufferPointer { m in
                accurate(beta: beta, t: t, m: m, end: c.observationEnd)
            }
        }
    }

    static func accurate(beta: Double, t: UnsafeBufferPointer<Double>, m: UnsafeBufferPointer<Double>,
                         end T: Double) -> BetaStatistics {
        let n = t.count
        var logA = -Double.infinity
        var r = 0.0, v = 0.0
        var sumLogA = 0.0, sumR = 0.0, sumV = 0.0
        var degenerate = false
        var i = 1
        while i < n {
            let dt = t[i] - t[i - 1]
            let mp = m[i - 1]
            let lm = mp > 0 ? log(mp) : -Double.infinity
            let logS: Double, w: Double, omw: Double   // S_i = A_{i-1} + m_{i-1}; w = A_{i-1}/S_i
            if logA == -.infinity {
                if lm == -.infinity { degenerate = true; break }
                logS = lm; w = 0; omw = 1
            } else if lm == -.infinity {
                logS = logA; w = 1; omw = 0
            } else {
                let hi = max(logA, lm), lo = min(logA, lm)
                logS = hi + log1p(exp(lo - hi))
                w = exp(logA - logS)
                omw = exp(lm - logS)
            }
            let rp = r
            r = dt + w * rp
            v = w * (v + omw * rp * rp)
            logA = logS - beta * dt
            sumLogA += logA
            sumR += r
            sumV += v
            i += 1
        }
        var k = 0.0, dk = 0.0, d2k = 0.0, g = 0.0
        for j in 0..<n {
            let s = T - t[j]
            let x = beta * s
            let e = exp(-x)
            let mj = m[j]
            k -= mj * expm1(-x)
            g += mj * e
            dk += mj * s * e
            d2k -= mj * s * s * e
        }
        return BetaStatistics(sumLogA: degenerate ? -.infinity : sumLogA, dSumLogA: -sumR, d2SumLogA: sumV,
                              k: k, dK: dk, d2K: d2k, g: g)
    }

    /// Fast pass used by the MAP search: linear-space recursion
    /// `S_i = m_{i−1} + A_{i−1}`, `A_i = e^{−βΔt_i} S_i`, with `Σ log A_i = Σ log S_i − β (t_n − t_1)`
    /// where `Σ log S_i` is accumulated as a product renormalised by its binary exponent (exact;
    /// one `log` at the end), and the compensator by the positive recursion
    /// `H_i = H_{i−1} + S_i (1 − e^{−βΔt_i})` (the compensator up to `t_i`), closed at `T`.
    /// No allocation (the table lives on the stack).
    ///
    /// `e^{−βΔt}` and `1 − e^{−βΔt}` cost nothing for ties (`Δt = 0`) and come from a table for
    /// whole-second gaps `Δt < tableSize` (real Twitter data has 1 s resolution), built by
    /// `q_k = q_{k−1} q_1`, `1 − q_k = (1 − q_{k−1}) + (1 − q_1) q_{k−1}` (all terms positive, error
    /// ≲ k ulp); other gaps call `expm1`/`exp`.
    ///
    /// Returns `nil` whenever a `S_i` leaves `[1e-100, 1e100]` (a zero mark after an underflowed
    /// `A`, a zero root, or absurd marks); the caller then uses ``accurate(beta:t:m:end:)``.
    static func fast(beta: Double, t: UnsafeBufferPointer<Double>, m: UnsafeBufferPointer<Double>,
                     end T: Double, tableSize: Int) -> BetaStatistics? {
        let size = max(tableSize, 2)
        return withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * size) { buf in
            let qt = buf.baseAddress!, omt = buf.baseAddress! + size
            qt[0] = 1; omt[0] = 0
            let om1 = -expm1(-beta)
            let q1 = exp(-beta)
            qt[1] = q1; omt[1] = om1
            var k = 2
            while k < tableSize {
                qt[k] = qt[k - 1] * q1
                omt[k] = omt[k - 1] + om1 * qt[k - 1]
                k += 1
            }
            return fastPass(beta: beta, t: t, m: m, end: T, tableSize: tableSize, qt: qt, omt: omt)
        }
    }

    @inline(__always)
    private static func factors(_ dt: Double, beta: Double, tableSize: Int,
                                qt: UnsafeMutablePointer<Double>, omt: UnsafeMutablePointer<Double>) -> (q: Double, om: Double) {
        if dt < Double(tableSize) {
            let k = Int(dt)
            if Double(k) == dt { return (qt[k], omt[k]) }
        }
        let x = beta * dt
        if x < 0.5 {
            let om = -expm1(-x)
            return (1 - om, om)
        }
        let q = exp(-x)
        return (q, 1 - q)
    }

    @inline(__always)
    private static func fastPass(beta: Double, t: UnsafeBufferPointer<Double>, m: UnsafeBufferPointer<Double>,
                                 end T: Double, tableSize: Int,
                                 qt: UnsafeMutablePointer<Double>, omt: UnsafeMutablePointer<Double>) -> BetaStatistics? {
        let n = t.count
        var a = 0.0, r = 0.0, v = 0.0
        var h = 0.0, sumR = 0.0, sumV = 0.0
        var prod = 1.0
        var expAcc = 0   // Σ log S_i = expAcc · ln 2 + log(prod)
        var i = 1
        while i < n {
            let dt = t[i] - t[i - 1]
            let mp = m[i - 1]
            let s = mp + a
            guard s >= 1e-100, s <= 1e100 else { return nil }
            let inv = 1 / s
            let w = a * inv, omw = mp * inv
            let (q, om) = factors(dt, beta: beta, tableSize: tableSize, qt: qt, omt: omt)
            h += s * om
            let rp = r
            r = dt + w * rp
            v = w * (v + omw * rp * rp)
            a = q * s
            sumR += r
            sumV += v
            prod *= s
            if prod > 1e150 || prod < 1e-150 {
                // prod is a normal number here: split off its binary exponent exactly
                let bits = prod.bitPattern
                expAcc &+= Int((bits >> 52) & 0x7ff) &- 1023
                prod = Double(bitPattern: (bits & 0x800F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000)
            }
            i += 1
        }
        // close at T with a virtual event: S_T = m_n + A_n, G = e^{-β(T - t_n)} S_T
        let mp = m[n - 1]
        let s = mp + a
        guard s >= 1e-100, s <= 1e100 else { return nil }
        let inv = 1 / s
        let w = a * inv, omw = mp * inv
        let sT = T - t[n - 1]
        let x = beta * sT
        let q: Double, om: Double
        if x < 0.5 {
            om = -expm1(-x); q = 1 - om
        } else {
            q = exp(-x); om = 1 - q
        }
        let k = h + s * om
        let g = s * q
        let rT = sT + w * r
        let vT = w * (v + omw * r * r)
        let ln2 = 0.693147180559945309417232121458176568
        let sumLogA = n > 1 ? Double(expAcc) * ln2 + log(prod) - beta * (t[n - 1] - t[0]) : 0
        return BetaStatistics(sumLogA: sumLogA, dSumLogA: -sumR, d2SumLogA: sumV,
                              k: k, dK: g * rT, d2K: -g * (vT + rT * rT), g: g)
    }
}

extension BetaStatistics {
    /// The fast pass for two decays at once (SIMD2 lanes share the data loads and the
    /// dependency chains run side by side, so a pair costs about one scalar pass). Same
    /// formulas and same `nil` fallback condition as ``fast(beta:t:m:end:tableSize:)``
    /// (`nil` if either lane needs the log-space pass). Used for the grid scan.
    static func fastPair(betas: SIMD2<Double>, t: UnsafeBufferPointer<Double>, m: UnsafeBufferPointer<Double>,
                         end T: Double, tableSize: Int) -> (BetaStatistics, BetaStatistics)? {
        typealias V = SIMD2<Double>
        let size = max(tableSize, 2)
        return withUnsafeTemporaryAllocation(of: V.self, capacity: 2 * size) { buf -> (BetaStatistics, BetaStatistics)? in
            let qt = buf.baseAddress!, omt = qt + size
            qt[0] = V(repeating: 1); omt[0] = V(repeating: 0)
            let om1 = V(-expm1(-betas[0]), -expm1(-betas[1]))
            let q1 = V(exp(-betas[0]), exp(-betas[1]))
            qt[1] = q1; omt[1] = om1
            var k = 2
            while k < tableSize {
                qt[k] = qt[k - 1] * q1
                omt[k] = omt[k - 1] + om1 * qt[k - 1]
                k += 1
            }
            return fastPairPass(betas, t: t, m: m, end: T, tableSize: tableSize, qt: qt, omt: omt)
        }
    }

    @inline(__always)
    private static func decayPair(_ x: SIMD2<Double>) -> (q: SIMD2<Double>, om: SIMD2<Double>) {
        var q = SIMD2<Double>(), om = SIMD2<Double>()
        for l in 0..<2 {
            if x[l] < 0.5 {
                let e = -expm1(-x[l]); om[l] = e; q[l] = 1 - e
            } else {
                let e = exp(-x[l]); q[l] = e; om[l] = 1 - e
            }
        }
        return (q, om)
    }

    @inline(__always)
    private static func fastPairPass(_ beta: SIMD2<Double>, t: UnsafeBufferPointer<Double>, m: UnsafeBufferPointer<Double>,
                                     end T: Double, tableSize: Int, qt: UnsafeMutablePointer<SIMD2<Double>>,
                                     omt: UnsafeMutablePointer<SIMD2<Double>>) -> (BetaStatistics, BetaStatistics)? {
        typealias V = SIMD2<Double>
        let n = t.count
        var a = V(), r = V(), v = V(), h = V(), sumR = V(), sumV = V()
        var prod = V(repeating: 1)
        var expAcc = V()   // Σ log S_i = expAcc · ln 2 + log(prod), per lane
        let sLo = V(repeating: 1e-100), sHi = V(repeating: 1e100)
        let pLo = V(repeating: 1e-150), pHi = V(repeating: 1e150)
        var i = 1
        while i < n {
            let dt = t[i] - t[i - 1]
            let mp = m[i - 1]
            let s = a + mp
            if any((s .< sLo) .| (s .> sHi)) { return nil }
            let inv = 1 / s
            let w = a * inv, omw = mp * inv
            let q: V, om: V
            if dt < Double(tableSize), Double(Int(dt)) == dt {
                let kk = Int(dt)
                q = qt[kk]; om = omt[kk]
            } else {
                (q, om) = decayPair(beta * dt)
            }
            h += s * om
            let rp = r
            r = dt + w * rp
            v = w * (v + omw * rp * rp)
            a = q * s
            sumR += r
            sumV += v
            prod *= s
            if any((prod .> pHi) .| (prod .< pLo)) {
                for l in 0..<2 {
                    let bits = prod[l].bitPattern
                    expAcc[l] += Double(Int((bits >> 52) & 0x7ff) - 1023)
                    prod[l] = Double(bitPattern: (bits & 0x800F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000)
                }
            }
            i += 1
        }
        let mp = m[n - 1]
        let s = a + mp
        if any((s .< sLo) .| (s .> sHi)) { return nil }
        let inv = 1 / s
        let w = a * inv, omw = mp * inv
        let sT = T - t[n - 1]
        let (q, om) = decayPair(beta * sT)
        let k = h + s * om, g = s * q
        let rT = sT + w * r, vT = w * (v + omw * r * r)
        let ln2 = 0.693147180559945309417232121458176568
        let span = t[n - 1] - t[0]
        let dK = g * rT, d2K = -g * (vT + rT * rT)
        func lane(_ l: Int) -> BetaStatistics {
            let sumLogA = n > 1 ? expAcc[l] * ln2 + log(prod[l]) - beta[l] * span : 0
            return BetaStatistics(sumLogA: sumLogA, dSumLogA: -sumR[l], d2SumLogA: sumV[l],
                                  k: k[l], dK: dK[l], d2K: d2K[l], g: g[l])
        }
        return (lane(0), lane(1))
    }
}
