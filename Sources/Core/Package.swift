// swift-tools-version: 6.0
// The shared core of tweetoscoped: one *dynamic* library that the daemon and every stage plugin
// link, so that message types, the stage registry and the logging system exist once per process
// (see swift-platform.md §1: a target dependency would be copied into each image).
import PackageDescription

let package = Package(
    name: "Core",
    products: [
        .library(name: "TweetoscopeCore", type: .dynamic, targets: ["TweetoscopeCore"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0")
    ],
    targets: [
        .target(
            name: "TweetoscopeCore",
            dependencies: [.product(name: "Logging", package: "swift-log")],
            path: "TweetoscopeCore",
            swiftSettings: [.swiftLanguageMode(.v6)]
        )
    ]
)
