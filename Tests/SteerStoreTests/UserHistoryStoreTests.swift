import CRocksDB
import Foundation
import SteerCore
import Testing
@testable import SteerStore

private func temporaryPath() -> String { NSTemporaryDirectory() + "steer-history-test-" + UUID().uuidString }

/// Opens a store with the given cap in a temporary directory, runs `body`, then removes it.
private func withHistories<T>(cap: Int = 200, _ body: (ItemStore, String) throws -> T) throws -> T {
    let path = temporaryPath()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let store = try ItemStore(options: .init(path: path, syncWrites: false, maxEventsPerUser: cap))
    defer { store.close() }
    return try body(store, path)
}

private func event(_ user: UserID, _ item: Int64, ts: Int64, kind: String = "view") -> UserEvent {
    UserEvent(user: user, item: .int(item), kind: kind, timestampMillis: ts)
}

/// Every key and value of every column family, for "is anything of this user left" checks.
private func allBytes(_ store: ItemStore) throws -> [[UInt8]] {
    try store.withDatabase { (database) throws(SteerError) -> [[UInt8]] in
        var entries: [[UInt8]] = []
        for family in Family.allCases {
            do {
                try database.scan(family, from: [], to: nil) { key, value in
                    entries.append(Array(key) + [0xFF] + Array(value))
                    return true
                }
            } catch {
                throw SteerError.internalError("\(error)")
            }
        }
        return entries
    }
}

private func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, haystack.count >= needle.count else { return false }
    for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
        if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
    }
    return false
}

/// The SST files of a store directory that contain `marker`.
private func sstFiles(in path: String, containing marker: String) -> [String] {
    let files = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
    return files.filter { $0.hasSuffix(".sst") }.filter { name in
        guard let data = FileManager.default.contents(atPath: path + "/" + name) else { return false }
        return contains([UInt8](data), Array(marker.utf8))
    }
}

@Suite struct UserHistoryStoreTests {
    @Test func historiesAreOrderedByTimestampWithTiesByArrival() throws {
        try withHistories { store, _ in
            let user = UserID.string("u42")
            // One call: timestamps out of order, with ties.
            _ = try store.histories.record([event(user, 1, ts: 500), event(user, 2, ts: 300), event(user, 3, ts: 500),
                                            event(user, 4, ts: 100)])
            // Later calls: a tie with earlier events goes after them; an older event goes before.
            _ = try store.histories.record([event(user, 5, ts: 300)])
            _ = try store.histories.record([event(user, 6, ts: -7)])
            _ = try store.histories.record([event(user, 7, ts: 500)])
            let events = try store.histories.events(of: user)
            #expect(events.map(\.item) == [6, 4, 2, 5, 1, 3, 7].map { ItemID.int($0) })
            #expect(events.map(\.timestampMillis) == [-7, 100, 300, 300, 500, 500, 500])
            #expect(events.map(\.arrival) == [5, 3, 1, 4, 0, 2, 6])
            #expect(try store.histories.recentItems(of: user, limit: 3) == [1, 3, 7].map { ItemID.int($0) })
            #expect(try store.histories.events(of: user, limit: 1).map(\.item) == [.int(7)])
            #expect(try store.histories.events(of: user, limit: 0).isEmpty)
        }
    }

    @Test func everyFieldRoundTripsAndUsersAreKeptApart() throws {
        try withHistories { store, _ in
            // "a" is a byte prefix of "ab", and .int(1) / .string("1") are different users.
            let users: [UserID] = [.string("a"), .string("ab"), .int(1), .string("1"), .string("é")]
            for (index, user) in users.enumerated() {
                _ = try store.histories.record([UserEvent(user: user, item: .string("item-\(index)"), kind: "kind\(index)",
                                                          timestampMillis: Int64(index) - 2)])
            }
            for (index, user) in users.enumerated() {
                let events = try store.histories.events(of: user)
                #expect(events == [StoredEvent(item: .string("item-\(index)"), kind: "kind\(index)", timestampMillis: Int64(index) - 2, arrival: 0)])
                #expect(try store.histories.eventCount(of: user) == 1)
            }
            // The NFD spelling of "é" is the same user.
            #expect(try store.histories.events(of: .string("e\u{301}")).count == 1)
            #expect(try store.histories.events(of: .string("nobody")).isEmpty)
            var visited: [UserID] = []
            try store.histories.forEachEvent { user, _ in
                visited.append(user)
                return true
            }
            #expect(Set(visited) == Set(users))
        }
    }

