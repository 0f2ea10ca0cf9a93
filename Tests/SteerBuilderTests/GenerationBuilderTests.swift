import Foundation
import SteerBuilder
import SteerData
import SteerCore
import SteerIndex
import SteerStore
import Testing

/// A store with one version `v` of `count` clustered vectors; ids are integers and strings mixed.
private func withItems<T>(count: Int = 600, dimension: Int = 16, _ body: (ItemStore, String, SyntheticVectors) throws -> T) throws -> T {
    try withTemporaryStore { store, path in
        let data = SyntheticVectors(count: count, dimension: dimension, clusters: 12, spread: 0.6, seed: 11)
        try store.createVersion("v", dimension: dimension)
        var writes: [ItemStore.ItemWrite] = []
        for i in 0..<count {
            let id: ItemID = i % 3 == 0 ? .string("item-\(i)") : .int(Int64(i))
            writes.append(.init(id: id, title: "t\(i)", vectors: ["v": data.row(i)]))
        }
        _ = try store.upsert(writes)
        return try body(store, path, data)
    }
}

private func queries(_ data: SyntheticVectors, count: Int = 25, seed: UInt64 = 5) -> [Float] {
    var rng = SeededGenerator(seed: seed)
    var values: [Float] = []
    for _ in 0..<count {
        let base = data.row(Int(rng.next() % UInt64(data.count)))
        values.append(contentsOf: base.map { $0 + 0.3 * rng.nextGaussian() })
    }
    return values
}

private func options(_ spec: String, shards: Int, metric: Metric = .innerProduct) throws -> GenerationBuilder.Options {
    GenerationBuilder.Options(version: "v", spec: try IndexSpec(parsing: spec), metric: metric, shardCount: shards,
                              trainSample: nil, seed: 3, parallelShards: 2)
}

/// Exact top-k over the store's vectors of `v`, by internal id.
private func exactTopK(_ store: ItemStore, _ queries: [Float], k: Int, dimension: Int) throws -> [[Int64]] {
    var labels: [Int64] = []
    var base: [Float] = []
    _ = try store.scanVectors(version: "v") { l, v in
        labels.append(contentsOf: l)
        base.append(contentsOf: v)
    }
    return stride(from: 0, to: queries.count, by: dimension).map { start in
        ExactSearch.topK(query: Array(queries[start..<(start + dimension)]), base: base, dimension: dimension, labels: labels,
                         k: k, metric: .innerProduct).map(\.label)
    }
}

@Suite struct GenerationBuilderTests {
    @Test func flatBuildAndReshardTwoThreeOneGiveTheUnshardedTopK() throws {
        try withItems { store, path, data in
            let root = TemporaryDirectory("gen")
            defer { root.remove() }
            let q = queries(data)
            let single = try GenerationBuilder.build(store: store, storePath: path, options: try options("Flat", shards: 1), output: root.file("one"))
            #expect(single.count == 600 && single.shards.count == 1 && single.trainedIndex == nil)
            #expect(single.storeSequence == store.latestSequence && single.embeddingVersion == "v" && single.dimension == 16)
            let reference = try IndexGeneration.load(directory: root.file("one")).search(q, k: 10)
            #expect(reference.map { $0.map(\.label) } == (try exactTopK(store, q, k: 10, dimension: 16)))

            let two = try GenerationBuilder.build(store: store, storePath: path, options: try options("Flat", shards: 2), output: root.file("two"))
            let three = try GenerationBuilder.reshard(from: root.file("two"), store: store, storePath: path, shardCount: 3, output: root.file("three"))
            let back = try GenerationBuilder.reshard(from: root.file("three"), store: store, storePath: path, shardCount: 1, output: root.file("back"))
            #expect(three.build.parentGeneration == two.generationID && three.build.command == "reshard")
            #expect(back.build.parentGeneration == three.generationID)
            for (name, manifest) in [("two", two), ("three", three), ("back", back)] {
                let generation = try IndexGeneration.load(directory: root.file(name))
                #expect(generation.count == 600 && manifest.count == 600)
                let results = try generation.search(q, k: 10)
                #expect(results.map { $0.map(\.label) } == reference.map { $0.map(\.label) }, "\(name)")
                // Same scores up to float rounding (faiss may sum in another order for another batch shape).
                let worst = zip(results.joined(), reference.joined()).map { abs($0.score - $1.score) }.max() ?? 0
                #expect(worst < 1e-5, "\(name): scores differ by \(worst)")
                // Every item is on the shard the sharding function names.
                let records = try store.records(internalIDs: Array(0..<600))
                for record in records {
                    let record = try #require(record)
                    #expect(generation.shards[generation.shard(of: record.id)].contains(label: record.internalID))
                }
            }
            let sharding = try Sharding(shardCount: 3)
            var expected = [0, 0, 0]
            for i in 0..<600 { expected[sharding.shard(of: i % 3 == 0 ? .string("item-\(i)") : .int(Int64(i)))] += 1 }
            #expect(three.shards.map(\.count) == expected)
        }
    }

