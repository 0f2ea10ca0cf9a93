import SteerCore
import Testing
@testable import SteerProtocol

/// `RequestEncoder`, the one encoder the client and the router share: every op survives
/// encode → decode → encode byte for byte, in both vector encodings, with the common fields.
@Suite struct RequestEncoderTests {
    private let decoder = RequestDecoder(limits: ProtocolLimits())

    private func roundTrip(_ request: Request, vectors: RequestEncoder.VectorEncoding) throws -> Request {
        let line = RequestEncoder.encode(request, vectors: vectors)
        let decoded = try decoder.decode(try JSONParser.parse(line))
        #expect(RequestEncoder.encode(decoded, vectors: vectors) == line, "\(String(decoding: line, as: UTF8.self))")
        return decoded
    }

    private static let filter = TagFilter(tagsAny: ["a", "b\"c"], tagsNone: ["x"], tagGroups: [["g1", "g2"], ["h"]])

    private static let operations: [Request.Operation] = [
        .ping,
        .stats,
        .upsert([ItemInput(id: .int(7), vector: [0.5, -1, 3.25], title: "t\n\"quoted\"", tags: ["p", "q"], attributesJSON: #"{"year":1999}"#),
                 ItemInput(id: .string("s-1"), vector: [1, 2, 3])]),
        .delete([.int(1), .string("two")]),
        .get([.string("only")]),
        .search(queries: [[1, 2, 3]], options: SearchOptions(k: 5, nprobe: 3, efSearch: 40, filter: filter), batch: false),
        .search(queries: [[1, 2], [3, 4]], options: SearchOptions(k: 2), batch: true),
        .recommend(RecommendRequest(history: [.int(1), .string("b")], prompt: "more comedies", k: 9, excludeHistory: false,
                                    constraints: .hybrid, filter: TagFilter(tagsNone: ["Horror"]), nprobe: 2, efSearch: 80)),
        .encode(RecommendRequest(history: [], prompt: "x", k: 3, constraints: .hard)),
        .swap(generation: "g2", checkpoint: "/ckpt"),
        .swap(generation: "g3", checkpoint: nil),
        .prepare(generation: "g4", checkpoint: "/ckpt"),
        .activate(generation: "g4"),
    ]

    @Test func everyOperationRoundTrips() throws {
        for operation in Self.operations {
            for vectors in [RequestEncoder.VectorEncoding.json, .base64] {
                let request = Request(id: .string("r-1"), operation: operation, token: "k\"ey", timeoutMillis: 250, fairQueue: 3, minSequence: 11)
                let decoded = try roundTrip(request, vectors: vectors)
                #expect(decoded.operation.name == operation.name)
                #expect(decoded.id == .string("r-1") && decoded.token == "k\"ey" && decoded.timeoutMillis == 250)
                #expect(decoded.fairQueue == 3 && decoded.minSequence == 11)
                let bare = try roundTrip(Request(operation: operation), vectors: vectors)
                #expect(bare.id == nil && bare.token == nil && bare.timeoutMillis == nil && bare.fairQueue == nil && bare.minSequence == nil)
            }
        }
    }

    @Test func minSequencesRoundTrip_andAreValidated() throws {
        let decoded = try roundTrip(Request(operation: .get([.int(1)]), minSequences: [0, 7, 1 << 40]), vectors: .base64)
        #expect(decoded.minSequences == [0, 7, 1 << 40])
        for bad in [#"[]"#, #"[-1]"#, #"[1.5]"#, #""x""#, "[" + Array(repeating: "1", count: Request.maxShardSequences + 1).joined(separator: ",") + "]"] {
            #expect(throws: SteerError.self) {
                _ = try decoder.decode(try JSONParser.parse(#"{"op":"ping","min_sequences":\#(bad)}"#))
            }
        }
    }

    @Test func valuesSurviveExactly() throws {
        let upsert = try roundTrip(Request(operation: Self.operations[2]), vectors: .base64)
        guard case .upsert(let items) = upsert.operation else { Issue.record("not an upsert"); return }
        #expect(items.count == 2 && items[0].vector == [0.5, -1, 3.25] && items[0].title == "t\n\"quoted\"")
        #expect(items[0].tags == ["p", "q"] && items[0].attributesJSON == #"{"year":1999}"# && items[1].id == .string("s-1"))
        let search = try roundTrip(Request(operation: Self.operations[5]), vectors: .json)
        guard case .search(let queries, let options, let batch) = search.operation else { Issue.record("not a search"); return }
        #expect(queries == [[1, 2, 3]] && !batch && options.k == 5 && options.nprobe == 3 && options.efSearch == 40)
        #expect(options.filter == Self.filter)
        let recommend = try roundTrip(Request(operation: Self.operations[7]), vectors: .json)
        guard case .recommend(let request) = recommend.operation else { Issue.record("not a recommend"); return }
        #expect(request.history == [.int(1), .string("b")] && request.prompt == "more comedies" && request.k == 9)
        #expect(!request.excludeHistory && request.constraints == .hybrid && request.filter.tagsNone == ["Horror"])
        #expect(request.nprobe == 2 && request.efSearch == 80)
    }

    @Test func commonFieldsAppendToAnEncodedLine() throws {
        let line = RequestEncoder.encode(Request(operation: .get([.int(1)])))
        #expect(RequestEncoder.appendingCommonFields(to: line, token: nil, timeoutMillis: nil) == line)
        let hostile = #"x","op":"swap","generation":"g9"#
        let decoded = try decoder.decode(try JSONParser.parse(RequestEncoder.appendingCommonFields(to: line, token: hostile, timeoutMillis: 9, fairQueue: 4)))
        #expect(decoded.token == hostile && decoded.timeoutMillis == 9 && decoded.fairQueue == 4 && decoded.operation.name == "get")
    }
}
