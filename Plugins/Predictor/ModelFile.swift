// Models loaded at start from a file or folder (option `model_path`), so the predictor forecasts
// with a model from its first cascade.
import Glibc
import TweetoscopeCore

/// Reads model files: JSON lines of `model` messages in the `models` wire format (as the `file`
/// sink writes the learner's `models` stream, or `scripts/train-model` writes
/// `data/models/*.jsonl`).
enum ModelFile {
    /// Why a model file cannot be used; `description` names the file and line.
    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    /// The models of `path`: a file, or a folder whose regular files not starting with `.` are
    /// read in name order. For each window the model read last wins (a later line or file
    /// replaces an earlier one). Blank lines are ignored.
    ///
    /// - Parameters:
    ///   - mode: the predictor's mode; every model must have it.
    ///   - featureCount: the mode's number of features; a tree splitting on a feature beyond it
    ///     is incompatible.
    /// - Returns: the latest model of each window (T_obs), and the files read.
    /// - Throws: ``LoadError`` "<file>:<line>: <what>" for an unreadable file, a line that is not
    ///   a valid model message (the wire format's reason), a model of another mode or with
    ///   incompatible trees; "<path>: no model" for a file or folder without any model.
    static func load(_ path: String, mode: CorrectionMode, featureCount: Int) throws(LoadError) -> (models: [Int: Model], files: [String]) {
        var info = stat()
        guard stat(path, &info) == 0 else { throw LoadError(description: "\(path): \(String(cString: strerror(errno)))") }
        var files: [String] = []
        if (info.st_mode & S_IFMT) == S_IFDIR {
            guard let dir = opendir(path) else { throw LoadError(description: "\(path): \(String(cString: strerror(errno)))") }
            defer { closedir(dir) }
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                guard !name.hasPrefix(".") else { continue }
                let full = path.hasSuffix("/") ? path + name : path + "/" + name
                var s = stat()
                if stat(full, &s) == 0, (s.st_mode & S_IFMT) == S_IFREG { files.append(full) }
            }
            files.sort()
        } else {
            files = [path]
        }
        var models: [Int: Model] = [:]
        for file in files {
            let lines = try readLines(file)
            for (i, line) in lines.enumerated() where !line.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) {
                let at = "\(file):\(i + 1)"
                let message: Message
                do {
                    message = try WireFormat.decode(line)
                } catch let error as WireFormatError {
                    throw LoadError(description: "\(at): \(error.reason): \(error.description)")
                } catch {
                    throw LoadError(description: "\(at): \(error)")
                }
                guard case .model(let model) = message else {
                    throw LoadError(description: "\(at): a \(message.kind) message, expected a model")
                }
                guard model.mode == mode.rawValue else {
                    throw LoadError(description: "\(at): a model of mode \(model.mode), but this predictor runs mode \(mode.rawValue)")
                }
                guard !model.trees.isEmpty else { throw LoadError(description: "\(at): a model without trees") }
                for (t, tree) in model.trees.enumerated() where tree.feature.contains(where: { $0 >= featureCount }) {
                    throw LoadError(description: "\(at): tree \(t) splits on a feature beyond the \(featureCount) of mode \(mode.rawValue)")
                }
                guard model.version >= 0 else { throw LoadError(description: "\(at): negative version \(model.version)") }
                models[model.tObs] = model
            }
        }
        guard !models.isEmpty else { throw LoadError(description: "\(path): no model") }
        return (models, files)
    }

    /// The lines of `file` (without their `\n`).
    private static func readLines(_ file: String) throws(LoadError) -> [[UInt8]] {
        guard let f = fopen(file, "rb") else { throw LoadError(description: "\(file): \(String(cString: strerror(errno)))") }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = fread(&buffer, 1, buffer.count, f)
            if n > 0 { bytes.append(contentsOf: buffer[0..<n]) }
            if n < buffer.count {
                if ferror(f) != 0 { throw LoadError(description: "\(file): read error") }
                break
            }
        }
        return bytes.split(separator: 10, omittingEmptySubsequences: false).map(Array.init)
    }
}
