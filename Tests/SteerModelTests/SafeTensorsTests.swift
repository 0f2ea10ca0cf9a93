import Foundation
import SteerCore
import Testing
@testable import SteerModel

@Suite struct SafeTensorsTests {
    private func open(_ data: Data) throws(SteerError) -> SafeTensorsFile {
        try SafeTensorsFile(data: data, path: "t.safetensors")
    }

    /// Expects `.corrupt` whose message contains every fragment.
    private func expectCorrupt(_ data: Data, _ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try open(data)
            Issue.record("accepted a corrupt file", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == .corrupt, sourceLocation: sourceLocation)
            for fragment in fragments + ["t.safetensors"] {
                #expect(error.message.contains(fragment), "\(error.message) lacks \(fragment)", sourceLocation: sourceLocation)
            }
        }
    }

    private func withHeader(_ json: String, dataBytes: Int) -> Data {
        var data = Data()
        var length = UInt64(json.utf8.count).littleEndian
        withUnsafeBytes(of: &length) { data.append(contentsOf: $0) }
        data.append(Data(json.utf8))
        data.append(Data(repeating: 0, count: dataBytes))
        return data
    }

    @Test func tensorsRoundTripWithShapes() throws {
        let data = safetensorsBytes([("a", [2, 3], [1, 2, 3, 4, 5, 6]), ("b", [1], [-7.5])])
        let file = try open(data)
        #expect(try file.floats("a", shape: [2, 3]) == [1, 2, 3, 4, 5, 6])
        #expect(try file.floats("b") == [-7.5])
        #expect(file.entries["a"]?.shape == [2, 3])
    }

    @Test func metadataIsReadAndNotATensor() throws {
        let file = try open(withHeader(#"{"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, dataBytes: 4))
        #expect(file.metadata == ["format": "pt"])
        #expect(Array(file.entries.keys) == ["x"])
    }

    @Test func shortFileIsRejected() {
        expectCorrupt(Data([1, 2, 3]), "shorter than the 8-byte")
    }

    @Test func headerLengthBeyondTheFileIsRejected() {
        var data = withHeader("{}", dataBytes: 0)
        data[0] = 200
        expectCorrupt(data, "header length 200 exceeds the file size")
    }

    @Test func hugeHeaderLengthIsRejected() {
        var data = withHeader("{}", dataBytes: 0)
        data[6] = 1
        expectCorrupt(data, "exceeds the limit")
    }

    @Test func headerThatIsNotJSONIsRejected() {
        expectCorrupt(withHeader("{nope", dataBytes: 0), "not valid JSON")
        expectCorrupt(withHeader("[1,2]", dataBytes: 0), "not a JSON object")
    }

    @Test func offsetsOutsideTheDataAreRejected() {
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, dataBytes: 8),
                      "tensor 'w'", "outside the data section")
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#, dataBytes: 8), "tensor 'w'")
    }

    @Test func shapeThatDisagreesWithOffsetsIsRejected() {
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, dataBytes: 8),
                      "tensor 'w'", "needs 3 × 4 bytes")
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}"#, dataBytes: 8),
                      "tensor 'w'", "shape")
    }

    @Test func overlappingTensorsAreRejected() {
        let json = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        expectCorrupt(withHeader(json, dataBytes: 12), "'a' and 'b' overlap")
    }

    @Test func unknownDtypeAndMissingFieldsAreRejected() {
        expectCorrupt(withHeader(#"{"w":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#, dataBytes: 4), "tensor 'w'", "unknown dtype F33")
        expectCorrupt(withHeader(#"{"w":{"shape":[1],"data_offsets":[0,4]}}"#, dataBytes: 4), "tensor 'w'", "missing dtype")
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#, dataBytes: 4), "tensor 'w'", "missing shape")
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":[1]}}"#, dataBytes: 4), "tensor 'w'", "data_offsets")
    }

    @Test func nonFloatMissingAndMisshapenTensorsNameTheTensor() throws {
        let file = try open(withHeader(#"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, dataBytes: 16))
        #expect(throws: SteerError(.corrupt, "t.safetensors: tensor 'ids' has dtype I64, expected F32")) { try file.floats("ids") }
        #expect(throws: SteerError(.corrupt, "t.safetensors: tensor 'gone' is missing")) { try file.floats("gone") }
        #expect(throws: SteerError(.corrupt, "t.safetensors: tensor 'w' has shape [2], expected [3]")) { try file.floats("w", shape: [3]) }
    }

    // MARK: Crafted headers (the file is untrusted): every declared size is checked before use.

    @Test func deeplyNestedHeadersAreRefusedBeforeParsing() {
        let deep = String(repeating: "[", count: 200_000) + String(repeating: "]", count: 200_000)
        expectCorrupt(withHeader(#"{"w":"# + deep + "}", dataBytes: 0), "nests deeper than 8")
        // Brackets inside strings do not count.
        let quoted = #"{"__metadata__":{"note":"[[[[[[[[[[[[[[[[[[[[\"{{{{{{{{{{"}}"#
        #expect(throws: Never.self) { _ = try open(withHeader(quoted, dataBytes: 0)) }
    }

    @Test func headerLengthLimitIsSixteenMiB() {
        var data = withHeader("{}", dataBytes: 0)
        let length = UInt64(SafeTensorsFile.maxHeaderBytes + 1)
        for i in 0..<8 { data[i] = UInt8(truncatingIfNeeded: length >> (8 * UInt64(i))) }
        data.append(Data(count: Int(length)))
        expectCorrupt(data, "exceeds the limit of 16777216 bytes")
    }

    @Test func rankAndTensorCountAreBounded() {
        let shape = "[" + Array(repeating: "1", count: 9).joined(separator: ",") + "]"
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":"# + shape + #","data_offsets":[0,4]}}"#, dataBytes: 4),
                      "tensor 'w'", "9 dimensions, limit is 8")
        let entries = (0...SafeTensorsFile.maxTensors).map { #""t\#($0)":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}"# }
        expectCorrupt(withHeader("{" + entries.joined(separator: ",") + "}", dataBytes: 0), "limit is 65536 tensors")
    }

    @Test func shapesWhoseProductOverflowsOrExceedsTheFileAreRefused() {
        // 2^31-1 cubed overflows Int; 65536 × 65536 F32 is 16 GiB that the file does not hold.
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":[2147483647,2147483647,2147483647],"data_offsets":[0,4]}}"#, dataBytes: 4),
                      "tensor 'w'", "too large")
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":[65536,65536],"data_offsets":[0,4]}}"#, dataBytes: 4),
                      "tensor 'w'", "needs 4294967296 × 4 bytes")
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,17179869184]}}"#, dataBytes: 4),
                      "tensor 'w'", "outside the data section")
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, dataBytes: 4), "tensor 'w'")
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, dataBytes: 4), "tensor 'w'", "shape")
        expectCorrupt(withHeader(#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, dataBytes: 8), "tensor 'w'", "data_offsets")
    }

    @Test func missingFileIsNotFound() {
        #expect(throws: SteerError(.notFound, "/nonexistent/x.safetensors: no such file")) {
            try SafeTensorsFile(path: "/nonexistent/x.safetensors")
        }
    }
}
