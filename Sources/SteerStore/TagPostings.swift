import SteerCore

/// The tag postings (`postings` keys `tag · 0x00 · internal id`, see `ItemStore`) and the live internal
/// ids (`items` keys) held in memory, so that tag leaves, `tags_any`, `tags_none`, `tag_groups` and the
/// complement of an exclusion resolve to a `LabelBitset` without reading RocksDB (docs/index.md,
/// "Filtered search").
///
/// ## Layout
/// Per tag that at least one live item carries, keyed by its UTF-8 bytes (the bytes of its RocksDB keys,
/// so two tags that differ only in Unicode normalisation stay apart, as in RocksDB), one `Posting`:
/// - `sparse`: its internal ids ascending as `[UInt32]`, 4 bytes per posting (up to 8 with the array's
///   spare capacity);
/// - `dense`: a `LabelBitset` as long as its highest internal id needs, 1 bit per internal id below it.
///
/// A sparse tag turns dense when its array outgrows the bitset (postings > 2 × the bitset's words); a
/// dense tag turns sparse again when its postings fall below the bitset's words (the array would be under
/// half the bitset's size). Either way a tag holds at most 8 bytes per posting, plus `bytesPerTag` and
/// its UTF-8 bytes. A tag whose last posting is removed is dropped, so memory follows the live postings,
/// not the history of writes. `live` holds 1 bit per internal id below the highest live one.
///
/// ## Bounds
/// An item carries at most `ItemStore.Options.maxTags` tags of at most `maxTagBytes` bytes, and every
/// posting held here is a key of about the same size stored in RocksDB (plus the tag's count key), so
/// memory stays linear in the bytes of the live postings, whatever the number of distinct tags: a client
/// writing a million distinct single-item tags costs about `bytesPerTag` + tag bytes + 4 each here,
/// about three times the keys those writes stored (the posting and the tag's count key). Replaying a batch sorts its changes (O(c log c) for c changes) and then
/// costs O(1) per change of a dense tag, O(1) per posting appended to a sparse tag (new items get the
/// highest internal ids), and one merge of the array, O(its postings), for a sparse tag whose changes fall
/// inside it (a sparse tag holds fewer than internal ids ÷ 32 postings).
///
/// ## Invariant
/// After every write returns, `postings` holds exactly the tag posting keys of the `postings` family
/// and `live` exactly the keys of the `items` family. The store fills them with one scan of each when it
/// opens (`load`) and replays each written `WriteBatch`'s tag posting and item key puts and deletes, in
/// batch order, after RocksDB accepted the batch (`apply`). A key this cannot hold (an internal id at or
/// past `LabelBitset.maxWords × 64`, when loading or replaying) makes it unusable: `bits` and `liveBits`
/// answer nil from then on and filters read RocksDB; a key that is not a tag posting or item key at all
/// fails the open as `.corrupt`.
///
/// ## Threading
/// `apply` runs under `ItemStore`'s write lock (one writer) and takes `lock` exclusively only to install
/// the grouped changes; `bits` and `liveBits` take it shared and return fresh copies (never a buffer
/// shared with the copy held here, so a later replay never copies a bitset on write). A resolution
/// between RocksDB accepting a batch and its replay sees the state before that batch
/// (`ItemStore.replayedSequence` tells callers that cache resolutions). `@unchecked Sendable`: every
/// access to the stored properties is under `lock`.
final class TagPostings: @unchecked Sendable {
    enum Posting {
        /// Internal ids, ascending, no repeats, never empty.
        case sparse([UInt32])
        /// The internal ids as bits, and how many (never 0).
        case dense(LabelBitset, count: Int)
    }

    /// Estimated bytes per tag beyond its postings and UTF-8 bytes: the dictionary slot with its slack
    /// and the headers of the key's and the posting's buffers.
    static let bytesPerTag = 112

    private var postings: [[UInt8]: Posting] = [:]
    private var live = LabelBitset()
    /// Sum of `bytes(of:)` over `postings`, kept as they change.
    private var postingBytes = 0
    private var usable = true
    private let lock = ReadWriteLock()

    /// Largest internal id held plus one (the range of `LabelBitset`).
    static let maxLabels = Int64(LabelBitset.maxWords) * 64

    // MARK: Replay

