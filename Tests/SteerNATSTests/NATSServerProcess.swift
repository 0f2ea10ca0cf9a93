import Foundation
import SteerNATS
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A real `nats-server` child process for one test: JetStream on, bound to 127.0.0.1 on a free port,
/// its store in a fresh temporary directory. `stop()` (or deinit) terminates it and removes the
/// directory; `kill()` is SIGKILL (a crash) and `restart()` starts it again on the same port and store.
final class NATSServerProcess: @unchecked Sendable {
    // @unchecked: `process` is mutable, but each server belongs to one test, which calls it from one task.
    let port: Int
    let directory: URL
    let name: String
    /// Extra config file text (cluster block, limits); nil runs with command-line flags only.
    private let config: String?
    private var process: Process?

    /// The server binary: Debian installs it as /usr/sbin/nats-server (`make setup-system`).
    static func binary() throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        for dir in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/bin", "/usr/local/bin"] {
            let candidate = dir + "/nats-server"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw NATSTestError("nats-server not found: run `make setup-system` (Debian package nats-server)")
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw NATSTestError("socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw NATSTestError("bind failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Starts one server (JetStream on) and waits until it accepts connections.
    /// - Parameter configText: extra lines for a config file (e.g. `ping_interval: "100ms"`).
    static func start(configText: String? = nil) throws -> NATSServerProcess {
        let server = try NATSServerProcess(port: freePort(), name: "single", config: configText)
        try server.launch()
        return server
    }

    init(port: Int, name: String, config: String?) throws {
        self.port = port
        self.name = name
        self.config = config
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("steer-nats-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    func launch() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.binary())
        let store = directory.appendingPathComponent("store").path
        if let config {
            let file = directory.appendingPathComponent("server.conf")
            let text = """
                listen: 127.0.0.1:\(port)
                jetstream { store_dir: "\(store)" }
                \(config)
                """
            try text.write(to: file, atomically: true, encoding: .utf8)
            process.arguments = ["-c", file.path]
        } else {
            process.arguments = ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", store]
        }
        let log = directory.appendingPathComponent("server.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        self.process = process
        try waitUntilListening()
    }

    private func waitUntilListening() throws {
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            guard process?.isRunning == true else { throw NATSTestError("nats-server \(name) exited: \(logTail())") }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            let ok = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
            }
            close(fd)
            if ok { return }
            usleep(50_000)
        }
        throw NATSTestError("nats-server \(name) did not listen on \(port): \(logTail())")
    }

    func logTail() -> String {
        let text = (try? String(contentsOf: directory.appendingPathComponent("server.log"), encoding: .utf8)) ?? ""
        return String(text.suffix(2000))
    }

    /// SIGKILL: the process dies without a clean shutdown (its store stays).
    func kill() {
        guard let process, process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    /// Starts the server again on the same port and store.
    func restart() throws {
        kill()
        try launch()
    }

    /// SIGTERM, wait, and remove the directory.
    func stop() {
        if let process, process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        process = nil
        try? FileManager.default.removeItem(at: directory)
    }

    deinit { stop() }

    func connect(options: NATSConnectOptions = .init()) async throws -> NATSConnection {
        try await NATSConnection.connect(host: "127.0.0.1", port: port, options: options)
    }
}

/// A 3-node JetStream cluster on loopback ports (`server_name` n1..n3, cluster `steer`, full routes).
final class NATSCluster: Sendable {
    let nodes: [NATSServerProcess]

    init() throws {
        let clientPorts = try (0..<3).map { _ in try NATSServerProcess.freePort() }
        let routePorts = try (0..<3).map { _ in try NATSServerProcess.freePort() }
        let routes = routePorts.map { "nats-route://127.0.0.1:\($0)" }.joined(separator: ", ")
        nodes = try (0..<3).map { i in
            try NATSServerProcess(
                port: clientPorts[i], name: "n\(i + 1)",
                config: """
                    server_name: n\(i + 1)
                    cluster {
                      name: steer
                      listen: 127.0.0.1:\(routePorts[i])
                      routes: [\(routes)]
                    }
                    """)
        }
        for node in nodes { try node.launch() }
    }

    func node(named name: String) -> NATSServerProcess? { nodes.first { $0.name == name } }

    func stop() { for node in nodes { node.stop() } }
}

struct NATSTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Retries `body` until it succeeds or `seconds` pass (a cluster electing leaders answers 503 meanwhile).
func eventually<T>(seconds: Double, _ body: () async throws -> T) async throws -> T {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        do {
            return try await body()
        } catch {
            if Date() > deadline { throw error }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}

extension String {
    var bytes: [UInt8] { Array(utf8) }
}

/// Runs `body`, which must throw a `NATSError`; returns it (nil, after recording a failure, when
/// `body` returned or threw something else).
func natsError<T>(_ what: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> T) async -> NATSError? {
    do {
        _ = try await body()
        Issue.record("\(what): no error", sourceLocation: sourceLocation)
        return nil
    } catch let error as NATSError {
        return error
    } catch {
        Issue.record("\(what): not a NATSError: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
