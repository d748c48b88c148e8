import Testing
@testable import Hawkes

/// Straightforward O(n²) log-likelihood written from the spec formula (spec §4.2), used as an
/// independent oracle for paths the golden file does not reach (whole-second gap table, long
/// cascades, absolute clocks). `log A_i` is a plain log-sum-exp over `j < i`, so long gaps
/// cannot underflow it.
func naiveLogLikelihood(p: Double, beta: Double, t: [Double], m: [Double], T: Double) -> Double {
    let n = t.count
    var ll = Double(n - 1) * (Foundation.log(p) + Foundation.log(beta))
    if n > 1 {
        for i in 1..<n {
            var top = -Double.infinity
            for j in 0..<i where m[j] > 0 { top = max(top, Foundation.log(m[j]) - beta * (t[i] - t[j])) }
            guard top > -.infinity else { return -.infinity }
            var sum = 0.0
            for j in 0..<i where m[j] > 0 { sum += Foundation.exp(Foundation.log(m[j]) - beta * (t[i] - t[j]) - top) }
            ll += top + Foundation.log(sum)
        }
    }
    for i in 0..<n { ll -= p * m[i] * -Foundation.expm1(-beta * (T - t[i])) }
    return ll
}

import Foundation

/// Deterministic pseudo-random numbers (SplitMix64) for test cascades.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A cascade with whole-second times (many ties) and power-law marks, like the real data.
func integerCascade(n: Int, seed: UInt64, zeroEvery: Int = 0) -> (t: [Double], m: [Double]) {
    var g = SplitMix(state: seed)
    var t = [0.0], m = [Double(Int.random(in: 100...5000, using: &g))]
    for i in 1..<n {
        t.append(t[i - 1] + Double([0, 0, 0, 1, 1, 2, 3, 5, 8, 70].randomElement(using: &g)!))
        let u = Double.random(in: 0.0001...1, using: &g)
        var mark = (10 * Foundation.pow(u, -1 / 1.4)).rounded()
        if zeroEvery > 0 && i % zeroEvery == 0 { mark = 0 }
        m.append(mark)
    }
    return (t, m)
}

