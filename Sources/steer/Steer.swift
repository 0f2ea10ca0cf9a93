import ArgumentParser

@main
struct Steer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "steer",
        abstract: "Steer: promptable retrieval over FAISS and RocksDB.",
        subcommands: [Serve.self]
    )
}
