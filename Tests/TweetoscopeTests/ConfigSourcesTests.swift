// Environment interpolation, configuration directories and `_file` secrets (issue 15).
import Glibc
import Testing
import TweetoscopeCore
@testable import TweetoscopeRuntime

/// A new empty temporary directory.
func temporaryDirectory() -> String {
    var template = Array("/tmp/tweetoscope-test-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}

/// Writes `text` to `path`.
func writeFile(_ path: String, _ text: String) {
    let f = fopen(path, "w")!
    fputs(text, f)
    fclose(f)
}

@Suite struct InterpolationTests {
    let env = ["BROKERS": "kafka-1:9092,kafka-2:9092", "EMPTY": "", "PORT": "9464"]
    let mark = SourceMark(file: "t.yaml", line: 4, column: 14)

    func expand(_ text: String, plain: Bool = true) -> (String, [ConfigDiagnostic], [String]) {
        var errors: [ConfigDiagnostic] = []
        var sources: [String] = []
        let out = Interpolator(environment: env).expand(text, plain: plain, mark: mark, errors: &errors, sources: &sources)
        return (out, errors, sources)
    }

    @Test func setVariables() {
        #expect(expand("${BROKERS}").0 == "kafka-1:9092,kafka-2:9092")
        #expect(expand("ingest-$PORT-x").0 == "ingest-9464-x")
        #expect(expand("a${PORT}b${PORT}").0 == "a9464b9464")
        #expect(expand("${BROKERS}").2 == ["${BROKERS} from the environment"])
    }

    @Test func defaults() {
        #expect(expand("${MISSING:-localhost:9092}").0 == "localhost:9092")
        #expect(expand("${EMPTY:-fallback}").0 == "fallback")        // `:-`: empty counts as unset
        #expect(expand("${EMPTY-fallback}").0 == "")                 // `-`: only unset
        #expect(expand("${MISSING-fallback}").0 == "fallback")
        #expect(expand("${PORT:-1}").0 == "9464")
        #expect(expand("${MISSING:-}").0 == "")
        #expect(expand("${MISSING:-x}").2 == ["${MISSING:-x} from its default (MISSING unset)"])
    }

    @Test func escapes() {
        #expect(expand("$$HOME").0 == "$HOME")
        #expect(expand("cost: 5$").0 == "cost: 5$")
        #expect(expand("$$${PORT}").0 == "$9464")
        #expect(expand("a $ b").1.isEmpty)
    }

    @Test func unsetWithoutDefaultIsAnErrorAtItsPosition() {
        let (_, errors, _) = expand("host-${NOPE}")
        #expect(errors.count == 1)
        // `${` is the 6th character of a plain scalar starting at column 14.
        #expect(errors[0].description == "t.yaml:4:19: error: environment variable NOPE is not set (use ${NOPE:-default} for a default)")
        // In a quoted scalar the text starts one column after the quote.
        #expect(expand("${NOPE}", plain: false).1[0].mark == SourceMark(file: "t.yaml", line: 4, column: 15))
        #expect(expand("$NOPE").1[0].mark?.column == 14)
    }

    @Test func requiredMessage() {
        let (_, errors, _) = expand("${EMPTY:?set EMPTY to the SASL user}")
        #expect(errors.map(\.message) == ["environment variable EMPTY is empty: set EMPTY to the SASL user"])
        #expect(expand("${EMPTY?must be set}").1.isEmpty)  // `?`: only unset is an error
        #expect(expand("${MISSING?must be set}").1.map(\.message) == ["environment variable MISSING is not set: must be set"])
        #expect(expand("${BROKERS:?x}").0 == "kafka-1:9092,kafka-2:9092")
    }

    @Test func malformedReferences() {
        #expect(expand("${PORT").1.first?.message.hasPrefix("unterminated ${") == true)
        #expect(expand("${}").1.first?.message.hasPrefix("${}: expected a variable name") == true)
        #expect(expand("${PORT:+x}").1.first?.message.hasPrefix("${PORT:+x}: unknown form") == true)
    }

    @Test func keysAreNotInterpolatedAndTypesFollowTheExpandedText() throws {
        let text = """
            log_level: ${LEVEL:-notice}
            progress_interval: ${PERIOD}
            metrics:
              listen: "127.0.0.1:${PORT}"
            ${NOT_A_KEY}: 1
            stages: {}
            """
        var errors: [ConfigDiagnostic] = []
        var notes: [SourceMark: InterpolationNote] = [:]
        let root = try #require(try parseYAML(text, file: "t.yaml"))
        let expanded = Interpolator(environment: ["PERIOD": "2.5", "PORT": "9999"]).interpolate(root, errors: &errors, notes: &notes)
        #expect(errors.isEmpty)
        var settingErrors: [ConfigDiagnostic] = []
        let settings = ConfigLoader.parseSettings(root: expanded, errors: &settingErrors)
        #expect(settings.logLevel == .notice)
        #expect(settings.progressInterval == 2.5)
        #expect(settings.metrics?.port == 9999)
        #expect(settingErrors.map(\.message) == ["unknown top-level key `${NOT_A_KEY}` (expected one of: \(topLevelKeys.joined(separator: ", ")))"])
    }
}

@Suite struct ConfigSourcesTests {
    /// A stage entry of the replay plugin reading the sample.
    func source(_ name: String, out: String) -> String {
        "  \(name):\n    type: replay\n    outputs: { tweets: \(out) }\n    path: \(repositoryRoot())/data/sample.csv\n"
    }

    @Test func directoryFilesAreMergedInLexicalOrder() throws {
        let dir = temporaryDirectory()
        writeFile(dir + "/20-sink.yaml", "stages:\n  sink:\n    type: file\n    inputs: { streams: [series] }\n    directory: out\n")
        writeFile(dir + "/10-collector.yaml", "stages:\n  collector:\n    type: collector\n    inputs: { tweets: tweets }\n    outputs: { series: series }\n")
        writeFile(dir + "/ignored.yml", "not: yaml of ours\n")
        writeFile(dir + "/.hidden.yaml", "stages: {bad: 1}\n")
        let main = temporaryFile("plugins: [replay, collector, file]\nstages:\n" + source("source", out: "tweets"))
        let sources = ConfigSources(paths: [main, dir])
        #expect(try sources.files() == [main, dir + "/10-collector.yaml", dir + "/20-sink.yaml"])
        let (config, _) = try ConfigLoader.load(sources: sources, pluginDirectory: buildFolder())
        #expect(config.stages.map(\.name) == ["source", "collector", "sink"])
        // A relative path is relative to the directory of its own file.
        let sink = try #require(config.stages.first { $0.name == "sink" })
        #expect(try sink.options.string("directory") == dir + "/out")
    }

    @Test func stageDefinedInTwoFilesNamesBothFilesAndLines() throws {
        let dir = temporaryDirectory()
        writeFile(dir + "/a.yaml", "plugins: [replay]\nstages:\n" + source("source", out: "tweets"))
        writeFile(dir + "/b.yaml", "# drop-in\n\nstages:\n" + source("source", out: "other"))
        let error = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.load(sources: ConfigSources(paths: [dir]), pluginDirectory: buildFolder())
        }
        #expect(error.diagnostics.map(\.description)
            == ["\(dir)/b.yaml:4:3: error: stage \"source\" is defined twice: first at \(dir)/a.yaml:3:3, again here"])
    }

    @Test func settingInTwoFilesIsAnError() throws {
        let dir = temporaryDirectory()
        writeFile(dir + "/a.yaml", "log_level: info\nplugins: [replay]\nstages:\n" + source("source", out: "tweets"))
        writeFile(dir + "/b.yaml", "log_level: debug\n")
        let error = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.load(sources: ConfigSources(paths: [dir]), pluginDirectory: buildFolder())
        }
        #expect(error.diagnostics.map(\.description)
            == ["\(dir)/b.yaml:1:1: error: `log_level` is set in two files: first at \(dir)/a.yaml:1:1, again here (set it once)"])
    }

    @Test func missingPathsAndTheDevelopmentHint() throws {
        let error = try #require(throws: ConfigErrors.self) { try ConfigSources(paths: ["/nonexistent/x.yaml"]).files() }
        #expect(error.description == "error: cannot read /nonexistent/x.yaml: No such file or directory")
        let empty = temporaryDirectory()
        #expect(throws: ConfigErrors.self) { try ConfigSources(paths: [empty]).files() }
        if access(ConfigSources.defaultFile, F_OK) != 0 {
            let e = try #require(throws: ConfigErrors.self) { try ConfigSources().files() }
            #expect(e.description.contains("pass --config FILE (on a development checkout: --config etc/tweetoscope.yaml)"))
        }
    }

    @Test func errorsOnInterpolatedValuesNameTheirSource() throws {
        let text = "plugins: [replay]\nstages:\n" + source("source", out: "tweets") + "    seed: ${SEED:-many}\n    time_acceleration: ${SPEED}\n"
        let path = temporaryFile(text)
        let error = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.load(sources: ConfigSources(file: path), pluginDirectory: buildFolder(), environment: ["SPEED": "fast"])
        }
        let lines = error.diagnostics.map(\.description)
        #expect(lines.contains("\(path):7:11: error: stage \"source\": option `seed`: expected an integer, found scalar \"many\" (value interpolated: ${SEED:-many} from its default (SEED unset))"), "\(lines)")
        #expect(lines.contains("\(path):8:24: error: stage \"source\": option `time_acceleration`: expected a number, found scalar \"fast\" (value interpolated: ${SPEED} from the environment)"), "\(lines)")
        #expect(lines.count == 2, "\(lines)")
        // Unset without a default: an error at the reference.
        let unset = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.load(sources: ConfigSources(file: path), pluginDirectory: buildFolder(), environment: [:])
        }
        #expect(unset.diagnostics.map(\.description).contains("\(path):8:24: error: environment variable SPEED is not set (use ${SPEED:-default} for a default)"))
    }
}

