import ArgumentParser
import Foundation
import SteerBuilder
import SteerCore
import SteerIndex

@main
struct SteerIndexTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "steer-index",
        abstract: "Build, reshard, verify and inspect Steer index generations (docs/index-builder.md).",
        subcommands: [Inspect.self]
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
