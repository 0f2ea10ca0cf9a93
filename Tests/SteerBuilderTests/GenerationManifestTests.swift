import Foundation
import SteerCore
import SteerIndex
import Testing

@Suite struct GenerationManifestTests {
    private func sample() -> GenerationManifest {
        GenerationManifest(
            generationID: "g1", createdAt: "2026-11-27T02:00:00Z", checkpointHash: "fnv1a64:00000000000000ff", embeddingVersion: "v",
            storeSequence: 42, indexSpec: "Flat", metric: .l2, dimension: 8, sharding: .init(shardCount: 2),
            shards: [.init(index: 0, file: "shard-0000.index", count: 3, bytes: 10, checksum: "fnv1a64:0123456789abcdef"),
                     .init(index: 1, file: "shard-0001.index", count: 4, bytes: 11, checksum: "fnv1a64:0000000000000000")],
            build: .init(command: "build", timingsSeconds: ["total": 1.5], peakRSSBytes: 1 << 20))
    }

    @Test func encodesSnakeCaseJSONAndRoundTrips() throws {
        let manifest = sample()
        #expect(manifest.count == 7 && manifest.format == "steer-generation" && manifest.formatVersion == 1)
        let data = try manifest.encoded()
        let text = String(decoding: data, as: UTF8.self)
        for key in ["\"generation_id\"", "\"store_sequence\" : 42", "\"shard_count\" : 2", "\"function\" : \"fnv1a64-keybytes-mod\"",
                    "\"index_spec\" : \"Flat\"", "\"metric\" : \"l2\"", "\"timings_s\"", "\"peak_rss_bytes\"", "\"checkpoint_hash\""] {
            #expect(text.contains(key), "\(key) missing in \(text)")
        }
        #expect(try GenerationManifest.decode(data) == manifest)
    }

    @Test func generationIDsAreValidatedAndNewOnesAreValid() throws {
        for bad in ["", ".hidden", "a/b", "a b", String(repeating: "x", count: 129), "é"] {
            #expect(throws: SteerError.self) { try GenerationManifest.validateGenerationID(bad) }
        }
        let fresh = GenerationManifest.newGenerationID()
        try GenerationManifest.validateGenerationID(fresh)
        #expect(fresh.hasPrefix("g") && fresh.count == "g20261127T020000Z-3f9a1c2e".count)
        #expect(GenerationManifest.newGenerationID() != fresh)
    }

    @Test func checksumsAreFNVOfTheWholeFile() throws {
        let directory = TemporaryDirectory("sum")
        defer { directory.remove() }
        let path = directory.file("f")
        let bytes = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let (checksum, size) = try ShardChecksum.compute(path: path)
        #expect(size == 3_000_000 && checksum == ShardChecksum.format(FNV1a64.hash(bytes)))
        #expect(ShardChecksum.parse(checksum) == FNV1a64.hash(bytes))
        #expect(ShardChecksum.parse("fnv1a64:ABCDEF0123456789") == nil && ShardChecksum.parse("fnv1a64:123") == nil)
        #expect(throws: SteerError.notFound("'\(directory.file("nope"))' does not exist")) { try ShardChecksum.compute(path: directory.file("nope")) }
    }

    @Test func aHugeManifestIsRefusedBeforeParsing() {
        let data = Data(repeating: 0x20, count: GenerationManifest.maxManifestBytes + 1)
        #expect(throws: SteerError(.tooLarge, "manifest.json: \(data.count) bytes, limit is \(GenerationManifest.maxManifestBytes)")) {
            try GenerationManifest.decode(data)
        }
    }

    @Test func unsavedGenerationsWrapIndexesBuiltInProcess() throws {
        let shards = try (0..<2).map { _ in try VectorIndex(spec: IndexSpec(parsing: "Flat"), dimension: 4, metric: .innerProduct) }
        let generation = try IndexGeneration.unsaved(generationID: "live", embeddingVersion: "v", storeSequence: 9, shards: shards)
        #expect(generation.generationID == "live" && generation.manifest.storeSequence == 9 && generation.sharding.shardCount == 2)
        let ids: [ItemID] = [.int(1), .int(2), .string("x"), .string("y")]
        try generation.add([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1], labels: [10, 11, 12, 13], ids: ids)
        for (label, id) in zip([Int64(10), 11, 12, 13], ids) { #expect(shards[generation.shard(of: id)].contains(label: label)) }
        #expect(try generation.search([0, 0, 1, 0], k: 1)[0].map(\.label) == [12])
        #expect(try generation.remove(labels: [12, 99]) == 1 && generation.count == 3)
        let mixed = [shards[0], try VectorIndex(spec: IndexSpec(parsing: "Flat"), dimension: 8, metric: .innerProduct)]
        #expect(throws: SteerError.self) { try IndexGeneration.unsaved(generationID: "bad", embeddingVersion: "v", storeSequence: 0, shards: mixed) }
        #expect(throws: SteerError.self) { try IndexGeneration.unsaved(generationID: "none", embeddingVersion: "v", storeSequence: 0, shards: []) }
    }
}
