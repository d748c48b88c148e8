// The learner's state directory: each window's latest model and bounded window of samples,
// written atomically after each fit and read back at start, so that a restarted learner (kill -9,
// `systemctl restart`, a new host with the same directory) keeps what it learned.
import FoundationEssentials
import Glibc
import TweetoscopeCore

/// The first line of a state file.
struct LearnerStateHeader: Codable {
    var type: String
    /// Format of the file; only ``LearnerStateStore/format`` is read.
    var format: Int
    var mode: String
    var T_obs: Int
    /// Samples the window had received when the model was fitted (version = seen / refit_every).
    var seen: Int
}

/// The last line of a state file: the window's samples, oldest first.
struct LearnerStateSamples: Codable {
    var type: String
    var T_obs: Int
    var X: [[Double]]
    var W: [Double]
    /// Growth factor n_tot/n_obs per sample, null when the sample did not carry one.
    var growth: [Double?]
}

/// Why a state file was set aside.
struct LearnerStateError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Reads and writes `<directory>/learner-<stage>-T<T_obs>.jsonl`: a header line
/// {type: learner_state, format: 1, mode, T_obs, seen}, the model as a `model` message (the wire
/// format of the `models` topic), and one `samples` record {type: samples, T_obs, X, W, growth}.
struct LearnerStateStore: Sendable {
    static let format = 1
    let directory: String
    let stage: String
    let mode: String

    func fileName(_ tObs: Int) -> String { "learner-\(stage)-T\(tObs).jsonl" }

