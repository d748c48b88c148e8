// Seeded pseudo-random numbers shared by the stages that must be reproducible for a seed (the
// replay's shuffle and start times, the learner's forests): Swift's SystemRandomNumberGenerator
// cannot be seeded.

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny 64-bit generator that gives the same sequence on
/// every machine for a given seed. Not cryptographic.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The generator's whole state: the seed advanced once per draw.
    public var state: UInt64

    public init(seed: UInt64) { state = seed }

    @inlinable
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1), from the top 53 bits.
    @inlinable
    public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Uniform in `0..<n` (`n > 0`), without modulo bias (Lemire's multiply-shift with rejection).
    @inlinable
    public mutating func next(below n: UInt64) -> UInt64 {
        var m = next().multipliedFullWidth(by: n)
        if m.low < n {
            let threshold = (0 &- n) % n
            while m.low < threshold { m = next().multipliedFullWidth(by: n) }
        }
        return m.high
    }
}
