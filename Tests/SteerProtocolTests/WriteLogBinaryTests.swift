import SteerCore
import SteerProtocol
import Testing

private let decoder = RequestDecoder(limits: ProtocolLimits())

/// A comparable view of a decoded write: op, collection, and per item id, vector bits, tags, title, attributes.
private func summary(_ result: Result<WriteLogMessage.Message, SteerError>) -> String {
    switch result {
    case .failure(let error): return "refused \(error.code)"
    case .success(.collectionChange(let change)): return "change \(change.name)"
    case .success(.write(let entry)):
        let collection = entry.collection ?? "-"
        switch entry.operation {
        case .upsert(let items):
            let described = items.map { item in
                "\(item.id)|\(item.vector.map(\.bitPattern))|\(item.tags)|\(item.title ?? "nil")|\(item.attributesJSON ?? "nil")"
            }
            return "upsert \(collection) \(described)"
        case .delete(let ids): return "delete \(collection) \(ids)"
        case .events: return "events \(collection)"
        case .deleteUser(let user): return "delete_user \(collection) \(user)"
        }
    }
}

private let items: [ItemInput] = [
    ItemInput(id: .int(-7), vector: [1.5, -0.0, Float(bitPattern: 0x0020_0000), -2.25], title: "a title", tags: ["x", "ünï", ""], attributesJSON: #"{"b":[1,2],"a":"z"}"#),
    ItemInput(id: .string("name-é"), vector: [0, 1, 2, 3]),
    ItemInput(id: .int(Int64.max), vector: [Float.leastNonzeroMagnitude, 1e15, -1e15, 0.1], title: "", tags: []),
]

/// Byte offsets of a one-part binary message (WriteLogBinary.swift's layout).
private enum Offset {
    static let version = 4
    static let partCount = 5
    static let partLength = 9
    static let kind = 13
    static let collectionLength = 14
    /// The item count of an upsert part of the default collection.
    static let count = 16
}

private func set32(_ bytes: inout [UInt8], at offset: Int, _ value: UInt32) {
    for shift in 0..<4 { bytes[offset + shift] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(shift))) }
}

/// The binary write-log body (WriteLogBinary.swift): the same writes as the JSON lines, and hostile bytes
/// refused at bounded cost.
@Suite struct BinaryWriteLogTests {
    @Test func itemWritesAreBinary_andReadBackExactlyAsTheirJSONLines() throws {
        for collection in [nil, "docs"] as [String?] {
            for operation in [WriteOperation.upsert(items), .delete([.int(3), .string("s"), .int(3)])] {
                let body = WriteLogMessage.encode(operation, collection: collection)
                #expect(WriteLogBinary.isBinary(body))
                #expect(!WriteLogMessage.containsLineSeparator(body))
                let line = WriteLogMessage.encodeLine(operation, collection: collection)
                #expect(!WriteLogBinary.isBinary(line))
                let binary = WriteLogMessage.decodeParts(body, decoder: decoder)
                let json = WriteLogMessage.decodeParts(line, decoder: decoder)
                #expect(binary.count == 1)
                #expect(summary(binary[0]) == summary(json[0]))
                #expect(!summary(binary[0]).hasPrefix("refused"))
                #expect(summary(.success(try WriteLogMessage.decodeMessage(body, decoder: decoder))) == summary(json[0]))
            }
        }
        // Writes with no binary kind stay JSON lines.
        let event = WriteLogMessage.encode(.deleteUser(.string("u1")))
        #expect(!WriteLogBinary.isBinary(event))
        #expect(WriteLogBinary.encode(.deleteUser(.string("u1")), collection: nil) == nil)
    }

