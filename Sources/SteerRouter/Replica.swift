import Foundation
import NIOCore
import NIOSSL
import SteerClient
import SteerCore
import SteerEngine
import SteerProtocol

/// What the router knows about one replica.
struct ReplicaHealth: Sendable {
    /// Answered the last health check or request; false after a connection failure or timeout.
    var up = false
    /// The generation it named last (health check or answer); nil before it answered.
    var generation: String?
    /// A write it should have applied failed on it: it may lack data, so it serves nothing until the
    /// router restarts (after an operator re-seeded it, docs/scaling.md).
    var diverged = false
    var requests = 0
    var failures = 0
    var lastError: String?
    /// The write-log sequence it reported applied (`applied_sequence`) at its last health check; 0 when
    /// it follows no stream.
    var appliedSequence: UInt64 = 0
    /// Its vectors' dimension and whether its metric is cosine, from its last health check (nil before).
    var dimension: Int?
    var cosine = false
    /// Health checks in a row that timed out (a busy replica is slow, not gone; see
    /// `Router.missedChecksBeforeDown`).
    var missedChecks = 0
}

/// One replica of one shard as the router sees it: where it is, its health, and the transport that
/// carries requests to it (`ShardTransport`; `ReplicaConnections` over TCP in production, a fake in unit
/// tests).
///
/// Invariants: `shard` and `endpoint` never change; `health` is written by the router (health checks,
/// failures, answers) and by the transport (request counts). Threading: every member may be used from any
/// task or event loop; state sits behind `Locked`.
final class Replica: Sendable {
    let shard: Int
    let endpoint: ShardEndpoint
    let health: Locked<ReplicaHealth>
    let transport: any ShardTransport

    /// A replica whose requests go through `transport` (which may count them in `health`).
    init(shard: Int, endpoint: ShardEndpoint, health: Locked<ReplicaHealth> = Locked(ReplicaHealth()), transport: any ShardTransport) {
        self.shard = shard
        self.endpoint = endpoint
        self.health = health
        self.transport = transport
    }

    /// A replica reached over TCP (`ReplicaConnections`).
    convenience init(shard: Int, endpoint: ShardEndpoint, connections: Int, group: any EventLoopGroup, connectTimeout: TimeAmount, maxLineBytes: Int,
                     tls: NIOSSLContext?) {
        let health = Locked(ReplicaHealth())
        self.init(shard: shard, endpoint: endpoint, health: health,
                  transport: ReplicaConnections(endpoint: endpoint, health: health, connections: connections, group: group,
                                                connectTimeout: connectTimeout, maxLineBytes: maxLineBytes, tls: tls))
    }

    /// Sends a request line and parses the answer (`ShardTransport.request(_:timeout:)`).
    func request(_ line: [UInt8], timeout: TimeAmount) async throws -> JSONObject {
        try await transport.request(line, timeout: timeout)
    }

    /// `request` on the health check's own connection (`ShardTransport.healthCheck`).
    func healthCheck(_ line: [UInt8], timeout: TimeAmount) async throws -> JSONObject {
        try await transport.healthCheck(line, timeout: timeout)
    }

    /// `request` completing on `loop` (`ShardTransport.request(_:timeout:on:)`).
    func request(_ line: [UInt8], timeout: TimeAmount, on loop: any EventLoop) -> EventLoopFuture<JSONObject> {
        transport.request(line, timeout: timeout, on: loop)
    }

    /// Marks the replica down after a transport failure or a failed health check (the health check
    /// brings it back) and closes its connections.
    func markDown(_ message: String) {
        health.withLock { state in
            state.up = false
            state.failures += 1
            state.lastError = message
        }
        closeConnections()
    }

    func closeConnections() { transport.closeConnections() }
}

