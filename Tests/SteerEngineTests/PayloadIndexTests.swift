import Foundation
import SteerCore
import SteerStore
import Testing
@testable import SteerEngine

/// Payload indexes: declared over existing items, maintained by upserts and deletes in the item's batch,
/// kept across a reopen, and answering filter leaves exactly as a scan of the records would.
@Suite struct PayloadIndexTests {
    static func attr(_ name: String, _ conditions: AttributePredicate.Condition...) -> FilterExpression {
        .attribute(AttributePredicate(name: name, conditions: conditions))
    }

    /// Leaves the indexes answer (keyword: eq/ne/in/nin/exists; numeric: ranges, eq/in of numbers) and
    /// compounds of them.
    static let indexed: [FilterExpression] = [
        attr("lang", .eq(.string("fr"))),
        attr("lang", .ne(.string("fr"))),
        attr("lang", .in([.string("de"), .string("en")])),
        attr("lang", .nin([.string("de")])),
        attr("lang", .exists(true)),
        attr("lang", .exists(false)),
        attr("code", .eq(.int(3))),
        attr("flag", .eq(.bool(true))),
        attr("price", .gte(-2.5), .lt(40)),
        attr("price", .gt(0)),
        attr("price", .lte(-10)),
        attr("price", .eq(.int(7))),
        attr("specs.size", .in([.int(1), .int(4)])),
        .and([attr("price", .lt(0)), .not(attr("lang", .eq(.string("en")))), .tag("a")]),
        .or([attr("code", .in([.int(1), .int(2)])), attr("price", .gt(90))]),
    ]

