// The `file` sink: writes every message of each input stream as one JSON line (the course's wire
// format) to `<directory>/<stream>.jsonl`. Whole lines only (each write(2) carries complete lines;
// a torn last line left by a killed run is cut off when a file is reopened for appending; a write
// that fails part-way, e.g. disk full, is cut back to the last whole line, and the lines it could
// not write are counted `lines_lost.<stream>`); files are fsynced at the end.

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

    /// Bytes of the file that hold whole lines written by the kernel (the file's size).
    private var committed = 0
    /// Lines in `buffer`, not yet written.
    private var bufferedLines = 0
    /// Lines written out (in the kernel) since the last ``takeWritten()``.
    private var newlyWritten = 0
    /// Lines that could not be written (disk full...) and were cut off the file.
    private(set) var linesLost = 0

    init(path: String, append: Bool) throws {
        self.path = path
        if append { tornBytesRemoved = try Self.truncateTornTail(path) }
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC)
        fd = open(path, flags, 0o644)
        guard fd >= 0 else { throw FileSinkError("cannot open \(path): \(errnoText())") }
        var st = stat()
        if fstat(fd, &st) == 0 { committed = Int(st.st_size) }
        buffer.reserveCapacity(Self.flushBytes + (1 << 16))
    }

    /// The number of lines written out since the previous call.
    func takeWritten() -> Int {
        defer { newlyWritten = 0 }
        return newlyWritten
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
    /// Each with the buffer's size at the end of the batch's lines.
    private var unacknowledged: [(input: StageInput, ordinal: Int, end: Int)] = []

    /// Acknowledges batch `ordinal` of `input` once everything appended so far is written.
    func acknowledgeAfterWrite(_ input: StageInput, _ ordinal: Int) {
        if buffer.isEmpty { input.acknowledge(through: ordinal) } else { unacknowledged.append((input, ordinal, buffer.count)) }
    }

    func append(_ json: [UInt8]) throws {
        buffer.append(contentsOf: json)
        buffer.append(0x0A)
        bufferedLines += 1
        if buffer.count >= Self.flushBytes { try flush() }
    }

    /// Writes the buffer out if the last write is more than a second old, so that a slow stream
    /// still reaches the disk.
    func flushIfStale() throws {
        if !buffer.isEmpty && ContinuousClock.now - lastWrite > .seconds(1) { try flush() }
    }

    /// Writes every buffered line.
    ///
    /// A write that fails part-way (disk full `ENOSPC`, quota `EDQUOT`, file size limit `EFBIG`,
    /// an I/O error) would leave a torn last line: the file is cut back to its last whole line
    /// (ftruncate), only the lines wholly written count as written (and their batches are
    /// acknowledged), and the others are counted in ``linesLost``.
    /// - Throws: ``FileSinkError`` naming the path, the error, and the lines written and lost.
    func flush() throws {
        lastWrite = ContinuousClock.now
        guard !buffer.isEmpty else { return }
        var failure: Int32 = 0
        let written: Int = buffer.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    break
                }
                if n == 0 { failure = EIO; break }
                offset += n
            }
            return offset
        }
        guard failure == 0 else { throw cutBack(written: written, error: failure) }
        committed += buffer.count
        newlyWritten += bufferedLines
        bufferedLines = 0
        buffer.removeAll(keepingCapacity: true)
        // In the kernel now: a killed daemon no longer loses these lines.
        for (input, ordinal, _) in unacknowledged { input.acknowledge(through: ordinal) }
        unacknowledged.removeAll()
    }

    /// After a write of the buffer failed with `error` once `written` bytes were out: cuts the
    /// file after the last whole line, counts what was written and what is lost, drops the buffer.
    private func cutBack(written: Int, error: Int32) -> FileSinkError {
        // Whole lines among the bytes written.
        var whole = 0, lines = 0
        buffer.withUnsafeBytes { raw in
            for k in 0..<written where raw[k] == 0x0A {
                whole = k + 1
                lines += 1
            }
        }
        var cut = ""
        if written > whole {
            if ftruncate(fd, off_t(committed + whole)) == 0 {
                cut = "; the torn last line (\(written - whole) bytes) was cut off"
            } else {
                cut = "; cutting the torn last line failed: \(errnoText())"
            }
        }
        _ = lseek(fd, off_t(committed + whole), SEEK_SET)
        committed += whole
        newlyWritten += lines
        let lost = bufferedLines - lines
        linesLost += lost
        for (input, ordinal, end) in unacknowledged where end <= whole { input.acknowledge(through: ordinal) }
        unacknowledged.removeAll()
        buffer.removeAll(keepingCapacity: true)
        bufferedLines = 0
        return FileSinkError("cannot write \(path): \(errnoText(error)); \(lines) buffered lines written, \(lost) lost\(cut)")
    }

    /// Drops the buffered lines without writing them, counting them lost (the sink is failing).
    func abandon() {
        linesLost += bufferedLines
        bufferedLines = 0
        buffer.removeAll()
        unacknowledged.removeAll()
    }

    /// Writes what is left, fsyncs and closes the file.
    func finish() throws {
        guard fd >= 0 else { return }
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
    let ranBefore = Atomic<Bool>(false)

    static let descriptor = StageDescriptor(
        type: "file",
        summary: "Writes every message of each input stream as a JSON line to <directory>/<stream>.jsonl; counts `lines.<stream>` written and `lines_lost.<stream>` that a failed write (disk full) could not write.",
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
        try Self.checkWritable(directory)
    }

    /// What `run` would reject at once, caught by `validate`: the directory, or the nearest of
    /// its ancestors that exists, must be a directory this process can write into.
    /// - Throws: ``StageConfigError`` for `directory` naming the path and the reason.
    static func checkWritable(_ directory: String) throws {
        var path = directory
        while true {
            var st = stat()
            if stat(path, &st) == 0 {
                guard (st.st_mode & S_IFMT) == S_IFDIR else {
                    throw StageConfigError(option: "directory", "cannot use \(directory): \(path) is not a directory")
                }
                guard access(path, W_OK | X_OK) == 0 else {
                    throw StageConfigError(option: "directory", "cannot write into \(path) (for \(directory)): \(errnoText())")
                }
                return
            }
            guard errno == ENOENT else {
                throw StageConfigError(option: "directory", "cannot use \(directory): \(path): \(errnoText())")
            }
            // The parent: created by `run` (mkdir -p) if missing.
            while path.count > 1 && path.hasSuffix("/") { path.removeLast() }
            guard let slash = path.lastIndex(of: "/") else { path = "."; continue }
            path = slash == path.startIndex ? "/" : String(path[..<slash])
        }
    }

    /// The file name of a stream: its name with `/` replaced, plus `.jsonl`.
    static func fileName(_ stream: String) -> String {
        var name = String(stream.map { $0 == "/" ? "_" : $0 })
        if name.isEmpty || name == "." || name == ".." { name = "_" + name }
        return name + ".jsonl"
    }

    func run(_ context: StageContext) async throws {
        // A file size limit (RLIMIT_FSIZE) must fail the write with EFBIG, handled as a full disk,
        // rather than kill the daemon with SIGXFSZ.
        signal(SIGXFSZ, SIG_IGN)
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
        // `lines.<stream>` counts lines once written out (in the kernel), never before.
        func countWritten() {
            for (stream, file) in files {
                let n = file.takeWritten()
                if n > 0 { context.counters.add("lines.\(stream)", n) }
            }
        }
        do {
            while let tagged = await merged.next(consumer) {
                guard let file = files[tagged.stream] else { continue }
                let began = ContinuousClock.now
                defer { countWritten() }
                for message in tagged.messages { try file.append(WireFormat.encode(message)) }
                file.acknowledgeAfterWrite(tagged.input, tagged.ordinal)
                // Lines are written in large chunks under load, and as soon as the input is idle
                // (so a replayable source upstream can commit what is written).
                if merged.pending(consumer) == 0 && tagged.input.pending == 0 {
                    // Every file, not only this batch's: a batch of another stream read just
                    // before (alerts, then stats) would otherwise wait for the next batch of its
                    // stream, and a replayable source upstream could not commit it.
                    for other in files.values { try other.flush() }
                } else {
                    try file.flushIfStale()
                }
                context.recordProcessing(since: began)
            }
            for stream in files.keys.sorted() { try files[stream]!.finish() }
            countWritten()
        } catch {
            merged.detach(consumer)  // the readers of the inputs must not wait for us
            // Write out what the other files hold (each cut back to whole lines if that fails too).
            for stream in files.keys.sorted() {
                do { try files[stream]!.finish() } catch { files[stream]!.abandon() }
            }
            countWritten()
            var lost = 0
            for (stream, file) in files where file.linesLost > 0 {
                context.counters.add("lines_lost.\(stream)", file.linesLost)
                lost += file.linesLost
            }
            if lost > 0 {
                context.logger.error("lines lost: not written to disk", metadata: ["lines": .stringConvertible(lost)])
            }
            throw error
        }
        let lines = context.counters.snapshot.filter { $0.key.hasPrefix("lines.") }.values.reduce(0, +)
        context.logger.info("streams written", metadata: ["directory": .string(directory), "lines": .stringConvertible(lines)])
    }

    /// mkdir -p.
    func makeDirectories(_ path: String) throws {
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