    @Test(arguments: ["HNSW16,efC80", "IVF16,Flat", "HNSW16,SQ8"])
    func approximateReshardsKeepRecallWithinOneHundredth(spec: String) throws {
        try withItems { store, path, data in
            let root = TemporaryDirectory("gen")
            defer { root.remove() }
            let q = queries(data, count: 40)
            let truth = try exactTopK(store, q, k: 10, dimension: 16)
            let parameters = SearchParameters(nprobe: 4, efSearch: 64)
            func recall(_ name: String) throws -> Double {
                let found = try IndexGeneration.load(directory: root.file(name)).search(q, k: 10, parameters: parameters)
                return ExactSearch.recall(found: found.map { $0.map(\.label) }, truth: truth)
            }
            let one = try GenerationBuilder.build(store: store, storePath: path, options: try options(spec, shards: 1), output: root.file("one"))
            let two = try GenerationBuilder.build(store: store, storePath: path, options: try options(spec, shards: 2), output: root.file("two"))
            _ = try GenerationBuilder.reshard(from: root.file("two"), store: store, storePath: path, shardCount: 3, output: root.file("three"))
            let back = try GenerationBuilder.reshard(from: root.file("three"), store: store, storePath: path, shardCount: 1, output: root.file("back"))
            let base = try recall("one")
            #expect(base > 0.8, "unsharded recall \(base)")
            for name in ["two", "three", "back"] {
                let r = try recall(name)
                #expect(r >= base - 0.01, "\(spec) \(name): recall \(r) vs unsharded \(base)")
            }
            if try IndexSpec(parsing: spec).needsTraining {
                // HNSW16,SQ8 samples up to 100,000 vectors for its ranges, IVF16 40 per list: all 600 here.
                #expect(one.trainedIndex != nil && one.build.trainSample == 600 && one.build.sharedQuantizer == true)
                #expect(two.trainedIndex != nil && back.build.trainSample == nil, "reshard must not retrain")
                // Shards copied from one trained quantizer: the resharded trained index is the parent's.
                #expect(back.trainedIndex?.checksum == two.trainedIndex?.checksum)
            }
        }
    }

    @Test func corruptMissingAndMismatchedGenerationsAreRefused() throws {
        try withItems(count: 200) { store, path, _ in
            let root = TemporaryDirectory("gen")
            defer { root.remove() }
            let source = root.file("g")
            _ = try GenerationBuilder.build(store: store, storePath: path, options: try options("Flat", shards: 2), output: source)
            func copy(_ name: String) throws -> String {
                let target = root.file(name)
                try FileManager.default.copyItem(atPath: source, toPath: target)
                return target
            }
            func editManifest(_ directory: String, _ edit: (inout [String: Any]) -> Void) throws {
                let file = (directory as NSString).appendingPathComponent("manifest.json")
                var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as! [String: Any]
                edit(&json)
                try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: file))
            }

            // A flipped byte in a shard file.
            let flipped = try copy("flipped")
            let shardPath = (flipped as NSString).appendingPathComponent("shard-0001.index")
            var bytes = try Data(contentsOf: URL(fileURLWithPath: shardPath))
            bytes[bytes.count / 2] ^= 0x40
            try bytes.write(to: URL(fileURLWithPath: shardPath))
            var error = try #require(thrownError { try IndexGeneration.load(directory: flipped) })
            #expect(error.code == .corrupt && error.message.contains("shard-0001.index") && error.message.contains("checksum"))

            // A truncated shard file.
            let truncated = try copy("truncated")
            let truncatedPath = (truncated as NSString).appendingPathComponent("shard-0000.index")
            try bytes.prefix(10).write(to: URL(fileURLWithPath: truncatedPath))
            error = try #require(thrownError { try IndexGeneration.load(directory: truncated) })
            #expect(error.code == .corrupt && error.message.contains("shard-0000.index"))

            // A missing shard file.
            let missing = try copy("missing")
            try FileManager.default.removeItem(atPath: (missing as NSString).appendingPathComponent("shard-0000.index"))
            error = try #require(thrownError { try IndexGeneration.load(directory: missing) })
            #expect(error.code == .notFound && error.message.contains("shard-0000.index"))

