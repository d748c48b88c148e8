// The `file` sink: writes every message of each input stream as one JSON line (the course's wire
// format) to `<directory>/<stream>.jsonl`. Whole lines only; files are fsynced at the end.

import Glibc
import Synchronization
import TweetoscopeCore

@_cdecl("tweetoscope_plugin_register")
public func tweetoscopePluginRegister(_ abi: UInt32, _ registrar: UnsafeMutableRawPointer) -> Int32 {
    PluginABI.entry(abi, registrar) { $0.register(FileSink.descriptor) }
}

/// An I/O error of the sink, naming the path.
struct FileSinkError: Error, CustomStringConvertible, Sendable {
    var description: String
    init(_ description: String) { self.description = description }
}

private func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

/// One output file with its buffer of complete lines.
final class LineFile {
    let path: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    private var lastWrite = ContinuousClock.now
    /// Buffered bytes above which the buffer is written out.
    static let flushBytes = 1 << 20

    init(path: String, append: Bool) throws {
        self.path = path
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC)
        fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw FileSinkError("cannot open \(path): \(errnoText())") }
        buffer.reserveCapacity(Self.flushBytes + (1 << 16))
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Buffers one line (the JSON value and "\n"); writes the buffer out once it is large.
    func append(_ json: [UInt8]) throws {
        buffer.append(contentsOf: json)
        buffer.append(0x0A)
        if buffer.count >= Self.flushBytes { try flush() }
    }

    /// Writes the buffer out if the last write is more than a second old, so that a slow stream
    /// still reaches the disk.
    func flushIfStale() throws {
        if !buffer.isEmpty && ContinuousClock.now - lastWrite > .seconds(1) { try flush() }
    }

    /// Writes every buffered line.
    func flush() throws {
        lastWrite = ContinuousClock.now
        guard !buffer.isEmpty else { return }
        try buffer.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileSinkError("cannot write \(path): \(errnoText())")
                }
                offset += n
            }
        }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Writes what is left, fsyncs and closes the file.
    func finish() throws {
        try flush()
        guard fsync(fd) == 0 || errno == EINVAL else { throw FileSinkError("cannot fsync \(path): \(errnoText())") }
        let rc = close(fd)
        fd = -1
        guard rc == 0 else { throw FileSinkError("cannot close \(path): \(errnoText())") }
    }
}

final class FileSink: Stage {
    let directory: String
    let append: Bool
    /// Set after the first run: a run after a configuration reload appends to the files it wrote.
    private let ranBefore = Atomic<Bool>(false)

    static let descriptor = StageDescriptor(
        type: "file",
        summary: "Writes every message of each input stream as a JSON line to <directory>/<stream>.jsonl.",
        inputs: [PortSpec("streams", kinds: Set(MessageKind.allCases), multiple: true,
                          doc: "streams to record, one file per stream")],
        outputs: [],
        options: [
            OptionSpec("directory", .path, required: true, doc: "output directory; created (with its parents) if missing"),
            OptionSpec("append", .bool, default: .bool(false),
                       doc: "append to existing files; otherwise they are truncated at start"),
        ],
        make: { _, options in try FileSink(options) })

    init(_ options: StageOptions) throws {
        directory = try options.string("directory")
        guard !directory.isEmpty else { throw StageConfigError(option: "directory", "must not be empty") }
        append = try options.bool("append")
    }

    /// The file name of a stream: its name with `/` replaced, plus `.jsonl`.
    static func fileName(_ stream: String) -> String {
        var name = String(stream.map { $0 == "/" ? "_" : $0 })
        if name.isEmpty || name == "." || name == ".." { name = "_" + name }
        return name + ".jsonl"
    }

    func run(_ context: StageContext) async throws {
        try makeDirectories(directory)
        defer { ranBefore.store(true, ordering: .relaxed) }
        var files: [String: LineFile] = [:]
        for input in context.inputs("streams") where files[input.stream] == nil {
            files[input.stream] = try LineFile(path: directory + "/" + Self.fileName(input.stream),
                                               append: append || ranBefore.load(ordering: .relaxed))
        }
        context.logger.info("writing streams", metadata: [
            "directory": .string(directory), "streams": .string(files.keys.sorted().joined(separator: ",")),
            "append": .stringConvertible(append),
        ])
        let (merged, consumer) = context.mergedInputs()
        do {
            while let tagged = await merged.next(consumer) {
                guard let file = files[tagged.stream] else { continue }
                let began = ContinuousClock.now
                for message in tagged.messages { try file.append(WireFormat.encode(message)) }
                try file.flushIfStale()
                context.recordProcessing(since: began)
                context.counters.add("lines.\(tagged.stream)", tagged.messages.count)
            }
            for stream in files.keys.sorted() { try files[stream]!.finish() }
        } catch {
            merged.detach(consumer)  // the readers of the inputs must not wait for us
            throw error
        }
        let lines = context.counters.snapshot.filter { $0.key.hasPrefix("lines.") }.values.reduce(0, +)
        context.logger.info("streams written", metadata: ["directory": .string(directory), "lines": .stringConvertible(lines)])
    }

    /// mkdir -p.
    private func makeDirectories(_ path: String) throws {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/" + component
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                throw FileSinkError("cannot create directory \(prefix): \(errnoText())")
            }
        }
        var st = stat()
        guard stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
            throw FileSinkError("cannot use \(path) as a directory: \(st.st_mode & S_IFMT != 0 ? "not a directory" : errnoText())")
        }
    }
}
