import Foundation
import SteerCore
import SteerData
import SteerIndex
import SteerModel
import SteerStore

/// Loads a checkpoint's item embeddings and metadata into the store as an embedding version
/// (`steer ingest`; docs/index-builder.md).
///
/// - **Validation first.** `items.jsonl` and `item_embeddings` are read and checked completely (row
///   count, ids, duplicates, titles, tags, finite values, dimension against `config.json`) before the
///   first write; any bad row rejects the whole file with every bad line number (up to
///   `maxReportedErrors`), and nothing is written.
/// - **Resumable and idempotent.** Items are written in batches; an item whose stored vector of the
///   version, title and tags already equal the checkpoint's is skipped, so re-running after a crash or a
///   finished run writes only what is missing. Attributes already stored are kept.
/// - **Completion marker.** The version is recorded `in_progress` in `steer-versions.json` before the
///   first write and `complete` after the last (`VersionRegistry`); the index builder refuses versions
///   that are not complete.
public enum CheckpointIngest {
    /// One validated line of `items.jsonl`.
    public struct Row: Sendable, Equatable {
        public var id: ItemID
        public var title: String?
        public var tags: [String]?
    }

    public struct Progress: Sendable {
        public var done: Int
        public var total: Int
        public var written: Int
        public var skipped: Int
    }

    public struct Report: Sendable {
        public var version: String
        public var checkpointHash: String
        public var rows: Int
        public var dimension: Int
        /// Items written in this run.
        public var written: Int
        /// Items already present with the same vector, title and tags.
        public var skipped: Int
        /// The store sequence after the last write.
        public var sequence: UInt64
        /// True when `onlyIfIncomplete` found the version already complete and read nothing.
        public var alreadyComplete: Bool = false
    }

    /// Most bad lines listed in one error.
    public static let maxReportedErrors = 20
    /// Longest accepted line of `items.jsonl`, in bytes.
    public static let maxLineBytes = 1 << 20

    /// Runs an ingest.
    ///
    /// - Parameters:
    ///   - store: the open store; `storePath` is its directory (for the version registry).
    ///   - checkpoint: the checkpoint directory (`items.jsonl`, `model.safetensors`, optional `config.json`).
    ///   - version: the version name; nil derives `ckpt-<hash>` from `CheckpointHash`.
    ///   - batchSize: items per store batch (1 to the store's `maxBatchItems`).
    ///   - onlyIfIncomplete: when the version is registered as completely ingested from this very
    ///     checkpoint, return at once without reading its items (`steer serve --checkpoint` on restart:
    ///     items deleted since through the protocol stay deleted, and a start costs no pass over the
    ///     catalog). Without it every item is checked and missing or changed ones are written again.
    ///   - progress: called after every batch.
    /// - Throws: `.invalidRequest` listing bad lines; `.corrupt`/`.notFound` for bad or missing files;
    ///   `.dimensionMismatch` when the version exists with another dimension or `config.json` disagrees;
    ///   `.invalidRequest` when the version was ingested from another checkpoint.
    public static func run(store: ItemStore, storePath: String, checkpoint: String, version: String? = nil,
                           batchSize: Int = 1000, onlyIfIncomplete: Bool = false,
                           progress: (Progress) -> Void = { _ in }) throws(SteerError) -> Report {
        let batchSize = max(1, min(batchSize, store.options.maxBatchItems))
        let hash = try CheckpointHash.compute(directory: checkpoint)
        let name = version ?? CheckpointHash.versionName(for: hash)
        if onlyIfIncomplete, let entry = try VersionRegistry.read(storePath: storePath).versions[name],
           entry.status == .complete, entry.checkpointHash == hash, store.version(named: name)?.dimension == entry.dimension {
            return Report(version: name, checkpointHash: hash, rows: entry.rows, dimension: entry.dimension, written: 0,
                          skipped: 0, sequence: entry.sequence ?? store.latestSequence, alreadyComplete: true)
        }
        let itemsPath = (checkpoint as NSString).appendingPathComponent("items.jsonl")
        let tensorPath = (checkpoint as NSString).appendingPathComponent("model.safetensors")
        let matrix = try readEmbeddings(path: tensorPath)
        try checkConfig(checkpoint: checkpoint, rows: matrix.rows, columns: matrix.columns)
        let rows = try readItems(path: itemsPath, options: store.options)
        guard rows.count == matrix.rows else {
            throw SteerError.invalid("'\(itemsPath)' has \(rows.count) rows but item_embeddings in '\(tensorPath)' has \(matrix.rows)")
        }
        try checkFinite(matrix.values, columns: matrix.columns, itemsPath: itemsPath)

        var registry = try VersionRegistry.read(storePath: storePath)
        if let entry = registry.versions[name], entry.checkpointHash != hash {
            throw SteerError.invalid("embedding version '\(name)' was ingested from checkpoint \(entry.checkpointHash), not \(hash); choose another --version")
        }
        try store.createVersion(name, dimension: matrix.columns)
        let started = registry.versions[name]?.startedAt ?? GenerationManifest.timestamp()
        registry.versions[name] = VersionRegistry.Entry(status: .inProgress, checkpointHash: hash, dimension: matrix.columns,
                                                        rows: rows.count, source: checkpoint, startedAt: started)
        try registry.write(storePath: storePath)

        var written = 0
        var skipped = 0
        var sequence = store.latestSequence
        let d = matrix.columns
        var start = 0
        while start < rows.count {
            let end = min(rows.count, start + batchSize)
            let batch = Array(rows[start..<end])
            let existing = try store.get(batch.map(\.id))
            let presentIDs = existing.compactMap { $0?.internalID }
            let presentVectors = try store.vectors(internalIDs: presentIDs, version: name)
            var vectorOf: [Int64: [Float]] = [:]
            for (id, vector) in zip(presentIDs, presentVectors) { if let vector { vectorOf[id] = vector } }
            var writes: [ItemStore.ItemWrite] = []
            for (offset, row) in batch.enumerated() {
                let r = start + offset
                let vector = Array(matrix.values[(r * d)..<((r + 1) * d)])
                let old = existing[offset]
                let title = row.title ?? old?.title
                let tags = row.tags.map(dedupe) ?? old?.tags ?? []
                if let old, let stored = vectorOf[old.internalID], stored.elementsEqual(vector, by: { $0.bitPattern == $1.bitPattern }),
                   old.title == title, old.tags == tags {
                    skipped += 1
                    continue
                }
                writes.append(ItemStore.ItemWrite(id: row.id, title: title, tags: tags, attributesJSON: old?.attributesJSON,
                                                  vectors: [name: vector]))
            }
            if !writes.isEmpty {
                do {
                    sequence = try store.upsert(writes).sequence
                } catch {
                    throw SteerError(error.code, "'\(itemsPath)' lines \(start + 1)-\(end): \(error.message)")
                }
                written += writes.count
            }
            start = end
            progress(Progress(done: end, total: rows.count, written: written, skipped: skipped))
        }
        if rows.isEmpty { progress(Progress(done: 0, total: 0, written: 0, skipped: 0)) }
        sequence = max(sequence, store.latestSequence)
        registry.versions[name]?.status = .complete
        registry.versions[name]?.completedAt = GenerationManifest.timestamp()
        registry.versions[name]?.sequence = sequence
        try registry.write(storePath: storePath)
        return Report(version: name, checkpointHash: hash, rows: rows.count, dimension: d, written: written,
                      skipped: skipped, sequence: sequence)
    }

