#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SteerCore
import SteerProtocol

/// Who may run which op: the keys of `--admin-token`/`--admin-token-file` and `--keys-file`, and the one
/// check every request passes before it does anything (`steer serve`'s `RequestHandler` and `steer route`
/// both call `authorize`). docs/protocol.md "Keys and scopes" is the user-facing description.
///
/// - Scopes: `ping` is always public. `search`, `recommend`, `encode`, `get` and `stats` need a read or an
///   admin key; `upsert`, `delete`, `swap` and the user-history ops `event`, `get_user` and `delete_user`
///   need an admin key (docs/protocol.md, "User histories", says why). With no key configured at all every op
///   is open (the server binds 127.0.0.1 by default); with any key configured a request without a valid
///   key is refused `unauthorized`, reads included, unless `publicReads` keeps reads open.
/// - The key travels in the request's `token` field. It is compared with every configured key in time
///   that depends only on the lengths and the number of keys, never on where the bytes differ; a token
///   longer than `maximumKeyBytes` is refused before any comparison.
/// - Keys file (JSON, at most `maximumFileBytes`): `{"keys":[{"name":"app1","scope":"read","key":"…"}]}`.
///   Names: 1 to `maximumNameBytes` printable ASCII bytes, unique. Keys: `minimumKeyBytes` to
///   `maximumKeyBytes` printable ASCII bytes without spaces, unique (also against the admin token). At
///   most `maximumKeys` keys. Unknown fields are refused. `reload()` (SIGHUP) re-reads it; a file that
///   fails validation keeps the keys in force.
///
/// Threading: the key list is swapped under a lock; `authorize` may run on any thread.
public final class AccessKeys: Sendable {
    /// What a key may do.
    public enum Scope: String, Sendable {
        /// `search`, `recommend`, `encode`, `get`, `stats` (and `ping`).
        case read
        /// Everything.
        case admin
    }

    /// One configured key.
    public struct Key: Sendable {
        public var name: String
        public var scope: Scope
        /// The key's bytes (UTF-8 of the `key` field).
        public var bytes: [UInt8]

        public init(name: String, scope: Scope, key: String) {
            self.name = name
            self.scope = scope
            self.bytes = Array(key.utf8)
        }
    }

    /// Largest keys file, in bytes.
    public static let maximumFileBytes = 1 << 20
    /// Largest admin token / shard key file, in bytes (the token itself is at most `maximumKeyBytes`).
    public static let maximumSecretFileBytes = 4096
    /// Most keys in a keys file.
    public static let maximumKeys = 1000
    /// Shortest key of a keys file, in bytes (the single `--admin-token` only has to be non-empty).
    public static let minimumKeyBytes = 16
    /// Longest key or admin token, in bytes.
    public static let maximumKeyBytes = 256
    /// Longest key name, in bytes.
    public static let maximumNameBytes = 64
    /// The name the admin token's key carries in logs.
    public static let adminTokenName = "admin-token"

    /// Reads (search, recommend, encode, get, stats) need no key even when keys are configured.
    public let publicReads: Bool
    /// The keys file `reload()` reads; nil without `--keys-file`.
    public let keysFile: String?
    private let adminToken: Key?
    private let keys: Locked<[Key]>

    /// - Parameters:
    ///   - adminToken: an admin key of any length from 1 to `maximumKeyBytes` bytes (`--admin-token`).
    ///   - keysFile: a keys file to load now and on `reload()`.
    ///   - publicReads: keep reads open while keys are configured.
    /// - Throws: `.invalidRequest` for an empty or over-long admin token, or a keys file that fails
    ///   validation (the message names the file and the entry); `.io`/`.notFound` when it cannot be read.
    public init(adminToken: String?, keysFile: String? = nil, publicReads: Bool = false) throws(SteerError) {
        let token = try Self.adminKey(adminToken)
        var loaded: [Key] = []
        if let keysFile { loaded = try Self.load(file: keysFile, adminToken: token) }
        self.adminToken = token
        self.keysFile = keysFile
        self.publicReads = publicReads
        self.keys = Locked(loaded)
    }

