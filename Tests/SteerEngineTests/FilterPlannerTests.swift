import Foundation
import SteerCore
import SteerIndex
import SteerStore
import Testing
@testable import SteerEngine

/// Filter expressions through the engine: exactness against brute force over the matching items on
/// every index family, the planner's choice at its thresholds, deletes and upserts, concurrent writes,
/// plan counts.
@Suite struct FilterPlannerTests {
    static let languages = ["en", "fr", "de"]

    /// Items with `rank` = index (so `rank < m` matches exactly m items), a year, a price, a language
    /// (missing on every seventh item), a nested size, and 0-2 tags.
    static func catalogue(count: Int, dimension: Int, seed: UInt64, firstIndex: Int = 0) -> [ItemInput] {
        var generator = SeededGenerator(seed: seed)
        return (firstIndex..<(firstIndex + count)).map { index in
            let vector = (0..<dimension).map { _ in Float.random(in: -1...1, using: &generator) }
            let tags = ["comedy", "horror", "drama"].filter { _ in Int.random(in: 0..<3, using: &generator) == 0 }
            let price = Double(Int.random(in: 0..<10_000, using: &generator)) / 100
            let language = index % 7 == 0 ? "" : #","lang":"\#(languages[index % 3])""#
            let attributes = #"{"rank":\#(index),"year":\#(1950 + index % 70),"price":\#(price)\#(language),"specs":{"size":\#(index % 5)}}"#
            return ItemInput(id: .int(Int64(index)), vector: vector, title: "t\(index)", tags: tags, attributesJSON: attributes)
        }
    }

