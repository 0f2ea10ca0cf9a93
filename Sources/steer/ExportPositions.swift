import Foundation
import SteerCore
import SteerIndex
import SteerProtocol
import SteerStore

/// The positions an export records (`OUT/positions.jsonl` and the `positions` entry of `OUT/export.json`)
/// and the reader that `steer export --since OLD` uses to write only what came after them.
///
/// ## Files
/// - `positions.jsonl`: one line `{"user":U,"created":C,"next":N}` per user with a stored history at the
///   export, in the store's key order: the history's `HistoryPosition` (which history, and the arrival
///   number its next event gets).
/// - `export.json` records `"positions":{"users":COUNT,"checksum":"fnv1a64:…"}` (FNV-1a 64 over the
///   bytes of `positions.jsonl`), `store_id` and `store_sequence`.
///
/// ## Checks (the old export directory is input like any other)
/// `export.json` at most `maxSummaryBytes`, a format-1 object naming this store's `store_id` and a
/// `store_sequence` not past the store's; `positions.jsonl` at most `maxPositionsBytes`, its checksum and
/// line count those `export.json` records, each line an object with a valid user id and two unsigned
/// integers, no user twice; a position of the history the store still has (same `created`) must not be
/// past the store's own (`next` ≤ the store's next arrival). Any failure refuses the whole export
/// (`.corrupt` for a damaged or edited file, `.invalidRequest` for another store's export) before
/// anything is written. FNV-1a detects accidental damage and careless edits, not a forger who
/// recomputes it; the consistency checks against the store catch positions that cannot be true.
enum ExportPositions {
    /// Largest `export.json` read, in bytes.
    static let maxSummaryBytes = 1 << 20
    /// Largest `positions.jsonl` read, in bytes (about 15 million users at 70 bytes a line).
    static let maxPositionsBytes = 1 << 30

    /// What `--since OLD` continues from.
    struct Since {
        var storeSequence: Int64
        var checksum: String
        var positions: [UserID: HistoryPosition]
    }

    /// One line of `positions.jsonl`.
    private struct Line: Decodable {
        var user: UserID
        var created: UInt64
        var next: UInt64

        enum CodingKeys: String, CodingKey { case user, created, next }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            if let value = try? container.decode(Int64.self, forKey: .user) {
                user = .int(value)
            } else {
                user = .string(try container.decode(String.self, forKey: .user))
            }
            created = try container.decode(UInt64.self, forKey: .created)
            next = try container.decode(UInt64.self, forKey: .next)
        }
    }

    /// Appends one `positions.jsonl` line.
    ///
    /// - Throws: `.corrupt` for a position beyond what JSON integers here carry (`Int64.max`).
    static func write(_ user: UserID, _ position: HistoryPosition, into writer: inout JSONWriter) throws(SteerError) {
        guard let created = Int64(exactly: position.created), let next = Int64(exactly: position.nextArrival) else {
            throw SteerError(.corrupt, "the history counters of user \(user) are out of range")
        }
        writer.raw("{\"user\":")
        writer.itemID(user)
        writer.raw(",\"created\":")
        writer.int(created)
        writer.raw(",\"next\":")
        writer.int(next)
        writer.raw("}\n")
    }

    /// Reads and checks an earlier export's positions (see "Checks").
    ///
    /// - Throws: `.corrupt` for an unreadable, damaged or impossible manifest; `.invalidRequest` for an
    ///   export of another store; `.notFound` when a file is missing.
    static func read(directory: String, store: ItemStore) throws(SteerError) -> Since {
        let summaryPath = directory + "/export.json"
        let summaryBytes = try readFile(summaryPath, limit: maxSummaryBytes)
        guard let summary = try? JSONSerialization.jsonObject(with: Data(summaryBytes)) as? [String: Any] else {
            throw SteerError(.corrupt, "\(summaryPath): not a JSON object")
        }
        guard (summary["format"] as? Int) == 1 else { throw SteerError(.corrupt, "\(summaryPath): not a format-1 export") }
        guard let positions = summary["positions"] as? [String: Any], let users = positions["users"] as? Int, users >= 0,
              let checksum = positions["checksum"] as? String, ShardChecksum.parse(checksum) != nil
        else {
            throw SteerError(.corrupt, "\(summaryPath): no positions {users, checksum} (an export written before incremental exports existed: export whole)")
        }
        guard let storeID = summary["store_id"] as? String, let current = store.storeID, storeID == current else {
            throw SteerError.invalid("\(summaryPath): an export of another store (store_id \(summary["store_id"] ?? "null"), this store \(store.storeID ?? "null"))")
        }
        guard let sequence = summary["store_sequence"] as? Int, sequence >= 0, UInt64(sequence) <= store.latestSequence else {
            throw SteerError(.corrupt, "\(summaryPath): store_sequence is missing or past this store's \(store.latestSequence)")
        }
        let positionsPath = directory + "/positions.jsonl"
        let bytes = try readFile(positionsPath, limit: maxPositionsBytes)
        let actual = ShardChecksum.format(FNV1a64.hash(bytes))
        guard actual == checksum else {
            throw SteerError(.corrupt, "\(positionsPath): checksum \(actual) differs from \(checksum) recorded in export.json (damaged or edited)")
        }
        let decoder = JSONDecoder()
        var result: [UserID: HistoryPosition] = [:]
        var lineNumber = 0
        for line in bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).dropLast() {
            lineNumber += 1
            let parsed: Line
            do {
                parsed = try decoder.decode(Line.self, from: Data(line))
            } catch {
                throw SteerError(.corrupt, "\(positionsPath):\(lineNumber): not {\"user\",\"created\",\"next\"}")
            }
            do {
                try UserHistoryStore.validate(user: parsed.user)
            } catch {
                throw SteerError(.corrupt, "\(positionsPath):\(lineNumber): \(error.message)")
            }
            guard result.updateValue(HistoryPosition(created: parsed.created, nextArrival: parsed.next), forKey: parsed.user) == nil else {
                throw SteerError(.corrupt, "\(positionsPath):\(lineNumber): user \(parsed.user) appears twice")
            }
        }
        guard bytes.isEmpty || bytes.last == UInt8(ascii: "\n"), lineNumber == users else {
            throw SteerError(.corrupt, "\(positionsPath): \(lineNumber) complete lines, export.json records \(users) users")
        }
        return Since(storeSequence: Int64(sequence), checksum: checksum, positions: result)
    }

    /// The file's bytes; refuses one larger than `limit`.
    private static func readFile(_ path: String, limit: Int) throws(SteerError) -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw SteerError.notFound("'\(path)' cannot be opened") }
        defer { try? handle.close() }
        let data: Data
        do {
            data = try handle.read(upToCount: limit + 1) ?? Data()
        } catch {
            throw SteerError(.io, "cannot read '\(path)': \(error.localizedDescription)")
        }
        guard data.count <= limit else { throw SteerError(.corrupt, "'\(path)' is larger than \(limit) bytes") }
        return [UInt8](data)
    }
}
