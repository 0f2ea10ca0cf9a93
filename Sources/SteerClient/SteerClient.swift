import Foundation
import SteerCore
import SteerProtocol

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A blocking TCP connection speaking the line protocol: write lines, read lines. Not thread-safe; use
/// one per thread (the benchmark does) or `SteerClient` for async pipelining.
public final class SteerConnection {
    private let descriptor: Int32
    private var buffer: [UInt8] = []
    private var bufferStart = 0
    private var chunk = [UInt8](repeating: 0, count: 1 << 16)

    /// Connects to `host:port` (IPv4 literal or name) with TCP_NODELAY.
    public init(host: String, port: Int) throws(SteerError) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let first = result else {
            throw SteerError(.io, "cannot resolve '\(host)'")
        }
        defer { freeaddrinfo(result) }
        var connected: Int32 = -1
        var info: UnsafeMutablePointer<addrinfo>? = first
        while let current = info {
            let fd = socket(current.pointee.ai_family, current.pointee.ai_socktype, current.pointee.ai_protocol)
            if fd >= 0 {
                if connect(fd, current.pointee.ai_addr, current.pointee.ai_addrlen) == 0 {
                    connected = fd
                    break
                }
                close(fd)
            }
            info = current.pointee.ai_next
        }
        guard connected >= 0 else { throw SteerError(.io, "cannot connect to \(host):\(port): \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(connected, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        descriptor = connected
    }

    deinit { close(descriptor) }

    /// Makes reads fail (`.io`) when nothing arrives for `milliseconds` (0 = wait forever, the default).
    public func setReceiveTimeout(milliseconds: Int) throws(SteerError) {
        var value = timeval(tv_sec: .init(milliseconds / 1000), tv_usec: .init(milliseconds % 1000 * 1000))
        guard setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            throw SteerError(.io, "cannot set a receive timeout: \(String(cString: strerror(errno)))")
        }
    }

    /// Writes bytes fully.
    public func write(_ bytes: [UInt8]) throws(SteerError) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { raw in
                send(descriptor, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
            }
            if written < 0 {
                if errno == EINTR { continue }
                throw SteerError(.io, "write failed: \(String(cString: strerror(errno)))")
            }
            offset += written
        }
    }

    /// Writes one line (a `\n` is appended).
    public func writeLine(_ line: [UInt8]) throws(SteerError) {
        var bytes = line
        bytes.append(UInt8(ascii: "\n"))
        try write(bytes)
    }

    /// Reads the next line without its `\n`; nil at end of stream.
    public func readLine() throws(SteerError) -> [UInt8]? {
        while true {
            if let newline = buffer[bufferStart...].firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[bufferStart..<newline])
                bufferStart = newline + 1
                if bufferStart > 1 << 16 || bufferStart == buffer.count {
                    buffer.removeFirst(bufferStart)
                    bufferStart = 0
                }
                return line
            }
            let count = chunk.withUnsafeMutableBytes { raw in recv(descriptor, raw.baseAddress!, raw.count, 0) }
            if count < 0 {
                if errno == EINTR { continue }
                throw SteerError(.io, "read failed: \(String(cString: strerror(errno)))")
            }
            if count == 0 {
                if bufferStart < buffer.count {
                    let line = Array(buffer[bufferStart...])
                    buffer.removeAll()
                    bufferStart = 0
                    return line
                }
                return nil
            }
            buffer.append(contentsOf: chunk[0..<count])
        }
    }

    /// Sends one request line and reads one response line.
    public func roundTrip(_ line: [UInt8]) throws(SteerError) -> [UInt8] {
        try writeLine(line)
        guard let response = try readLine() else { throw SteerError(.unavailable, "the server closed the connection") }
        return response
    }

    /// Half-closes the sending side (the server answers what it got, then closes).
    public func shutdownWrite() { shutdown(descriptor, Int32(SHUT_WR)) }
}

