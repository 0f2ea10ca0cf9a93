import Testing
import SteerCore

@Suite struct ItemIDTests {
    @Test(arguments: [ItemID.int(0), .int(-1), .int(Int64.max), .int(Int64.min), .string("a"), .string("Café ☕️")])
    func keyBytesRoundTrip(id: ItemID) {
        #expect(ItemID(keyBytes: id.keyBytes) == id)
    }

    @Test func intAndStringWithSameTextAreDifferentKeys() {
        #expect(ItemID.int(7).keyBytes != ItemID.string("7").keyBytes)
    }

    @Test func intKeysSortNumerically() {
        let values: [Int64] = [-5, -1, 0, 1, 300, Int64.max]
        let keys = values.map { ItemID.int($0).keyBytes }
        #expect(keys == keys.sorted { $0.lexicographicallyPrecedes($1) })
    }

    @Test func invalidKeyBytesDecodeToNil() {
        #expect(ItemID(keyBytes: [UInt8]()) == nil)
        #expect(ItemID(keyBytes: [0x01, 1, 2]) == nil)
        #expect(ItemID(keyBytes: [0x02]) == nil)
        #expect(ItemID(keyBytes: [0x02, 0xFF, 0xFE]) == nil)
        #expect(ItemID(keyBytes: [0x09, 1]) == nil)
    }

    @Test func validateRejectsEmptyAndOversizedStrings() {
        #expect(throws: SteerError.self) { try ItemID.string("").validate() }
        #expect(throws: SteerError.self) { try ItemID.string(String(repeating: "x", count: ItemID.maxStringBytes + 1)).validate() }
        #expect(throws: Never.self) { try ItemID.string(String(repeating: "x", count: ItemID.maxStringBytes)).validate() }
    }
}

@Suite struct ItemIDNormalisationTests {
    @Test func nfcAndNfdFormsOfOneStringAreOneKey() {
        let composed = ItemID.string("caf\u{E9}")
        let decomposed = ItemID.string("cafe\u{301}")
        #expect(composed.keyBytes == decomposed.keyBytes)
        #expect(composed == decomposed && composed.hashValue == decomposed.hashValue)
        #expect(ItemID(keyBytes: decomposed.keyBytes).map { id -> Bool in
            if case .string(let text) = id { return Array(text.unicodeScalars) == Array("caf\u{E9}".unicodeScalars) }
            return false
        } == true)
        #expect(Sharding.hash(composed) == Sharding.hash(decomposed))
        // ASCII is left as it is.
        #expect(ItemID.string("item-7").keyBytes == [0x02] + Array("item-7".utf8))
    }
}
