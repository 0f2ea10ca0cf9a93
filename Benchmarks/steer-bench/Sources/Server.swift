import Foundation
import SteerClient
import SteerCore
import SteerProtocol

/// A `steer serve` child process started by the benchmark.
final class ServerProcess {
    let process = Process()
    let port: Int
    private let errors = Pipe()

    /// Starts `binary serve` on a free port and waits for its `listening on HOST:PORT` line.
    init(binary: String, arguments: [String], environment: [String: String]) throws(SteerError) {
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--port", "0", "--log-level", "warning"] + arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let output = Pipe()
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch { throw SteerError(.notFound, "cannot start \(binary): \(error)") }
        var text = ""
        while !text.contains("\n") {
            let data = output.fileHandleForReading.availableData
            if data.isEmpty {
                let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                throw SteerError(.unavailable, "steer serve exited before listening: \(message)")
            }
            text += String(decoding: data, as: UTF8.self)
        }
        let first = text.split(separator: "\n")[0]
        guard first.hasPrefix("listening on "), let port = first.split(separator: ":").last.flatMap({ Int($0) }) else {
            throw SteerError(.internal, "unexpected first line from steer serve: '\(first)'")
        }
        self.port = port
    }

    var pid: Int32 { process.processIdentifier }

    func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }

    deinit { stop() }
}

/// Runs a command to completion; throws with its output when it fails.
func runTool(_ binary: String, _ arguments: [String], environment: [String: String] = [:]) throws(SteerError) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (key, value) in environment { env[key] = value }
    process.environment = env
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    do { try process.run() } catch { throw SteerError(.notFound, "cannot start \(binary): \(error)") }
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw SteerError(.internal, "\(binary) \(arguments.joined(separator: " ")) failed (\(process.terminationStatus)): \(text)")
    }
}

/// One request on a fresh connection; the response object when ok.
func request(host: String, port: Int, _ line: [UInt8]) throws(SteerError) -> JSONObject {
    let connection = try SteerConnection(host: host, port: port)
    return try SteerClient.check(try connection.roundTrip(line))
}

func intField(_ object: JSONObject, _ key: String) -> Int? {
    if case .int(let value)? = object[key] { return Int(value) }
    return nil
}

func stringField(_ object: JSONObject, _ key: String) -> String? {
    if case .string(let value)? = object[key] { return value }
    return nil
}

/// Uploads every base row (ids as the data set names them) over `connections` connections.
func upload(_ data: DataSet, host: String, port: Int, token: String?, connections: Int = 2) throws(SteerError) {
    // Upsert lines stay well under the server's default 1 MiB line limit (~12 bytes per JSON float).
    let batch = max(1, min(1000, 500_000 / (data.dimension * 12)))
    let batches = (data.count + batch - 1) / batch
    let failure = Locked<SteerError?>(nil)
    let done = Locked<Int>(0)
    let started = nowNanos()
    runThreads(connections) { worker in
        do throws(SteerError) {
            let connection = try SteerConnection(host: host, port: port)
            var b = worker
            while b < batches {
                let rows = (b * batch)..<min(data.count, (b + 1) * batch)
                let items = rows.map { ClientItem(id: data.itemID(row: $0), vector: data.baseRow($0), title: "item \($0)") }
                _ = try SteerClient.check(try connection.roundTrip(RequestLine.upsert(items, token: token)))
                let count = done.withLock { $0 += rows.count; return $0 }
                if count % (batch * 100) < rows.count {
                    note("  uploaded \(count)/\(data.count) (\(String(format: "%.0f", Double(nowNanos() - started) / 1e9)) s)")
                }
                b += connections
            }
        } catch {
            failure.withLock { $0 = error }
        }
    }
    if let error = failure.get() { throw error }
}

func note(_ text: String) { FileHandle.standardError.write(Data((text + "\n").utf8)) }
