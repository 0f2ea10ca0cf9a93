// SteerNATS: a small NATS + JetStream client written by hand over SwiftNIO, because no Swift NATS
// client is among this machine's package copies (/opt/swift-packages); see docs/nats.md for what it
// implements and what it does not.

/// How the server's bytes broke the NATS protocol. The parser stops at the first violation and the
/// connection closes with `NATSError.protocolViolation`.
public enum NATSProtocolViolation: Error, Sendable, Equatable, CustomStringConvertible {
    /// A control line (`INFO`, `MSG`, `-ERR`, ...) passed the limit before its `\r\n`.
    case controlLineTooLong(limitBytes: Int)
    /// The line starts with no operation this client knows (the first bytes, printable ASCII only).
    case unknownOperation(String)
    /// An operation's arguments are missing, extra, or not numbers where numbers belong.
    case malformedControlLine(operation: String)
    /// A `MSG`/`HMSG` announces more bytes than the server's `max_payload` (or the pre-INFO limit).
    case payloadTooLarge(bytes: Int, limitBytes: Int)
    /// A message's payload is not followed by `\r\n`.
    case missingPayloadTerminator
    /// An `HMSG` header block is not `NATS/1.0[ code[ description]]\r\n(Key: Value\r\n)*\r\n`.
    case malformedHeaders(String)
    /// The first thing the server sent was not `INFO`, or `INFO`'s JSON did not decode.
    case malformedInfo(String)

    public var description: String {
        switch self {
        case .controlLineTooLong(let limit): "control line longer than \(limit) bytes"
        case .unknownOperation(let op): "unknown operation '\(op)'"
        case .malformedControlLine(let op): "malformed \(op) line"
        case .payloadTooLarge(let bytes, let limit): "payload of \(bytes) bytes exceeds \(limit)"
        case .missingPayloadTerminator: "payload not terminated by CRLF"
        case .malformedHeaders(let why): "malformed headers: \(why)"
        case .malformedInfo(let why): "malformed INFO: \(why)"
        }
    }
}

/// An error answer of the JetStream API: `{"error":{"code":..,"err_code":..,"description":..}}`.
public struct JetStreamAPIError: Error, Sendable, Equatable, Codable {
    /// HTTP-like status (400, 404, 503, ...).
    public var code: Int
    /// The server's specific error number (10071 = wrong last sequence, 10059 = stream not found, ...).
    public var errCode: Int
    public var description: String

    /// `err_code` for "wrong last sequence" (an optimistic-concurrency conflict).
    public static let wrongLastSequence = 10071
    /// `err_code` for "stream not found".
    public static let streamNotFound = 10059
    /// `err_code` for "consumer not found".
    public static let consumerNotFound = 10014
    /// `err_code` for "no message found".
    public static let noMessageFound = 10037

    public init(code: Int, errCode: Int, description: String) {
        self.code = code
        self.errCode = errCode
        self.description = description
    }

    enum CodingKeys: String, CodingKey {
        case code
        case errCode = "err_code"
        case description
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        code = try c.decodeIfPresent(Int.self, forKey: .code) ?? 0
        errCode = try c.decodeIfPresent(Int.self, forKey: .errCode) ?? 0
        description = try c.decodeIfPresent(String.self, forKey: .description) ?? ""
    }
}

/// Every error SteerNATS throws. These are transport errors of this module, not wire codes of Steer's
/// own protocol: a caller that answers a Steer client maps them (typically to `unavailable`).
public enum NATSError: Error, Sendable, Equatable, CustomStringConvertible {
    /// TCP connect, the INFO/CONNECT handshake, or a server feature the client needs failed.
    case connectFailed(String)
    /// The connection is closed (by `close()`, the server, or the network); the reason is in the text.
    case connectionClosed(String)
    /// The server's bytes broke the protocol; the connection was closed.
    case protocolViolation(NATSProtocolViolation)
    /// The server sent `-ERR '...'` (the text without quotes).
    case serverError(String)
    /// No answer within the deadline (a request, a flush, a fetch).
    case timeout(String)
    /// A request's subject had no subscriber (the server's `503` status).
    case noResponders(subject: String)
    /// The caller passed a subject, header, key or size this client refuses to put on the wire.
    case invalidArgument(String)
    /// A subscription buffered more than its pending limit; it was ended (nothing is dropped silently).
    case slowConsumer(subject: String)
    /// The JetStream API answered with an error.
    case jetStream(JetStreamAPIError)
    /// A JetStream answer that is not the JSON or headers it should be.
    case malformedResponse(String)
    /// A push consumer (a key-value watch) skipped a consumer sequence; the watch ended.
    case sequenceGap(expected: UInt64, got: UInt64)

    public var description: String {
        switch self {
        case .connectFailed(let s): "connect failed: \(s)"
        case .connectionClosed(let s): "connection closed: \(s)"
        case .protocolViolation(let v): "protocol violation: \(v)"
        case .serverError(let s): "server error: \(s)"
        case .timeout(let s): "timeout: \(s)"
        case .noResponders(let subject): "no responders on '\(subject)'"
        case .invalidArgument(let s): "invalid argument: \(s)"
        case .slowConsumer(let subject): "slow consumer on '\(subject)'"
        case .jetStream(let e): "JetStream error \(e.code)/\(e.errCode): \(e.description)"
        case .malformedResponse(let s): "malformed response: \(s)"
        case .sequenceGap(let expected, let got): "consumer sequence gap: expected \(expected), got \(got)"
        }
    }

    /// True for an optimistic-concurrency conflict (`Nats-Expected-Last-Subject-Sequence` did not match).
    public var isWrongLastSequence: Bool {
        if case .jetStream(let e) = self { return e.errCode == JetStreamAPIError.wrongLastSequence }
        return false
    }
}
