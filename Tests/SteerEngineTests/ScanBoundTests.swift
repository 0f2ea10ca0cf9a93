import Foundation
import SteerCore
import SteerStore
import Testing
@testable import SteerEngine

/// Filters over attributes without a payload index read item records; `maxScanRecords` bounds how many
/// before any is read (docs/security.md, "The cost of a request").
@Suite struct ScanBoundTests {
    static func open(_ directory: String, maxScanRecords: Int, payloadIndexes: [String: PayloadKind] = [:]) throws -> RetrievalEngine {
        var configuration = RetrievalEngine.Configuration(dataDirectory: directory, dimension: 4, indexSpec: "Flat", syncWrites: false,
                                                          payloadIndexes: payloadIndexes)
        configuration.maxScanRecords = maxScanRecords
        return try RetrievalEngine(configuration: configuration)
    }

    static let items = (0..<300).map { index in
        ItemInput(id: .int(Int64(index)), vector: [Float(index), 1, 0, 0], tags: index < 40 ? ["few"] : [],
                  attributesJSON: #"{"color":"\#(index % 3 == 0 ? "red" : "blue")","year":\#(1990 + index % 30)}"#)
    }

    static let red = FilterExpression.attribute(AttributePredicate(name: "color", conditions: [.eq(.string("red"))]))

    @Test func aScanOverTheLimitIsRefusedBeforeReading() throws {
        let directory = NSTemporaryDirectory() + "steer-scan-bound-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, maxScanRecords: 299)
        defer { try? engine.close() }
        _ = try engine.upsert(Self.items)
        do {
            _ = try engine.search([[1, 0, 0, 0]], options: SearchOptions(k: 5, filter: TagFilter(expression: Self.red)))
            Issue.record("a filter reading 300 records passed a limit of 299")
        } catch {
            #expect(error.code == .tooLarge && error.message.contains("300 item records") && error.message.contains("'color'")
                    && error.message.contains("max_scan_records 299"), "\(error)")
        }
        // At the limit it runs; tags narrowing the candidates to 40 records pass a limit of 40.
        engine.filterPlanner.settings.withLock { $0.maxScanRecords = 300 }
        let all = try engine.searchExplained([[1, 0, 0, 0]], options: SearchOptions(k: 5, filter: TagFilter(expression: Self.red)))
        #expect(all.hits[0].count == 5 && all.plan.scannedRecords == 300)
        engine.filterPlanner.settings.withLock { $0.maxScanRecords = 40 }
        let narrowed = TagFilter(expression: .and([.tag("few"), Self.red]))
        let few = try engine.searchExplained([[1, 0, 0, 0]], options: SearchOptions(k: 5, filter: narrowed))
        #expect(few.hits[0].count == 5 && few.plan.scannedRecords == 40)
        engine.filterPlanner.settings.withLock { $0.maxScanRecords = 39 }
        #expect(throws: SteerError.self) { _ = try engine.search([[1, 0, 0, 0]], options: SearchOptions(k: 5, filter: narrowed)) }
    }

    @Test func indexedAttributesReadNoRecordsAndPassALimitOfZero() throws {
        let directory = NSTemporaryDirectory() + "steer-scan-bound-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.open(directory, maxScanRecords: 0, payloadIndexes: ["color": .keyword])
        defer { try? engine.close() }
        _ = try engine.upsert(Self.items)
        let (hits, plan) = try engine.searchExplained([[1, 0, 0, 0]], options: SearchOptions(k: 5, filter: TagFilter(expression: Self.red)))
        #expect(hits[0].count == 5 && plan.scannedRecords == 0)
        // An undeclared attribute beside it is still bounded, and named.
        let year = FilterExpression.attribute(AttributePredicate(name: "year", conditions: [.gte(2000)]))
        do {
            _ = try engine.search([[1, 0, 0, 0]], options: SearchOptions(k: 5, filter: TagFilter(expression: .or([Self.red, year]))))
            Issue.record("an unindexed 'year' leaf passed a limit of 0")
        } catch {
            #expect(error.code == .tooLarge && error.message.contains("'year'") && !error.message.contains("'color'"), "\(error)")
        }
    }
}
