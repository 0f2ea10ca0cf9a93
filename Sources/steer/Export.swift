import ArgumentParser
import Foundation
import SteerData
import SteerCore
import SteerIndex
import SteerProtocol
import SteerStore

/// `steer export`: the store's catalog and the users' stored histories in the trainer's generic format
/// (Tools/train/README.md, "The generic data format"), read beside a running server.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the catalog and the stored user histories in the trainer's generic format.",
        discussion: """
            Opens the store read-only (it may run beside a live steer serve: the export is the store as of \
            the open) and writes OUT/items.jsonl ({"id","title","tags"} per live item), \
            OUT/interactions.jsonl ({"user","item","timestamp"} per stored event, users in key order, each \
            oldest first, timestamps in milliseconds) and last OUT/export.json (counts, store id and \
            sequence, the positions), with OUT/positions.jsonl (where each user's history stood). With \
            --since OLD (an earlier export of this store) interactions.jsonl holds only the events stored \
            after OLD and OUT/removed_users.jsonl the users whose earlier events are gone (deleted or \
            restarted histories). Events of items not in the catalog are left out and counted. Each file \
            is written atomically (docs/operations.md, "The retraining loop").
            """
    )

    @Option(name: .long, help: "The Steer data directory (its store is DIR/store). A bare store directory also works.")
    var data: String

    @Option(name: .long, help: "Directory to write into (created when missing).")
    var out: String

    @Option(name: .long, help: "An earlier export of this store: write only the events stored after it (an increment).")
    var since: String?

    func run() throws {
        do {
            let report = try Self.export(storePath: DataDirectory.storePath(data), out: out, since: since)
            print("exported \(report.items) items and \(report.interactions) interactions of \(report.users) users to \(out)"
                + (since != nil ? " (an increment since \(since ?? ""); \(report.removedUsers) users removed)" : "")
                + (report.skippedUnknownItems > 0 ? " (\(report.skippedUnknownItems) events of items not in the catalog left out)" : ""))
        } catch {
            FileHandle.standardError.write(Data("steer export: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    struct Report {
        var items = 0
        var interactions = 0
        var users = 0
        var skippedUnknownItems = 0
        var removedUsers = 0
        /// Events the store no longer had (the per-user cap dropped them) since the previous export
        /// (`--since`) or since the history started.
        var capped: UInt64 = 0
    }

    /// Writes the export files; see the command's discussion.
    ///
    /// - Throws: `.invalidRequest` when an integer id and a string id of the same text both exist (the
    ///   trainer matches ids as text), or `since` is an export of another store or `out` itself;
    ///   `.corrupt` for a damaged or edited `since` (`ExportPositions.read`); store and file errors.
    static func export(storePath: String, out: String, since sinceDirectory: String? = nil) throws(SteerError) -> Report {
        let store = try ItemStore(options: .init(path: storePath, readOnly: true))
        defer { store.close() }
        var since: ExportPositions.Since?
        if let sinceDirectory {
            let resolved = { (path: String) in URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path }
            guard resolved(sinceDirectory) != resolved(out) else {
                throw SteerError.invalid("--since and --out are the same directory: write the increment elsewhere")
            }
            since = try ExportPositions.read(directory: sinceDirectory, store: store)
        }
        // Where each history stands now, and where the increment starts for it (0: all its events).
        var positions = JSONWriter(capacity: 1 << 16)
        var current: [UserID: HistoryPosition] = [:]
        var positionCount = 0
        try store.histories.forEachPosition { (user, position) throws(SteerError) -> Bool in
            if let old = since?.positions[user],
               old.created > position.created || (old.created == position.created && old.nextArrival > position.nextArrival) {
                throw SteerError(.corrupt, "--since: positions.jsonl puts user \(user) at (\(old.created), \(old.nextArrival)), past the store's (\(position.created), \(position.nextArrival))")
            }
            try ExportPositions.write(user, position, into: &positions)
            current[user] = position
            positionCount += 1
            return true
        }
        func start(_ user: UserID, _ position: HistoryPosition) -> UInt64 {
            guard let old = since?.positions[user], old.created == position.created else { return 0 }
            return old.nextArrival
        }
        do {
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        } catch {
            throw SteerError(.io, "cannot create '\(out)': \(error.localizedDescription)")
        }
        var report = Report()
        var catalog = Set<ItemID>()
        var asText: [String: ItemID] = [:]
        var items = JSONWriter(capacity: 1 << 16)
        try store.forEachRecord { (record) throws(SteerError) -> Bool in
            let text: String
            switch record.id {
            case .int(let value): text = String(value)
            case .string(let value): text = value
            }
            if let other = asText.updateValue(record.id, forKey: text) {
                throw SteerError.invalid("items \(other) and \(record.id) have the same text id; the trainer matches ids as text")
            }
            catalog.insert(record.id)
            items.raw("{\"id\":")
            items.itemID(record.id)
            if let title = record.title {
                items.raw(",\"title\":")
                items.string(title)
            }
            items.raw(",\"tags\":")
            items.strings(record.tags)
            items.raw("}\n")
            report.items += 1
            return true
        }
        var interactions = JSONWriter(capacity: 1 << 16)
        var lastUser: UserID?
        var lastCounted: UserID?
        var lastStart: UInt64 = 0
        var seen: [UserID: UInt64] = [:]
        try store.histories.forEachEvent { (user, event) throws(SteerError) -> Bool in
            if user != lastUser {
                // A history's events come together, after its position was read above (one read-only view).
                guard let position = current[user] else { throw SteerError(.corrupt, "user \(user) has events but no counters") }
                lastStart = start(user, position)
                lastUser = user
            }
            guard event.arrival >= lastStart else { return true }  // exported before (--since)
            seen[user, default: 0] += 1
            guard catalog.contains(event.item) else {
                report.skippedUnknownItems += 1
                return true
            }
            if user != lastCounted {
                report.users += 1
                lastCounted = user
            }
            interactions.raw("{\"user\":")
            interactions.itemID(user)
            interactions.raw(",\"item\":")
            interactions.itemID(event.item)
            interactions.raw(",\"timestamp\":")
            interactions.int(event.timestampMillis)
            interactions.raw("}\n")
            report.interactions += 1
            return true
        }
        for (user, position) in current {
            report.capped += position.nextArrival &- start(user, position) &- (seen[user] ?? 0)
        }
        var removed = JSONWriter(capacity: 1 << 10)
        for (user, old) in since?.positions ?? [:] where current[user]?.created != old.created {
            removed.raw("{\"user\":")
            removed.itemID(user)
            removed.raw("}\n")
            report.removedUsers += 1
        }
        try AtomicFile.write(items.bytes, to: out + "/items.jsonl")
        try AtomicFile.write(interactions.bytes, to: out + "/interactions.jsonl")
        try AtomicFile.write(positions.bytes, to: out + "/positions.jsonl")
        if since != nil {
            try AtomicFile.write(removed.bytes, to: out + "/removed_users.jsonl")
        } else if FileManager.default.fileExists(atPath: out + "/removed_users.jsonl") {
            // A whole export into a directory that held an increment: no stale removal list beside it.
            do {
                try FileManager.default.removeItem(atPath: out + "/removed_users.jsonl")
            } catch {
                throw SteerError(.io, "cannot remove '\(out)/removed_users.jsonl': \(error.localizedDescription)")
            }
        }
        var summary = JSONWriter(capacity: 256)
        summary.raw("{\"format\":1,\"kind\":")
        summary.string(since == nil ? "whole" : "increment")
        summary.raw(",\"items\":")
        summary.int(report.items)
        summary.raw(",\"interactions\":")
        summary.int(report.interactions)
        summary.raw(",\"users\":")
        summary.int(report.users)
        summary.raw(",\"skipped_unknown_items\":")
        summary.int(report.skippedUnknownItems)
        summary.raw(",\"store_id\":")
        if let id = store.storeID { summary.string(id) } else { summary.raw("null") }
        summary.raw(",\"store_sequence\":")
        summary.int(Int64(clamping: store.latestSequence))
        summary.raw(",\"capped\":")
        summary.int(Int64(clamping: report.capped))
        summary.raw(",\"positions\":{\"users\":")
        summary.int(positionCount)
        summary.raw(",\"checksum\":")
        summary.string(ShardChecksum.format(FNV1a64.hash(positions.bytes)))
        summary.raw("}")
        if let since {
            summary.raw(",\"since\":{\"store_sequence\":")
            summary.int(since.storeSequence)
            summary.raw(",\"checksum\":")
            summary.string(since.checksum)
            summary.raw("},\"removed_users\":")
            summary.int(report.removedUsers)
        }
        summary.raw(",\"created_at\":")
        summary.string(GenerationManifest.timestamp())
        summary.raw("}\n")
        try AtomicFile.write(summary.bytes, to: out + "/export.json")
        return report
    }
}
