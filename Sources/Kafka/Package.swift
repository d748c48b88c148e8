// swift-tools-version: 6.0
// The Kafka client of tweetoscoped: one *dynamic* library (over librdkafka) that the daemon (for
// `top` and `version`) and the Kafka plugin both link, so that it exists once per process (a
// target dependency would be copied into each image; see Sources/Core/Package.swift). It links
// TweetoscopeCore, whose logging it uses.
import PackageDescription

let package = Package(
    name: "Kafka",
    products: [
        .library(name: "TweetoscopeKafka", type: .dynamic, targets: ["TweetoscopeKafka"])
    ],
    dependencies: [
        .package(path: "../Core"),
    ],
    targets: [
        .systemLibrary(name: "CRdKafka", path: "CRdKafka", pkgConfig: "rdkafka",
                       providers: [.apt(["librdkafka-dev"])]),
        .target(
            name: "TweetoscopeKafka",
            dependencies: [.product(name: "TweetoscopeCore", package: "Core"), "CRdKafka"],
            path: "TweetoscopeKafka",
            swiftSettings: [.swiftLanguageMode(.v6)],
            // Installed beside libTweetoscopeCore.so (/usr/lib/tweetoscope).
            linkerSettings: [.unsafeFlags(["-Xlinker", "-rpath=$ORIGIN"])]
        ),
    ]
)
