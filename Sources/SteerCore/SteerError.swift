/// The one error type of Steer's libraries. Every case has a stable wire code (docs/protocol.md), so the
/// server can answer any failure from any layer with a specific `error.code`.
///
/// Codes wrap a private enum so new codes can be added without breaking the API.
public struct SteerError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A stable, machine-readable error code, sent on the wire as `error.code`.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Kind: String, Sendable {
            case parseError = "parse_error"
            case invalidRequest = "invalid_request"
            case unknownOp = "unknown_op"
            case notFound = "not_found"
            case dimensionMismatch = "dimension_mismatch"
            case tooLarge = "too_large"
            case unauthorized = "unauthorized"
            case unavailable = "unavailable"
            case `internal` = "internal"
            case corrupt = "corrupt"
            case io = "io_error"
            case deadlineExceeded = "deadline_exceeded"
            case alreadyExists = "already_exists"
            case inUse = "in_use"
            case partiallyApplied = "partially_applied"
        }

        private let kind: Kind
        private init(_ kind: Kind) { self.kind = kind }

        /// The line is not JSON, or not valid UTF-8.
        public static let parseError = Code(.parseError)
        /// A field is missing, has the wrong type or an invalid value.
        public static let invalidRequest = Code(.invalidRequest)
        /// The `op` field names no known operation.
        public static let unknownOp = Code(.unknownOp)
        /// An id, file or generation does not exist.
        public static let notFound = Code(.notFound)
        /// A vector's length differs from the dimension it must have.
        public static let dimensionMismatch = Code(.dimensionMismatch)
        /// An input exceeds a configured limit.
        public static let tooLarge = Code(.tooLarge)
        /// An admin operation without a valid token.
        public static let unauthorized = Code(.unauthorized)
        /// The service cannot answer now (shutting down, overloaded, not ready).
        public static let unavailable = Code(.unavailable)
        /// A bug or an unexpected failure in a dependency.
        public static let `internal` = Code(.internal)
        /// A file on disk (index, checkpoint, store record) failed validation.
        public static let corrupt = Code(.corrupt)
        /// The operating system refused a read or write.
        public static let io = Code(.io)
        /// The request's deadline (`timeout_ms`, or the server's default) passed before it finished; the
        /// request alone failed, and nothing about the replica that ran it is implied.
        public static let deadlineExceeded = Code(.deadlineExceeded)
        /// `create_collection` or `alias` with a name a collection or alias already has.
        public static let alreadyExists = Code(.alreadyExists)
        /// `drop_collection` of a collection that an alias points to (move or delete the alias first).
        public static let inUse = Code(.inUse)
        /// A collection admin op through a router applied on some shard replicas and not on others (the
        /// message names them); retrying the same request completes it (docs/scaling.md "Collections").
        public static let partiallyApplied = Code(.partiallyApplied)

        /// The code with this wire spelling; unknown spellings (from a newer peer) map to `.internal`.
        public init(wire: String) {
            self.init(Kind(rawValue: wire) ?? .internal)
        }

        /// The wire spelling, for example `dimension_mismatch`.
        public var rawValue: String { kind.rawValue }
        public var description: String { kind.rawValue }
    }

    public let code: Code
    /// A human-readable message that names the offending field or file.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    // MARK: Convenience constructors

    public static func invalid(_ message: String) -> SteerError { SteerError(.invalidRequest, message) }
    public static func notFound(_ message: String) -> SteerError { SteerError(.notFound, message) }
    public static func internalError(_ message: String) -> SteerError { SteerError(.internal, message) }
    public static func dimension(expected: Int, got: Int, field: String = "vector") -> SteerError {
        SteerError(.dimensionMismatch, "\(field) has \(got) dimensions, expected \(expected)")
    }
}
