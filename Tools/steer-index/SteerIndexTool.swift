import ArgumentParser
import Foundation
import SteerBuilder
import SteerCore
import SteerData
import SteerIndex
import SteerStore

@main
struct SteerIndexTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "steer-index",
        abstract: "Build, reshard, verify and inspect Steer index generations (docs/index-builder.md).",
        subcommands: [Build.self, Reshard.self, Split.self, Verify.self, Inspect.self]
    )
}

/// Prints a SteerError on standard error and exits 1.
func fail(_ command: String, _ error: SteerError) -> ExitCode {
    FileHandle.standardError.write(Data("steer-index \(command): \(error)\n".utf8))
    return ExitCode(1)
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A human-readable summary of a generation's manifest.")

    @Argument(help: "The generation directory.")
    var generation: String

    @Flag(name: .long, help: "Print the manifest JSON instead.")
    var json = false

    func run() throws {
        do {
            let manifest = try GenerationManifest.read(directory: generation)
            if json {
                print(String(decoding: try manifest.encoded(), as: UTF8.self))
            } else {
                print(GenerationSummary.text(manifest))
            }
        } catch {
            throw fail("inspect", error)
        }
    }
}

/// Opens the store of `--data` (a Steer data directory, whose store is DIR/store, or a bare store; it must
/// exist) read-only, so it works while `steer serve --data DIR` holds the store: the build sees the store
/// as of the open and its manifest records that sequence; the server's `swap` replays the rest.
func openStore(_ path: String) throws(SteerError) -> ItemStore {
    try ItemStore(options: .init(path: DataDirectory.storePath(path), syncWrites: false, createIfMissing: false, readOnly: true))
}

/// Writes a log line on standard error (standard output carries the result).
func note(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

func printResult(_ manifest: GenerationManifest, output: String) {
    let peak = manifest.build.peakRSSBytes.map { GenerationSummary.formatBytes($0) } ?? "-"
    let timings = manifest.build.timingsSeconds.sorted { $0.key < $1.key }.map { String(format: "%@=%.2fs", $0.key, $0.value) }
    print("generation \(manifest.generationID) at \(output): \(manifest.count) vectors, \(manifest.shards.count) shards, \(manifest.indexSpec) \(manifest.metric.rawValue), sequence \(manifest.storeSequence)")
    print("timings \(timings.joined(separator: " ")) peak_rss \(peak) (\(manifest.build.peakRSSBytes ?? 0) bytes)")
}

struct Build: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build a sharded generation from one embedding version of a store.",
        discussion: "Writes into OUT.partial-<pid> and renames it to OUT when complete. The store must not be open in another process."
    )

    @Option(name: .long, help: "The data directory (its store is DIR/store) or a bare store directory.")
    var data: String
    @Option(name: .long, help: "A named collection of --data (its directory DIR/collections/NAME); default: the data directory's own.")
    var collection: String?
    @Option(name: .long, help: "The embedding version to index.")
    var version: String
    @Option(name: .long, help: "Index factory string: Flat, HNSW32[,efC100], IVF4096,Flat, IVF256,SQ8, IVF256,PQ16.")
    var spec: String
    @Option(name: .long, help: "ip, l2 or cosine.")
    var metric: String = "ip"
    @Option(name: .long, help: "Number of shards.")
    var shards: Int = 1
    @Option(name: .long, help: "The generation directory to create (must not exist).")
    var out: String
    @Option(name: .long, help: "IVF: vectors sampled for training (default 40 per list, at most all).")
    var trainSample: Int?
    @Option(name: .long, help: "Seed of the training sample.")
    var seed: UInt64 = 42
    @Option(name: .long, help: "Shards built at the same time (default: the number of cores).")
    var jobs: Int?
    @Option(name: .long, help: "Checkpoint hash to record (default: from steer ingest's record of the version).")
    var checkpointHash: String?
    @Option(name: .long, help: "Generation id (default: time + random suffix).")
    var generationId: String?
    @Flag(name: .long, help: "Build even if the version's ingest is not marked complete.")
    var allowIncomplete = false
    @Flag(name: .long, help: "No progress bars.")
    var quiet = false

    func validate() throws {
        guard shards >= 1 else { throw ValidationError("--shards must be at least 1") }
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        if let trainSample, trainSample < 1 { throw ValidationError("--train-sample must be at least 1") }
    }

    func run() throws {
        do {
            let spec = try IndexSpec(parsing: self.spec)
            let metric = try Metric(parsing: self.metric)
            if let generationId { try GenerationManifest.validateGenerationID(generationId) }
            let data = try DataDirectory.collection(collection, in: self.data)
            let store = try openStore(data)
            defer { store.close() }
            let options = GenerationBuilder.Options(
                version: version, spec: spec, metric: metric, shardCount: shards, trainSample: trainSample, seed: seed,
                parallelShards: jobs, checkpointHash: checkpointHash, generationID: generationId,
                allowIncomplete: allowIncomplete, showProgress: !quiet)
            let manifest = try GenerationBuilder.build(store: store, storePath: DataDirectory.storePath(data), options: options, output: out, log: note)
            printResult(manifest, output: out)
        } catch {
            throw fail("build", error)
        }
    }
}