    /// Keys from a list (tests, embedding); validated as a keys file is.
    ///
    /// - Throws: `.invalidRequest` as `init(adminToken:keysFile:publicReads:)`.
    public init(adminToken: String? = nil, keys: [Key], publicReads: Bool = false) throws(SteerError) {
        let token = try Self.adminKey(adminToken)
        try Self.validate(keys, adminToken: token, source: "keys")
        self.adminToken = token
        self.keysFile = nil
        self.publicReads = publicReads
        self.keys = Locked(keys)
    }

    /// The admin token's key; nil without a token.
    ///
    /// - Throws: `.invalidRequest` for an empty token or one over `maximumKeyBytes`.
    static func adminKey(_ token: String?) throws(SteerError) -> Key? {
        guard let token else { return nil }
        let length = token.utf8.count
        guard length > 0 else {
            throw SteerError.invalid("the admin token is empty; an empty token does not mean 'no authentication': omit it or give a real one")
        }
        guard length <= maximumKeyBytes else {
            throw SteerError.invalid("the admin token is \(length) bytes, at most \(maximumKeyBytes)")
        }
        return Key(name: adminTokenName, scope: .admin, key: token)
    }

    /// True when any key is configured (requests are then checked).
    public var isEnabled: Bool { adminToken != nil || !keys.get().isEmpty }

    /// The number of keys in force, by scope (for `stats` and logs).
    public var counts: (read: Int, admin: Int) {
        let all = keys.get() + (adminToken.map { [$0] } ?? [])
        return (all.filter { $0.scope == .read }.count, all.filter { $0.scope == .admin }.count)
    }

    /// Re-reads the keys file (SIGHUP). On any error the keys in force stay.
    ///
    /// - Returns: the number of keys loaded.
    /// - Throws: what loading the file throws; `.invalidRequest` when there is no keys file.
    @discardableResult
    public func reload() throws(SteerError) -> Int {
        guard let keysFile else { throw SteerError.invalid("no keys file to reload (--keys-file)") }
        let loaded = try Self.load(file: keysFile, adminToken: adminToken)
        keys.withLock { $0 = loaded }
        return loaded.count
    }

    /// The scope of the key `token` names; nil when it names none.
    public func scope(of token: String?) -> Scope? {
        guard let token else { return nil }
        let given = Array(token.utf8)
        guard !given.isEmpty, given.count <= Self.maximumKeyBytes else { return nil }
        var best: Scope?
        let all = keys.get()
        for key in all where Self.constantTimeEqual(given, key.bytes) {
            if best != .admin { best = key.scope }
        }
        if let adminToken, Self.constantTimeEqual(given, adminToken.bytes) { best = .admin }
        return best
    }

    /// Refuses `request` unless its `token` grants the op's scope (see the type's documentation).
    ///
    /// - Throws: `.unauthorized` naming the op and the scope it needs (never the keys).
    public func authorize(_ request: Request) throws(SteerError) {
        if request.fairQueue != nil {
            // Choosing one's queue is for a router that carries many clients; a client that could pick
            // queues freely would take more than its turn.
            guard isEnabled, scope(of: request.token) == .admin else {
                throw SteerError(.unauthorized, "fair_queue needs an admin key in field 'token' (it is for routers)")
            }
        }
        guard let needed = request.operation.requiredScope else { return }
        guard isEnabled else { return }
        if needed == .read, publicReads { return }
        guard let granted = scope(of: request.token) else {
            throw SteerError(.unauthorized, "\(request.operation.name) needs a valid \(needed == .admin ? "admin" : "read or admin") key in field 'token'")
        }
        if needed == .admin, granted != .admin {
            throw SteerError(.unauthorized, "\(request.operation.name) needs an admin key; the key given is read-only")
        }
    }

    /// Equality in time that depends only on the two lengths: every byte position up to the longer
    /// length is visited, and the length difference is compared in full (not truncated).
    static func constantTimeEqual(_ given: [UInt8], _ expected: [UInt8]) -> Bool {
        var difference: UInt = UInt(bitPattern: given.count ^ expected.count)
        let length = max(given.count, expected.count)
        var bytes: UInt8 = 0
        given.withUnsafeBufferPointer { a in
            expected.withUnsafeBufferPointer { b in
                for index in 0..<length {
                    let x = index < a.count ? a[index] : 0
                    let y = index < b.count ? b[index] : 0
                    bytes |= x ^ y
                }
            }
        }
        difference |= UInt(bytes)
        return difference == 0
    }

