import Foundation
import SteerCore
import SteerEngine
import SteerProtocol

/// Collection changes on a server that follows a write log (docs/scaling.md, "Collections in the
/// stream"): `create_collection`, `drop_collection`, `alias` and `delete_alias` are appended to the
/// shard's stream (`WriteLog.appendChange`) instead of applied here directly, and answered once this
/// server applied them at their place in the stream, with `sequence`. The answers carry the fields of
/// the direct ops (docs/protocol.md "Collections and aliases").
extension RequestHandler {
    /// Whether `operation` is a collection change that a following server appends to its stream.
    static func isLoggedChange(_ operation: Request.Operation) -> Bool {
        switch operation {
        case .createCollection, .dropCollection, .alias, .deleteAlias: return true
        default: return false
        }
    }

    /// Appends a collection change to the write log, waits until it is applied here and writes the answer.
    ///
    /// - Throws: what `WriteLog.appendChange` throws (`.invalidRequest` for `checkpoint`); `.notFound`
    ///   when the collection a create answered is gone again (dropped by a later message).
    func runLoggedChange(_ operation: Request.Operation, deadlineNanos: UInt64?, _ writer: inout JSONWriter) throws(SteerError) {
        guard let writeLog else { throw SteerError.internalError("no write log") }
        let logged = try writeLog.appendChange(operation, deadlineNanos: Self.waitLimit(deadlineNanos: deadlineNanos))
        switch operation {
        case .createCollection(let settings):
            writeDescription(try collections.describe(settings.name), &writer)
        case .dropCollection(let name):
            writer.raw(",\"dropped\":")
            writer.string(name)
        case .alias(let alias, let collection):
            writer.raw(",\"alias\":")
            writer.string(alias)
            Self.writeCollection(collection, &writer)
            writer.raw(",\"previous\":")
            if let previous = logged.previous { writer.string(previous) } else { writer.raw("null") }
        case .deleteAlias(let alias):
            writer.raw(",\"alias\":")
            writer.string(alias)
            if let target = logged.previous { Self.writeCollection(target, &writer) }
        default:
            throw SteerError.internalError("'\(operation.name)' is not a collection change")
        }
        writer.raw(",\"sequence\":")
        writer.int(Int64(clamping: logged.sequence))
    }
}
