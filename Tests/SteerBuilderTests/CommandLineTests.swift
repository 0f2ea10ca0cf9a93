import Foundation
import SteerCore
import SteerIndex
import Testing

/// Runs the built `steer` and `steer-index` executables (built beside the test bundle).
@Suite struct CommandLineTests {
    private static func executable(_ name: String) -> URL? {
        var starts = [URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()]
        if let main = Bundle.main.executableURL { starts.append(main) }
        starts.append(URL(fileURLWithPath: CommandLine.arguments[0]))
        for start in starts {
            var directory = start.deletingLastPathComponent()
            for _ in 0..<5 {
                let candidate = directory.appendingPathComponent(name)
                if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
                directory = directory.deletingLastPathComponent()
            }
        }
        return nil
    }

    private struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    private func run(_ name: String, _ arguments: [String]) throws -> Run {
        let url: URL = try #require(Self.executable(name), "build the \(name) executable first")
        let process = Process()
        process.executableURL = url
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }

    @Test func ingestBuildReshardVerifyAndInspectFromTheCommandLine() throws {
        let fixture = try CheckpointFixture(count: 120, dimension: 8)
        let work = TemporaryDirectory("cli")
        defer { fixture.directory.remove(); work.remove() }
        let db = work.file("db")
        var result = try run("steer", ["ingest", "--data", db, "--checkpoint", fixture.path, "--version", "v1", "--quiet"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("120 rows, 120 written, 0 already present"))
        result = try run("steer", ["ingest", "--data", db, "--checkpoint", fixture.path, "--version", "v1", "--quiet"])
        #expect(result.status == 0 && result.stdout.contains("0 written, 120 already present"))

        result = try run("steer-index", ["build", "--data", db, "--version", "v1", "--spec", "Flat", "--shards", "2",
                                         "--out", work.file("g2"), "--generation-id", "gen-two", "--quiet"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("generation gen-two") && result.stdout.contains("peak_rss"))
        result = try run("steer-index", ["reshard", "--from", work.file("g2"), "--shards", "3", "--data", db, "--out", work.file("g3"), "--quiet"])
        #expect(result.status == 0, "\(result.stderr)")
        result = try run("steer-index", ["verify", work.file("g3"), "--data", db, "--sample", "20", "--min-recall", "0.99"])
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("missing 0, misplaced 0, extra 0") && result.stdout.contains("recall@10 1.0000 over 20 queries"))
        result = try run("steer-index", ["inspect", work.file("g3")])
        #expect(result.status == 0 && result.stdout.contains("reshard from gen-two") && result.stdout.contains("120 in 3 shards"))

        // Refusals: an existing output, a corrupt shard, bad rows.
        result = try run("steer-index", ["build", "--data", db, "--version", "v1", "--spec", "Flat", "--out", work.file("g2"), "--quiet"])
        #expect(result.status == 1 && result.stderr.contains("already exists"))
        let shard = work.file("g2/shard-0000.index")
        var bytes = try Data(contentsOf: URL(fileURLWithPath: shard))
        bytes[bytes.count - 1] ^= 1
        try bytes.write(to: URL(fileURLWithPath: shard))
        result = try run("steer-index", ["verify", work.file("g2")])
        #expect(result.status == 1 && result.stderr.contains("corrupt: shard file") && result.stderr.contains("shard-0000.index"))

        try "{\"id\": 1}\n{\"id\": 1}\n".write(toFile: fixture.directory.file("items.jsonl"), atomically: true, encoding: .utf8)
        result = try run("steer", ["ingest", "--data", db, "--checkpoint", fixture.path, "--version", "v2", "--quiet"])
        #expect(result.status == 1 && result.stderr.contains("line 2: id 1 duplicates line 1"), "\(result.stderr)")
    }

    @Test func aBuildKilledMidWayLeavesNoDirectoryThatLooksComplete() throws {
        let fixture = try CheckpointFixture(count: 6000, dimension: 16)
        let work = TemporaryDirectory("cli")
        defer { fixture.directory.remove(); work.remove() }
        let db = work.file("db")
        let ingest = try run("steer", ["ingest", "--data", db, "--checkpoint", fixture.path, "--version", "v1", "--quiet"])
        #expect(ingest.status == 0, "\(ingest.stderr)")
        let url: URL = try #require(Self.executable("steer-index"))
        var killedBeforeTheEnd = 0
        for (round, delay) in [0.05, 0.15, 0.3, 0.6].enumerated() {
            let out = work.file("g\(round)")
            let process = Process()
            process.executableURL = url
            process.arguments = ["build", "--data", db, "--version", "v1", "--spec", "HNSW16", "--shards", "3", "--out", out, "--quiet"]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            Thread.sleep(forTimeInterval: delay)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            if FileManager.default.fileExists(atPath: out) {
                // Finished before the kill: then it must be whole.
                #expect(throws: Never.self) { try IndexGeneration.load(directory: out) }
            } else {
                killedBeforeTheEnd += 1
            }
        }
        #expect(killedBeforeTheEnd > 0, "every build finished before it was killed; the test proved nothing")
        // Whatever the kills left: every directory with a generation's name loads; the rest are `.partial-*`.
        for name in try FileManager.default.contentsOfDirectory(atPath: work.path) where name.hasPrefix("g") {
            if name.contains(GenerationManifest.partialSuffix) { continue }
            #expect(throws: Never.self) { try IndexGeneration.load(directory: work.file(name)) }
        }
        if let newest = GenerationManifest.newest(in: work.path) {
            #expect(!newest.contains(GenerationManifest.partialSuffix))
        }
    }
}
