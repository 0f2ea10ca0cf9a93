// swift-tools-version: 6.1
// Steer: a promptable retrieval server. Layering (lower never imports higher):
// C modules → SteerCore → {SteerStore, SteerIndex, SteerModel, SteerProtocol} → SteerData → {SteerBuilder, SteerEngine}
//   → SteerService → SteerServer → SteerRouter → executables; SteerClient → SteerProtocol only
//   (docs/architecture.md).
import PackageDescription

// MARK: - Shared settings

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

/// Native code on hot paths is compiled optimised in every configuration: at -O0 (SwiftPM's debug
/// default) the distance kernels and the HNSW scan run several times slower than faiss's scalar code.
let optimisedCxx: [CXXSetting] = [
    .unsafeFlags(["-O3", "-fno-math-errno"]),
]

// MARK: - Package

let package = Package(
    name: "Steer",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "steer", targets: ["steer"]),
        .library(name: "SteerCore", targets: ["SteerCore"]),
        .library(name: "SteerStore", targets: ["SteerStore"]),
        .library(name: "SteerIndex", targets: ["SteerIndex"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        // MARK: server (SteerServer, SteerClient, steer serve)
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        // MARK: benchmarks (steer-bench)
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // MARK: C modules

        .systemLibrary(
            name: "CRocksDB",
            pkgConfig: "rocksdb",
            providers: [.apt(["librocksdb-dev"])]
        ),
        // HDF5 (ann-benchmarks files) for the benchmark tools only: Benchmarks/steer-bench/Kit.
        .systemLibrary(
            name: "CHDF5",
            pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]
        ),
        .systemLibrary(
            name: "CBLAS",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // Replaces libfaiss 1.7.3's scalar distance kernels (docs/dependencies.md); links faiss for its self-test.
        .target(
            name: "CFaissKernels",
            cxxSettings: optimisedCxx,
            linkerSettings: [
                .linkedLibrary("faiss"),
                .linkedLibrary("gomp"),
                .linkedLibrary("openblas"),
                .linkedLibrary("m"),
            ]
        ),
        // Packed small-M dense layers for SteerModel (MiniLM on a few tokens); -O3 in every configuration.
        .target(
            name: "CModelKernels",
            cSettings: [.unsafeFlags(["-O3", "-fno-math-errno"])],
            linkerSettings: [.linkedLibrary("m"), .linkedLibrary("mvec", .when(platforms: [.linux]))]
        ),
        .target(
            name: "CFaissShim",
            dependencies: ["CFaissKernels"],
            cxxSettings: optimisedCxx + [.headerSearchPath("compat")],
            linkerSettings: [
                .linkedLibrary("faiss"),
                .linkedLibrary("gomp"),
                .linkedLibrary("openblas"),
                .linkedLibrary("m"),
            ]
        ),

        // MARK: Swift libraries

        .target(name: "SteerCore", swiftSettings: swiftSettings),
        .target(name: "SteerStore", dependencies: ["SteerCore", "CRocksDB"], swiftSettings: swiftSettings),
        .target(name: "SteerIndex", dependencies: ["SteerCore", "CFaissShim"], swiftSettings: swiftSettings),
        .target(name: "SteerModel", dependencies: ["SteerCore", "CBLAS", "CModelKernels"], swiftSettings: swiftSettings),
        .target(
            name: "SteerEngine",
            dependencies: ["SteerCore", "SteerStore", "SteerIndex", "SteerModel", "SteerData"],
            swiftSettings: swiftSettings
        ),
        // The data directory's owner: its layout, the version registry, the collection catalog, and catching
        // a loaded generation up with the store (used by the engine's swap and by `steer-index verify`).
        .target(name: "SteerData", dependencies: ["SteerCore", "SteerStore", "SteerIndex"], swiftSettings: swiftSettings),
        // Index builder and checkpoint ingest logic (Tools/steer-index, `steer ingest`), kept in a library for tests.
        .target(
            name: "SteerBuilder",
            dependencies: ["SteerCore", "SteerStore", "SteerIndex", "SteerModel", "SteerData"],
            swiftSettings: swiftSettings
        ),

        // MARK: Server, protocol and client

        // The wire codec: JSON, request decoding and encoding, answer fragments. Imports SteerCore only, so the
        // client and the fuzz target link neither FAISS nor RocksDB.
        .target(name: "SteerProtocol", dependencies: ["SteerCore"], swiftSettings: swiftSettings),
        // Request handling over the engine: authorisation, execution, answers, per-op statistics, write log.
        .target(name: "SteerService", dependencies: ["SteerCore", "SteerData", "SteerEngine", "SteerProtocol"], swiftSettings: swiftSettings),
        .target(
            name: "SteerServer",
            dependencies: [
                "SteerCore", "SteerEngine", "SteerProtocol", "SteerService",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(name: "SteerClient", dependencies: ["SteerCore", "SteerProtocol"], swiftSettings: swiftSettings),
        // A small NATS + JetStream client over SwiftNIO (docs/nats.md): the replicated write log's transport.
        .target(
            name: "SteerNATS",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // A shard's write log on NATS JetStream: stream names, message bodies, publishing (docs/scaling.md),
        // shared by `steer serve --follow` and `steer route --follow`.
        .target(
            name: "SteerWriteLog",
            dependencies: ["SteerCore", "SteerProtocol", "SteerNATS"],
            swiftSettings: swiftSettings
        ),
        // `steer route`: fans requests out to shard servers (docs/scaling.md).
        .target(
            name: "SteerRouter",
            dependencies: [
                "SteerCore", "SteerEngine", "SteerProtocol", "SteerService", "SteerServer", "SteerClient", "SteerWriteLog",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: Executables

        .executableTarget(
            name: "steer",
            dependencies: [
                "SteerCore", "SteerStore", "SteerIndex", "SteerModel", "SteerData", "SteerEngine", "SteerBuilder",
                "SteerProtocol", "SteerService", "SteerServer", "SteerRouter", "SteerNATS", "SteerWriteLog", "CBLAS", "CFaissKernels",
                "CRocksDB",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),

        .executableTarget(
            name: "steer-index",
            dependencies: [
                "SteerCore", "SteerStore", "SteerIndex", "SteerData", "SteerBuilder",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tools/steer-index",
            swiftSettings: swiftSettings
        ),

        // Server benchmark (Benchmarks/server/results.md): the Swift client through `steer serve` vs in-process.
        .executableTarget(
            name: "steer-server-bench",
            dependencies: ["SteerClient", "SteerProtocol", "SteerEngine", "SteerIndex", "SteerCore"],
            path: "Benchmarks/server/bench",
            swiftSettings: swiftSettings
        ),

        // Crash-test helper for SteerStoreTests: writes synced batches until killed.
        // The foundation benchmark's driver (Benchmarks/index/run.sh): data generation and SteerIndex timings.
        .executableTarget(
            name: "steer-index-bench",
            dependencies: [
                "SteerCore", "SteerIndex", "CFaissKernels", "SteerBenchKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/index-bench",
            swiftSettings: swiftSettings
        ),

        // Filtered recall per plan and rescoring recall vs oversample, in process (Benchmarks/filter/run.sh).
        .executableTarget(
            name: "steer-filter-bench",
            dependencies: ["SteerEngine", "SteerIndex", "SteerCore"],
            path: "Benchmarks/filter/bench",
            swiftSettings: swiftSettings
        ),

        // Recommend latency through `steer serve --checkpoint` (Benchmarks/recommend/run.sh).
        .executableTarget(
            name: "steer-recommend-bench",
            dependencies: ["SteerClient", "SteerCore"],
            path: "Benchmarks/recommend/bench",
            swiftSettings: swiftSettings
        ),

        // The load generator's testable parts: arrival schedules, process CPU accounting, ann-benchmarks HDF5 files.
        .target(
            name: "SteerBenchKit",
            dependencies: ["SteerCore", "CHDF5"],
            path: "Benchmarks/steer-bench/Kit",
            swiftSettings: swiftSettings
        ),
        // The load generator (Benchmarks/steer-bench/run.sh, docs/benchmarks.md): closed/open loop, recall, JSON reports.
        .executableTarget(
            name: "steer-bench",
            dependencies: [
                "SteerBenchKit", "SteerClient", "SteerProtocol", "SteerModel", "SteerCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Benchmarks/steer-bench/Sources",
            swiftSettings: swiftSettings
        ),

        // Publish-with-ack throughput of SteerNATS against one nats-server (Benchmarks/nats/run.sh).
        .executableTarget(
            name: "steer-nats-bench",
            dependencies: ["SteerNATS"],
            path: "Benchmarks/nats/bench",
            swiftSettings: swiftSettings
        ),

        .executableTarget(
            name: "steer-store-crashtest",
            dependencies: ["SteerStore", "SteerCore"],
            path: "Tests/Tools/store-crashtest",
            swiftSettings: swiftSettings
        ),

        // MARK: Tests

        .testTarget(name: "SteerCoreTests", dependencies: ["SteerCore"], swiftSettings: swiftSettings),
        .testTarget(name: "CFaissKernelsTests", dependencies: ["CFaissKernels"], swiftSettings: swiftSettings),
        .testTarget(name: "SteerStoreTests", dependencies: ["SteerStore", "SteerCore"], swiftSettings: swiftSettings),
        .testTarget(name: "SteerIndexTests", dependencies: ["SteerIndex", "SteerCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "SteerModelTests",
            dependencies: ["SteerModel", "SteerCore", "CModelKernels"],
            exclude: ["Fixtures"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SteerBuilderTests",
            dependencies: ["SteerBuilder", "SteerData", "SteerIndex", "SteerStore", "SteerCore"],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "SteerEngineTests", dependencies: ["SteerEngine", "SteerBuilder", "SteerData", "SteerStore", "SteerIndex", "SteerCore"], swiftSettings: swiftSettings),
        .testTarget(name: "SteerProtocolTests", dependencies: ["SteerProtocol", "SteerCore"], swiftSettings: swiftSettings),
        .testTarget(name: "SteerServiceTests", dependencies: ["SteerService", "SteerData", "SteerProtocol", "SteerEngine", "SteerCore"], swiftSettings: swiftSettings),
        .testTarget(name: "SteerServerTests", dependencies: ["SteerServer", "SteerService", "SteerClient", "SteerProtocol", "SteerEngine", "SteerCore"], swiftSettings: swiftSettings),
        // Runs against real `nats-server` processes (one node and a 3-node cluster on loopback ports).
        .testTarget(
            name: "SteerNATSTests",
            dependencies: [
                "SteerNATS",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "SteerBenchKitTests", dependencies: ["SteerBenchKit", "SteerCore"], swiftSettings: swiftSettings),
        .testTarget(name: "SteerRouterTests", dependencies: ["SteerRouter", "SteerWriteLog", "SteerProtocol", "SteerEngine", "SteerCore", "SteerServer",
                                                      .product(name: "NIOCore", package: "swift-nio"),
                                                      .product(name: "NIOPosix", package: "swift-nio")], swiftSettings: swiftSettings),
        // Runs the built `steer` binary over real TCP (depends on the client only; finds the binary beside the test bundle).
        .testTarget(name: "SteerEndToEndTests", dependencies: ["SteerClient", "SteerProtocol", "SteerCore", "SteerNATS"], swiftSettings: swiftSettings),
    ],
    cxxLanguageStandard: .cxx17
)

// MARK: - Fuzzing (opt-in)

// libFuzzer targets for the request decoder and the write-log message decoder, built only with
// STEER_FUZZ=1 by Tests/Fuzz/run.sh (`-sanitize=fuzzer`; their entry points hand over to libFuzzer's
// driver, so normal builds must not see them). Both link SteerProtocol and SteerCore only.
if Context.environment["STEER_FUZZ"] == "1" {
    for (name, path) in [("steer-fuzz-request", "Tests/Fuzz/RequestFuzz"), ("steer-fuzz-writelog", "Tests/Fuzz/WriteLogFuzz")] {
        package.targets.append(
            .executableTarget(name: name, dependencies: ["SteerCore", "SteerProtocol"], path: path, swiftSettings: swiftSettings)
        )
    }
}

// MARK: - Micro-benchmarks (opt-in)

// ordo-one/benchmark micro-benchmarks of the hot paths (Benchmarks/SteerMicroBenchmarks, docs/benchmarks.md).
// Only with STEER_MICROBENCH=1, so normal builds and CI neither fetch nor build that package. Its
// `traits:` argument is why this manifest needs tools version 6.1.
if Context.environment["STEER_MICROBENCH"] == "1" {
    package.dependencies.append(.package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]))
    package.targets.append(.executableTarget(
        name: "SteerMicroBenchmarks",
        dependencies: [
            "SteerCore", "SteerIndex", "SteerModel", "SteerProtocol",
            .product(name: "Benchmark", package: "benchmark"),
        ],
        path: "Benchmarks/SteerMicroBenchmarks",
        swiftSettings: swiftSettings,
        plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    ))
}
