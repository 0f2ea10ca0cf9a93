import Testing
import SteerCore

@Suite struct ShardingTests {
    @Test func fnvMatchesPublishedTestVectors() {
        #expect(FNV1a64.hash([UInt8]()) == 0xcbf2_9ce4_8422_2325)
        #expect(FNV1a64.hash(Array("a".utf8)) == 0xaf63_dc4c_8601_ec8c)
        #expect(FNV1a64.hash(Array("foobar".utf8)) == 0x8594_4171_f739_67e8)
        var split = FNV1a64()
        split.update(Array("foo".utf8))
        Array("bar".utf8).withUnsafeBytes { split.update($0) }
        #expect(split.value == 0x8594_4171_f739_67e8)
        #expect(split.hexDigest == "85944171f73967e8")
        #expect(FNV1a64.hex(0xab) == "00000000000000ab")
    }

    /// Pinned values (computed independently in Python from the documented definition). If this test
    /// fails, the sharding function changed and every existing generation would be routed wrongly.
    @Test(arguments: [
        (ItemID.int(0), UInt64(0xcffd_b162_079a_442c), 0, 1, 12),
        (.int(1), 0xcffd_b262_079a_45df, 1, 4, 15),
        (.int(-1), 0xd72b_de26_86fb_caa4, 0, 6, 4),
        (.int(42), 0xcffd_9b62_079a_1eca, 2, 5, 10),
        (.int(Int64.max), 0x685c_d83a_d34b_3424, 1, 6, 4),
        (.string("a"), 0x0839_3307_b4f0_fe2c, 1, 0, 12),
        (.string("item-17"), 0x8890_bc14_a7fb_9c95, 2, 3, 5),
        (.string("Café"), 0x8408_4c00_3f9b_9349, 0, 0, 9),
    ])
    func pinnedValues(id: ItemID, hash: UInt64, mod3: Int, mod7: Int, mod16: Int) throws {
        #expect(Sharding.hash(id) == hash)
        #expect(try Sharding(shardCount: 3).shard(of: id) == mod3)
        #expect(try Sharding(shardCount: 7).shard(of: id) == mod7)
        #expect(try Sharding(shardCount: 16).shard(of: id) == mod16)
        #expect(try Sharding(shardCount: 1).shard(of: id) == 0)
    }

    @Test func shardCountIsBounded() {
        #expect(throws: SteerError.self) { try Sharding(shardCount: 0) }
        #expect(throws: SteerError.self) { try Sharding(shardCount: Sharding.maxShardCount + 1) }
        #expect(throws: Never.self) { try Sharding(shardCount: Sharding.maxShardCount) }
    }

    @Test func unknownFunctionNameIsRefused() throws {
        #expect(throws: SteerError.invalid("unknown sharding function 'crc32' (this build implements 'fnv1a64-keybytes-mod')")) {
            try Sharding(functionName: "crc32", shardCount: 2)
        }
        #expect(try Sharding(functionName: Sharding.functionName, shardCount: 2).shardCount == 2)
    }

    @Test(arguments: [2, 3, 4, 7])
    func shardsAreBalancedForIntegerAndStringIDs(shardCount: Int) throws {
        let sharding = try Sharding(shardCount: shardCount)
        let n = 20_000
        var intCounts = [Int](repeating: 0, count: shardCount)
        var stringCounts = [Int](repeating: 0, count: shardCount)
        for i in 0..<n {
            intCounts[sharding.shard(of: .int(Int64(i)))] += 1
            stringCounts[sharding.shard(of: .string("item-\(i)"))] += 1
        }
        let mean = Double(n) / Double(shardCount)
        for count in intCounts + stringCounts {
            #expect(abs(Double(count) - mean) < 0.05 * mean, "counts \(intCounts) \(stringCounts)")
        }
    }
}
