import Foundation
import SteerCore
import Testing
@testable import SteerModel

/// The optional `steering.json` (λ, β): the Swift model answers `golden-steering.json` (written by PyTorch with
/// the same λ and β, `steer-train steering`), a checkpoint without the file keeps λ = β = 1, and hostile files
/// are refused naming the file.
@Suite struct SteeringTests {
    /// `demo-sasrec` plus the `demo-sasrec-steering` fixture's `steering.json` in a temporary directory.
    private func steeredCheckpoint(_ directory: TemporaryDirectory, steering: Data? = nil) throws -> String {
        for name in ["config.json", "model.safetensors", "items.jsonl"] {
            try FileManager.default.copyItem(atPath: Paths.fixture("demo-sasrec") + "/" + name, toPath: directory.path + "/" + name)
        }
        let file = directory.path + "/" + DPRSteering.fileName
        if let steering {
            try steering.write(to: URL(fileURLWithPath: file))
        } else {
            try FileManager.default.copyItem(atPath: Paths.fixture("demo-sasrec-steering") + "/" + DPRSteering.fileName, toPath: file)
        }
        return directory.path
    }

    @Test func steeredAnswersMatchPyTorch() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let model = try DPRModel(checkpoint: try steeredCheckpoint(directory), encoder: try sharedEncoder(), cacheCapacity: 64)
        let golden = try #require(try readJSON(Paths.fixture("demo-sasrec-steering") + "/golden-steering.json") as? [String: Any])
        let (lambda, beta) = (Float(try #require(JSONValue.double(golden["soft_scale"] as Any))),
                              Float(try #require(JSONValue.double(golden["hybrid_blend"] as Any))))
        #expect(model.steering.softScale == lambda && model.steering.hybridBlend == beta)
        #expect(lambda != 1 && beta != 1 && beta != 0)
        let plain = try fixtureModel("demo-sasrec")
        #expect(plain.steering == .identity)
        let cases = try #require(golden["cases"] as? [[String: Any]])
        #expect(cases.count >= 8)
        var differs = 0
        for (n, item) in cases.enumerated() {
            let (rows, unknown) = model.rows(for: itemIDs(item["history"]))
            #expect(unknown.isEmpty)
            let prompt = item["prompt"] as? String
            let label = "case \(n) prompt \(prompt ?? "nil")"
            let (soft, encoded) = try model.recommend(historyRows: rows, prompt: prompt, k: 10, mode: .soft)
            #expect(maxAbsDifference(encoded.query, floats(item["query"])) <= 1e-4, "\(label) query")
            #expect(maxAbsDifference(encoded.hybridQuery, floats(item["hybrid_query"])) <= 1e-4, "\(label) hybrid query")
            #expect(ParityTests.rankingsAgree(soft.map(\.id), itemIDs(item["top10"]), scores: floats(item["top10_scores"])),
                    "\(label): top10 \(soft.map(\.id)) vs \(itemIDs(item["top10"]))")
            let (hybrid, _) = try model.recommend(historyRows: rows, prompt: prompt, k: 10, mode: .hybrid)
            #expect(ParityTests.rankingsAgree(hybrid.map(\.id), itemIDs(item["top10_hybrid"]), scores: floats(item["top10_hybrid_scores"])),
                    "\(label): hybrid \(hybrid.map(\.id)) vs \(itemIDs(item["top10_hybrid"]))")
            #expect(maxAbsDifference(hybrid.map(\.score), floats(item["top10_hybrid_scores"])) <= 1e-3, "\(label) hybrid scores")
            // the same model without steering.json answers differently where the prompt has clauses
            let (unsteered, reference) = try plain.recommend(historyRows: rows, prompt: prompt, k: 10, mode: .hybrid)
            if reference.clauses.isEmpty {
                #expect(encoded.query == encoded.userVector && encoded.hybridQuery == encoded.userVector, "\(label)")
            } else if unsteered.map(\.id) != hybrid.map(\.id) {
                differs += 1
            }
        }
        #expect(differs >= 3, "λ and β changed the hybrid ranking of only \(differs) cases")
    }

    @Test func blendEndsAreTheSoftQueryAndTheUserVector() throws {
        for (beta, expectSoft) in [(1.0, true), (0.0, false)] {
            let directory = TemporaryDirectory()
            defer { directory.remove() }
            let json = Data(#"{"format": "steer-dpr-steering", "version": 1, "soft_scale": 0.75, "hybrid_blend": \#(beta)}"#.utf8)
            let model = try DPRModel(checkpoint: try steeredCheckpoint(directory, steering: json), encoder: try sharedEncoder(), cacheCapacity: 8)
            let encoded = try model.encode(historyRows: [3, 4, 5], prompt: "more comedy, no horror")
            #expect(encoded.hybridQuery == (expectSoft ? encoded.query : encoded.userVector))
            let plain = try fixtureModel("demo-sasrec").encode(historyRows: [3, 4, 5], prompt: "more comedy, no horror")
            // λ = 0.75 scales the prompt's part of the query
            for c in encoded.query.indices {
                let expected = plain.userVector[c] + 0.75 * (plain.query[c] - plain.userVector[c])
                #expect(abs(encoded.query[c] - expected) <= 1e-5)
            }
        }
    }

    @Test(arguments: [
        "not json",
        #"{"format": "other", "version": 1, "soft_scale": 1, "hybrid_blend": 1}"#,
        #"{"format": "steer-dpr-steering", "version": 2, "soft_scale": 1, "hybrid_blend": 1}"#,
        #"{"format": "steer-dpr-steering", "version": 1, "soft_scale": "2", "hybrid_blend": 1}"#,
        #"{"format": "steer-dpr-steering", "version": 1, "soft_scale": true, "hybrid_blend": 1}"#,
        #"{"format": "steer-dpr-steering", "version": 1, "soft_scale": 0, "hybrid_blend": 1}"#,
        #"{"format": "steer-dpr-steering", "version": 1, "soft_scale": 1e300, "hybrid_blend": 1}"#,
        #"{"format": "steer-dpr-steering", "version": 1, "soft_scale": 1, "hybrid_blend": 1.5}"#,
        #"{"format": "steer-dpr-steering", "version": 1, "soft_scale": 1, "hybrid_blend": -0.5}"#,
        #"{"format": "steer-dpr-steering", "version": 1, "soft_scale": 1}"#,
        "[1, 2]",
        String(repeating: " ", count: 64 * 1024 + 1),
    ])
    func hostileSteeringFilesAreRefused(content: String) throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = try steeredCheckpoint(directory, steering: Data(content.utf8))
        do {
            _ = try DPRModel(checkpoint: path, encoder: try sharedEncoder(), cacheCapacity: 8)
            Issue.record("loaded a checkpoint with steering.json \(content.prefix(80))")
        } catch let error as SteerError {
            #expect(error.code == .corrupt, "\(error)")
            #expect(error.message.contains(DPRSteering.fileName), "\(error.message)")
        }
    }
}
