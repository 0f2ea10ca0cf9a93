import SteerCore

// MARK: - Byte building

/// Appends fixed-width big-endian integers and length-prefixed byte strings.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func append(_ value: UInt8) { bytes.append(value) }

    mutating func append<T: FixedWidthInteger & UnsignedInteger>(bigEndian value: T) {
        for shift in stride(from: T.bitWidth - 8, through: 0, by: -8) {
            bytes.append(UInt8(truncatingIfNeeded: value >> T(shift)))
        }
    }

    mutating func append(bytes other: some Collection<UInt8>) { bytes.append(contentsOf: other) }

    /// A `UInt32` length, then the bytes.
    mutating func appendLengthPrefixed(_ other: some Collection<UInt8>) {
        append(bigEndian: UInt32(other.count))
        bytes.append(contentsOf: other)
    }
}

/// Reads what `ByteWriter` wrote; every read fails (returns nil) rather than trapping on short input.
struct ByteReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var isAtEnd: Bool { offset == bytes.count }

    mutating func readByte() -> UInt8? {
        guard offset < bytes.count else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func read<T: FixedWidthInteger & UnsignedInteger>(bigEndian _: T.Type) -> T? {
        let width = T.bitWidth / 8
        guard bytes.count - offset >= width else { return nil }
        var value: T = 0
        for byte in bytes[offset..<(offset + width)] { value = (value << 8) | T(byte) }
        offset += width
        return value
    }

    mutating func readBytes(_ count: Int) -> ArraySlice<UInt8>? {
        guard count >= 0, bytes.count - offset >= count else { return nil }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    mutating func readLengthPrefixed() -> ArraySlice<UInt8>? {
        guard let length = read(bigEndian: UInt32.self) else { return nil }
        return readBytes(Int(length))
    }

    mutating func readString() -> String? {
        guard let raw = readLengthPrefixed() else { return nil }
        return String(validating: raw, as: UTF8.self)
    }
}

// MARK: - Keys

/// Key builders for every column family (layout documented on `ItemStore`).
enum StoreKey {
    /// 8 bytes big-endian; internal ids are never negative, so byte order is numeric order.
    static func internalID(_ id: Int64) -> [UInt8] {
        var writer = ByteWriter()
        writer.append(bigEndian: UInt64(bitPattern: id))
        return writer.bytes
    }

    static func decodeInternalID(_ bytes: some Collection<UInt8>) -> Int64? {
        guard bytes.count == 8 else { return nil }
        var raw: UInt64 = 0
        for byte in bytes { raw = (raw << 8) | UInt64(byte) }
        return Int64(bitPattern: raw)
    }

    /// Version id (4 bytes BE) then internal id (8 bytes BE).
    static func vector(version: UInt32, internalID: Int64) -> [UInt8] {
        var writer = ByteWriter()
        writer.append(bigEndian: version)
        writer.append(bigEndian: UInt64(bitPattern: internalID))
        return writer.bytes
    }

    /// The 4-byte prefix of every vector of one version.
    static func versionPrefix(_ version: UInt32) -> [UInt8] {
        var writer = ByteWriter()
        writer.append(bigEndian: version)
        return writer.bytes
    }

    /// Tag UTF-8, a 0x00 separator (tags may not contain NUL), then the internal id.
    static func posting(tag: String, internalID: Int64) -> [UInt8] {
        var bytes = Array(tag.utf8)
        bytes.append(0)
        bytes += Self.internalID(internalID)
        return bytes
    }

    /// Every posting key of `tag` lies in `[postingStart, postingEnd)`.
    static func postingStart(tag: String) -> [UInt8] { Array(tag.utf8) + [0] }
    static func postingEnd(tag: String) -> [UInt8] { Array(tag.utf8) + [1] }

    /// Change-log keys are the batch's first sequence number, 8 bytes big-endian.
    static func changeLog(_ sequence: UInt64) -> [UInt8] {
        var writer = ByteWriter()
        writer.append(bigEndian: sequence)
        return writer.bytes
    }

    // Meta keys.
    static let formatVersion = Array("format".utf8)
    static let nextInternalID = Array("next_internal_id".utf8)
    static let nextVersionID = Array("next_version_id".utf8)
    static let liveCount = Array("live_count".utf8)
    static let changeLogTrimmedThrough = Array("changelog_trimmed_through".utf8)
    static let streamAppliedThrough = Array("stream_applied_through".utf8)
    /// The store's identity: a random UUID (lower-case text) written once, at creation or by the first
    /// writable open of a store made before identities existed.
    static let storeID = Array("store_id".utf8)
    static let versionPrefix = Array("version/".utf8)
    static let versionEnd = Array("version0".utf8)  // '0' follows '/' in ASCII
    static let tagCountPrefix = Array("tagcount/".utf8)
    static let tagCountEnd = Array("tagcount0".utf8)

    static func version(named name: String) -> [UInt8] { versionPrefix + Array(name.utf8) }
    static func tagCount(_ tag: String) -> [UInt8] { tagCountPrefix + Array(tag.utf8) }

    static func uint64(_ value: UInt64) -> [UInt8] {
        var writer = ByteWriter()
        writer.append(bigEndian: value)
        return writer.bytes
    }

    static func decodeUInt64(_ bytes: [UInt8]?) -> UInt64? {
        guard let bytes else { return nil }
        var reader = ByteReader(bytes)
        guard let value = reader.read(bigEndian: UInt64.self), reader.isAtEnd else { return nil }
        return value
    }
}

// MARK: - Records

/// The stored form of one item's metadata (the `items` family value).
///
/// Encoding, version 1: `u8 1` · `u32 len + ItemID.keyBytes` · `u8 flags` (bit 0: title present,
/// bit 1: attributes present) · [`u32 len + title UTF-8`] · `u32 tag count` · per tag `u32 len + UTF-8`
/// · [`u32 len + attributes JSON UTF-8`]. All integers big-endian.
struct StoredRecord: Equatable {
    static let encodingVersion: UInt8 = 1

    var id: ItemID
    var title: String?
    var tags: [String]
    var attributesJSON: String?

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.append(Self.encodingVersion)
        writer.appendLengthPrefixed(id.keyBytes)
        writer.append((title == nil ? 0 : 1) | (attributesJSON == nil ? 0 : 2))
        if let title { writer.appendLengthPrefixed(title.utf8) }
        writer.append(bigEndian: UInt32(tags.count))
        for tag in tags { writer.appendLengthPrefixed(tag.utf8) }
        if let attributesJSON { writer.appendLengthPrefixed(attributesJSON.utf8) }
        return writer.bytes
    }

    /// Decodes `encoded()`; nil for bytes it cannot have written.
    init?(decoding bytes: [UInt8]) {
        var reader = ByteReader(bytes)
        guard reader.readByte() == Self.encodingVersion,
              let idBytes = reader.readLengthPrefixed(), let id = ItemID(keyBytes: idBytes),
              let flags = reader.readByte(), flags & ~3 == 0
        else { return nil }
        var title: String?
        if flags & 1 != 0 {
            guard let text = reader.readString() else { return nil }
            title = text
        }
        guard let tagCount = reader.read(bigEndian: UInt32.self) else { return nil }
        var tags: [String] = []
        for _ in 0..<tagCount {
            guard let tag = reader.readString() else { return nil }
            tags.append(tag)
        }
        var attributes: String?
        if flags & 2 != 0 {
            guard let text = reader.readString() else { return nil }
            attributes = text
        }
        guard reader.isAtEnd else { return nil }
        self.init(id: id, title: title, tags: tags, attributesJSON: attributes)
    }

    init(id: ItemID, title: String?, tags: [String], attributesJSON: String?) {
        self.id = id
        self.title = title
        self.tags = tags
        self.attributesJSON = attributesJSON
    }
}