    // MARK: Files

    /// Reads and validates a keys file.
    ///
    /// - Throws: `.notFound`/`.io` when it cannot be read, `.tooLarge` over `maximumFileBytes`,
    ///   `.invalidRequest` naming the file and the entry at fault.
    public static func load(file path: String, adminToken: Key? = nil) throws(SteerError) -> [Key] {
        let bytes = try readFile(path, maximumBytes: maximumFileBytes, what: "keys file")
        return try parse(bytes, source: "keys file '\(path)'", adminToken: adminToken)
    }

    /// Parses keys file text (see the type's documentation for the format and limits).
    ///
    /// - Throws: `.invalidRequest` (or `.tooLarge`) naming `source` and the entry at fault.
    public static func parse(_ bytes: [UInt8], source: String, adminToken: Key? = nil) throws(SteerError) -> [Key] {
        guard bytes.count <= maximumFileBytes else {
            throw SteerError(.tooLarge, "\(source) is \(bytes.count) bytes, at most \(maximumFileBytes)")
        }
        let root: JSONValue
        do {
            root = try JSONParser.parse(bytes)
        } catch {
            throw SteerError.invalid("\(source) is not JSON: \(error.message)")
        }
        guard case .object(let object) = root else { throw SteerError.invalid("\(source) must be a JSON object {\"keys\": [...]}") }
        for field in object.fields where field.key != "keys" {
            throw SteerError.invalid("\(source): unknown field '\(field.key)' (known: keys)")
        }
        guard case .array(let entries)? = object["keys"] else {
            throw SteerError.invalid("\(source): 'keys' must be an array of {\"name\", \"scope\", \"key\"} objects")
        }
        guard entries.count <= maximumKeys else {
            throw SteerError(.tooLarge, "\(source) has \(entries.count) keys, at most \(maximumKeys)")
        }
        var keys: [Key] = []
        keys.reserveCapacity(entries.count)
        for (index, entry) in entries.enumerated() {
            guard case .object(let fields) = entry else { throw SteerError.invalid("\(source): keys[\(index)] must be an object") }
            for field in fields.fields where !["name", "scope", "key"].contains(field.key) {
                throw SteerError.invalid("\(source): unknown field 'keys[\(index)].\(field.key)' (known: name, scope, key)")
            }
            guard case .string(let name)? = fields["name"] else { throw SteerError.invalid("\(source): keys[\(index)].name must be a string") }
            guard case .string(let scopeText)? = fields["scope"], let scope = Scope(rawValue: scopeText) else {
                throw SteerError.invalid("\(source): keys[\(index)].scope must be \"read\" or \"admin\"")
            }
            guard case .string(let key)? = fields["key"] else { throw SteerError.invalid("\(source): keys[\(index)].key must be a string") }
            keys.append(Key(name: name, scope: scope, key: key))
        }
        guard !keys.isEmpty else {
            throw SteerError.invalid("\(source) holds no key; an empty key list does not mean 'no authentication': remove --keys-file instead")
        }
        try validate(keys, adminToken: adminToken, source: source)
        return keys
    }

