import Foundation
import SteerCore
import SteerData
import SteerEngine
import SteerProtocol
import Testing
@testable import SteerService

/// A data directory served through a `RequestHandler` over its `CollectionSet`, reopened on demand
/// (as a restart would).
/// `@unchecked Sendable`: `restart` (the only mutation) runs on the test's own thread while nothing else calls it.
private final class Served: @unchecked Sendable {
    let directory = NSTemporaryDirectory() + "steer-collections-test-" + UUID().uuidString
    private(set) var handler: RequestHandler
    private(set) var engine: RetrievalEngine
    let maxCollections: Int

    init(maxCollections: Int = 8, dimension: Int = 3) throws {
        self.maxCollections = maxCollections
        engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: dimension, syncWrites: false))
        handler = RequestHandler(engine: engine, collections: try CollectionSet(defaultEngine: engine, maxCollections: maxCollections))
    }

    /// Closes every engine and opens the directory again.
    func restart() throws {
        try handler.collections.closeNamed()
        try engine.close()
        engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, syncWrites: false))
        handler = RequestHandler(engine: engine, collections: try CollectionSet(defaultEngine: engine, maxCollections: maxCollections))
    }

    /// The answer to `line` as a JSON object.
    func call(_ line: String) throws -> JSONObject {
        guard let answer = handler.respond(to: line), case .object(let object) = try JSONParser.parse(Array(answer.utf8)) else {
            throw SteerError.internalError("no answer to \(line)")
        }
        return object
    }

    /// The error code of `line`'s answer, or "ok".
    func code(_ line: String) throws -> String {
        let answer = try call(line)
        if case .bool(true)? = answer["ok"] { return "ok" }
        guard case .object(let error)? = answer["error"], case .string(let code)? = error["code"] else { return "?" }
        return code
    }

    func close() {
        try? handler.collections.closeNamed()
        try? engine.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

private func string(_ value: JSONValue?) -> String? {
    if case .string(let text)? = value { return text }
    return nil
}

private func hitIDs(_ answer: JSONObject) -> [Int64] {
    guard case .array(let hits)? = answer["hits"] else { return [] }
    return hits.compactMap { hit -> Int64? in
        guard case .object(let object) = hit, case .int(let id)? = object["id"] else { return nil }
        return id
    }
}

@Suite struct CollectionTests {
    @Test func createListDescribeDropWithDifferentDimensionsAndMetrics() throws {
        let served = try Served()
        defer { served.close() }
        #expect(try served.code(#"{"op":"create_collection","name":"small","dimension":2,"metric":"l2"}"#) == "ok")
        #expect(try served.code(#"{"op":"create_collection","name":"wide","dimension":5,"metric":"cosine","index_spec":"HNSW16"}"#) == "ok")
        // The same ids in three collections of three dimensions: each answer comes from the one named.
        #expect(try served.code(#"{"op":"upsert","items":[{"id":1,"vector":[1,0,0]},{"id":2,"vector":[0,1,0]}]}"#) == "ok")
        #expect(try served.code(#"{"op":"upsert","collection":"small","items":[{"id":1,"vector":[0,0]},{"id":2,"vector":[10,10]}]}"#) == "ok")
        #expect(try served.code(#"{"op":"upsert","collection":"wide","items":[{"id":1,"vector":[0,0,0,0,1]},{"id":2,"vector":[1,0,0,0,0]}]}"#) == "ok")
        let byDefault = try served.call(#"{"op":"search","vector":[0,1,0],"k":1}"#)
        #expect(string(byDefault["collection"]) == "default" && hitIDs(byDefault) == [2])
        let small = try served.call(#"{"op":"search","collection":"small","vector":[9,9],"k":1}"#)
        #expect(string(small["collection"]) == "small" && hitIDs(small) == [2], "l2: nearest is [10,10]")
        let wide = try served.call(#"{"op":"search","collection":"wide","vector":[0,0,0,0,3],"k":1}"#)
        #expect(string(wide["collection"]) == "wide" && hitIDs(wide) == [1] && string(wide["generation"]) != nil)
        #expect(try served.code(#"{"op":"search","collection":"small","vector":[1,0,0],"k":1}"#) == "dimension_mismatch")
        let list = try served.call(#"{"op":"list_collections"}"#)
        guard case .array(let entries)? = list["collections"] else { Issue.record("no collections"); return }
        let names = entries.compactMap { entry -> String? in
            guard case .object(let object) = entry else { return nil }
            return string(object["name"])
        }
        #expect(names == ["default", "small", "wide"])
        let described = try served.call(#"{"op":"describe_collection","name":"wide"}"#)
        #expect(string(described["metric"]) == "cosine" && string(described["index_spec"]) == "HNSW16")
        if case .int(let dimension)? = described["dimension"] { #expect(dimension == 5) } else { Issue.record("no dimension") }
        #expect(try served.code(#"{"op":"drop_collection","name":"small"}"#) == "ok")
        #expect(try served.code(#"{"op":"search","collection":"small","vector":[9,9],"k":1}"#) == "not_found")
        served.handler.collections.waitForDrops()
        #expect(!FileManager.default.fileExists(atPath: served.directory + "/collections/small"))
        #expect(try served.code(#"{"op":"drop_collection","name":"default"}"#) == "invalid_request")
        #expect(try served.code(#"{"op":"drop_collection","name":"small"}"#) == "not_found")
    }

    @Test func namesAndLimitsAreEnforced() throws {
        let served = try Served(maxCollections: 2)
        defer { served.close() }
        for bad in ["", "Upper", "_lead", "-lead", "a/b", "..", "a b", "ünï", String(repeating: "a", count: 65)] {
            #expect(try served.code(#"{"op":"create_collection","name":"\#(bad)","dimension":2}"#) == "invalid_request", "\(bad)")
            #expect(try served.code(#"{"op":"search","collection":"\#(bad)","vector":[1,0,0],"k":1}"#) == "invalid_request", "\(bad)")
        }
        #expect(try served.code(#"{"op":"create_collection","name":"\#(String(repeating: "a", count: 64))","dimension":2}"#) == "ok")
        #expect(try served.code(#"{"op":"create_collection","name":"default","dimension":2}"#) == "invalid_request")
        #expect(try served.code(#"{"op":"create_collection","name":"x","dimension":0}"#) == "invalid_request")
        #expect(try served.code(#"{"op":"create_collection","name":"x","dimension":2,"index_spec":"Nonsense9"}"#) == "invalid_request")
        #expect(!FileManager.default.fileExists(atPath: served.directory + "/collections/x"), "a refused create leaves no directory")
        #expect(try served.code(#"{"op":"create_collection","name":"x","dimension":2}"#) == "ok")
        #expect(try served.code(#"{"op":"create_collection","name":"x","dimension":2}"#) == "already_exists")
        #expect(try served.code(#"{"op":"create_collection","name":"y","dimension":2}"#) == "too_large")
        #expect(try served.code(#"{"op":"ping","collection":"x"}"#) == "invalid_request")
        #expect(try served.code(#"{"op":"search","collection":"nope","vector":[1,0,0],"k":1}"#) == "not_found")
    }

    @Test func aliasesResolveMoveAndGuardDrops() throws {
        let served = try Served()
        defer { served.close() }
        #expect(try served.code(#"{"op":"create_collection","name":"v1","dimension":2}"#) == "ok")
        #expect(try served.code(#"{"op":"create_collection","name":"v2","dimension":2}"#) == "ok")
        #expect(try served.code(#"{"op":"upsert","collection":"v1","items":[{"id":1,"vector":[1,0]}]}"#) == "ok")
        #expect(try served.code(#"{"op":"upsert","collection":"v2","items":[{"id":2,"vector":[1,0]}]}"#) == "ok")
        let created = try served.call(#"{"op":"alias","alias":"movies","collection":"v1"}"#)
        #expect(string(created["collection"]) == "v1" && created["previous"] == .null)
        var answer = try served.call(#"{"op":"search","collection":"movies","vector":[1,0],"k":5}"#)
        #expect(string(answer["collection"]) == "v1" && hitIDs(answer) == [1])
        let moved = try served.call(#"{"op":"alias","alias":"movies","collection":"v2"}"#)
        #expect(string(moved["previous"]) == "v1")
        answer = try served.call(#"{"op":"search","collection":"movies","vector":[1,0],"k":5}"#)
        #expect(string(answer["collection"]) == "v2" && hitIDs(answer) == [2])
        let dropAliased = try served.call(#"{"op":"drop_collection","name":"v2"}"#)
        #expect(try served.code(#"{"op":"drop_collection","name":"v2"}"#) == "in_use")
        if case .object(let error)? = dropAliased["error"] { #expect(string(error["message"])?.contains("movies") == true) }
        #expect(try served.code(#"{"op":"alias","alias":"v1","collection":"v2"}"#) == "already_exists")
        #expect(try served.code(#"{"op":"alias","alias":"other","collection":"movies"}"#) == "invalid_request")
        #expect(try served.code(#"{"op":"alias","alias":"other","collection":"nope"}"#) == "not_found")
        #expect(try served.code(#"{"op":"alias","alias":"default","collection":"v1"}"#) == "invalid_request")
        #expect(try served.code(#"{"op":"create_collection","name":"movies","dimension":2}"#) == "already_exists")
        #expect(try served.code(#"{"op":"drop_collection","name":"v1"}"#) == "ok")
        #expect(try served.code(#"{"op":"delete_alias","alias":"movies"}"#) == "ok")
        #expect(try served.code(#"{"op":"delete_alias","alias":"movies"}"#) == "not_found")
        #expect(try served.code(#"{"op":"search","collection":"movies","vector":[1,0],"k":5}"#) == "not_found")
        #expect(try served.code(#"{"op":"drop_collection","name":"v2"}"#) == "ok")
    }

    @Test func restartKeepsCollectionsAliasesAndItems() throws {
        let served = try Served()
        defer { served.close() }
        #expect(try served.code(#"{"op":"create_collection","name":"books","dimension":2,"metric":"l2","embedding_version":"e7"}"#) == "ok")
        #expect(try served.code(#"{"op":"upsert","collection":"books","items":[{"id":"b1","vector":[3,4],"title":"kept"}]}"#) == "ok")
        #expect(try served.code(#"{"op":"alias","alias":"reading","collection":"books"}"#) == "ok")
        #expect(try served.code(#"{"op":"alias","alias":"home","collection":"default"}"#) == "ok")
        try served.restart()
        let described = try served.call(#"{"op":"describe_collection","name":"reading"}"#)
        #expect(string(described["name"]) == "books" && string(described["metric"]) == "l2" && string(described["embedding_version"]) == "e7")
        let got = try served.call(#"{"op":"get","collection":"reading","ids":["b1"]}"#)
        #expect(string(got["collection"]) == "books")
        guard case .array(let items)? = got["items"], case .object(let item)? = items.first else { Issue.record("b1 lost: \(got)"); return }
        #expect(string(item["title"]) == "kept")
        #expect(string(try served.call(#"{"op":"stats","collection":"home"}"#)["collection"]) == "default")
        let catalog = try CollectionCatalog.read(dataDirectory: served.directory)
        #expect(catalog.aliases == ["reading": "books", "home": "default"] && catalog.collections["books"]?.dimension == 2)
    }

    /// A data directory written before collections existed (engine only: `steer.json`, `store/`,
    /// `index/`) opens as the default collection with its items, and nothing is added to it until a
    /// collection or alias is made.
    @Test func aDirectoryWithoutCollectionsOpensUnchanged() throws {
        let directory = NSTemporaryDirectory() + "steer-old-directory-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let old = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 2, metric: .l2, syncWrites: false))
        _ = try old.upsert([ItemInput(id: .int(7), vector: [1, 1], title: "old")])
        try old.close()
        let before = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, syncWrites: false))
        let set = try CollectionSet(defaultEngine: engine)
        let handler = RequestHandler(engine: engine, collections: set)
        let answer = handler.respond(to: #"{"op":"search","vector":[1,1],"k":1}"#) ?? ""
        #expect(answer.contains(#""collection":"default""#) && answer.contains(#""id":7"#), "\(answer)")
        #expect(set.list().map(\.name) == ["default"])
        try set.closeNamed()
        try engine.close()
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted() == before)
        #expect(!FileManager.default.fileExists(atPath: directory + "/" + CollectionCatalog.fileName))
    }

    @Test func offlineToolsFindACollectionsDirectory() throws {
        let served = try Served()
        defer { served.close() }
        #expect(try served.code(#"{"op":"create_collection","name":"books","dimension":2}"#) == "ok")
        #expect(try DataDirectory.collection(nil, in: served.directory) == served.directory)
        #expect(try DataDirectory.collection("default", in: served.directory) == served.directory)
        #expect(try DataDirectory.collection("books", in: served.directory) == served.directory + "/collections/books")
        do {
            _ = try DataDirectory.collection("films", in: served.directory)
            Issue.record("found a collection that does not exist")
        } catch {
            #expect(error.code == .notFound)
        }
        #expect(throws: SteerError.self) { try DataDirectory.collection("../books", in: served.directory) }
    }

    /// A drop cut short by a crash: a marked directory the catalog no longer lists is deleted at the next
    /// start; a marked one it still lists (the crash came before the catalog write) keeps its items.
    @Test func anInterruptedDropIsFinishedAtTheNextStart() throws {
        let served = try Served()
        defer { served.close() }
        #expect(try served.code(#"{"op":"create_collection","name":"gone","dimension":2}"#) == "ok")
        #expect(try served.code(#"{"op":"create_collection","name":"kept","dimension":2}"#) == "ok")
        #expect(try served.code(#"{"op":"upsert","collection":"kept","items":[{"id":1,"vector":[1,0]}]}"#) == "ok")
        try served.handler.collections.closeNamed()
        var catalog = try CollectionCatalog.read(dataDirectory: served.directory)
        catalog.collections["gone"] = nil
        try catalog.write(dataDirectory: served.directory)
        for name in ["gone", "kept"] {
            try AtomicFile.write([], to: served.directory + "/collections/\(name)/.dropping")
        }
        try served.restart()
        #expect(!FileManager.default.fileExists(atPath: served.directory + "/collections/gone"))
        #expect(!FileManager.default.fileExists(atPath: served.directory + "/collections/kept/.dropping"))
        let got = try served.call(#"{"op":"get","collection":"kept","ids":[1]}"#)
        guard case .array(let items)? = got["items"] else { Issue.record("\(got)"); return }
        #expect(items.count == 1)
    }

    @Test func aDamagedCatalogIsRefused() throws {
        let directory = NSTemporaryDirectory() + "steer-bad-catalog-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 2, syncWrites: false))
        defer { try? engine.close() }
        for text in ["not json", #"{"format":1,"collections":[],"aliases":{"a":"missing"}}"#,
                     #"{"format":1,"collections":[{"name":"../x","dimension":2,"metric":"ip","index_spec":"Flat","embedding_version":"v1","created_at":""}],"aliases":{}}"#,
                     #"{"format":2,"collections":[],"aliases":{}}"#] {
            try Data(text.utf8).write(to: URL(fileURLWithPath: directory + "/" + CollectionCatalog.fileName))
            do {
                _ = try CollectionSet(defaultEngine: engine)
                Issue.record("accepted \(text)")
            } catch {
                #expect(error.code == .corrupt, "\(error)")
            }
        }
    }

    /// An in-flight request keeps the collection it leased: a drop deletes nothing until it ends, and a
    /// moved alias does not change what it reads.
    @Test func leasesOutliveAliasMovesAndDelayDrops() throws {
        let served = try Served()
        defer { served.close() }
        #expect(try served.code(#"{"op":"create_collection","name":"old","dimension":2}"#) == "ok")
        #expect(try served.code(#"{"op":"create_collection","name":"new","dimension":2}"#) == "ok")
        #expect(try served.code(#"{"op":"alias","alias":"live","collection":"old"}"#) == "ok")
        let lease = try served.handler.collections.lease("live")
        #expect(try served.code(#"{"op":"alias","alias":"live","collection":"new"}"#) == "ok")
        #expect(lease.name == "old")
        // The drop answers at once; the collection is gone for new requests, its files stay until the lease ends.
        #expect(try served.code(#"{"op":"drop_collection","name":"old"}"#) == "ok")
        #expect(try served.code(#"{"op":"describe_collection","name":"old"}"#) == "not_found")
        Thread.sleep(forTimeInterval: 0.2)
        #expect(try lease.engine.search([[1, 0]], options: SearchOptions(k: 1)).count == 1, "the leased engine is still open")
        #expect(FileManager.default.fileExists(atPath: served.directory + "/collections/old/store"))
        lease.release()
        served.handler.collections.waitForDrops()
        #expect(!FileManager.default.fileExists(atPath: served.directory + "/collections/old"))
    }
}