    @Test func aBatchMergesBinaryAndJSONBodies_inOrder_andABadPartIsRefusedAlone() throws {
        let upsert = WriteLogMessage.encode(.upsert(items))
        let delete = WriteLogMessage.encode(.delete([.int(9)]), collection: "docs")
        let jsonDelete = WriteLogMessage.encodeLine(.delete([.int(10)]))
        // A part whose framing is fine but whose item has a NaN.
        var bad = WriteLogMessage.encode(.upsert([ItemInput(id: .int(1), vector: [0, 1])]))
        let nanBits = Float.nan.bitPattern
        set32(&bad, at: bad.count - 4 - 1 - 4, nanBits)
        let event = WriteLogMessage.encodeLine(.deleteUser(.string("u")))
        let batch = WriteLogMessage.encodeBatch([upsert, delete, bad, jsonDelete, event, upsert])
        #expect(WriteLogBinary.isBinary(batch))
        let parts = WriteLogMessage.decodeParts(batch, decoder: decoder).map(summary)
        #expect(parts.count == 6)
        #expect(parts[0] == summary(WriteLogMessage.decodeParts(upsert, decoder: decoder)[0]))
        #expect(parts[1] == "delete docs [9]")
        #expect(parts[2] == "refused invalid_request")
        #expect(parts[3] == "delete - [10]")
        // Only item writes in a message of several parts.
        #expect(parts[4] == "refused invalid_request")
        // The same id in two parts of one batch is fine (each part is a write of its own).
        #expect(parts[5] == parts[0])
        // JSON bodies alone still batch as lines.
        let lines = WriteLogMessage.encodeBatch([jsonDelete, jsonDelete])
        #expect(!WriteLogBinary.isBinary(lines))
        #expect(WriteLogMessage.decodeParts(lines, decoder: decoder).map(summary) == ["delete - [10]", "delete - [10]"])
        // decodeMessage takes one write, not a batch.
        #expect(throws: SteerError.self) { try WriteLogMessage.decodeMessage(batch, decoder: decoder) }
    }

    @Test func brokenFramingRefusesTheMessage_everyPrefixIsRefused_andCountsAreCheckedBeforeAllocating() {
        let body = WriteLogMessage.encode(.upsert(items), collection: "docs")
        #expect(WriteLogMessage.decodeParts(body, decoder: decoder).allSatisfy { if case .success = $0 { true } else { false } })
        // Every cut-off prefix (and the body with a byte more) is refused, as one failure.
        for length in 4..<body.count {
            let parts = WriteLogMessage.decodeParts(Array(body.prefix(length)), decoder: decoder)
            #expect(parts.count == 1)
            guard case .failure = parts[0] else {
                Issue.record("prefix of \(length) bytes decoded")
                continue
            }
        }
        #expect(summary(WriteLogMessage.decodeParts(body + [0], decoder: decoder)[0]) == "refused invalid_request")
        func refused(_ change: (inout [UInt8]) -> Void, _ code: SteerError.Code = .invalidRequest) -> Bool {
            var bytes = WriteLogMessage.encode(.upsert(items))
            change(&bytes)
            let parts = WriteLogMessage.decodeParts(bytes, decoder: decoder)
            return parts.count == 1 && summary(parts[0]) == "refused \(code)"
        }
        #expect(refused { $0[Offset.version] = 2 })
        #expect(refused { set32(&$0, at: Offset.partCount, 0) })
        #expect(refused { set32(&$0, at: Offset.partCount, .max) })
        #expect(refused { set32(&$0, at: Offset.partCount, 2) })
        #expect(refused { set32(&$0, at: Offset.partLength, .max) })
        #expect(refused { $0[Offset.kind] = 9 })
        #expect(refused { $0[Offset.collectionLength] = 200 })
        // Counts a payload cannot back are refused before anything is reserved for them.
        #expect(refused { set32(&$0, at: Offset.count, .max) })
        #expect(refused { set32(&$0, at: Offset.count, 0) })
        // The first item: id kind, then its 8 bytes, then the dimension.
        #expect(refused { $0[Offset.count + 4] = 7 })
        #expect(refused { set32(&$0, at: Offset.count + 4 + 9, .max) })
        #expect(refused { set32(&$0, at: Offset.count + 4 + 9, 3) })
        // More items than the decoder's batch limit.
        let many = (0..<1_025).map { ItemInput(id: .int(Int64($0)), vector: [1]) }
        #expect(summary(WriteLogMessage.decodeParts(WriteLogMessage.encode(.upsert(many)), decoder: decoder)[0]) == "refused too_large")
        // A part over the line limit.
        let small = RequestDecoder(limits: ProtocolLimits(maxLineBytes: 64))
        #expect(summary(WriteLogMessage.decodeParts(WriteLogMessage.encode(.upsert(items)), decoder: small)[0]) == "refused too_large")
    }