    static func open(_ directory: String, spec: String, dimension: Int = 16) throws -> RetrievalEngine {
        try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: dimension, indexSpec: spec, syncWrites: false))
    }

    static func directory() -> String { NSTemporaryDirectory() + "steer-filter-test-" + UUID().uuidString }

    /// The true top k among the items meeting `expression`.
    static func bruteForce(_ items: [ItemInput], _ query: [Float], k: Int, _ expression: FilterExpression) -> [ItemID] {
        let kept = items.filter { expression.matches(tags: $0.tags, attributesJSON: $0.attributesJSON) }
        let top = ExactSearch.topK(query: query, base: kept.flatMap(\.vector), dimension: query.count, k: k, metric: .innerProduct)
        return top.map { kept[Int($0.label)].id }
    }

    static func attr(_ name: String, _ conditions: AttributePredicate.Condition...) -> FilterExpression {
        .attribute(AttributePredicate(name: name, conditions: conditions))
    }

    /// About 50 %, 10 %, 1 % and 0.1 % of 3,000 items; tag-only, range, compound and negated forms.
    static let expressions: [FilterExpression] = [
        .or([.tag("comedy"), .tag("drama")]),
        .and([attr("year", .gte(1990), .lt(1997)), .not(.tag("horror"))]),
        .and([attr("lang", .eq(.string("fr"))), attr("price", .lt(10)), .tag("comedy")]),
        .and([attr("specs.size", .in([.int(3)])), attr("year", .gte(2017))]),
        .and([attr("lang", .exists(false)), attr("price", .gte(99))]),
        .not(.or([attr("lang", .nin([.string("en")])), .tag("drama")])),
    ]

    static let exactAlways = FilterPlanner.Settings(exactMinimum: 1_000_000, exactFraction: 0, exactMaximum: 1_000_000)
    static let indexAlways = FilterPlanner.Settings(exactMinimum: 0, exactFraction: 0, exactMaximum: 0)

    @Test(arguments: ["Flat", "HNSW16", "IVF16,Flat", "IVF16,SQ8"])
    func exactPlanEqualsBruteForceOnEveryFamily(spec: String) throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, spec: spec)
        defer { try? engine.close() }
        let items = Self.catalogue(count: 3000, dimension: 16, seed: 7)
        #expect(try engine.upsert(items) == 3000)
        engine.filterPlanner.settings.withLock { $0 = Self.exactAlways }
        var generator = SeededGenerator(seed: 8)
        for expression in Self.expressions {
            for _ in 0..<3 {
                let query = (0..<16).map { _ in Float.random(in: -1...1, using: &generator) }
                let (hits, plan) = try engine.searchExplained([query], options: SearchOptions(k: 10, filter: TagFilter(expression: expression)))
                let truth = Self.bruteForce(items, query, k: 10, expression)
                #expect(hits[0].map(\.id) == truth, "\(spec) \(expression)")
                #expect(plan.kind == (truth.isEmpty ? .empty : .exact))
                #expect(plan.matches == items.filter { expression.matches(tags: $0.tags, attributesJSON: $0.attributesJSON) }.count)
            }
        }
    }

    @Test(arguments: ["Flat", "HNSW16", "IVF16,Flat"])
    func indexPlanKeepsOnlyMatchesAndItsRecall(spec: String) throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, spec: spec)
        defer { try? engine.close() }
        let items = Self.catalogue(count: 3000, dimension: 16, seed: 9)
        _ = try engine.upsert(items)
        engine.filterPlanner.settings.withLock { $0 = Self.indexAlways }
        var generator = SeededGenerator(seed: 10)
        for expression in Self.expressions {
            let matching = Set(items.filter { expression.matches(tags: $0.tags, attributesJSON: $0.attributesJSON) }.map(\.id))
            var found: [[Int64]] = []
            var truth: [[Int64]] = []
            for _ in 0..<5 {
                let query = (0..<16).map { _ in Float.random(in: -1...1, using: &generator) }
                let (hits, plan) = try engine.searchExplained([query], options: SearchOptions(k: 10, filter: TagFilter(expression: expression)))
                #expect(plan.kind == (matching.isEmpty ? .empty : .index))
                #expect(hits[0].count == min(10, matching.count), "\(spec) \(expression): k results whenever k items match")
                #expect(hits[0].allSatisfy { matching.contains($0.id) }, "\(spec) \(expression): only matching items")
                found.append(hits[0].map { if case .int(let v) = $0.id { v } else { -1 } })
                truth.append(Self.bruteForce(items, query, k: 10, expression).map { if case .int(let v) = $0 { v } else { -1 } })
            }
            let recall = ExactSearch.recall(found: found, truth: truth)
            if spec == "Flat" { #expect(recall == 1, "\(expression)") } else { #expect(recall >= 0.9, "\(spec) \(expression): recall \(recall)") }
        }
    }

    @Test func planSwitchesAtTheThreshold() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, spec: "HNSW16")
        defer { try? engine.close() }
        let items = Self.catalogue(count: 3000, dimension: 16, seed: 11)
        _ = try engine.upsert(items)
        let query = items[5].vector
        func plan(_ below: Int) throws -> SearchPlan {
            try engine.searchExplained([query], options: SearchOptions(k: 10, filter: TagFilter(expression: Self.attr("rank", .lt(Double(below)))))).plan
        }
        // An absolute threshold of 100 matches.
        engine.filterPlanner.settings.withLock { $0 = FilterPlanner.Settings(exactMinimum: 100, exactFraction: 0, exactMaximum: 100_000) }
        #expect(try plan(100).kind == .exact)
        #expect(try plan(101).kind == .index)
        let atThreshold = try plan(100)
        #expect(atThreshold.matches == 100 && atThreshold.items == 3000 && atThreshold.exactThreshold == 100)
        #expect(atThreshold.selectivity == 100.0 / 3000)
        #expect(atThreshold.scannedRecords == 3000)
        // A share of the items: 5 % of 3,000 = 150, capped by the maximum.
        engine.filterPlanner.settings.withLock { $0 = FilterPlanner.Settings(exactMinimum: 10, exactFraction: 0.05, exactMaximum: 100_000) }
        #expect(try plan(150).kind == .exact)
        #expect(try plan(151).kind == .index)
        engine.filterPlanner.settings.withLock { $0 = FilterPlanner.Settings(exactMinimum: 10, exactFraction: 0.05, exactMaximum: 120) }
        #expect(try plan(120).kind == .exact)
        #expect(try plan(121).kind == .index)
        // Defaults: max(1024, 1 % of the items) up to 32,768.
        #expect(FilterPlanner.Settings().exactThreshold(items: 3000) == 1024)
        #expect(FilterPlanner.Settings().exactThreshold(items: 500_000) == 5000)
        #expect(FilterPlanner.Settings().exactThreshold(items: 10_000_000) == 32_768)
        #expect(try plan(0).kind == .empty)
        // Unfiltered, and exclusions only (over-fetched and dropped).
        let plain = try engine.searchExplained([query], options: SearchOptions(k: 10)).plan
        #expect(plain.kind == .unfiltered && plain.matches == nil)
        let none = try engine.searchExplained([query], options: SearchOptions(k: 10, filter: TagFilter(tagsNone: ["horror"])))
        #expect(none.plan.kind == .postFilter)
        #expect(none.hits[0].allSatisfy { !$0.tags.contains("horror") })
        let counts = Dictionary(uniqueKeysWithValues: engine.stats().plans.map { ($0.kind, $0.count) })
        #expect(counts[.exact] == 4 && counts[.index] == 3 && counts[.empty] == 1 && counts[.unfiltered] == 1 && counts[.postFilter] == 1)
    }

    @Test func aNegationExcludingMostItemsIsAnsweredExactly() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, spec: "HNSW16")
        defer { try? engine.close() }
        var items = Self.catalogue(count: 2000, dimension: 16, seed: 12)
        for index in items.indices { items[index].tags = index % 100 == 0 ? ["rare"] : ["common"] }
        _ = try engine.upsert(items)
        // not(common): a complement of 1,980 items, more than the over-fetch can drop; resolved by listing
        // the live items.
        let expression = FilterExpression.not(.tag("common"))
        let (hits, plan) = try engine.searchExplained([items[3].vector], options: SearchOptions(k: 10, filter: TagFilter(expression: expression)))
        #expect(plan.kind == .exact && plan.matches == 20)
        #expect(hits[0].map(\.id) == Self.bruteForce(items, items[3].vector, k: 10, expression))
    }

    @Test(arguments: ["Flat", "HNSW16", "IVF16,Flat"])
    func followsDeletesAndUpserts(spec: String) throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, spec: spec)
        defer { try? engine.close() }
        var items = Self.catalogue(count: 2000, dimension: 16, seed: 13)
        _ = try engine.upsert(items)
        let expression = Self.attr("year", .gte(2000))
        let query = items[1].vector
        for settings in [Self.exactAlways, Self.indexAlways] {
            engine.filterPlanner.settings.withLock { $0 = settings }
            let before = try engine.search([query], options: SearchOptions(k: 10, filter: TagFilter(expression: expression)))[0].map(\.id)
            // Delete the best three; move two non-matching items into the filter with the query's own vector.
            let deleted = Array(before.prefix(3))
            _ = try engine.delete(deleted)
            items.removeAll { deleted.contains($0.id) }
            let moved = items.indices.filter { !expression.matches(tags: items[$0].tags, attributesJSON: items[$0].attributesJSON) }.prefix(2)
            var changed: [ItemInput] = []
            for index in moved {
                items[index].attributesJSON = #"{"year":2015}"#
                items[index].vector = query
                changed.append(items[index])
            }
            _ = try engine.upsert(changed)
            let after = try engine.search([query], options: SearchOptions(k: 10, filter: TagFilter(expression: expression)))[0].map(\.id)
            #expect(!after.contains { deleted.contains($0) })
            #expect(Set(after.prefix(2)) == Set(changed.map(\.id)))
            let truth = Self.bruteForce(items, query, k: 10, expression)
            if settings == Self.exactAlways || spec == "Flat" {
                // The two moved items score the same: their order is the tie rule's (lower internal id).
                #expect(Set(after.prefix(2)) == Set(truth.prefix(2)) && after.dropFirst(2).elementsEqual(truth.dropFirst(2)), "\(spec)")
            } else {
                #expect(Set(after).intersection(truth).count >= 8, "\(spec)")
            }
        }
    }

    @Test func concurrentWritesLeaveFilteredSearchesExact() async throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, spec: "HNSW16")
        defer { try? engine.close() }
        let items = Self.catalogue(count: 2000, dimension: 16, seed: 14)
        _ = try engine.upsert(items)
        engine.filterPlanner.settings.withLock { $0 = Self.exactAlways }
        let expression = FilterExpression.and([Self.attr("year", .gte(1990)), .not(.tag("horror"))])
        // A writer adds and deletes items the filter never matches (year 1800) while searches run.
        let writer = Task.detached {
            for round in 0..<20 {
                var extra = Self.catalogue(count: 50, dimension: 16, seed: UInt64(100 + round), firstIndex: 100_000 + round * 50)
                for index in extra.indices { extra[index].attributesJSON = #"{"year":1800}"# }
                _ = try engine.upsert(extra)
                _ = try engine.delete(extra.prefix(25).map(\.id))
            }
        }
        var generator = SeededGenerator(seed: 15)
        for _ in 0..<30 {
            let query = (0..<16).map { _ in Float.random(in: -1...1, using: &generator) }
            let hits = try engine.search([query], options: SearchOptions(k: 10, filter: TagFilter(expression: expression)))[0]
            #expect(hits.map(\.id) == Self.bruteForce(items, query, k: 10, expression))
        }
        try await writer.value
    }

    @Test func recommendTakesAnExpression() throws {
        let directory = Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, spec: "Flat")
        defer { try? engine.close() }
        let items = Self.catalogue(count: 500, dimension: 16, seed: 16)
        _ = try engine.upsert(items)
        let expression = Self.attr("lang", .eq(.string("de")))
        let matching = Set(items.filter { expression.matches(tags: $0.tags, attributesJSON: $0.attributesJSON) }.map(\.id))
        var request = RecommendRequest(history: [items[0].id, items[1].id], k: 10, filter: TagFilter(expression: expression))
        request.explain = true
        let recommendation = try engine.recommend(request)
        #expect(recommendation.hits.count == 10)
        #expect(recommendation.hits.allSatisfy { matching.contains($0.id) })
        #expect(recommendation.plan.kind == .exact && recommendation.plan.matches == matching.count)
    }
}
