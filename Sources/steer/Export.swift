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
            sequence). Events of items not in the catalog are left out and counted. Each file is written \
            atomically (docs/operations.md, "The retraining loop").
            """
    )

    @Option(name: .long, help: "The Steer data directory (its store is DIR/store). A bare store directory also works.")
    var data: String

    @Option(name: .long, help: "Directory to write into (created when missing).")
    var out: String

    func run() throws {
        do {
            let report = try Self.export(storePath: DataDirectory.storePath(data), out: out)
            print("exported \(report.items) items and \(report.interactions) interactions of \(report.users) users to \(out)"
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
    }

    /// Writes the three files; see the command's discussion.
    ///
    /// - Throws: `.invalidRequest` when an integer id and a string id of the same text both exist (the
    ///   trainer matches ids as text); store and file errors.
    static func export(storePath: String, out: String) throws(SteerError) -> Report {
        let store = try ItemStore(options: .init(path: storePath, readOnly: true))
        defer { store.close() }
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
        try store.histories.forEachEvent { (user, event) throws(SteerError) -> Bool in
            guard catalog.contains(event.item) else {
                report.skippedUnknownItems += 1
                return true
            }
            if user != lastUser {
                report.users += 1
                lastUser = user
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
        try AtomicFile.write(items.bytes, to: out + "/items.jsonl")
        try AtomicFile.write(interactions.bytes, to: out + "/interactions.jsonl")
        var summary = JSONWriter(capacity: 256)
        summary.raw("{\"format\":1,\"items\":")
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
        summary.raw(",\"created_at\":")
        summary.string(GenerationManifest.timestamp())
        summary.raw("}\n")
        try AtomicFile.write(summary.bytes, to: out + "/export.json")
        return report
    }
}
