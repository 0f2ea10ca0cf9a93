import Foundation
import SteerCore
import Testing
@testable import SteerModel

/// Corruption cases on a copy of the SASRec demo fixture: each must name the file and what is wrong.
@Suite struct CheckpointTests {
    /// Copies the fixture, lets `edit` damage it, loads it and returns the error.
    private func loadError(_ fixture: String = "demo-sasrec", edit: (String) throws -> Void) throws -> SteerError? {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        for name in ["config.json", "model.safetensors", "items.jsonl"] {
            try FileManager.default.copyItem(atPath: Paths.fixture(fixture) + "/" + name, toPath: directory.path + "/" + name)
        }
        try edit(directory.path)
        do {
            _ = try DPRModel(checkpoint: directory.path, encoder: try sharedEncoder())
            return nil
        } catch let error as SteerError {
            return error
        }
    }

    private func editConfig(_ directory: String, _ change: (inout [String: Any]) -> Void) throws {
        let path = directory + "/config.json"
        var object = try #require(try readJSON(path) as? [String: Any])
        change(&object)
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
    }

    private func editTensors(_ directory: String, _ change: (inout [(name: String, shape: [Int], values: [Float])]) -> Void) throws {
        let path = directory + "/model.safetensors"
        var tensors = try readTensors(path)
        change(&tensors)
        try safetensorsBytes(tensors).write(to: URL(fileURLWithPath: path))
    }

