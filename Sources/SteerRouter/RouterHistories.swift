import SteerCore
import SteerEngine
import SteerProtocol

/// User histories through the router (docs/scaling.md): not routed yet, refused with a message that
/// says so, never silently dropped.
extension Router {
    func history(_ operation: Request.Operation, token: String?, deadline: Deadline, _ writer: inout JSONWriter) async throws {
        throw SteerError.invalid("\(operation.name) is not supported by steer route: send it to the shard server")
    }
}
