import SteerCore

/// The payload indexes (`PayloadKey`) held in memory as one column per declared attribute, so a filter
/// over declared attributes resolves to a `LabelBitset` without reading RocksDB (docs/index.md,
/// "Filtered search").
///
/// ## Layout
/// Per declared attribute, `first[label]` is one value of the item with that internal id (0: none) and
/// `more[label]` its other values (array attributes). A numeric value is the 8-byte order-preserving
/// float64 of its key read as a big-endian `UInt64` (never 0 for a number, so 0 can mean "none", and
/// integer order is numeric order); a keyword value is its number in `keywords` (1, 2, …: one per
/// distinct encoded value ever seen, kept until the store closes). `first` is as long as the highest
/// internal id that has a value, plus one. Memory: 8 bytes per internal id per declared attribute, plus
/// about 60 bytes per multi-valued item and per distinct keyword value (docs/index.md, "Sizing").
///
/// ## Invariant
/// After every write returns, the columns hold exactly the payload keys of the `postings` family: a
/// label has value v in column c if and only if the key (c, v, label) is stored. The store builds them
/// with one scan of the payload keys when it opens, and replays each written `WriteBatch`'s payload key
/// puts and deletes, in batch order, after RocksDB accepted the batch (`apply`).
///
/// ## Threading
/// `apply` and `declare` run under `ItemStore`'s write lock (one writer), and take `lock` exclusively;
/// `bits` takes it shared, so resolutions run concurrently with each other and wait only for the replay
/// of a batch. A resolution between RocksDB accepting a batch and its replay sees the state before that
/// batch (as a RocksDB read started a moment earlier would). `@unchecked Sendable`: every access to
/// `columns` is under `lock`.
final class PayloadColumns: @unchecked Sendable {
    struct Column {
        var kind: PayloadKind
        var first: [UInt64] = []
        var more: [Int64: [UInt64]] = [:]
        var keywords: [[UInt8]: UInt64] = [:]

        init(kind: PayloadKind) { self.kind = kind }

        mutating func add(_ label: Int64, _ value: UInt64) {
            let slot = Int(label)
            if slot >= first.count { first.append(contentsOf: repeatElement(0, count: slot + 1 - first.count)) }
            if first[slot] == 0 {
                first[slot] = value
            } else if first[slot] != value, more[label]?.contains(value) != true {
                more[label, default: []].append(value)
            }
        }

        mutating func remove(_ label: Int64, _ value: UInt64) {
            let slot = Int(label)
            guard slot < first.count else { return }
            if first[slot] == value {
                if var others = more[label], let last = others.popLast() {
                    first[slot] = last
                    more[label] = others.isEmpty ? nil : others
                } else {
                    first[slot] = 0
                }
            } else if var others = more[label], let position = others.firstIndex(of: value) {
                others.remove(at: position)
                more[label] = others.isEmpty ? nil : others
            }
        }

        /// Labels with a value passing `test`.
        func select(_ test: (UInt64) -> Bool) -> LabelBitset {
            var result = first.withUnsafeBufferPointer { values in
                LabelBitset.build(labels: values.count) { position in
                    let value = values[position]
                    return value != 0 && test(value)
                }
            }
            for (label, values) in more where !result.contains(label) && values.contains(where: test) { result.insert(label) }
            return result
        }
    }

    private var columns: [String: Column] = [:]
    private let lock = ReadWriteLock()

    /// Most payload keys' internal ids a column holds: labels past this are not kept (and `bits`
    /// answers nil, so the filter takes the RocksDB path).
    static let maxLabels = LabelBitset.maxWords * 64

    /// Starts (or, with another kind, restarts) the empty column of a declared attribute.
    func declare(_ name: String, kind: PayloadKind) {
        lock.withWriteLock {
            if columns[name]?.kind != kind { columns[name] = Column(kind: kind) }
        }
    }

    /// Replays payload key puts and deletes (`WriteBatch.payloadChanges`), in order.
    /// - Returns: false when a key was unreadable or its id out of range (the caller then rebuilds).
    @discardableResult
    func apply(_ changes: [(put: Bool, key: [UInt8])]) -> Bool {
        if changes.isEmpty { return true }
        return lock.withWriteLock {
            var readable = true
            for change in changes {
                guard let (name, kind, value, label) = Self.decode(change.key) else {
                    readable = false
                    continue
                }
                if change.put {
                    if columns[name]?.kind != kind { columns[name] = Column(kind: kind) }
                    columns[name]!.add(label, columns[name]!.number(kind, value, adding: true))
                } else if columns[name]?.kind == kind {
                    let number = columns[name]!.number(kind, value, adding: false)
                    if number != 0 { columns[name]!.remove(label, number) }
                }
            }
            return readable
        }
    }

