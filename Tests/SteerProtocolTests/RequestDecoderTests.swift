import Foundation
import SteerCore
import Testing
@testable import SteerProtocol

@Suite struct RequestDecoderTests {
    let decoder = RequestDecoder(limits: ProtocolLimits(maxK: 100, maxBatch: 3, maxPromptBytes: 10, maxHistory: 4))

    private func decode(_ text: String) throws -> Request {
        try decoder.decode(try JSONParser.parse(text))
    }

    @Test func decodesASearchWithEveryOption() throws {
        let request = try decode(#"{"id":"q1","op":"search","vector":[1,2.5],"k":5,"nprobe":4,"ef_search":64,"filter":{"tags_any":["a"],"tags_none":["b"]}}"#)
        #expect(request.id == .string("q1"))
        guard case .search(let queries, let options, let batch) = request.operation else {
            Issue.record("not a search")
            return
        }
        #expect(queries == [[1, 2.5]])
        #expect(!batch)
        #expect(options.k == 5 && options.nprobe == 4 && options.efSearch == 64)
        #expect(options.filter == TagFilter(tagsAny: ["a"], tagsNone: ["b"]))
        let grouped = try decode(#"{"op":"search","vector":[1],"k":1,"filter":{"tag_groups":[["x","y"],["z"]]}}"#)
        guard case .search(_, let groupedOptions, _) = grouped.operation else { Issue.record("not a search"); return }
        #expect(groupedOptions.filter == TagFilter(tagGroups: [["x", "y"], ["z"]]))
    }

    @Test func decodesBase64AndBatchVectors() throws {
        let b64 = Base64Floats.encode([1, 2])
        guard case .search(let queries, _, let batch) = try decode(#"{"op":"search","vectors":[[1,2],"\#(b64)"],"k":1}"#).operation else {
            Issue.record("not a search")
            return
        }
        #expect(queries == [[1, 2], [1, 2]])
        #expect(batch)
    }

    @Test func decodesRecommendDefaults() throws {
        guard case .recommend(let request) = try decode(#"{"op":"recommend","history":[1,"a"]}"#).operation else {
            Issue.record("not a recommend")
            return
        }
        #expect(request.history == [.int(1), .string("a")])
        #expect(request.k == 10 && request.excludeHistory && request.constraints == .soft && request.prompt == nil)
    }

    @Test(arguments: [
        (#"[1]"#, "invalid_request", "JSON object"),
        (#"{"id":1}"#, "invalid_request", "'op'"),
        (#"{"op":5}"#, "invalid_request", "op must be a string"),
        (#"{"op":"fly"}"#, "unknown_op", "fly"),
        (#"{"op":"ping","id":[1]}"#, "invalid_request", "id must be"),
        (#"{"op":"ping","x":1}"#, "invalid_request", "unknown field 'x'"),
        (#"{"op":"search","k":1}"#, "invalid_request", "vector"),
        (#"{"op":"search","vector":[1],"vector_b64":"AACAPw==","k":1}"#, "invalid_request", "only one"),
        (#"{"op":"search","vector":[],"k":1}"#, "invalid_request", "vector must not be empty"),
        (#"{"op":"search","vector":[1,"a"],"k":1}"#, "invalid_request", "vector[1]"),
        (#"{"op":"search","vector":[1,NaN],"k":1}"#, "invalid_request", "vector[1] is not a finite"),
        (#"{"op":"search","vector":[1,1e39],"k":1}"#, "invalid_request", "vector[1] is not a finite"),
        (#"{"op":"search","vector":[1]}"#, "invalid_request", "'k'"),
        (#"{"op":"search","vector":[1],"k":0}"#, "invalid_request", "k must be at least 1"),
        (#"{"op":"search","vector":[1],"k":101}"#, "too_large", "limit is 100"),
        (#"{"op":"search","vector":[1],"k":1.5}"#, "invalid_request", "k must be an integer"),
        (#"{"op":"search","vector":[1],"k":1,"nprobe":0}"#, "invalid_request", "nprobe"),
        (#"{"op":"search","vector_b64":"@@@@","k":1}"#, "invalid_request", "vector_b64 is not valid base64"),
        (#"{"op":"search","vectors":[[1],[1],[1],[1]],"k":1}"#, "too_large", "vectors has 4"),
        (#"{"op":"search","vector":[1],"k":1,"filter":{"tags":["a"]}}"#, "invalid_request", "filter.tags"),
        (#"{"op":"search","vector":[1],"k":1,"filter":{"tags_any":[1]}}"#, "invalid_request", "filter.tags_any[0]"),
        (#"{"op":"search","vector":[1],"k":1,"filter":{"tag_groups":["a"]}}"#, "invalid_request", "filter.tag_groups[0] must be an array"),
        (#"{"op":"search","vector":[1],"k":1,"filter":{"tag_groups":[[]]}}"#, "invalid_request", "filter.tag_groups[0] must not be empty"),
        (#"{"op":"search","vector":[1],"k":1,"filter":{"tag_groups":{}}}"#, "invalid_request", "filter.tag_groups must be an array"),
        (#"{"op":"upsert","items":[]}"#, "invalid_request", "items must not be empty"),
        (#"{"op":"upsert","items":[{"id":1}]}"#, "invalid_request", "items[0]: missing field 'vector'"),
        (#"{"op":"upsert","items":[{"id":1,"vector":[1]},{"id":1,"vector":[2]}]}"#, "invalid_request", "duplicates items[0]"),
        (#"{"op":"upsert","items":[{"id":"","vector":[1]}]}"#, "invalid_request", "items[0].id"),
        (#"{"op":"upsert","items":[{"id":1.5,"vector":[1]}]}"#, "invalid_request", "items[0].id must be"),
        (#"{"op":"upsert","items":[{"id":1,"vector":[1],"tags":"a"}]}"#, "invalid_request", "items[0].tags"),
        (#"{"op":"upsert","items":[{"id":1,"vector":[1],"attributes":[1]}]}"#, "invalid_request", "items[0].attributes"),
        (#"{"op":"upsert","items":[{"id":1,"vector":[1],"colour":"red"}]}"#, "invalid_request", "items[0].colour"),
        (#"{"op":"delete","ids":[]}"#, "invalid_request", "ids must not be empty"),
        (#"{"op":"get","ids":"a"}"#, "invalid_request", "ids must be an array"),
        (#"{"op":"get","ids":[1,2,3,4]}"#, "too_large", "ids has 4"),
        (#"{"op":"recommend","history":[1],"prompt":"far too long prompt"}"#, "too_large", "prompt"),
        (#"{"op":"recommend","history":[1],"constraints":"strict"}"#, "invalid_request", "constraints"),
        (#"{"op":"recommend","history":[1,2,3,4,5]}"#, "too_large", "history has 5"),
        (#"{"op":"recommend","history":[1],"exclude_history":"yes"}"#, "invalid_request", "exclude_history"),
        (#"{"op":"swap"}"#, "invalid_request", "generation"),
    ])
    func rejectsWithASpecificCodeNamingTheField(text: String, code: String, fragment: String) {
        do {
            _ = try decode(text)
            Issue.record("accepted \(text)")
        } catch let error as SteerError {
            #expect(error.code.rawValue == code, "\(text): \(error)")
            #expect(error.message.contains(fragment), "\(text): \(error.message)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func limitsAcceptTheBoundaryValue() throws {
        guard case .search(_, let options, _) = try decode(#"{"op":"search","vector":[1],"k":100}"#).operation else {
            Issue.record("not a search")
            return
        }
        #expect(options.k == 100)
        guard case .search(let queries, _, _) = try decode(#"{"op":"search","vectors":[[1],[2],[3]],"k":1}"#).operation else {
            Issue.record("not a search")
            return
        }
        #expect(queries.count == 3)
        guard case .get(let ids) = try decode(#"{"op":"get","ids":[1,2,3]}"#).operation else {
            Issue.record("not a get")
            return
        }
        #expect(ids.count == 3)
        guard case .recommend(let request) = try decode(#"{"op":"recommend","history":[1,2,3,4],"prompt":"0123456789"}"#).operation else {
            Issue.record("not a recommend")
            return
        }
        #expect(request.history.count == 4 && request.prompt == "0123456789")
        let longestID = String(repeating: "i", count: ItemID.maxStringBytes)
        guard case .get(let long) = try decode(#"{"op":"get","ids":["\#(longestID)"]}"#).operation else {
            Issue.record("not a get")
            return
        }
        #expect(long == [.string(longestID)])
        #expect(throws: SteerError.self) { _ = try decode(#"{"op":"get","ids":["\#(longestID)i"]}"#) }
    }

    @Test func timeoutMsIsDecodedOnEveryOpAndBounded() throws {
        #expect(try decode(#"{"op":"ping","timeout_ms":250}"#).timeoutMillis == 250)
        #expect(try decode(#"{"op":"search","vector":[1],"k":1,"timeout_ms":1}"#).timeoutMillis == 1)
        #expect(try decode(#"{"op":"stats"}"#).timeoutMillis == nil)
        for bad in [#"{"op":"ping","timeout_ms":0}"#, #"{"op":"ping","timeout_ms":60001}"#, #"{"op":"ping","timeout_ms":"5"}"#,
                    #"{"op":"ping","timeout_ms":1.5}"#] {
            #expect(throws: SteerError.self, "\(bad)") { _ = try decode(bad) }
        }
    }
}
