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
}

/// One replica of one shard: its health and a few pipelined connections, used round-robin.
final class Replica: Sendable {
    let shard: Int
    let endpoint: ShardEndpoint
    let health = Locked(ReplicaHealth())
    private let group: any EventLoopGroup
    private let maxLineBytes: Int
    private let connectTimeout: TimeAmount
    private let tls: NIOSSLContext?
    private enum Slot {
        case empty
        case connecting(Task<ShardConnection, any Error>)
        case ready(ShardConnection)
    }
    private let slots: Locked<(slots: [Slot], next: Int)>
    /// One connection per client event loop, for the search fast path (`request(_:timeout:on:)`): the
    /// request, the shards' answers and the response stay on that loop.
    private let loopSlots = Locked<[ObjectIdentifier: Slot]>([:])

    init(shard: Int, endpoint: ShardEndpoint, connections: Int, group: any EventLoopGroup, connectTimeout: TimeAmount, maxLineBytes: Int,
         tls: NIOSSLContext?) {
        self.tls = tls
        self.shard = shard
        self.endpoint = endpoint
        self.group = group
        self.connectTimeout = connectTimeout
        self.maxLineBytes = maxLineBytes
        self.slots = Locked((Array(repeating: .empty, count: max(1, connections)), 0))
    }

    /// The next connection round-robin, connecting it when needed.
    private func connection() async throws -> ShardConnection {
        let endpoint = self.endpoint
        let group = self.group
        let timeout = connectTimeout
        let maxLineBytes = self.maxLineBytes
        let tls = self.tls
        let (index, slot): (Int, Slot) = slots.withLock { state in
            let index = state.next % state.slots.count
            state.next &+= 1
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
            throw ReplicaFailure(message: "no connection to \(endpoint)")
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
    /// - Returns: the response object when `ok` is true.
    /// - Throws: `ReplicaFailure` when the replica did not answer in time, its connection failed, or it
    ///   answered an error that says the replica (not the request) is at fault (`unavailable`,
    ///   `internal`, `io_error`, `corrupt`); `SteerError` for an error the request caused.
    func request(_ line: [UInt8], timeout: TimeAmount) async throws -> JSONObject {
        health.withLock { $0.requests += 1 }
        let response: [UInt8]
        do {
            response = try await connection().send(line, timeout: timeout).get()
        } catch let failure as ReplicaFailure {
            throw failure
        } catch {
            throw ReplicaFailure(message: "\(endpoint): \(error)")
        }
        return try parse(response)
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
            return ready.send(line, timeout: timeout).flatMapThrowing { response in try self.parse(response) }
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
            return try self.parse(try await connection.send(line, timeout: timeout).get())
        }
    }

    /// The response object when `ok` is true; see `request` for what it throws.
    private func parse(_ response: [UInt8]) throws -> JSONObject {
        guard case .object(let object) = try? JSONParser.parse(response) else {
            throw ReplicaFailure(message: "\(endpoint) answered a line that is not a JSON object")
        }
        if case .bool(true)? = object["ok"] { return object }
        guard case .object(let error)? = object["error"], case .string(let wire)? = error["code"] else {
            throw ReplicaFailure(message: "\(endpoint) answered neither ok:true nor an error object")
        }
        var message = ""
        if case .string(let text)? = error["message"] { message = text }
        let code = SteerError.Code(wire: wire)
        if [.unavailable, .internal, .io, .corrupt].contains(code) {
            throw ReplicaFailure(message: "\(endpoint) answered \(wire): \(message)")
        }
        throw SteerError(code, message)
    }

    /// Marks the replica down after a failure (the health check brings it back).
    func markDown(_ message: String) {
        health.withLock { state in
            state.up = false
            state.failures += 1
            state.lastError = message
        }
        closeConnections()
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
        for slot in old {
            switch slot {
            case .ready(let connection): connection.close()
            case .connecting(let task): Task { try? await task.value.close() }
            case .empty: break
            }
        }
    }
}