    /// `item_embeddings` of a checkpoint's safetensors file: a rank-2 F32 tensor.
    static func readEmbeddings(path: String) throws(SteerError) -> (rows: Int, columns: Int, values: [Float]) {
        let file = try SafeTensorsFile(path: path)
        guard let entry = file.entries["item_embeddings"] else {
            throw SteerError(.corrupt, "\(path): tensor 'item_embeddings' is missing")
        }
        guard entry.shape.count == 2, entry.shape[1] > 0 else {
            throw SteerError(.corrupt, "\(path): tensor 'item_embeddings' has shape \(entry.shape), expected [items, dimension]")
        }
        return (entry.shape[0], entry.shape[1], try file.floats("item_embeddings"))
    }

    private static func dedupe(_ tags: [String]) -> [String] {
        var seen = Set<String>()
        return tags.filter { seen.insert($0).inserted }
    }

    /// Checks `config.json` when present: format `steer-dpr` and `index_dim`/`n_items` against the tensor.
    static func checkConfig(checkpoint: String, rows: Int, columns: Int) throws(SteerError) {
        let path = (checkpoint as NSString).appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: path) else { return }
        guard let data = FileManager.default.contents(atPath: path),
              let config = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw SteerError(.corrupt, "'\(path)' is not a JSON object")
        }
        if let format = config["format"] as? String, format != "steer-dpr" {
            throw SteerError.invalid("'\(path)': format is '\(format)', expected 'steer-dpr'")
        }
        if let dim = (config["index_dim"] as? NSNumber)?.intValue, dim != columns {
            throw SteerError(.dimensionMismatch, "'\(path)': index_dim is \(dim) but item_embeddings has \(columns) columns")
        }
        if let n = (config["n_items"] as? NSNumber)?.intValue, n != rows {
            throw SteerError.invalid("'\(path)': n_items is \(n) but item_embeddings has \(rows) rows")
        }
    }

    static func checkFinite(_ values: [Float], columns: Int, itemsPath: String) throws(SteerError) {
        var bad: [Int] = []
        var row = 0
        while row * columns < values.count {
            for j in (row * columns)..<((row + 1) * columns) where !values[j].isFinite {
                bad.append(row + 1)
                break
            }
            if bad.count >= maxReportedErrors { break }
            row += 1
        }
        if !bad.isEmpty {
            let lines = bad.map(String.init).joined(separator: ", ")
            throw SteerError.invalid("item_embeddings has non-finite values in the rows of '\(itemsPath)' lines \(lines); nothing was written")
        }
    }

    private struct LineItem: Decodable {
        var id: ItemID
        var title: String?
        var tags: [String]?

        enum CodingKeys: String, CodingKey { case id, title, tags }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            guard container.contains(.id) else { throw LineError("missing field 'id'") }
            if let value = try? container.decode(Int64.self, forKey: .id) {
                id = .int(value)
            } else if let value = try? container.decode(String.self, forKey: .id) {
                id = .string(value)
            } else {
                throw LineError("'id' must be a string or a 64-bit integer")
            }
            do {
                title = try container.decodeIfPresent(String.self, forKey: .title)
            } catch {
                throw LineError("'title' must be a string")
            }
            do {
                tags = try container.decodeIfPresent([String].self, forKey: .tags)
            } catch {
                throw LineError("'tags' must be a list of strings")
            }
        }
    }

    private struct LineError: Error {
        var message: String
        init(_ message: String) { self.message = message }
    }

    /// Reads and validates every line of `items.jsonl` against the store's limits.
    ///
    /// - Throws: `.invalidRequest` listing up to `maxReportedErrors` bad lines with their numbers
    ///   (1-based); `.notFound` when the file is missing.
    public static func readItems(path: String, options: ItemStore.Options) throws(SteerError) -> [Row] {
        guard let data = FileManager.default.contents(atPath: path) else {
            if !FileManager.default.fileExists(atPath: path) { throw SteerError.notFound("'\(path)' does not exist") }
            throw SteerError(.io, "cannot read '\(path)'")
        }
        let decoder = JSONDecoder()
        var rows: [Row] = []
        var errors: [String] = []
        var errorCount = 0
        var firstLine: [ItemID: Int] = [:]
        func fail(_ line: Int, _ message: String) {
            errorCount += 1
            if errors.count < maxReportedErrors { errors.append("line \(line): \(message)") }
        }
        let bytes = [UInt8](data)
        var lineStart = 0
        var lineNumber = 0
        while lineStart < bytes.count {
            var lineEnd = lineStart
            while lineEnd < bytes.count && bytes[lineEnd] != 0x0A { lineEnd += 1 }
            lineNumber += 1
            var contentEnd = lineEnd
            if contentEnd > lineStart && bytes[contentEnd - 1] == 0x0D { contentEnd -= 1 }
            let line = bytes[lineStart..<contentEnd]
            lineStart = lineEnd + 1
            if line.count > maxLineBytes { fail(lineNumber, "\(line.count) bytes, limit is \(maxLineBytes)"); continue }
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { fail(lineNumber, "empty line (every line must be an item, in embedding row order)"); continue }
            let item: LineItem
            do {
                item = try decoder.decode(LineItem.self, from: Data(line))
            } catch let error as LineError {
                fail(lineNumber, error.message)
                continue
            } catch let DecodingError.typeMismatch(_, context) where context.codingPath.isEmpty {
                fail(lineNumber, "not a JSON object")
                continue
            } catch {
                fail(lineNumber, "not valid JSON")
                continue
            }
            do {
                try item.id.validate()
            } catch {
                fail(lineNumber, error.message)
                continue
            }
            if let title = item.title, title.utf8.count > options.maxTitleBytes {
                fail(lineNumber, "title is \(title.utf8.count) bytes, limit is \(options.maxTitleBytes)")
                continue
            }
            if let tags = item.tags {
                if let bad = tags.firstIndex(where: { $0.isEmpty || $0.utf8.count > options.maxTagBytes || $0.utf8.contains(0) }) {
                    fail(lineNumber, "tags[\(bad)] is empty, longer than \(options.maxTagBytes) bytes or contains NUL")
                    continue
                }
                if dedupe(tags).count > options.maxTags {
                    fail(lineNumber, "\(tags.count) tags, limit is \(options.maxTags)")
                    continue
                }
            }
            if let first = firstLine[item.id] {
                fail(lineNumber, "id \(item.id) duplicates line \(first)")
                continue
            }
            firstLine[item.id] = lineNumber
            rows.append(Row(id: item.id, title: item.title, tags: item.tags))
        }
        if errorCount > 0 {
            let more = errorCount > errors.count ? "; and \(errorCount - errors.count) more" : ""
            throw SteerError.invalid("'\(path)': \(errorCount) bad row\(errorCount == 1 ? "" : "s"), nothing was written: " + errors.joined(separator: "; ") + more)
        }
        return rows
    }
}
