import ArgumentParser
import Foundation
import SteerBuilder
import SteerCore
import SteerData
import SteerStore

/// `steer ingest`: a checkpoint's item embeddings and metadata into the store as an embedding version.
struct Ingest: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load a checkpoint's items.jsonl and item_embeddings into the store as an embedding version.",
        discussion: """
            Validates the whole file first (bad rows are listed with their line numbers and nothing is \
            written), then writes in batches. Resumable and idempotent: items already stored with the same \
            vector, title and tags are skipped. The version is marked complete in steer-versions.json only \
            at the end (docs/index-builder.md).
            """
    )

    @Option(name: .long, help: "The Steer data directory (its store is DIR/store; created when missing). A bare store directory also works.")
    var data: String

    @Option(name: .long, help: "A named collection of --data (its directory DIR/collections/NAME; the server must be stopped). Default: the data directory's own.")
    var collection: String?

    @Option(name: .long, help: "The checkpoint directory (items.jsonl, model.safetensors, config.json).")
    var checkpoint: String

    @Option(name: .long, help: "Embedding version name (default: ckpt-<checkpoint hash>).")
    var version: String?

    @Option(name: .long, help: "Items per store batch.")
    var batchSize: Int = 2000

    @Flag(name: .long, help: "No progress bar.")
    var quiet = false

    func validate() throws {
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
    }

    func run() throws {
        do {
            let data = try DataDirectory.collection(collection, in: self.data)
            let storePath = DataDirectory.storePath(data)
            try? FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            let store = try ItemStore(options: .init(path: storePath))
            defer { store.close() }
            let quiet = self.quiet
            nonisolated(unsafe) var bar: ProgressLine?
            let report = try CheckpointIngest.run(store: store, storePath: storePath, checkpoint: checkpoint, version: version,
                                                  batchSize: batchSize) { progress in
                if bar == nil { bar = ProgressLine("ingest", total: progress.total, enabled: !quiet) }
                bar?.update(progress.done)
            }
            print("""
                version \(report.version) (dimension \(report.dimension)) from checkpoint \(report.checkpointHash): \
                \(report.rows) rows, \(report.written) written, \(report.skipped) already present; store sequence \(report.sequence)
                """)
        } catch {
            FileHandle.standardError.write(Data("steer ingest: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
