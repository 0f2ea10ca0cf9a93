import Dispatch
import Foundation
import SteerCore
import SteerNATS
import SteerProtocol

/// A cluster-wide swap through the metadata bucket (docs/scaling.md "Cluster-wide swap"): one key,
/// `generation`, in `steer_<cluster>` says which generation the cluster moves to and how far it got;
/// each replica answers under its own key. Values are hostile input (`ClusterDirectory.maxValueBytes`,
/// every field checked).
///
/// - `generation`: `{"generation":G,"checkpoint":C?,"state":S,"round":R,"deadline_ms":D}`. State
///   `prepare` (R is 0: the round is this entry's own revision) asks every replica to stage G
///   (`RetrievalEngine.prepare`); `commit` (R: the revision of the `prepare` entry it ends) makes G the
///   cluster's generation, every replica activates it; `abort` ends round R without a switch (replicas
///   drop what they staged). D (Unix milliseconds) is when the coordinator gives up waiting: a `prepare`
///   whose D passed may be replaced by another coordinator (its coordinator died).
/// - `report.shard.<i>.<replica id>` (the replica's heartbeat key behind `report.`):
///   `{"round":R,"generation":G,"state":"ready"|"failed"|"active","message":M?}`. `ready`: G is staged
///   for round R; `failed`: it could not be (M says why); `active`: the replica serves G since the commit
///   of round R (a restarted replica that reads this does not act on that commit again).
///
/// Every change of `generation` is an `update` at the revision the writer read (`create` when absent),
/// so of two coordinators only one announces a round, and only the coordinator of round R can commit it
/// (its `commit` expects the `prepare` entry's revision, which any later change replaces).
public enum ClusterSwap {
    /// The key of the cluster's generation state in the metadata bucket.
    public static let generationKey = "generation"
    /// Longest `message` a replica reports, in bytes (longer ones are cut).
    public static let maxMessageBytes = 400
    /// How often a coordinator reads the replicas' reports while it waits.
    public static let pollInterval: Duration = .milliseconds(100)

    public enum State: String, Sendable, Equatable {
        case prepare, commit, abort
    }

    /// The value of `generation`.
    public struct Announcement: Sendable, Equatable {
        public var generation: String
        public var checkpoint: String?
        public var state: State
        /// 0 for `prepare` (its round is its own revision), the `prepare` entry's revision otherwise.
        public var round: UInt64
        /// When the coordinator stops waiting, in Unix milliseconds.
        public var deadlineMillis: Int64

        public init(generation: String, checkpoint: String?, state: State, round: UInt64, deadlineMillis: Int64) {
            self.generation = generation
            self.checkpoint = checkpoint
            self.state = state
            self.round = round
            self.deadlineMillis = deadlineMillis
        }
    }

    public enum ReportState: String, Sendable, Equatable {
        case ready, failed, active
    }

    /// The value of a replica's `report.…` key.
    public struct Report: Sendable, Equatable {
        public var round: UInt64
        public var generation: String
        public var state: ReportState
        public var message: String?

        public init(round: UInt64, generation: String, state: ReportState, message: String? = nil) {
            self.round = round
            self.generation = generation
            self.state = state
            self.message = message
        }
    }

    /// A replica's report key: `report.` + its heartbeat key (`ClusterDirectory.replicaKey`).
    public static func reportKey(heartbeatKey: String) -> String { "report." + heartbeatKey }

    /// The round an entry of `generation` belongs to: its own revision for `prepare`.
    public static func round(of announcement: Announcement, revision: UInt64) -> UInt64 {
        announcement.state == .prepare ? revision : announcement.round
    }

    // MARK: Values

    public static func encode(_ announcement: Announcement) -> [UInt8] {
        var writer = JSONWriter(capacity: 160)
        writer.raw("{\"generation\":")
        writer.string(announcement.generation)
        if let checkpoint = announcement.checkpoint {
            writer.raw(",\"checkpoint\":")
            writer.string(checkpoint)
        }
        writer.raw(",\"state\":")
        writer.string(announcement.state.rawValue)
        writer.raw(",\"round\":")
        writer.int(Int64(clamping: announcement.round))
        writer.raw(",\"deadline_ms\":")
        writer.int(announcement.deadlineMillis)
        writer.raw("}")
        return writer.bytes
    }

