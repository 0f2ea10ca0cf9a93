import NIOCore

/// What the line framer produces.
public enum Frame: Sendable {
    /// One line without its `\n`.
    case line(ByteBuffer)
    /// A line longer than the limit; it was skipped up to its newline (or is still being skipped).
    case tooLong
}

/// When the current partial line began, for the server's request-line timeout (a client that dribbles a
/// line byte by byte must still finish it in time). Confined to the channel's event loop, like the decoder
/// and the connection handler that share it.
public final class LineProgress {
    /// The arrival of the first byte of a line that has not ended yet; nil between lines.
    public internal(set) var partialSince: NIODeadline?

    public init() {}
}

/// Splits the byte stream at `\n`. A line longer than `maxLineBytes` is reported once as `.tooLong` as
/// soon as the limit is passed, and its bytes are discarded up to the next newline, where framing
/// resumes: memory per connection stays below `maxLineBytes` plus one read. The router's shard
/// connections frame responses with it too.
public struct LineFrameDecoder: ByteToMessageDecoder {
    public typealias InboundOut = Frame

    public let maxLineBytes: Int
    private var discarding = false
    /// Bytes of the readable region already searched for a newline.
    private var scanned = 0
    private let progress: LineProgress?

    /// - Parameters:
    ///   - maxLineBytes: longest line delivered; longer ones become one `.tooLong`.
    ///   - progress: told when a partial line starts and when it ends (nil: nobody asks).
    public init(maxLineBytes: Int, progress: LineProgress? = nil) {
        self.maxLineBytes = maxLineBytes
        self.progress = progress
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let state = try split(context: context, buffer: &buffer)
        if let progress {
            if buffer.readableBytes == 0 && !discarding {
                progress.partialSince = nil
            } else if state == .needMoreData {
                if progress.partialSince == nil { progress.partialSince = .now() }
            } else {
                progress.partialSince = nil // a line ended; the next one's clock starts when more is awaited
            }
        }
        return state
    }

    private mutating func split(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let view = buffer.readableBytesView
        if let newline = view[(view.startIndex + scanned)...].firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - view.startIndex
            scanned = 0
            if discarding {
                discarding = false
                buffer.moveReaderIndex(forwardBy: length + 1)
                return .continue
            }
            if length > maxLineBytes {
                buffer.moveReaderIndex(forwardBy: length + 1)
                context.fireChannelRead(wrapInboundOut(.tooLong))
                return .continue
            }
            let line = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            context.fireChannelRead(wrapInboundOut(.line(line)))
            return .continue
        }
        if discarding {
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            scanned = 0
            return .needMoreData
        }
        if buffer.readableBytes > maxLineBytes {
            discarding = true
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            scanned = 0
            context.fireChannelRead(wrapInboundOut(.tooLong))
            return .needMoreData
        }
        scanned = buffer.readableBytes
        return .needMoreData
    }

    public mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        // A final line without a newline is still a request.
        if seenEOF, !discarding, buffer.readableBytes > 0 {
            let line = buffer.readSlice(length: buffer.readableBytes)!
            context.fireChannelRead(wrapInboundOut(.line(line)))
        }
        scanned = 0
        return .needMoreData
    }
}
