/// FNV-1a, 64-bit: a tiny, stable, non-cryptographic hash. Steer uses it to shard item ids and to
/// checksum index files (integrity against accidental corruption, not against an adversary).
///
/// Offset basis `0xcbf29ce484222325`, prime `0x100000001b3`, one byte at a time: `h = (h ^ byte) * prime`.
public struct FNV1a64: Sendable, Hashable {
    public static let offsetBasis: UInt64 = 0xcbf2_9ce4_8422_2325
    public static let prime: UInt64 = 0x0000_0100_0000_01b3

    /// The hash of everything fed so far (the offset basis when nothing was).
    public private(set) var value: UInt64 = FNV1a64.offsetBasis

    public init() {}

    /// Feeds `bytes` into the hash.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        var h = value
        for byte in bytes { h = (h ^ UInt64(byte)) &* Self.prime }
        value = h
    }

    /// Feeds `bytes` into the hash.
    public mutating func update(_ bytes: some Sequence<UInt8>) {
        var h = value
        for byte in bytes { h = (h ^ UInt64(byte)) &* Self.prime }
        value = h
    }

    /// The hash of `bytes`.
    public static func hash(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var hasher = FNV1a64()
        hasher.update(bytes)
        return hasher.value
    }

    /// `value` as 16 lower-case hex digits (how manifests write checksums).
    public var hexDigest: String { Self.hex(value) }

    /// `value` as 16 lower-case hex digits, zero-padded.
    public static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// Which shard holds an item: a documented, deterministic function of the item's external id, shared
/// by the index builder, the server and any router. It must never change silently: its values are pinned
/// by tests, and generation manifests record `functionName`, so a reader refuses a generation sharded by
/// a function it does not implement.
///
/// `shard(of: id) = FNV-1a-64(id.keyBytes) mod shardCount`, where `keyBytes` is the store's key encoding
/// of the id (`0x01` + 8 bytes big-endian with the sign bit flipped for integers, `0x02` + UTF-8 for
/// strings; see `ItemID.keyBytes`), so `.int(7)` and `.string("7")` may land on different shards.
/// The internal ids of the store are not used: they change when an item is deleted and inserted again.
public struct Sharding: Sendable, Hashable, CustomStringConvertible {
    /// The name manifests record for this function.
    public static let functionName = "fnv1a64-keybytes-mod"
    /// Most shards a generation may have.
    public static let maxShardCount = 4096

    /// Number of shards, 1 to `maxShardCount`.
    public let shardCount: Int

    /// - Throws: `.invalidRequest` unless `shardCount` is 1 to `maxShardCount`.
    public init(shardCount: Int) throws(SteerError) {
        guard (1...Self.maxShardCount).contains(shardCount) else {
            throw SteerError.invalid("shard count must be 1 to \(Self.maxShardCount), got \(shardCount)")
        }
        self.shardCount = shardCount
    }

    /// Checks that a manifest's function name is the one this build implements.
    ///
    /// - Throws: `.invalidRequest` naming the unknown function.
    public init(functionName: String, shardCount: Int) throws(SteerError) {
        guard functionName == Self.functionName else {
            throw SteerError.invalid("unknown sharding function '\(functionName)' (this build implements '\(Self.functionName)')")
        }
        try self.init(shardCount: shardCount)
    }

    /// The 64-bit hash of an id that shard numbers are taken from.
    public static func hash(_ id: ItemID) -> UInt64 { FNV1a64.hash(id.keyBytes) }

    /// The shard of `id`, in `0..<shardCount`.
    public func shard(of id: ItemID) -> Int { Int(Self.hash(id) % UInt64(shardCount)) }

    public var description: String { "\(Self.functionName)(\(shardCount))" }
}