@Suite("Edge cases, errors and options")
struct EdgeCaseTests {
    @Test("input validation throws typed errors")
    func validation() {
        #expect(throws: HawkesError.emptyCascade) { try ObservedCascade(times: [], marks: [], observationEnd: 1) }
        #expect(throws: HawkesError.lengthMismatch(times: 2, marks: 1)) {
            try ObservedCascade(times: [0, 1], marks: [1], observationEnd: 2)
        }
        #expect(throws: HawkesError.nonFiniteTime(index: 1)) {
            try ObservedCascade(times: [0, .nan], marks: [1, 1], observationEnd: 2)
        }
        #expect(throws: HawkesError.nonFiniteMark(index: 1)) {
            try ObservedCascade(times: [0, 1], marks: [1, .infinity], observationEnd: 2)
        }
        #expect(throws: HawkesError.negativeMark(index: 0)) {
            try ObservedCascade(times: [0, 1], marks: [-1, 1], observationEnd: 2)
        }
        #expect(throws: HawkesError.unsortedTimes(index: 2)) {
            try ObservedCascade(times: [0, 2, 1], marks: [1, 1, 1], observationEnd: 3)
        }
        #expect(throws: HawkesError.invalidObservationEnd(-1)) {
            try ObservedCascade(times: [0], marks: [1], observationEnd: -1)
        }
        #expect(throws: HawkesError.invalidObservationEnd(.infinity)) {
            try ObservedCascade(times: [0], marks: [1], observationEnd: .infinity)
        }
        #expect(throws: HawkesError.eventAfterObservationEnd(index: 2)) {
            try ObservedCascade(times: [0, 1, 5], marks: [1, 1, 1], observationEnd: 3)
        }
        #expect(throws: (any Error).self) { try MarkDistribution(alpha: 2, mu: 10) }
        #expect(throws: (any Error).self) { try MarkDistribution(alpha: 2.4, mu: 0) }
        #expect(throws: (any Error).self) { try HawkesPrior(muP: 0.02, muBeta: 2e-4, sigP: 0.01, sigBeta: 1e-3, corr: 1) }
        #expect(throws: (any Error).self) { try HawkesPrior(muP: -1, muBeta: 2e-4, sigP: 0.01, sigBeta: 1e-3, corr: 0) }
        #expect(throws: (any Error).self) { try HawkesEstimator(maxNStar: 0) }
        #expect(throws: (any Error).self) { try HawkesEstimator(maxNStar: 1.5) }
        #expect(throws: (any Error).self) { try HawkesEstimator(gridSize: 2) }
        #expect(throws: (any Error).self) { try HawkesEstimator(zeroMarkPolicy: .replaceZeroRootMark(with: 0)) }
    }

    @Test("dropLaterEvents truncates at T; times are made relative to the first event")
    func truncationAndClock() throws {
        let c = try ObservedCascade(times: [100, 101, 103, 200], marks: [5, 6, 7, 8], observationEnd: 150, dropLaterEvents: true)
        #expect(c.times == [0, 1, 3])
        #expect(c.marks == [5, 6, 7])
        #expect(c.observationEnd == 50)
    }

    @Test("a fit does not depend on the clock origin (absolute epoch seconds)")
    func clockInvariance() throws {
        let (t, m) = integerCascade(n: 300, seed: 7)
        let shift = 1_600_000_000.0
        let a = try HawkesEstimator.course.fit(times: t, marks: m, observationEnd: t.last! + 10)
        let b = try HawkesEstimator.course.fit(times: t.map { $0 + shift }, marks: m, observationEnd: t.last! + 10 + shift)
        #expect(a == b)
    }

    @Test("zero-magnitude policy: root mark 0")
    func zeroRoot() throws {
        let t = [0.0, 5, 9], m = [0.0, 10, 20]
        let c = try ObservedCascade(times: t, marks: m, observationEnd: 600)
        #expect(c.logLikelihood(p: 0.01, beta: 1e-3) == -.infinity)
        #expect(c.logPosterior(p: 0.01, beta: 1e-3) == -.infinity)
        #expect(throws: HawkesError.zeroIntensity) { try HawkesEstimator.course.fit(c) }
        let est = try HawkesEstimator(zeroMarkPolicy: .replaceZeroRootMark(with: 1))
        let fit = try est.fit(c)
        let ref = try HawkesEstimator.course.fit(times: t, marks: [1, 10, 20], observationEnd: 600)
        #expect(fit == ref)
        // a lone root with 0 followers is a valid (n = 1) cascade
        let lone = try HawkesEstimator.course.fit(times: [0], marks: [0], observationEnd: 600)
        #expect(lone.g1 == 0 && lone.forecast == 1)
    }

    @Test("zero marks after the root, long gaps and ties: the fast pass agrees with an O(n²) oracle")
    func zeroMarksAndGaps() throws {
        var (t, m) = integerCascade(n: 120, seed: 11, zeroEvery: 5)
        // a three-day gap then a zero-mark event followed by more events (A underflows for large beta)
        let last = t.last!
        t += [last + 259_200, last + 259_200, last + 259_260]
        m += [0, 40, 12]
        let T = t.last! + 30
        let c = try ObservedCascade(times: t, marks: m, observationEnd: T)
        let fit = try HawkesEstimator.course.fit(c)
        let ll = naiveLogLikelihood(p: fit.p, beta: fit.beta, t: t, m: m, T: T)
        #expect(ll.isFinite)
        #expect(close(fit.logPosterior, ll + HawkesPrior.course.logDensity(p: fit.p, beta: fit.beta), rel: 1e-10))
    }

    @Test("fast pass (tables, libm and mixed gaps): statistics match an O(n²) oracle",
          arguments: [3e-6, 1e-4, 2.5e-3, 1.0 / 60], [0, 1, 2])
    func tablePath(beta: Double, layout: Int) throws {
        var (t, m) = integerCascade(n: 400, seed: 3)
        if layout == 1 { t = t.map { $0 * 1.0001 } }                        // fractional gaps, libm only
        if layout == 2 { for i in 200..<t.count { t[i] += 5000.5 } }          // a long, fractional gap
        let T = t.last! + 17
        let c = try ObservedCascade(times: t, marks: m, observationEnd: T)
        let st = try #require(c.times.withUnsafeBufferPointer { tb in
            c.marks.withUnsafeBufferPointer { mb in
                BetaStatistics.fast(beta: beta, t: tb, m: mb, end: T, tableSize: layout == 1 ? 0 : 64)
            }
        })
        let p = 0.013
        let oracle = naiveLogLikelihood(p: p, beta: beta, t: t, m: m, T: T)
        let fromStats = Double(t.count - 1) * (log(p) + log(beta)) + st.sumLogA - p * st.k
        #expect(close(fromStats, oracle, rel: 1e-11), "\(fromStats) vs \(oracle)")
        // derivative in beta by central differences of the oracle
        let h = beta * 1e-5
        let fd = (naiveLogLikelihood(p: p, beta: beta + h, t: t, m: m, T: T)
                  - naiveLogLikelihood(p: p, beta: beta - h, t: t, m: m, T: T)) / (2 * h)
        let an = Double(t.count - 1) / beta + st.dSumLogA - p * st.dK
        #expect(abs(an - fd) <= 1e-5 * max(1, abs(fd)) * max(1, 1 / (beta * 1e3)), "\(an) vs \(fd)")
    }

    @Test("paired (SIMD2) fast pass used by the grid: both lanes match the O(n²) oracle", arguments: [0, 1, 2])
    func pairedPass(layout: Int) throws {
        var (t, m) = integerCascade(n: 300, seed: 21)
        if layout == 1 { t = t.map { $0 * 1.0001 } }
        if layout == 2 { for i in 150..<t.count { t[i] += 86_400.25 } }
        let T = t.last! + 3
        let betas = SIMD2(2e-6, 1.0 / 70)
        let pair = try #require(t.withUnsafeBufferPointer { tb in
            m.withUnsafeBufferPointer { mb in
                BetaStatistics.fastPair(betas: betas, t: tb, m: mb, end: T, tableSize: layout == 1 ? 0 : 64)
            }
        })
        let p = 0.02
        for (beta, st) in [(betas[0], pair.0), (betas[1], pair.1)] {
            let oracle = naiveLogLikelihood(p: p, beta: beta, t: t, m: m, T: T)
            let fromStats = Double(t.count - 1) * (log(p) + log(beta)) + st.sumLogA - p * st.k
            #expect(close(fromStats, oracle, rel: 1e-11), "beta \(beta): \(fromStats) vs \(oracle)")
            let h = beta * 1e-5
            let fd = (naiveLogLikelihood(p: p, beta: beta + h, t: t, m: m, T: T)
                      - naiveLogLikelihood(p: p, beta: beta - h, t: t, m: m, T: T)) / (2 * h)
            let an = Double(t.count - 1) / beta + st.dSumLogA - p * st.dK
            #expect(abs(an - fd) <= 1e-5 * max(1, abs(fd)) * max(1, 1 / (beta * 1e3)), "\(an) vs \(fd)")
        }
    }

    @Test("maxNStar caps the branching factor")
    func maxNStarOption() throws {
        let (t, m) = try readTM(sharedURL("data/fixtures/cascade_ex.csv"))
        let est = try HawkesEstimator(maxNStar: 0.5)
        let fit = try est.fit(times: t, marks: m, observationEnd: t.last!)
        #expect(fit.nStar < 0.5)
        #expect(fit.pAtUpper)
        #expect(fit.p == 0.5 / 35.00000000000001 - 1e-8)
    }

    @Test("prediction rejects n* >= 1 and bad parameters")
    func predictionErrors() throws {
        let c = try ObservedCascade(times: [0, 1], marks: [10, 10], observationEnd: 5)
        #expect(throws: HawkesError.branchingFactorTooLarge(nStar: 0.03 * 35.00000000000001, limit: 1)) {
            try c.prediction(p: 0.03, beta: 1e-3)
        }
        #expect(throws: (any Error).self) { try c.prediction(p: .nan, beta: 1e-3) }
        let pr = try c.prediction(p: 0.01, beta: 0)
        #expect(pr.g1 == 0.2 && pr.nObs == 2)
    }

    @Test("nasty inputs never give NaN or throw", arguments: 0..<6)
    func nasty(kind: Int) throws {
        var t: [Double], m: [Double], T: Double
        switch kind {
        case 0: t = Array(repeating: 0, count: 50); m = Array(repeating: 1, count: 50); T = 0      // all at t = 0 = T
        case 1: t = [0, 1, 2]; m = [1e12, 1e12, 1e12]; T = 3                                      // huge marks
        case 2: t = [0, 1e6, 2e6]; m = [1, 1, 1]; T = 3e6                                          // gaps of 11 days
        case 3: t = [0]; m = [1]; T = 1e7
        case 4: t = [0, 0.001, 0.002]; m = [5e7, 1e-3, 0]; T = 0.002
        default: (t, m) = integerCascade(n: 5000, seed: 99); T = t.last! + 1
        }
        let fit = try HawkesEstimator.course.fit(times: t, marks: m, observationEnd: T)
        for x in [fit.p, fit.beta, fit.logPosterior, fit.g1, fit.nStar, fit.nSupp, fit.forecast] {
            #expect(x.isFinite)
        }
        #expect(fit.nStar < 1)
        #expect(HawkesEstimator.course.bounds.p.contains(fit.p))
        #expect(HawkesEstimator.course.bounds.beta.contains(fit.beta))
        let ll = naiveLogLikelihood(p: fit.p, beta: fit.beta, t: t, m: m, T: T)
        #expect(close(fit.logPosterior, ll + HawkesPrior.course.logDensity(p: fit.p, beta: fit.beta), rel: 1e-9))
    }

    @Test("at an interior MAP the posterior gradient vanishes")
    func stationarity() throws {
        let (t, m) = try readTM(sharedURL("data/fixtures/test_cascade.csv"))
        let c = try ObservedCascade(times: t, marks: m, observationEnd: t.last! + 600)
        let fit = try HawkesEstimator.course.fit(c)
        try #require(!(fit.pAtLower || fit.pAtUpper || fit.betaAtLower || fit.betaAtUpper))
        let g = c.logPosteriorWithGradient(p: fit.p, beta: fit.beta)
        #expect(abs(g.dLogP) < 1e-6 && abs(g.dLogBeta) < 1e-5, "\(g.dLogP) \(g.dLogBeta)")
    }
}