@Suite struct SecretFileTests {
    let password = "s3cr3t-Pa55word"

    func kafkaConfig(_ librdkafka: String) -> String {
        """
        plugins: [kafka, file]
        stages:
          source:
            type: kafka_source
            brokers: 127.0.0.1:1
            topic: tweets
            outputs: { messages: tweets }
            librdkafka:
              security.protocol: SASL_PLAINTEXT
              sasl.mechanism: PLAIN
              sasl.username: tweetoscope
        \(librdkafka)
          sink:
            type: file
            inputs: { streams: [tweets] }
            directory: out
        """
    }

    @Test func passwordFileContentWithoutTrailingNewline() throws {
        let dir = temporaryDirectory()
        writeFile(dir + "/kafka-password", password + "\n")
        let path = temporaryFile(kafkaConfig("      sasl.password_file: \(dir)/kafka-password"))
        let (config, _) = try ConfigLoader.load(sources: ConfigSources(file: path), pluginDirectory: buildFolder())
        let source = try #require(config.stages.first { $0.name == "source" })
        #expect(try source.options.stringMap("librdkafka")["sasl.password"] == password)
        #expect(try source.options.stringMap("librdkafka")["sasl.password_file"] == nil)
        // Never shown: the option text redacts it.
        #expect(source.optionText["librdkafka"]?.contains(password) == false)
        #expect(source.optionText["librdkafka"]?.contains("sasl.password: ***") == true)
    }

