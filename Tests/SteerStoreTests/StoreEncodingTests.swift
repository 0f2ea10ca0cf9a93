import SteerCore
import Testing
@testable import SteerStore

@Suite struct StoreEncodingTests {
    @Test func recordsRoundTripWithAndWithoutOptionalFields() {
        let full = StoredRecord(id: .string("Café"), title: "T", tags: ["a", "b"], attributesJSON: #"{"k":1}"#)
        let bare = StoredRecord(id: .int(-3), title: nil, tags: [], attributesJSON: nil)
        #expect(StoredRecord(decoding: full.encoded()) == full)
        #expect(StoredRecord(decoding: bare.encoded()) == bare)
    }

    @Test func truncatedOrForeignRecordsDecodeToNil() {
        let bytes = StoredRecord(id: .int(1), title: "title", tags: ["x"], attributesJSON: nil).encoded()
        for length in 0..<bytes.count { #expect(StoredRecord(decoding: Array(bytes.prefix(length))) == nil) }
        #expect(StoredRecord(decoding: bytes + [0]) == nil)
        #expect(StoredRecord(decoding: [9] + bytes.dropFirst()) == nil)
    }

    @Test func changeLogEntriesRoundTrip() {
        let entry = ChangeLogEntry(upserts: [(3, [0, 2]), (9, [])], deletes: [1, 4])
        #expect(ChangeLogEntry(decoding: entry.encoded()) == entry)
    }

    @Test func postingKeysOfOneTagSortByInternalIDAndStayInsideTheTagRange() {
        let keys = [Int64(0), 1, 255, 256, 1 << 40].map { StoreKey.posting(tag: "t", internalID: $0) }
        #expect(keys == keys.sorted { $0.lexicographicallyPrecedes($1) })
        for key in keys {
            #expect(!key.lexicographicallyPrecedes(StoreKey.postingStart(tag: "t")))
            #expect(key.lexicographicallyPrecedes(StoreKey.postingEnd(tag: "t")))
        }
        #expect(!StoreKey.posting(tag: "t2", internalID: 0).lexicographicallyPrecedes(StoreKey.postingEnd(tag: "t")))
    }

    @Test func vectorBytesCopyFromUnalignedBuffers() {
        let vector: [Float] = [1.5, -2, 3.25]
        var bytes: [UInt8] = [0xAA]
        VectorBytes.withBytes(vector) { bytes += $0 }
        var output: [Float] = []
        bytes.withUnsafeBytes { VectorBytes.append(UnsafeRawBufferPointer(rebasing: $0.dropFirst()), to: &output) }
        #expect(output == vector)
    }
}