    @Test func theCapKeepsTheMostRecentEvents() throws {
        try withHistories(cap: 5) { store, _ in
            let user = UserID.int(9)
            var dropped = 0
            for item in 0..<8 {
                let result = try store.histories.record([event(user, Int64(item), ts: Int64(item) * 10)])
                #expect(result.recorded == 1)
                dropped += result.dropped
            }
            #expect(dropped == 3)
            #expect(try store.histories.events(of: user).map(\.item) == (3..<8).map { ItemID.int(Int64($0)) })
            #expect(try store.histories.eventCount(of: user) == 5)
            // An event older than all five kept is dropped, not written.
            let old = try store.histories.record([event(user, 100, ts: 0)])
            #expect(old.recorded == 0 && old.dropped == 1)
            // A batch over the cap by itself keeps its newest, mixed with the stored ones by time.
            // Stored: ts 30…70; the batch: ts 35, 45, …, 95. The five newest of the union stay.
            let batch = try store.histories.record((0..<7).map { event(user, 200 + Int64($0), ts: 35 + Int64($0) * 10) })
            #expect(batch.recorded == 4 && batch.dropped == 7)
            let kept = try store.histories.events(of: user)
            #expect(kept.map(\.timestampMillis) == [65, 70, 75, 85, 95])
            #expect(kept.map(\.item) == [203, 7, 204, 205, 206].map { ItemID.int($0) })
            // The family holds exactly the kept events and one counter key.
            let raw = try store.withDatabase { (database) throws(SteerError) -> Int in
                var count = 0
                do {
                    try database.scan(.events, from: [], to: nil) { _, _ in
                        count += 1
                        return true
                    }
                } catch {
                    throw SteerError.internalError("\(error)")
                }
                return count
            }
            #expect(raw == 6)
        }
    }

    @Test func deleteUserRemovesEveryByteOfTheUser() throws {
        try withHistories { store, path in
            let doomed = UserID.string("erase-me-7f3a9c")
            let kept = UserID.string("keep-me-51b2")
            let marker = "marker-kind-e1"
            _ = try store.histories.record((0..<50).map { UserEvent(user: doomed, item: .int(Int64($0)), kind: marker, timestampMillis: Int64($0)) })
            _ = try store.histories.record((0..<5).map { event(kept, Int64($0), ts: Int64($0)) })
            // Put the events into SST files first, so that the file check below can fail.
            try store.withDatabase { database in database.compactRange(.events, from: [0x00], to: [0xFF]) }
            #expect(!sstFiles(in: path, containing: marker).isEmpty)
            #expect(try allBytes(store).contains { contains($0, Array("erase-me-7f3a9c".utf8)) })

            #expect(try store.histories.deleteUser(doomed) == 50)
            #expect(try store.histories.events(of: doomed).isEmpty)
            #expect(try store.histories.eventCount(of: doomed) == 0)
            #expect(try !allBytes(store).contains { contains($0, Array("erase-me-7f3a9c".utf8)) || contains($0, Array(marker.utf8)) })
            #expect(sstFiles(in: path, containing: marker).isEmpty)
            #expect(sstFiles(in: path, containing: "erase-me-7f3a9c").isEmpty)
            #expect(try store.histories.events(of: kept).count == 5)
            // Deleting an unknown user is a no-op; the user may record again afterwards.
            #expect(try store.histories.deleteUser(doomed) == 0)
            _ = try store.histories.record([event(doomed, 1, ts: 1)])
            #expect(try store.histories.events(of: doomed).map(\.arrival) == [0])
        }
    }

