import Foundation
import SteerCore
import Testing
@testable import SteerProtocol

@Suite struct SwapRequestTests {
    let decoder = RequestDecoder(limits: ProtocolLimits())

    private func decode(_ text: String) throws -> Request {
        try decoder.decode(try JSONParser.parse(text))
    }

    @Test func decodesGenerationAndOptionalCheckpoint() throws {
        let plain = try decode(#"{"op":"swap","generation":"g2","token":"t"}"#)
        guard case .swap(let generation, let checkpoint) = plain.operation else {
            Issue.record("not a swap: \(plain.operation)")
            return
        }
        #expect(generation == "g2" && checkpoint == nil && plain.token == "t" && plain.operation.isAdmin)
        let withCheckpoint = try decode(#"{"op":"swap","generation":"/data/generations/g3","checkpoint":"/ckpt"}"#)
        guard case .swap(let path, let directory) = withCheckpoint.operation else {
            Issue.record("not a swap: \(withCheckpoint.operation)")
            return
        }
        #expect(path == "/data/generations/g3" && directory == "/ckpt")
        for (line, field) in [(#"{"op":"swap","generation":"g","checkpoint":1}"#, "checkpoint"),
                              (#"{"op":"swap","generation":7}"#, "generation"),
                              (#"{"op":"swap","generation":"g","model":"m"}"#, "model"),
                              (#"{"op":"swap","generation":""}"#, "'generation' is empty")] {
            do {
                _ = try decode(line)
                Issue.record("accepted \(line)")
            } catch let error as SteerError {
                #expect(error.code == .invalidRequest && error.message.contains(field), "\(error)")
            }
        }
    }

    @Test func prepareAndActivateTakeAGeneration_prepareAlsoACheckpoint() throws {
        let prepare = try decode(#"{"op":"prepare","generation":"g2","checkpoint":"/ckpt","token":"t"}"#)
        guard case .prepare(let generation, let checkpoint) = prepare.operation else {
            Issue.record("not a prepare: \(prepare.operation)")
            return
        }
        #expect(generation == "g2" && checkpoint == "/ckpt" && prepare.operation.isAdmin)
        let activate = try decode(#"{"op":"activate","generation":"g2"}"#)
        guard case .activate(let name) = activate.operation else {
            Issue.record("not an activate: \(activate.operation)")
            return
        }
        #expect(name == "g2" && activate.operation.isAdmin && activate.operation.name == "activate")
        for (line, field) in [(#"{"op":"activate","generation":"g","checkpoint":"/c"}"#, "checkpoint"),
                              (#"{"op":"prepare"}"#, "generation"),
                              (#"{"op":"activate","generation":""}"#, "'generation' is empty"),
                              (#"{"op":"prepare","generation":"g","collection":"books"}"#, "collection")] {
            do {
                _ = try decode(line)
                Issue.record("accepted \(line)")
            } catch let error as SteerError {
                #expect(error.code == .invalidRequest && error.message.contains(field), "\(error)")
            }
        }
    }
}