// MARK: - Versions

/// The `meta` value of one embedding version: `u32 version id` · `u32 dimension`.
struct StoredVersion: Equatable {
    var versionID: UInt32
    var dimension: Int

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.append(bigEndian: versionID)
        writer.append(bigEndian: UInt32(dimension))
        return writer.bytes
    }

    init(versionID: UInt32, dimension: Int) {
        self.versionID = versionID
        self.dimension = dimension
    }

    init?(decoding bytes: [UInt8]) {
        var reader = ByteReader(bytes)
        guard let id = reader.read(bigEndian: UInt32.self), let dimension = reader.read(bigEndian: UInt32.self),
              reader.isAtEnd, dimension > 0
        else { return nil }
        self.init(versionID: id, dimension: Int(dimension))
    }
}

// MARK: - Change log

/// One change-log entry: what one batch did to internal ids.
///
/// Encoding: `u8 1` · `u32 upsert count` · per upsert `u64 internal id` · `u32 version count` · `u32`
/// version ids whose vector the batch wrote · `u32 delete count` · `u64` internal ids.
struct ChangeLogEntry: Equatable {
    static let encodingVersion: UInt8 = 1

    var upserts: [(internalID: Int64, versionIDs: [UInt32])] = []
    var deletes: [Int64] = []

