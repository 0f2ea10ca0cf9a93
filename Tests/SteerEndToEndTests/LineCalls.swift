import SteerClient
import SteerCore
import SteerProtocol

// One request line to a live server and its parsed answer, shared by the end-to-end tests that talk to
// `steer serve` / `steer route` processes line by line (follow, route-follow and snapshot tests).

/// Sends one line and parses the answer.
func call(_ connection: SteerConnection, _ line: String) throws -> JSONObject {
    let answer = try connection.roundTrip(Array(line.utf8))
    guard case .object(let object) = try JSONParser.parse(answer) else { throw SteerError(.internal, "answer is not an object") }
    return object
}

/// `call` that requires `"ok": true`.
func ok(_ connection: SteerConnection, _ line: String) throws -> JSONObject {
    let object = try call(connection, line)
    guard object["ok"] == .bool(true) else { throw SteerError(.internal, "'\(line.prefix(200))' failed: \(object)") }
    return object
}

/// The write answer's `sequence` (the stream position of the write), which must be positive.
func sequence(of answer: JSONObject) throws -> UInt64 {
    guard case .int(let value)? = answer["sequence"], value > 0 else { throw SteerError(.internal, "answer has no sequence: \(answer)") }
    return UInt64(value)
}
