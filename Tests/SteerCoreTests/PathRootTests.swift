import Foundation
import SteerCore
import Testing

/// `PathRoot`: the path policy of `swap` (docs/protocol.md "swap").
@Suite struct PathRootTests {
    /// `base/root/{gen/, gen-link -> ../outside}` and `base/outside/`, removed by `cleanUp`.
    struct Tree {
        let base = NSTemporaryDirectory() + "steer-pathroot-" + UUID().uuidString
        var root: String { base + "/root" }
        var outside: String { base + "/outside" }

        init() throws {
            let manager = FileManager.default
            try manager.createDirectory(atPath: root + "/gen/sub", withIntermediateDirectories: true)
            try manager.createDirectory(atPath: outside, withIntermediateDirectories: true)
            try manager.createSymbolicLink(atPath: root + "/gen-link", withDestinationPath: "../outside")
            try manager.createSymbolicLink(atPath: root + "/inner-link", withDestinationPath: "gen")
        }

        func cleanUp() { try? FileManager.default.removeItem(atPath: base) }
    }

    private func refusal(_ root: PathRoot, _ reference: String) -> SteerError? {
        do {
            _ = try root.resolve(reference, field: "generation")
            return nil
        } catch {
            return error
        }
    }

    @Test func namesAndPathsInsideTheRootResolveToRealPaths() throws {
        let tree = try Tree()
        defer { tree.cleanUp() }
        let root = try PathRoot(tree.root)
        let real = root.path
        #expect(try root.resolve("gen", field: "generation") == real + "/gen")
        #expect(try root.resolve("gen/sub", field: "generation") == real + "/gen/sub")
        #expect(try root.resolve("./gen//sub/", field: "generation") == real + "/gen/sub")
        #expect(try root.resolve(tree.root + "/gen", field: "generation") == real + "/gen")
        #expect(try root.resolve(real + "/gen", field: "generation") == real + "/gen")
        // A link that stays inside resolves to its target.
        #expect(try root.resolve("inner-link", field: "generation") == real + "/gen")
    }

    @Test func escapesAreRefusedWithInvalidRequest() throws {
        let tree = try Tree()
        defer { tree.cleanUp() }
        let root = try PathRoot(tree.root)
        for reference in ["..", "../outside", "gen/../../outside", "gen/..", tree.root + "/../outside", tree.outside,
                          "/etc", "/", "gen-link", "gen-link/", ".", "", "gen\u{0}x", String(repeating: "a/", count: 3000)] {
            let error = refusal(root, reference)
            #expect(error?.code == .invalidRequest, "\(reference): \(String(describing: error))")
            #expect(error?.message.contains("generation") == true, "\(reference): \(String(describing: error))")
        }
    }

    @Test func missingEntriesInsideAreNotFoundAndOutsideNeverProbed() throws {
        let tree = try Tree()
        defer { tree.cleanUp() }
        let root = try PathRoot(tree.root)
        #expect(refusal(root, "nope")?.code == .notFound)
        #expect(refusal(root, tree.root + "/nope")?.code == .notFound)
        // Outside: the same answer whether the path exists or not.
        #expect(refusal(root, tree.base + "/nope")?.code == .invalidRequest)
        #expect(refusal(root, tree.outside)?.code == .invalidRequest)
    }

    @Test func theRootMustBeAnExistingDirectory() throws {
        let tree = try Tree()
        defer { tree.cleanUp() }
        #expect(throws: SteerError.self) { try PathRoot(tree.base + "/missing") }
        #expect(FileManager.default.createFile(atPath: tree.base + "/file", contents: Data([1])))
        #expect(throws: SteerError.self) { try PathRoot(tree.base + "/file") }
        // A root reached through a symbolic link is resolved.
        try FileManager.default.createSymbolicLink(atPath: tree.base + "/root-link", withDestinationPath: tree.root)
        let linked = try PathRoot(tree.base + "/root-link")
        #expect(linked.path == (try PathRoot(tree.root)).path)
        #expect(try linked.resolve(tree.base + "/root-link/gen", field: "g") == linked.path + "/gen")
    }
}

@Suite struct AtomicFileTests {
    @Test func replacesTheFileAndLeavesNoTemporary() throws {
        let directory = NSTemporaryDirectory() + "steer-atomic-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/steer.json"
        try AtomicFile.write(Array("first".utf8), to: path)
        try AtomicFile.write(Array("second".utf8), to: path)
        #expect(FileManager.default.contents(atPath: path) == Data("second".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["steer.json"])
        #expect(throws: SteerError.self) { try AtomicFile.write([1], to: directory + "/missing/x") }
    }
}

@Suite struct VectorMagnitudeTests {
    @Test func componentsBeyondTheMagnitudeLimitAreRefusedNamingTheField() {
        #expect(throws: Never.self) { try Vectors.requireFinite([1e15, -1e15, 0], field: "vector") }
        do {
            try Vectors.requireFinite([0, -1e16], field: "items[3].vector")
            Issue.record("accepted -1e16")
        } catch {
            #expect(error.code == .invalidRequest && error.message.contains("items[3].vector[1]"), "\(error)")
        }
        // At the limit, the largest score over the largest dimension stays finite.
        let worst = Float(65_536) * (2 * Vectors.maxMagnitude) * (2 * Vectors.maxMagnitude)
        #expect(worst.isFinite)
    }
}