    /// - Throws: `.corrupt` for anything but the documented value (a generation of 1-255 bytes).
    public static func decodeAnnouncement(_ value: [UInt8]) throws(SteerError) -> Announcement {
        let object = try object(value, what: "the cluster's generation state")
        guard case .string(let generation)? = object["generation"], (1...255).contains(generation.utf8.count),
              case .string(let stateText)? = object["state"], let state = State(rawValue: stateText),
              case .int(let round)? = object["round"], round >= 0, case .int(let deadline)? = object["deadline_ms"]
        else {
            throw SteerError(.corrupt, "the cluster's generation state must be {\"generation\",\"state\":\"prepare|commit|abort\",\"round\",\"deadline_ms\"}")
        }
        var checkpoint: String?
        switch object["checkpoint"] {
        case nil, .null?: break
        case .string(let text)?: checkpoint = text
        default: throw SteerError(.corrupt, "the cluster's generation state has a checkpoint that is not a string")
        }
        return Announcement(generation: generation, checkpoint: checkpoint, state: state, round: UInt64(round), deadlineMillis: deadline)
    }

    public static func encode(_ report: Report) -> [UInt8] {
        var writer = JSONWriter(capacity: 128)
        writer.raw("{\"round\":")
        writer.int(Int64(clamping: report.round))
        writer.raw(",\"generation\":")
        writer.string(report.generation)
        writer.raw(",\"state\":")
        writer.string(report.state.rawValue)
        if let message = report.message {
            writer.raw(",\"message\":")
            writer.string(String(decoding: Array(message.utf8.prefix(maxMessageBytes)), as: UTF8.self))
        }
        writer.raw("}")
        return writer.bytes
    }

    /// - Throws: `.corrupt` for anything but the documented value.
    public static func decodeReport(_ value: [UInt8]) throws(SteerError) -> Report {
        let object = try object(value, what: "a replica's swap report")
        guard case .int(let round)? = object["round"], round >= 0, case .string(let generation)? = object["generation"],
              case .string(let stateText)? = object["state"], let state = ReportState(rawValue: stateText)
        else {
            throw SteerError(.corrupt, "a swap report must be {\"round\",\"generation\",\"state\":\"ready|failed|active\"}")
        }
        var message: String?
        if case .string(let text)? = object["message"] { message = text }
        return Report(round: UInt64(round), generation: generation, state: state, message: message)
    }

    private static func object(_ value: [UInt8], what: String) throws(SteerError) -> JSONObject {
        guard value.count <= ClusterDirectory.maxValueBytes else {
            throw SteerError(.corrupt, "\(what) is \(value.count) bytes, limit is \(ClusterDirectory.maxValueBytes)")
        }
        let root: JSONValue
        do {
            root = try JSONParser.parse(value)
        } catch {
            throw SteerError(.corrupt, "\(what) is not JSON: \(error.message)")
        }
        guard case .object(let object) = root else { throw SteerError(.corrupt, "\(what) is not a JSON object") }
        return object
    }

    /// Now in Unix milliseconds.
    public static func nowMillis() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    // MARK: Reading

    /// The live replicas' heartbeat keys (`shard.<i>.<id>`) with their shard and address.
    ///
    /// - Throws: `NATSError` from JetStream.
    public static func liveReplicaKeys(_ replicas: KeyValue, shardCount: Int) async throws -> [(key: String, shard: Int, address: ClusterDirectory.Address)] {
        var found: [String: (Int, ClusterDirectory.Address)] = [:]
        let watcher = try await replicas.watch("shard.>")
        defer { Task { await watcher.stop() } }
        loop: for try await event in watcher {
            switch event {
            case .entry(let entry):
                guard entry.operation == .put, let (address, shard) = try? ClusterDirectory.decodeHeartbeat(entry.value), shard < shardCount else {
                    found[entry.key] = nil
                    continue
                }
                found[entry.key] = (shard, address)
            case .initialValuesDone:
                break loop
            }
        }
        return found.map { (key: $0.key, shard: $0.value.0, address: $0.value.1) }.sorted { ($0.shard, $0.key) < ($1.shard, $1.key) }
    }
}
