import Foundation
import SteerClient
import SteerCore

/// The built `steer` binary: `STEER_BIN` when set, else `steer` beside the test bundle (the scratch
/// path's debug directory). Missing → the test fails; it never skips.
func steerBinary() throws -> String {
    if let path = ProcessInfo.processInfo.environment["STEER_BIN"], !path.isEmpty {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw SteerError(.notFound, "STEER_BIN='\(path)' is not an executable")
        }
        return path
    }
    var candidates: [URL] = []
    if let executable = Bundle.main.executableURL { candidates.append(executable.deletingLastPathComponent()) }
    candidates.append(URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent())
    candidates.append(Bundle.main.bundleURL.deletingLastPathComponent())
    for directory in candidates {
        var url = directory
        // Walk up out of `X.xctest/Contents/MacOS` style bundles.
        for _ in 0..<4 {
            let path = url.appendingPathComponent("steer").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
            url = url.deletingLastPathComponent()
        }
    }
    throw SteerError(.notFound, "the built steer binary was not found beside the test bundle (\(candidates.map(\.path))); build with --build-tests or set STEER_BIN")
}

/// A `steer serve` (or, with `route`, a `steer route`) child process on a free port.
final class ServerProcess {
    let process = Process()
    let directory: String
    let port: Int
    private let output = Pipe()
    private let errors = Pipe()

    /// Starts the server and waits for its `listening on HOST:PORT` line.
    ///
    /// - Parameter route: run `steer route` with `arguments` (no data directory) instead of `steer serve`.
    init(directory: String? = nil, arguments: [String] = [], environment: [String: String] = [:], route: Bool = false) throws {
        self.directory = directory ?? NSTemporaryDirectory() + "steer-e2e-" + UUID().uuidString
        process.executableURL = URL(fileURLWithPath: try steerBinary())
        process.arguments = route ? ["route", "--port", "0", "--log-level", "error"] + arguments
            : ["serve", "--port", "0", "--data", self.directory, "--log-level", "warning"] + arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        var collected = ""
        let deadline = Date().addingTimeInterval(30)
        let handle = output.fileHandleForReading
        while !collected.contains("\n") {
            let data = handle.availableData
            if data.isEmpty {
                let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                throw SteerError(.unavailable, "steer serve exited before listening: \(stderr)")
            }
            collected += String(decoding: data, as: UTF8.self)
            if Date() > deadline { throw SteerError(.unavailable, "steer serve did not start in 30 s") }
        }
        let line = collected.split(separator: "\n")[0]
        guard line.hasPrefix("listening on "), let port = line.split(separator: ":").last.flatMap({ Int($0) }) else {
            throw SteerError(.internal, "unexpected first line '\(line)'")
        }
        self.port = port
    }

    func connection() throws -> SteerConnection { try SteerConnection(host: "127.0.0.1", port: port) }

    /// Sends SIGTERM and waits; returns the exit status.
    @discardableResult
    func terminate() -> Int32 {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// SIGKILL (a crash: no draining) and wait.
    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    func removeData() { try? FileManager.default.removeItem(atPath: directory) }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}
