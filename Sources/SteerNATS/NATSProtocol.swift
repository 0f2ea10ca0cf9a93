// SteerNATS: a small NATS + JetStream client written by hand over SwiftNIO, because no Swift NATS
// client is among this machine's package copies (/opt/swift-packages); see docs/nats.md.
//
// This file: the wire format. `NATSParser` reads what the server sends (INFO, MSG, HMSG, PING, PONG,
// +OK, -ERR); `NATSWire` writes what the client sends (CONNECT, PUB, HPUB, SUB, UNSUB, PING, PONG).

import Foundation
import NIOCore

// MARK: - Headers

/// NATS message headers: the `NATS/1.0[ code[ description]]` status line and ordered `Key: Value` pairs.
///
/// Invariant: names contain no `:`, CR, LF, space or tab; values contain no CR or LF (checked when the
/// client encodes them; the parser only accepts such headers). Lookups ignore ASCII case; a name may
/// repeat, `self[name]` gives the first value.
public struct NATSHeaders: Sendable, Equatable {
    /// The status code of the status line (`503` no responders, `404` no messages, `408` request
    /// timeout, `100` heartbeat / flow control), nil when the line is bare `NATS/1.0`.
    public var statusCode: Int?
    /// The text after the status code, e.g. `No Messages`.
    public var statusDescription: String
    public private(set) var fields: [(name: String, value: String)]

    public init(_ fields: [(String, String)] = []) {
        statusCode = nil
        statusDescription = ""
        self.fields = fields.map { (name: $0.0, value: $0.1) }
    }

    /// The first value of `name` (ASCII case-insensitive), nil when absent.
    public subscript(name: String) -> String? {
        let lower = name.lowercased()
        return fields.first { $0.name.lowercased() == lower }?.value
    }

    /// Appends a field (a name may repeat).
    public mutating func append(_ name: String, _ value: String) {
        fields.append((name: name, value: value))
    }

    /// Replaces every field called `name` by one with `value`.
    public mutating func set(_ name: String, _ value: String) {
        let lower = name.lowercased()
        fields.removeAll { $0.name.lowercased() == lower }
        fields.append((name: name, value: value))
    }

    public var isEmpty: Bool { fields.isEmpty && statusCode == nil }

    public static func == (lhs: NATSHeaders, rhs: NATSHeaders) -> Bool {
        lhs.statusCode == rhs.statusCode && lhs.statusDescription == rhs.statusDescription
            && lhs.fields.map(\.name) == rhs.fields.map(\.name) && lhs.fields.map(\.value) == rhs.fields.map(\.value)
    }

    /// The header block as sent in `HPUB`: `NATS/1.0\r\n` + fields + `\r\n`.
    /// - Throws: `NATSError.invalidArgument` for a name or value that would break the framing.
    func encoded() throws(NATSError) -> [UInt8] {
        var out = Array("NATS/1.0\r\n".utf8)
        for field in fields {
            guard !field.name.isEmpty, !field.name.utf8.contains(where: { $0 == 58 || $0 <= 32 || $0 == 127 }) else {
                throw .invalidArgument("header name '\(field.name)'")
            }
            guard !field.value.utf8.contains(where: { $0 == 13 || $0 == 10 }) else {
                throw .invalidArgument("header value of '\(field.name)' contains CR or LF")
            }
            out += field.name.utf8
            out += [58, 32]
            out += field.value.utf8
            out += [13, 10]
        }
        out += [13, 10]
        return out
    }

