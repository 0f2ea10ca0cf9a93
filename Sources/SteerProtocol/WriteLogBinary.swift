import SteerCore

/// The binary body of write-log messages of item writes (docs/scaling.md, "Message format"): `upsert`
/// and `delete` parts with vectors as raw little-endian float32, so that a router writes and a replica
/// reads an item with a few copies instead of base64 and a JSON tree. Hand-written: no package on this
/// machine reads or writes this layout (it is Steer's own), and it is small.
///
/// Layout (all integers little-endian; `str16`/`str32` = a u16/u32 byte count, then that many UTF-8 bytes):
///
///     message  = magic "\0SWL" (4 bytes), version u8 (= 1), part count u32, part × count
///     part     = byte count u32 (of what follows, at most `maxLineBytes`), kind u8, collection str16
///                (empty: the default collection), then by kind:
///                1 upsert: item count u32, item × count
///                2 delete: id count u32, id × count
///                3 line:   the rest of the part is one JSON line of `WriteLogMessage` (`decodeMessage`)
///     item     = id, dimension u32, float32 × dimension, tag count u32, tag str32 × count,
///                flags u8 (bit 0: title, bit 1: attributes), [title str32], [attributes str32: a JSON object]
///     id       = kind u8, then 1: int64 | 2: str32 (a string id)
///
/// A JSON line never starts with NUL, so the magic tells the two formats apart; JSON bodies stay valid
/// messages (a stream written before this format, or a tool publishing lines). A message of several parts
/// is a batch message (`WriteLogMessage`): each part has its own outcome, and only `upsert`/`delete` parts
/// (or `line` parts holding one) are accepted in it.
///
/// Hostile input: every count and length is checked against the bytes left before anything is allocated
/// for it, so decoding costs O(payload bytes). A part whose framing is intact but whose content is bad is
/// refused alone (every replica refuses the same bytes alike); a message whose framing is broken (unknown
/// version, a part running past the end, trailing bytes) is refused as a whole. Content is checked as the
/// JSON decoder checks it: 1…`maxBatch` items or ids, valid ids, no id twice in one upsert (a delete's
/// repeated ids are kept once), finite vectors, valid UTF-8, attributes a JSON object (stored re-written
/// exactly as the JSON decoder writes them).
public enum WriteLogBinary {
    /// The first four bytes of a binary message.
    public static let magic: [UInt8] = [0x00, 0x53, 0x57, 0x4C]
    /// The layout version this code writes and reads.
    public static let version: UInt8 = 1
    /// Magic, version and part count.
    static let headerBytes = 9

    enum Kind: UInt8 {
        case upsert = 1
        case delete = 2
        case line = 3
    }

    static let intID: UInt8 = 1
    static let stringID: UInt8 = 2
    static let titleFlag: UInt8 = 1
    static let attributesFlag: UInt8 = 2

    /// Whether `payload` is a binary message (starts with `magic`).
    public static func isBinary(_ payload: [UInt8]) -> Bool {
        payload.count >= magic.count && payload[0] == magic[0] && payload[1] == magic[1] && payload[2] == magic[2] && payload[3] == magic[3]
    }

    // MARK: Writing

    /// A message of one part: the write. Nil for writes that have no binary kind (events, a user's deletion).
    public static func encode(_ operation: WriteOperation, collection: String?) -> [UInt8]? {
        var out = header(parts: 1)
        switch operation {
        case .upsert(let items):
            var size = 4 + items.count * 16
            for item in items { size += item.vector.count * 4 + 64 }
            out.reserveCapacity(out.count + size)
            appendPart(&out, kind: .upsert, collection: collection) { out in
                put32(&out, items.count)
                for item in items { appendItem(&out, item) }
            }
        case .delete(let ids):
            appendPart(&out, kind: .delete, collection: collection) { out in
                put32(&out, ids.count)
                for id in ids { appendID(&out, id) }
            }
        case .events, .deleteUser:
            return nil
        }
        return out
    }

    /// One message holding the parts of `bodies` in order: a binary body's parts as they are, a JSON body
    /// as a `line` part.
    public static func merge(_ bodies: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(headerBytes + bodies.reduce(0) { $0 + $1.count + 16 })
        out += header(parts: 0)
        var parts = 0
        for body in bodies {
            if isBinary(body) && body.count >= headerBytes {
                out.append(contentsOf: body[headerBytes...])
                parts += Int(read32(body, at: 5))
            } else {
                appendPart(&out, kind: .line, collection: nil) { $0.append(contentsOf: body) }
                parts += 1
            }
        }
        let count = UInt32(truncatingIfNeeded: parts)
        for shift in 0..<4 { out[5 + shift] = UInt8(truncatingIfNeeded: count >> (8 * UInt32(shift))) }
        return out
    }

