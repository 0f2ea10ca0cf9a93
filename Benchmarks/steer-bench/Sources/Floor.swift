// `steer-bench floor`: the round trip of a bare TCP exchange with the byte sizes of a real search, between
// the same two cores a benchmark uses for the server and its client. No server code runs: a child process
// on the server core reads each request line and writes a prepared answer line of the same length as a
// real answer. Its p50 is what any server that answers over TCP on these cores pays on top of its own
// work, so it separates the server's overhead from the machine's (docs/benchmarks.md "Where the server's
// time goes"). Plain sockets rather than SwiftNIO on purpose: the floor must not include the costs it is
// meant to separate out.
import ArgumentParser
import Foundation
import Histogram
import SteerBenchKit
import SteerClient
import SteerCore

#if canImport(Glibc)
import Glibc
#endif

struct Floor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the bare TCP round trip of search-sized lines between a server core and a client core.")

    @Option(help: "The data set whose first query builds the request line (as steer-bench run sends it).") var data: String
    @Option(help: "Results per query (the request line's k).") var k = 10
    @Option(name: .customLong("ef-search"), help: "efSearch written into the request line.") var efSearch: Int?
    @Option(help: "HOST:PORT of a running Steer server: one real answer to the request sets the answer size.") var server: String?
    @Option(name: .customLong("answer-bytes"), help: "Answer line size without --server (newline included).") var answerBytes = 600
    @Option(name: .customLong("server-core"), help: "Core of the echoing child process.") var serverCore = 1
    @Option(name: .customLong("client-core"), help: "Core of this process while it measures.") var clientCore = 0
    @Option(name: .customLong("round-trips"), help: "Measured round trips (after 1,000 unmeasured ones).") var roundTrips = 20_000
    @Option(help: "Write the JSON report here.") var out: String?

    func validate() throws {
        guard k > 0, roundTrips > 0, answerBytes > 1, answerBytes <= 1 << 20 else {
            throw ValidationError("--k and --round-trips must be positive and --answer-bytes in 2...1048576")
        }
        guard (0..<1024).contains(serverCore), (0..<1024).contains(clientCore) else { throw ValidationError("cores must be in 0..<1024") }
    }

    func run() throws {
        let dataSet = try DataSet.load(data)
        // The line as the load generator's client writes it: one write with the newline appended.
        let request = RequestLine.search(dataSet.query(0), k: k, base64: false, nprobe: nil, efSearch: efSearch) + [UInt8(ascii: "\n")]
        var answerSize = answerBytes
        if let server {
            let answer = try FloorSocket.exchangeOnce(address: server, line: request)
            answerSize = answer.count
        }
        let loadStart = LoadAverage.read()
        let uptimeStart = Report.uptime()

        let child = Process()
        child.executableURL = URL(fileURLWithPath: "/usr/bin/taskset")
        child.arguments = ["-c", String(serverCore), CommandLine.arguments[0], "floor-echo", "--answer-bytes", String(answerSize)]
        let pipe = Pipe()
        child.standardOutput = pipe
        try child.run()
        defer { if child.isRunning { child.terminate() }; child.waitUntilExit() }
        let firstLine = FloorSocket.readLine(from: pipe.fileHandleForReading)
        guard firstLine.hasPrefix("port "), let port = Int(firstLine.dropFirst(5)) else {
            throw ValidationError("floor-echo did not report its port (\(firstLine))")
        }
        try Affinity.pinProcess(toCore: clientCore)

        let fd = try FloorSocket.connect(host: "127.0.0.1", port: port)
        defer { close(fd) }
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var buffer = [UInt8](repeating: 0, count: max(answerSize, 65_536))
        for trip in 0..<(1_000 + roundTrips) {
            let started = nowNanos()
            try FloorSocket.writeAll(fd, request)
            try FloorSocket.readLine(fd, into: &buffer)
            if trip >= 1_000 { histogram.record(nowNanos() - started) }
        }
        func micros(_ q: Double) -> Double { Double(histogram.valueAtPercentile(q)) / 1000 }
        let report: [String: Any] = [
            "tool": "steer-bench floor",
            "command": CommandLine.arguments.joined(separator: " "),
            "commit": Report.gitCommit(),
            "date": ISO8601DateFormatter().string(from: Date()),
            "server_core": serverCore, "client_core": clientCore,
            "request_bytes": request.count, "answer_bytes": answerSize,
            "answer_size_from": server == nil ? "--answer-bytes" : "a real answer of the server at \(server!)",
            "round_trips": roundTrips,
            "p50_us": micros(50), "p90_us": micros(90), "p99_us": micros(99), "p999_us": micros(99.9),
            "uptime_start": uptimeStart, "uptime_end": Report.uptime(),
            "load_average_start": loadStart, "load_average_end": LoadAverage.read(),
        ]
        let json = try JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys])
        print(String(format: "floor: %d-byte request, %d-byte answer, core %d → core %d: p50 %.1f µs p90 %.1f p99 %.1f",
                     request.count, answerSize, clientCore, serverCore, micros(50), micros(90), micros(99)))
        if let out { try json.write(to: URL(fileURLWithPath: out)) }
    }
}