    @Test func contentIsCheckedAsTheJSONDecoderChecksIt() {
        func outcome(_ operation: WriteOperation, collection: String? = nil) -> String {
            summary(WriteLogMessage.decodeParts(WriteLogMessage.encode(operation, collection: collection), decoder: decoder)[0])
        }
        #expect(outcome(.upsert([ItemInput(id: .int(1), vector: [1]), ItemInput(id: .int(1), vector: [2])])) == "refused invalid_request")
        #expect(outcome(.upsert([ItemInput(id: .string(""), vector: [1])])) == "refused invalid_request")
        #expect(outcome(.upsert([ItemInput(id: .string(String(repeating: "x", count: 513)), vector: [1])])) == "refused too_large")
        #expect(outcome(.upsert([ItemInput(id: .int(1), vector: [.infinity])])) == "refused invalid_request")
        #expect(outcome(.upsert([ItemInput(id: .int(1), vector: [2e15])])) == "refused invalid_request")
        #expect(outcome(.upsert([ItemInput(id: .int(1), vector: [1], attributesJSON: "[1]")])) == "refused invalid_request")
        #expect(outcome(.upsert([ItemInput(id: .int(1), vector: [1], attributesJSON: "{")])) == "refused parse_error")
        #expect(outcome(.upsert([])) == "refused invalid_request")
        #expect(outcome(.delete([])) == "refused invalid_request")
        #expect(outcome(.delete([.int(1)]), collection: "bad name!") == "refused invalid_request")
        // Invalid UTF-8 in a string: the id "ab" with its second byte made 0xFF.
        var bytes = WriteLogMessage.encode(.delete([.string("ab")]))
        bytes[bytes.count - 1] = 0xFF
        #expect(summary(WriteLogMessage.decodeParts(bytes, decoder: decoder)[0]) == "refused invalid_request")
        // A line part holding a binary message is refused (no nesting).
        let inner = WriteLogMessage.encode(.delete([.int(1)]))
        var nested = WriteLogBinary.magic + [WriteLogBinary.version, 1, 0, 0, 0]
        let content: [UInt8] = [3, 0, 0] + inner
        nested += [UInt8(content.count), 0, 0, 0] + content
        #expect(summary(WriteLogMessage.decodeParts(nested, decoder: decoder)[0]) == "refused invalid_request")
    }

    @Test func randomlyDamagedMessagesNeverCrash_andDecodeOrRefuseAlike() {
        var generator = SeededGenerator(seed: 15)
        let base = WriteLogMessage.encodeBatch([
            WriteLogMessage.encode(.upsert(items), collection: "docs"), WriteLogMessage.encode(.delete([.int(1), .string("z")])),
            WriteLogMessage.encodeLine(.delete([.int(2)])),
        ])
        for _ in 0..<3_000 {
            var bytes = base
            for _ in 0..<Int.random(in: 1...4, using: &generator) {
                bytes[Int.random(in: WriteLogBinary.magic.count..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator)
            }
            let first = WriteLogMessage.decodeParts(bytes, decoder: decoder).map(summary)
            #expect(!first.isEmpty)
            #expect(WriteLogMessage.decodeParts(bytes, decoder: decoder).map(summary) == first)
        }
    }
}
