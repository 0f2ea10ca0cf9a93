import Foundation
import SteerBuilder
import SteerCore
import SteerData
import SteerIndex
import SteerStore
import Testing
@testable import SteerEngine

/// Trust boundaries of the engine: `swap` paths (docs/protocol.md "swap"), generations and saved
/// indexes from another store or ahead of it (docs/operations.md "Recovery"), id normalisation, vector
/// magnitudes, and durable writes that the index failed to take.
@Suite struct TrustBoundaryTests {
    static func vector(_ n: Int, dimension: Int = 4, scale: Float = 1) -> [Float] {
        (0..<dimension).map { Float(sin(Double(n * 7 + $0 * 3))) * scale + (($0 == 0) ? 2 : 0) }
    }

    static func items(_ range: Range<Int>, scale: Float = 1) -> [ItemInput] {
        range.map { ItemInput(id: .int(Int64($0)), vector: vector($0, scale: scale), title: "t\($0)") }
    }

    /// A data directory with an engine, removed by `cleanUp`.
    final class Fixture: @unchecked Sendable {
        let directory = NSTemporaryDirectory() + "steer-trust-test-" + UUID().uuidString
        var engine: RetrievalEngine
        let metric: Metric

        init(metric: Metric = .l2, checkpointRoot: String? = nil) throws {
            self.metric = metric
            engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, metric: metric, syncWrites: false,
                                                              checkpointRoot: checkpointRoot))
        }

        func reopen() throws {
            try engine.close()
            engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, syncWrites: false))
        }

        @discardableResult
        func build(_ id: String, into parent: String? = nil) throws -> String {
            let parent = parent ?? directory + "/generations"
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            _ = try GenerationBuilder.build(store: engine.store, storePath: engine.store.options.path,
                                            options: .init(version: "v1", spec: try IndexSpec(parsing: "Flat"), metric: metric, shardCount: 1,
                                                           generationID: id),
                                            output: parent + "/" + id)
            return parent + "/" + id
        }

        func cleanUp() {
            try? engine.close()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    static func code(_ body: () throws -> Void) -> SteerError? {
        do {
            try body()
            return nil
        } catch let error as SteerError {
            return error
        } catch {
            return SteerError.internalError("\(error)")
        }
    }

    static func editJSON(_ path: String, _ change: (inout [String: Any]) -> Void) throws {
        var object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
        change(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
    }

    // MARK: Item 5: swap paths

    @Test func swapLoadsOnlyGenerationsUnderTheDataDirectory() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        _ = try fixture.engine.upsert(Self.items(0..<30))
        let inside = try fixture.build("gIn")
        // The same store's generation, written outside DIR/generations.
        let outsideParent = fixture.directory + "-outside"
        defer { try? FileManager.default.removeItem(atPath: outsideParent) }
        let outside = try fixture.build("gOut", into: outsideParent)
        try FileManager.default.createSymbolicLink(atPath: fixture.directory + "/generations/link", withDestinationPath: outside)
        let engine = fixture.engine
        for reference in [outside, "../../" + (outsideParent as NSString).lastPathComponent + "/gOut", "link", "gIn/../link", "/etc", "."] {
            let error = Self.code { try engine.swap(to: reference) }
            #expect(error?.code == .invalidRequest, "\(reference): \(String(describing: error))")
        }
        #expect(engine.generation.id == "g1")
        // Inside, by name or by path.
        #expect(try engine.swap(to: "gIn").generation == "gIn")
        #expect(try engine.swap(to: inside).directory == (try PathRoot(inside)).path)
        // A restart refuses a steer.json that records a directory outside DIR/generations.
        try Self.editJSON(fixture.directory + "/steer.json") { $0["generation_directory"] = outside }
        try fixture.reopen()
        #expect(fixture.engine.generation.id == "g1")
        #expect(fixture.engine.openingWarnings.contains { $0.contains("outside") }, "\(fixture.engine.openingWarnings)")
    }

    @Test func checkpointSwapsNeedARootAndStayInsideIt() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        _ = try fixture.engine.upsert(Self.items(0..<10))
        try fixture.build("gC")
        let checkpoints = fixture.directory + "-checkpoints"
        try FileManager.default.createDirectory(atPath: checkpoints + "/ckpt", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: checkpoints) }
        let noRoot = Self.code { try fixture.engine.swap(to: "gC", checkpoint: checkpoints + "/ckpt") }
        #expect(noRoot?.code == .invalidRequest && noRoot?.message.contains("checkpoint root") == true, "\(String(describing: noRoot))")
        try fixture.engine.close()
        fixture.engine = try RetrievalEngine(configuration: .init(dataDirectory: fixture.directory, syncWrites: false,
                                                                  checkpointRoot: checkpoints))
        for reference in ["/etc", checkpoints + "/../", "../x", fixture.directory] {
            let error = Self.code { try fixture.engine.swap(to: "gC", checkpoint: reference) }
            #expect(error?.code == .invalidRequest && error?.message.contains("checkpoint") == true, "\(reference): \(String(describing: error))")
        }
        // Inside the root the checkpoint itself is read (and here refused as no checkpoint).
        let inside = Self.code { try fixture.engine.swap(to: "gC", checkpoint: "ckpt") }
        #expect(inside != nil && inside?.message.contains("checkpoint root") == false && inside?.message.contains("outside") == false,
                "\(String(describing: inside))")
        // A checkpoint file that never ends (a device behind a link) is refused, not read forever.
        try FileManager.default.createSymbolicLink(atPath: checkpoints + "/ckpt/model.safetensors", withDestinationPath: "/dev/zero")
        #expect(FileManager.default.createFile(atPath: checkpoints + "/ckpt/items.jsonl", contents: Data("{\"id\": 1}\n".utf8)))
        let endless = Self.code { try fixture.engine.swap(to: "gC", checkpoint: "ckpt") }
        #expect(endless?.code == .corrupt && endless?.message.contains("not a regular file") == true, "\(String(describing: endless))")
    }

    // MARK: Item 9: store identity and sequence bounds

    @Test func generationsOfAnotherStoreOrAheadOfThisOneAreCorrupt() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let other = try Fixture()
        defer { other.cleanUp() }
        _ = try fixture.engine.upsert(Self.items(0..<30))
        _ = try other.engine.upsert(Self.items(100..<130))
        let generations = fixture.directory + "/generations"
        try other.build("foreign", into: generations)
        let foreign = Self.code { try fixture.engine.swap(to: "foreign") }
        #expect(foreign?.code == .corrupt && foreign?.message.contains("store") == true, "\(String(describing: foreign))")

        let ahead = try fixture.build("ahead")
        try Self.editJSON(ahead + "/manifest.json") { $0["store_sequence"] = 1 << 40 }
        let refused = Self.code { try fixture.engine.swap(to: "ahead") }
        #expect(refused?.code == .corrupt && refused?.message.contains("ahead") == true, "\(String(describing: refused))")

        // A manifest written before store ids existed still loads (sequence bound and versions checked).
        let legacy = try fixture.build("legacy")
        try Self.editJSON(legacy + "/manifest.json") { $0.removeValue(forKey: "store_id") }
        #expect(try fixture.engine.swap(to: "legacy").generation == "legacy")
        #expect(try fixture.engine.search([Self.vector(7)], options: SearchOptions(k: 1))[0].first?.id == .int(7))
        #expect(fixture.engine.store.storeID != other.engine.store.storeID)
    }

    @Test func aSavedIndexAheadOfTheStoreIsRebuiltNotServed() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        _ = try fixture.engine.upsert(Self.items(0..<40))
        try fixture.reopen()
        let stale = fixture.directory + "-stale"
        defer { try? FileManager.default.removeItem(atPath: stale) }
        try FileManager.default.copyItem(atPath: fixture.directory + "/index", toPath: stale)
        _ = try fixture.engine.upsert(Self.items(40..<60))
        try fixture.engine.close()
        // The 40-item index, claiming a sequence the store never reached.
        try FileManager.default.removeItem(atPath: fixture.directory + "/index")
        try FileManager.default.copyItem(atPath: stale, toPath: fixture.directory + "/index")
        try Self.editJSON(fixture.directory + "/index/index.json") { $0["sequence"] = 1 << 40 }
        fixture.engine = try RetrievalEngine(configuration: .init(dataDirectory: fixture.directory, syncWrites: false))
        #expect(fixture.engine.stats().indexed == 60)
        #expect(fixture.engine.openingWarnings.contains { $0.contains("corrupt") && $0.contains("ahead") }, "\(fixture.engine.openingWarnings)")
        #expect(try fixture.engine.search([Self.vector(55)], options: SearchOptions(k: 1))[0].first?.id == .int(55))
    }

    @Test func aSavedIndexOfAnotherStoreIsRebuiltNotServed() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let other = try Fixture()
        defer { other.cleanUp() }
        _ = try fixture.engine.upsert(Self.items(0..<60))
        _ = try other.engine.upsert(Self.items(0..<60, scale: -3))  // same ids and internal ids, other vectors
        try fixture.engine.close()
        try other.engine.close()
        try FileManager.default.removeItem(atPath: fixture.directory + "/index")
        try FileManager.default.copyItem(atPath: other.directory + "/index", toPath: fixture.directory + "/index")
        fixture.engine = try RetrievalEngine(configuration: .init(dataDirectory: fixture.directory, syncWrites: false))
        #expect(fixture.engine.openingWarnings.contains { $0.contains("store") }, "\(fixture.engine.openingWarnings)")
        for n in [3, 17, 42] {
            #expect(try fixture.engine.search([Self.vector(n)], options: SearchOptions(k: 1))[0].first?.id == .int(Int64(n)))
        }
    }

    // MARK: Item 10: ids, magnitudes, durable writes

    @Test func nfcAndNfdFormsOfAnIdAreOneItemEverywhere() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let engine = fixture.engine
        let nfd = ItemID.string("cafe\u{301}")
        let nfc = ItemID.string("caf\u{E9}")
        _ = try engine.upsert([ItemInput(id: nfd, vector: Self.vector(1), title: "first")])
        _ = try engine.upsert([ItemInput(id: nfc, vector: Self.vector(2), title: "second")])
        #expect(engine.stats().items == 1 && engine.stats().indexed == 1)
        let got = try engine.get([nfd, nfc])
        #expect(got.map { $0?.title } == ["second", "second"])
        let hit = try #require(try engine.search([Self.vector(2)], options: SearchOptions(k: 5))[0].first)
        #expect(hit.id == nfc && hit.title == "second")
        if case .string(let text) = hit.id { #expect(Array(text.unicodeScalars) == Array("caf\u{E9}".unicodeScalars), "returned in NFC") }
        #expect(try engine.delete([nfd]) == 1)
        #expect(engine.stats().items == 0)
        #expect(try engine.get([nfc])[0] == nil)
    }

    @Test func hugeFiniteComponentsAreRefusedBeforeAnythingIsWritten() throws {
        let fixture = try Fixture(metric: .cosine)
        defer { fixture.cleanUp() }
        let engine = fixture.engine
        _ = try engine.upsert(Self.items(0..<5))
        // 1e20² overflows Float: the cosine norm (and any dot product) would be infinite.
        let error = Self.code { _ = try engine.upsert([ItemInput(id: .int(9), vector: [1e20, 1, 1, 1])]) }
        #expect(error?.code == .invalidRequest && error?.message.contains("items[0].vector[0]") == true, "\(String(describing: error))")
        #expect(try engine.get([.int(9)])[0] == nil, "a refused upsert wrote nothing")
        #expect(engine.stats().items == 5)
        let search = Self.code { _ = try engine.search([[3e19, 0, 0, 1]], options: SearchOptions(k: 3)) }
        #expect(search?.code == .invalidRequest && search?.message.contains("vector[0]") == true, "\(String(describing: search))")
        for hit in try engine.search([[1e15, 1e15, -1e15, 1e15]], options: SearchOptions(k: 5))[0] { #expect(hit.score.isFinite) }
    }

    @Test func aDurableUpsertIsNotAnsweredWithAnErrorAndTheIndexCatchesUp() throws {
        let fixture = try Fixture(metric: .l2)
        defer { fixture.cleanUp() }
        let engine = fixture.engine
        _ = try engine.upsert(Self.items(0..<10))
        // A generation whose index cannot take this directory's 4-d vectors: every index update fails
        // after the store has committed the write.
        let broken = try VectorIndex(spec: IndexSpec(parsing: "Flat"), dimension: 8, metric: .l2)
        let generation = try IndexGeneration.unsaved(generationID: "broken", embeddingVersion: "v1",
                                                     storeSequence: engine.store.latestSequence, shards: [broken])
        let good = engine.replaceGeneration(Generation(id: "broken", embeddingVersion: "v1", dimension: 4, metric: .l2,
                                                       index: generation, encoder: nil, builtAtSequence: engine.store.latestSequence))
        #expect(try engine.upsert(Self.items(10..<12)) == 2)
        #expect(try engine.delete([.int(3)]) == 1)
        #expect(!engine.indexIsComplete)
        #expect(try engine.get([.int(10), .int(11), .int(3)]).map { $0 != nil } == [true, true, false])
        // Back on the index that serves without those writes: the next write replays them from the store.
        _ = engine.replaceGeneration(good)
        #expect(try engine.search([Self.vector(11)], options: SearchOptions(k: 1))[0].first?.id != .int(11))
        _ = try engine.upsert(Self.items(12..<13))
        #expect(engine.indexIsComplete)
        #expect(engine.stats().indexed == 12)
        #expect(try engine.search([Self.vector(11)], options: SearchOptions(k: 1))[0].first?.id == .int(11))
        #expect(try engine.search([Self.vector(3)], options: SearchOptions(k: 12))[0].allSatisfy { $0.id != .int(3) })
    }
}
