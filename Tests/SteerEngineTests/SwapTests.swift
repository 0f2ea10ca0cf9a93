import Foundation
import SteerBuilder
import SteerCore
import SteerIndex
import SteerStore
import Testing
@testable import SteerEngine

/// Random items `first..<first+count`, ids alternating int and string.
private func items(_ range: Range<Int>, dimension: Int, seed: UInt64) -> [ItemInput] {
    var generator = SeededGenerator(seed: seed)
    return range.map { index in
        let id: ItemID = index % 2 == 0 ? .int(Int64(index)) : .string("item-\(index)")
        return ItemInput(id: id, vector: (0..<dimension).map { _ in Float.random(in: -1...1, using: &generator) },
                         title: "title \(index)", tags: index % 3 == 0 ? ["three"] : [])
    }
}

private func queries(_ count: Int, dimension: Int, seed: UInt64) -> [[Float]] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { _ in (0..<dimension).map { _ in Float.random(in: -1...1, using: &generator) } }
}

/// An engine over a fresh data directory, removed by `cleanUp`.
private struct Fixture {
    let directory = NSTemporaryDirectory() + "steer-swap-test-" + UUID().uuidString
    let engine: RetrievalEngine

    init(dimension: Int = 8, metric: Metric = .innerProduct, encoderFactory: (@Sendable (ItemStore, String, Int) throws(SteerError) -> (any QueryEncoder)?)? = nil) throws {
        engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: dimension, metric: metric, syncWrites: false,
                                                          encoderFactory: encoderFactory))
    }

    /// Builds a generation of the engine's store into `DIR/generations/<id>`.
    @discardableResult
    func build(_ id: String, shards: Int, spec: String = "Flat", version: String = "v1", metric: Metric = .innerProduct) throws -> String {
        let output = directory + "/generations/" + id
        try FileManager.default.createDirectory(atPath: directory + "/generations", withIntermediateDirectories: true)
        _ = try GenerationBuilder.build(store: engine.store, storePath: engine.store.options.path,
                                        options: .init(version: version, spec: try IndexSpec(parsing: spec), metric: metric, shardCount: shards,
                                                       generationID: id),
                                        output: output)
        return output
    }

    func cleanUp() {
        try? engine.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

private func code(_ body: () throws -> Void) -> SteerError.Code? {
    do {
        try body()
        return nil
    } catch let error as SteerError {
        return error.code
    } catch {
        return .internal
    }
}

@Suite struct SwapTests {
    @Test func aShardedGenerationServesTheSameTopKAndSeesWritesMadeDuringAndAfterItsBuild() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let engine = fixture.engine
        _ = try engine.upsert(items(0..<300, dimension: 8, seed: 1))
        // Writes while the generation is built: new items, replacements and deletes.
        let writer = Thread {
            for round in 0..<5 {
                _ = try? engine.upsert(items((300 + round * 10)..<(310 + round * 10), dimension: 8, seed: 100 + UInt64(round)))
                _ = try? engine.upsert(items((round * 4)..<(round * 4 + 2), dimension: 8, seed: 200 + UInt64(round)))
                _ = try? engine.delete([.int(Int64(100 + round * 2))])
            }
        }
        writer.start()
        try fixture.build("gA", shards: 3)
        while !writer.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        // And after it.
        _ = try engine.upsert(items(400..<420, dimension: 8, seed: 3))
        #expect(try engine.delete([.string("item-201"), .int(202)]) == 2)
        let probes = queries(20, dimension: 8, seed: 9)
        let before = try probes.map { try engine.search([$0], options: SearchOptions(k: 10))[0] }
        let pinned = engine.generation
        #expect(pinned.id == "g1" && pinned.directory == nil)

        let result = try engine.swap(to: "gA")
        #expect(result.generation == "gA" && result.previous == "g1" && result.replayed >= 22)
        #expect(engine.generation.id == "gA" && engine.generation.index.shards.count == 3)
        #expect(engine.stats().indexed == engine.store.count)
        #expect(engine.stats().shards == 3 && engine.stats().generationDirectory == fixture.directory + "/generations/gA")
        let after = try probes.map { try engine.search([$0], options: SearchOptions(k: 10))[0] }
        #expect(after == before)
        // A request that read the old generation still finishes on it.
        #expect(try engine.search([probes[0]], options: SearchOptions(k: 10), in: pinned)[0] == before[0])
        // Writes after the swap go to the right shards and are visible.
        let late = ItemInput(id: .string("late"), vector: probes[1].map { $0 * 10 }, title: "late")
        _ = try engine.upsert([late])
        #expect(try engine.search([probes[1]], options: SearchOptions(k: 1))[0].first?.id == .string("late"))
        _ = try engine.delete([.string("late")])
        #expect(try engine.search([probes[1]], options: SearchOptions(k: 10))[0] == before[1])
    }

    @Test func writesRacingTheSwapAreNeitherLostNorDuplicated() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let engine = fixture.engine
        _ = try engine.upsert(items(0..<200, dimension: 8, seed: 13))
        try fixture.build("gW", shards: 4)
        let stop = Locked(false)
        let writer = Thread {
            var next = 1000
            while !stop.get() {
                _ = try? engine.upsert(items(next..<(next + 3), dimension: 8, seed: UInt64(next)))
                _ = try? engine.delete([.int(Int64(next - 1000))])
                next += 3
            }
        }
        writer.start()
        Thread.sleep(forTimeInterval: 0.05)
        let result = try engine.swap(to: "gW")
        Thread.sleep(forTimeInterval: 0.05)
        stop.withLock { $0 = true }
        while !writer.isFinished { Thread.sleep(forTimeInterval: 0.01) }
        #expect(result.replayed > 0)
        #expect(engine.generation.id == "gW")
        #expect(engine.stats().indexed == engine.store.count)
        var labels: [Int64] = []
        _ = try engine.store.scanVectors(version: "v1") { ids, _ in labels.append(contentsOf: ids) }
        #expect(labels.allSatisfy { engine.generation.index.contains(label: $0) })
        #expect(labels.count == engine.store.count)
    }

    @Test func badGenerationsAreRefusedAndTheOldOneKeepsServing() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let engine = fixture.engine
        _ = try engine.upsert(items(0..<120, dimension: 8, seed: 4))
        let good = try fixture.build("good", shards: 2)
        let probe = queries(1, dimension: 8, seed: 5)[0]
        let expected = try engine.search([probe], options: SearchOptions(k: 5))[0]
        let generations = fixture.directory + "/generations/"
        let manager = FileManager.default

        // A flipped byte in a shard file.
        try manager.copyItem(atPath: good, toPath: generations + "flipped")
        let shardPath = generations + "flipped/" + GenerationBuilder.shardFileName(1)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: shardPath))
        bytes[bytes.count / 2] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: shardPath))
        #expect(code { try engine.swap(to: "flipped") } == .corrupt)
        // A missing shard file.
        try manager.copyItem(atPath: good, toPath: generations + "missing")
        try manager.removeItem(atPath: generations + "missing/" + GenerationBuilder.shardFileName(0))
        #expect(code { try engine.swap(to: "missing") } == .notFound)
        // No such generation.
        #expect(code { try engine.swap(to: "nope") } == .notFound)
        #expect(code { try engine.swap(to: "") } == .invalidRequest)
        // A generation of another dimension.
        let other = try Fixture(dimension: 4)
        defer { other.cleanUp() }
        _ = try other.engine.upsert(items(0..<20, dimension: 4, seed: 6))
        try manager.copyItem(atPath: try other.build("four", shards: 1), toPath: generations + "four")
        #expect(code { try engine.swap(to: "four") } == .dimensionMismatch)
        // A checkpoint that does not match the generation's embedding version.
        let checkpoint = fixture.directory + "/checkpoint"
        try manager.createDirectory(atPath: checkpoint, withIntermediateDirectories: true)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: checkpoint + "/model.safetensors"))
        try Data("{\"id\": 1}\n".utf8).write(to: URL(fileURLWithPath: checkpoint + "/items.jsonl"))
        #expect(code { try engine.swap(to: good, checkpoint: checkpoint) } == .invalidRequest)

        #expect(engine.generation.id == "g1")
        #expect(try engine.search([probe], options: SearchOptions(k: 5))[0] == expected)
        // The good one still swaps in, by path.
        #expect(try engine.swap(to: good).generation == "good")
        #expect(try engine.search([probe], options: SearchOptions(k: 5))[0] == expected)
    }

    @Test func encodersFollowTheEmbeddingVersion() throws {
        struct Fixed: QueryEncoder {
            let dimension = 8
            func encode(history: [ItemID], prompt: String?) throws(SteerError) -> EncodedQuery {
                EncodedQuery(vector: [Float](repeating: 1, count: 8), baseVector: [Float](repeating: 1, count: 8))
            }
        }
        let factory: @Sendable (ItemStore, String, Int) throws(SteerError) -> (any QueryEncoder)? = { _, _, _ in Fixed() }
        for fixed in [false, true] {
            let fixture = try Fixture(encoderFactory: fixed ? factory : nil)
            defer { fixture.cleanUp() }
            let engine = fixture.engine
            _ = try engine.upsert(items(0..<50, dimension: 8, seed: 7))
            // Version v2 holds other vectors for new items.
            try engine.store.createVersion("v2", dimension: 8)
            _ = try engine.store.upsert(items(1000..<1040, dimension: 8, seed: 8).map {
                ItemStore.ItemWrite(id: $0.id, title: $0.title, tags: $0.tags, attributesJSON: nil, vectors: ["v2": $0.vector])
            })
            try fixture.build("same", shards: 2)
            try fixture.build("other", shards: 2, version: "v2")
            let before = engine.generation.encoder
            try engine.swap(to: "same")
            #expect(engine.generation.encoder.map { type(of: $0) == type(of: before!) } == true)
            if fixed {
                #expect(code { try engine.swap(to: "other") } == .invalidRequest)
                #expect(engine.generation.id == "same")
            } else {
                try engine.swap(to: "other")
                #expect(engine.generation.embeddingVersion == "v2")
                let encoder = try #require(engine.generation.encoder as? MeanHistoryEncoder)
                #expect(encoder.dimension == 8)
                let hits = try engine.recommend(RecommendRequest(history: [.int(1000)], k: 3))
                #expect(hits.hits.count == 3)
            }
        }
    }

    @Test func restartServesTheSwappedGenerationAndFallsBackWhenItIsGone() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        _ = try fixture.engine.upsert(items(0..<80, dimension: 8, seed: 10))
        let directory = try fixture.build("gR", shards: 2)
        try fixture.engine.swap(to: "gR")
        let late = ItemInput(id: .string("late"), vector: [Float](repeating: 3, count: 8))
        _ = try fixture.engine.upsert([late])
        try fixture.engine.close()

        let reopened = try RetrievalEngine(configuration: .init(dataDirectory: fixture.directory, syncWrites: false))
        #expect(reopened.generation.id == "gR" && reopened.generation.directory == directory)
        #expect(reopened.openingWarnings.isEmpty)
        #expect(try reopened.search([late.vector], options: SearchOptions(k: 1))[0].first?.id == .string("late"))
        _ = try reopened.upsert([ItemInput(id: .string("later"), vector: [Float](repeating: -3, count: 8))])
        try reopened.close()

        try FileManager.default.removeItem(atPath: directory)
        let fallback = try RetrievalEngine(configuration: .init(dataDirectory: fixture.directory, syncWrites: false))
        defer { try? fallback.close() }
        #expect(fallback.generation.id == "g1" && fallback.generation.directory == nil)
        #expect(fallback.openingWarnings.count == 1 && fallback.openingWarnings[0].contains(directory))
        #expect(fallback.stats().indexed == 82)
        #expect(try fallback.search([[Float](repeating: -3, count: 8)], options: SearchOptions(k: 1))[0].first?.id == .string("later"))
    }

    @Test func swapToNewestPicksTheLatestCompleteGeneration() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        _ = try fixture.engine.upsert(items(0..<40, dimension: 8, seed: 11))
        #expect(code { _ = try fixture.engine.swapToNewest() } == .notFound)
        // Built in this order: a later created_at, or the same second and the larger id.
        try fixture.build("g-a", shards: 1)
        try fixture.build("g-b", shards: 2)
        try FileManager.default.createDirectory(atPath: fixture.directory + "/generations/g-zz" + GenerationManifest.partialSuffix,
                                                withIntermediateDirectories: true)
        #expect(try fixture.engine.swapToNewest()?.generation == "g-b")
        #expect(try fixture.engine.swapToNewest() == nil)
    }
}

