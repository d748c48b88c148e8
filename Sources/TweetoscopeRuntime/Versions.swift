// Versions of the system libraries the daemon runs with (printed by `tweetoscoped version`).
import CSystemd
import TweetoscopeKafka

/// The daemon's version.
public let tweetoscopeVersion = "0.1.0"

/// The librdkafka version in use, e.g. "2.0.2".
public var librdkafkaVersion: String { KafkaLibrary.version }

/// The libsystemd in use, as its shared object's versioned file name, e.g.
/// "libsystemd.so.0.35.0" (libsystemd has no version function; the mapped file is read from
/// /proc/self/maps).
public var libsystemdVersion: String {
    _ = sd_booted()  // makes sure libsystemd is mapped
    guard let maps = try? ConfigLoader.read("/proc/self/maps") else { return "unknown" }
    for line in maps.split(separator: "\n") {
        guard let path = line.split(separator: " ", omittingEmptySubsequences: true).last,
              path.contains("/libsystemd.so") else { continue }
        return PluginLoader.canonical(String(path)).split(separator: "/").last.map(String.init) ?? String(path)
    }
    return "unknown"
}