/// The production `ShardTransport` of one replica: a few pipelined `ShardConnection`s, used round-robin,
/// plus one connection of its own for health checks (so that a check never waits behind a slow request),
/// plus one connection per client event loop for the search fast path.
///
/// A connection on which a request timed out is retired: it leaves its slot at once (the next request
/// connects anew) and closes when the answers it still waits for have come; at most
/// `maxRetiredConnections` wait like that, older ones are closed. None of this marks the replica down:
/// only a transport failure (`ReplicaFailure.Kind.transport`) or a failed health check does (the router
/// decides, `Replica.markDown`). Threading: any task or event loop; slots sit behind `Locked`.
final class ReplicaConnections: ShardTransport {
    let endpoint: ShardEndpoint
    /// The replica's health, where each request sent is counted.
    private let health: Locked<ReplicaHealth>
    private let group: any EventLoopGroup
    private let maxLineBytes: Int
    private let connectTimeout: TimeAmount
    private let tls: NIOSSLContext?
    private enum Slot {
        case empty
        case connecting(Task<ShardConnection, any Error>)
        case ready(ShardConnection)
    }
    /// `slots[0]` is the health check's; requests use the others round-robin.
    private let slots: Locked<(slots: [Slot], next: Int)>
    /// One connection per client event loop, for the search fast path (`request(_:timeout:on:)`): the
    /// request, the shards' answers and the response stay on that loop.
    private let loopSlots = Locked<[ObjectIdentifier: Slot]>([:])
    /// Connections retired after a timeout that still wait for answers, oldest first.
    private let retired = Locked<[ShardConnection]>([])
    /// Most retired connections kept open per replica (each waits for a slow answer).
    static let maxRetiredConnections = 8

    init(endpoint: ShardEndpoint, health: Locked<ReplicaHealth>, connections: Int, group: any EventLoopGroup, connectTimeout: TimeAmount,
         maxLineBytes: Int, tls: NIOSSLContext?) {
        self.tls = tls
        self.endpoint = endpoint
        self.health = health
        self.group = group
        self.connectTimeout = connectTimeout
        self.maxLineBytes = maxLineBytes
        self.slots = Locked((Array(repeating: .empty, count: max(1, connections) + 1), 0))
    }

    /// The connection of `slots[index]` (the next request slot round-robin when nil), connecting it when needed.
    private func connection(slot chosen: Int? = nil) async throws -> ShardConnection {
        let endpoint = self.endpoint
        let group = self.group
        let timeout = connectTimeout
        let maxLineBytes = self.maxLineBytes
        let tls = self.tls
        let (index, slot): (Int, Slot) = slots.withLock { state in
            let index: Int
            if let chosen {
                index = chosen
            } else {
                index = 1 + state.next % (state.slots.count - 1)
                state.next &+= 1
            }
            switch state.slots[index] {
            case .ready(let connection) where connection.isActive:
                return (index, .ready(connection))
            case .connecting(let task):
                return (index, .connecting(task))
            default:
                let task = Task {
                    try await ShardConnection.connect(to: endpoint, group: group, timeout: timeout, maxLineBytes: maxLineBytes, tls: tls)
                }
                state.slots[index] = .connecting(task)
                return (index, .connecting(task))
            }
        }
        guard case .connecting(let task) = slot else {
            if case .ready(let connection) = slot { return connection }
            throw ReplicaFailure(.transport, message: "no connection to \(endpoint)")
        }
        do {
            let connection = try await task.value
            slots.withLock { state in
                if case .connecting = state.slots[index] { state.slots[index] = .ready(connection) }
            }
            return connection
        } catch {
            slots.withLock { state in
                if case .connecting = state.slots[index] { state.slots[index] = .empty }
            }
            throw error
        }
    }

    /// Sends a request line and parses the answer.
    ///
    /// - Parameter timeout: the request's remaining deadline.
    /// - Returns: the response object when `ok` is true.
    /// - Throws: `ReplicaFailure` (its `kind` says whether the replica or the request is at fault);
    ///   `SteerError` for an error the request caused, as the replica answered it.
    func request(_ line: [UInt8], timeout: TimeAmount) async throws -> JSONObject {
        try await send(line, timeout: timeout, slot: nil)
    }

    /// `request` on the health check's own connection.
    func healthCheck(_ line: [UInt8], timeout: TimeAmount) async throws -> JSONObject {
        try await send(line, timeout: timeout, slot: 0)
    }

    private func send(_ line: [UInt8], timeout: TimeAmount, slot: Int?) async throws -> JSONObject {
        health.withLock { $0.requests += 1 }
        // A connection retired between being picked and being written to refuses the request: once more
        // on a fresh one.
        for attempt in 0..<2 {
            let connection = try await self.connection(slot: slot)
            do {
                return try parse(try await connection.send(line, timeout: timeout).get())
            } catch let failure as ReplicaFailure {
                if failure.kind == .timeout { retire(connection) }
                if failure.kind == .retired, attempt == 0 { continue }
                throw failure
            }
        }
        throw ReplicaFailure(.retired, message: "\(endpoint): no connection took the request")
    }