@Suite struct CheckpointSwapTests {
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    /// `$STEER_MINILM_DIR`, else `<package root>/models/all-MiniLM-L6-v2` (as SteerModelTests).
    static let minilm: String = {
        if let dir = ProcessInfo.processInfo.environment["STEER_MINILM_DIR"], !dir.isEmpty { return dir }
        return packageRoot + "/models/all-MiniLM-L6-v2"
    }()

    @Test func swapWithACheckpointLoadsItsModelAndAnotherVersionNeedsOne() throws {
        let checkpoint = Self.packageRoot + "/Tests/SteerModelTests/Fixtures/demo-sasrec"
        let directory = NSTemporaryDirectory() + "steer-swap-ckpt-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 40, syncWrites: false,
                                                              miniLMDirectory: Self.minilm,
                                                              checkpointRoot: Self.packageRoot + "/Tests/SteerModelTests/Fixtures"))
        defer { try? engine.close() }
        let report = try CheckpointIngest.run(store: engine.store, storePath: engine.store.options.path, checkpoint: checkpoint)
        let output = directory + "/generations/ckpt"
        try FileManager.default.createDirectory(atPath: directory + "/generations", withIntermediateDirectories: true)
        _ = try GenerationBuilder.build(store: engine.store, storePath: engine.store.options.path,
                                        options: .init(version: report.version, spec: try IndexSpec(parsing: "Flat"), metric: .innerProduct,
                                                       shardCount: 2, generationID: "ckpt"),
                                        output: output)
        // The mean-history encoder is remade for the new version without a checkpoint ...
        #expect(try engine.swap(to: "ckpt").generation == "ckpt")
        #expect(engine.generation.encoder is MeanHistoryEncoder)
        // ... and with the checkpoint its DPR model serves.
        let result = try engine.swap(to: output, checkpoint: checkpoint)
        #expect(result.previous == "ckpt" && result.generation == "ckpt")
        #expect(engine.generation.encoder is DPRQueryEncoder && engine.generation.embeddingVersion == report.version)
        let recommendation = try engine.recommend(RecommendRequest(history: [.int(1), .int(2)], prompt: "a comedy", k: 5))
        #expect(recommendation.hits.count == 5)
        // A generation of another version is refused while the DPR model serves; so is a wrong checkpoint.
        _ = try engine.store.upsert(items(0..<20, dimension: 40, seed: 12).map {
            ItemStore.ItemWrite(id: .string("v-\($0.id)"), vectors: ["v1": $0.vector])
        })
        let plain = directory + "/generations/plain"
        do {
            _ = try GenerationBuilder.build(store: engine.store, storePath: engine.store.options.path,
                                            options: .init(version: "v1", spec: try IndexSpec(parsing: "Flat"), metric: .innerProduct,
                                                           shardCount: 1, generationID: "plain"),
                                            output: plain)
            #expect(code { try engine.swap(to: "plain") } == .invalidRequest)
        }
        let other = Self.packageRoot + "/Tests/SteerModelTests/Fixtures/demo-gru4rec"
        #expect(code { try engine.swap(to: output, checkpoint: other) } == .invalidRequest)
        #expect(engine.generation.encoder is DPRQueryEncoder && engine.generation.id == "ckpt")
    }
}
