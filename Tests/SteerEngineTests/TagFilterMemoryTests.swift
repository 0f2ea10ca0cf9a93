import Foundation
import SteerCore
import SteerIndex
@testable import SteerStore
import Testing
@testable import SteerEngine

/// Tag filters (`tags_any`, `tags_none`, `tag_groups`, tag leaves) and exclusion-only filters resolved
/// from the in-memory postings (`ItemStore.tagBits`, `liveBits`) against the RocksDB path: the same items
/// through upserts, deletes, re-upserts with other tags, batched applies of a write log and a reopen;
/// searches give the same hits and plans, and a large exclusion no longer reads the live items.
@Suite struct TagFilterMemoryTests {
    typealias Attr = PayloadIndexTests

    /// "a" on about 90 % of items (a dense posting), "b" on half, "c" on a quarter, "d" on 2 %.
    static func randomTags(_ generator: inout SeededGenerator) -> [String] {
        var tags: [String] = []
        if Int.random(in: 0..<10, using: &generator) < 9 { tags.append("a") }
        if Bool.random(using: &generator) { tags.append("b") }
        if Int.random(in: 0..<4, using: &generator) == 0 { tags.append("c") }
        if Int.random(in: 0..<50, using: &generator) == 0 { tags.append("d") }
        return tags
    }

    static func randomTagList(_ generator: inout SeededGenerator) -> [String] {
        ["a", "b", "c", "d", "absent"].filter { _ in Int.random(in: 0..<3, using: &generator) == 0 }
    }

    /// A random filter: tag lists, and half the time an expression (tags and attributes, some of them
    /// undeclared, so the RocksDB path serves those).
    static func randomFilter(_ generator: inout SeededGenerator) -> TagFilter {
        var filter = TagFilter()
        if Bool.random(using: &generator) { filter.tagsAny = randomTagList(&generator) }
        if Bool.random(using: &generator) { filter.tagsNone = randomTagList(&generator) }
        if Int.random(in: 0..<3, using: &generator) == 0 {
            filter.tagGroups = (0..<Int.random(in: 1...2, using: &generator)).map { _ in randomTagList(&generator) }.filter { !$0.isEmpty }
        }
        if Bool.random(using: &generator) { filter.expression = FilterColumnsTests.randomExpression(&generator) }
        return filter
    }

    static func passes(_ item: ItemInput, _ filter: TagFilter) -> Bool {
        (filter.tagsAny.isEmpty || filter.tagsAny.contains { item.tags.contains($0) })
            && filter.tagGroups.allSatisfy { group in group.contains { item.tags.contains($0) } }
            && !filter.tagsNone.contains { item.tags.contains($0) }
            && (filter.expression?.matches(tags: item.tags, attributesJSON: item.attributesJSON) ?? true)
    }

    /// Resolves `filters` both ways against the model; returns how many the in-memory path answered.
    static func compare(_ engine: RetrievalEngine, _ model: [ItemID: ItemInput], _ filters: [TagFilter], _ label: String) throws -> Int {
        let live = try engine.store.liveInternalIDs()
        let idOf = Dictionary(uniqueKeysWithValues: zip(live, try engine.store.records(internalIDs: live).map { $0!.id }))
        var answered = 0
        for filter in filters {
            engine.filterPlanner.settings.withLock { $0.inMemoryFilters = false }
            let rocks = try engine.resolveFilter(filter, extraRequired: [], extraExcluded: [])
            engine.filterPlanner.settings.withLock { $0.inMemoryFilters = true }
            let memory = try engine.resolveFilter(filter, extraRequired: [], extraExcluded: [])
            let expected = Set(model.values.filter { passes($0, filter) }.map(\.id))
            let fromMemory = FilterColumnsTests.passing(memory, live: live)
            #expect(fromMemory.allSatisfy { idOf[$0] != nil }, "\(label): only live labels")
            #expect(Set(FilterColumnsTests.passing(rocks, live: live).compactMap { idOf[$0] }) == expected, "\(label) \(filter): RocksDB path")
            #expect(Set(fromMemory.compactMap { idOf[$0] }) == expected, "\(label) \(filter): in-memory path")
            #expect(memory.hasRequirement == rocks.hasRequirement, "\(label) \(filter)")
            if memory.requiredBits != nil || memory.excludedBits != nil {
                answered += 1
                #expect(memory.scannedRecords == 0 && memory.excluded.isEmpty, "\(label) \(filter): nothing read, no id set")
            }
        }
        return answered
    }

