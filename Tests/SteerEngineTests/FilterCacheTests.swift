import Foundation
import SteerCore
import SteerIndex
import SteerStore
import Testing
@testable import SteerEngine

/// `FilterCache`: a repeated filter is resolved once per store sequence, every write invalidates it,
/// the byte bound holds, and changing a resolved filter drops its precomputed allowed labels.
@Suite struct FilterCacheTests {
    static let dimension = 8

    static func open(_ directory: String, cacheBytes: Int = FilterCache.defaultCapacityBytes) throws -> RetrievalEngine {
        var configuration = RetrievalEngine.Configuration(dataDirectory: directory, dimension: dimension, indexSpec: "Flat", syncWrites: false,
                                                          payloadIndexes: ["bucket": .numeric])
        configuration.filterCacheBytes = cacheBytes
        return try RetrievalEngine(configuration: configuration)
    }

    static func items(_ range: Range<Int>, seed: UInt64) -> [ItemInput] {
        var generator = SeededGenerator(seed: seed)
        return range.map { index in
            ItemInput(id: .int(Int64(index)), vector: (0..<dimension).map { _ in Float.random(in: -1...1, using: &generator) },
                      attributesJSON: #"{"bucket":\#(index % 1000)}"#)
        }
    }

    static func below(_ bound: Int) -> TagFilter {
        TagFilter(expression: .attribute(AttributePredicate(name: "bucket", conditions: [.lt(Double(bound))])))
    }

    static func directory() -> String { NSTemporaryDirectory() + "steer-filter-cache-test-" + UUID().uuidString }

    @Test func repeatedFilterIsResolvedOncePerSequenceAndWritesInvalidateIt() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory)
        defer { try? engine.close() }
        _ = try engine.upsert(Self.items(0..<4000, seed: 41))
        engine.filterPlanner.settings.withLock { $0 = FilterPlanner.Settings(exactMinimum: 0, exactFraction: 0, exactMaximum: 0) }
        let query = [Float](repeating: 1, count: Self.dimension)
        let options = SearchOptions(k: 5, filter: Self.below(500)) // 2,000 matches
        let first = try engine.searchExplained([query], options: options)
        #expect(!first.plan.cachedFilter && first.plan.matches == 2000)
        let second = try engine.searchExplained([query], options: options)
        #expect(second.plan.cachedFilter && second.plan.matches == 2000 && second.plan.scannedRecords == 0)
        #expect(second.hits[0].map(\.id) == first.hits[0].map(\.id))
        #expect(engine.filterCache.statistics.entries == 1 && engine.filterCache.statistics.hits == 1)

        // A new matching item that beats every other: the next search must see it (the write moved the sequence).
        let best = ItemInput(id: .int(9999), vector: [Float](repeating: 1, count: Self.dimension), attributesJSON: #"{"bucket":3}"#)
        _ = try engine.upsert([best])
        let afterUpsert = try engine.searchExplained([query], options: options)
        #expect(!afterUpsert.plan.cachedFilter && afterUpsert.plan.matches == 2001)
        #expect(afterUpsert.hits[0].first?.id == .int(9999))
        // Moved out of the filter by an upsert, then back, then deleted: never served from a stale set.
        _ = try engine.upsert([ItemInput(id: .int(9999), vector: best.vector, attributesJSON: #"{"bucket":900}"#)])
        #expect(try engine.searchExplained([query], options: options).hits[0].first?.id != .int(9999))
        _ = try engine.upsert([best])
        #expect(try engine.searchExplained([query], options: options).hits[0].first?.id == .int(9999))
        #expect(try engine.searchExplained([query], options: options).plan.cachedFilter)
        _ = try engine.delete([.int(9999)])
        let afterDelete = try engine.searchExplained([query], options: options)
        #expect(!afterDelete.plan.cachedFilter && afterDelete.plan.matches == 2000)
        #expect(!afterDelete.hits[0].contains { $0.id == .int(9999) })
    }

    @Test func byteBoundEvictsTheLeastRecentlyUsedAndZeroTurnsItOff() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Room for one set of 2,000 ids and not two.
        let engine = try Self.open(directory, cacheBytes: 3000 * FilterCache.bytesPerID)
        defer { try? engine.close() }
        // Id sets (the RocksDB path) are counted per id; a bitset from the in-memory path by its words.
        engine.filterPlanner.settings.withLock { $0.inMemoryFilters = false }
        _ = try engine.upsert(Self.items(0..<4000, seed: 42))
        let query = [Float](repeating: 0.5, count: Self.dimension)
        for bound in [500, 501, 500] { _ = try engine.search([query], options: SearchOptions(k: 5, filter: Self.below(bound))) }
        let statistics = engine.filterCache.statistics
        #expect(statistics.entries == 1 && statistics.bytes <= 3000 * FilterCache.bytesPerID && statistics.hits == 0)
        // Small match sets are not kept.
        _ = try engine.search([query], options: SearchOptions(k: 5, filter: Self.below(100)))
        #expect(engine.filterCache.statistics.entries == 1)

        let offDirectory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: offDirectory) }
        let off = try Self.open(offDirectory, cacheBytes: 0)
        defer { try? off.close() }
        _ = try off.upsert(Self.items(0..<4000, seed: 42))
        for _ in 0..<2 {
            #expect(try !off.searchExplained([query], options: SearchOptions(k: 5, filter: Self.below(500))).plan.cachedFilter)
        }
        #expect(off.filterCache.statistics.entries == 0)
    }

    @Test func changingAResolvedFilterDropsItsAllowedLabels() {
        var resolved = ResolvedFilter(required: [1, 2, 3], excluded: [], scannedRecords: 0)
        resolved.allowed = AllowedLabels(sortedLabels: [1, 2, 3])
        resolved.excluded.insert(2)
        #expect(resolved.allowed == nil)
        resolved.allowed = AllowedLabels(sortedLabels: [1, 3])
        resolved.required?.insert(4)
        #expect(resolved.allowed == nil)
    }
}