    @Test func aBadEventRefusesTheWholeCall() throws {
        try withHistories { store, _ in
            let user = UserID.string("u")
            let long = String(repeating: "k", count: UserEvent.maxKindBytes + 1)
            let tooLong = #expect(throws: SteerError.self) {
                try store.histories.record([event(user, 1, ts: 1), UserEvent(user: user, item: .int(2), kind: long, timestampMillis: 2)])
            }
            #expect(tooLong?.code == .tooLarge)
            #expect(tooLong?.message.contains("events[1].kind") == true)
            let empty = #expect(throws: SteerError.self) { try store.histories.record([UserEvent(user: user, item: .int(1), kind: "", timestampMillis: 1)]) }
            #expect(empty?.code == .invalidRequest)
            let emptyUser = #expect(throws: SteerError.self) { try store.histories.record([event(.string(""), 1, ts: 1)]) }
            #expect(emptyUser?.code == .invalidRequest)
            let stored = try store.histories.events(of: user)
            #expect(stored.isEmpty)
        }
    }

    @Test func aLoweredCapAppliesAtTheUsersNextWrite() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let user = UserID.string("u")
        do {
            let store = try ItemStore(options: .init(path: path, syncWrites: false, maxEventsPerUser: 10))
            _ = try store.histories.record((0..<10).map { event(user, Int64($0), ts: Int64($0)) })
            store.close()
        }
        let store = try ItemStore(options: .init(path: path, syncWrites: false, maxEventsPerUser: 4))
        defer { store.close() }
        #expect(try store.histories.events(of: user).count == 10)
        let result = try store.histories.record([event(user, 10, ts: 10)])
        #expect(result.recorded == 1 && result.dropped == 7)
        #expect(try store.histories.events(of: user).map(\.item) == (7...10).map { ItemID.int(Int64($0)) })
        let badCap = #expect(throws: SteerError.self) { try ItemStore(options: .init(path: temporaryPath(), maxEventsPerUser: 0)) }
        #expect(badCap?.code == .invalidRequest)
    }

    @Test func concurrentWritersKeepEveryEventAndUniqueArrivals() throws {
        try withHistories(cap: 10_000) { store, _ in
            let users: [UserID] = (0..<4).map { .string("user\($0)") }
            let histories = store.histories
            DispatchQueue.concurrentPerform(iterations: 8) { worker in
                for round in 0..<25 {
                    // Two users per call, in either order, so calls lock stripes of several users.
                    let first = users[worker % 4]
                    let second = users[(worker + round) % 4]
                    _ = try? histories.record([event(first, Int64(worker * 100 + round), ts: 1), event(second, -1, ts: 2)])
                }
            }
            var total = 0
            for user in users {
                let events = try store.histories.events(of: user)
                #expect(Set(events.map(\.arrival)).count == events.count)
                #expect(try store.histories.eventCount(of: user) == events.count)
                total += events.count
            }
            #expect(total == 8 * 25 * 2)
        }
    }

    @Test func aReadOnlyOpenReadsHistoriesAndRefusesWrites() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writer = try ItemStore(options: .init(path: path, syncWrites: false))
        defer { writer.close() }
        _ = try writer.histories.record([event(.string("u"), 1, ts: 1)])
        let reader = try ItemStore(options: .init(path: path, readOnly: true))
        defer { reader.close() }
        #expect(try reader.histories.events(of: .string("u")).count == 1)
        let refused = #expect(throws: SteerError.self) { try reader.histories.record([event(.string("u"), 2, ts: 2)]) }
        #expect(refused?.code == .invalidRequest)
        #expect(throws: SteerError.self) { try reader.histories.deleteUser(.string("u")) }
    }

    /// A store written before histories existed has no `events` family: a read-only open (which cannot
    /// create one) still opens it and finds no histories; the next writable open adds the family.
    @Test func aStoreWithoutTheEventsFamilyOpensReadOnlyAndGainsItWhenWritable() throws {
        let path = temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let store = try ItemStore(options: .init(path: path, syncWrites: false))
            try store.createVersion("v1", dimension: 2)
            _ = try store.upsert([ItemStore.ItemWrite(id: .int(1), title: "one", vectors: ["v1": [1, 2]])])
            store.close()
        }
        // Drop the family with RocksDB's C API, as if the store predated it.
        let names = Family.allCases.map(\.name)
        let options = rocksdb_options_create()!
        defer { rocksdb_options_destroy(options) }
        var cNames: [UnsafePointer<CChar>?] = names.map { UnsafePointer(strdup($0)) }
        defer { for name in cNames { free(UnsafeMutableRawPointer(mutating: name)) } }
        let familyOptions: [OpaquePointer?] = Array(repeating: options, count: names.count)
        var handles = [OpaquePointer?](repeating: nil, count: names.count)
        var errptr: UnsafeMutablePointer<CChar>?
        let db = cNames.withUnsafeMutableBufferPointer { namesBuffer in
            rocksdb_open_column_families(options, path, Int32(names.count), namesBuffer.baseAddress, familyOptions, &handles, &errptr)
        }
        #expect(errptr == nil)
        rocksdb_drop_column_family(db, handles[Family.events.rawValue], &errptr)
        #expect(errptr == nil)
        for handle in handles { rocksdb_column_family_handle_destroy(handle) }
        rocksdb_close(db)
        #expect(try !RocksDatabase.listFamilies(path: path).contains("events"))

        let reader = try ItemStore(options: .init(path: path, readOnly: true))
        #expect(try reader.get([.int(1)]).first??.title == "one")
        #expect(try reader.histories.events(of: .string("u")).isEmpty)
        var visited = 0
        try reader.histories.forEachEvent { _, _ in
            visited += 1
            return true
        }
        #expect(visited == 0)
        reader.close()

        let writer = try ItemStore(options: .init(path: path, syncWrites: false))
        defer { writer.close() }
        #expect(try RocksDatabase.listFamilies(path: path).contains("events"))
        _ = try writer.histories.record([event(.string("u"), 1, ts: 1)])
        #expect(try writer.histories.events(of: .string("u")).count == 1)
    }

    @Test func positionsNameTheHistoryAndARestartedOneGetsALargerCreated() throws {
        try withHistories { store, _ in
            let histories = store.histories
            let alice = UserID.string("alice")
            _ = try histories.record([event(alice, 1, ts: 10), event(alice, 2, ts: 20), event(.int(7), 3, ts: 5)])
            _ = try histories.record([event(alice, 4, ts: 15)])
            var positions: [UserID: HistoryPosition] = [:]
            try histories.forEachPosition { user, position in
                positions[user] = position
                return true
            }
            let first = try #require(positions[alice])
            #expect(first.nextArrival == 3 && first.created > 0)
            #expect(positions[.int(7)]?.nextArrival == 1 && positions.count == 2)
            // The arrival numbers of the stored events are below the position.
            #expect(try histories.events(of: alice).map(\.arrival).sorted() == [0, 1, 2])

            _ = try histories.deleteUser(alice)
            _ = try histories.record([event(alice, 5, ts: 1)])
            positions = [:]
            try histories.forEachPosition { user, position in
                positions[user] = position
                return true
            }
            let restarted = try #require(positions[alice])
            #expect(restarted.nextArrival == 1 && restarted.created > first.created)
        }
    }
}
