import Foundation
import SteerCore
import Testing
@testable import SteerProtocol

/// The filter grammar of docs/protocol.md ("Filter expressions"): parsing, errors naming the path,
/// limits, cost, the wire form, and the evaluation semantics.
@Suite struct FilterExpressionTests {
    let decoder = RequestDecoder(limits: ProtocolLimits(maxFilterTerms: 8, maxFilterDepth: 4, maxFilterNodes: 12))

    private func filter(_ json: String) throws(SteerError) -> TagFilter {
        let line = #"{"op":"search","vector":[1],"k":1,"filter":"# + json + "}"
        let root: JSONValue
        do { root = try JSONParser.parse(line) } catch { throw SteerError.invalid("test line does not parse: \(error)") }
        guard case .search(_, let options, _) = try decoder.decode(root).operation else { throw SteerError.invalid("not a search") }
        return options.filter
    }

    private func failure(_ json: String) -> SteerError? {
        do {
            _ = try filter(json)
            return nil
        } catch {
            return error
        }
    }

    @Test func parsesEveryNodeAndOperator() throws {
        let roomy = RequestDecoder(limits: ProtocolLimits())
        let line = #"{"op":"search","vector":[1],"k":1,"filter":"# + #"""
            {"and":[{"tag":"comedy"},{"or":[{"attr":"year","gte":1990,"lt":2000},{"not":{"attr":"specs.lang","eq":"fr"}}]},
             {"attr":"price","lte":9.5},{"attr":"id","in":[1,"x",true]},{"attr":"id","nin":[2]},{"attr":"flag","ne":false},
             {"attr":"rating","gt":-1},{"attr":"stock","exists":true}]}
            """# + "}"
        guard case .search(_, let options, _) = try roomy.decode(try JSONParser.parse(line)).operation else {
            Issue.record("not a search")
            return
        }
        let parsed = options.filter
        let expected: FilterExpression = .and([
            .tag("comedy"),
            .or([.attribute(AttributePredicate(name: "year", conditions: [.gte(1990), .lt(2000)])),
                 .not(.attribute(AttributePredicate(name: "specs.lang", conditions: [.eq(.string("fr"))])))]),
            .attribute(AttributePredicate(name: "price", conditions: [.lte(9.5)])),
            .attribute(AttributePredicate(name: "id", conditions: [.in([.int(1), .string("x"), .bool(true)])])),
            .attribute(AttributePredicate(name: "id", conditions: [.nin([.int(2)])])),
            .attribute(AttributePredicate(name: "flag", conditions: [.ne(.bool(false))])),
            .attribute(AttributePredicate(name: "rating", conditions: [.gt(-1)])),
            .attribute(AttributePredicate(name: "stock", conditions: [.exists(true)])),
        ])
        #expect(parsed.expression == expected)
        #expect(parsed.tagsAny.isEmpty && parsed.tagsNone.isEmpty)
        #expect(expected.nodeCount == 16)
        #expect(AttributePredicate(name: "specs.lang", conditions: [.exists(true)]).path == ["specs", "lang"])
    }

    @Test func tagListsKeepWorkingBesideAnExpression() throws {
        let both = try filter(#"{"tags_any":["a"],"tags_none":["b"],"attr":"year","gte":2000}"#)
        #expect(both == TagFilter(tagsAny: ["a"], tagsNone: ["b"],
                                  expression: .attribute(AttributePredicate(name: "year", conditions: [.gte(2000)]))))
        #expect(try filter(#"{"tags_any":["a"]}"#) == TagFilter(tagsAny: ["a"]))
    }

    @Test func errorsNameThePathInTheExpression() {
        let cases: [(String, String)] = [
            (#"{"and":[{"tag":"a"},{"tag":"b"},{"attr":"year","gte":"1990"}]}"#, "filter.and[2].gte: expected a number, got a string"),
            (#"{"or":[{"not":{"tag":5}}]}"#, "filter.or[0].not.tag: expected a string, got a number"),
            (#"{"and":{"tag":"a"}}"#, "filter.and: expected an array of nodes, got an object"),
            (#"{"and":[]}"#, "filter.and: must not be empty"),
            (#"{"and":[3]}"#, "filter.and[0]: expected an object, got a number"),
            (#"{"and":[{"bogus":1}]}"#, "filter.and[0]: unknown field 'bogus'; expected one of and, or, not, tag, attr"),
            (#"{"tag":"a","or":[{"tag":"b"}]}"#, "filter: a node has one of and, or, not, tag, attr, got tag and or"),
            (#"{"tag":"a","eq":1}"#, "filter: unknown field 'eq' beside 'tag'"),
            (#"{"tag":""}"#, "filter.tag: must not be empty"),
            (#"{"attr":"year"}"#, "filter: an attr leaf needs one of eq, ne, in, nin, gt, gte, lt, lte, exists"),
            (#"{"attr":"a..b","eq":1}"#, "filter.attr: expected a dotted attribute path without empty parts, got 'a..b'"),
            (#"{"attr":"year","eq":1.5}"#, "filter.eq: expected a string, an integer or a boolean, got a number"),
            (#"{"attr":"year","in":[1,null]}"#, "filter.in[1]: expected a string, an integer or a boolean, got null"),
            (#"{"attr":"year","in":[1,2.5]}"#, "filter.in[1]: expected a string, an integer or a boolean, got a number with a fraction"),
            (#"{"attr":"year","in":[]}"#, "filter.in: must not be empty"),
            (#"{"attr":"year","exists":1}"#, "filter.exists: expected a boolean, got a number"),
            (#"{"attr":"year","gt":1,"gte":2}"#, "filter: 'gt' and 'gte' are two lower bounds in one leaf"),
            (#"{"attr":"year","lt":1,"lte":2}"#, "filter: 'lt' and 'lte' are two upper bounds in one leaf"),
            (#"{"attr":"year","eq":1,"lt":2}"#, "filter: 'eq' cannot share a leaf with another operator (only one lower and one upper bound can)"),
            (#"{"attr":"year","like":"x"}"#, "filter: unknown field 'like' in an attr leaf (expected eq, ne, in, nin, gt, gte, lt, lte, exists)"),
            (#"{"attr":"year","gte":NaN}"#, "filter.gte: expected a finite number"),
            (#"{"tags_any":["a"],"bogus":1}"#, "unknown field 'filter.bogus' (known: tags_any, tags_none, tag_groups, and, or, not, tag, attr)"),
        ]
        for (json, message) in cases {
            let error = failure(json)
            #expect(error?.code == .invalidRequest, "\(json)")
            #expect(error?.message == message, "\(json)")
        }
    }

    @Test func depthNodesAndTagsAreBounded() {
        // Depth 4 is allowed (root = level 1), 5 is not.
        #expect(failure(#"{"not":{"not":{"not":{"tag":"a"}}}}"#) == nil)
        let deep = failure(#"{"not":{"not":{"not":{"not":{"tag":"a"}}}}}"#)
        #expect(deep?.code == .tooLarge)
        #expect(deep?.message == "filter.not.not.not.not: the filter is nested deeper than 4 levels (maxFilterDepth)")
        // 12 nodes are allowed, 13 are not; in/nin values count.
        let six = (0..<6).map { _ in #"{"tag":"a"}"# }.joined(separator: ",")
        #expect(failure(#"{"and":[\#(six),{"attr":"x","in":[1,2,3,4]}]}"#) == nil)
        let over = failure(#"{"and":[\#(six),{"attr":"x","in":[1,2,3,4,5]}]}"#)
        #expect(over?.code == .tooLarge)
        #expect(over?.message == "filter.and[6].in: the filter has more than 12 nodes (maxFilterNodes)")
        // Tag leaves count towards maxFilterTerms with the tag lists.
        let nine = (0..<9).map { #"{"tag":"t\#($0)"}"# }.joined(separator: ",")
        let terms = failure(#"{"or":[\#(nine)]}"#)
        #expect(terms?.code == .tooLarge)
        #expect(failure(#"{"tags_any":["t0","t1"],"or":[{"tag":"t0"},{"tag":"t1"}]}"#) == nil)
    }

    @Test func filterNodesCountInTheQueryCost() throws {
        let cheap = RequestDecoder(limits: ProtocolLimits(maxQueryCost: 10 + 3 * ProtocolLimits.filterNodeUnits))
        let fits = #"{"op":"search","vector":[1],"k":10,"filter":{"or":[{"tag":"a"},{"tag":"b"}]}}"#
        _ = try cheap.decode(try JSONParser.parse(fits))
        let over = #"{"op":"search","vector":[1],"k":10,"filter":{"or":[{"tag":"a"},{"tag":"b"},{"tag":"c"}]}}"#
        let error = #expect(throws: SteerError.self) { try cheap.decode(try JSONParser.parse(over)) }
        #expect(error?.code == .tooLarge)
        #expect(error?.message.contains("+ 4 filter nodes × 64") == true)
        #expect(ProtocolLimits.cost(queries: 2, k: 10, efSearch: 50, nprobe: nil, filterNodes: 3) == 100 + 3 * 64)
    }

    @Test func explainIsAcceptedOnSearchAndRecommend() throws {
        guard case .search(_, let options, _) = try decoder.decode(try JSONParser.parse(#"{"op":"search","vector":[1],"k":1,"explain":true}"#)).operation else {
            Issue.record("not a search")
            return
        }
        #expect(options.explain)
        guard case .recommend(let request) = try decoder.decode(try JSONParser.parse(#"{"op":"recommend","history":[1],"explain":true}"#)).operation else {
            Issue.record("not a recommend")
            return
        }
        #expect(request.explain)
    }

    @Test func declareIndexIsAnAdminOp() throws {
        let request = try decoder.decode(try JSONParser.parse(#"{"op":"declare_index","attr":"specs.year","kind":"numeric"}"#))
        guard case .declareIndex(let attribute, let kind) = request.operation else {
            Issue.record("not declare_index")
            return
        }
        #expect(attribute == "specs.year" && kind == .numeric && request.operation.isAdmin)
        let badKind = #expect(throws: SteerError.self) { try decoder.decode(try JSONParser.parse(#"{"op":"declare_index","attr":"a","kind":"text"}"#)) }
        #expect(badKind?.message == "payload index kind must be 'keyword' or 'numeric', got 'text'")
        #expect(throws: SteerError.self) { try decoder.decode(try JSONParser.parse(#"{"op":"declare_index","kind":"keyword"}"#)) }
    }

    @Test func theRequestEncoderCarriesExpressionExplainOversampleAndDeclareIndex() throws {
        var options = SearchOptions(k: 5, filter: TagFilter(tagsNone: ["x"], expression: .not(.tag("y"))), explain: true)
        options.oversample = 8
        var recommend = RecommendRequest(history: [.int(1)], filter: TagFilter(expression: .attribute(AttributePredicate(name: "a", conditions: [.gt(1)]))))
        recommend.explain = true
        recommend.oversample = 3
        for request in [Request(operation: .search(queries: [[1]], options: options, batch: false)),
                        Request(operation: .recommend(recommend)),
                        Request(operation: .declareIndex(attribute: "specs.year", kind: .numeric))] {
            let decoded = try decoder.decode(try JSONParser.parse(RequestEncoder.encode(request)))
            switch (request.operation, decoded.operation) {
            case (.search(_, let sent, _), .search(_, let got, _)):
                #expect(got.filter == sent.filter && got.explain && got.oversample == 8)
            case (.recommend(let sent), .recommend(let got)):
                #expect(got.filter == sent.filter && got.explain && got.oversample == 3)
            case (.declareIndex(let sentAttribute, let sentKind), .declareIndex(let gotAttribute, let gotKind)):
                #expect(sentAttribute == gotAttribute && sentKind == gotKind)
            default:
                Issue.record("decoded \(decoded.operation.name) for \(request.operation.name)")
            }
        }
    }

    @Test func wireFormParsesBackEqual() throws {
        let expression: FilterExpression = .or([
            .and([.tag("x"), .not(.tag("y"))]),
            .attribute(AttributePredicate(name: "a.b", conditions: [.gte(1.5), .lt(7)])),
            .attribute(AttributePredicate(name: "c", conditions: [.nin([.string("q"), .int(-3), .bool(false)])])),
            .attribute(AttributePredicate(name: "d", conditions: [.exists(false)])),
        ])
        var writer = JSONWriter(capacity: 256)
        writer.raw("{\"op\":\"search\",\"vector\":[1],\"k\":1")
        RequestEncoder.writeFilter(TagFilter(tagsAny: ["p"], tagGroups: [["g"]], expression: expression), &writer)
        writer.raw("}")
        let root = try JSONParser.parse(String(decoding: writer.bytes, as: UTF8.self))
        guard case .search(_, let options, _) = try decoder.decode(root).operation else {
            Issue.record("not a search")
            return
        }
        #expect(options.filter == TagFilter(tagsAny: ["p"], tagGroups: [["g"]], expression: expression))
    }

    @Test func evaluationSemantics() {
        let attributes = #"{"year":1995,"price":9.5,"specs":{"lang":"fr","tags":["a","b"]},"flag":true,"none":null,"list":[1,2.5,"x"]}"#
        func holds(_ predicate: AttributePredicate) -> Bool {
            FilterExpression.attribute(predicate).matches(tags: ["t"], attributesJSON: attributes)
        }
        #expect(holds(AttributePredicate(name: "year", conditions: [.gte(1990), .lt(2000)])))
        #expect(!holds(AttributePredicate(name: "year", conditions: [.gte(1996)])))
        #expect(holds(AttributePredicate(name: "year", conditions: [.eq(.int(1995))])))
        #expect(holds(AttributePredicate(name: "price", conditions: [.gt(9), .lte(9.5)])))
        #expect(holds(AttributePredicate(name: "specs.lang", conditions: [.eq(.string("fr"))])))
        #expect(holds(AttributePredicate(name: "specs.tags", conditions: [.in([.string("b"), .string("z")])])))
        #expect(!holds(AttributePredicate(name: "specs.tags", conditions: [.nin([.string("a")])])))
        #expect(holds(AttributePredicate(name: "flag", conditions: [.eq(.bool(true))])))
        // A boolean is not the number 1.
        #expect(!holds(AttributePredicate(name: "flag", conditions: [.eq(.int(1))])))
        #expect(!holds(AttributePredicate(name: "flag", conditions: [.gte(1)])))
        // Missing and null: no values; ne/nin pass, exists false holds.
        #expect(holds(AttributePredicate(name: "missing", conditions: [.ne(.int(1))])))
        #expect(holds(AttributePredicate(name: "none", conditions: [.exists(false)])))
        #expect(!holds(AttributePredicate(name: "none", conditions: [.exists(true)])))
        #expect(!holds(AttributePredicate(name: "missing", conditions: [.lt(1e300)])))
        // An object is no value; a path through a scalar is missing.
        #expect(!holds(AttributePredicate(name: "specs", conditions: [.exists(true)])))
        #expect(!holds(AttributePredicate(name: "year.x", conditions: [.exists(true)])))
        // Arrays: any element.
        #expect(holds(AttributePredicate(name: "list", conditions: [.gt(2), .lt(3)])))
        #expect(holds(AttributePredicate(name: "list", conditions: [.eq(.string("x"))])))
        // Strings never meet a range.
        #expect(!holds(AttributePredicate(name: "specs.lang", conditions: [.gt(-1e300)])))
        // Tags, not, and, or.
        #expect(FilterExpression.and([.tag("t"), .not(.tag("u"))]).matches(tags: ["t"], attributesJSON: nil))
        #expect(!FilterExpression.or([.tag("u"), .attribute(AttributePredicate(name: "year", conditions: [.exists(true)]))])
            .matches(tags: ["t"], attributesJSON: nil))
    }
}
