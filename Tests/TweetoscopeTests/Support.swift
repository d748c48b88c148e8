// Helpers shared by the tests: load stage plugins from the build folder (as the daemon does) and
// run one stage on hand-made input streams.
import Glibc
import Testing
import TweetoscopeCore

/// The folder holding the test binary, where SwiftPM also puts `libtweetoscope-*.so`.
func buildFolder() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    precondition(n > 0)
    var path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    // .build/<triple>/debug/tweetoscopePackageTests.xctest
    while let slash = path.lastIndex(of: "/") {
        path = String(path[..<slash])
        if access(path + "/libTweetoscopeCore.so", F_OK) == 0 { return path }
    }
    fatalError("no build folder above /proc/self/exe")
}

/// The root of the repository (for data files such as ../shared).
func repositoryRoot(_ file: String = #filePath) -> String {
    var path = file
    for _ in 0..<3 { path = String(path[..<path.lastIndex(of: "/")!]) }
    return path
}

/// The descriptor of stage type `type`, loaded from the built plugin `libtweetoscope-<plugin>.so`.
func stageDescriptor(_ type: String, plugin: String) throws -> StageDescriptor {
    let path = buildFolder() + "/libtweetoscope-\(plugin).so"
    guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
        throw StageConfigError("dlopen \(path): \(String(cString: dlerror()))")
    }
    guard let symbol = dlsym(handle, PluginABI.entrySymbol) else {
        throw StageConfigError("\(path): no entry point")
    }
    let registrar = PluginRegistrar()
    let register = unsafeBitCast(symbol, to: PluginABI.RegisterFunction.self)
    let rc = register(PluginABI.version, Unmanaged.passUnretained(registrar).toOpaque())
    guard rc == 0 else { throw StageConfigError("\(path): ABI \(rc)") }
    guard let d = registrar.descriptors.first(where: { $0.type == type }) else {
        throw StageConfigError("\(path) does not register \(type)")
    }
    return d
}

/// Options with the descriptor's defaults applied, then `given` on top.
func options(_ d: StageDescriptor, _ given: [String: OptionValue]) -> StageOptions {
    var values: [String: OptionValue] = [:]
    for spec in d.options { if let v = spec.defaultValue { values[spec.key] = v } }
    for (k, v) in given { values[k] = v }
    return StageOptions(values)
}

/// Runs one stage of type `type` on the given input batches (port -> batches) and returns every
/// message it sent, per output port. Inputs end once their batches are sent.
func runStage(_ type: String, plugin: String, options given: [String: OptionValue] = [:],
              inputs: [String: [[Message]]] = [:], outputs: [String],
              stop: StopSignal = StopSignal()) async throws
    -> (outputs: [String: [Message]], counters: [String: Int])
{
    let r = try await runStageCapturingFailure(type, plugin: plugin, options: given, inputs: inputs, outputs: outputs, stop: stop)
    if let error = r.error { throw error }
    return (r.outputs, r.counters)
}

/// Like ``runStage``, but a stage whose `run` throws still gives what it sent before (its outputs
/// then end as failed, as the runtime ends them), with the error. Inputs whose port is in
/// `failedInputs` end as if their producer had failed (``StageOutput/fail()``).
func runStageCapturingFailure(_ type: String, plugin: String, options given: [String: OptionValue] = [:],
                              inputs: [String: [[Message]]] = [:], failedInputs: Set<String> = [],
                              outputs: [String], stop: StopSignal = StopSignal()) async throws
    -> (outputs: [String: [Message]], counters: [String: Int], error: (any Error)?)
{
    let d = try stageDescriptor(type, plugin: plugin)
    return await runBuiltStage(try d.make(type, options(d, given)), type: type, inputs: inputs,
                               failedInputs: failedInputs, outputs: outputs, stop: stop)
}

/// Runs an already built `stage` (named `type`) as ``runStageCapturingFailure`` does.
func runBuiltStage(_ stage: any Stage, type: String, inputs: [String: [[Message]]] = [:],
                   failedInputs: Set<String> = [], outputs: [String], stop: StopSignal = StopSignal()) async
    -> (outputs: [String: [Message]], counters: [String: Int], error: (any Error)?)
{
    var stageInputs: [String: [StageInput]] = [:]
    var feeders: [String: StageOutput] = [:]
    for port in inputs.keys {
        let s = MessageStream(name: "in.\(port)")
        stageInputs[port] = [StageInput(stream: s)]
        feeders[port] = StageOutput(stream: s)
    }
    var stageOutputs: [String: StageOutput] = [:]
    var collectors: [String: StageInput] = [:]
    for port in outputs {
        let s = MessageStream(name: "out.\(port)", capacity: 1 << 20)
        collectors[port] = StageInput(stream: s)
        stageOutputs[port] = StageOutput(stream: s)
    }
    let counters = StageCounters()
    let context = StageContext(name: type, type: type, logger: Logger(label: "test"), counters: counters,
                               inputs: stageInputs, outputs: stageOutputs, stop: stop)
    let feeds = inputs
    let feederTasks = feeds.map { (port, batches) in
        let feeder = feeders[port]!
        return Task {
            for batch in batches { await feeder.send(batch) }
            if failedInputs.contains(port) { feeder.fail() } else { feeder.finish() }
        }
    }
    var failure: (any Error)?
    do { try await stage.run(context) } catch {
        failure = error
        for (_, input) in context.allInputs { input.detach() }  // as the runtime does
    }
    for o in stageOutputs.values { if failure == nil { o.finish() } else { o.fail() } }
    for task in feederTasks { await task.value }
    var result: [String: [Message]] = [:]
    for (port, input) in collectors {
        var all: [Message] = []
        while let batch = await input.next() { all += batch }
        result[port] = all
    }
    return (result, counters.snapshot, failure)
}
