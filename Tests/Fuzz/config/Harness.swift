// libFuzzer target `config`: the configuration loader (Sources/TweetoscopeRuntime/YAML.swift,
// Config.swift, Plugins.swift) on arbitrary bytes: UTF-8 check, libyaml parse, daemon settings,
// then the stages validated and built against the real stage descriptors of the plugins in
// $TWEETOSCOPE_PLUGIN_DIR (loaded once); see scripts/fuzz.
//
// Properties checked beyond "no crash": a configuration either has diagnostics or builds every
// stage; every diagnostic with a position has a line and column within the document's size.
import Glibc
import TweetoscopeCore

let registry: StageRegistry = {
    let registry = StageRegistry()
    guard let dir = getenv("TWEETOSCOPE_PLUGIN_DIR").map({ String(cString: $0) }) else {
        fatalError("set TWEETOSCOPE_PLUGIN_DIR to the folder of the libtweetoscope-*.so plugins")
    }
    do {
        try registry.loadPlugins(directory: dir, names: nil)
    } catch {
        fatalError("cannot load the plugins of \(dir): \(error)")
    }
    return registry
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ input: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: input, count: size))
    let file = "/fuzz/tweetoscope.yaml"
    let text: String
    do {
        text = try ConfigLoader.text(of: bytes, file: file)
    } catch {
        return 0
    }
    // libyaml also counts \r, NEL, LS and PS as line breaks: at most one line per byte.
    let lines = bytes.count + 1
    var errors: [ConfigDiagnostic] = []
    let (_, root) = ConfigLoader.parseSettings(text, file: file, errors: &errors)
    var stages: [StageConfig] = []
    if let root {
        stages = ConfigLoader.validateStages(root: root, file: file, registry: registry, errors: &errors)
    }
    for d in errors {
        if let mark = d.mark { check(mark.line >= 1 && mark.line <= lines + 1 && mark.column >= 1, "\(d)") }
    }
    if errors.isEmpty, root != nil {
        check(stages.allSatisfy { $0.stage != nil }, "a valid configuration with an unbuilt stage")
    }
    return 0
}

/// Stops the fuzzer with `message` on stderr when `condition` is false (a plain precondition
/// prints nothing in an optimized build).
@inline(__always)
func check(_ condition: Bool, _ message: @autoclosure () -> String = "property violated", line: Int = #line) {
    if !condition { failure(message(), line: line) }
}

func failure(_ message: String, line: Int = #line) -> Never {
    let text = "fuzz property violated (Harness.swift:\(line)): \(message)\n"
    _ = text.withCString { write(2, $0, strlen($0)) }
    abort()
}
