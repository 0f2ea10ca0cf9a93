import Foundation
import SteerBuilder
import SteerCore
import SteerData
import SteerIndex
import SteerStore
import Testing

@Suite struct CheckpointIngestTests {
    @Test func ingestRoundTripsVectorsTitlesAndTags() throws {
        let fixture = try CheckpointFixture(count: 40, dimension: 8)
        defer { fixture.directory.remove() }
        try withTemporaryStore { store, path in
            var calls = 0
            let report = try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path, batchSize: 16) { _ in calls += 1 }
            let hash = try CheckpointHash.compute(directory: fixture.path)
            #expect(report.version == "ckpt-" + hash.dropFirst("fnv1a64:".count))
            #expect(report.checkpointHash == hash)
            #expect(report.rows == 40 && report.written == 40 && report.skipped == 0 && report.dimension == 8)
            #expect(calls == 3)
            #expect(store.version(named: report.version)?.dimension == 8)
            let vectors = try storedVectors(store, version: report.version)
            #expect(vectors.count == 40)
            for i in 0..<40 { #expect(vectors[.int(Int64(i))] == fixture.vectors.row(i)) }
            let records = try store.get([.int(5), .int(39)])
            #expect(records[0]?.title == "Item 5" && records[0]?.tags == ["t2", "all"])
            #expect(records[1]?.title == "Item 39")
            let registry = try VersionRegistry.read(storePath: path)
            let entry = try #require(registry.versions[report.version])
            #expect(entry.status == .complete && entry.checkpointHash == hash && entry.rows == 40)
            #expect(entry.sequence == report.sequence)
        }
    }

