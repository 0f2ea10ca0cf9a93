import ArgumentParser

@main
struct Steer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "steer",
        abstract: "Steer: promptable retrieval over FAISS and RocksDB.",
        subcommands: [Demo.self, Doctor.self, Ingest.self, EmbedText.self, ParsePrompt.self, EncodeQuery.self]
    )
}
