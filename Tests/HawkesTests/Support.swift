import Foundation
import Testing
@testable import Hawkes

/// Repository root, found from this file's path (`<root>/Tests/HawkesTests/Support.swift`),
/// with symlinks resolved so that a development package that links the test directory works.
func repoRoot(file: String = #filePath) -> URL {
    let resolved = URL(fileURLWithPath: file).resolvingSymlinksInPath()
    return resolved.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
}

/// `<root>/../shared/<relative>`.
func sharedURL(_ relative: String) -> URL {
    repoRoot().deletingLastPathComponent().appendingPathComponent("shared").appendingPathComponent(relative)
}

/// `|a − b| <= rel · max(floor, |b|)` (the golden file's tolerance convention); a non-finite
/// `b` is matched only by an identical `a`.
func close(_ a: Double, _ b: Double, rel: Double, floor: Double = 1) -> Bool {
    guard b.isFinite else { return a == b }
    return abs(a - b) <= rel * max(floor, abs(b))
}

/// Reads a two-column `t,m` CSV with a header.
func readTM(_ url: URL) throws -> (t: [Double], m: [Double]) {
    let text = try String(contentsOf: url, encoding: .utf8)
    var t: [Double] = [], m: [Double] = []
    for line in text.split(separator: "\n").dropFirst() {
        let f = line.split(separator: ",")
        guard f.count >= 2, let x = Double(f[0].trimmingCharacters(in: .whitespaces)),
              let y = Double(f[1].trimmingCharacters(in: .whitespaces)) else { continue }
        t.append(x)
        m.append(y)
    }
    return (t, m)
}

// MARK: - Golden file model (../shared/golden/hawkes_golden.json)

struct GoldenFile: Decodable, Sendable {
    struct Hyper: Decodable, Sendable {
        let mu_p: Double, mu_beta: Double, sig_p: Double, sig_beta: Double, corr: Double
    }
    struct Bounds: Decodable, Sendable { let p: [Double]; let beta: [Double] }
    let alpha: Double
    let mu: Double
    let E_m: Double
    let prior_hyper: Hyper
    let prior_log_mean: [Double]
    let prior_log_cov: [[Double]]
    let prior_log_precision: [[Double]]
    let bounds: Bounds
    let cases: [GoldenCase]
}

struct GoldenPoint: Decodable, Sendable {
    let name: String
    let p: Double, beta: Double
    let loglik: Double, log_prior_course: Double, log_posterior: Double, log_prior_full: Double
    let dloglik_dp: Double, dloglik_dbeta: Double
    let dlogpost_dp: Double, dlogpost_dbeta: Double, dlogpost_dlogp: Double, dlogpost_dlogbeta: Double
}

struct GoldenPrediction: Decodable, Sendable { let n: Int; let G1: Double; let n_star: Double; let N: Double }

struct GoldenMAP: Decodable, Sendable {
    let p: Double, beta: Double, log_posterior: Double
    let p_at_upper: Bool, p_at_lower: Bool, beta_at_upper: Bool, beta_at_lower: Bool
    let prediction: GoldenPrediction
}

struct GoldenCase: Decodable, Sendable, CustomTestStringConvertible {
    let id: String
    let T: Double
    let n: Int
    let t: [Double]
    let m: [Double]
    let points: [GoldenPoint]
    let map_global: GoldenMAP
    var testDescription: String { id }
}

enum Golden {
    static let url = sharedURL("golden/hawkes_golden.json")
    /// Loaded once; `nil` (and the tests fail with a clear message) if the file is missing.
    static let file: GoldenFile? = {
        guard let data = try? Data(contentsOf: url) else { return nil }
        return try? JSONDecoder().decode(GoldenFile.self, from: data)
    }()
    static var cases: [GoldenCase] { file?.cases ?? [] }
}
