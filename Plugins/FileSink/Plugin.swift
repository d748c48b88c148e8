// The `file` sink: writes every message of each input stream as one JSON line (the course's wire
// format) to `<directory>/<stream>.jsonl`. Whole lines only (each write(2) carries complete lines;
// a torn last line left by a killed run is cut off when a file is reopened for appending); files
// are fsynced at the end.

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

    /// Bytes of a torn last line removed when the file was opened for appending (0: none).
    private(set) var tornBytesRemoved = 0

    init(path: String, append: Bool) throws {
        self.path = path
        if append { tornBytesRemoved = try Self.truncateTornTail(path) }
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC)
        fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw FileSinkError("cannot open \(path): \(errnoText())") }
        buffer.reserveCapacity(Self.flushBytes + (1 << 16))
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Cuts an existing file after its last `\n`: a run killed in the middle of a write may leave
    /// a torn last line, which appending would glue to the next line. A missing file is fine.
    /// - Returns: the number of bytes removed.
    /// - Throws: ``FileSinkError`` naming the path when the file cannot be read or truncated.
    static func truncateTornTail(_ path: String) throws -> Int {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return 0 }
            throw FileSinkError("cannot open \(path): \(errnoText())")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileSinkError("cannot stat \(path): \(errnoText())") }
        let size = Int(st.st_size)
        guard size > 0, (st.st_mode & S_IFMT) == S_IFREG else { return 0 }
        // Search backwards, 64 KiB at a time, for the last newline.
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var end = size
        var keep = 0
        search: while end > 0 {
            let start = max(0, end - chunk.count)
            let want = end - start
            var got = 0
            while got < want {
                let n = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + got, want - got, off_t(start + got)) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw FileSinkError("cannot read \(path): \(n == 0 ? "file shrank" : errnoText())") }
                got += n
            }
            if end == size && chunk[want - 1] == 0x0A { return 0 }  // ends with a whole line
            for k in stride(from: want - 1, through: 0, by: -1) where chunk[k] == 0x0A {
                keep = start + k + 1
                break search
            }
            end = start
        }
        guard ftruncate(fd, off_t(keep)) == 0, fsync(fd) == 0 || errno == EINVAL else {
            throw FileSinkError("cannot truncate \(path): \(errnoText())")
        }
        return size - keep
    }

    /// Buffers one line (the JSON value and "\n"); writes the buffer out once it is large.
    /// Batches whose lines are in `buffer`, acknowledged once written.
    private var unacknowledged: [(input: StageInput, ordinal: Int)] = []

    /// Acknowledges batch `ordinal` of `input` once everything appended so far is written.
    func acknowledgeAfterWrite(_ input: StageInput, _ ordinal: Int) {
        if buffer.isEmpty { input.acknowledge(through: ordinal) } else { unacknowledged.append((input, ordinal)) }
    }

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
        // In the kernel now: a killed daemon no longer loses these lines.
        for (input, ordinal) in unacknowledged { input.acknowledge(through: ordinal) }
        unacknowledged.removeAll()
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
        acknowledgement: .explicit,
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
        // A run after a configuration reload appends to what the previous run wrote.
        let appending = append || ranBefore.load(ordering: .relaxed)
        defer { ranBefore.store(true, ordering: .relaxed) }
        var files: [String: LineFile] = [:]
        for input in context.inputs("streams") where files[input.stream] == nil {
            let file = try LineFile(path: directory + "/" + Self.fileName(input.stream),
                                    append: appending)
            if file.tornBytesRemoved > 0 {
                context.counters.add("torn_lines_truncated")
                context.logger.warning("removed a torn last line left by an interrupted run", metadata: [
                    "file": .string(file.path), "bytes": .stringConvertible(file.tornBytesRemoved),
                ])
            }
            files[input.stream] = file
        }
        context.logger.info("writing streams", metadata: [
            "directory": .string(directory), "streams": .string(files.keys.sorted().joined(separator: ",")),
            "append": .stringConvertible(appending),
        ])
        let (merged, consumer) = context.mergedInputs()
        do {
            while let tagged = await merged.next(consumer) {
                guard let file = files[tagged.stream] else { continue }
                let began = ContinuousClock.now
                for message in tagged.messages { try file.append(WireFormat.encode(message)) }
                file.acknowledgeAfterWrite(tagged.input, tagged.ordinal)
                // Lines are written in large chunks under load, and as soon as the input is idle
                // (so a replayable source upstream can commit what is written).
                if merged.pending(consumer) == 0 && tagged.input.pending == 0 {
                    try file.flush()
                } else {
                    try file.flushIfStale()
                }
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
