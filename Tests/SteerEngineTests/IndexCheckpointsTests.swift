import Foundation
import SteerCore
import Testing
@testable import SteerEngine

/// `IndexCheckpointer`: the periodic index saves of `steer serve --index-save-seconds`.
@Suite struct IndexCheckpointsTests {
    private static func engine(_ directory: String) throws -> RetrievalEngine {
        try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, metric: .l2, syncWrites: false))
    }

    private static func savedSequence(_ directory: String) -> UInt64? {
        guard let data = FileManager.default.contents(atPath: directory + "/index/index.json"),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return (object["sequence"] as? NSNumber)?.uint64Value
    }

    private static func items(_ range: Range<Int>) -> [ItemInput] {
        range.map { ItemInput(id: .int(Int64($0)), vector: [Float($0), 1, 0, Float(-$0)]) }
    }

    @Test func savesAfterChangesOnly_andEveryEngineItIsGiven() throws {
        let a = NSTemporaryDirectory() + "steer-checkpoint-test-" + UUID().uuidString
        let b = NSTemporaryDirectory() + "steer-checkpoint-test-" + UUID().uuidString
        defer { for d in [a, b] { try? FileManager.default.removeItem(atPath: d) } }
        let first = try Self.engine(a)
        let second = try Self.engine(b)
        defer { try? first.close(); try? second.close() }
        let errors = Locked<[String]>([])
        let checkpointer = IndexCheckpointer(interval: .seconds(3600), engines: { [first, second] }, onError: { directory, error in
            errors.withLock { $0.append("\(directory): \(error)") }
        })
        // Opening a store writes to it (its id, the version registry): the first tick saves both.
        #expect(Set(checkpointer.saveChanged()) == [a, b])
        #expect(checkpointer.saveChanged().isEmpty, "saved again without a change")
        let empty = try #require(Self.savedSequence(a))

        _ = try first.upsert(Self.items(0..<50))
        let written = first.store.latestSequence
        #expect(checkpointer.saveChanged() == [a])
        #expect(Self.savedSequence(a) == written)
        #expect(written > empty)
        #expect(checkpointer.saveChanged().isEmpty, "saved again without a change (its own change-log trim is no change)")

        let before = try #require(Self.savedSequence(a))
        _ = try first.delete([.int(3)])
        _ = try second.upsert(Self.items(0..<5))
        let secondWritten = second.store.latestSequence
        #expect(Set(checkpointer.saveChanged()) == [a, b])
        #expect(try #require(Self.savedSequence(a)) > before)
        #expect(Self.savedSequence(b) == secondWritten)

        // A closed engine (a dropped collection, shutdown) is skipped, not reported.
        try second.close()
        _ = try first.upsert(Self.items(50..<60))
        #expect(checkpointer.saveChanged() == [a])
        #expect(errors.get().isEmpty, "\(errors.get())")
    }

    @Test func theTimerSavesWithinItsInterval_andLaterChangesSurviveAReopen() throws {
        let directory = NSTemporaryDirectory() + "steer-checkpoint-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let engine = try Self.engine(directory)
            defer { try? engine.close() }
            let checkpointer = IndexCheckpointer(interval: .milliseconds(20), engines: { [engine] })
            checkpointer.start()
            _ = try engine.upsert(Self.items(0..<100))
            let target = engine.store.latestSequence
            let deadline = Date().addingTimeInterval(10)
            while (Self.savedSequence(directory) ?? 0) < target && Date() < deadline { usleep(10_000) }
            checkpointer.stop()
            #expect(Self.savedSequence(directory) == target, "the timer did not save within 10 s")
            // Stopped: no tick runs any more.
            _ = try engine.upsert(Self.items(200..<201))
            usleep(200_000)
            #expect(Self.savedSequence(directory) == target, "a stopped checkpointer saved")
            // Changes after the last save: after a crash a reopen replays them from the store's change log.
            let saved = try #require(Self.savedSequence(directory))
            _ = try engine.delete([.int(7)])
            _ = try engine.upsert(Self.items(100..<110))
            #expect(engine.store.latestSequence > saved)
        }
        let reopened = try Self.engine(directory)
        defer { try? reopened.close() }
        #expect(reopened.stats().indexed == 110)
        let hits = try reopened.search([[105, 1, 0, -105]], options: SearchOptions(k: 1))
        #expect(hits.first?.first?.id == .int(105))
        #expect(try reopened.get([.int(7)]).first! == nil)
    }
}