    /// Replays tag posting keys (`WriteBatch.tagChanges`) and item keys (`WriteBatch.itemChanges`), each
    /// in batch order (the last change of a key wins).
    /// - Returns: false when a key was unreadable or its internal id out of range (this is then unusable).
    @discardableResult
    func apply(tags tagChanges: [(put: Bool, key: [UInt8])], items itemChanges: [(put: Bool, key: [UInt8])]) -> Bool {
        if tagChanges.isEmpty && itemChanges.isEmpty { return true }
        var readable = true
        // Group outside the lock: per tag (a slice of its keys, no copy), the final state of each internal
        // id it changed.
        var grouped: [ArraySlice<UInt8>: [(label: UInt32, order: Int, put: Bool)]] = [:]
        for (order, change) in tagChanges.enumerated() {
            guard let (tag, label) = Self.decode(change.key), Self.holds(label) else {
                readable = false
                continue
            }
            grouped[tag, default: []].append((UInt32(label), order, change.put))
        }
        var itemLabels: [(label: Int64, put: Bool)] = []
        itemLabels.reserveCapacity(itemChanges.count)
        for change in itemChanges {
            guard let label = StoreKey.decodeInternalID(change.key), Self.holds(label) else {
                readable = false
                continue
            }
            itemLabels.append((label, change.put))
        }
        var plans: [(tag: [UInt8], adding: [UInt32], removing: [UInt32])] = []
        plans.reserveCapacity(grouped.count)
        for (tag, var changes) in grouped {
            changes.sort { ($0.label, $0.order) < ($1.label, $1.order) }
            var adding: [UInt32] = [], removing: [UInt32] = []
            for (position, change) in changes.enumerated() where position + 1 == changes.count || changes[position + 1].label != change.label {
                if change.put { adding.append(change.label) } else { removing.append(change.label) }
            }
            plans.append((Array(tag), adding, removing))
        }
        lock.withWriteLock {
            if !readable { usable = false }
            for (label, put) in itemLabels {
                if put { live.insert(label) } else { live.remove(label) }
            }
            for plan in plans { change(plan.tag, adding: plan.adding, removing: plan.removing) }
        }
        return readable
    }

    /// Adds and removes internal ids of one tag (both ascending, disjoint); the caller holds `lock`.
    private func change(_ tag: [UInt8], adding: [UInt32], removing: [UInt32]) {
        let before = postings.removeValue(forKey: tag)
        if let before { postingBytes -= Self.bytes(of: before, tag: tag) }
        var after: Posting?
        switch before {
        case nil:
            after = adding.isEmpty ? nil : .sparse(adding)
        case .sparse(var ids)?:
            if removing.isEmpty, let first = adding.first, first > ids.last! {
                ids.append(contentsOf: adding)
            } else {
                ids = Self.merge(ids, adding: adding, removing: removing)
            }
            after = ids.isEmpty ? nil : .sparse(ids)
        case .dense(var bits, var count)?:
            for label in removing where bits.contains(Int64(label)) {
                bits.remove(Int64(label))
                count -= 1
            }
            for label in adding where !bits.contains(Int64(label)) {
                bits.insert(Int64(label))
                count += 1
            }
            after = count == 0 ? nil : .dense(bits, count: count)
        }
        guard let after else { return }
        let settled = Self.settle(after)
        postings[tag] = settled
        postingBytes += Self.bytes(of: settled, tag: tag)
    }

    /// `posting` in the representation its size calls for (see "Layout").
    static func settle(_ posting: Posting) -> Posting {
        switch posting {
        case .sparse(let ids):
            let words = Int(ids.last!) / 64 + 1
            guard ids.count > 2 * words else { return posting }
            var bits = LabelBitset(capacity: Int(ids.last!) + 1)
            for id in ids { bits.insert(Int64(id)) }
            return .dense(bits, count: ids.count)
        case .dense(var bits, let count):
            bits.trim()
            guard count < bits.words.count else { return .dense(bits, count: count) }
            var ids: [UInt32] = []
            ids.reserveCapacity(count)
            bits.forEach { ids.append(UInt32($0)) }
            return .sparse(ids)
        }
    }

    /// (base − removing) ∪ adding, ascending; all three ascending, `adding` and `removing` disjoint.
    /// - Complexity: O(base + adding + removing).
    static func merge(_ base: [UInt32], adding: [UInt32], removing: [UInt32]) -> [UInt32] {
        var result: [UInt32] = []
        result.reserveCapacity(base.count + adding.count)
        var add = 0, remove = 0
        for value in base {
            while add < adding.count && adding[add] < value {
                result.append(adding[add])
                add += 1
            }
            if add < adding.count && adding[add] == value { add += 1 }
            while remove < removing.count && removing[remove] < value { remove += 1 }
            if remove < removing.count && removing[remove] == value { continue }
            result.append(value)
        }
        result.append(contentsOf: adding[add...])
        return result
    }