    private func expect(_ error: SteerError?, _ code: SteerError.Code, _ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation) {
        guard let error else {
            Issue.record("the damaged checkpoint loaded", sourceLocation: sourceLocation)
            return
        }
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(error.message.contains(fragment), "\(error.message) lacks \(fragment)", sourceLocation: sourceLocation)
        }
    }

    @Test func fixturesLoadWithTheirConfiguration() throws {
        let model = try fixtureModel("demo-sasrec")
        #expect(model.config.backbone == .sasrec)
        #expect(model.config.indexDimension == model.config.d + model.config.dAux)
        #expect(model.catalog.count == model.config.itemCount)
        #expect(model.itemEmbeddings.count == model.config.itemCount * model.config.indexDimension)
        #expect(model.row(of: model.catalog[5].id) == 5)
        #expect(model.row(of: .string("no such item")) == nil)
        let gru = try fixtureModel("demo-gru4rec")
        #expect(gru.config.backbone == .gru4rec)
    }

    @Test func wrongFormatOrVersionIsRefused() throws {
        expect(try loadError { try editConfig($0) { $0["format"] = "other" } }, .corrupt, "config.json", "format is 'other'")
        expect(try loadError { try editConfig($0) { $0["version"] = 2 } }, .corrupt, "config.json", "version 2 is not supported")
    }

    @Test func missingOrInvalidConfigKeysAreNamed() throws {
        expect(try loadError { try editConfig($0) { $0["d"] = nil } }, .corrupt, "config.json", "missing key 'd'")
        expect(try loadError { try editConfig($0) { $0["max_len"] = "long" } }, .corrupt, "'max_len' must be an integer")
        expect(try loadError { try editConfig($0) { $0["index_dim"] = 41 } }, .corrupt, "index_dim 41 != d + d_aux")
        expect(try loadError { try editConfig($0) { $0["backbone"] = "bert4rec" } }, .corrupt, "backbone 'bert4rec'")
        expect(try loadError { try editConfig($0) { $0["n_experts"] = ["positive": 2] } }, .corrupt, "n_experts.negative")
        expect(try loadError { try editConfig($0) { $0["prompt_dim"] = 768 } }, .corrupt, "prompt_dim 768")
        expect(try loadError { try editConfig($0) { $0["activations"] = ["ffn": "gelu"] } }, .corrupt, "activations.ffn")
        expect(try loadError { try "{oops".write(toFile: $0 + "/config.json", atomically: true, encoding: .utf8) },
               .corrupt, "config.json", "not valid JSON")
    }

    @Test func missingTensorIsNamed() throws {
        let error = try loadError { try editTensors($0) { $0.removeAll { $0.name == "head.pos.gate.bias" } } }
        expect(error, .corrupt, "model.safetensors", "tensor 'head.pos.gate.bias' is missing")
        let block = try loadError { try editTensors($0) { $0.removeAll { $0.name == "backbone.blocks.1.fc2.weight" } } }
        expect(block, .corrupt, "tensor 'backbone.blocks.1.fc2.weight' is missing")
        let gru = try loadError("demo-gru4rec") { try editTensors($0) { $0.removeAll { $0.name == "backbone.gru.weight_hh" } } }
        expect(gru, .corrupt, "tensor 'backbone.gru.weight_hh' is missing")
    }

    @Test func wrongShapeIsNamed() throws {
        let error = try loadError {
            try editTensors($0) { tensors in
                let i = tensors.firstIndex { $0.name == "head.proj.weight" }!
                tensors[i] = (tensors[i].name, [32, 383], Array(tensors[i].values.prefix(32 * 383)))
            }
        }
        expect(error, .corrupt, "tensor 'head.proj.weight' has shape [32, 383], expected [32, 384]")
        let items = try loadError {
            try editTensors($0) { tensors in
                let i = tensors.firstIndex { $0.name == "item_embeddings" }!
                tensors[i] = (tensors[i].name, [399, 40], Array(tensors[i].values.prefix(399 * 40)))
            }
        }
        expect(items, .corrupt, "tensor 'item_embeddings' has shape [399, 40], expected [400, 40]")
    }

    @Test func scoringTableMustStartWithTheInputTable() throws {
        let error = try loadError {
            try editTensors($0) { tensors in
                let i = tensors.firstIndex { $0.name == "item_embeddings" }!
                tensors[i].values[7 * 40 + 3] += 0.5
            }
        }
        expect(error, .corrupt, "item_embeddings row 7, columns 0..<32 differ from backbone.input_embeddings")
    }

    @Test func unexpectedTensorMeansAnotherModel() throws {
        let error = try loadError { try editConfig($0) { $0["n_experts"] = ["positive": 1, "negative": 2] } }
        expect(error, .corrupt, "unexpected tensor 'head.pos.experts.1.fc1.bias'")
    }

    @Test func truncatedWeightsFileIsCorrupt() throws {
        let error = try loadError { directory in
            let path = directory + "/model.safetensors"
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            try data.prefix(data.count - 100).write(to: URL(fileURLWithPath: path))
        }
        expect(error, .corrupt, "model.safetensors", "outside the data section")
    }

    @Test func catalogErrorsNameTheLine() throws {
        let duplicate = try loadError { directory in
            let path = directory + "/items.jsonl"
            var lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
            lines[1] = lines[0]
            try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        }
        expect(duplicate, .corrupt, "items.jsonl:2: duplicate item id 1")
        let badID = try loadError { try #"{"id": 1.5, "title": "x"}"#.write(toFile: $0 + "/items.jsonl", atomically: true, encoding: .utf8) }
        expect(badID, .corrupt, "items.jsonl:1: 'id' must be a string or an integer")
        let short = try loadError { try #"{"id": 1, "title": "x"}"#.write(toFile: $0 + "/items.jsonl", atomically: true, encoding: .utf8) }
        expect(short, .corrupt, "items.jsonl: 1 items, config.json says n_items 400")
    }

    @Test func missingFilesAreNotFound() throws {
        expect(try loadError { try FileManager.default.removeItem(atPath: $0 + "/model.safetensors") }, .notFound, "model.safetensors")
        expect(try loadError { try FileManager.default.removeItem(atPath: $0 + "/config.json") }, .notFound, "config.json")
        #expect(throws: SteerError.self) { try DPRModel.load(checkpoint: Paths.fixture("demo-sasrec"), minilm: "/nonexistent") }
    }
}
