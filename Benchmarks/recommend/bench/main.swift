// steer-recommend-bench: `recommend` round trips through `steer serve --checkpoint` with the Swift client
// on one connection: no prompt, a cached prompt, and uncached prompts (every request a clause text the
// server has not seen, so MiniLM runs each time), with one and two clauses. Prints JSON rows; run.sh
// beside this file writes the results file.
//
//   .build/release/steer-recommend-bench --checkpoint DIR [--minilm DIR] [--requests 2000]
import Foundation
import SteerClient
import SteerCore

struct Options {
    var checkpoint = ""
    var minilm = "models/all-MiniLM-L6-v2"
    var requests = 2000
    var uncachedRequests = 600

    init(arguments: [String]) {
        var iterator = arguments.dropFirst().makeIterator()
        while let argument = iterator.next() {
            let value = iterator.next() ?? ""
            switch argument {
            case "--checkpoint": checkpoint = value
            case "--minilm": minilm = value
            case "--requests": requests = Int(value) ?? requests
            case "--uncached-requests": uncachedRequests = Int(value) ?? uncachedRequests
            default: FileHandle.standardError.write(Data("unknown argument \(argument)\n".utf8)); exit(2)
            }
        }
        if checkpoint.isEmpty { FileHandle.standardError.write(Data("--checkpoint is required\n".utf8)); exit(2) }
    }
}

func log(_ text: String) { FileHandle.standardError.write(Data((text + "\n").utf8)) }

func percentile(_ sorted: [Double], _ q: Double) -> Double {
    sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * q).rounded()))]
}

let options = Options(arguments: CommandLine.arguments)
let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("steer").path
let directory = NSTemporaryDirectory() + "steer-recommend-bench-" + UUID().uuidString
let process = Process()
process.executableURL = URL(fileURLWithPath: binary)
process.arguments = ["serve", "--port", "0", "--data", directory, "--checkpoint", options.checkpoint, "--minilm", options.minilm,
                     "--log-level", "warning", "--sync-writes", "false"]
let output = Pipe()
process.standardOutput = output
try process.run()
var first = ""
while !first.contains("\n") {
    let data = output.fileHandleForReading.availableData
    if data.isEmpty { log("steer serve exited before listening"); exit(1) }
    first += String(decoding: data, as: UTF8.self)
}
guard let port = first.split(separator: "\n")[0].split(separator: ":").last.flatMap({ Int($0) }) else { exit(1) }
defer {
    process.terminate()
    process.waitUntilExit()
    try? FileManager.default.removeItem(atPath: directory)
}

// Histories: the catalog's first lines, 20 items each (ids as the checkpoint gives them).
let catalog = try String(contentsOfFile: options.checkpoint + "/items.jsonl", encoding: .utf8)
let ids: [String] = catalog.split(separator: "\n").compactMap { line in
    guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], let id = object["id"] else { return nil }
    if let number = id as? NSNumber { return number.stringValue }
    return (id as? String).map { "\"\($0)\"" }
}
let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: options.checkpoint + "/config.json"))) as? [String: Any]
let tags = (config?["tags"] as? [String]) ?? ["comedy", "horror"]
func history(_ n: Int) -> String { (0..<20).map { ids[(n * 7 + $0 * 13) % ids.count] }.joined(separator: ",") }

let connection = try SteerConnection(host: "127.0.0.1", port: port)
@MainActor func measure(_ name: String, count: Int, _ line: (Int) -> String) throws -> [String: Any] {
    for n in 0..<min(50, count) { _ = try SteerClient.check(try connection.roundTrip(Array(line(n + 1_000_000).utf8))) }  // warm-up
    var samples: [Double] = []
    samples.reserveCapacity(count)
    let clock = ContinuousClock()
    let started = clock.now
    for n in 0..<count {
        let bytes = Array(line(n).utf8)
        let t0 = clock.now
        _ = try SteerClient.check(try connection.roundTrip(bytes))
        let elapsed = clock.now - t0
        samples.append(Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12)
    }
    let total = clock.now - started
    samples.sort()
    let seconds = Double(total.components.seconds) + Double(total.components.attoseconds) / 1e18
    let row: [String: Any] = [
        "case": name, "requests": count, "connections": 1,
        "p50_us": percentile(samples, 0.5).rounded(), "p90_us": percentile(samples, 0.9).rounded(),
        "p99_us": percentile(samples, 0.99).rounded(), "qps": (Double(count) / seconds).rounded(),
    ]
    log("\(name): p50 \(Int(percentile(samples, 0.5))) µs, p99 \(Int(percentile(samples, 0.99))) µs")
    return row
}

var rows: [[String: Any]] = []
rows.append(try measure("no prompt", count: options.requests) { n in
    #"{"op":"recommend","history":[\#(history(n))],"k":10}"#
})
rows.append(try measure("cached prompt, 2 clauses", count: options.requests) { n in
    #"{"op":"recommend","history":[\#(history(n))],"prompt":"more \#(tags[0]), but no \#(tags[1])","k":10}"#
})
rows.append(try measure("uncached prompt, 1 clause", count: options.uncachedRequests) { n in
    #"{"op":"recommend","history":[\#(history(n))],"prompt":"more \#(tags[n % tags.count]) like number \#(n)","k":10}"#
})
rows.append(try measure("uncached prompt, 2 clauses", count: options.uncachedRequests) { n in
    #"{"op":"recommend","history":[\#(history(n))],"prompt":"more \#(tags[n % tags.count]) \#(n), but no \#(tags[(n + 1) % tags.count]) \#(n)","k":10}"#
})
rows.append(try measure("hybrid, cached prompt", count: options.requests) { n in
    #"{"op":"recommend","history":[\#(history(n))],"prompt":"more \#(tags[0]), but no \#(tags[1])","k":10,"constraints":"hybrid"}"#
})
let stats = try SteerClient.check(try connection.roundTrip(Array(#"{"op":"stats"}"#.utf8)))
if case .object(let counters)? = stats["encoder_stats"] { log("encoder_stats: \(counters)") }
let json = try JSONSerialization.data(withJSONObject: ["items": ids.count, "rows": rows], options: [.sortedKeys])
print(String(decoding: json, as: UTF8.self))
