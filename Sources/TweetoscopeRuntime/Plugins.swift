// Loading stage plugins (`libtweetoscope-<name>.so`) with dlopen and keeping their stage types.
import Glibc
import TweetoscopeCore

/// Where plugins are found and how they are named.
public enum PluginLoader {
    /// File name prefix and suffix of a plugin: `libtweetoscope-<name>.so`.
    public static let prefix = "libtweetoscope-"
    public static let suffix = ".so"

    /// The installed plugin directory.
    public static let installedDirectory = "/usr/lib/tweetoscope/plugins"

    /// The plugin directory used when the configuration names none: next to the executable's
    /// private library folder when installed (`$ORIGIN/../lib/tweetoscope/plugins`), else the
    /// executable's own folder when it holds plugins (a development build: `.build/<config>/`),
    /// else the installed directory.
    public static func defaultDirectory() -> String {
        let exe = executableDirectory()
        let installed = exe + "/../lib/tweetoscope/plugins"
        if access(installed, F_OK) == 0 { return canonical(installed) }
        if !pluginFiles(in: exe).isEmpty { return exe }
        return installedDirectory
    }

    /// The plugin files of `directory`, sorted by name.
    public static func pluginFiles(in directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name.hasPrefix(prefix), name.hasSuffix(suffix) { names.append(name) }
        }
        return names.sorted().map { directory + "/" + $0 }
    }

    /// The plugin name of a file: `replay` for `.../libtweetoscope-replay.so`.
    public static func pluginName(_ path: String) -> String {
        let file = path.split(separator: "/").last.map(String.init) ?? path
        return String(file.dropFirst(prefix.count).dropLast(suffix.count))
    }

    static func executableDirectory() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return "." }
        let path = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
    }

    static func canonical(_ path: String) -> String {
        guard let resolved = realpath(path, nil) else { return path }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}

/// The stage types registered by the loaded plugins, with the file each came from.
public final class StageRegistry: @unchecked Sendable {
    // Filled once at start-up (loadPlugins/register), read-only afterwards.
    private var entries: [String: (descriptor: StageDescriptor, file: String)] = [:]
    /// The plugin files loaded, in order.
    public private(set) var files: [String] = []

    public init() {}

    public var isEmpty: Bool { entries.isEmpty }

    /// The registered stage types, sorted.
    public var types: [String] { entries.keys.sorted() }

    /// The descriptor of `type` and the plugin file that registered it.
    public func lookup(_ type: String) -> (StageDescriptor, String)? {
        entries[type].map { ($0.descriptor, $0.file) }
    }

    /// Registers a descriptor coming from `file`.
    /// - Throws: `ConfigErrors` when another plugin already registered the same type.
    public func register(_ descriptor: StageDescriptor, from file: String) throws {
        if let existing = entries[descriptor.type] {
            throw ConfigErrors([ConfigDiagnostic(nil,
                "plugin \(file): stage type \"\(descriptor.type)\" is already registered by \(existing.file); remove one of the two plugins")])
        }
        entries[descriptor.type] = (descriptor, file)
        for metric in descriptor.metrics {
            TweetoscopeMetrics.describe(metric.name, help: metric.help, buckets: metric.buckets)
        }
    }

    /// Loads plugins from `directory`: the ones in `names` (each must exist) or every plugin file.
    ///
    /// - Throws: `ConfigErrors` naming each file that is missing, cannot be loaded, has no entry
    ///   point, was built for another plugin ABI, or registers a type already registered.
    public func loadPlugins(directory: String, names: [String]?) throws {
        var errors: [ConfigDiagnostic] = []
        var paths: [String]
        if let names {
            paths = names.map { "\(directory)/\(PluginLoader.prefix)\($0)\(PluginLoader.suffix)" }
            for path in paths where access(path, F_OK) != 0 {
                errors.append(ConfigDiagnostic(nil, "plugin \(path): file not found (listed in `plugins`)"))
            }
            paths = paths.filter { access($0, F_OK) == 0 }
        } else {
            paths = PluginLoader.pluginFiles(in: directory)
            if paths.isEmpty {
                var isDirectory = stat()
                let exists = stat(directory, &isDirectory) == 0
                errors.append(ConfigDiagnostic(nil, exists
                    ? "plugin directory \(directory) holds no \(PluginLoader.prefix)*\(PluginLoader.suffix) plugin"
                    : "plugin directory \(directory) does not exist (set `plugin_dir` or --plugin-dir)"))
            }
        }
        for path in paths {
            do {
                try load(path)
            } catch let e as ConfigErrors {
                errors += e.diagnostics
            }
        }
        if !errors.isEmpty { throw ConfigErrors(errors) }
    }

    /// Loads one plugin file and registers its stage types.
    public func load(_ path: String) throws {
        // Swift images are never unloaded (dlclose would break type metadata), so no handle is kept.
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown error"
            throw ConfigErrors([ConfigDiagnostic(nil, "plugin \(path): cannot be loaded: \(reason)")])
        }
        guard let symbol = dlsym(handle, PluginABI.entrySymbol) else {
            throw ConfigErrors([ConfigDiagnostic(nil,
                "plugin \(path): not a tweetoscope plugin (no `\(PluginABI.entrySymbol)` entry point)")])
        }
        let registrar = PluginRegistrar()
        let entry = unsafeBitCast(symbol, to: PluginABI.RegisterFunction.self)
        let status = entry(PluginABI.version, Unmanaged.passUnretained(registrar).toOpaque())
        guard status == 0 else {
            throw ConfigErrors([ConfigDiagnostic(nil,
                "plugin \(path): built for plugin ABI \(status), this daemon has ABI \(PluginABI.version); rebuild the plugin with this daemon")])
        }
        if registrar.descriptors.isEmpty {
            throw ConfigErrors([ConfigDiagnostic(nil, "plugin \(path): registers no stage type")])
        }
        files.append(path)
        for descriptor in registrar.descriptors { try register(descriptor, from: path) }
    }
}
