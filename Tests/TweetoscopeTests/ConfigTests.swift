import Glibc
import Testing
import TweetoscopeCore
@testable import TweetoscopeRuntime

/// Writes `text` to a new temporary file and returns its path.
func temporaryFile(_ text: String, name: String = "config.yaml") -> String {
    var template = Array("/tmp/tweetoscope-test-XXXXXX".utf8CString)
    let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    let path = dir + "/" + name
    let f = fopen(path, "w")!
    fputs(text, f)
    fclose(f)
    return path
}

/// 1-based line and column of the first occurrence of `token` on line `line` of `text`.
func position(of token: String, line: Int, in text: String) -> String {
    let l = Array(text.split(separator: "\n", omittingEmptySubsequences: false)[line - 1])
    let t = Array(token)
    let start = (0...(l.count - t.count)).first { Array(l[$0..<($0 + t.count)]) == t }!
    return "\(line):\(start + 1)"
}

@Suite struct ConfigTests {
    @Test func shippedConfigIsValid() throws {
        let (config, _) = try ConfigLoader.load(path: repositoryRoot() + "/etc/tweetoscope.yaml",
                                                pluginDirectory: buildFolder())
        #expect(config.stages.map(\.name) == ["source", "collector", "estimator", "predictor", "learner", "sink"])
        #expect(config.settings.plugins == ["replay", "collector", "estimator", "predictor", "learner", "file"])
        let collector = try #require(config.stages.first { $0.name == "collector" })
        #expect(try collector.options.ints("windows") == [600, 1200])
        #expect(try collector.options.int("terminated") == 1800)
        // Relative paths are resolved against the configuration's directory.
        let source = try #require(config.stages.first { $0.name == "source" })
        #expect(try source.options.string("path") == repositoryRoot() + "/data/sample.csv")
    }

    @Test func reportsMisspelledKeyWrongTypeAndMissingProducerWithPositions() throws {
        let text = """
            plugins: [replay, collector, file]
            stages:
              source:
                type: replay
                outputs: { tweets: tweets }
                path: \(repositoryRoot())/data/sample.csv
                seeed: 3
              collector:
                type: collector
                inputs: { tweets: tweets }
                outputs: { series: series, sizes: sizes }
                terminated: soon
              sink:
                type: file
                inputs: { streams: [series, parameters] }
                directory: out
            """
        let path = temporaryFile(text)
        let error = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.load(path: path, pluginDirectory: buildFolder())
        }
        let lines = error.diagnostics.map(\.description)
        #expect(lines.count == 3, "\(lines)")
        #expect(lines.contains("\(path):\(position(of: "seeed", line: 7, in: text)): error: unknown key of stage \"source\" (type replay) `seeed`; did you mean `seed`?"), "\(lines)")
        #expect(lines.contains { $0.hasPrefix("\(path):\(position(of: "soon", line: 12, in: text)): error: stage \"collector\": option `terminated`: expected an integer") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("\(path):\(position(of: "parameters", line: 15, in: text)): error: stage \"sink\": stream \"parameters\" (input `streams`) has no producer") }, "\(lines)")
    }

    @Test func syntaxErrorHasPosition() throws {
        let text = "stages:\n  source: [unclosed\n"
        let path = temporaryFile(text)
        let error = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.load(path: path, pluginDirectory: buildFolder())
        }
        #expect(error.diagnostics.count == 1)
        #expect(error.diagnostics[0].mark?.line == 3)
        #expect(error.diagnostics[0].message.hasPrefix("invalid YAML"))
    }

    @Test func unknownTypeAndPortAndKindMismatch() throws {
        let text = """
            stages:
              source:
                type: replai
                outputs: { tweets: tweets }
              collector:
                type: collector
                inputs: { tweetz: tweets }
                outputs: { series: series }
              sink:
                type: collector
                inputs: { tweets: series }
            """
        let path = temporaryFile(text)
        let error = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.load(path: path, pluginDirectory: buildFolder())
        }
        let lines = error.diagnostics.map(\.description)
        #expect(lines.contains { $0.contains(":3:11: error: stage \"source\": unknown stage type \"replai\"; did you mean \"replay\"?") }, "\(lines)")
        #expect(lines.contains { $0.contains(":7:15: error: stage \"collector\": unknown input port `tweetz`; did you mean `tweets`?") }, "\(lines)")
        #expect(lines.contains { $0.contains("stage \"sink\": stream \"series\" carries series but input `tweets` takes tweet") }, "\(lines)")
    }

    @Test func pathsAreNormalized() {
        #expect(normalizedPath("/a/etc/../data/./x.csv") == "/a/data/x.csv")
        #expect(normalizedPath("/a/../../b") == "/b")
        #expect(normalizedPath("rel/../../x") == "../x")
    }

    @Test func didYouMean() {
        #expect(suggestion(for: "seeed", among: ["seed", "sources"]) == "seed")
        #expect(suggestion(for: "windws", among: ["windows", "terminated"]) == "windows")
        #expect(suggestion(for: "xyz", among: ["windows", "terminated"]) == nil)
    }
}

@Suite struct PluginLoadingTests {
    @Test func unloadableFileIsNamed() throws {
        let path = temporaryFile("this is not an ELF file", name: "libtweetoscope-broken.so")
        let dir = String(path[..<path.lastIndex(of: "/")!])
        let error = try #require(throws: ConfigErrors.self) {
            try StageRegistry().loadPlugins(directory: dir, names: nil)
        }
        #expect(error.diagnostics.count == 1)
        #expect(error.diagnostics[0].message.hasPrefix("plugin \(path): cannot be loaded: "))
    }

    @Test func missingListedPluginIsNamed() throws {
        let error = try #require(throws: ConfigErrors.self) {
            try StageRegistry().loadPlugins(directory: buildFolder(), names: ["collector", "nonexistent"])
        }
        #expect(error.diagnostics.map(\.message) == [
            "plugin \(buildFolder())/libtweetoscope-nonexistent.so: file not found (listed in `plugins`)"
        ])
    }

    @Test func twoPluginsRegisteringTheSameTypeAreAnError() throws {
        let original = buildFolder() + "/libtweetoscope-collector.so"
        let first = temporaryFile("", name: "libtweetoscope-collector.so")
        let dir = String(first[..<first.lastIndex(of: "/")!])
        let second = dir + "/libtweetoscope-collector-copy.so"
        for target in [first, second] {
            #expect(system("cp '\(original)' '\(target)'") == 0)
        }
        let error = try #require(throws: ConfigErrors.self) {
            try StageRegistry().loadPlugins(directory: dir, names: nil)
        }
        #expect(error.diagnostics.map(\.message) == [
            "plugin \(first): stage type \"collector\" is already registered by \(second); remove one of the two plugins"
        ])
    }

    @Test func loadsEveryBuiltPlugin() throws {
        let registry = StageRegistry()
        try registry.loadPlugins(directory: buildFolder(), names: ["replay", "collector", "file"])
        #expect(Set(registry.types).isSuperset(of: ["replay", "jsonl", "collector", "file"]))
    }
}