    static func bytes(of posting: Posting, tag: [UInt8]) -> Int {
        let held: Int
        switch posting {
        case .sparse(let ids): held = ids.capacity * 4
        case .dense(let bits, _): held = bits.words.capacity * 8
        }
        return held + bytesPerTag + tag.count
    }

    // MARK: Reads

    /// The live items carrying any of `tags` (the union of their postings), as a new bitset; nil when
    /// this is unusable (see "Invariant").
    ///
    /// - Complexity: O(postings of `tags` + internal ids ÷ 64 words), under the shared lock.
    func bits(anyOf tags: [String]) -> LabelBitset? {
        lock.withReadLock { () -> LabelBitset? in
            guard usable else { return nil }
            let found = tags.compactMap { postings[Array($0.utf8)] }
            var highest = -1
            for posting in found {
                switch posting {
                case .sparse(let ids): highest = max(highest, Int(ids.last!))
                case .dense(let bits, _): highest = max(highest, bits.words.count * 64 - 1)
                }
            }
            var result = LabelBitset(capacity: highest + 1)
            for posting in found {
                switch posting {
                case .sparse(let ids): for id in ids { result.insert(Int64(id)) }
                case .dense(let bits, _): result.formUnion(bits)
                }
            }
            return result
        }
    }

    /// The live internal ids, as a new bitset; nil when this is unusable.
    ///
    /// - Complexity: O(internal ids ÷ 64 words), under the shared lock.
    func liveBits() -> LabelBitset? {
        lock.withReadLock { () -> LabelBitset? in
            guard usable else { return nil }
            var copy = LabelBitset(capacity: live.words.count * 64)
            copy.formUnion(live)
            return copy
        }
    }

    /// Bytes held (postings, tags, the live set), estimated, for `stats` and the sizing table.
    var estimatedBytes: Int { lock.withReadLock { postingBytes + live.words.capacity * 8 } }

    /// Number of tags held (for tests).
    var tagCount: Int { lock.withReadLock { postings.count } }

    /// Drops everything and answers nil from then on (the store closed).
    func removeAll() {
        lock.withWriteLock {
            postings.removeAll()
            live = LabelBitset()
            postingBytes = 0
            usable = false
        }
    }

    // MARK: Keys

    /// Tag UTF-8 (not empty, no NUL) · 0x00 · internal id (8 bytes, not negative) → its parts.
    static func decode(_ key: [UInt8]) -> (ArraySlice<UInt8>, Int64)? {
        let tagLength = key.count - 9
        guard tagLength >= 1, key[tagLength] == 0, let label = StoreKey.decodeInternalID(key[(tagLength + 1)...]),
              label >= 0 else { return nil }
        let tag = key[..<tagLength]
        guard !tag.contains(0) else { return nil }
        return (tag, label)
    }

    /// Whether an internal id fits the bitsets (and a `UInt32`).
    static func holds(_ label: Int64) -> Bool { label >= 0 && label < maxLabels }

    // MARK: Loading

    /// Fills this from every tag posting key and every item key (one scan of each), before the store is
    /// shared; an internal id past the bitsets leaves it unusable (see "Invariant").
    /// - Throws: `.corrupt` for an unreadable key; RocksDB read errors.
    func load(_ database: RocksDatabase) throws(SteerError) {
        var readable = true
        var held = true
        var items = LabelBitset()
        var loaded: [[UInt8]: Posting] = [:]
        var bytes = 0
        var tag: [UInt8] = []
        var ids: [UInt32] = []
        func finish() {
            guard !ids.isEmpty else { return }
            ids.sort()
            let posting = Self.settle(.sparse(ids))
            loaded[tag] = posting
            bytes += Self.bytes(of: posting, tag: tag)
            ids = []
        }
        do {
            try database.scan(.postings, from: [1], to: nil) { key, _ in
                guard let (name, label) = Self.decode(Array(key)) else {
                    readable = false
                    return true
                }
                guard Self.holds(label) else {
                    held = false
                    return true
                }
                if !name.elementsEqual(tag) {
                    finish()
                    tag = Array(name)
                }
                ids.append(UInt32(label))
                return true
            }
            finish()
            try database.scan(.items, from: [], to: nil) { key, _ in
                guard let label = StoreKey.decodeInternalID(key), label >= 0 else {
                    readable = false
                    return true
                }
                if Self.holds(label) { items.insert(label) } else { held = false }
                return true
            }
        } catch {
            throw ItemStore.steerError(error)
        }
        if !readable { throw SteerError(.corrupt, "a tag posting or item key is unreadable") }
        lock.withWriteLock {
            postings = loaded
            postingBytes = bytes
            live = items
            usable = held
        }
    }
}