/// An async, pipelined client: any number of tasks may send requests concurrently on one connection;
/// responses are matched to requests by order (the protocol answers in request order).
public final class SteerClient: @unchecked Sendable {
    // @unchecked Sendable: `connection` writes happen only under `lock` (which also orders `waiters`),
    // and reads only on the reader thread.
    private let connection: SteerConnection
    private let lock = NSLock()
    private var waiters: [CheckedContinuation<[UInt8], any Error>] = []
    private var waiterHead = 0
    private var failure: SteerError?
    private var reader: Thread?

    /// Connects and starts the reader thread.
    public init(host: String = "127.0.0.1", port: Int) throws(SteerError) {
        connection = try SteerConnection(host: host, port: port)
        let thread = Thread { [weak self] in self?.readLoop() }
        thread.name = "steer-client-reader"
        reader = thread
        thread.start()
    }

    private func readLoop() {
        while true {
            let line: [UInt8]?
            do {
                line = try connection.readLine()
            } catch {
                failAll(error)
                return
            }
            guard let line else {
                failAll(SteerError(.unavailable, "the server closed the connection"))
                return
            }
            lock.lock()
            guard waiterHead < waiters.count else {
                lock.unlock()
                continue // an unsolicited line (for example "too many connections"): dropped
            }
            let waiter = waiters[waiterHead]
            waiterHead += 1
            if waiterHead == waiters.count {
                waiters.removeAll(keepingCapacity: true)
                waiterHead = 0
            }
            lock.unlock()
            waiter.resume(returning: line)
        }
    }

    private func failAll(_ error: SteerError) {
        lock.lock()
        failure = error
        let pending = waiters[waiterHead...]
        waiters = []
        waiterHead = 0
        lock.unlock()
        for waiter in pending { waiter.resume(throwing: error) }
    }

    /// Sends a raw request line and returns the raw response line.
    public func send(_ line: [UInt8]) async throws -> [UInt8] {
        try await withCheckedThrowingContinuation { continuation in
            lock.lock()
            if let failure {
                lock.unlock()
                continuation.resume(throwing: failure)
                return
            }
            do {
                try connection.writeLine(line)
                waiters.append(continuation)
                lock.unlock()
            } catch {
                lock.unlock()
                continuation.resume(throwing: error)
            }
        }
    }

    /// Sends a request and returns the response object when `ok` is true.
    ///
    /// - Throws: `SteerError` with the server's code and message when `ok` is false.
    public func request(_ line: [UInt8]) async throws -> JSONObject {
        let response = try await send(line)
        return try Self.check(response)
    }

    /// Parses a response line: the object when `ok`, else the server's error.
    public static func check(_ response: [UInt8]) throws(SteerError) -> JSONObject {
        guard case .object(let object) = try JSONParser.parse(response) else {
            throw SteerError(.internal, "response is not a JSON object")
        }
        if case .bool(true)? = object["ok"] { return object }
        guard case .object(let error)? = object["error"], case .string(let code)? = error["code"] else {
            throw SteerError(.internal, "response has neither ok:true nor an error object")
        }
        var message = ""
        if case .string(let text)? = error["message"] { message = text }
        throw SteerError(SteerError.Code(wire: code), message)
    }

    /// Closes the sending side; pending requests are still answered, later ones fail.
    public func close() {
        lock.lock()
        if failure == nil { failure = SteerError(.unavailable, "the client is closed") }
        lock.unlock()
        connection.shutdownWrite()
    }

    // MARK: Typed operations

    public func ping() async throws {
        _ = try await request(RequestLine.ping())
    }

    /// - Parameter collection: the collection or alias (nil: the server's default collection), as for
    ///   every op below.
    public func stats(collection: String? = nil) async throws -> JSONObject {
        try await request(RequestLine.stats(collection: collection))
    }

    /// - Returns: the number of items upserted.
    public func upsert(_ items: [ClientItem], token: String? = nil, collection: String? = nil) async throws -> Int {
        let response = try await request(RequestLine.upsert(items, token: token, collection: collection))
        guard case .int(let count)? = response["upserted"] else { throw SteerError(.internal, "upsert response lacks 'upserted'") }
        return Int(count)
    }

