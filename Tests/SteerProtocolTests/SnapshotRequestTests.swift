import Foundation
import SteerCore
import Testing
@testable import SteerProtocol

/// The admin op `snapshot`: its `name` becomes a directory inside the server's snapshot directory, so
/// the decoder refuses anything that could leave it.
@Suite struct SnapshotRequestTests {
    let decoder = RequestDecoder(limits: ProtocolLimits())

    private func decode(_ text: String) throws -> Request {
        try decoder.decode(try JSONParser.parse(text))
    }

    @Test func aSafeNameDecodes_isAdmin_andRoundTrips() throws {
        let request = try decode(#"{"op":"snapshot","name":"nightly-2026.12.07_a","token":"t"}"#)
        guard case .snapshot(let name) = request.operation else { Issue.record("not a snapshot: \(request.operation)"); return }
        #expect(name == "nightly-2026.12.07_a")
        #expect(request.operation.isAdmin)
        let again = try decode(String(decoding: RequestEncoder.encode(request), as: UTF8.self))
        guard case .snapshot(let decoded) = again.operation else { Issue.record("round trip lost the op"); return }
        #expect(decoded == name)
    }

    @Test func hostileNamesAndFieldsAreRefused() throws {
        let names = ["", ".", "..", "../x", "a/b", "/abs", ".hidden", "a\\\\b", "caf\u{e9}", "a b", "x\\u0000", String(repeating: "n", count: 65)]
        for name in names {
            #expect(throws: SteerError.self, "name '\(name)'") { try decode(#"{"op":"snapshot","name":"\#(name)"}"#) }
        }
        #expect(throws: SteerError.self) { try decode(#"{"op":"snapshot"}"#) }
        #expect(throws: SteerError.self) { try decode(#"{"op":"snapshot","name":7}"#) }
        #expect(throws: SteerError.self) { try decode(#"{"op":"snapshot","name":"a","collection":"books"}"#) }
        #expect(throws: SteerError.self) { try decode(#"{"op":"snapshot","name":"a","path":"/tmp"}"#) }
        #expect(try decode(#"{"op":"snapshot","name":"\#(String(repeating: "n", count: 64))"}"#).operation.name == "snapshot")
    }
}