    /// Parses a header block (`NATS/1.0...\r\n...\r\n\r\n`).
    /// - Throws: `NATSProtocolViolation.malformedHeaders`.
    static func parse<Bytes: Collection<UInt8>>(_ bytes: Bytes) throws(NATSProtocolViolation) -> NATSHeaders {
        var headers = NATSHeaders()
        var lines: [ArraySlice<UInt8>] = []
        let array = Array(bytes)
        var start = 0
        var i = 0
        while i + 1 < array.count {
            if array[i] == 13, array[i + 1] == 10 {
                lines.append(array[start..<i])
                i += 2
                start = i
            } else {
                i += 1
            }
        }
        guard start == array.count else { throw .malformedHeaders("block does not end with CRLF") }
        guard lines.count >= 2, lines.last!.isEmpty else { throw .malformedHeaders("block does not end with an empty line") }
        let version = Array("NATS/1.0".utf8)
        let statusLine = lines[0]
        guard statusLine.starts(with: version) else { throw .malformedHeaders("no NATS/1.0 status line") }
        let rest = statusLine.dropFirst(version.count)
        if !rest.isEmpty {
            guard rest.first == 32 else { throw .malformedHeaders("status line") }
            let text = rest.drop { $0 == 32 }
            let codeBytes = text.prefix { $0 != 32 }
            guard codeBytes.count == 3, codeBytes.allSatisfy({ $0 >= 48 && $0 <= 57 }) else {
                throw .malformedHeaders("status code")
            }
            headers.statusCode = codeBytes.reduce(0) { $0 * 10 + Int($1 - 48) }
            headers.statusDescription = String(decoding: text.dropFirst(3).drop { $0 == 32 }, as: UTF8.self)
        }
        for line in lines.dropFirst().dropLast() {
            guard let colon = line.firstIndex(of: 58), colon > line.startIndex else {
                throw .malformedHeaders("field without a name")
            }
            let name = String(decoding: line[line.startIndex..<colon], as: UTF8.self)
            let value = String(decoding: line[(colon + 1)...].drop { $0 == 32 || $0 == 9 }, as: UTF8.self)
            headers.fields.append((name: name, value: value))
        }
        return headers
    }
}

// MARK: - Messages and INFO

/// One delivered message.
public struct NATSMessage: Sendable {
    public var subject: String
    /// The reply subject (`MSG subject sid reply size`), nil when none.
    public var replyTo: String?
    /// Present for `HMSG` (including status-only messages such as `503` no responders).
    public var headers: NATSHeaders?
    public var payload: [UInt8]

    public init(subject: String, replyTo: String? = nil, headers: NATSHeaders? = nil, payload: [UInt8]) {
        self.subject = subject
        self.replyTo = replyTo
        self.headers = headers
        self.payload = payload
    }

    /// The header status code, nil for a message without one.
    public var status: Int? { headers?.statusCode }
}

/// The fields of the server's `INFO` this client uses.
public struct NATSServerInfo: Sendable, Decodable, Equatable {
    public var serverID: String
    public var serverName: String?
    public var version: String
    public var proto: Int?
    public var headers: Bool?
    public var maxPayload: Int
    public var jetstream: Bool?
    public var cluster: String?
    public var connectURLs: [String]?

    enum CodingKeys: String, CodingKey {
        case serverID = "server_id"
        case serverName = "server_name"
        case version, proto, headers
        case maxPayload = "max_payload"
        case jetstream, cluster
        case connectURLs = "connect_urls"
    }
}

/// One thing the server sent.
enum NATSInbound: Sendable {
    case info(NATSServerInfo)
    case message(NATSMessage, sid: UInt64)
    case ping
    case pong
    case ok
    case err(String)
}

// MARK: - Parser

/// Incremental parser of the server's byte stream. The bytes are hostile: every control line is bounded
/// by `maxControlLineBytes` (checked before the line is complete), every payload by `maxPayloadBytes`
/// (checked on the control line, before any payload is buffered), and each byte is scanned a bounded
/// number of times (`scanned` remembers how far a partial line was searched), so cost is linear in the
/// bytes received. Not thread-safe: one parser per connection, used on its event loop.
struct NATSParser {
    /// Longest control line accepted, terminator excluded.
    let maxControlLineBytes: Int
    /// Largest `MSG`/`HMSG` total size accepted; lowered or raised by INFO's `max_payload`, never above
    /// `hardMaxPayloadBytes`.
    private(set) var maxPayloadBytes: Int
    /// Cap on what an INFO may raise `maxPayloadBytes` to.
    let hardMaxPayloadBytes: Int
    /// Bytes of the readable region already searched for `\n`.
    private var scanned = 0
    /// A parsed `MSG`/`HMSG` line whose payload has not fully arrived.
    private var pending: PendingMessage?

    private struct PendingMessage {
        var subject: String
        var sid: UInt64
        var reply: String?
        var headerBytes: Int?
        var totalBytes: Int
    }

    init(maxControlLineBytes: Int, initialMaxPayloadBytes: Int, hardMaxPayloadBytes: Int) {
        self.maxControlLineBytes = maxControlLineBytes
        self.maxPayloadBytes = min(initialMaxPayloadBytes, hardMaxPayloadBytes)
        self.hardMaxPayloadBytes = hardMaxPayloadBytes
    }

