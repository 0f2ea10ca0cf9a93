import Foundation
import SteerCore
import Testing
@testable import SteerModel

@Suite struct ClauseParserTests {
    /// Every case of spec/clause_cases.json, the file the Python parser is tested against too.
    @Test func everySharedCaseParsesExactly() throws {
        let cases = try #require(try readJSON(Paths.packageRoot + "/spec/clause_cases.json") as? [[String: Any]])
        #expect(cases.count >= 60)
        for item in cases {
            let prompt = try #require(item["prompt"] as? String)
            let expected = try (item["clauses"] as? [[String: String]] ?? []).map { clause in
                Clause(text: try #require(clause["text"]), polarity: try #require(Polarity(rawValue: clause["polarity"] ?? "")))
            }
            #expect(ClauseParser.parse(prompt) == expected, "prompt: \(prompt)")
        }
    }

    @Test func nilEmptyAndFillerPromptsHaveNoClauses() {
        #expect(ClauseParser.parse(nil).isEmpty)
        #expect(ClauseParser.parse("").isEmpty)
        #expect(ClauseParser.parse("films please").isEmpty)
    }

    @Test func lowercasingFollowsPythonIncludingFinalSigma() {
        #expect(ClauseParser.parse("ΣΑΣ, no ΦΙΛΟΣ") == [
            Clause(text: "\u{03C3}\u{03B1}\u{03C2}", polarity: .positive),
            Clause(text: "\u{03C6}\u{03B9}\u{03BB}\u{03BF}\u{03C2}", polarity: .negative),
        ])
        #expect(UnicodeText.pythonLower("İ") == "i\u{0307}")
        #expect(UnicodeText.pythonLower("ΟΔΟΣ ΣΑΣ") == "\u{03BF}\u{03B4}\u{03BF}\u{03C2} \u{03C3}\u{03B1}\u{03C2}")
        #expect(UnicodeText.pythonLower("Σ") == "\u{03C3}")
    }

    @Test func atMostEightClauses() {
        let prompt = (1...12).map { "genre\($0)" }.joined(separator: ", ")
        let clauses = ClauseParser.parse(prompt)
        #expect(clauses.count == 8)
        #expect(clauses.last?.text == "genre8")
    }

    @Test func stemmingFollowsTheSpec() {
        #expect(TagMapper.stem("comedies") == "comedy")
        #expect(TagMapper.stem("westerns") == "western")
        #expect(TagMapper.stem("children's") == "children")
        #expect(TagMapper.stem("class") == "class")
        #expect(TagMapper.stem("ties") == "tie")
        #expect(TagMapper.stem("bus") == "bus")
        #expect(TagMapper.matchWords("Film-Noir Thrillers") == ["film", "noir", "thriller"])
    }

    @Test func exactTagMatchesUseStemmedContiguousWords() {
        let tags = ["comedy", "film-noir", "children's", "sci-fi", "romance"]
        let mapper = TagMapper(tags: tags, tagEmbeddings: [Float](repeating: 0, count: tags.count * 384), threshold: 0.45)
        #expect(mapper.exactMatches("romantic comedies") == [0])
        #expect(mapper.exactMatches("film noir") == [1])
        #expect(mapper.exactMatches("children") == [2])
        #expect(mapper.exactMatches("sci-fi and romance") == [3, 4])
        #expect(mapper.exactMatches("noir film").isEmpty)
    }

    @Test func similarityFallbackUsesTheThreshold() throws {
        // MovieLens-like genres, embedded by our MiniLM; docs/clause-parser.md's examples.
        let encoder = try sharedEncoder()
        let tags = ["action", "children", "comedy", "horror", "romance"]
        let mapper = TagMapper(tags: tags, tagEmbeddings: tags.flatMap { encoder.embed($0) }, threshold: 0.45)
        #expect(mapper.map("scary", embedding: encoder.embed("scary")) == [3])
        #expect(mapper.map("kids", embedding: encoder.embed("kids")) == [1])
        #expect(mapper.map("funny", embedding: encoder.embed("funny")) == [2])
        #expect(mapper.map("twist ending", embedding: encoder.embed("twist ending")).isEmpty)
    }
}
