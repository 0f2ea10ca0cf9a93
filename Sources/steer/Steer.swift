import ArgumentParser

@main
struct Steer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "steer",
        abstract: "Steer: promptable retrieval over FAISS and RocksDB.",
        subcommands: [Serve.self, Route.self, Probe.self, Ingest.self, Export.self, Collections.self, SnapshotCommand.self, Demo.self, Doctor.self, EmbedText.self,
                      ParsePrompt.self, EncodeQuery.self]
    )
}
