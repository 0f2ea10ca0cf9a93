import Foundation
import SteerCore
import Testing
@testable import SteerModel

@Suite struct MiniLMTests {
    /// docs/dependencies.md's golden rows (sentence-transformers): token ids and the first 6 embedding values.
    static let golden: [(text: String, ids: [Int32], first6: [Float])] = [
        ("more comedies", [101, 2062, 22092, 102], [0.007315, -0.108954, 0.012962, -0.007446, -0.015822, 0.020178]),
        ("no horror, please", [101, 2053, 5469, 1010, 3531, 102],
         [-0.049255, 0.060981, -0.025249, 0.011183, -0.020148, -0.050939]),
        ("Café déjà vu: Sci-Fi & Fantasy!!", [101, 7668, 2139, 3900, 24728, 1024, 16596, 1011, 10882, 1004, 5913, 999, 999, 102],
         [-0.018103, -0.044808, 0.048011, 0.057469, 0.028168, 0.046002]),
    ]

    /// More rows from Tools/train's Python tokenizer (which matches sentence-transformers on the rows above):
    /// accents, punctuation, unknown characters, over-long words, CJK, full-width, odd whitespace.
    static let tokenRows: [(text: String, ids: [Int32])] = [
        ("naïve RÉSUMÉ", [101, 15743, 13746, 102]),
        ("Hello,world...(ok)?", [101, 7592, 1010, 2088, 1012, 1012, 1012, 1006, 7929, 1007, 1029, 102]),
        ("snowman ☃ here", [101, 4586, 2386, 100, 2182, 102]),
        (String(repeating: "a", count: 101), [101, 100, 102]),
        (String(repeating: "x", count: 100), [101, 22038] + Array(repeating: 20348, count: 49) + [102]),
        ("中文电影", [101, 1746, 1861, 100, 100, 102]),
        ("don\u{2019}t stop", [101, 2123, 1521, 1056, 2644, 102]),
        ("ＦＵＬＬ width", [101, 100, 9381, 102]),
        ("tab\there\u{00A0}nbsp", [101, 21628, 2182, 1050, 5910, 2361, 102]),
        ("unaffable xyzzyq", [101, 14477, 20961, 3468, 1060, 2100, 28753, 4160, 102]),
        ("", [101, 102]),
        ("İstanbul Ωmega", [101, 9960, 1179, 4168, 3654, 102]),
        ("ΟΔΟΣ ΣΑΣ.", [101, 1169, 29722, 15297, 1173, 14608, 19579, 1012, 102]),  // Final_Sigma, as Python's lower()
        ("ΣΑΣ, no ΦΙΛΟΣ", [101, 1173, 14608, 19579, 1010, 2053, 1176, 18199, 29727, 15297, 102]),
    ]

    @Test func tokenIDsMatchTheGoldenRows() throws {
        let tokenizer = try sharedEncoder().tokenizer
        for row in Self.golden { #expect(tokenizer.encode(row.text) == row.ids, "\(row.text)") }
        for row in Self.tokenRows { #expect(tokenizer.encode(row.text) == row.ids, "\(row.text)") }
    }

    @Test func longInputIsTruncatedTo256Tokens() throws {
        let tokenizer = try sharedEncoder().tokenizer
        let ids = tokenizer.encode(Array(repeating: "horror", count: 400).joined(separator: " "))
        #expect(ids.count == 256)
        #expect(ids.first == 101 && ids.last == 102)
        #expect(ids[1...254].allSatisfy { $0 == 5469 })
    }

    @Test func embeddingsMatchFindingsWithin1e5() throws {
        let encoder = try sharedEncoder()
        for row in Self.golden {
            let embedding = encoder.embed(row.text)
            #expect(embedding.count == 384)
            // FINDINGS prints 6 decimals: allow the rounding (5e-7) on top of 1e-5.
            #expect(maxAbsDifference(Array(embedding.prefix(6)), row.first6) <= 1.05e-5, "\(row.text): \(embedding.prefix(6))")
            let norm = embedding.reduce(0) { $0 + $1 * $1 }.squareRoot()
            #expect(abs(norm - 1) < 1e-5)
        }
    }

    @Test func embeddingsMatchTheGoldenFilesClauseEmbeddings() throws {
        let encoder = try sharedEncoder()
        var checked = 0
        for name in FixtureNames.all {
            let golden = try #require(try readJSON(Paths.fixture(name) + "/golden.json") as? [String: Any])
            for case let item as [String: Any] in golden["cases"] as? [Any] ?? [] {
                for case let clause as [String: Any] in item["clauses"] as? [Any] ?? [] {
                    let text = try #require(clause["text"] as? String)
                    let difference = maxAbsDifference(encoder.embed(text), floats(clause["embedding"]))
                    #expect(difference <= 1e-5, "\(text): max |Δ| \(difference)")
                    checked += 1
                }
            }
        }
        #expect(checked >= 20)
    }

    @Test func batchedEmbeddingsEqualSingleOnes() throws {
        let encoder = try sharedEncoder()
        let texts = ["comedy", "no horror, please", "Café déjà vu: Sci-Fi & Fantasy!!", "a much longer clause about space westerns"]
        let batch = encoder.embed(batch: texts.map { encoder.tokenizer.encode($0) })
        #expect(batch.count == texts.count)
        for (text, embedding) in zip(texts, batch) {
            #expect(maxAbsDifference(embedding, encoder.embed(text)) <= 1e-6, "\(text)")
        }
        #expect(encoder.embed(batch: []).isEmpty)
    }

    @Test func missingWeightsSayWhatIsMissing() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        try FileManager.default.copyItem(atPath: Paths.minilm + "/vocab.txt", toPath: directory.path + "/vocab.txt")
        #expect(throws: SteerError(.notFound, directory.path + "/model.safetensors: no such file")) {
            try MiniLMEncoder(directory: directory.path)
        }
    }
}
