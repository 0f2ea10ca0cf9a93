import Foundation
import SteerCore
import SteerData
import Testing
@testable import SteerEngine

/// `DataDirectoryConfig`, the owner of `DIR/steer.json` (docs/operations.md "Data directory settings"):
/// round trip, files written before it existed, and damaged or hostile files refused as `corrupt`
/// naming the file and the field.
@Suite struct DataDirectoryConfigTests {
    static func scratch() -> String {
        let directory = NSTemporaryDirectory() + "steer-config-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    static func failure(_ body: () throws -> Void) -> SteerError? {
        do {
            try body()
            return nil
        } catch let error as SteerError {
            return error
        } catch {
            return SteerError.internalError("\(error)")
        }
    }

    /// The bytes the engine wrote before `DataDirectoryConfig` existed: an untyped dictionary through
    /// `JSONSerialization` with these options (the code that `DataDirectoryConfig` replaced).
    static func todaysWriter(dimension: Int, spec: String, metric: String, version: String, generation: String,
                             generationDirectory: String?) throws -> Data {
        var object: [String: Any] = [
            "format": 1, "dimension": dimension, "index_spec": spec, "metric": metric,
            "embedding_version": version, "generation": generation,
        ]
        if let generationDirectory { object["generation_directory"] = generationDirectory }
        return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
    }

    @Test func aConfigRoundTripsThroughTheFile() throws {
        let directory = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(try DataDirectoryConfig.read(dataDirectory: directory) == nil)
        #expect(!DataDirectoryConfig.exists(dataDirectory: directory))
        for config in [
            DataDirectoryConfig(dimension: 4, indexSpec: "Flat", metric: .innerProduct, embeddingVersion: "v1"),
            DataDirectoryConfig(dimension: 65536, indexSpec: "HNSW32", metric: .l2, embeddingVersion: String(repeating: "é", count: 128),
                                generation: "gen-2.a_b", generationDirectory: "/data/dir/generations/gen-2.a_b"),
            DataDirectoryConfig(dimension: 1, indexSpec: "IVF16,Flat", metric: .cosine, embeddingVersion: "ckpt-0123", generation: "g9",
                                generationDirectory: "g9"),
        ] {
            try config.write(dataDirectory: directory)
            #expect(DataDirectoryConfig.exists(dataDirectory: directory))
            #expect(try DataDirectoryConfig.read(dataDirectory: directory) == config)
            let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/steer.json"))) as? [String: Any]
            #expect(object?["format"] as? Int == 1)
            #expect(object?["generation_directory"] as? String == config.generationDirectory)
        }
        // Only the file remains: no temporary left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["steer.json"])
        // A config that breaks a rule is never written.
        let bad = DataDirectoryConfig(dimension: 0, indexSpec: "Flat", metric: .l2, embeddingVersion: "v1")
        let refused = Self.failure { try bad.write(dataDirectory: directory) }
        #expect(refused?.code == .invalidRequest && refused?.message.contains("dimension") == true, "\(String(describing: refused))")
        #expect(try DataDirectoryConfig.read(dataDirectory: directory)?.dimension == 1)
    }