    /// Consumes one complete item from `buffer`, nil when more bytes are needed.
    /// - Throws: `NATSProtocolViolation` at the first byte sequence that breaks the protocol.
    mutating func next(_ buffer: inout ByteBuffer) throws(NATSProtocolViolation) -> NATSInbound? {
        if let message = pending {
            return try readPayload(message, &buffer)
        }
        let view = buffer.readableBytesView
        guard let newline = view[(view.startIndex + scanned)...].firstIndex(of: 10) else {
            if buffer.readableBytes > maxControlLineBytes + 1 {
                throw .controlLineTooLong(limitBytes: maxControlLineBytes)
            }
            scanned = buffer.readableBytes
            return nil
        }
        scanned = 0
        var length = newline - view.startIndex
        let consumed = length + 1
        if length > 0, view[view.startIndex + length - 1] == 13 { length -= 1 }
        guard length <= maxControlLineBytes else { throw .controlLineTooLong(limitBytes: maxControlLineBytes) }
        let line = Array(view[view.startIndex..<(view.startIndex + length)])
        buffer.moveReaderIndex(forwardBy: consumed)
        return try parseControlLine(line, &buffer)
    }

    private mutating func parseControlLine(_ line: [UInt8], _ buffer: inout ByteBuffer) throws(NATSProtocolViolation) -> NATSInbound? {
        let opEnd = line.firstIndex { $0 == 32 || $0 == 9 } ?? line.count
        let op = String(decoding: line[0..<opEnd], as: UTF8.self).uppercased()
        let rest = line[opEnd...]
        switch op {
        case "MSG", "HMSG":
            let args = Self.split(rest)
            let isH = op == "HMSG"
            let counts = isH ? (4, 5) : (3, 4)
            guard args.count == counts.0 || args.count == counts.1 else { throw .malformedControlLine(operation: op) }
            let hasReply = args.count == counts.1
            guard let sid = Self.number(args[1]) else { throw .malformedControlLine(operation: op) }
            let reply = hasReply ? String(decoding: args[2], as: UTF8.self) : nil
            guard let total = Self.number(args[args.count - 1]) else { throw .malformedControlLine(operation: op) }
            var headerBytes: Int?
            if isH {
                guard let h = Self.number(args[args.count - 2]), h <= total else { throw .malformedControlLine(operation: op) }
                headerBytes = Int(h)
            }
            guard total <= UInt64(maxPayloadBytes) else {
                throw .payloadTooLarge(bytes: total > UInt64(Int.max) ? Int.max : Int(total), limitBytes: maxPayloadBytes)
            }
            let message = PendingMessage(
                subject: String(decoding: args[0], as: UTF8.self), sid: sid, reply: reply,
                headerBytes: headerBytes, totalBytes: Int(total))
            pending = message
            return try readPayload(message, &buffer)
        case "PING":
            guard Self.split(rest).isEmpty else { throw .malformedControlLine(operation: op) }
            return .ping
        case "PONG":
            guard Self.split(rest).isEmpty else { throw .malformedControlLine(operation: op) }
            return .pong
        case "+OK":
            return .ok
        case "-ERR":
            var text = String(decoding: rest.drop { $0 == 32 || $0 == 9 }, as: UTF8.self)
            if text.hasPrefix("'"), text.hasSuffix("'"), text.count >= 2 { text = String(text.dropFirst().dropLast()) }
            return .err(text)
        case "INFO":
            let json = Data(rest.drop { $0 == 32 || $0 == 9 })
            let info: NATSServerInfo
            do {
                info = try JSONDecoder().decode(NATSServerInfo.self, from: json)
            } catch {
                throw .malformedInfo("JSON does not decode")
            }
            guard info.maxPayload > 0 else { throw .malformedInfo("max_payload \(info.maxPayload)") }
            maxPayloadBytes = min(info.maxPayload, hardMaxPayloadBytes)
            return .info(info)
        default:
            let printable = line.prefix(16).map { $0 >= 32 && $0 < 127 ? Character(UnicodeScalar($0)) : "?" }
            throw .unknownOperation(String(printable))
        }
    }