    static func == (lhs: ChangeLogEntry, rhs: ChangeLogEntry) -> Bool {
        lhs.deletes == rhs.deletes && lhs.upserts.count == rhs.upserts.count
            && zip(lhs.upserts, rhs.upserts).allSatisfy { $0.internalID == $1.internalID && $0.versionIDs == $1.versionIDs }
    }

    init(upserts: [(internalID: Int64, versionIDs: [UInt32])] = [], deletes: [Int64] = []) {
        self.upserts = upserts
        self.deletes = deletes
    }

    func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.append(Self.encodingVersion)
        writer.append(bigEndian: UInt32(upserts.count))
        for upsert in upserts {
            writer.append(bigEndian: UInt64(bitPattern: upsert.internalID))
            writer.append(bigEndian: UInt32(upsert.versionIDs.count))
            for version in upsert.versionIDs { writer.append(bigEndian: version) }
        }
        writer.append(bigEndian: UInt32(deletes.count))
        for id in deletes { writer.append(bigEndian: UInt64(bitPattern: id)) }
        return writer.bytes
    }

    init?(decoding bytes: [UInt8]) {
        var reader = ByteReader(bytes)
        guard reader.readByte() == Self.encodingVersion, let upsertCount = reader.read(bigEndian: UInt32.self)
        else { return nil }
        for _ in 0..<upsertCount {
            guard let id = reader.read(bigEndian: UInt64.self), let count = reader.read(bigEndian: UInt32.self)
            else { return nil }
            var versions: [UInt32] = []
            for _ in 0..<count {
                guard let version = reader.read(bigEndian: UInt32.self) else { return nil }
                versions.append(version)
            }
            upserts.append((Int64(bitPattern: id), versions))
        }
        guard let deleteCount = reader.read(bigEndian: UInt32.self) else { return nil }
        for _ in 0..<deleteCount {
            guard let id = reader.read(bigEndian: UInt64.self) else { return nil }
            deletes.append(Int64(bitPattern: id))
        }
        guard reader.isAtEnd else { return nil }
    }
}

// MARK: - Vectors

/// Float32 vectors are stored as raw little-endian bytes, `4 * dimension` of them.
enum VectorBytes {
    /// Copies `count` floats out of an unaligned little-endian buffer into `output`.
    static func append(_ raw: UnsafeRawBufferPointer, to output: inout [Float]) {
        let count = raw.count / 4
        #if _endian(little)
        let start = output.count
        output.append(contentsOf: repeatElement(0, count: count))
        output.withUnsafeMutableBytes { destination in
            (destination.baseAddress! + start * 4).copyMemory(from: raw.baseAddress!, byteCount: count * 4)
        }
        #else
        for index in 0..<count {
            output.append(Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self))))
        }
        #endif
    }

    static func decode(_ bytes: [UInt8]) -> [Float] {
        var output: [Float] = []
        output.reserveCapacity(bytes.count / 4)
        bytes.withUnsafeBytes { if $0.count >= 4 { append($0, to: &output) } }
        return output
    }

    /// Calls `body` with the vector's little-endian bytes.
    static func withBytes<T>(_ vector: [Float], _ body: (UnsafeRawBufferPointer) -> T) -> T {
        #if _endian(little)
        return vector.withUnsafeBytes(body)
        #else
        let swapped = vector.map { $0.bitPattern.littleEndian }
        return swapped.withUnsafeBytes(body)
        #endif
    }
}