    /// Declares a payload index on an attribute path (`declare_index`, admin): built over the existing
    /// items, kept by every write, used by filters from the next request on.
    /// - Returns: the index entries written (0 when it was already declared with this kind).
    public func declareIndex(attribute: String, kind: PayloadKind, token: String? = nil, collection: String? = nil) async throws -> Int {
        let response = try await request(RequestLine.declareIndex(attribute: attribute, kind: kind, token: token, collection: collection))
        guard case .int(let entries)? = response["entries"] else { throw SteerError(.internal, "declare_index response lacks 'entries'") }
        return Int(entries)
    }

    public func delete(_ ids: [ItemID], token: String? = nil, collection: String? = nil) async throws -> Int {
        let response = try await request(RequestLine.delete(ids, token: token, collection: collection))
        guard case .int(let count)? = response["deleted"] else { throw SteerError(.internal, "delete response lacks 'deleted'") }
        return Int(count)
    }

    /// Searches one vector; `base64` sends it as `vector_b64`; `expression` is a filter expression
    /// (docs/protocol.md, "Filter expressions"), combined with the tag lists of `filter` by "and".
    public func search(_ vector: [Float], k: Int, base64: Bool = false, filter: (any: [String], none: [String])? = nil,
                       expression: FilterExpression? = nil, nprobe: Int? = nil, efSearch: Int? = nil,
                       collection: String? = nil) async throws -> [ClientHit] {
        let response = try await request(RequestLine.search(vector, k: k, base64: base64, filter: filter, expression: expression,
                                                            nprobe: nprobe, efSearch: efSearch, collection: collection))
        return try ClientHit.list(response["hits"])
    }

    /// The whole answer of a search (with `explain`, its `explain` object says which plan ran).
    public func searchResponse(_ vector: [Float], k: Int, expression: FilterExpression? = nil, explain: Bool = false) async throws -> JSONObject {
        try await request(RequestLine.search(vector, k: k, base64: true, expression: expression, explain: explain))
    }

    public func recommend(history: [ItemID], prompt: String? = nil, k: Int = 10, constraints: ConstraintMode? = nil,
                          excludeHistory: Bool? = nil, expression: FilterExpression? = nil,
                          collection: String? = nil) async throws -> JSONObject {
        try await request(RequestLine.recommend(op: "recommend", history: history, prompt: prompt, k: k,
                                                constraints: constraints, excludeHistory: excludeHistory, expression: expression,
                                                collection: collection))
    }
}

/// An item for `upsert`.
public struct ClientItem: Sendable {
    public var id: ItemID
    public var vector: [Float]
    public var tags: [String]
    public var title: String?
    /// The item's `attributes`: a JSON object as text, sent as given.
    public var attributesJSON: String?

    public init(id: ItemID, vector: [Float], tags: [String] = [], title: String? = nil, attributesJSON: String? = nil) {
        self.id = id
        self.vector = vector
        self.tags = tags
        self.title = title
        self.attributesJSON = attributesJSON
    }
}

/// A search hit as the client reads it.
public struct ClientHit: Sendable, Equatable {
    public var id: ItemID
    public var score: Float
    public var title: String?
    public var tags: [String]

    static func list(_ value: JSONValue?) throws(SteerError) -> [ClientHit] {
        guard case .array(let elements)? = value else { throw SteerError(.internal, "response lacks a 'hits' array") }
        var hits: [ClientHit] = []
        for element in elements {
            guard case .object(let object) = element else { throw SteerError(.internal, "a hit is not an object") }
            let id: ItemID
            switch object["id"] {
            case .int(let number)?: id = .int(number)
            case .string(let text)?: id = .string(text)
            default: throw SteerError(.internal, "a hit lacks its id")
            }
            let score: Float
            switch object["score"] {
            case .int(let number)?: score = Float(number)
            case .double(let number)?: score = Float(number)
            default: throw SteerError(.internal, "a hit lacks its score")
            }
            var title: String?
            if case .string(let text)? = object["title"] { title = text }
            var tags: [String] = []
            if case .array(let list)? = object["tags"] {
                for tag in list { if case .string(let text) = tag { tags.append(text) } }
            }
            hits.append(ClientHit(id: id, score: score, title: title, tags: tags))
        }
        return hits
    }
}

