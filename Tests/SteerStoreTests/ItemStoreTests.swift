import Foundation
import SteerCore
import Testing
@testable import SteerStore

/// A fresh directory under /tmp, removed by `remove()`.
private struct TemporaryDirectory {
    let path: String

    init() {
        path = NSTemporaryDirectory() + "steer-store-test-" + UUID().uuidString
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

private typealias Write = ItemStore.ItemWrite

/// Opens a store in a temporary directory with a 4-d version `v1`, runs `body`, then removes it.
private func withStore<T>(syncWrites: Bool = false, _ body: (ItemStore, TemporaryDirectory) throws -> T) throws -> T {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let store = try ItemStore(options: .init(path: directory.path, syncWrites: syncWrites))
    defer { store.close() }
    try store.createVersion("v1", dimension: 4)
    return try body(store, directory)
}

@Suite struct ItemStoreTests {
    // MARK: Memory

    @Test func memtableBytesGrowWithUnflushedWritesAndAreZeroOnceClosed() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try ItemStore(options: .init(path: directory.path))
        try store.createVersion("v1", dimension: 64)
        let before = store.memtableBytes
        #expect(before > 0) // every family starts with one arena block
        let vector = (0..<64).map { Float($0) }
        for start in stride(from: 0, to: 20_000, by: 500) {
            _ = try store.upsert((start..<start + 500).map { Write(id: .int(Int64($0)), title: "item \($0)", tags: ["t\($0 % 7)"], vectors: ["v1": vector]) })
        }
        // 20 000 items of 256 vector bytes each, unflushed: several MB more in the memtables.
        #expect(store.memtableBytes > before + 4_000_000)
        #expect(store.memtableBytes < RocksDatabase.memtableBudgetBytes * 2)
        store.close()
        #expect(store.memtableBytes == 0)
    }

    // MARK: Round trips

    @Test func everyFieldRoundTripsWithIntAndStringIDs() throws {
        try withStore { store, _ in
            try store.createVersion("v2", dimension: 2)
            let result = try store.upsert([
                Write(id: .int(7), title: "Seven", tags: ["comedy", "drama"], attributesJSON: #"{"year": 1999}"#,
                      vectors: ["v1": [1, 2, 3, 4], "v2": [5, 6]]),
                Write(id: .string("7"), title: nil, tags: [], attributesJSON: nil, vectors: ["v1": [-1, -2, -3, -4]]),
            ])
            #expect(result.internalIDs == [0, 1])
            #expect(result.sequence == store.latestSequence)
            let records = try store.get([.int(7), .string("7"), .int(8)])
            #expect(records[0] == ItemStore.ItemRecord(id: .int(7), internalID: 0, title: "Seven", tags: ["comedy", "drama"], attributesJSON: #"{"year": 1999}"#))
            #expect(records[1] == ItemStore.ItemRecord(id: .string("7"), internalID: 1, title: nil, tags: [], attributesJSON: nil))
            #expect(records[2] == nil)
            #expect(try store.internalID(of: .string("7")) == 1)
            #expect(try store.record(internalID: 0)?.id == .int(7))
            #expect(try store.records(internalIDs: [1, 5, 0]).map { $0?.id } == [.string("7"), nil, .int(7)])
            #expect(try store.vector(internalID: 0, version: "v1") == [1, 2, 3, 4])
            #expect(try store.vector(internalID: 0, version: "v2") == [5, 6])
            #expect(try store.vectors(internalIDs: [1, 0, 9], version: "v2") == [nil, [5, 6], nil])
            #expect(try store.internalIDs(withTag: "comedy") == [0])
            #expect(try store.tagCounts() == ["comedy": 1, "drama": 1])
            #expect(store.count == 2)
            #expect(store.versions() == [.init(name: "v1", dimension: 4), .init(name: "v2", dimension: 2)])
        }
    }

    @Test func duplicateTagsAreStoredOnce() throws {
        try withStore { store, _ in
            _ = try store.upsert([Write(id: .int(1), tags: ["a", "b", "a"])])
            #expect(try store.get([.int(1)])[0]?.tags == ["a", "b"])
            #expect(try store.tagCounts() == ["a": 1, "b": 1])
        }
    }

    // MARK: Reopen

    @Test func reopeningPreservesItemsVersionsPostingsAndTheIDCounter() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        do {
            let store = try ItemStore(options: .init(path: directory.path))
            try store.createVersion("v1", dimension: 3)
            _ = try store.upsert((0..<5).map { Write(id: .int(Int64($0)), title: "t\($0)", tags: ["even-\($0 % 2 == 0)"], vectors: ["v1": [Float($0), 0, 1]]) })
            _ = try store.delete([.int(4)])
            store.close()
        }
        let store = try ItemStore(options: .init(path: directory.path, createIfMissing: false))
        defer { store.close() }
        #expect(store.versions() == [.init(name: "v1", dimension: 3)])
        #expect(store.count == 4)
        #expect(try store.get([.int(3)])[0] == .init(id: .int(3), internalID: 3, title: "t3", tags: ["even-false"], attributesJSON: nil))
        #expect(try store.internalIDs(withTag: "even-true") == [0, 2])
        #expect(try store.tagCounts() == ["even-true": 2, "even-false": 2])
        #expect(try store.vector(internalID: 2, version: "v1") == [2, 0, 1])
        // The counter survived: a new item gets the next id, never a reused one.
        #expect(try store.upsert([Write(id: .int(4))]).internalIDs == [5])
    }