    static func open(_ directory: String) throws -> RetrievalEngine {
        try FilterColumnsTests.open(directory, Attr.declarations)
    }

    static func items(_ ids: some Sequence<Int>, seed: UInt64, _ generator: inout SeededGenerator) -> [ItemInput] {
        let all = Attr.items(count: 2000, seed: seed)
        return ids.map { index in
            var item = all[index]
            item.tags = randomTags(&generator)
            return item
        }
    }

    @Test func tagFiltersFromMemoryEqualRocksDBThroughEveryWritePathAndReopen() throws {
        let directory = NSTemporaryDirectory() + "steer-tag-memory-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var generator = SeededGenerator(seed: 81)
        var model: [ItemID: ItemInput] = [:]
        var answered = 0, compared = 0
        do {
            let engine = try Self.open(directory)
            defer { try? engine.close() }
            let first = Self.items(0..<1200, seed: 82, &generator)
            _ = try engine.upsert(first)
            for item in first { model[item.id] = item }
            var sequence: UInt64 = 0
            for round in 0..<5 {
                // Re-upserts with other tags and values, new items, deletes, re-upserts of deleted ids.
                let changed = Self.items((0..<2000).filter { _ in Int.random(in: 0..<5, using: &generator) == 0 }, seed: 90 + UInt64(round), &generator)
                _ = try engine.upsert(changed)
                for item in changed { model[item.id] = item }
                let deleted = model.keys.filter { _ in Int.random(in: 0..<10, using: &generator) == 0 }
                _ = try engine.delete(deleted)
                for id in deleted { model[id] = nil }
                // A batched apply of write-log messages: upserts, a delete and a re-upsert of the same ids.
                let indices = (0..<2000).filter { _ in Int.random(in: 0..<20, using: &generator) == 0 }
                let streamed = Self.items(indices, seed: 95 + UInt64(round), &generator)
                let again = Self.items(indices.prefix(30), seed: 99, &generator)
                sequence += 3
                let outcomes = try engine.apply(batch: [
                    (sequence - 2, .success(.upsert(streamed))),
                    (sequence - 1, .success(.delete(streamed.prefix(60).map(\.id)))),
                    (sequence, .success(.upsert(again))),
                ])
                #expect(outcomes.allSatisfy { if case .applied = $0 { true } else { false } }, "\(outcomes)")
                for item in streamed { model[item.id] = item }
                for item in streamed.prefix(60) { model[item.id] = nil }
                for item in again { model[item.id] = item }
                let filters = (0..<40).map { _ in Self.randomFilter(&generator) }
                answered += try Self.compare(engine, model, filters, "round \(round)")
                compared += filters.count
            }
        }
        let engine = try Self.open(directory)
        defer { try? engine.close() }
        let filters = (0..<60).map { _ in Self.randomFilter(&generator) }
        answered += try Self.compare(engine, model, filters, "reopened")
        compared += filters.count
        #expect(answered * 2 > compared, "\(answered) of \(compared) answered in memory")
    }

    /// Exclusion-only filters of every size, and tag requirements: the same hits and plan both ways; the
    /// in-memory path reads no record, also for a large exclusion (the RocksDB path lists the live items).
    @Test func searchesGiveTheSameHitsAndPlansAndALargeExclusionReadsNothing() throws {
        let directory = NSTemporaryDirectory() + "steer-tag-memory-search-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory)
        defer { try? engine.close() }
        var generator = SeededGenerator(seed: 83)
        let items = Self.items(0..<2000, seed: 84, &generator)
        _ = try engine.upsert(items)
        _ = try engine.delete(items.prefix(100).map(\.id))
        var kinds = Set<SearchPlan.Kind>()
        var largeExclusions = 0
        let fixed = [TagFilter(tagsNone: ["a"]), TagFilter(tagsNone: ["b"]), TagFilter(tagsNone: ["d"]), TagFilter(tagsNone: ["absent"]),
                     TagFilter(tagsNone: ["a", "b"]), TagFilter(expression: .not(.tag("a"))), TagFilter(tagsAny: ["d"]),
                     TagFilter(tagGroups: [["b"], ["c", "d"]])]
        for round in 0..<60 {
            engine.filterPlanner.settings.withLock {
                $0.exactMinimum = round % 2 == 0 ? 1024 : 8
                $0.exactFraction = round % 2 == 0 ? 0.01 : 0
            }
            let filter = round < fixed.count * 2 ? fixed[round / 2] : Self.randomFilter(&generator)
            let query = (0..<8).map { _ in Float.random(in: -1...1, using: &generator) }
            var results: [([Hit], SearchPlan)] = []
            for inMemory in [false, true] {
                engine.filterPlanner.settings.withLock { $0.inMemoryFilters = inMemory }
                let (hits, plan) = try engine.searchExplained([query], options: SearchOptions(k: 10, filter: filter))
                results.append((hits[0], plan))
            }
            let (rocks, memory) = (results[0], results[1])
            #expect(rocks.0.map(\.id) == memory.0.map(\.id), "\(filter)")
            #expect(rocks.1.kind == memory.1.kind && rocks.1.matches == memory.1.matches, "\(filter): \(rocks.1) vs \(memory.1)")
            if filter.expression == nil || round < fixed.count * 2 {
                #expect(memory.1.scannedRecords == 0, "\(filter): \(memory.1)")
            }
            if filter.expression == nil && filter.tagsAny.isEmpty && filter.tagGroups.isEmpty && rocks.1.scannedRecords > 0 { largeExclusions += 1 }
            kinds.insert(memory.1.kind)
        }
        #expect(largeExclusions > 0, "no large exclusion ran")
        #expect(kinds.isSuperset(of: [.exact, .index, .postFilter]), "\(kinds)")
    }

