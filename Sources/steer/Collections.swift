import ArgumentParser
import Foundation
import Logging
import SteerCore
import SteerData
import SteerEngine
import SteerProtocol
import SteerService

/// `steer collections`: the collection ops of the protocol on a data directory whose server is stopped
/// (docs/operations.md "Collections and aliases"). Each subcommand opens the data directory as
/// `steer serve` would (the default collection and every named one; RocksDB's lock refuses a directory a
/// server holds), runs the op through the server's own `RequestHandler`, prints the answer line, and
/// closes everything (saving the indexes).
struct Collections: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collections",
        abstract: "List, create, drop and alias collections of a data directory while its server is stopped.",
        subcommands: [List.self, Create.self, Drop.self, SetAlias.self, DeleteAlias.self]
    )

    struct Options: ParsableArguments {
        @Option(name: .long, help: "The data directory (steer serve --data).")
        var data: String
        @Option(name: .customLong("max-collections"), help: "As steer serve's --max-collections (default 64).")
        var maxCollections: Int = CollectionSet.defaultMaxCollections
        @Option(name: .customLong("checkpoint-root"), help: "Directory a create's --checkpoint must lie inside.")
        var checkpointRoot: String?
        @Option(help: "all-MiniLM-L6-v2 files for collections made from checkpoints (default models/all-MiniLM-L6-v2).")
        var minilm: String = CheckpointServing.defaultMiniLM

        /// Runs `operation` against the data directory and prints its answer; a refusal exits 1.
        func run(_ operation: Request.Operation) throws {
            var configuration = RetrievalEngine.Configuration(dataDirectory: data)
            configuration.checkpointRoot = checkpointRoot
            configuration.miniLMDirectory = minilm
            var failed = false
            do throws(SteerError) {
                guard DataDirectoryConfig.exists(dataDirectory: data) else {
                    throw SteerError.notFound("'\(data)' is not a Steer data directory (no steer.json)")
                }
                let engine = try RetrievalEngine(configuration: configuration)
                let logger = Logger(label: "steer.collections")
                let collections: CollectionSet
                do {
                    collections = try CollectionSet(defaultEngine: engine, maxCollections: maxCollections,
                                                    makeEngine: Serve.collectionFactory(base: configuration, minilm: minilm, logger: logger))
                } catch {
                    try? engine.close()
                    throw error
                }
                let handler = RequestHandler(engine: engine, collections: collections)
                let answer = handler.respond(to: RequestEncoder.encode(Request(operation: operation))) ?? []
                FileHandle.standardOutput.write(Data(answer))
                failed = !answer.starts(with: Array(#"{"ok":true"#.utf8))
                try collections.closeNamed()
                try engine.close()
            } catch {
                FileHandle.standardError.write(Data("steer collections: \(error)\n".utf8))
                throw ExitCode(1)
            }
            if failed { throw ExitCode(1) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every collection (the default first) and the aliases.")
        @OptionGroup var options: Options
        func run() throws { try options.run(.listCollections) }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a named collection (as the create_collection op).")
        @OptionGroup var options: Options
        @Option(help: "The collection's name (a-z, 0-9, _, -; 1 to 64 bytes).")
        var name: String
        @Option(help: "Floats per vector (optional with --checkpoint).")
        var dimension: Int?
        @Option(help: "ip, l2 or cosine (default ip).")
        var metric: String?
        @Option(name: .customLong("index-spec"), help: "Index spec (default Flat).")
        var indexSpec: String?
        @Option(name: .customLong("embedding-version"), help: "Embedding version (default v1).")
        var embeddingVersion: String?
        @Option(help: "A DPR checkpoint inside --checkpoint-root: its items are ingested and its model answers recommend.")
        var checkpoint: String?

        func run() throws {
            var parsedMetric: Metric?
            if let metric {
                do { parsedMetric = try Metric(parsing: metric) } catch { throw ValidationError(error.message) }
            }
            try options.run(.createCollection(CollectionSettings(name: name, dimension: dimension, metric: parsedMetric, indexSpec: indexSpec,
                                                                 embeddingVersion: embeddingVersion, checkpoint: checkpoint)))
        }
    }

    struct Drop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Drop a named collection (refused while an alias points at it).")
        @OptionGroup var options: Options
        @Option(help: "The collection's own name.")
        var name: String
        func run() throws { try options.run(.dropCollection(name)) }
    }

    struct SetAlias: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "alias", abstract: "Point an alias at a collection (creating or moving it).")
        @OptionGroup var options: Options
        @Option(help: "The alias.")
        var alias: String
        @Option(help: "The collection's own name, or default.")
        var collection: String
        func run() throws { try options.run(.alias(alias: alias, collection: collection)) }
    }

    struct DeleteAlias: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "delete-alias", abstract: "Remove an alias.")
        @OptionGroup var options: Options
        @Option(help: "The alias.")
        var alias: String
        func run() throws { try options.run(.deleteAlias(alias)) }
    }
}