    /// Checks names, lengths, characters and uniqueness of `keys` (positions named in messages; key
    /// bytes never appear in them).
    static func validate(_ keys: [Key], adminToken: Key?, source: String) throws(SteerError) {
        guard keys.count <= maximumKeys else { throw SteerError(.tooLarge, "\(source): \(keys.count) keys, at most \(maximumKeys)") }
        func printable(_ bytes: some Collection<UInt8>) -> Bool { bytes.allSatisfy { (0x21...0x7E).contains($0) } }
        var names: [String: Int] = [:]
        var seen: [[UInt8]: Int] = [:]
        for (index, key) in keys.enumerated() {
            let name = key.name.utf8
            guard (1...maximumNameBytes).contains(name.count), name.allSatisfy({ (0x20...0x7E).contains($0) }) else {
                throw SteerError.invalid("\(source): keys[\(index)].name must be 1 to \(maximumNameBytes) printable ASCII characters")
            }
            if let first = names.updateValue(index, forKey: key.name) {
                throw SteerError.invalid("\(source): keys[\(index)].name '\(key.name)' repeats keys[\(first)].name")
            }
            guard (minimumKeyBytes...maximumKeyBytes).contains(key.bytes.count) else {
                throw SteerError.invalid("\(source): keys[\(index)] ('\(key.name)') is \(key.bytes.count) bytes; a key has \(minimumKeyBytes) to \(maximumKeyBytes)")
            }
            guard printable(key.bytes) else {
                throw SteerError.invalid("\(source): keys[\(index)] ('\(key.name)') must be printable ASCII without spaces")
            }
            if let first = seen.updateValue(index, forKey: key.bytes) {
                throw SteerError.invalid("\(source): keys[\(index)] ('\(key.name)') is the same key as keys[\(first)] ('\(keys[first].name)')")
            }
            if let adminToken, adminToken.bytes == key.bytes {
                throw SteerError.invalid("\(source): keys[\(index)] ('\(key.name)') is the same key as the admin token")
            }
        }
    }

    /// A secret kept in a file (`--admin-token-file`, `--shard-key-file`): the file's text without its
    /// trailing newline (and spaces), at most `maximumSecretFileBytes` bytes, non-empty.
    ///
    /// - Throws: `.notFound`/`.io` when unreadable or not a regular file, `.tooLarge`, `.invalidRequest`
    ///   when empty.
    public static func readSecret(file path: String, what: String) throws(SteerError) -> String {
        var bytes = try readFile(path, maximumBytes: maximumSecretFileBytes, what: what)
        while let last = bytes.last, last == 0x0A || last == 0x0D || last == 0x20 || last == 0x09 { bytes.removeLast() }
        guard !bytes.isEmpty else { throw SteerError.invalid("\(what) '\(path)' is empty") }
        guard let text = String(validating: bytes, as: UTF8.self) else { throw SteerError.invalid("\(what) '\(path)' is not UTF-8 text") }
        return text
    }

    /// Reads a regular file of at most `maximumBytes` (checked before and while reading, so a device or
    /// a growing file cannot make it read more).
    ///
    /// - Throws: `.notFound` when missing, `.io` when unreadable or not a regular file, `.tooLarge`.
    static func readFile(_ path: String, maximumBytes: Int, what: String) throws(SteerError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            throw SteerError(code == ENOENT ? .notFound : .io, "\(what) '\(path)' cannot be opened: \(String(cString: strerror(code)))")
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw SteerError(.io, "\(what) '\(path)' cannot be examined") }
        guard (status.st_mode & S_IFMT) == S_IFREG else { throw SteerError(.io, "\(what) '\(path)' is not a regular file") }
        guard Int(status.st_size) <= maximumBytes else {
            throw SteerError(.tooLarge, "\(what) '\(path)' is \(status.st_size) bytes, at most \(maximumBytes)")
        }
        var bytes = [UInt8](repeating: 0, count: maximumBytes + 1)
        var total = 0
        while total < bytes.count {
            let count = bytes.withUnsafeMutableBytes { buffer in read(fd, buffer.baseAddress! + total, buffer.count - total) }
            if count < 0 {
                if errno == EINTR { continue }
                throw SteerError(.io, "\(what) '\(path)' cannot be read: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            total += count
        }
        guard total <= maximumBytes else { throw SteerError(.tooLarge, "\(what) '\(path)' is over \(maximumBytes) bytes") }
        bytes.removeLast(bytes.count - total)
        return bytes
    }
}

extension Request.Operation {
    /// The scope a key must grant for this op; nil for `ping` (always public).
    public var requiredScope: AccessKeys.Scope? {
        switch self {
        case .ping: return nil
        case .stats, .search, .recommend, .encode, .get, .listCollections, .describeCollection: return .read
        case .upsert, .delete, .swap, .prepare, .activate, .createCollection, .dropCollection, .alias, .deleteAlias, .event, .getUser, .deleteUser, .ingestVectors,
             .declareIndex, .snapshot:
            return .admin
        }
    }
}
