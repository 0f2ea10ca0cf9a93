import Dispatch
import Foundation
import SteerCore
import Testing
@testable import SteerEngine

/// `RetrievalEngine.apply(sequence:_:)`: a follower's writes (docs/scaling.md, "Following a stream").
@Suite struct ApplyTests {
    private static func engine(_ directory: String) throws -> RetrievalEngine {
        try RetrievalEngine(configuration: .init(dataDirectory: directory, dimension: 4, syncWrites: false))
    }

    @Test func applyWritesInOrder_skipsRedeliveries_andRecordsRefusals() throws {
        let directory = NSTemporaryDirectory() + "steer-apply-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let engine = try Self.engine(directory)
            defer { try? engine.close() }
            guard case .applied(count: 2) = try engine.apply(sequence: 1, .upsert([
                ItemInput(id: .int(1), vector: [1, 0, 0, 0], title: "one"), ItemInput(id: .int(2), vector: [0, 1, 0, 0]),
            ])) else { Issue.record("sequence 1 not applied"); return }
            // Redelivered after a crash between applying and acknowledging: nothing changes.
            guard case .alreadyApplied = try engine.apply(sequence: 1, .upsert([ItemInput(id: .int(1), vector: [0, 0, 0, 1], title: "stale")])) else {
                Issue.record("a redelivery was applied again"); return
            }
            #expect(try engine.get([.int(1)]).first??.title == "one")
            // A write every replica refuses alike is recorded, so the replica moves past it.
            guard case .rejected(let error) = try engine.apply(sequence: 2, .upsert([ItemInput(id: .int(3), vector: [1, 2, 3])])) else {
                Issue.record("a wrong dimension was not refused"); return
            }
            #expect(error.code == .dimensionMismatch)
            #expect(engine.appliedSequence == 2)
            // Bytes that are no write at all: recorded too, once.
            guard case .rejected = try engine.refuse(sequence: 3, SteerError.invalid("garbage")) else {
                Issue.record("refuse did not record"); return
            }
            guard case .alreadyApplied = try engine.refuse(sequence: 3, SteerError.invalid("garbage")) else {
                Issue.record("refuse recorded twice"); return
            }
            guard case .applied(count: 1) = try engine.apply(sequence: 4, .delete([.int(2), .int(77)])) else {
                Issue.record("sequence 4 not applied"); return
            }
            #expect(try engine.search([[0, 1, 0, 0]], options: SearchOptions(k: 5)).first?.map(\.id) == [.int(1)])
        }
        let reopened = try Self.engine(directory)
        defer { try? reopened.close() }
        #expect(reopened.appliedSequence == 4)
        guard case .alreadyApplied = try reopened.apply(sequence: 4, .delete([.int(1)])) else {
            Issue.record("a sequence applied before the restart was applied again"); return
        }
        #expect(try reopened.get([.int(1)]).first??.title == "one")
    }

    @Test func waitForApplied_returnsWhenTheSequenceArrives_orFalseAtTheDeadline() throws {
        let directory = NSTemporaryDirectory() + "steer-apply-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let engine = try Self.engine(directory)
        defer { try? engine.close() }
        let now = DispatchTime.now().uptimeNanoseconds
        #expect(!engine.waitForApplied(1, deadlineNanos: now + 50_000_000))
        #expect(DispatchTime.now().uptimeNanoseconds >= now + 50_000_000)
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) {
            _ = try? engine.apply(sequence: 1, .delete([.int(5)]))
        }
        let started = DispatchTime.now().uptimeNanoseconds
        #expect(engine.waitForApplied(1, deadlineNanos: started + 10_000_000_000))
        #expect(DispatchTime.now().uptimeNanoseconds - started < 5_000_000_000)
        #expect(engine.waitForApplied(0, deadlineNanos: 0))
    }

    /// Batch messages (`apply(parts:)`): the parts of one message share its sequence and take effect in
    /// order exactly like separate messages; a redelivered message is skipped whole; a refused part or a
    /// history part in a message of several parts changes nothing and the other parts apply.
    @Test func partsOfOneMessage_applyInOrderLikeSeparateMessages_andARedeliveredMessageIsSkippedWhole() throws {
        let parts: [(sequence: UInt64, operation: Result<WriteOperation, SteerError>)] = [
            (1, .success(.upsert([ItemInput(id: .int(1), vector: [1, 0, 0, 0], title: "one")]))),
            (2, .success(.upsert([ItemInput(id: .int(2), vector: [0, 1, 0, 0], title: "two")]))),
            (2, .success(.delete([.int(1)]))),
            (2, .success(.upsert([ItemInput(id: .int(1), vector: [0, 0, 1, 0], title: "one-b"), ItemInput(id: .int(3), vector: [1, 1, 0, 0], title: "three")]))),
            (2, .success(.upsert([ItemInput(id: .int(4), vector: [1, 2, 3])]))),  // wrong dimension: this part only
            (2, .failure(SteerError.invalid("a line that did not decode"))),
            (2, .success(.deleteUser(.string("u")))),  // a history part in a message of several parts
            (2, .success(.upsert([ItemInput(id: .int(2), vector: [0, 1, 1, 0], title: "two-b")]))),
            (3, .success(.delete([.int(3)]))),
        ]
        let asMessages = NSTemporaryDirectory() + "steer-apply-test-" + UUID().uuidString
        let asParts = NSTemporaryDirectory() + "steer-apply-test-" + UUID().uuidString
        defer {
            try? FileManager.default.removeItem(atPath: asMessages)
            try? FileManager.default.removeItem(atPath: asParts)
        }
        // The reference: each part as a message of its own (sequences 1...9), the history part refused as
        // it is in a message of several parts.
        let reference = try Self.engine(asMessages)
        defer { try? reference.close() }
        var one: [ApplyOutcome] = []
        for (index, part) in parts.enumerated() {
            var operation = part.operation
            if case .success(.deleteUser) = operation { operation = .failure(SteerError.invalid("history part")) }
            one += try reference.apply(batch: [(UInt64(index + 1), operation)])
        }
        let engine = try Self.engine(asParts)
        defer { try? engine.close() }
        let outcomes = try engine.apply(parts: parts)
        func described(_ outcomes: [ApplyOutcome]) -> [String] {
            outcomes.map { outcome in
                switch outcome {
                case .applied(let count): return "applied \(count)"
                case .rejected(let error): return "rejected \(error.code.rawValue)"
                case .alreadyApplied: return "already"
                case .recorded(let result): return "recorded \(result.recorded)"
                }
            }
        }
        #expect(described(outcomes) == described(one))
        #expect(described(outcomes) == [
            "applied 1", "applied 1", "applied 1", "applied 2", "rejected dimension_mismatch", "rejected invalid_request",
            "rejected invalid_request", "applied 1", "applied 1",
        ])
        #expect(engine.appliedSequence == 3)
        let ids: [ItemID] = [.int(1), .int(2), .int(3), .int(4)]
        let items = try engine.get(ids)
        #expect(items.map { $0?.title } == ["one-b", "two-b", nil, nil])
        #expect(items.map { $0?.vector } == (try reference.get(ids)).map { $0?.vector })
        #expect(engine.indexIsComplete)
        let hits = try engine.search([[0, -1, 1, 0]], options: SearchOptions(k: 10)).first ?? []
        #expect(hits.map(\.id) == [.int(1), .int(2)])
        // Message 2 delivered again, and message 3 beside a new message 4 of two parts: 2 and 3 are skipped
        // whole, 4 applies both parts.
        let again = try engine.apply(parts: [
            (2, .success(.delete([.int(2)]))), (2, .success(.delete([.int(1)]))), (3, .success(.delete([.int(1)]))),
            (4, .success(.upsert([ItemInput(id: .int(5), vector: [0, 0, 0, 1], title: "five")]))), (4, .success(.delete([.int(2)]))),
        ])
        #expect(described(again) == ["already", "already", "already", "applied 1", "applied 1"])
        #expect(try engine.get(ids + [.int(5)]).map { $0?.title } == ["one-b", nil, nil, nil, "five"])
        #expect(engine.appliedSequence == 4)
        // A sequence below the one before it is not a part of that message: skipped.
        let back = try engine.apply(parts: [(6, .success(.delete([.int(1)]))), (5, .success(.delete([.int(5)])))])
        #expect(described(back) == ["applied 1", "already"])
        #expect(engine.appliedSequence == 6)
        #expect(try engine.get([.int(1), .int(5)]).map { $0?.title } == [nil, "five"])
    }

    @Test func aBatchAppliesInOrder_laterWritesWin_refusalsAndRedeliveriesInside() throws {
        let directory = NSTemporaryDirectory() + "steer-apply-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        do {
            let engine = try Self.engine(directory)
            defer { try? engine.close() }
            guard case .applied(count: 2) = try engine.apply(sequence: 1, .upsert([
                ItemInput(id: .int(1), vector: [1, 0, 0, 0], title: "one"), ItemInput(id: .int(2), vector: [0, 1, 0, 0], title: "two"),
            ])) else { Issue.record("sequence 1 not applied"); return }
            let outcomes = try engine.apply(batch: [
                (1, .success(.upsert([ItemInput(id: .int(1), vector: [0, 0, 0, 1], title: "stale")]))),  // redelivered
                (2, .success(.upsert([ItemInput(id: .int(1), vector: [0, 0, 1, 0], title: "one-b"), ItemInput(id: .int(3), vector: [1, 1, 0, 0], title: "three")]))),
                (3, .failure(SteerError.invalid("not a write"))),  // bytes that did not decode
                (4, .success(.upsert([ItemInput(id: .int(4), vector: [1, 2, 3])]))),  // wrong dimension
                (5, .success(.delete([.int(2), .int(3)]))),
                (5, .success(.delete([.int(1)]))),  // not above the one before it
                (6, .success(.upsert([ItemInput(id: .int(1), vector: [0, 0, 0, 1], title: "one-c"), ItemInput(id: .int(2), vector: [0, 1, 1, 0], title: "two-b")]))),
                (7, .success(.upsert([ItemInput(id: .int(5), vector: [0.5, 0, 0, 0.5], title: "five")]))),
            ])
            let described = outcomes.map { outcome -> String in
                switch outcome {
                case .applied(let count): return "applied \(count)"
                case .rejected(let error): return "rejected \(error.code == .invalidRequest ? "invalid" : error.code == .dimensionMismatch ? "dimension" : "other")"
                case .alreadyApplied: return "already"
                case .recorded(let result): return "recorded \(result.recorded)"
                }
            }
            #expect(described == ["already", "applied 2", "rejected invalid", "rejected dimension", "applied 2", "already", "applied 2", "applied 1"])
            #expect(engine.appliedSequence == 7)
            // The later write of 1 won, 2 came back after its delete, 3 is gone: in the store and in the index.
            let items = try engine.get([.int(1), .int(2), .int(3), .int(4), .int(5)])
            #expect(items.map { $0?.title } == ["one-c", "two-b", nil, nil, "five"])
            #expect(items[0]?.vector == [0, 0, 0, 1])
            let hits = try engine.search([[0, 0, 0, 1]], options: SearchOptions(k: 10)).first ?? []
            #expect(Set(hits.map(\.id)) == Set([.int(1), .int(2), .int(5)]))
            #expect(hits.first?.id == .int(1))
            #expect(hits.count == 3)
            #expect(engine.indexIsComplete)
            // A batch entirely at or below the stored sequence changes nothing.
            let again = try engine.apply(batch: [(6, .success(.delete([.int(1)]))), (7, .failure(SteerError.invalid("x")))])
            #expect(again.allSatisfy { if case .alreadyApplied = $0 { true } else { false } })
            #expect(try engine.get([.int(1)]).first??.title == "one-c")
        }
        let reopened = try Self.engine(directory)
        defer { try? reopened.close() }
        #expect(reopened.appliedSequence == 7)
        #expect(try reopened.get([.int(1), .int(2), .int(3)]).map { $0?.title } == ["one-c", "two-b", nil])
        let hits = try reopened.search([[0, 0, 0, 1]], options: SearchOptions(k: 10)).first ?? []
        #expect(Set(hits.map(\.id)) == Set([.int(1), .int(2), .int(5)]))
    }

    @Test func historyMessages_applyInStreamOrderWithTheirSequence_refusalsAndRedeliveriesSkipped() throws {
        let directory = NSTemporaryDirectory() + "steer-apply-test-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let alice = UserID.string("alice")
        let bob = UserID.int(7)
        func event(_ user: UserID, _ item: Int64, _ ts: Int64, kind: String = "view") -> UserEvent {
            UserEvent(user: user, item: .int(item), kind: kind, timestampMillis: ts)
        }
        do {
            let engine = try Self.engine(directory)
            defer { try? engine.close() }
            let outcomes = try engine.apply(batch: [
                (1, .success(.upsert([ItemInput(id: .int(1), vector: [1, 0, 0, 0], title: "one")]))),
                (2, .success(.events([event(alice, 1, 100), event(bob, 9, 50), event(alice, 2, 90)]))),
                (3, .success(.upsert([ItemInput(id: .int(2), vector: [0, 1, 0, 0], title: "two")]))),
                (4, .success(.events([event(alice, 3, 10, kind: "")]))),  // empty kind: refused alike everywhere
                (5, .success(.deleteUser(bob))),
                (6, .success(.events([event(bob, 4, 60)]))),
                (7, .success(.delete([.int(1)]))),
            ])
            let described = outcomes.map { outcome -> String in
                switch outcome {
                case .applied(let count): return "applied \(count)"
                case .recorded(let result): return "recorded \(result.recorded) unknown \(result.unknownItems.count)"
                case .rejected(let error): return "rejected \(error.code.rawValue)"
                case .alreadyApplied: return "already"
                }
            }
            // Events name items 1, 9, 2 at sequence 2: item 1 exists then, 9 and 2 not yet.
            #expect(described == ["applied 1", "recorded 3 unknown 2", "applied 1", "rejected invalid_request", "applied 1", "recorded 1 unknown 1", "applied 1"])
            #expect(engine.appliedSequence == 7)
            #expect(engine.store.appliedStreamSequence == 7)
            #expect(try engine.userEvents(alice).map(\.item) == [.int(2), .int(1)])
            #expect(try engine.userEvents(bob).map(\.item) == [.int(4)])
            // Redelivered (a crash between applying and acknowledging): nothing is recorded twice.
            let again = try engine.apply(batch: [(2, .success(.events([event(alice, 1, 100)]))), (5, .success(.deleteUser(alice)))])
            #expect(again.allSatisfy { if case .alreadyApplied = $0 { true } else { false } })
            #expect(try engine.userEvents(alice).count == 2)
            // A history message alone advances the stored sequence in its own batch.
            guard case .applied(count: 2) = try engine.apply(sequence: 8, .deleteUser(alice)) else {
                Issue.record("delete_user at 8 not applied"); return
            }
            #expect(engine.store.appliedStreamSequence == 8)
        }
        let reopened = try Self.engine(directory)
        defer { try? reopened.close() }
        #expect(reopened.appliedSequence == 8)
        #expect(try reopened.userEvents(alice).isEmpty)
        #expect(try reopened.userEvents(bob).map(\.item) == [.int(4)])
        guard case .alreadyApplied = try reopened.apply(sequence: 6, .events([event(bob, 5, 70)])) else {
            Issue.record("a history message applied before the restart was applied again"); return
        }
        #expect(try reopened.userEvents(bob).count == 1)
    }
}