    @Test func systemdCredentialsDirectory() throws {
        // LoadCredential=kafka-password:/etc/tweetoscope/kafka-password gives the service
        // $CREDENTIALS_DIRECTORY/kafka-password.
        let credentials = temporaryDirectory()
        writeFile(credentials + "/kafka-password", password + "\r\n")
        let path = temporaryFile(kafkaConfig("      sasl.password_file: ${CREDENTIALS_DIRECTORY}/kafka-password"))
        let (config, _) = try ConfigLoader.load(sources: ConfigSources(file: path), pluginDirectory: buildFolder(),
                                                environment: ["CREDENTIALS_DIRECTORY": credentials])
        let source = try #require(config.stages.first { $0.name == "source" })
        #expect(try source.options.stringMap("librdkafka")["sasl.password"] == password)
    }

    @Test func secretFileErrorsNeverShowTheSecret() throws {
        let dir = temporaryDirectory()
        writeFile(dir + "/empty", "\n")
        for (line, expected) in [
            ("      sasl.password_file: \(dir)/missing", "cannot read the secret file \(dir)/missing: No such file or directory"),
            ("      sasl.password_file: \(dir)/empty", "the secret file \(dir)/empty is empty"),
            ("      sasl.password: \(password)\n      sasl.password_file: \(dir)/empty", "the secret file \(dir)/empty is empty"),
        ] {
            let error = try #require(throws: ConfigErrors.self) {
                try ConfigLoader.load(sources: ConfigSources(file: temporaryFile(kafkaConfig(line))), pluginDirectory: buildFolder())
            }
            #expect(error.diagnostics.contains { $0.message.contains(expected) }, "\(error)")
            #expect(!error.description.contains(password))
        }
        writeFile(dir + "/pw", password)
        let both = try #require(throws: ConfigErrors.self) {
            try ConfigLoader.load(sources: ConfigSources(file: temporaryFile(kafkaConfig("      sasl.password: \(password)\n      sasl.password_file: \(dir)/pw"))),
                                  pluginDirectory: buildFolder())
        }
        #expect(both.diagnostics.map(\.message) == ["stage \"source\": option `librdkafka`: give `sasl.password` or `sasl.password_file`, not both"])
        #expect(!both.description.contains(password))
    }

    final class NoopStage: Stage {
        func run(_ context: StageContext) async throws {}
    }

    @Test func optionDeclaredSecretFromFile() throws {
        let registry = StageRegistry()
        try registry.register(StageDescriptor(
            type: "vault", summary: "a stage with a secret option", inputs: [], outputs: [],
            options: [OptionSpec("token", .string, required: true, secret: true, doc: "API token")],
            make: { _, _ in NoopStage() }), from: "test")
        let dir = temporaryDirectory()
        writeFile(dir + "/token", password + "\n")
        func validate(_ yaml: String) throws -> ([StageConfig], [ConfigDiagnostic]) {
            var errors: [ConfigDiagnostic] = []
            let root = try #require(try parseYAML(yaml, file: "s.yaml"))
            return (ConfigLoader.validateStages(root: root, registry: registry, errors: &errors), errors)
        }
        let (stages, errors) = try validate("stages:\n  v:\n    type: vault\n    token_file: \(dir)/token\n")
        #expect(errors.isEmpty, "\(errors)")
        #expect(try stages[0].options.string("token") == password)
        #expect(stages[0].optionText["token"] == "<secret>")
        let (_, both) = try validate("stages:\n  v:\n    type: vault\n    token: \(password)\n    token_file: \(dir)/token\n")
        #expect(both.map(\.description) == ["s.yaml:5:5: error: stage \"v\": give `token` or `token_file`, not both (`token` is at s.yaml:4:5)"])
        // `_file` is only accepted for options declared secret.
        let (_, unknown) = try validate("stages:\n  v:\n    type: vault\n    token: x\n    type_file: y\n")
        #expect(unknown.count == 1 && unknown[0].message.hasPrefix("unknown key of stage \"v\" (type vault) `type_file`"))
    }
}