struct Reshard: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild a generation with another shard count, without retraining.",
        discussion: """
            Same version, spec and metric; IVF shards start from the parent's trained quantizer. Vectors are \
            read from the store at its current snapshot (the index API cannot read vectors out of a shard); \
            the new manifest records that sequence.
            """
    )

    @Option(name: .long, help: "The generation to reshard.")
    var from: String
    @Option(name: .long, help: "The new number of shards.")
    var shards: Int
    @Option(name: .long, help: "The generation directory to create.")
    var out: String
    @Option(name: .long, help: "The data directory (or bare store) the generation was built from.")
    var data: String
    @Option(name: .long, help: "Shards built at the same time (default: the number of cores).")
    var jobs: Int?
    @Option(name: .long, help: "Generation id (default: time + random suffix).")
    var generationId: String?
    @Flag(name: .long, help: "No progress bars.")
    var quiet = false

    func validate() throws {
        guard shards >= 1 else { throw ValidationError("--shards must be at least 1") }
    }

    func run() throws {
        do {
            if let generationId { try GenerationManifest.validateGenerationID(generationId) }
            let store = try openStore(data)
            defer { store.close() }
            let manifest = try GenerationBuilder.reshard(from: from, store: store, storePath: DataDirectory.storePath(data), shardCount: shards, output: out,
                                                         parallelShards: jobs, generationID: generationId, showProgress: !quiet, log: note)
            printResult(manifest, output: out)
        } catch {
            throw fail("reshard", error)
        }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a generation's files against its manifest and, with --data, its contents and recall against the store."
    )

    @Argument(help: "The generation directory.")
    var generation: String
    @Option(name: .long, help: "The data directory (or bare store): check placement, completeness and recall@k against exact search.")
    var data: String?
    @Option(name: .long, help: "A named collection of --data (its directory DIR/collections/NAME).")
    var collection: String?
    @Option(name: .long, help: "Query vectors sampled from the store.")
    var sample: Int = 200
    @Option(name: .long, help: "k of recall@k.")
    var k: Int = 10
    @Option(name: .long, help: "IVF lists probed.")
    var nprobe: Int?
    @Option(name: .long, help: "HNSW candidate list size.")
    var efSearch: Int?
    @Option(name: .long, help: "Fail when recall@k is below this.")
    var minRecall: Double?

    func validate() throws {
        guard sample >= 0 else { throw ValidationError("--sample must not be negative") }
        guard (1...VectorIndex.maxK).contains(k) else { throw ValidationError("--k must be 1 to \(VectorIndex.maxK)") }
    }

    func run() throws {
        do {
            let store = try data.map { (path) throws(SteerError) in try openStore(try DataDirectory.collection(collection, in: path)) }
            defer { store?.close() }
            let report = try GenerationVerifier.verify(directory: generation, store: store, sample: sample, k: k,
                                                       parameters: SearchParameters(nprobe: nprobe, efSearch: efSearch))
            print("generation \(report.generationID): \(report.shards) shards, \(report.count) vectors; manifest, files, checksums and counts OK")
            if let check = report.storeCheck {
                print("store sequence \(check.sequence) (replayed \(check.replayedAdded) added, \(check.replayedRemoved) removed since the build)")
                print("missing \(check.missing), misplaced \(check.misplaced), extra \(check.extra)")
                print(String(format: "recall@%d %.4f over %d queries", check.k, check.recall, check.queries))
                if check.missing + check.misplaced + check.extra > 0 {
                    throw fail("verify", SteerError(.corrupt, "the generation's contents differ from the store"))
                }
                if let minRecall, check.recall < minRecall {
                    throw fail("verify", SteerError(.corrupt, String(format: "recall@%d %.4f is below %.4f", check.k, check.recall, minRecall)))
                }
            }
        } catch let error as SteerError {
            throw fail("verify", error)
        }
    }
}

struct Split: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Copy the items one shard of an N-shard cluster owns into a new data directory (re-sharding, docs/scaling.md).",
        discussion: """
            Reads every --from store (read-only: they may be serving) and writes the items of --version whose \
            shard under --shards is --shard into --out's store. Run it once per new shard with every old \
            shard as a source, then start `steer serve --data OUT` and build its generation.
            """
    )

    @Option(name: .long, help: "A source data directory (or bare store); repeat for every old shard.")
    var from: [String] = []
    @Option(name: .long, help: "The embedding version to copy.")
    var version: String
    @Option(name: .long, help: "The new number of shards.")
    var shards: Int
    @Option(name: .long, help: "The new shard to fill (0-based).")
    var shard: Int
    @Option(name: .long, help: "The new shard's data directory (created when missing; its store is OUT/store).")
    var out: String

    func validate() throws {
        guard !from.isEmpty else { throw ValidationError("give at least one --from") }
        guard (1...Sharding.maxShardCount).contains(shards) else { throw ValidationError("--shards must be 1 to \(Sharding.maxShardCount)") }
        guard (0..<shards).contains(shard) else { throw ValidationError("--shard must be in 0..<\(shards)") }
    }

    func run() throws {
        do {
            let sources = try from.map { path throws(SteerError) in try openStore(path) }
            defer { for source in sources { source.close() } }
            do {
                try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            } catch {
                throw SteerError(.io, "cannot create '\(out)': \(error.localizedDescription)")
            }
            let target = try ItemStore(options: .init(path: DataDirectory.storePath(out), syncWrites: false))
            defer { target.close() }
            let report = try ShardSplit.run(sources: sources, version: version, sharding: try Sharding(shardCount: shards),
                                            shard: shard, target: target)
            print("split: shard \(shard) of \(shards): \(report.copied) of \(report.scanned) items copied into \(out)")
        } catch let error as SteerError {
            throw fail("split", error)
        }
    }
}