    private static func header(parts: Int) -> [UInt8] {
        var out = magic
        out.append(version)
        put32(&out, parts)
        return out
    }

    private static func appendPart(_ out: inout [UInt8], kind: Kind, collection: String?, _ body: (inout [UInt8]) -> Void) {
        let lengthAt = out.count
        put32(&out, 0)
        out.append(kind.rawValue)
        let name = collection ?? ""
        put16(&out, name.utf8.count)
        out.append(contentsOf: name.utf8)
        body(&out)
        let length = UInt32(truncatingIfNeeded: out.count - lengthAt - 4)
        for shift in 0..<4 { out[lengthAt + shift] = UInt8(truncatingIfNeeded: length >> (8 * UInt32(shift))) }
    }

    private static func appendItem(_ out: inout [UInt8], _ item: ItemInput) {
        appendID(&out, item.id)
        put32(&out, item.vector.count)
        item.vector.withUnsafeBytes { raw in
            #if _endian(little)
            out.append(contentsOf: raw)
            #else
            for value in item.vector { put32(&out, Int(value.bitPattern)) }
            #endif
        }
        put32(&out, item.tags.count)
        for tag in item.tags { putString32(&out, tag) }
        var flags: UInt8 = 0
        if item.title != nil { flags |= titleFlag }
        if item.attributesJSON != nil { flags |= attributesFlag }
        out.append(flags)
        if let title = item.title { putString32(&out, title) }
        if let attributes = item.attributesJSON { putString32(&out, attributes) }
    }

