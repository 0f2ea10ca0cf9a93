import CoreMetrics
import Foundation
import Metrics
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import SteerCore
import SteerEngine
import SteerProtocol
import SteerService

/// Prometheus metrics through swift-metrics: requests and latency histograms per op, errors per code,
/// items, indexed vectors and connections. Served as text on `GET /metrics` of an optional HTTP port.
public enum ServerMetricsBuckets {
    /// Latency buckets suited to a sub-millisecond server (Prometheus' defaults start at 5 ms): give
    /// them to `PrometheusMetricsFactory.defaultDurationHistogramBuckets`.
    public static let duration: [Duration] = [
        .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(100), .milliseconds(250), .seconds(1), .seconds(5),
    ]
}

final class ServerMetrics: Sendable {
    private let requests: [String: Metrics.Counter]
    private let durations: [String: Metrics.Timer]
    private let errors = Locked<[String: Metrics.Counter]>([:])
    private let items = Gauge(label: "steer_items")
    private let indexed = Gauge(label: "steer_index_vectors")
    private let tombstones = Gauge(label: "steer_index_tombstones")
    private let connections = Gauge(label: "steer_connections")
    /// `steer_collection_items{collection}` and `steer_collection_index_vectors{collection}` of every
    /// collection served (at most `--max-collections` + 1 label values; a dropped collection's are removed).
    private let perCollection = Locked<[String: (items: Metrics.Gauge, indexed: Metrics.Gauge)]>([:])
    /// `steer_collection_requests_total{collection}` and `steer_collection_errors_total{collection}`: the
    /// requests (and the failed ones) of the item, search and generation ops per served collection, an
    /// alias counted under its collection. Label values come only from `CollectionSet.servedName` (at most
    /// `--max-collections` + 1); a dropped collection's counters are removed at the next scrape.
    private let collectionRequests = Locked<[String: (requests: Metrics.Counter, errors: Metrics.Counter)]>([:])

    init() {
        var requests: [String: Metrics.Counter] = [:]
        var durations: [String: Metrics.Timer] = [:]
        for op in knownOperations + ["invalid"] {
            requests[op] = Metrics.Counter(label: "steer_requests_total", dimensions: [("op", op)])
            durations[op] = Metrics.Timer(label: "steer_request_duration_seconds", dimensions: [("op", op)])
        }
        self.requests = requests
        self.durations = durations
    }

    func record(op: String?, micros: Double?, error: SteerError.Code?, collection: String? = nil) {
        if let collection {
            let counters = collectionRequests.withLock { table in
                if let existing = table[collection] { return existing }
                let made = (Metrics.Counter(label: "steer_collection_requests_total", dimensions: [("collection", collection)]),
                            Metrics.Counter(label: "steer_collection_errors_total", dimensions: [("collection", collection)]))
                table[collection] = made
                return made
            }
            counters.requests.increment()
            if error != nil { counters.errors.increment() }
        }
        if let op {
            requests[op]?.increment()
            if let micros { durations[op]?.recordNanoseconds(Int64(micros * 1000)) }
        }
        if let error {
            let counter = errors.withLock { table in
                if let existing = table[error.rawValue] { return existing }
                let made = Metrics.Counter(label: "steer_errors_total", dimensions: [("code", error.rawValue)])
                table[error.rawValue] = made
                return made
            }
            counter.increment()
        }
    }

    /// Refreshes the gauges (called before each scrape): the unlabelled ones are the default
    /// collection's, the labelled ones every collection's.
    func refresh(engine: RetrievalEngine, collections: CollectionSet?, connections count: Int) {
        let stats = engine.stats()
        items.record(stats.items)
        indexed.record(stats.indexed)
        tombstones.record(stats.tombstones)
        connections.record(count)
        var served: [(String, EngineStats)] = [(CollectionName.defaultName, stats)]
        for (name, named) in collections?.namedEngines ?? [] { served.append((name, named.stats())) }
        perCollection.withLock { table in
            let names = Set(served.map(\.0))
            for (name, gauges) in table where !names.contains(name) {
                gauges.items.destroy()
                gauges.indexed.destroy()
                table[name] = nil
            }
            for (name, stats) in served {
                let gauges = table[name] ?? (Metrics.Gauge(label: "steer_collection_items", dimensions: [("collection", name)]),
                                             Metrics.Gauge(label: "steer_collection_index_vectors", dimensions: [("collection", name)]))
                table[name] = gauges
                gauges.items.record(stats.items)
                gauges.indexed.record(stats.indexed)
            }
        }
        // Only a collection `servedName` no longer knows is removed: one counted between this list and
        // here is kept.
        collectionRequests.withLock { table in
            for (name, counters) in table where collections.map({ $0.servedName(name) != name }) ?? (name != CollectionName.defaultName) {
                counters.requests.destroy()
                counters.errors.destroy()
                table[name] = nil
            }
        }
    }
}

/// Answers `GET /metrics` with the registry's text exposition; anything else gets 404.
final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let registry: PrometheusCollectorRegistry
    private let refresh: @Sendable () -> Void
    private var path = ""
    private var keepAlive = true

    init(registry: PrometheusCollectorRegistry, refresh: @escaping @Sendable () -> Void) {
        self.registry = registry
        self.refresh = refresh
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil) // quiet for `metricsIdleTimeoutSeconds`
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            path = head.uri
            keepAlive = head.isKeepAlive
        case .body:
            // Scrapes are GETs without a body; a body is no scrape, and streaming one would hold a slot.
            context.close(promise: nil)
        case .end:
            var status = HTTPResponseStatus.ok
            var body: [UInt8]
            if path == "/metrics" || path.hasPrefix("/metrics?") {
                refresh()
                body = registry.emitToBuffer()
            } else {
                status = .notFound
                body = Array("not found; metrics are at /metrics\n".utf8)
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "text/plain; version=0.0.4; charset=utf-8")
            headers.add(name: "Content-Length", value: String(body.count))
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            var buffer = context.channel.allocator.buffer(capacity: body.count)
            buffer.writeBytes(body)
            body = []
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            if keepAlive {
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            } else {
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
            }
        }
    }
}