    /// The labels the column of `name` says meet `query` (the same answer as a range scan of its keys);
    /// nil when there is no column for `name` or its kind cannot answer `query`.
    ///
    /// - Complexity: O(internal ids + multi-valued items), under the shared lock.
    func bits(_ name: String, _ query: PayloadQuery) -> LabelBitset? {
        lock.withReadLock { () -> LabelBitset? in
            guard let column = columns[name] else { return nil }
            switch (column.kind, query) {
            case (.keyword, .any): return column.select { _ in true }
            case (.keyword, .values(let values)):
                let wanted = Set(values.compactMap { column.keywords[PayloadKey.keyword($0)] })
                if wanted.isEmpty { return LabelBitset() }
                if wanted.count == 1, let only = wanted.first { return column.select { $0 == only } }
                return column.select { wanted.contains($0) }
            case (.numeric, .range(let lower, let lowerInclusive, let upper, let upperInclusive)):
                let low = lower.map { Self.ordered($0) }, high = upper.map { Self.ordered($0) }
                switch (low, high) {
                case (nil, nil): return column.select { _ in true }
                case (let l?, nil): return lowerInclusive ? column.select { $0 >= l } : column.select { $0 > l }
                case (nil, let h?): return upperInclusive ? column.select { $0 <= h } : column.select { $0 < h }
                case (let l?, let h?):
                    switch (lowerInclusive, upperInclusive) {
                    case (true, true): return column.select { $0 >= l && $0 <= h }
                    case (true, false): return column.select { $0 >= l && $0 < h }
                    case (false, true): return column.select { $0 > l && $0 <= h }
                    case (false, false): return column.select { $0 > l && $0 < h }
                    }
                }
            case (.numeric, .values(let values)):
                var wanted = Set<UInt64>()
                for value in values {
                    guard let number = value.number else { return nil }
                    wanted.insert(Self.ordered(number))
                }
                return column.select { wanted.contains($0) }
            default: return nil
            }
        }
    }

    /// Bytes held (the columns' arrays and maps, estimated), for `stats` and the sizing table.
    var estimatedBytes: Int {
        lock.withReadLock {
            columns.values.reduce(0) { total, column in
                total + column.first.capacity * 8 + column.more.count * 64 + column.keywords.reduce(0) { $0 + 56 + $1.key.count }
            }
        }
    }

    func removeAll() { lock.withWriteLock { columns.removeAll() } }

    // MARK: Keys

    /// 0x00 · kind letter · u16 name length · name · value · internal id (8 bytes) → its parts.
    static func decode(_ key: [UInt8]) -> (String, PayloadKind, ArraySlice<UInt8>, Int64)? {
        guard key.count >= 4 + 8, key[0] == 0 else { return nil }
        let kind: PayloadKind
        switch key[1] {
        case UInt8(ascii: "k"): kind = .keyword
        case UInt8(ascii: "n"): kind = .numeric
        default: return nil
        }
        let length = Int(key[2]) << 8 | Int(key[3])
        guard key.count >= 4 + length + 8, let label = StoreKey.decodeInternalID(key.suffix(8)), label >= 0, label < maxLabels else { return nil }
        let name = String(decoding: key[4..<(4 + length)], as: UTF8.self)
        let value = key[(4 + length)..<(key.count - 8)]
        if kind == .numeric && value.count != 8 { return nil }
        return (name, kind, value, label)
    }

    /// The order-preserving bits of a number (as its key holds them).
    static func ordered(_ number: Double) -> UInt64 { bigEndian(PayloadKey.orderedDouble(number)[...]) }

    static func bigEndian(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }
}

private extension PayloadColumns.Column {
    /// A key's value as this column stores it; for a keyword, its number (a new one when adding, 0 when
    /// removing a value never seen).
    mutating func number(_ kind: PayloadKind, _ value: ArraySlice<UInt8>, adding: Bool) -> UInt64 {
        switch kind {
        case .numeric: return PayloadColumns.bigEndian(value)
        case .keyword:
            let bytes = Array(value)
            if let known = keywords[bytes] { return known }
            guard adding else { return 0 }
            let next = UInt64(keywords.count + 1)
            keywords[bytes] = next
            return next
        }
    }
}
