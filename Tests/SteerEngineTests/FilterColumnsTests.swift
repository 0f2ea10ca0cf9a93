import Foundation
import SteerCore
import SteerIndex
import SteerStore
import Testing
@testable import SteerEngine

/// The in-memory filter path (`PayloadColumns`, `resolveFilterBits`) against the RocksDB path: for
/// random filters over random items, with upserts, deletes, re-upserts (new internal ids), a late
/// declaration and a reopen interleaved, both resolve to exactly the items a scan of the records
/// finds, and searches return the same hits with the same plan.
@Suite struct FilterColumnsTests {
    typealias Attr = PayloadIndexTests

    /// A random filter tree (depth ≤ 3) over the attributes of `PayloadIndexTests.items`, tags and one
    /// attribute nobody declares.
    static func randomExpression(_ generator: inout SeededGenerator, depth: Int = 0) -> FilterExpression {
        let roll = Int.random(in: 0..<(depth >= 2 ? 10 : 14), using: &generator)
        switch roll {
        case 10: return .and((0..<Int.random(in: 1...3, using: &generator)).map { _ in randomExpression(&generator, depth: depth + 1) })
        case 11: return .or((0..<Int.random(in: 1...3, using: &generator)).map { _ in randomExpression(&generator, depth: depth + 1) })
        case 12, 13: return .not(randomExpression(&generator, depth: depth + 1))
        default: return randomLeaf(&generator)
        }
    }

    static func randomLeaf(_ generator: inout SeededGenerator) -> FilterExpression {
        func price() -> Double { Double(Int.random(in: -3000..<11_000, using: &generator)) / 100 }
        func language() -> FilterScalar { .string(["en", "fr", "de", "it"][Int.random(in: 0..<4, using: &generator)]) }
        func code() -> FilterScalar { Bool.random(using: &generator) ? .int(Int64.random(in: 0..<6, using: &generator)) : .double(Double(Int.random(in: 0..<6, using: &generator))) }
        switch Int.random(in: 0..<16, using: &generator) {
        case 0: return .tag(["a", "b", "c"][Int.random(in: 0..<3, using: &generator)])
        case 1: return Attr.attr("lang", .eq(language()))
        case 2: return Attr.attr("lang", .ne(language()))
        case 3: return Attr.attr("lang", .in([language(), language()]))
        case 4: return Attr.attr("lang", .nin([language()]))
        case 5: return Attr.attr("lang", .exists(Bool.random(using: &generator)))
        case 6: return Attr.attr("code", Bool.random(using: &generator) ? .eq(code()) : .in([code(), code()]))
        case 7: return Attr.attr("flag", .eq(.bool(Bool.random(using: &generator))))
        case 8:
            let low = price()
            return Attr.attr("price", .gte(low), .lt(low + Double(Int.random(in: 1...80, using: &generator))))
        case 9: return Attr.attr("price", .gt(price()), .lte(price()))
        case 10: return Attr.attr("price", Bool.random(using: &generator) ? .lt(price()) : .gte(price()))
        case 11: return Attr.attr("price", .eq(.int(Int64.random(in: -20..<100, using: &generator))))
        case 12: return Attr.attr("price", .in([.double(price()), .int(7), .string("n/a")]))
        case 13: return Attr.attr("price", .exists(true)) // numeric index: not answerable, RocksDB path scans
        case 14: return Attr.attr("specs.size", .in([.int(Int64.random(in: 0..<6, using: &generator)), .int(4)]))
        default: return Attr.attr("unindexed", .exists(false))
        }
    }

    /// The items a resolved filter lets through.
    static func passing(_ resolved: ResolvedFilter, live: [Int64]) -> Set<Int64> {
        if let allowed = resolved.computeAllowed() { return Set(allowed.sortedLabels) }
        return Set(live).subtracting(resolved.excluded).subtracting(resolved.allExcludedBits()?.labels ?? [])
    }

