// What a plugin may declare beyond its ports and options, so that the runtime needs no knowledge
// of any stage type: the metrics it exports (help texts), the columns it adds to the end-of-run
// summary, the gauges summed into the daemon's status line, and how a stage survives a reload
// that rebuilds it (state inheritance) or checks, before a reload stops the running pipeline,
// that it will start.

/// A metric a stage type exports: its name, the `# HELP` text and, for histograms, the buckets.
/// The runtime registers it (``TweetoscopeMetrics/describe(_:help:buckets:)``) when the plugin
/// registers the stage type.
public struct MetricSpec: Sendable, Hashable {
    /// Full metric name, e.g. `tweetoscope_collector_open_cascades` (README, "Metrics").
    public var name: String
    public var help: String
    /// Histogram buckets in the metric's base unit; nil = chosen by name.
    public var buckets: [Double]?

    public init(_ name: String, help: String, buckets: [Double]? = nil) {
        self.name = name
        self.help = help
        self.buckets = buckets
    }
}

/// A column of the end-of-run summary's per-window table (one row per observation window
/// T_obs), read from a stage counter whose name carries the window.
public struct SummaryColumn: Sendable, Hashable {
    /// How the counter's integer value is shown.
    public enum Format: Sendable, Hashable {
        /// value / 1000 with three decimals, e.g. 412 -> "0.412", 160 -> "0.160".
        case thousandths
        /// value / 10 as a percentage with one decimal, e.g. 333 -> "33.3%", 400 -> "40.0%".
        case thousandthsAsPercent
    }

    public var header: String
    /// The counter name with `{T}` standing for the window in seconds, e.g. `are{T}_median_milli`.
    /// Counters matching a column are shown only in the table, not in the stage's counter list.
    public var counter: String
    public var format: Format

    public init(_ header: String, counter: String, format: Format) {
        self.header = header
        self.counter = counter
        self.format = format
    }

    /// The counter for window `tObs` (seconds).
    public func counterName(tObs: Int) -> String {
        counter.replacingAll("{T}", with: "\(tObs)")
    }

    /// The window of `name` if it is this column's counter for some window, else nil.
    public func window(of name: String) -> Int? {
        let parts = counter.splitOnce("{T}")
        guard let (prefix, suffix) = parts, name.hasPrefix(prefix), name.hasSuffix(suffix),
              name.count > prefix.count + suffix.count else { return nil }
        return Int(name.dropFirst(prefix.count).dropLast(suffix.count))
    }

    /// The text shown for `value`.
    public func text(_ value: Int) -> String {
        switch format {
        case .thousandths: Self.fixed(value, decimals: 3)
        case .thousandthsAsPercent: Self.fixed(value, decimals: 1) + "%"
        }
    }

    /// `value / 10^decimals` written with exactly `decimals` decimals (integer arithmetic, so
    /// 160 thousandths are "0.160", not the shortest double "0.16").
    static func fixed(_ value: Int, decimals: Int) -> String {
        var scale = 1
        for _ in 0..<decimals { scale *= 10 }
        let magnitude = value.magnitude
        let fraction = String(magnitude % UInt(scale))
        return (value < 0 ? "-" : "") + "\(magnitude / UInt(scale))."
            + String(repeating: "0", count: decimals - fraction.count) + fraction
    }
}

/// A gauge of a stage (``StageCounters/set(_:_:)``) summed over the stages declaring it and
/// shown in the daemon's status line (systemd `STATUS=`) as "<sum> <text>", e.g. "12 open cascades".
public struct StatusGauge: Sendable, Hashable {
    public var gauge: String
    public var text: String

    public init(gauge: String, text: String) {
        self.gauge = gauge
        self.text = text
    }
}

extension StageDescriptor {
    /// This descriptor with the given declarations added (see ``MetricSpec``, ``SummaryColumn``,
    /// ``StatusGauge``).
    public func declaring(metrics: [MetricSpec] = [], summaryColumns: [SummaryColumn] = [],
                          statusGauges: [StatusGauge] = []) -> StageDescriptor {
        var d = self
        d.metrics += metrics
        d.summaryColumns += summaryColumns
        d.statusGauges += statusGauges
        return d
    }
}

/// A stage that takes over the state of the stage it replaces when a configuration reload
/// rebuilds it (its options changed; same name and type).
///
/// The daemon calls ``inherit(from:)`` on the new stage before its first `run`, once the previous
/// stage has returned from its reload stop (so its state is kept and no longer used). What cannot
/// be carried over under the new options must be counted by the stage (a counter it adds in its
/// next `run`) and said in the returned line: a reload never loses state silently.
public protocol InheritingStage: Stage {
    /// Takes over what it can of `previous`'s state.
    /// - Returns: one line for the daemon's log, e.g. "kept 820 open cascades".
    func inherit(from previous: any Stage) -> String
}

/// A stage that can tell, before a reload stops the running pipeline, whether it will start.
///
/// The daemon calls ``checkStart()`` on every stage a reload builds anew; if one throws, the
/// reload is rejected (logged) and the running pipeline goes on unchanged.
public protocol StartCheckedStage: Stage {
    /// Makes the checks on which `run` would fail at once (an output directory that cannot be
    /// created or is not a directory, a client that cannot be configured), leaving nothing behind
    /// that matters (creating a missing output directory is allowed).
    /// - Throws: an error whose description says what will not start.
    func checkStart() throws
}

extension String {
    fileprivate func splitOnce(_ separator: String) -> (String, String)? {
        guard let r = firstRange(of: separator) else { return nil }
        return (String(self[..<r.lowerBound]), String(self[r.upperBound...]))
    }

    fileprivate func replacingAll(_ target: String, with replacement: String) -> String {
        var result = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            result += rest[..<r.lowerBound] + replacement
            rest = rest[r.upperBound...]
        }
        return result + rest
    }
}
