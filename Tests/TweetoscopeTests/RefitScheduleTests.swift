// The learner's refit points and the version a forecast uses (RefitSchedule, Core), against
// points worked out by hand from the rule in its documentation and against the rule of
// `refit_growth: 0` (version ⌊s/k⌋ once v·k >= min_samples), enumerated independently.
import Testing
import TweetoscopeCore

@Suite struct RefitScheduleTests {
    /// k = 20, growth 0.25, min_samples 50, max_samples 2000, by hand: the first multiple of
    /// 20 >= 50 is 60; then step = 20·⌈⌈0.25·p⌉/20⌉ (at least 20): 60 +20 80 +20 100 +40 140 +40
    /// 180 +60 240 +60 300 +80 380 +100 480 +120 600 +160 760 +200 960 +240 1200 +300 1500 +380
    /// 1880 +480 2360, past max_samples: step 0.25·2000 = 500 for ever: 2860, 3360, ...
    @Test func growthPointsByHand() {
        let s = RefitSchedule(every: 20, growth: 0.25, minSamples: 50, maxSamples: 2000)
        let expected = [60, 80, 100, 140, 180, 240, 300, 380, 480, 600, 760, 960, 1200, 1500, 1880, 2360,
                        2860, 3360, 3860, 4360, 4860]
        #expect((1...5000).filter { s.fits(at: $0) } == expected)
        #expect(s.wanted(samples: 0) == 0)
        #expect(s.wanted(samples: 59) == 0)
        #expect(s.wanted(samples: 60) == 3)
        #expect(s.wanted(samples: 99) == 4)
        #expect(s.wanted(samples: 2359) == 94)
        #expect(s.wanted(samples: 2360) == 118)
        #expect(s.wanted(samples: 2859) == 118)
        #expect(s.wanted(samples: 2860) == 143)
        // Far along the stream: 2360 + 500·j, found without walking the stream.
        #expect(s.wanted(samples: 1_000_000_123) == (2360 + (1_000_000_123 - 2360) / 500 * 500) / 20)
    }

    /// growth 1 with k = 1, min 1, max 8: 1, 2, 4, 8, then every 8.
    @Test func doublingPoints() {
        let s = RefitSchedule(every: 1, growth: 1, minSamples: 1, maxSamples: 8)
        #expect((1...40).filter { s.fits(at: $0) } == [1, 2, 4, 8, 16, 24, 32, 40])
        #expect(s.wanted(samples: 23) == 16)
    }

    /// growth 0 is the rule before refit_growth existed: a fit at every multiple v·k >= min_samples,
    /// and a forecast after s samples uses ⌊s/k⌋ when ⌊s/k⌋·k >= min_samples, else 0.
    @Test func zeroGrowthIsEveryK() {
        for (k, minSamples) in [(1, 1), (20, 50), (10, 30), (7, 1), (5, 100), (100, 1)] {
            let s = RefitSchedule(every: k, growth: 0, minSamples: minSamples, maxSamples: 2000)
            for n in 0...1200 {
                let v = n / k
                #expect(s.wanted(samples: n) == (v * k >= minSamples ? v : 0), "k=\(k) min=\(minSamples) n=\(n)")
                #expect(s.fits(at: n) == (n > 0 && n % k == 0 && n >= minSamples), "k=\(k) min=\(minSamples) n=\(n)")
            }
        }
    }

    /// A huge refit_every (what `evaluate` trains with) is never reached, with or without growth.
    @Test func hugeEveryNeverFits() {
        for g in [0.0, 0.25] {
            let s = RefitSchedule(every: 1_000_000_000, growth: g, minSamples: 1, maxSamples: 1_000_000_000)
            #expect(!s.fits(at: 5000))
            #expect(s.wanted(samples: 999_999_999) == 0)
            #expect(s.fits(at: 1_000_000_000))
        }
    }
}