    /// Items with a language (or none), a code that is sometimes a double with the same value, a flag,
    /// a price that is negative, integral or fractional, sometimes a list, and a nested size.
    static func items(count: Int, seed: UInt64, salt: Int = 0) -> [ItemInput] {
        var generator = SeededGenerator(seed: seed)
        return (0..<count).map { index in
            let vector = (0..<8).map { _ in Float.random(in: -1...1, using: &generator) }
            var fields: [String] = []
            let language = ["en", "fr", "de", ""][Int.random(in: 0..<4, using: &generator)]
            if !language.isEmpty { fields.append(#""lang":"\#(language)""#) }
            let code = (index + salt) % 5
            fields.append(index % 3 == 0 ? #""code":\#(code).0"# : #""code":\#(code)"#)
            fields.append(#""flag":\#(index % 2 == 0)"#)
            let price = Double(Int.random(in: -2000..<10_000, using: &generator)) / 100
            switch index % 4 {
            case 0: fields.append(#""price":\#(price)"#)
            case 1: fields.append(#""price":\#(Int(price))"#)
            case 2: fields.append(#""price":[\#(price),\#(price + 50)]"#)
            default: fields.append(#""price":"n/a""#)
            }
            fields.append(#""specs":{"size":\#(index % 6)}"#)
            let tags = index % 3 == 1 ? ["a"] : []
            return ItemInput(id: .int(Int64(index)), vector: vector, title: nil, tags: tags, attributesJSON: "{" + fields.joined(separator: ",") + "}")
        }
    }

    static let declarations: [String: PayloadKind] = ["lang": .keyword, "code": .keyword, "flag": .keyword, "price": .numeric, "specs.size": .keyword]

    /// Every indexed expression resolves without reading a record, to exactly the items a scan finds.
    static func check(_ engine: RetrievalEngine, _ items: [ItemInput], _ label: String) throws {
        for expression in indexed {
            let resolved = try engine.resolveFilter(TagFilter(expression: expression), extraRequired: [], extraExcluded: [])
            #expect(resolved.scannedRecords == 0, "\(label) \(expression): answered by the indexes")
            let expected = Set(items.filter { expression.matches(tags: $0.tags, attributesJSON: $0.attributesJSON) }.map(\.id))
            let liveIDs = try engine.store.internalIDs(of: items.map(\.id)).compactMap { $0 }
            let found: Set<Int64> = resolved.computeAllowed().map { Set($0.sortedLabels) } ?? Set(liveIDs).subtracting(resolved.excluded).subtracting(resolved.allExcludedBits()?.labels ?? [])
            let foundIDs = Set(try engine.store.records(internalIDs: found.sorted()).compactMap { $0?.id })
            #expect(foundIDs == expected, "\(label) \(expression): \(foundIDs.count) vs \(expected.count)")
        }
    }

    @Test func indexesAnswerLeavesExactlyThroughWritesAndReopen() throws {
        let directory = NSTemporaryDirectory() + "steer-payload-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var items = Self.items(count: 600, seed: 1)
        do {
            // Items first, then the declaration builds the indexes over them.
            let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 8, syncWrites: false))
            _ = try engine.upsert(items)
            for (name, kind) in Self.declarations { try engine.store.declarePayloadIndex(name, kind: kind) }
            #expect(engine.store.payloadIndexes == Self.declarations)
            try Self.check(engine, items, "built")
            // Upserts change values (and drop attributes), deletes remove entries.
            var changed = Self.items(count: 200, seed: 2, salt: 1)
            changed[5].attributesJSON = nil
            for index in 0..<200 { items[index] = changed[index] }
            _ = try engine.upsert(changed)
            let deleted = items[300..<350].map(\.id)
            _ = try engine.delete(deleted)
            items.removeAll { deleted.contains($0.id) }
            try Self.check(engine, items, "after writes")
            try engine.close()
        }
        // Declarations and entries survive a reopen; declaring again is a no-op.
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, syncWrites: false, payloadIndexes: ["lang": .keyword]))
        defer { try? engine.close() }
        #expect(engine.store.payloadIndexes == Self.declarations)
        try Self.check(engine, items, "reopened")
        // Redeclared with the other kind: rebuilt (a numeric index over strings holds nothing).
        try engine.store.declarePayloadIndex("lang", kind: .numeric)
        #expect(try engine.store.internalIDs(payload: "lang", .range(lower: nil, lowerInclusive: false, upper: nil, upperInclusive: false)) == [])
        let exists = try engine.resolveFilter(TagFilter(expression: Self.attr("lang", .exists(true))), extraRequired: [], extraExcluded: [])
        #expect(exists.scannedRecords > 0, "a numeric index does not answer exists: scanned")
    }

    @Test func searchesUseTheIndexesAndStayExact() throws {
        let directory = NSTemporaryDirectory() + "steer-payload-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 8, indexSpec: "HNSW16", syncWrites: false,
                                                              payloadIndexes: Self.declarations))
        defer { try? engine.close() }
        let items = Self.items(count: 1500, seed: 3)
        _ = try engine.upsert(items)
        var generator = SeededGenerator(seed: 4)
        for expression in Self.indexed {
            let query = (0..<8).map { _ in Float.random(in: -1...1, using: &generator) }
            let (hits, plan) = try engine.searchExplained([query], options: SearchOptions(k: 10, filter: TagFilter(expression: expression)))
            // No record is read for the filter, nor for a complement leaving few items (the live ids come
            // from memory, `ItemStore.liveBits`).
            #expect(plan.scannedRecords == 0, "\(expression)")
            let kept = items.filter { expression.matches(tags: $0.tags, attributesJSON: $0.attributesJSON) }
            #expect(plan.matches == kept.count || plan.kind == .postFilter)
            if plan.kind == .exact {
                let truth = ExactSearch.topK(query: query, base: kept.flatMap(\.vector), dimension: 8, k: 10, metric: .innerProduct)
                #expect(hits[0].map(\.id) == truth.map { kept[Int($0.label)].id }, "\(expression)")
            } else {
                let allowed = Set(kept.map(\.id))
                #expect(hits[0].count == min(10, kept.count) && hits[0].allSatisfy { allowed.contains($0.id) }, "\(expression)")
            }
        }
        // A mixed expression: the indexed child narrows the candidates, the unindexed one reads only them.
        let mixed = FilterExpression.and([Self.attr("price", .gte(95)), Self.attr("unindexed", .exists(false))])
        let plan = try engine.searchExplained([items[0].vector], options: SearchOptions(k: 5, filter: TagFilter(expression: mixed))).plan
        let candidates = items.filter { Self.attr("price", .gte(95)).matches(tags: $0.tags, attributesJSON: $0.attributesJSON) }.count
        #expect(plan.scannedRecords == candidates && candidates < 1500 / 4)
    }

    @Test func declarationsAreChecked() throws {
        let directory = NSTemporaryDirectory() + "steer-payload-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try ItemStore(options: .init(path: directory))
        defer { store.close() }
        for bad in ["", "a..b", ".a", String(repeating: "x", count: 257)] {
            #expect(throws: SteerError.self) { try store.declarePayloadIndex(bad, kind: .keyword) }
        }
        #expect(throws: SteerError.self) { try PayloadKind(parsing: "text") }
        #expect(try PayloadKind(parsing: "numeric") == .numeric)
        #expect(try store.internalIDs(payload: "nope", .any) == nil)
    }
}
