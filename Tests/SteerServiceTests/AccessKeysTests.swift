import Foundation
import SteerCore
import SteerProtocol
import Testing
@testable import SteerService

/// `AccessKeys`: scopes per op, the admin token, keys files as hostile input, reload keeping the old keys.
@Suite struct AccessKeysTests {
    let reader = "read-key-0123456789abcdef"
    let writer = "admin-key-0123456789abcdef"

    private func request(_ operation: Request.Operation, token: String? = nil) -> Request {
        Request(operation: operation, token: token)
    }

    private func code(_ keys: AccessKeys, _ operation: Request.Operation, token: String? = nil) -> String {
        do {
            try keys.authorize(request(operation, token: token))
            return "ok"
        } catch {
            return error.code.rawValue
        }
    }

    private var search: Request.Operation { .search(queries: [[1]], options: SearchOptions(k: 1), batch: false) }
    private var reads: [Request.Operation] {
        let recommend = RecommendRequest(history: [.int(1)], prompt: nil, k: 1)
        return [search, .get([.int(1)]), .stats, .recommend(recommend), .encode(recommend)]
    }
    private var writes: [Request.Operation] {
        [.upsert([ItemInput(id: .int(1), vector: [1])]), .delete([.int(1)]), .swap(generation: "g", checkpoint: nil),
         .prepare(generation: "g", checkpoint: nil), .activate(generation: "g")]
    }