    @Test func rerunIsIdempotentAndResumesAPartialIngest() throws {
        let fixture = try CheckpointFixture(count: 30, dimension: 4)
        defer { fixture.directory.remove() }
        try withTemporaryStore { store, path in
            // A crashed run: the version exists, is marked in progress, and 12 items were written.
            let hash = try CheckpointHash.compute(directory: fixture.path)
            let name = CheckpointHash.versionName(for: hash)
            try store.createVersion(name, dimension: 4)
            _ = try store.upsert((0..<12).map { i in
                ItemStore.ItemWrite(id: .int(Int64(i)), title: "Item \(i)", tags: ["t\(i % 3)", "all"], vectors: [name: fixture.vectors.row(i)])
            })
            try VersionRegistry(versions: [name: .init(status: .inProgress, checkpointHash: hash, dimension: 4, rows: 30,
                                                       source: fixture.path, startedAt: "x")]).write(storePath: path)
            let resumed = try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path)
            #expect(resumed.written == 18 && resumed.skipped == 12)
            #expect(try VersionRegistry.read(storePath: path).versions[name]?.status == .complete)
            let sequence = store.latestSequence
            let again = try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path)
            #expect(again.written == 0 && again.skipped == 30)
            #expect(store.latestSequence == sequence, "an idempotent re-run writes nothing")
            #expect(try storedVectors(store, version: name).count == 30)
        }
    }

    @Test func onlyIfIncompleteSkipsACompleteVersionAndKeepsLaterDeletes() throws {
        let fixture = try CheckpointFixture(count: 20, dimension: 4)
        defer { fixture.directory.remove() }
        try withTemporaryStore { store, path in
            // Interrupted first: only-if-incomplete still ingests (resumes) it.
            let first = try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path, onlyIfIncomplete: true)
            #expect(!first.alreadyComplete && first.written == 20)
            _ = try store.delete([.int(3), .int(7)])
            let sequence = store.latestSequence
            let restart = try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path, onlyIfIncomplete: true)
            #expect(restart.alreadyComplete && restart.written == 0 && restart.rows == 20 && restart.dimension == 4)
            #expect(restart.version == first.version)
            #expect(store.latestSequence == sequence)
            #expect(try store.get([.int(3), .int(7)]).allSatisfy { $0 == nil }, "deleted items stay deleted")
            // A full run (steer ingest) checks every item and writes the deleted ones again.
            let full = try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path)
            #expect(!full.alreadyComplete && full.written == 2 && full.skipped == 18)
        }
    }

    @Test func existingAttributesAreKeptAndChangedVectorsRewritten() throws {
        let fixture = try CheckpointFixture(count: 5, dimension: 4)
        defer { fixture.directory.remove() }
        try withTemporaryStore { store, path in
            try store.createVersion("v", dimension: 4)
            _ = try store.upsert([ItemStore.ItemWrite(id: .int(2), title: "old", tags: ["x"], attributesJSON: #"{"year": 1999}"#,
                                                  vectors: ["v": [9, 9, 9, 9]])])
            let report = try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path, version: "v")
            #expect(report.written == 5 && report.version == "v")
            let record = try #require(try store.get([.int(2)])[0])
            #expect(record.attributesJSON == #"{"year": 1999}"# && record.title == "Item 2" && record.tags == ["t2", "all"])
            #expect(try storedVectors(store, version: "v")[.int(2)] == fixture.vectors.row(2))
        }
    }

    @Test func badRowsAreRejectedWithLineNumbersAndNothingIsWritten() throws {
        let lines = [
            #"{"id": 1, "title": "a"}"#,
            #"{"id": "two", "tags": ["x"]}"#,
            #"{"id": 3, "title": "c""#,
            #"{"title": "no id"}"#,
            #"{"id": 4.5}"#,
            #"{"id": "two"}"#,
            #"{"id": 7, "tags": "comedy"}"#,
            #"[1, 2]"#,
            #"{"id": ""}"#,
            #"{"id": 10, "tags": [""]}"#,
        ]
        let fixture = try CheckpointFixture(count: lines.count, dimension: 4, lines: lines)
        defer { fixture.directory.remove() }
        try withTemporaryStore { store, path in
            let error = try #require(thrownError { try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path, version: "v") })
            #expect(error.code == .invalidRequest)
            let message = error.message
            #expect(message.contains("8 bad rows"), "\(message)")
            for expected in ["line 3: not valid JSON", "line 4: missing field 'id'", "line 5: 'id' must be a string or a 64-bit integer",
                             "line 6: id \"two\" duplicates line 2", "line 7: 'tags' must be a list of strings",
                             "line 8: not a JSON object", "line 9: item id must not be an empty string", "line 10: tags[0] is empty"] {
                #expect(message.contains(expected), "missing '\(expected)' in \(message)")
            }
            #expect(!message.contains("line 1:") && !message.contains("line 2:"))
            #expect(store.versions().isEmpty && store.count == 0)
            #expect(try VersionRegistry.read(storePath: path).versions.isEmpty)
        }
    }

    @Test func nonFiniteVectorsMismatchedCountsAndBadTensorsAreRefused() throws {
        let fixture = try CheckpointFixture(count: 4, dimension: 2)
        defer { fixture.directory.remove() }
        try withTemporaryStore { store, path in
            // Row 3 (line 3) holds a NaN.
            var values = fixture.vectors.values
            values[2 * 2 + 1] = .nan
            try writeSafeTensors(fixture.directory.file("model.safetensors"), tensors: [("item_embeddings", [4, 2], values)])
            #expect(throws: SteerError.invalid("item_embeddings has non-finite values in the rows of '\(fixture.directory.file("items.jsonl"))' lines 3; nothing was written")) {
                try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path, version: "v")
            }
            // Five rows in the tensor, four lines.
            try writeSafeTensors(fixture.directory.file("model.safetensors"), tensors: [("item_embeddings", [5, 2], [Float](repeating: 1, count: 10))])
            try FileManager.default.removeItem(atPath: fixture.directory.file("config.json"))
            let error = try #require(thrownError { try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path, version: "v") })
            #expect(error.code == .invalidRequest && error.message.contains("has 4 rows but item_embeddings"))
            // Truncated tensor data.
            let tensorPath = fixture.directory.file("model.safetensors")
            try writeSafeTensors(tensorPath, tensors: [("item_embeddings", [4, 2], fixture.vectors.values)])
            let data = try Data(contentsOf: URL(fileURLWithPath: tensorPath))
            try data.prefix(data.count - 4).write(to: URL(fileURLWithPath: tensorPath))
            let truncated = try #require(thrownError { try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path, version: "v") })
            #expect(truncated.code == .corrupt && truncated.message.contains(tensorPath))
            // A float64 tensor and a missing tensor.
            try writeSafeTensors(tensorPath, tensors: [("item_embeddings", [4, 2], fixture.vectors.values)],
                                 headerOverride: #"{"item_embeddings": {"dtype": "F64", "shape": [4, 1], "data_offsets": [0, 32]}}"#)
            #expect(throws: SteerError(.corrupt, "\(tensorPath): tensor 'item_embeddings' has dtype F64, expected F32")) {
                try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path, version: "v")
            }
            try writeSafeTensors(tensorPath, tensors: [("other", [4, 2], fixture.vectors.values)])
            #expect(throws: SteerError(.corrupt, "\(tensorPath): tensor 'item_embeddings' is missing")) {
                try CheckpointIngest.run(store: store, storePath: path, checkpoint: fixture.path, version: "v")
            }
            #expect(store.count == 0 && store.versions().isEmpty)
        }
    }

    @Test func aVersionFromAnotherCheckpointIsNotOverwritten() throws {
        let first = try CheckpointFixture(count: 6, dimension: 4, seed: 1)
        let second = try CheckpointFixture(count: 6, dimension: 4, seed: 2)
        defer { first.directory.remove(); second.directory.remove() }
        try withTemporaryStore { store, path in
            _ = try CheckpointIngest.run(store: store, storePath: path, checkpoint: first.path, version: "live")
            let error = try #require(thrownError { try CheckpointIngest.run(store: store, storePath: path, checkpoint: second.path, version: "live") })
            #expect(error.code == .invalidRequest && error.message.contains("was ingested from checkpoint"))
            #expect(try storedVectors(store, version: "live")[.int(3)] == first.vectors.row(3))
        }
    }
}