/// Builders of request lines (without the newline): `Request` values written by the protocol's one
/// encoder (`RequestEncoder`), the same one the router uses for its shard lines.
public enum RequestLine {
    public static func ping(id: Int64? = nil) -> [UInt8] {
        RequestEncoder.encode(Request(id: id.map { .int($0) }, operation: .ping))
    }

    public static func stats(collection: String? = nil) -> [UInt8] {
        RequestEncoder.encode(Request(operation: .stats, collection: collection))
    }

    public static func upsert(_ items: [ClientItem], token: String? = nil, collection: String? = nil) -> [UInt8] {
        let inputs = items.map { ItemInput(id: $0.id, vector: $0.vector, title: $0.title, tags: $0.tags, attributesJSON: $0.attributesJSON) }
        return RequestEncoder.encode(Request(operation: .upsert(inputs), token: token, collection: collection), vectors: .json)
    }

    public static func delete(_ ids: [ItemID], token: String? = nil, collection: String? = nil) -> [UInt8] {
        RequestEncoder.encode(Request(operation: .delete(ids), token: token, collection: collection))
    }

    public static func declareIndex(attribute: String, kind: PayloadKind, token: String? = nil, collection: String? = nil) -> [UInt8] {
        RequestEncoder.encode(Request(operation: .declareIndex(attribute: attribute, kind: kind), token: token, collection: collection))
    }

    public static func search(_ vector: [Float], k: Int, base64: Bool = false, filter: (any: [String], none: [String])? = nil,
                              expression: FilterExpression? = nil, explain: Bool = false,
                              nprobe: Int? = nil, efSearch: Int? = nil, id: Int64? = nil, collection: String? = nil) -> [UInt8] {
        let options = SearchOptions(k: k, nprobe: nprobe, efSearch: efSearch,
                                    filter: TagFilter(tagsAny: filter?.any ?? [], tagsNone: filter?.none ?? [], expression: expression),
                                    explain: explain)
        return RequestEncoder.encode(Request(id: id.map { .int($0) }, operation: .search(queries: [vector], options: options, batch: false),
                                             collection: collection),
                                     vectors: base64 ? .base64 : .json)
    }

    /// A batch `search` line: `vectors` (one query each), answered with `results`, one hit list per query.
    public static func searchBatch(_ vectors: [[Float]], k: Int, base64: Bool = false, nprobe: Int? = nil, efSearch: Int? = nil,
                                   collection: String? = nil) -> [UInt8] {
        let options = SearchOptions(k: k, nprobe: nprobe, efSearch: efSearch, filter: TagFilter(), explain: false)
        return RequestEncoder.encode(Request(id: nil, operation: .search(queries: vectors, options: options, batch: true), collection: collection),
                                     vectors: base64 ? .base64 : .json)
    }

    /// A `recommend` (`op` "recommend") or `encode` (any other `op`) line.
    public static func recommend(op: String, history: [ItemID], prompt: String?, k: Int, constraints: ConstraintMode?,
                                 excludeHistory: Bool?, expression: FilterExpression? = nil, collection: String? = nil) -> [UInt8] {
        let request = RecommendRequest(history: history, prompt: prompt, k: k, excludeHistory: excludeHistory ?? true,
                                       constraints: constraints ?? .soft, filter: TagFilter(expression: expression))
        return RequestEncoder.encode(Request(operation: op == "recommend" ? .recommend(request) : .encode(request), collection: collection))
    }

    /// An admin or listing line of the collection ops (`create_collection`, `alias`, …).
    public static func collections(_ operation: Request.Operation, token: String? = nil) -> [UInt8] {
        RequestEncoder.encode(Request(operation: operation, token: token))
    }
}
