import Foundation
import SteerBuilder
import SteerCore
import SteerIndex
import SteerStore
import Testing
@testable import SteerEngine

/// `prepare` and `activate` (`GenerationStaging.swift`): a staged generation does not serve until it is
/// activated, only one is staged, and writes made in between are in the activated index.
@Suite struct GenerationStagingTests {
    private struct Fixture {
        let directory = NSTemporaryDirectory() + "steer-staging-test-" + UUID().uuidString
        let engine: RetrievalEngine

        init() throws {
            engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 8, metric: .innerProduct, syncWrites: false))
        }

        func build(_ id: String) throws {
            try FileManager.default.createDirectory(atPath: directory + "/generations", withIntermediateDirectories: true)
            _ = try GenerationBuilder.build(store: engine.store, storePath: engine.store.options.path,
                                            options: .init(version: "v1", spec: try IndexSpec(parsing: "Flat"), metric: .innerProduct, shardCount: 2,
                                                           generationID: id),
                                            output: directory + "/generations/" + id)
        }

        func cleanUp() {
            try? engine.close()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    private static func items(_ range: Range<Int>, seed: UInt64) -> [ItemInput] {
        var generator = SeededGenerator(seed: seed)
        return range.map { index in
            ItemInput(id: .int(Int64(index)), vector: (0..<8).map { _ in Float.random(in: -1...1, using: &generator) }, title: "t\(index)")
        }
    }

    private static func code(_ body: () throws -> Void) -> SteerError.Code? {
        do {
            try body()
            return nil
        } catch let error as SteerError {
            return error.code
        } catch {
            return .internal
        }
    }

    @Test func activateWithoutPrepareIsNotFoundUnlessTheGenerationServesAlready() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let engine = fixture.engine
        _ = try engine.upsert(Self.items(0..<50, seed: 1))
        try fixture.build("gA")
        #expect(Self.code { try engine.activate("gA") } == .notFound)
        #expect(engine.generation.id == "g1" && engine.stagedGenerationID == nil)
        // The serving generation: nothing to do, nothing changes.
        let same = try engine.activate("g1")
        #expect(same.generation == "g1" && same.previous == "g1" && same.replayed == 0)
        // A failed prepare stages nothing.
        #expect(Self.code { try engine.prepare("missing") } == .notFound)
        #expect(engine.stagedGenerationID == nil && engine.stats().stagedGeneration == nil)
    }

    @Test func aSecondPrepareReplacesTheFirstAndOnlyTheStagedOneActivates() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let engine = fixture.engine
        _ = try engine.upsert(Self.items(0..<50, seed: 2))
        try fixture.build("gA")
        try fixture.build("gB")
        #expect(try engine.prepare("gA").generation == "gA")
        #expect(engine.stats().stagedGeneration == "gA" && engine.generation.id == "g1")
        try engine.prepare("gB")
        #expect(engine.stats().stagedGeneration == "gB")
        #expect(Self.code { try engine.activate("gA") } == .notFound)
        #expect(engine.stagedGenerationID == "gB" && engine.generation.id == "g1")
        // dropStaged only drops the named one.
        #expect(!engine.dropStaged("gA") && engine.stagedGenerationID == "gB")
        let result = try engine.activate("gB")
        #expect(result.generation == "gB" && result.previous == "g1")
        #expect(engine.generation.id == "gB" && engine.stagedGenerationID == nil)
        // Activating again is harmless; a dropped one is gone.
        #expect(try engine.activate("gB").replayed == 0)
        try engine.prepare("gA")
        #expect(engine.dropStaged("gA") && engine.stagedGenerationID == nil)
        #expect(Self.code { try engine.activate("gA") } == .notFound)
        #expect(engine.generation.id == "gB")
    }

    @Test func writesBetweenPrepareAndActivateAreInTheActivatedIndex() throws {
        let fixture = try Fixture()
        defer { fixture.cleanUp() }
        let engine = fixture.engine
        _ = try engine.upsert(Self.items(0..<100, seed: 3))
        try fixture.build("gA")
        try engine.prepare("gA")
        // The staged generation does not serve: writes and reads go to g1 meanwhile.
        let added = Self.items(1000..<1040, seed: 4)
        _ = try engine.upsert(added)
        #expect(try engine.delete((0..<10).map { .int(Int64($0)) }) == 10)
        let replaced = ItemInput(id: .int(50), vector: [Float](repeating: 5, count: 8), title: "replaced")
        _ = try engine.upsert([replaced])
        #expect(engine.generation.id == "g1")
        #expect(try engine.search([replaced.vector], options: SearchOptions(k: 1))[0].first?.id == .int(50))
        let probes = (0..<10).map { Self.items($0..<($0 + 1), seed: 100 + UInt64($0))[0].vector }
        let before = try probes.map { try engine.search([$0], options: SearchOptions(k: 10))[0] }

        let result = try engine.activate("gA")
        #expect(result.generation == "gA" && result.previous == "g1" && result.replayed >= 51)
        #expect(engine.generation.id == "gA")
        #expect(engine.stats().indexed == engine.store.count && engine.store.count == 130)
        let after = try probes.map { try engine.search([$0], options: SearchOptions(k: 10))[0] }
        #expect(after == before)
        #expect(try engine.search([replaced.vector], options: SearchOptions(k: 1))[0].first?.id == .int(50))
        var labels: [Int64] = []
        _ = try engine.store.scanVectors(version: "v1") { ids, _ in labels.append(contentsOf: ids) }
        #expect(labels.count == 130 && labels.allSatisfy { engine.generation.index.contains(label: $0) })
    }

    @Test func aStagedGenerationIsNotRecordedAndARestartForgetsIt() throws {
        let fixture = try Fixture()
        defer { try? FileManager.default.removeItem(atPath: fixture.directory) }
        _ = try fixture.engine.upsert(Self.items(0..<30, seed: 5))
        try fixture.build("gA")
        try fixture.engine.prepare("gA")
        try fixture.engine.close()
        let reopened = try RetrievalEngine(configuration: .init(dataDirectory: fixture.directory, syncWrites: false))
        defer { try? reopened.close() }
        #expect(reopened.generation.id == "g1" && reopened.stagedGenerationID == nil)
        #expect(try reopened.swap(to: "gA").generation == "gA")
    }
}