    /// Writes the state of `model`'s window: temp file, fsync, rename over the old file, fsync of
    /// the directory (so that after a crash the file is the old one or the new one, whole).
    /// - Throws: ``LearnerStateError`` naming the path and the system error.
    func save(model: Model, job: FitJob) throws {
        try makeDirectory(directory)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var bytes: [UInt8] = []
        let header = LearnerStateHeader(type: "learner_state", format: Self.format, mode: mode, T_obs: model.tObs, seen: job.seen)
        let samples = LearnerStateSamples(type: "samples", T_obs: model.tObs, X: job.features, W: job.targets,
                                          growth: job.growth.map { $0.isNaN ? nil : $0 })
        do {
            bytes += Array(try encoder.encode(header)) + [10]
            bytes += WireFormat.encode(.model(model)) + [10]
            bytes += Array(try encoder.encode(samples)) + [10]
        } catch {
            throw LearnerStateError("cannot encode the state of T_obs=\(model.tObs): \(error)")
        }
        let path = directory + "/" + fileName(model.tObs)
        let temp = path + ".tmp"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LearnerStateError("cannot create \(temp): \(String(cString: strerror(errno)))") }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                unlink(temp)
                throw LearnerStateError("cannot write \(temp): \(reason)")
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            unlink(temp)
            throw LearnerStateError("cannot fsync \(temp): \(reason)")
        }
        close(fd)
        guard rename(temp, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temp)
            throw LearnerStateError("cannot rename \(temp) to \(path): \(reason)")
        }
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }

    /// Reads every state file of this stage. A file that cannot be used is renamed
    /// `<name>.rejected-<UTC time>`, logged (file and reason) and counted `state_rejected`.
    func load(capacity: Int, context: StageContext) -> (windows: [Int: SampleWindow], models: [Int: Model]) {
        var windows: [Int: SampleWindow] = [:]
        var models: [Int: Model] = [:]
        guard let dir = opendir(directory) else {
            if errno != ENOENT {
                context.logger.error("cannot read the learner state directory \(directory): \(String(cString: strerror(errno)))")
                context.counters.add("state_rejected")
            }
            return ([:], [:])
        }
        var names: [String] = []
        let prefix = "learner-\(stage)-T"
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name.hasPrefix(prefix), name.hasSuffix(".jsonl") { names.append(name) }
        }
        closedir(dir)
        for name in names.sorted() {
            let path = directory + "/" + name
            do {
                let (window, model) = try read(path, capacity: capacity)
                windows[model.tObs] = window
                models[model.tObs] = model
                context.logger.info("learner state restored from \(path): T_obs=\(model.tObs) model version \(model.version), \(window.seen) samples seen")
            } catch {
                let aside = path + ".rejected-" + utcStamp()
                let moved = rename(path, aside) == 0
                context.counters.add("state_rejected")
                context.logger.error("learner state file \(path) set aside\(moved ? " as \(aside)" : " (cannot rename it: \(String(cString: strerror(errno))))"): \(error)")
            }
        }
        return (windows, models)
    }

    /// One state file.
    func read(_ path: String, capacity: Int) throws -> (SampleWindow, Model) {
        guard let file = fopen(path, "rb") else { throw LearnerStateError("cannot open: \(String(cString: strerror(errno)))") }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = fread(&buffer, 1, buffer.count, file)
            if n > 0 { bytes += buffer[0..<n] }
            if n < buffer.count { break }
            if bytes.count > 512 << 20 { fclose(file); throw LearnerStateError("larger than 512 MiB") }
        }
        let failed = ferror(file) != 0
        fclose(file)
        if failed { throw LearnerStateError("read error") }
        let lines = bytes.split(separator: 10, omittingEmptySubsequences: true)
        guard lines.count == 3 else { throw LearnerStateError("expected 3 lines (header, model, samples), found \(lines.count)") }
        let decoder = JSONDecoder()
        let header: LearnerStateHeader
        do {
            header = try decoder.decode(LearnerStateHeader.self, from: Data(lines[0]))
        } catch {
            throw LearnerStateError("line 1: not a learner_state header: \(error)")
        }
        guard header.type == "learner_state" else { throw LearnerStateError("line 1: type \(header.type), expected learner_state") }
        guard header.format == Self.format else { throw LearnerStateError("line 1: format \(header.format); this learner reads format \(Self.format)") }
        guard header.mode == mode else { throw LearnerStateError("line 1: mode \(header.mode); this learner runs mode \(mode)") }
        guard header.seen >= 0 else { throw LearnerStateError("line 1: seen \(header.seen) < 0") }
        let model: Model
        do {
            guard case .model(let m) = try WireFormat.decode(lines[1]) else { throw LearnerStateError("line 2: not a model") }
            model = m
        } catch let error as WireFormatError {
            throw LearnerStateError("line 2: \(error)")
        }
        guard model.tObs == header.T_obs, model.mode == mode else {
            throw LearnerStateError("line 2: model of T_obs=\(model.tObs) mode \(model.mode) in a file for T_obs=\(header.T_obs) mode \(mode)")
        }
        let samples: LearnerStateSamples
        do {
            samples = try decoder.decode(LearnerStateSamples.self, from: Data(lines[2]))
        } catch {
            throw LearnerStateError("line 3: not a samples record: \(error)")
        }
        guard samples.type == "samples", samples.T_obs == header.T_obs,
              samples.X.count == samples.W.count, samples.growth.count == samples.W.count
        else { throw LearnerStateError("line 3: inconsistent samples record") }
        let width = modeFeatureCounts.first(where: { $0.mode == mode })?.features ?? 0
        var window = SampleWindow(capacity: capacity)
        for i in samples.W.indices {
            guard samples.X[i].count == width, samples.X[i].allSatisfy(\.isFinite), samples.W[i].isFinite else {
                throw LearnerStateError("line 3: sample \(i) has \(samples.X[i].count) features or a non-finite value (mode \(mode) has \(width))")
            }
            window.append(Sample(cascade: 0, tObs: header.T_obs, x: samples.X[i], w: samples.W[i], growth: samples.growth[i]))
        }
        window.seen = max(header.seen, window.seen)
        return (window, model)
    }
}

/// `mkdir -p`.
func makeDirectory(_ path: String) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, 0o755) != 0 && errno != EEXIST {
            throw LearnerStateError("cannot create \(current): \(String(cString: strerror(errno)))")
        }
    }
}

/// The current UTC time as `YYYYMMDDTHHMMSSZ`.
func utcStamp() -> String {
    var t = time(nil)
    var parts = tm()
    gmtime_r(&t, &parts)
    func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
    return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))T\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))Z"
}
