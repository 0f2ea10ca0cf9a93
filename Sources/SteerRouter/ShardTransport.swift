import NIOCore
import SteerCore
import SteerProtocol

/// How the router talks to one replica of one shard: the seam between the router's logic (reads with
/// failover, writes, swaps, health checks) and the sockets. `ReplicaConnections` is the production one
/// (pipelined `ShardConnection`s over TCP or TLS); unit tests use a fake, so that failover, partial
/// results and swap rollback are tested without sockets.
///
/// Contract (what the router relies on, docs/scaling.md "Failures"):
/// - Each request method answers the response object when the replica answered `ok: true`.
/// - It throws `ReplicaFailure` when the replica gave no usable answer; its `kind` says whether the
///   replica (`.transport`, `.answered`, `.retired`) or the request (`.timeout`, `.tooLarge`) is at fault.
/// - It throws `SteerError` for an error the request caused, as the replica answered it.
/// - It never marks the replica down itself: the router does (`Replica.markDown`).
///
/// Threading: every method may be called from any task or event loop at the same time.
protocol ShardTransport: Sendable {
    /// Sends one request line (a JSON object, no newline) and parses the answer.
    ///
    /// - Parameter timeout: the request's remaining deadline.
    /// - Throws: `ReplicaFailure` or `SteerError`, as the type states.
    func request(_ line: [UInt8], timeout: TimeAmount) async throws -> JSONObject

    /// `request` for a health check, on a path that does not wait behind slow requests.
    ///
    /// - Throws: as `request`.
    func healthCheck(_ line: [UInt8], timeout: TimeAmount) async throws -> JSONObject

    /// `request` for the search fast path: the future completes on `loop` and fails as `request` throws.
    func request(_ line: [UInt8], timeout: TimeAmount, on loop: any EventLoop) -> EventLoopFuture<JSONObject>

    /// Closes every connection (the next request connects anew).
    func closeConnections()
}