            // Manifest counts that disagree with the shard (checksums still match).
            let counts = try copy("counts")
            try editManifest(counts) { json in
                var shards = json["shards"] as! [[String: Any]]
                shards[0]["count"] = (shards[0]["count"] as! Int) + 1
                json["shards"] = shards
                json["count"] = (json["count"] as! Int) + 1
            }
            error = try #require(thrownError { try IndexGeneration.load(directory: counts) })
            #expect(error.code == .corrupt && error.message.contains("shard-0000.index") && error.message.contains("the manifest says"))

            // Internally inconsistent manifests.
            let cases: [(String, (inout [String: Any]) -> Void, String)] = [
                ("total", { $0["count"] = 5 }, "count is 5 but the shards hold 200"),
                ("function", { $0["sharding"] = ["function": "crc32-mod", "shard_count": 2] }, "unknown sharding function 'crc32-mod'"),
                ("shardcount", { $0["sharding"] = ["function": Sharding.functionName, "shard_count": 3] }, "shard_count is 3 but 2 shards are listed"),
                ("escape", { json in
                    var shards = json["shards"] as! [[String: Any]]
                    shards[1]["file"] = "../elsewhere.index"
                    json["shards"] = shards
                }, "is not a plain file name"),
                ("checksum", { json in
                    var shards = json["shards"] as! [[String: Any]]
                    shards[1]["checksum"] = "sha1:abc"
                    json["shards"] = shards
                }, "is not 'fnv1a64:'"),
                ("spec", { $0["index_spec"] = "Nonsense" }, "index_spec 'Nonsense' is not valid"),
                ("missingfield", { $0.removeValue(forKey: "metric") }, "missing field 'metric'"),
                ("format", { $0["format"] = "other" }, "format is 'other'"),
            ]
            for (name, edit, expected) in cases {
                let directory = try copy(name)
                try editManifest(directory, edit)
                error = try #require(thrownError { try IndexGeneration.load(directory: directory) })
                #expect(error.code == .corrupt && error.message.contains(expected), "\(name): \(error)")
            }
            let newer = try copy("newer")
            try editManifest(newer) { $0["format_version"] = 99 }
            error = try #require(thrownError { try IndexGeneration.load(directory: newer) })
            #expect(error.code == .invalidRequest && error.message.contains("format_version 99"))

            let garbage = try copy("garbage")
            try Data("{not json".utf8).write(to: URL(fileURLWithPath: (garbage as NSString).appendingPathComponent("manifest.json")))
            error = try #require(thrownError { try IndexGeneration.load(directory: garbage) })
            #expect(error.code == .corrupt && error.message.contains("manifest.json"))

            error = try #require(thrownError { try IndexGeneration.load(directory: root.file("nowhere")) })
            #expect(error.code == .notFound)

