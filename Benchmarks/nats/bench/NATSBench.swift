// Publish-with-ack throughput of SteerNATS against one nats-server (Benchmarks/nats/run.sh,
// docs/nats.md): `concurrency` tasks each publish with a `Nats-Msg-Id` and wait for the PubAck, so up
// to `concurrency` publishes are in flight on one connection.
//
// Usage: steer-nats-bench PORT MESSAGES CONCURRENCY PAYLOAD_BYTES [REPLICAS]
// Prints one JSON line: messages, replicas, seconds, msgs_per_s, p50_us, p99_us, and the stream's final count.

import Foundation
import SteerNATS

@main
struct NATSBench {
    static func main() async throws {
        let args = CommandLine.arguments
        guard args.count == 5 || args.count == 6, let port = Int(args[1]), let messages = Int(args[2]), let concurrency = Int(args[3]),
            let payloadBytes = Int(args[4]), let replicas = Int(args.count == 6 ? args[5] : "1"),
            messages > 0, concurrency > 0, payloadBytes >= 0, replicas >= 1
        else {
            FileHandle.standardError.write(Data("usage: steer-nats-bench PORT MESSAGES CONCURRENCY PAYLOAD_BYTES [REPLICAS]\n".utf8))
            exit(2)
        }
        let nc = try await NATSConnection.connect(host: "127.0.0.1", port: port)
        let js = JetStreamContext(connection: nc, timeout: .seconds(10))
        let stream = "BENCH_C\(concurrency)_P\(payloadBytes)"
        try? await js.deleteStream(stream)
        // A fresh cluster answers 503 until its meta leader is elected: retry for up to 30 s.
        let config = StreamConfig(name: stream, subjects: ["bench.\(stream)"], storage: .file, replicas: replicas)
        let createDeadline = ContinuousClock.now + .seconds(30)
        while true {
            do {
                try await js.createStream(config)
                break
            } catch {
                if ContinuousClock.now > createDeadline { throw error }
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        let payload = [UInt8](repeating: 7, count: payloadBytes)
        let perTask = messages / concurrency
        let start = ContinuousClock.now
        let latencies = try await withThrowingTaskGroup(of: [Double].self) { group in
            for t in 0..<concurrency {
                group.addTask {
                    var own: [Double] = []
                    own.reserveCapacity(perTask)
                    for i in 0..<perTask {
                        let begin = ContinuousClock.now
                        _ = try await js.publish("bench.\(stream)", payload: payload, messageID: "t\(t)-\(i)")
                        let elapsed = ContinuousClock.now - begin
                        own.append(Double(elapsed.components.seconds) * 1e6 + Double(elapsed.components.attoseconds) / 1e12)
                    }
                    return own
                }
            }
            var all: [Double] = []
            for try await part in group { all += part }
            return all
        }
        let elapsed = ContinuousClock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let sorted = latencies.sorted()
        func percentile(_ p: Double) -> Double { sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))] }
        let info = try await js.streamInfo(stream)
        try await js.deleteStream(stream)
        await nc.close()
        let line = String(
            format: #"{"messages":%d,"replicas":%d,"concurrency":%d,"payload_bytes":%d,"seconds":%.3f,"msgs_per_s":%.0f,"p50_us":%.0f,"p99_us":%.0f,"stored":%llu}"#,
            sorted.count, replicas, concurrency, payloadBytes, seconds, Double(sorted.count) / seconds, percentile(0.5), percentile(0.99), info.state.messages)
        print(line)
    }
}
