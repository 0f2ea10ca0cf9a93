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
    var data: String?

    @Option(name: .long, help: "Instead of --data: a running steer serve (HOST:PORT) to stream the version into with ingest_vectors (admin key: --token-file).")
    var server: String?

    @Option(name: .customLong("token-file"), help: "With --server: a file holding the server's admin key (trailing whitespace ignored).")
    var tokenFile: String?

    @Option(name: .long, help: "A named collection of --data (its directory DIR/collections/NAME; the server must be stopped; with --server: the collection of that server). Default: the data directory's own.")
    var collection: String?

    @Option(name: .long, help: "The checkpoint directory (items.jsonl, model.safetensors, config.json).")
    var checkpoint: String

    @Option(name: .long, help: "Embedding version name (default: ckpt-<checkpoint hash>).")
    var version: String?

    @Option(name: .long, help: "Items per store batch (default 2000), or per ingest_vectors request with --server (default 256; at most the server's max_batch, and a request line must stay under its max_line_bytes).")
    var batchSize: Int?

    @Flag(name: .long, help: "No progress bar.")
    var quiet = false

    func validate() throws {
        guard (batchSize ?? 1) >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard (data == nil) != (server == nil) else { throw ValidationError("give --data or --server (one of them)") }
        if tokenFile != nil && server == nil { throw ValidationError("--token-file goes with --server") }
    }

    func run() throws {
        if let server {
            do {
                var token: String?
                if let tokenFile {
                    guard let contents = FileManager.default.contents(atPath: tokenFile), contents.count <= 4096 else {
                        throw SteerError.invalid("--token-file '\(tokenFile)' cannot be read (or is over 4096 bytes)")
                    }
                    token = String(decoding: contents, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                }
                let quiet = self.quiet
                nonisolated(unsafe) var bar: ProgressLine?
                let report = try RemoteIngest.run(server: server, token: token, collection: collection, checkpoint: checkpoint, version: version,
                                                  batchSize: batchSize ?? 256) { done, total in
                    if bar == nil { bar = ProgressLine("ingest", total: total, enabled: !quiet) }
                    bar?.update(done)
                }
                print("version \(report.version) (dimension \(report.dimension)) from checkpoint \(report.checkpointHash): \(report.rows) rows streamed to \(server), complete; store sequence \(report.sequence)")
            } catch {
                FileHandle.standardError.write(Data("steer ingest: \(error)\n".utf8))
                throw ExitCode(1)
            }
            return
        }
        guard let data else { throw ValidationError("give --data or --server") }
        do {
            let data = try DataDirectory.collection(collection, in: data)
            let storePath = DataDirectory.storePath(data)
            try? FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            let store = try ItemStore(options: .init(path: storePath))
            defer { store.close() }
            let quiet = self.quiet
            nonisolated(unsafe) var bar: ProgressLine?
            let report = try CheckpointIngest.run(store: store, storePath: storePath, checkpoint: checkpoint, version: version,
                                                  batchSize: batchSize ?? 2000) { progress in
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