    static func open(_ directory: String, _ declarations: [String: PayloadKind]) throws -> RetrievalEngine {
        var configuration = RetrievalEngine.Configuration(dataDirectory: directory, dimension: 8, indexSpec: "HNSW16", syncWrites: false,
                                                          payloadIndexes: declarations)
        configuration.filterCacheBytes = 0
        return try RetrievalEngine(configuration: configuration)
    }

    /// Resolves `filters` both ways and checks them against the records; returns how many the columns
    /// answered (`requiredBits` set, or only exclusions, without reading a record).
    static func compare(_ engine: RetrievalEngine, _ model: [ItemID: ItemInput], _ filters: [TagFilter], _ label: String) throws -> Int {
        let live = try engine.store.liveInternalIDs()
        let idOf = Dictionary(uniqueKeysWithValues: zip(live, try engine.store.records(internalIDs: live).map { $0!.id }))
        var answered = 0
        for filter in filters {
            engine.filterPlanner.settings.withLock { $0.inMemoryFilters = false }
            let rocks = try engine.resolveFilter(filter, extraRequired: [], extraExcluded: [])
            engine.filterPlanner.settings.withLock { $0.inMemoryFilters = true }
            let memory = try engine.resolveFilter(filter, extraRequired: [], extraExcluded: [])
            let expected = Set(model.values.filter { item in
                guard let expression = filter.expression else { return true }
                return expression.matches(tags: item.tags, attributesJSON: item.attributesJSON)
                    && (filter.tagsNone.allSatisfy { !item.tags.contains($0) })
            }.map(\.id))
            let fromRocks = Set(passing(rocks, live: live).map { idOf[$0]! })
            let fromMemory = Set(passing(memory, live: live).compactMap { idOf[$0] })
            #expect(passing(memory, live: live).allSatisfy { idOf[$0] != nil }, "\(label): only live labels")
            #expect(fromRocks == expected, "\(label) \(String(describing: filter.expression)): RocksDB path \(fromRocks.count) vs \(expected.count)")
            #expect(fromMemory == expected, "\(label) \(String(describing: filter.expression)): in-memory path \(fromMemory.count) vs \(expected.count)")
            // The planner sees the same counts: a requirement on both or on neither.
            #expect(memory.hasRequirement == rocks.hasRequirement, "\(label) \(String(describing: filter.expression))")
            if memory.requiredBits != nil || (memory.scannedRecords == 0 && rocks.scannedRecords > 0) { answered += 1 }
            if memory.requiredBits != nil { #expect(memory.scannedRecords == 0) }
        }
        return answered
    }

    /// `stats` reports the columns' memory: none without declarations, then at least 8 bytes per item for
    /// each declared attribute, and more after a second declaration.
    @Test func statsReportTheColumnsMemory() throws {
        let directory = NSTemporaryDirectory() + "steer-filter-columns-stats-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, [:])
        _ = try engine.upsert(Attr.items(count: 500, seed: 5))
        #expect(engine.stats().payloadColumnBytes == 0)
        try engine.store.declarePayloadIndex("price", kind: .numeric)
        let one = engine.stats().payloadColumnBytes
        #expect(one >= 8 * 450)
        try engine.store.declarePayloadIndex("lang", kind: .keyword)
        #expect(engine.stats().payloadColumnBytes >= one + 8 * 450)
    }

    @Test func inMemoryResolutionEqualsRocksDBThroughWritesAndReopen() throws {
        let directory = NSTemporaryDirectory() + "steer-filter-columns-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var generator = SeededGenerator(seed: 71)
        var declarations = Attr.declarations
        declarations["specs.size"] = nil // declared late, over existing items
        var model: [ItemID: ItemInput] = [:]
        var answered = 0
        var compared = 0
        do {
            let engine = try Self.open(directory, declarations)
            var items = Attr.items(count: 700, seed: 72)
            for index in items.indices { items[index].tags = [["a"], ["b"], ["a", "c"], []][Int.random(in: 0..<4, using: &generator)] }
            _ = try engine.upsert(items)
            for item in items { model[item.id] = item }
            for round in 0..<6 {
                if round == 2 { try engine.store.declarePayloadIndex("specs.size", kind: .keyword) }
                // Upsert changed values for some ids (attributes dropped for a few), delete others,
                // re-upsert some deleted ids (they get new internal ids).
                var changed = Attr.items(count: 700, seed: 100 + UInt64(round), salt: round + 1)
                var upserts: [ItemInput] = []
                for index in changed.indices where Int.random(in: 0..<4, using: &generator) == 0 {
                    if Int.random(in: 0..<10, using: &generator) == 0 { changed[index].attributesJSON = nil }
                    changed[index].tags = [["b"], ["c"], []][Int.random(in: 0..<3, using: &generator)]
                    upserts.append(changed[index])
                }
                _ = try engine.upsert(upserts)
                for item in upserts { model[item.id] = item }
                let deleted = model.keys.filter { _ in Int.random(in: 0..<8, using: &generator) == 0 }
                _ = try engine.delete(deleted)
                for id in deleted { model[id] = nil }
                let back = deleted.prefix(deleted.count / 2).compactMap { id in changed.first { $0.id == id } }
                _ = try engine.upsert(back)
                for item in back { model[item.id] = item }
                var filters = (0..<40).map { _ in TagFilter(expression: Self.randomExpression(&generator)) }
                filters.append(TagFilter(tagsNone: ["a"], expression: Attr.attr("price", .lt(10))))
                answered += try Self.compare(engine, model, filters, "round \(round)")
                compared += filters.count
            }
            try engine.close()
        }
        // Reopened: the columns are rebuilt from the stored keys.
        let engine = try Self.open(directory, [:])
        defer { try? engine.close() }
        let filters = (0..<60).map { _ in TagFilter(expression: Self.randomExpression(&generator)) }
        answered += try Self.compare(engine, model, filters, "reopened")
        compared += filters.count
        // Most random filters must have gone through the columns, or the test proves little.
        #expect(answered * 2 > compared, "\(answered) of \(compared) answered in memory")
    }

    @Test func searchesReturnTheSameHitsAndPlansBothWays() throws {
        let directory = NSTemporaryDirectory() + "steer-filter-columns-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, Attr.declarations)
        defer { try? engine.close() }
        let items = Attr.items(count: 3000, seed: 73)
        _ = try engine.upsert(items)
        _ = try engine.delete(items.prefix(200).map(\.id))
        var generator = SeededGenerator(seed: 74)
        var kinds = Set<SearchPlan.Kind>()
        for round in 0..<80 {
            // Small thresholds in half the rounds, so the index plan runs too.
            engine.filterPlanner.settings.withLock {
                $0.exactMinimum = round % 2 == 0 ? 1024 : 8
                $0.exactFraction = round % 2 == 0 ? 0.01 : 0
            }
            let filter = TagFilter(expression: Self.randomExpression(&generator))
            let query = (0..<8).map { _ in Float.random(in: -1...1, using: &generator) }
            var results: [([Hit], SearchPlan)] = []
            for inMemory in [false, true] {
                engine.filterPlanner.settings.withLock { $0.inMemoryFilters = inMemory }
                let (hits, plan) = try engine.searchExplained([query], options: SearchOptions(k: 10, filter: filter))
                results.append((hits[0], plan))
            }
            let (rocks, memory) = (results[0], results[1])
            #expect(rocks.0.map(\.id) == memory.0.map(\.id), "\(String(describing: filter.expression))")
            #expect(rocks.1.kind == memory.1.kind && rocks.1.matches == memory.1.matches, "\(String(describing: filter.expression))")
            kinds.insert(memory.1.kind)
        }
        #expect(kinds.isSuperset(of: [.exact, .index, .empty]), "\(kinds)")
    }
}
