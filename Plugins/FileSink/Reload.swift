// The file sink across configuration reloads: a reload checks that a rebuilt sink can write
// before it stops the running pipeline, and a rebuilt sink writing to the same directory goes on
// appending to the files the previous one wrote (instead of truncating them).
import Glibc
import TweetoscopeCore

extension FileSink: StartCheckedStage {
    /// Creates the directory if missing and checks that it is a writable directory.
    /// - Throws: ``FileSinkError`` naming the path (e.g. "not a directory").
    func checkStart() throws {
        try makeDirectories(directory)
        guard access(directory, W_OK | X_OK) == 0 else {
            throw FileSinkError("cannot write in \(directory): \(String(cString: strerror(errno)))")
        }
    }
}

extension FileSink: InheritingStage {
    /// A sink rebuilt on the same directory appends to what the previous one wrote.
    func inherit(from previous: any Stage) -> String {
        guard let previous = previous as? FileSink, previous.ranBefore.load(ordering: .relaxed) else {
            return "nothing to take over"
        }
        guard previous.directory == directory else { return "new directory \(directory): files start empty unless append" }
        ranBefore.store(true, ordering: .relaxed)
        return "appends to the files written so far in \(directory)"
    }
}
