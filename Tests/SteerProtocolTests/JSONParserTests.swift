import Foundation
import SteerCore
import Testing
@testable import SteerProtocol

@Suite struct JSONParserTests {
    @Test func parsesScalarsObjectsAndArrays() throws {
        let value = try JSONParser.parse(#" {"a": 1, "b": [true, false, null], "c": "x\"y", "d": -0.5e1, "e": {}} "#)
        guard case .object(let object) = value else {
            Issue.record("not an object")
            return
        }
        #expect(object["a"] == .int(1))
        #expect(object["b"] == .array([.bool(true), .bool(false), .null]))
        #expect(object["c"] == .string("x\"y"))
        #expect(object["d"] == .double(-5))
        #expect(object["e"] == .object(JSONObject()))
    }

    @Test func integerArraysKeepExact64BitValues() throws {
        let value = try JSONParser.parse("[9223372036854775807, -9223372036854775808, 0]")
        #expect(value == .array([.int(.max), .int(.min), .int(0)]))
    }

    @Test func mixedNumberArraysTakeTheFloatFastPath() throws {
        #expect(try JSONParser.parse("[1, 0.5, -2e-3]") == .floats([1, 0.5, -0.002]))
    }

    @Test func floatsRoundTripThroughTheWriterExactly() throws {
        var generator = SeededGenerator(seed: 7)
        var values: [Float] = []
        for _ in 0..<2000 { values.append(Float.random(in: -1000...1000, using: &generator) * Float.random(in: 0.0001...1, using: &generator)) }
        values += [Float.leastNormalMagnitude, Float.greatestFiniteMagnitude, 1e-30, 3.4e38, 0.1, 1.0 / 3.0]
        var writer = JSONWriter()
        writer.floats(values)
        guard case .floats(let parsed) = try JSONParser.parse(writer.bytes) else {
            Issue.record("expected the float fast path")
            return
        }
        #expect(parsed == values)
    }

    @Test func longMantissasFallBackToTheCLibraryAndStayCorrect() throws {
        #expect(try JSONParser.parse("[0.12345678901234567890123, 1]") == .floats([0.12345678901234567890123, 1]))
        #expect(try JSONParser.parse("1e300") == .double(1e300))
        #expect(try JSONParser.parse("123456789012345678901234") == .double(Double("123456789012345678901234")!))
    }

    @Test func seventeenDigitLiteralsParseExactlyAsSwiftDoes() throws {
        // Python's json writes doubles with up to 17 significant digits: past the exact fast path, these go
        // through the stack-buffer strtod path and must agree bit for bit with Double(String).
        var generator = SeededGenerator(seed: 11)
        var literals: [String] = ["0.12345678901234568", "-9.999999999999999e-309", "1.7976931348623157e308",
                                  "4.9406564584124654e-324", "123456789012345678901234567890", "2.2250738585072011e-308"]
        for _ in 0..<2000 {
            let value = Double(bitPattern: UInt64.random(in: 0...UInt64.max, using: &generator))
            if value.isFinite { literals.append(String(format: "%.17g", value)) }
            let small = Double.random(in: -1...1, using: &generator)
            literals.append(String(format: "%.17g", small))
        }
        for literal in literals {
            switch try JSONParser.parse(literal) {
            case .double(let value): #expect(value.bitPattern == Double(literal)!.bitPattern, "\(literal)")
            case .int(let value): #expect(Double(value) == Double(literal)!, "\(literal)")
            case let other: Issue.record("\(literal) parsed to \(other)")
            }
        }
    }

    @Test func nonStandardNonFiniteTokensParseForValidation() throws {
        #expect(try JSONParser.parse("[1.5, NaN]").floatsNaNCount == 1)
        #expect(try JSONParser.parse("-Infinity") == .double(-.infinity))
    }

    @Test func stringsDecodeEscapesAndSurrogatePairs() throws {
        #expect(try JSONParser.parse(#""a\n\t\u00e9\ud83d\ude00\/""#) == .string("a\n\té😀/"))
    }

    @Test(arguments: [
        ("", "unexpected end"), ("{", "end of input"), ("[1,]", "expected a value"), ("{\"a\" 1}", "expected ':'"),
        ("01", "leading zero"), ("1.", "digit after '.'"), ("1e", "exponent"), ("-", "end of input"), ("tru", "true"),
        ("\"abc", "unterminated"), ("\"a\\x\"", "invalid escape"), ("\"\\ud800\"", "surrogate"), ("{\"a\":1,\"a\":2}", "duplicate"),
        ("[1] 2", "after the JSON value"), ("\"\u{01}\"", "control character"),
    ])
    func rejectsMalformedJSONWithAPosition(text: String, fragment: String) {
        #expect {
            _ = try JSONParser.parse(text)
        } throws: { error in
            guard let error = error as? SteerError else { return false }
            return error.code == .parseError && error.message.contains(fragment) && error.message.contains("at byte")
        }
    }

    @Test func rejectsInvalidUTF8InStrings() {
        let bytes: [UInt8] = Array("{\"a\":\"".utf8) + [0xC3, 0x28] + Array("\"}".utf8)
        #expect(throws: SteerError.self) { _ = try JSONParser.parse(bytes) }
    }

    @Test func limitsNesting() throws {
        let deep = String(repeating: "[", count: JSONParser.maxDepth + 1) + String(repeating: "]", count: JSONParser.maxDepth + 1)
        #expect(throws: SteerError.self) { _ = try JSONParser.parse(deep) }
        let ok = String(repeating: "[", count: JSONParser.maxDepth) + String(repeating: "]", count: JSONParser.maxDepth)
        _ = try JSONParser.parse(ok)
    }

