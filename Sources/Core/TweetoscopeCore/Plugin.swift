// The runtime plugin ABI: a plugin is a shared object exporting one C entry point,
// `tweetoscope_plugin_register(abi, registrar)`, that registers its stage types.

/// Collects the stage types a plugin registers while it is being loaded.
public final class PluginRegistrar: @unchecked Sendable {
    // Used by one thread at a time: the daemon's loader, during the entry-point call.
    public private(set) var descriptors: [StageDescriptor] = []

    public init() {}

    /// Registers one stage type.
    public func register(_ descriptor: StageDescriptor) {
        descriptors.append(descriptor)
    }
}

/// The contract between the daemon and its plugins.
public enum PluginABI {
    /// Bumped whenever TweetoscopeCore's types or the stage API change incompatibly. A plugin
    /// built against another version refuses to register and the daemon names the file.
    public static let version: UInt32 = 7

    /// The C symbol every plugin exports.
    public static let entrySymbol = "tweetoscope_plugin_register"

    /// Signature of the entry point: `(daemon's ABI version, unretained PluginRegistrar) -> status`;
    /// status 0 means registered, any other value is the plugin's own ABI version.
    public typealias RegisterFunction = @convention(c) (UInt32, UnsafeMutableRawPointer) -> Int32

    /// Implements a plugin's entry point: checks the ABI version, then lets `body` register.
    ///
    /// ```swift
    /// @_cdecl("tweetoscope_plugin_register")
    /// public func tweetoscopePluginRegister(_ abi: UInt32, _ registrar: UnsafeMutableRawPointer) -> Int32 {
    ///     PluginABI.entry(abi, registrar) { $0.register(MyStage.descriptor) }
    /// }
    /// ```
    public static func entry(_ abi: UInt32, _ registrar: UnsafeMutableRawPointer,
                             _ body: (PluginRegistrar) -> Void) -> Int32 {
        guard abi == version else { return Int32(bitPattern: version) }
        body(Unmanaged<PluginRegistrar>.fromOpaque(registrar).takeUnretainedValue())
        return 0
    }
}
