import NIOCore
import SteerCore
import SteerProtocol

extension Router {
    /// Most seconds a replica may take to declare a payload index (it builds the index over its items).
    static let declareIndexTimeoutSeconds: Int64 = 600

    /// `declare_index` through a router: every replica of every shard declares the index (each server
    /// keeps its own, built over its own items; docs/protocol.md, "Payload indexes").
    ///
    /// The answer carries `attr`, `kind`, `entries` (summed over the replicas) and `replicas` (how many
    /// declared). Declaring is idempotent, so a partial outcome is safe to send again.
    ///
    /// - Throws: the refusal of the first replica that refused the request itself (`invalid_request`
    ///   for a bad path, …); `unavailable` naming the replicas that were down or failed when not every
    ///   replica declared.
    func declareIndex(attribute: String, kind: PayloadKind, collection: String?, token: String?, _ writer: inout JSONWriter) async throws {
        let line = RequestEncoder.encode(Request(operation: .declareIndex(attribute: attribute, kind: kind), token: shardToken(token),
                                                 collection: collection))
        let timeout = TimeAmount.seconds(Self.declareIndexTimeoutSeconds)
        enum Outcome: Sendable {
            case declared(entries: Int)
            case refused(SteerError)
            case failed(String)
        }
        var outcomes: [(shard: Int, endpoint: String, outcome: Outcome)] = []
        let table = replicas
        await withTaskGroup(of: (Int, String, Outcome).self) { tasks in
            for replica in table.joined() {
                tasks.addTask {
                    let endpoint = replica.endpoint.description
                    guard replica.health.get().up else { return (replica.shard, endpoint, .failed("down")) }
                    do {
                        let answer = try await replica.request(line, timeout: timeout)
                        guard case .int(let entries)? = answer["entries"] else {
                            return (replica.shard, endpoint, .failed("no entries in the answer"))
                        }
                        return (replica.shard, endpoint, .declared(entries: Int(entries)))
                    } catch let error as SteerError where Self.requestErrors.contains(error.code) {
                        return (replica.shard, endpoint, .refused(error))
                    } catch {
                        return (replica.shard, endpoint, .failed(Self.describe(error)))
                    }
                }
            }
            for await outcome in tasks { outcomes.append(outcome) }
        }
        outcomes.sort { ($0.shard, $0.endpoint) < ($1.shard, $1.endpoint) }
        var entries = 0
        var declared = 0
        var missing = table.indices.filter { shard in table[shard].isEmpty }.map { "shard \($0): no replica known" }
        for (shard, endpoint, outcome) in outcomes {
            switch outcome {
            case .declared(let count):
                entries += count
                declared += 1
            case .refused(let error):
                throw error
            case .failed(let reason):
                missing.append("shard \(shard) \(endpoint): \(reason)")
            }
        }
        if !missing.isEmpty {
            throw SteerError(.unavailable, "declare_index: declared on \(declared) of \(outcomes.count) replicas; not on \(missing.joined(separator: "; ")). Declaring is idempotent: send it again once every replica is up")
        }
        writer.raw(",\"attr\":")
        writer.string(attribute)
        writer.raw(",\"kind\":")
        writer.string(kind.name)
        writer.raw(",\"entries\":")
        writer.int(entries)
        writer.raw(",\"replicas\":")
        writer.int(declared)
    }
}