    @Test func limitsFieldsPerObject() throws {
        func object(_ fields: Int) -> String {
            "{" + (0..<fields).map { "\"k\($0)\":\($0)" }.joined(separator: ",") + "}"
        }
        let widest = try JSONParser.parse(object(JSONParser.maxObjectFields))
        guard case .object(let fields) = widest else { Issue.record("not an object"); return }
        #expect(fields.fields.count == JSONParser.maxObjectFields)
        #expect(fields["k1023"] == .int(1023))
        do {
            _ = try JSONParser.parse(object(JSONParser.maxObjectFields + 1))
            Issue.record("an object over the field limit parsed")
        } catch {
            #expect(error.code == .parseError)
            #expect(error.message.contains("more than \(JSONParser.maxObjectFields) fields"))
        }
    }

    @Test func findsDuplicateFieldsInWideObjects() throws {
        for (position, width) in [(3, 10), (15, 16), (16, 17), (700, 1000)] {
            var keys = (0..<width).map { "k\($0)" }
            keys.append("k\(position)")
            let text = "{" + keys.map { "\"\($0)\":0" }.joined(separator: ",") + "}"
            #expect(throws: SteerError.self, "duplicate at \(position) of \(width)") { _ = try JSONParser.parse(text) }
        }
    }

    /// Duplicate-name detection used to compare every field with every earlier one: 1,000 objects of 1,000
    /// fields took seconds. Wide objects must cost about what the same bytes in narrow objects cost.
    @Test func wideObjectsParseInLinearTime() throws {
        func line(fieldsPerObject: Int, objects: Int) -> [UInt8] {
            let body = "{" + (0..<fieldsPerObject).map { "\"field\($0)\":1" }.joined(separator: ",") + "}"
            return Array(("[" + Array(repeating: body, count: objects).joined(separator: ",") + "]").utf8)
        }
        let wide = line(fieldsPerObject: 1000, objects: 60)
        let narrow = line(fieldsPerObject: 10, objects: 6000)
        func fastest(_ bytes: [UInt8]) throws -> Double {
            var best = Double.infinity
            for _ in 0..<3 {
                let start = DispatchTime.now().uptimeNanoseconds
                _ = try JSONParser.parse(bytes)
                best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start))
            }
            return best
        }
        let ratio = try fastest(wide) / fastest(narrow)
        #expect(ratio < 4, "1000-field objects parse \(ratio)x slower than the same bytes in 10-field objects")
    }

    @Test func writerEscapesStringsAndWritesValues() throws {
        var writer = JSONWriter()
        writer.value(.object(JSONObject([("k", .string("a\"\\\n\u{01}é")), ("n", .int(-42)), ("f", .floats([0.25, .nan]))])))
        let text = String(decoding: writer.bytes, as: UTF8.self)
        #expect(text == #"{"k":"a\"\\\n\u0001é","n":-42,"f":[0.25,null]}"#)
        let reparsed = try JSONSerialization.jsonObject(with: Data(writer.bytes)) as? [String: Any]
        #expect(reparsed?["k"] as? String == "a\"\\\n\u{01}é")
    }

    @Test func base64RoundTripsAndRejectsBadInput() throws {
        let values: [Float] = [1, -2.5, 0, .greatestFiniteMagnitude, 1e-20]
        let text = Base64Floats.encode(values)
        #expect(try Base64Floats.decode(text, field: "v") == values)
        #expect(Data(base64Encoded: text).map { $0.count } == 20)
        #expect(throws: SteerError.self) { _ = try Base64Floats.decode("AAA", field: "v") }
        #expect(throws: SteerError.self) { _ = try Base64Floats.decode("AA==", field: "v") } // 1 byte
        #expect(throws: SteerError.self) { _ = try Base64Floats.decode("AAA*AAAA", field: "v") }
        #expect(throws: SteerError.self) { _ = try Base64Floats.decode("", field: "v") }
        #expect(throws: SteerError.self) { _ = try Base64Floats.decode("AA=AAAAA", field: "v") } // padding inside
        #expect(throws: SteerError.self) { _ = try Base64Floats.decode("AAAAA===", field: "v") } // three '='
    }

    @Test func base64MatchesFoundationForEveryLengthUpTo67Floats() throws {
        // Every tail length (0, 1 or 2 padding characters) against Foundation's decoder of the same text.
        var generator = SeededGenerator(seed: 5)
        for count in 1...67 {
            let values = (0..<count).map { _ in Float.random(in: -1e6...1e6, using: &generator) }
            let text = Base64Floats.encode(values)
            let decoded = try Base64Floats.decode(text, field: "v")
            #expect(decoded == values)
            let bytes = try #require(Data(base64Encoded: text))
            let reference = bytes.withUnsafeBytes { raw in (0..<count).map { Float(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)) } }
            #expect(decoded == reference)
        }
        // A byte count that is not a multiple of 4 is refused for every padding form.
        for bad in ["AAAAAA==", "AAAAAAA=", "AAAAAAAAAAAA"] where Data(base64Encoded: bad)!.count % 4 != 0 {
            #expect(throws: SteerError.self) { _ = try Base64Floats.decode(bad, field: "v") }
        }
    }
}

extension JSONValue {
    var floatsNaNCount: Int {
        guard case .floats(let values) = self else { return -1 }
        return values.filter(\.isNaN).count
    }
}
