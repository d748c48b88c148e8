// swift-tools-version: 6.0
// tweetoscoped: a daemon that predicts in real time which tweets will go viral.
//
// Layout: Sources/Core is a nested package vending the dynamic TweetoscopeCore library shared by
// the daemon and all plugins; Sources/TweetoscopeRuntime is the daemon's engine (config, plugin
// loader, pipeline); Plugins/<Name> are stage plugins, each built as `libtweetoscope-<name>.so`
// and loaded at run time with dlopen.
import PackageDescription

let core: Target.Dependency = .product(name: "TweetoscopeCore", package: "Core")
/// The Kafka client, a dynamic library of its own (nested package Sources/Kafka): the daemon and
/// the Kafka plugin share one copy.
let kafka: Target.Dependency = .product(name: "TweetoscopeKafka", package: "Kafka")
let swift6: [SwiftSetting] = [.swiftLanguageMode(.v6)]
/// Plugins find libTweetoscopeCore.so one directory up once installed (/usr/lib/tweetoscope).
let pluginLinker: [LinkerSetting] = [.unsafeFlags(["-Xlinker", "-rpath=$ORIGIN/.."])]

/// A stage plugin: a target under Plugins/<dir> and its dynamic product `tweetoscope-<product>`.
func plugin(_ target: String, dir: String, product: String, deps: [Target.Dependency] = [])
    -> (Product, Target)
{
    (
        .library(name: "tweetoscope-\(product)", type: .dynamic, targets: [target]),
        .target(name: target, dependencies: [core] + deps, path: "Plugins/\(dir)",
                swiftSettings: swift6, linkerSettings: pluginLinker)
    )
}

let plugins = [
    plugin("ReplayPlugin", dir: "Replay", product: "replay", deps: ["CZlib"]),
    plugin("CollectorPlugin", dir: "Collector", product: "collector"),
    plugin("FileSinkPlugin", dir: "FileSink", product: "file"),
    plugin("EstimatorPlugin", dir: "Estimator", product: "estimator", deps: ["Hawkes"]),
    plugin("KafkaPlugin", dir: "Kafka", product: "kafka", deps: [kafka]),
    plugin("PredictorPlugin", dir: "Predictor", product: "predictor"),
    plugin("LearnerPlugin", dir: "Learner", product: "learner", deps: ["Forest"]),
]

let package = Package(
    name: "tweetoscope",
    products: [
        .executable(name: "tweetoscoped", targets: ["tweetoscoped"]),
        .executable(name: "hawkes-bench", targets: ["hawkes-bench"]),
    ] + plugins.map(\.0),
    dependencies: [
        .package(path: "Sources/Core"),
        .package(path: "Sources/Kafka"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // The /metrics HTTP endpoint (runtime only: NIO stays out of TweetoscopeCore).
        .package(url: "https://github.com/apple/swift-nio", from: "2.65.0"),
    ],
    targets: [
        .systemLibrary(name: "CYaml", path: "Sources/CYaml", pkgConfig: "yaml-0.1",
                       providers: [.apt(["libyaml-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CSystemd", path: "Sources/CSystemd", pkgConfig: "libsystemd",
                       providers: [.apt(["libsystemd-dev"])]),
        // Blocks SIGHUP/SIGINT/SIGTERM before main (a constructor of the executable).
        .target(name: "CEarlySignals", path: "Sources/CEarlySignals"),
        // glibc malloc options set before main (a constructor of the executable; issue 17).
        .target(name: "CEarlyMalloc", path: "Sources/CEarlyMalloc"),
        .target(name: "Hawkes", path: "Sources/Hawkes", swiftSettings: swift6),
        .target(name: "Forest", dependencies: [core], path: "Sources/Forest", swiftSettings: swift6),
        .executableTarget(name: "forest-bench", dependencies: ["Forest", core], path: "Sources/forest-bench",
                          swiftSettings: swift6),
        .executableTarget(name: "hawkes-bench", dependencies: ["Hawkes"], path: "Sources/hawkes-bench",
                          swiftSettings: swift6),
        .target(name: "TweetoscopeRuntime", dependencies: [core, kafka, "CYaml", "CSystemd",
                                                          .product(name: "NIOCore", package: "swift-nio"),
                                                          .product(name: "NIOPosix", package: "swift-nio"),
                                                          .product(name: "NIOHTTP1", package: "swift-nio")],
                path: "Sources/TweetoscopeRuntime", swiftSettings: swift6),
        .executableTarget(
            name: "tweetoscoped",
            dependencies: ["TweetoscopeRuntime", "CEarlySignals", "CEarlyMalloc", "Forest",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/tweetoscoped", swiftSettings: swift6,
            linkerSettings: [.unsafeFlags(["-Xlinker", "-rpath=$ORIGIN/../lib/tweetoscope"])]),
        .testTarget(name: "TweetoscopeTests", dependencies: ["TweetoscopeRuntime", kafka],
                    path: "Tests/TweetoscopeTests", swiftSettings: swift6),
        .testTarget(name: "HawkesTests", dependencies: ["Hawkes"], path: "Tests/HawkesTests",
                    swiftSettings: swift6),
        .testTarget(name: "ForestTests", dependencies: ["Forest"], path: "Tests/ForestTests",
                    swiftSettings: swift6),
    ] + plugins.map(\.1)
)
