// swift-tools-version: 6.0
// The shared core of tweetoscoped: one *dynamic* library that the daemon and every stage plugin
// link, so that message types, the stage registry, the logging system and the metrics system exist
// once per process (see swift-platform.md §1: a target dependency would be copied into each image).
// swift-metrics (the API) and swift-prometheus (its backend) live here ONLY: plugins and the daemon
// get them through TweetoscopeCore, so there is exactly one CoreMetrics (one MetricsSystem) and one
// Prometheus registry in the process. swift-service-lifecycle (which links swift-log) is here for
// the same reason, although only the daemon's runtime uses it.
import PackageDescription

let package = Package(
    name: "Core",
    products: [
        .library(name: "TweetoscopeCore", type: .dynamic, targets: ["TweetoscopeCore"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // The daemon's lifecycle (ServiceGroup, signals). It links swift-log, so it lives here,
        // beside the one copy of Logging; only the runtime imports it.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        .target(
            name: "TweetoscopeCore",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            path: "TweetoscopeCore",
            swiftSettings: [.swiftLanguageMode(.v6)]
        )
    ]
)