    private static func appendID(_ out: inout [UInt8], _ id: ItemID) {
        switch id {
        case .int(let value):
            out.append(intID)
            let bits = UInt64(bitPattern: value)
            for shift in 0..<8 { out.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(shift)))) }
        case .string(let text):
            out.append(stringID)
            putString32(&out, text)
        }
    }

    private static func put16(_ out: inout [UInt8], _ value: Int) {
        let value = UInt16(truncatingIfNeeded: value)
        out.append(UInt8(truncatingIfNeeded: value))
        out.append(UInt8(truncatingIfNeeded: value >> 8))
    }

    private static func put32(_ out: inout [UInt8], _ value: Int) {
        let value = UInt32(truncatingIfNeeded: value)
        for shift in 0..<4 { out.append(UInt8(truncatingIfNeeded: value >> (8 * UInt32(shift)))) }
    }

    private static func putString32(_ out: inout [UInt8], _ text: String) {
        put32(&out, text.utf8.count)
        out.append(contentsOf: text.utf8)
    }

    private static func read32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
    }

    // MARK: Reading

    /// Reads back each part of a binary message (`isBinary`), with the checks of the type's doc; a
    /// message of several parts accepts only `upsert`/`delete` parts.
    ///
    /// - Returns: one result per part, in order; a single failure when the message's framing is broken.
    public static func decodeParts(_ payload: [UInt8], decoder: RequestDecoder) -> [Result<WriteLogMessage.Message, SteerError>] {
        let ranges: [Range<Int>]
        do throws(SteerError) {
            ranges = try partRanges(payload, maxPartBytes: decoder.limits.maxLineBytes)
        } catch {
            return [.failure(error)]
        }
        let batch = ranges.count > 1
        return ranges.map { range -> Result<WriteLogMessage.Message, SteerError> in
            do throws(SteerError) {
                let message = try decodePart(payload, range, decoder: decoder)
                if batch {
                    switch message {
                    case .write(let entry):
                        switch entry.operation {
                        case .upsert, .delete: break
                        case .events, .deleteUser:
                            throw SteerError.invalid("stream message: an event or delete_user line in a batch message")
                        }
                    case .collectionChange(let change):
                        throw SteerError.invalid("stream message: a '\(change.name)' line in a batch message")
                    }
                }
                return .success(message)
            } catch {
                return .failure(error)
            }
        }
    }

    /// The byte ranges of the parts' contents (after each part's byte count).
    ///
    /// - Throws: `.invalidRequest` for a wrong magic or version, no parts, a part running past the end or
    ///   bytes after the last part; `.tooLarge` for a part over `maxPartBytes`.
    static func partRanges(_ payload: [UInt8], maxPartBytes: Int) throws(SteerError) -> [Range<Int>] {
        guard isBinary(payload), payload.count >= headerBytes else { throw SteerError.invalid("stream message: not a binary message") }
        guard payload[4] == version else {
            throw SteerError.invalid("stream message: binary format version \(payload[4]) is not known (this server reads version \(version))")
        }
        let count = Int(read32(payload, at: 5))
        guard count >= 1 else { throw SteerError.invalid("stream message: a binary message of no parts") }
        // Each part takes at least its 4-byte count: more parts than that cannot fit (checked before reserving).
        guard count <= (payload.count - headerBytes) / 4 else {
            throw SteerError.invalid("stream message: \(count) parts do not fit in \(payload.count) bytes")
        }
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(count)
        var offset = headerBytes
        for index in 0..<count {
            guard payload.count - offset >= 4 else { throw SteerError.invalid("stream message: part \(index) is cut off") }
            let length = Int(read32(payload, at: offset))
            offset += 4
            guard length <= payload.count - offset else { throw SteerError.invalid("stream message: part \(index) runs past the end") }
            guard length <= maxPartBytes else {
                throw SteerError(.tooLarge, "stream message: part \(index) of \(length) bytes, limit is \(maxPartBytes)")
            }
            ranges.append(offset..<(offset + length))
            offset += length
        }
        guard offset == payload.count else { throw SteerError.invalid("stream message: \(payload.count - offset) bytes after the last part") }
        return ranges
    }

    /// Decodes one part's content.
    private static func decodePart(_ payload: [UInt8], _ range: Range<Int>, decoder: RequestDecoder) throws(SteerError) -> WriteLogMessage.Message {
        try payload.withUnsafeBufferPointer { (all) throws(SteerError) -> WriteLogMessage.Message in
            var reader = Reader(bytes: UnsafeBufferPointer(rebasing: all[range]))
            guard let kind = Kind(rawValue: try reader.byte("kind")) else {
                throw SteerError.invalid("stream message: unknown part kind \(all[range.lowerBound])")
            }
            let nameLength = try reader.count16("collection")
            let collection = nameLength == 0 ? nil : try reader.string(nameLength, "collection")
            if let collection { try CollectionName.validate(collection, field: "collection") }
            let limits = decoder.limits
            switch kind {
            case .line:
                guard collection == nil else { throw SteerError.invalid("stream message: a line part carries a collection") }
                let line = Array(reader.rest())
                // Never a binary message inside a part: nesting would make decoding recurse once per level.
                guard !isBinary(line) else { throw SteerError.invalid("stream message: a line part holds a binary message") }
                return try WriteLogMessage.decodeMessage(line, decoder: decoder)
            case .delete:
                let count = try reader.count32("ids", minimumBytesEach: 2)
                guard count >= 1 else { throw SteerError.invalid("ids must not be empty") }
                guard count <= limits.maxBatch else { throw SteerError(.tooLarge, "ids has \(count) ids, limit is \(limits.maxBatch)") }
                var ids: [ItemID] = []
                ids.reserveCapacity(count)
                // Each id once, first occurrence first (as the JSON decoder reads a `delete`).
                var seen = Set<ItemID>(minimumCapacity: count)
                for index in 0..<count {
                    let id = try reader.id("ids[\(index)]")
                    if seen.insert(id).inserted { ids.append(id) }
                }
                try reader.requireEnd()
                return .write(WriteLogMessage.Entry(operation: .delete(ids), collection: collection))
            case .upsert:
                // An item takes at least: id (2), dimension (4), tag count (4), flags (1).
                let count = try reader.count32("items", minimumBytesEach: 11)
                guard count >= 1 else { throw SteerError.invalid("items must not be empty") }
                guard count <= limits.maxBatch else { throw SteerError(.tooLarge, "items has \(count) items, limit is \(limits.maxBatch)") }
                var items: [ItemInput] = []
                items.reserveCapacity(count)
                var seen: [ItemID: Int] = [:]
                seen.reserveCapacity(count)
                for index in 0..<count {
                    // Field names are built only for an error message (never per item).
                    var prefix: String { "items[\(index)]" }
                    let id = try reader.id("\(prefix).id")
                    if let first = seen.updateValue(index, forKey: id) {
                        throw SteerError.invalid("\(prefix).id \(id) duplicates items[\(first)].id")
                    }
                    let dimension = try reader.count32("\(prefix).vector", minimumBytesEach: 4)
                    let vector = try reader.floats(dimension)
                    try Vectors.requireFinite(vector, field: "\(prefix).vector")
                    let tagCount = try reader.count32("\(prefix).tags", minimumBytesEach: 4)
                    var tags: [String] = []
                    tags.reserveCapacity(tagCount)
                    for tagIndex in 0..<tagCount {
                        let length = try reader.count32("\(prefix).tags[\(tagIndex)]", minimumBytesEach: 1)
                        tags.append(try reader.string(length, "\(prefix).tags[\(tagIndex)]"))
                    }
                    let flags = try reader.byte("\(prefix) flags")
                    guard flags & ~(titleFlag | attributesFlag) == 0 else { throw SteerError.invalid("\(prefix): unknown flags \(flags)") }
                    var title: String?
                    if flags & titleFlag != 0 {
                        let length = try reader.count32("\(prefix).title", minimumBytesEach: 1)
                        title = try reader.string(length, "\(prefix).title")
                    }
                    var attributes: String?
                    if flags & attributesFlag != 0 {
                        let length = try reader.count32("\(prefix).attributes", minimumBytesEach: 1)
                        let text = try reader.take(length, "\(prefix).attributes")
                        let value = try JSONParser.parse(text)
                        guard case .object = value else { throw SteerError.invalid("\(prefix).attributes must be an object, got \(value.typeName)") }
                        var writer = JSONWriter()
                        writer.value(value)
                        attributes = String(decoding: writer.bytes, as: UTF8.self)
                    }
                    items.append(ItemInput(id: id, vector: vector, title: title, tags: tags, attributesJSON: attributes))
                }
                try reader.requireEnd()
                return .write(WriteLogMessage.Entry(operation: .upsert(items), collection: collection))
            }
        }
    }

    /// Reads a part's bytes front to back; every read checks the bytes left first.
    private struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var offset = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        var left: Int { bytes.count - offset }

        mutating func take(_ count: Int, _ field: @autoclosure () -> String) throws(SteerError) -> UnsafeBufferPointer<UInt8> {
            guard count >= 0, count <= left else { throw SteerError.invalid("stream message: \(field()) is cut off") }
            defer { offset += count }
            return UnsafeBufferPointer(rebasing: bytes[offset..<(offset + count)])
        }

        mutating func byte(_ field: @autoclosure () -> String) throws(SteerError) -> UInt8 {
            try take(1, field())[0]
        }

        mutating func count16(_ field: @autoclosure () -> String) throws(SteerError) -> Int {
            let raw = try take(2, field())
            return Int(raw[0]) | Int(raw[1]) << 8
        }

        /// A u32 count of things of at least `minimumBytesEach` bytes each, refused when they cannot fit in
        /// the bytes left (so nothing is reserved for a count the payload does not back).
        mutating func count32(_ field: @autoclosure () -> String, minimumBytesEach: Int) throws(SteerError) -> Int {
            let raw = try take(4, field())
            let count = Int(raw[0]) | Int(raw[1]) << 8 | Int(raw[2]) << 16 | Int(raw[3]) << 24
            guard count <= left / max(1, minimumBytesEach) else {
                throw SteerError.invalid("stream message: \(field()) claims \(count) entries, more than the \(left) bytes left can hold")
            }
            return count
        }

        mutating func string(_ count: Int, _ field: @autoclosure () -> String) throws(SteerError) -> String {
            let raw = try take(count, field())
            guard let text = String(validating: raw, as: UTF8.self) else { throw SteerError.invalid("\(field()) is not valid UTF-8") }
            return text
        }

        mutating func id(_ field: @autoclosure () -> String) throws(SteerError) -> ItemID {
            let kind = try byte(field())
            let id: ItemID
            switch kind {
            case intID:
                let raw = try take(8, field())
                var bits: UInt64 = 0
                for index in 0..<8 { bits |= UInt64(raw[index]) << (8 * UInt64(index)) }
                id = .int(Int64(bitPattern: bits))
            case stringID:
                let length = try count32(field(), minimumBytesEach: 1)
                id = .string(try string(length, field()))
            default:
                throw SteerError.invalid("stream message: \(field()) has unknown kind \(kind)")
            }
            do {
                try id.validate()
            } catch {
                throw SteerError(error.code, "\(field()): \(error.message)")
            }
            return id
        }

        mutating func floats(_ count: Int) throws(SteerError) -> [Float] {
            let raw = try take(count * 4, "vector")
            return [Float](unsafeUninitializedCapacity: count) { floats, initialized in
                UnsafeMutableRawBufferPointer(floats).copyMemory(from: UnsafeRawBufferPointer(raw))
                #if _endian(big)
                for index in 0..<count { floats[index] = Float(bitPattern: UInt32(littleEndian: floats[index].bitPattern)) }
                #endif
                initialized = count
            }
        }

        func rest() -> UnsafeBufferPointer<UInt8> {
            UnsafeBufferPointer(rebasing: bytes[offset...])
        }

        func requireEnd() throws(SteerError) {
            guard left == 0 else { throw SteerError.invalid("stream message: \(left) bytes after the part's content") }
        }
    }
}