            // Compatibility with what the server serves.
            let generation = try IndexGeneration.load(directory: source)
            #expect(throws: Never.self) { try generation.requireCompatible(checkpointHash: nil, dimension: 16, embeddingVersion: "v") }
            error = try #require(thrownError { try generation.requireCompatible(checkpointHash: nil, dimension: 32) })
            #expect(error.code == .dimensionMismatch)
            error = try #require(thrownError { try generation.requireCompatible(checkpointHash: "fnv1a64:0000000000000001", dimension: 16) })
            #expect(error.code == .invalidRequest && error.message.contains("checkpoint"))
            error = try #require(thrownError { try generation.requireCompatible(checkpointHash: nil, dimension: 16, embeddingVersion: "w") })
            #expect(error.code == .invalidRequest)
        }
    }

    @Test func buildsAreAtomicAndNeverOverwrite() throws {
        try withItems(count: 100) { store, path, _ in
            let root = TemporaryDirectory("gen")
            defer { root.remove() }
            // A build that fails after its temporary directory exists (too few vectors to train) leaves nothing.
            var error = try #require(thrownError {
                try GenerationBuilder.build(store: store, storePath: path, options: try options("IVF256,Flat", shards: 2), output: root.file("bad"))
            })
            #expect(error.code == .invalidRequest)
            #expect(try FileManager.default.contentsOfDirectory(atPath: root.path).isEmpty)

            let first = try GenerationBuilder.build(store: store, storePath: path, options: try options("Flat", shards: 1), output: root.file("g1"))
            error = try #require(thrownError {
                try GenerationBuilder.build(store: store, storePath: path, options: try options("Flat", shards: 1), output: root.file("g1"))
            })
            #expect(error.code == .invalidRequest && error.message.contains("already exists"))
            #expect(try GenerationManifest.read(directory: root.file("g1")).generationID == first.generationID)

            // A crash before the rename leaves only a `.partial` directory: never picked as the newest.
            try FileManager.default.copyItem(atPath: root.file("g1"), toPath: root.file("g2" + GenerationManifest.partialSuffix + "-999"))
            try editCreatedAt(root.file("g2" + GenerationManifest.partialSuffix + "-999"), "2999-01-01T00:00:00Z")
            #expect(GenerationManifest.newest(in: root.path) == root.file("g1"))
            let second = try GenerationBuilder.build(store: store, storePath: path, options: try options("Flat", shards: 1), output: root.file("g3"))
            try editCreatedAt(root.file("g3"), "2998-01-01T00:00:00Z")
            #expect(GenerationManifest.newest(in: root.path) == root.file("g3"))
            #expect(second.generationID != first.generationID)
        }
    }

    @Test func anUnfinishedIngestIsNotBuiltAndTheCheckpointHashIsRecorded() throws {
        try withItems(count: 50) { store, path, _ in
            let root = TemporaryDirectory("gen")
            defer { root.remove() }
            var registry = VersionRegistry(versions: ["v": .init(status: .inProgress, checkpointHash: "fnv1a64:00000000000000aa",
                                                                  dimension: 16, rows: 50, source: "x", startedAt: "x")])
            try registry.write(storePath: path)
            let error = try #require(thrownError {
                try GenerationBuilder.build(store: store, storePath: path, options: try options("Flat", shards: 1), output: root.file("g"))
            })
            #expect(error.code == .invalidRequest && error.message.contains("still being ingested"))
            registry.versions["v"]?.status = .complete
            try registry.write(storePath: path)
            let manifest = try GenerationBuilder.build(store: store, storePath: path, options: try options("Flat", shards: 1), output: root.file("g"))
            #expect(manifest.checkpointHash == "fnv1a64:00000000000000aa")
            let generation = try IndexGeneration.load(directory: root.file("g"))
            #expect(throws: Never.self) { try generation.requireCompatible(checkpointHash: "fnv1a64:00000000000000aa", dimension: 16) }
        }
    }

    @Test func writesAfterTheBuildAreReplayedOntoTheirShards() throws {
        try withItems(count: 300) { store, path, data in
            let root = TemporaryDirectory("gen")
            defer { root.remove() }
            _ = try GenerationBuilder.build(store: store, storePath: path, options: try options("Flat", shards: 3), output: root.file("g"))
            // Writes after the build: new items, a changed vector, deletes (one of a new item).
            let extra = SyntheticVectors(count: 40, dimension: 16, seed: 99)
            var writes: [ItemStore.ItemWrite] = (0..<40).map { i in .init(id: .string("new-\(i)"), vectors: ["v": extra.row(i)]) }
            writes.append(.init(id: .int(1), vectors: ["v": extra.row(0).map { -$0 }]))
            _ = try store.upsert(writes)
            _ = try store.delete([.int(2), .string("item-3"), .string("new-5")])
            let generation = try IndexGeneration.load(directory: root.file("g"))
            let result = try GenerationCatchUp.replay(store: store, into: generation)
            #expect(result.sequence == store.latestSequence && result.added == 40 && result.removed == 2)
            #expect(generation.count == 300 + 40 - 1 - 2)
            let q = queries(data, count: 20) + extra.row(7) + extra.row(0).map { -$0 }
            #expect(try generation.search(q, k: 10).map { $0.map(\.label) } == (try exactTopK(store, q, k: 10, dimension: 16)))
            // Nothing new: a second replay is a no-op.
            #expect(try GenerationCatchUp.replay(store: store, into: generation, since: result.sequence) == .init(sequence: result.sequence, added: 0, removed: 0))

            let report = try GenerationVerifier.verify(directory: root.file("g"), store: store, sample: 30, k: 10)
            let check = try #require(report.storeCheck)
            #expect(check.missing == 0 && check.misplaced == 0 && check.extra == 0 && check.recall == 1)
            #expect(check.replayedAdded == 40 && check.queries == 30)
        }
    }
}

private func editCreatedAt(_ directory: String, _ value: String) throws {
    let file = (directory as NSString).appendingPathComponent("manifest.json")
    var json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file))) as! [String: Any]
    json["created_at"] = value
    try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: file))
}