    @Test func openingADirectoryThatIsNotAStoreFails() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        try FileManager.default.createDirectory(atPath: directory.path, withIntermediateDirectories: true)
        try Data("hello".utf8).write(to: URL(fileURLWithPath: directory.path + "/notes.txt"))
        let error = #expect(throws: SteerError.self) { try ItemStore(options: .init(path: directory.path)) }
        #expect(error?.code == .invalidRequest)
        #expect(error?.message.contains("not a Steer store") == true)

        let file = directory.path + "/notes.txt"
        #expect(throws: SteerError.self) { try ItemStore(options: .init(path: file)) }
    }

    @Test func openingAMissingStoreWithoutCreateFails() {
        let directory = TemporaryDirectory()
        let error = #expect(throws: SteerError.self) { try ItemStore(options: .init(path: directory.path, createIfMissing: false)) }
        #expect(error?.code == .notFound)
        #expect(!FileManager.default.fileExists(atPath: directory.path))
    }

    @Test func openingAStoreOfANewerFormatFails() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        ItemStoreTests.closeImmediately(try ItemStore(options: .init(path: directory.path)))
        do {
            let database = try RocksDatabase(path: directory.path, create: false, syncWrites: true, extraFamilies: [])
            let batch = WriteBatch(database)
            batch.put(.meta, StoreKey.formatVersion, StoreKey.uint64(ItemStore.formatVersion + 1))
            try database.write(batch)
            database.close()
        }
        let error = #expect(throws: SteerError.self) { try ItemStore(options: .init(path: directory.path)) }
        #expect(error?.message.contains("format 2") == true)
    }

    private static func closeImmediately(_ store: ItemStore) { store.close() }

    @Test func aClosedStoreRefusesCalls() throws {
        try withStore { store, _ in
            store.close()
            let error = #expect(throws: SteerError.self) { try store.get([.int(1)]) }
            #expect(error?.code == .unavailable)
            #expect(store.latestSequence == 0)
        }
    }

    // MARK: Versions

    @Test func creatingAVersionIsIdempotentButRefusesAnotherDimension() throws {
        try withStore { store, _ in
            try store.createVersion("v1", dimension: 4)
            let error = #expect(throws: SteerError.self) { try store.createVersion("v1", dimension: 5) }
            #expect(error?.code == .dimensionMismatch)
            #expect(throws: SteerError.self) { try store.createVersion("", dimension: 5) }
            #expect(throws: SteerError.self) { try store.createVersion("v3", dimension: 0) }
            #expect(store.version(named: "v1")?.dimension == 4)
            #expect(store.version(named: "v9") == nil)
        }
    }

    @Test func droppingAVersionRemovesItsVectorsOnly() throws {
        try withStore { store, _ in
            try store.createVersion("v2", dimension: 1)
            _ = try store.upsert([Write(id: .int(1), vectors: ["v1": [1, 1, 1, 1], "v2": [2]])])
            try store.dropVersion("v2")
            #expect(store.version(named: "v2") == nil)
            #expect(throws: SteerError.self) { try store.vector(internalID: 0, version: "v2") }
            try store.createVersion("v2", dimension: 1)
            #expect(try store.vector(internalID: 0, version: "v2") == nil)
            #expect(try store.vector(internalID: 0, version: "v1") == [1, 1, 1, 1])
        }
    }

    // MARK: Upsert and delete

    @Test func upsertReplacesTheRecordTagsAndPostingsButKeepsOtherVersionsVectors() throws {
        try withStore { store, _ in
            try store.createVersion("v2", dimension: 2)
            _ = try store.upsert([Write(id: .string("a"), title: "old", tags: ["x", "y"], attributesJSON: "{}", vectors: ["v1": [1, 1, 1, 1], "v2": [2, 2]])])
            let result = try store.upsert([Write(id: .string("a"), title: "new", tags: ["y", "z"], vectors: ["v2": [3, 3]])])
            #expect(result.internalIDs == [0])
            #expect(store.count == 1)
            #expect(try store.get([.string("a")])[0] == .init(id: .string("a"), internalID: 0, title: "new", tags: ["y", "z"], attributesJSON: nil))
            #expect(try store.internalIDs(withTag: "x") == [])
            #expect(try store.internalIDs(withTag: "z") == [0])
            #expect(try store.tagCounts() == ["y": 1, "z": 1])
            #expect(try store.vector(internalID: 0, version: "v1") == [1, 1, 1, 1])
            #expect(try store.vector(internalID: 0, version: "v2") == [3, 3])
        }
    }

    @Test func deleteRemovesRecordsVectorsAndPostingsAndNeverReusesInternalIDs() throws {
        try withStore { store, _ in
            _ = try store.upsert([
                Write(id: .int(1), tags: ["t"], vectors: ["v1": [1, 1, 1, 1]]),
                Write(id: .int(2), tags: ["t"], vectors: ["v1": [2, 2, 2, 2]]),
            ])
            let result = try store.delete([.int(1), .int(1), .int(99)])
            #expect(result.deleted == [.int(1): 0])
            #expect(result.sequence == store.latestSequence)
            #expect(try store.get([.int(1)]) == [nil])
            #expect(try store.internalID(of: .int(1)) == nil)
            #expect(try store.vector(internalID: 0, version: "v1") == nil)
            #expect(try store.internalIDs(withTag: "t") == [1])
            #expect(try store.tagCounts() == ["t": 1])
            #expect(store.count == 1)
            #expect(try store.delete([.int(42)]).deleted.isEmpty)
            #expect(try store.upsert([Write(id: .int(1))]).internalIDs == [2])
        }
    }

    // MARK: Validation

    fileprivate static let invalidItems: [(String, Write, SteerError.Code, String)] = [
        ("empty id", Write(id: .string("")), .invalidRequest, "empty"),
        ("NaN", Write(id: .int(2), vectors: ["v1": [0, .nan, 0, 0]]), .invalidRequest, "vectors[\"v1\"][1]"),
        ("infinity", Write(id: .int(2), vectors: ["v1": [0, 0, -.infinity, 0]]), .invalidRequest, "vectors[\"v1\"][2]"),
        ("wrong dimension", Write(id: .int(2), vectors: ["v1": [1, 2, 3]]), .dimensionMismatch, "3 dimensions, expected 4"),
        ("unknown version", Write(id: .int(2), vectors: ["v7": [1]]), .notFound, "unknown embedding version"),
        ("long title", Write(id: .int(2), title: String(repeating: "t", count: 4097)), .tooLarge, "title"),
        ("too many tags", Write(id: .int(2), tags: (0..<257).map { "t\($0)" }), .tooLarge, "tags"),
        ("long tag", Write(id: .int(2), tags: [String(repeating: "t", count: 129)]), .tooLarge, "tags[0]"),
        ("empty tag", Write(id: .int(2), tags: ["ok", ""]), .invalidRequest, "tags[1]"),
        ("NUL in tag", Write(id: .int(2), tags: ["a\u{0}b"]), .invalidRequest, "tags[0]"),
        ("long attributes", Write(id: .int(2), attributesJSON: "{\"a\":\"" + String(repeating: "x", count: 65536) + "\"}"), .tooLarge, "attributes"),
        ("attributes not an object", Write(id: .int(2), attributesJSON: "[1, 2]"), .invalidRequest, "JSON object"),
        ("attributes not JSON", Write(id: .int(2), attributesJSON: "{oops"), .invalidRequest, "JSON object"),
        ("duplicate id", Write(id: .int(1)), .invalidRequest, "duplicate of items[0]"),
    ]

    @Test(arguments: 0..<invalidItems.count)
    func aBatchWithOneInvalidItemWritesNothing(case index: Int) throws {
        let (_, invalid, code, fragment) = Self.invalidItems[index]
        try withStore { (store, _) throws -> Void in
            let sequence = store.latestSequence
            let valid = Write(id: .int(1), title: "ok", tags: ["ok"], vectors: ["v1": [1, 2, 3, 4]])
            let error = #expect(throws: SteerError.self) { try store.upsert([valid, invalid]) }
            #expect(error?.code == code)
            #expect(error?.message.contains("items[1]") == true, "\(error?.message ?? "")")
            #expect(error?.message.contains(fragment) == true, "\(error?.message ?? "")")
            #expect(store.latestSequence == sequence)
            #expect(store.count == 0)
            #expect(try store.get([.int(1)]) == [nil])
            #expect(try store.tagCounts().isEmpty)
            // The id counter did not move.
            #expect(try store.upsert([valid]).internalIDs == [0])
        }
    }

    @Test func anOversizedBatchIsRejected() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try ItemStore(options: .init(path: directory.path, syncWrites: false, maxBatchItems: 2))
        defer { store.close() }
        let error = #expect(throws: SteerError.self) { try store.upsert((0..<3).map { Write(id: .int(Int64($0))) }) }
        #expect(error?.code == .tooLarge)
    }

    // MARK: Index builds

    @Test func scanVectorsReadsOneSnapshotAndChangesReplayLaterWrites() throws {
        try withStore { store, _ in
            try store.createVersion("v2", dimension: 1)
            _ = try store.upsert((0..<10).map { Write(id: .int(Int64($0)), vectors: ["v1": [Float($0), 0, 0, 0]]) })
            var scanned: [Int64] = []
            var firstValues: [Float] = []
            var wroteDuringScan = false
            let sequence = try store.scanVectors(version: "v1", batchSize: 3) { ids, vectors in
                #expect(vectors.count == ids.count * 4)
                scanned += ids
                firstValues += stride(from: 0, to: vectors.count, by: 4).map { vectors[$0] }
                if !wroteDuringScan {
                    // Writes during the scan are not in it: they come back from changes(since:).
                    wroteDuringScan = true
                    _ = try store.upsert([
                        Write(id: .int(3), vectors: ["v1": [33, 0, 0, 0]]),
                        Write(id: .int(100), vectors: ["v1": [100, 0, 0, 0]]),
                        Write(id: .int(4), title: "no vector change", vectors: ["v2": [1]]),
                    ])
                    _ = try store.delete([.int(5)])
                }
            }
            #expect(scanned == Array(0..<10))
            #expect(firstValues == (0..<10).map(Float.init))
            _ = try store.upsert([Write(id: .int(101), vectors: ["v1": [101, 0, 0, 0]])])
            _ = try store.delete([.int(101)])

            let changes = try store.changes(since: sequence, version: "v1")
            #expect(changes.upserts.map(\.0) == [3, 10])
            #expect(changes.upserts.map(\.1) == [[33, 0, 0, 0], [100, 0, 0, 0]])
            #expect(changes.deletes == [5, 11])
            #expect(changes.sequence == store.latestSequence)
            let none = try store.changes(since: changes.sequence, version: "v1")
            #expect(none.upserts.isEmpty && none.deletes.isEmpty)
            #expect(try store.changes(since: sequence, version: "v2").upserts.map(\.0) == [4])
        }
    }

    @Test func trimmingTheChangeLogRefusesOlderSequences() throws {
        try withStore { store, _ in
            _ = try store.upsert([Write(id: .int(1), vectors: ["v1": [1, 1, 1, 1]])])
            let middle = store.latestSequence
            _ = try store.upsert([Write(id: .int(2), vectors: ["v1": [2, 2, 2, 2]])])
            try store.trimChangeLog(upTo: middle)
            #expect(throws: SteerError.self) { try store.changes(since: middle - 1, version: "v1") }
            #expect(try store.changes(since: middle, version: "v1").upserts.map(\.0) == [1])
        }
    }

    // MARK: Concurrency

    @Test func readersRunConcurrentlyWithWritersAndSeeWholeItems() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try ItemStore(options: .init(path: directory.path, syncWrites: false))
        defer { store.close() }
        try store.createVersion("v1", dimension: 8)
        func item(_ id: Int64, generation: Int) -> Write {
            Write(id: .int(id), title: "gen \(generation)", tags: ["gen-\(generation)", "all"],
                  attributesJSON: "{\"gen\": \(generation)}", vectors: ["v1": [Float](repeating: Float(generation), count: 8)])
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                for generation in 0..<100 {
                    _ = try store.upsert((0..<40).map { item(Int64($0), generation: generation) })
                    if generation % 10 == 9 { _ = try store.delete([.int(Int64(generation % 40))]) }
                }
            }
            for _ in 0..<3 {
                group.addTask {
                    for _ in 0..<150 {
                        for record in try store.get((0..<40).map { .int(Int64($0)) }) {
                            guard let record, let title = record.title else { continue }
                            let generation = title.dropFirst(4)
                            #expect(record.tags == ["gen-\(generation)", "all"])
                            #expect(record.attributesJSON == "{\"gen\": \(generation)}")
                        }
                        let ids = try store.internalIDs(withTag: "all")
                        #expect(ids == ids.sorted() && Set(ids).count == ids.count)
                        for vector in try store.vectors(internalIDs: ids, version: "v1") {
                            guard let vector else { continue }
                            #expect(vector.count == 8 && Set(vector).count == 1)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(store.count == 39)
        #expect(try store.internalIDs(withTag: "all").count == store.count)
    }

    // MARK: Durability

    /// The helper executable built beside the test bundle.
    private static func crashHelperURL() -> URL? {
        var starts = [URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()]
        if let executable = Bundle.main.executableURL { starts.append(executable) }
        starts.append(URL(fileURLWithPath: CommandLine.arguments[0]))
        for start in starts {
            var directory = start.deletingLastPathComponent()
            for _ in 0..<5 {
                let candidate = directory.appendingPathComponent("steer-store-crashtest")
                if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
                directory = directory.deletingLastPathComponent()
            }
        }
        return nil
    }

    @Test func aProcessKilledMidBatchLeavesEveryBatchWholeOrAbsent() throws {
        let helper = try #require(Self.crashHelperURL(), "build the steer-store-crashtest helper first")
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let perBatch = 300
        let dimension = 32
        var nextBatch = 0
        var random = SystemRandomNumberGenerator()
        var acknowledgedInAllRounds = 0
        for round in 0..<3 {
            let process = Process()
            process.executableURL = helper
            process.arguments = [directory.path, String(nextBatch), String(perBatch), String(dimension)]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            Thread.sleep(forTimeInterval: Double.random(in: 0.3...1.0, using: &random))
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            #expect(process.terminationReason == .uncaughtSignal, "helper exited early in round \(round)")
            let printed = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            let acknowledged = printed.split(separator: "\n").compactMap { Int($0) }.max() ?? (nextBatch - 1)
            acknowledgedInAllRounds += acknowledged - nextBatch + 1

            let store = try ItemStore(options: .init(path: directory.path, createIfMissing: false))
            defer { store.close() }
            let counts = try store.tagCounts()
            var highest = -1
            for batch in 0...(acknowledged + 3) {
                let count = counts["batch-\(batch)"] ?? 0
                #expect(count == 0 || count == perBatch, "batch \(batch) is partly present: \(count) items")
                if batch <= acknowledged { #expect(count == perBatch, "acknowledged batch \(batch) is missing") }
                if count > 0 { highest = batch }
            }
            #expect(counts.keys.filter { $0.hasPrefix("batch-") }.count == highest + 1)
            if highest >= 0 {
                // Every item of the newest batch is whole, and every replaced item is from that same batch.
                let records = try store.get((0..<perBatch).map { .string("b\(highest)-\($0)") })
                #expect(records.allSatisfy { $0?.title == "batch \(highest)" })
                let shared = try store.get((0..<perBatch).map { .string("shared-\($0)") })
                #expect(shared.allSatisfy { $0?.title == "batch \(highest)" })
                let vectors = try store.vectors(internalIDs: records.compactMap { $0?.internalID }, version: "v1")
                #expect(vectors.allSatisfy { $0 == [Float](repeating: Float(highest), count: dimension) })
                #expect(store.count == (highest + 2) * perBatch)
            }
            nextBatch = highest + 1
        }
        #expect(acknowledgedInAllRounds > 0, "the helper never acknowledged a batch: the test proved nothing")
    }

    @Test func unsyncedWritesSurviveAnOrderlyReopen() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        do {
            let store = try ItemStore(options: .init(path: directory.path, syncWrites: false))
            try store.createVersion("v1", dimension: 2)
            _ = try store.upsert([Write(id: .string("x"), vectors: ["v1": [1, 2]])])
            store.close()
        }
        let store = try ItemStore(options: .init(path: directory.path))
        defer { store.close() }
        #expect(try store.vector(internalID: 0, version: "v1") == [1, 2])
    }
}