    /// `request` on a connection that lives on `loop` (connected on first use); the future completes on
    /// `loop` and fails as `request` throws.
    func request(_ line: [UInt8], timeout: TimeAmount, on loop: any EventLoop) -> EventLoopFuture<JSONObject> {
        let key = ObjectIdentifier(loop)
        let ready: ShardConnection? = loopSlots.withLock { table in
            if case .ready(let connection)? = table[key], connection.isActive { return connection }
            return nil
        }
        if let ready {
            health.withLock { $0.requests += 1 }
            return ready.send(line, timeout: timeout).flatMapErrorThrowing { error in
                if let failure = error as? ReplicaFailure, failure.kind == .timeout { self.retire(ready) }
                throw error
            }.flatMapThrowing { response in try self.parse(response) }
        }
        let endpoint = self.endpoint
        let connectTimeout = self.connectTimeout
        let maxLineBytes = self.maxLineBytes
        let tls = self.tls
        let task: Task<ShardConnection, any Error> = loopSlots.withLock { table in
            if case .connecting(let task)? = table[key] { return task }
            let task = Task {
                try await ShardConnection.connect(to: endpoint, group: loop, timeout: connectTimeout, maxLineBytes: maxLineBytes, tls: tls)
            }
            table[key] = .connecting(task)
            return task
        }
        return loop.makeFutureWithTask {
            let connection: ShardConnection
            do {
                connection = try await task.value
                self.loopSlots.withLock { table in
                    if case .connecting? = table[key] { table[key] = .ready(connection) }
                }
            } catch {
                self.loopSlots.withLock { table in
                    if case .connecting? = table[key] { table[key] = nil }
                }
                throw error
            }
            self.health.withLock { $0.requests += 1 }
            do {
                return try self.parse(try await connection.send(line, timeout: timeout).get())
            } catch let failure as ReplicaFailure {
                if failure.kind == .timeout { self.retire(connection) }
                throw failure
            }
        }
    }

    /// Takes `connection` out of its slot (the next request connects anew) and lets it close once its
    /// pending answers have come; beyond `maxRetiredConnections` the oldest retired one is closed now.
    private func retire(_ connection: ShardConnection) {
        let id = ObjectIdentifier(connection)
        slots.withLock { state in
            for index in state.slots.indices {
                if case .ready(let current) = state.slots[index], ObjectIdentifier(current) == id { state.slots[index] = .empty }
            }
        }
        loopSlots.withLock { table in
            for (key, slot) in table {
                if case .ready(let current) = slot, ObjectIdentifier(current) == id { table[key] = nil }
            }
        }
        let evicted: [ShardConnection] = retired.withLock { list in
            list.removeAll { !$0.isActive || ObjectIdentifier($0) == id }
            list.append(connection)
            guard list.count > Self.maxRetiredConnections else { return [] }
            let extra = list.count - Self.maxRetiredConnections
            defer { list.removeFirst(extra) }
            return Array(list.prefix(extra))
        }
        connection.retire()
        for old in evicted { old.close() }
    }

    /// The response object when `ok` is true; see `request` for what it throws.
    private func parse(_ response: [UInt8]) throws -> JSONObject {
        guard case .object(let object) = try? JSONParser.parse(response) else {
            throw ReplicaFailure(.transport, message: "\(endpoint) answered a line that is not a JSON object")
        }
        if case .bool(true)? = object["ok"] { return object }
        guard case .object(let error)? = object["error"], case .string(let wire)? = error["code"] else {
            throw ReplicaFailure(.transport, message: "\(endpoint) answered neither ok:true nor an error object")
        }
        var message = ""
        if case .string(let text)? = error["message"] { message = text }
        let code = SteerError.Code(wire: wire)
        if [.unavailable, .internal, .io, .corrupt].contains(code) {
            throw ReplicaFailure(.answered, message: "\(endpoint) answered \(wire): \(message)")
        }
        throw SteerError(code, message)
    }

    func closeConnections() {
        var old = slots.withLock { state -> [Slot] in
            let old = state.slots
            state.slots = Array(repeating: .empty, count: old.count)
            return old
        }
        old += loopSlots.withLock { table -> [Slot] in
            defer { table = [:] }
            return Array(table.values)
        }
        old += retired.withLock { list -> [Slot] in
            defer { list = [] }
            return list.map { .ready($0) }
        }
        for slot in old {
            switch slot {
            case .ready(let connection): connection.close()
            case .connecting(let task): Task { try? await task.value.close() }
            case .empty: break
            }
        }
    }
}