    @Test func todaysFormatReadsUnchanged() throws {
        let directory = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/steer.json"
        // As the previous writer produced it (escaped slashes, " : ", no newline), captured from a server.
        let captured = """
        {
          "dimension" : 64,
          "embedding_version" : "v1",
          "format" : 1,
          "generation" : "bench-HNSW32_EFC100",
          "generation_directory" : "\\/tmp\\/server\\/generations\\/bench-HNSW32_EFC100",
          "index_spec" : "Flat",
          "metric" : "ip"
        }
        """
        try Data(captured.utf8).write(to: URL(fileURLWithPath: path))
        #expect(try DataDirectoryConfig.read(dataDirectory: directory)
            == DataDirectoryConfig(dimension: 64, indexSpec: "Flat", metric: .innerProduct, embeddingVersion: "v1",
                                   generation: "bench-HNSW32_EFC100", generationDirectory: "/tmp/server/generations/bench-HNSW32_EFC100"))
        // Produced by the previous writer in this test, with and without a generation directory.
        try Self.todaysWriter(dimension: 8, spec: "HNSW32", metric: "l2", version: "v2", generation: "g1", generationDirectory: nil)
            .write(to: URL(fileURLWithPath: path))
        #expect(try DataDirectoryConfig.read(dataDirectory: directory)
            == DataDirectoryConfig(dimension: 8, indexSpec: "HNSW32", metric: .l2, embeddingVersion: "v2"))
        try Self.todaysWriter(dimension: 8, spec: "Flat", metric: "cosine", version: "v2", generation: "gX", generationDirectory: "/a/b/gX")
            .write(to: URL(fileURLWithPath: path))
        #expect(try DataDirectoryConfig.read(dataDirectory: directory)
            == DataDirectoryConfig(dimension: 8, indexSpec: "Flat", metric: .cosine, embeddingVersion: "v2", generation: "gX", generationDirectory: "/a/b/gX"))
        // The previous reader took `format` and `generation` as optional; so does this one.
        try Data(#"{"dimension":3,"index_spec":"Flat","metric":"ip","embedding_version":"v1"}"#.utf8).write(to: URL(fileURLWithPath: path))
        #expect(try DataDirectoryConfig.read(dataDirectory: directory)
            == DataDirectoryConfig(dimension: 3, indexSpec: "Flat", metric: .innerProduct, embeddingVersion: "v1", generation: "g1"))
    }

    @Test func anEngineOpensADirectoryWrittenInTodaysFormat() throws {
        let directory = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, metric: .l2, syncWrites: false))
        _ = try engine.upsert((0..<20).map { ItemInput(id: .int(Int64($0)), vector: [Float($0), 1, 0, 0], title: "t\($0)") })
        try engine.close()
        // Replace the settings with the previous writer's bytes for the same settings.
        try Self.todaysWriter(dimension: 4, spec: "Flat", metric: "l2", version: "v1", generation: "g1", generationDirectory: nil)
            .write(to: URL(fileURLWithPath: directory + "/steer.json"))
        engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, syncWrites: false))
        defer { try? engine.close() }
        #expect(engine.generation.dimension == 4 && engine.generation.metric == .l2 && engine.generation.id == "g1")
        #expect(engine.openingWarnings.isEmpty, "\(engine.openingWarnings)")
        #expect(try engine.search([[7, 1, 0, 0]], options: SearchOptions(k: 1)).first?.map(\.id) == [.int(7)])
    }

    /// Damaged and hostile contents, and a word the refusal must name (the field, or what is wrong).
    static let hostile: [(String, String)] = [
        ("", "not a JSON object"),
        ("{", "not a JSON object"),
        ("[]", "not a JSON object"),
        ("null", "not a JSON object"),
        (#"{"dimension":"four","index_spec":"Flat","metric":"ip","embedding_version":"v1"}"#, "'dimension'"),
        (#"{"dimension":-4,"format":1,"index_spec":"Flat","metric":"ip","embedding_version":"v1"}"#, "'dimension'"),
        (#"{"dimension":0,"index_spec":"Flat","metric":"ip","embedding_version":"v1"}"#, "'dimension'"),
        (#"{"dimension":65537,"index_spec":"Flat","metric":"ip","embedding_version":"v1"}"#, "'dimension'"),
        (#"{"dimension":4.5,"index_spec":"Flat","metric":"ip","embedding_version":"v1"}"#, "'dimension'"),
        (#"{"dimension":99999999999999999999999,"index_spec":"Flat","metric":"ip","embedding_version":"v1"}"#, "'dimension'"),
        (#"{"index_spec":"Flat","metric":"ip","embedding_version":"v1"}"#, "'dimension' is missing"),
        (#"{"dimension":4,"index_spec":"Bogus9","metric":"ip","embedding_version":"v1"}"#, "'index_spec'"),
        (#"{"dimension":4,"index_spec":["Flat"],"metric":"ip","embedding_version":"v1"}"#, "'index_spec'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"hamming","embedding_version":"v1"}"#, "'metric'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":null,"embedding_version":"v1"}"#, "'metric'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":""}"#, "'embedding_version'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":"\#(String(repeating: "v", count: 257))"}"#, "'embedding_version'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":"v1","generation":"../up"}"#, "'generation'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":"v1","generation":""}"#, "'generation'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":"v1","generation_directory":""}"#, "'generation_directory'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":"v1","generation_directory":"a\u0000b"}"#, "'generation_directory'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":"v1","generation_directory":7}"#, "'generation_directory'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":"v1","generation_dir":"g2"}"#, "'generation_dir' is not a field"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":"v1","format":2}"#, "'format'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":"v1","format":"1"}"#, "'format'"),
        (#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":"v1","pad":""# + String(repeating: "x", count: 70_000) + "\"}", "over 65536 bytes"),
    ]

    @Test(arguments: 0..<hostile.count)
    func aDamagedOrHostileFileIsRefusedNamingTheFileAndField(_ index: Int) throws {
        let (content, expected) = Self.hostile[index]
        let directory = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data(content.utf8).write(to: URL(fileURLWithPath: directory + "/steer.json"))
        let error = Self.failure { _ = try DataDirectoryConfig.read(dataDirectory: directory) }
        #expect(error?.code == .corrupt, "\(content.prefix(120)): \(String(describing: error))")
        #expect(error?.message.contains(directory + "/steer.json") == true, "\(String(describing: error))")
        #expect(error?.message.contains(expected) == true, "\(content.prefix(120)): \(String(describing: error))")
    }

    @Test func anEngineRefusesADamagedFileAndLeavesItAlone() throws {
        let directory = Self.scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, syncWrites: false)).close()
        let damaged = Data(#"{"dimension":4,"index_spec":"Flat","metric":"ip","embedding_version":"v1","generation":"a/b"}"#.utf8)
        try damaged.write(to: URL(fileURLWithPath: directory + "/steer.json"))
        let error = Self.failure { try RetrievalEngine(configuration: .init(dataDirectory: directory, syncWrites: false)).close() }
        #expect(error?.code == .corrupt && error?.message.contains("'generation'") == true, "\(String(describing: error))")
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/steer.json")) == damaged)
    }
}