/// The child of `floor`: accepts one connection on a loopback port it prints, and answers every line with
/// `--answer-bytes` bytes (a newline last) until the client closes.
struct FloorEcho: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "floor-echo", abstract: "The echoing side of `floor` (internal).",
                                                    shouldDisplay: false)
    @Option(name: .customLong("answer-bytes")) var answerBytes: Int

    func run() throws {
        guard answerBytes > 1, answerBytes <= 1 << 20 else { throw ValidationError("--answer-bytes must be in 2...1048576") }
        let listener = try FloorSocket.listen()
        FileHandle.standardOutput.write(Data("port \(listener.port)\n".utf8))
        let fd = accept(listener.fd, nil, nil)
        guard fd >= 0 else { throw ValidationError("accept failed (errno \(errno))") }
        FloorSocket.noDelay(fd)
        var answer = [UInt8](repeating: UInt8(ascii: "a"), count: answerBytes)
        answer[answerBytes - 1] = UInt8(ascii: "\n")
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while (try? FloorSocket.readLine(fd, into: &buffer)) != nil {
            guard (try? FloorSocket.writeAll(fd, answer)) != nil else { break }
        }
        close(fd)
        close(listener.fd)
    }
}

/// Blocking loopback socket helpers for `floor` (lines end with a newline; one line in flight at a time).
enum FloorSocket {
    static func noDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    static func listen() throws -> (fd: Int32, port: Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ValidationError("socket failed (errno \(errno))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(fd, 1) == 0 else { throw ValidationError("bind/listen failed (errno \(errno))") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    static func connect(host: String, port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ValidationError("socket failed (errno \(errno))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr(host)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { close(fd); throw ValidationError("connect to \(host):\(port) failed (errno \(errno))") }
        noDelay(fd)
        return fd
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + sent, bytes.count - sent) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ValidationError("write failed (errno \(errno))") }
            sent += n
        }
    }

    /// Reads until a newline arrives as the last byte of a read (one line in flight, so it always is);
    /// returns the bytes read.
    @discardableResult
    static func readLine(_ fd: Int32, into buffer: inout [UInt8]) throws -> Int {
        var total = 0
        while true {
            guard total < buffer.count else { throw ValidationError("line longer than \(buffer.count) bytes") }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + total, $0.count - total) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw ValidationError("connection closed") }
            total += n
            if buffer[total - 1] == UInt8(ascii: "\n") { return total }
        }
    }

    static func readLine(from handle: FileHandle) -> String {
        var bytes: [UInt8] = []
        while let byte = try? handle.read(upToCount: 1), let first = byte.first, first != UInt8(ascii: "\n") { bytes.append(first) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Sends one line to a running server and returns its answer line (newline included).
    static func exchangeOnce(address: String, line: [UInt8]) throws -> [UInt8] {
        let parts = address.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--server must be HOST:PORT") }
        let fd = try connect(host: String(parts[0]), port: port)
        defer { close(fd) }
        try writeAll(fd, line)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        let count = try readLine(fd, into: &buffer)
        return Array(buffer[0..<count])
    }
}
