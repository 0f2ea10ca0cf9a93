import NIOCore

/// What the line framer produces.
public enum Frame: Sendable {
    /// One line without its `\n`.
    case line(ByteBuffer)
    /// A line longer than the limit; it was skipped up to its newline (or is still being skipped).
    case tooLong
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

    public init(maxLineBytes: Int) { self.maxLineBytes = maxLineBytes }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
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