    private func temporaryFile(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "steer-keys-" + UUID().uuidString + ".json"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    private func keysJSON(_ entries: [(String, String, String)]) -> String {
        let list = entries.map { #"{"name":"\#($0.0)","scope":"\#($0.1)","key":"\#($0.2)"}"# }.joined(separator: ",")
        return #"{"keys":[\#(list)]}"#
    }

    @Test func scopesDecideEveryOp() throws {
        let keys = try AccessKeys(keys: [AccessKeys.Key(name: "app", scope: .read, key: reader),
                                         AccessKeys.Key(name: "ops", scope: .admin, key: writer)])
        #expect(code(keys, .ping) == "ok")
        for operation in reads {
            #expect(code(keys, operation) == "unauthorized", "\(operation.name) without a key")
            #expect(code(keys, operation, token: "nope") == "unauthorized")
            #expect(code(keys, operation, token: reader) == "ok")
            #expect(code(keys, operation, token: writer) == "ok")
        }
        for operation in writes {
            #expect(code(keys, operation) == "unauthorized")
            #expect(code(keys, operation, token: reader) == "unauthorized", "\(operation.name) with a read key")
            #expect(code(keys, operation, token: writer) == "ok")
        }
        let public_ = try AccessKeys(keys: [AccessKeys.Key(name: "ops", scope: .admin, key: writer)], publicReads: true)
        for operation in reads { #expect(code(public_, operation) == "ok") }
        for operation in writes { #expect(code(public_, operation) == "unauthorized") }
    }

    @Test func theAdminTokenIsAnAdminKeyComparedOverItsFullLength() throws {
        let keys = try AccessKeys(adminToken: "s3cret")
        #expect(keys.isEnabled)
        #expect(code(keys, writes[0], token: "s3cret") == "ok")
        // The old check truncated the length difference to 8 bits: the token plus 256 bytes matched.
        #expect(code(keys, writes[0], token: "s3cret" + String(repeating: "x", count: 256)) == "unauthorized")
        #expect(code(keys, writes[0], token: "s3cret" + String(repeating: "\u{0}", count: 256)) == "unauthorized")
        #expect(code(keys, writes[0], token: "s3cre") == "unauthorized")
        #expect(code(keys, writes[0], token: "") == "unauthorized")
        #expect(code(keys, search) == "unauthorized")
        #expect(code(keys, search, token: "s3cret") == "ok")
    }

    @Test func anEmptyTokenIsRefusedNotOpen() {
        #expect(throws: SteerError.self) { _ = try AccessKeys(adminToken: "") }
        #expect(throws: SteerError.self) { _ = try AccessKeys(adminToken: String(repeating: "t", count: AccessKeys.maximumKeyBytes + 1)) }
        #expect(!((try? AccessKeys(adminToken: nil))?.isEnabled ?? true))
        // No key at all: every op is open (the documented default).
        let open = try? AccessKeys(adminToken: nil)
        if let open { for operation in writes { #expect(code(open, operation) == "ok") } }
    }

    @Test func keysFilesAreValidatedAsHostileInput() throws {
        let good = keysJSON([("app", "read", reader), ("ops", "admin", writer)])
        #expect(try AccessKeys.parse(Array(good.utf8), source: "test").count == 2)
        let cases: [(String, String)] = [
            ("not json", "not JSON"),
            (#"[]"#, "JSON object"),
            (#"{"keys":[]}"#, "no key"),
            (#"{"keys":[],"extra":1}"#, "unknown field"),
            (keysJSON([("app", "read", "short")]), "bytes"),
            (keysJSON([("app", "read", String(repeating: "k", count: 257))]), "bytes"),
            (keysJSON([("app", "write", reader)]), "scope"),
            (keysJSON([("app", "read", reader), ("other", "admin", reader)]), "same key"),
            (keysJSON([("app", "read", reader), ("app", "admin", writer)]), "repeats"),
            (keysJSON([("", "read", reader)]), "name"),
            (keysJSON([("app", "read", "has a space in the key text")]), "printable"),
            (#"{"keys":[{"name":"app","scope":"read","key":"\#(reader)","note":1}]}"#, "unknown field"),
        ]
        for (text, expected) in cases {
            do {
                _ = try AccessKeys.parse(Array(text.utf8), source: "test")
                Issue.record("accepted \(text.prefix(80))")
            } catch {
                #expect(error.message.contains(expected), "\(text.prefix(80)): \(error)")
                #expect(!error.message.contains(reader), "a message must not echo a key: \(error)")
            }
        }
        let many = keysJSON((0...AccessKeys.maximumKeys).map { ("k\($0)", "read", "key-\($0)-0123456789abcdef") })
        #expect(throws: SteerError.self) { _ = try AccessKeys.parse(Array(many.utf8), source: "test") }
        // The admin token may not repeat a key of the file.
        let path = try temporaryFile(good)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: SteerError.self) { _ = try AccessKeys(adminToken: reader, keysFile: path) }
    }

    @Test func fileReadsAreCappedAndRegularFilesOnly() throws {
        let big = try temporaryFile(String(repeating: " ", count: AccessKeys.maximumFileBytes + 1))
        defer { try? FileManager.default.removeItem(atPath: big) }
        do {
            _ = try AccessKeys.load(file: big)
            Issue.record("read an oversized keys file")
        } catch {
            #expect(error.code == .tooLarge)
        }
        #expect(throws: SteerError.self) { _ = try AccessKeys.load(file: "/dev/zero") }
        #expect(throws: SteerError.self) { _ = try AccessKeys.load(file: NSTemporaryDirectory()) }
        #expect(throws: SteerError.self) { _ = try AccessKeys.load(file: "/nonexistent/keys.json") }
        let secret = try temporaryFile("  tok-en \n\n")
        defer { try? FileManager.default.removeItem(atPath: secret) }
        #expect(try AccessKeys.readSecret(file: secret, what: "admin token file") == "  tok-en")
        let empty = try temporaryFile("\n")
        defer { try? FileManager.default.removeItem(atPath: empty) }
        #expect(throws: SteerError.self) { _ = try AccessKeys.readSecret(file: empty, what: "admin token file") }
    }

    @Test func reloadSwapsKeysAndAFailedReloadKeepsThem() throws {
        let path = try temporaryFile(keysJSON([("app", "read", reader)]))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let keys = try AccessKeys(adminToken: nil, keysFile: path)
        #expect(code(keys, search, token: reader) == "ok")
        #expect(code(keys, writes[0], token: writer) == "unauthorized")
        try Data(keysJSON([("ops", "admin", writer)]).utf8).write(to: URL(fileURLWithPath: path))
        #expect(try keys.reload() == 1)
        #expect(code(keys, search, token: reader) == "unauthorized")
        #expect(code(keys, writes[0], token: writer) == "ok")
        try Data(#"{"keys":[{"name":"broken"#.utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: SteerError.self) { try keys.reload() }
        #expect(code(keys, writes[0], token: writer) == "ok")
    }

    @Test func tokenComparisonIsExact() {
        #expect(AccessKeys.constantTimeEqual(Array("secret".utf8), Array("secret".utf8)))
        #expect(!AccessKeys.constantTimeEqual(Array("secreT".utf8), Array("secret".utf8)))
        #expect(!AccessKeys.constantTimeEqual(Array("secret1".utf8), Array("secret".utf8)))
        #expect(!AccessKeys.constantTimeEqual(Array("".utf8), Array("secret".utf8)))
        // The length difference counts in full: 256 (or 65,536) extra bytes are not a match.
        #expect(!AccessKeys.constantTimeEqual(Array("secret".utf8) + [UInt8](repeating: 0, count: 256), Array("secret".utf8)))
        #expect(!AccessKeys.constantTimeEqual(Array("secret".utf8) + [UInt8](repeating: 0x41, count: 65_536), Array("secret".utf8)))
        #expect(!AccessKeys.constantTimeEqual(Array("secret".utf8), Array("secret".utf8) + [UInt8](repeating: 0, count: 256)))
    }
}