    private mutating func readPayload(_ message: PendingMessage, _ buffer: inout ByteBuffer) throws(NATSProtocolViolation) -> NATSInbound? {
        guard buffer.readableBytes >= message.totalBytes + 2 else { return nil }
        let view = buffer.readableBytesView
        let end = view.startIndex + message.totalBytes
        guard view[end] == 13, view[end + 1] == 10 else { throw .missingPayloadTerminator }
        var headers: NATSHeaders?
        var payloadStart = view.startIndex
        if let h = message.headerBytes {
            headers = try NATSHeaders.parse(view[view.startIndex..<(view.startIndex + h)])
            payloadStart += h
        }
        let payload = Array(view[payloadStart..<end])
        buffer.moveReaderIndex(forwardBy: message.totalBytes + 2)
        pending = nil
        let msg = NATSMessage(subject: message.subject, replyTo: message.reply, headers: headers, payload: payload)
        return .message(msg, sid: message.sid)
    }

    private static func split(_ bytes: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        bytes.split(whereSeparator: { $0 == 32 || $0 == 9 })
    }

    /// A decimal number of at most 18 digits (no sign), nil otherwise.
    private static func number(_ bytes: ArraySlice<UInt8>) -> UInt64? {
        guard !bytes.isEmpty, bytes.count <= 18 else { return nil }
        var value: UInt64 = 0
        for b in bytes {
            guard b >= 48, b <= 57 else { return nil }
            value = value * 10 + UInt64(b - 48)
        }
        return value
    }
}

/// `ByteToMessageDecoder` over `NATSParser`; a violation is thrown into the pipeline, where the
/// connection handler closes the channel with it.
struct NATSFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = NATSInbound
    var parser: NATSParser

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let item = try parser.next(&buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(item))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

// MARK: - Encoding

/// Writers of the client's protocol lines. Subjects are checked here, the one place they reach the wire.
enum NATSWire {
    /// A subject (or queue group, or reply subject) the protocol can carry: non-empty, printable ASCII
    /// without spaces, at most `maxSubjectBytes`, no empty tokens.
    static let maxSubjectBytes = 1024

    static func check(subject: String, what: String = "subject") throws(NATSError) {
        let bytes = subject.utf8
        guard !bytes.isEmpty, bytes.count <= maxSubjectBytes,
            bytes.allSatisfy({ $0 > 32 && $0 < 127 }),
            bytes.first != 46, bytes.last != 46, !subject.contains("..")
        else { throw .invalidArgument("\(what) '\(subject.prefix(64))'") }
    }

    static func publish(
        _ buffer: inout ByteBuffer, subject: String, reply: String?, headers: NATSHeaders?, payload: [UInt8]
    ) throws(NATSError) {
        try check(subject: subject)
        if let reply { try check(subject: reply, what: "reply subject") }
        if let headers {
            let block = try headers.encoded()
            buffer.writeString("HPUB \(subject) ")
            if let reply { buffer.writeString(reply + " ") }
            buffer.writeString("\(block.count) \(block.count + payload.count)\r\n")
            buffer.writeBytes(block)
        } else {
            buffer.writeString("PUB \(subject) ")
            if let reply { buffer.writeString(reply + " ") }
            buffer.writeString("\(payload.count)\r\n")
        }
        buffer.writeBytes(payload)
        buffer.writeString("\r\n")
    }

    static func subscribe(_ buffer: inout ByteBuffer, subject: String, queue: String?, sid: UInt64) throws(NATSError) {
        try check(subject: subject)
        if let queue {
            try check(subject: queue, what: "queue group")
            buffer.writeString("SUB \(subject) \(queue) \(sid)\r\n")
        } else {
            buffer.writeString("SUB \(subject) \(sid)\r\n")
        }
    }

    static func unsubscribe(_ buffer: inout ByteBuffer, sid: UInt64) {
        buffer.writeString("UNSUB \(sid)\r\n")
    }

    /// `CONNECT` with headers and no-responders on, verbose and pedantic off.
    static func connect(_ buffer: inout ByteBuffer, name: String) {
        struct Connect: Encodable {
            var verbose = false
            var pedantic = false
            var tls_required = false
            var name: String
            var lang = "swift"
            var version = "0.1.0"
            var `protocol` = 1
            var headers = true
            var no_responders = true
            var echo = true
        }
        let json = (try? JSONEncoder().encode(Connect(name: name))) ?? Data("{}".utf8)
        buffer.writeString("CONNECT ")
        buffer.writeBytes(json)
        buffer.writeString("\r\n")
    }
}