    /// While a written batch awaits its replay onto the in-memory postings, `replayedSequence` is nil and
    /// the filter cache neither answers nor files an entry (it would be filed under the new sequence with
    /// the state before the batch); once replayed, caching resumes.
    @Test func noCachedResolutionWhileABatchAwaitsItsReplay() throws {
        let directory = NSTemporaryDirectory() + "steer-tag-memory-replay-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = RetrievalEngine.Configuration(dataDirectory: directory, dimension: 8, indexSpec: "HNSW16", syncWrites: false)
        configuration.filterCacheBytes = 1 << 20
        let engine = try RetrievalEngine(configuration: configuration)
        defer { try? engine.close() }
        var generator = SeededGenerator(seed: 86)
        _ = try engine.upsert(Self.items(0..<2000, seed: 87, &generator))
        let filter = TagFilter(tagsAny: ["a"])
        #expect(engine.store.replayedSequence == engine.store.latestSequence)
        #expect(try !engine.resolveFilter(filter, extraRequired: [], extraExcluded: []).cached)
        #expect(try engine.resolveFilter(filter, extraRequired: [], extraExcluded: []).cached, "a repeat at the same sequence is cached")
        engine.store.replayPending.withLock { $0 = true }
        #expect(engine.store.replayedSequence == nil)
        let (_, _, hitsBefore, missesBefore) = engine.filterCache.statistics
        let pending = try engine.resolveFilter(filter, extraRequired: [], extraExcluded: [])
        #expect(!pending.cached && pending.requiredBits != nil, "resolved, not from the cache")
        let (_, _, hitsAfter, missesAfter) = engine.filterCache.statistics
        #expect(hitsAfter == hitsBefore && missesAfter == missesBefore, "the cache was not consulted")
        engine.store.replayPending.withLock { $0 = false }
        #expect(try engine.resolveFilter(filter, extraRequired: [], extraExcluded: []).cached)
    }

    /// `stats` reports the postings' memory: it grows as tags are added and falls as they are removed.
    @Test func statsReportTheTagPostingsMemory() throws {
        let directory = NSTemporaryDirectory() + "steer-tag-memory-stats-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory)
        defer { try? engine.close() }
        var items = Attr.items(count: 500, seed: 85)
        for index in items.indices { items[index].tags = [] }
        _ = try engine.upsert(items)
        let untagged = engine.stats().tagPostingBytes
        for index in items.indices { items[index].tags = ["t\(index)", "u\(index)"] }
        _ = try engine.upsert(items)
        let tagged = engine.stats().tagPostingBytes
        #expect(tagged >= untagged + 1000 * TagPostings.bytesPerTag, "\(untagged) → \(tagged)")
        for index in items.indices { items[index].tags = ["t\(index)"] }
        _ = try engine.upsert(items)
        let fewer = engine.stats().tagPostingBytes
        #expect(fewer < tagged && fewer >= untagged + 500 * TagPostings.bytesPerTag, "\(tagged) → \(fewer)")
        _ = try engine.delete(items.map(\.id))
        #expect(engine.stats().tagPostingBytes < fewer)
    }
}
