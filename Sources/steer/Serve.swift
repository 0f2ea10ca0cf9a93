import ArgumentParser
import Foundation
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import SteerCore
import SteerBuilder
import SteerData
import SteerEngine
import SteerNATS
import SteerProtocol
import SteerService
import SteerServer
import SteerWriteLog

/// `steer serve`: the TCP server. Settings come from flags, then `STEER_*` environment variables, then
/// an optional JSON config file (`--config`), then defaults (docs/configuration.md has the table).
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the line-delimited JSON protocol over TCP (docs/protocol.md).")

    @Option(help: "JSON config file (keys as in docs/configuration.md). Env: STEER_CONFIG.")
    var config: String?
    @Option(help: "Address to bind (default 127.0.0.1). Env: STEER_HOST.")
    var host: String?
    @Option(help: "Port; 0 picks a free one (default 7878). Env: STEER_PORT.")
    var port: Int?
    @Option(help: "Data directory (created when missing). Env: STEER_DATA.")
    var data: String?
    @Option(help: "Vector dimension (required for a new data directory). Env: STEER_DIMENSION.")
    var dimension: Int?
    @Option(name: .customLong("index-spec"), help: "Index spec, e.g. Flat, HNSW32, IVF256,Flat (default Flat). Env: STEER_INDEX_SPEC.")
    var indexSpec: String?
    @Option(help: "ip, l2 or cosine (default ip). Env: STEER_METRIC.")
    var metric: String?
    @Option(name: .customLong("embedding-version"), help: "Embedding version name (default v1). Env: STEER_EMBEDDING_VERSION.")
    var embeddingVersion: String?
    @Option(name: .customLong("admin-token"), help: "Admin key for upsert/delete/swap (and reads unless --public-reads); visible in `ps`: prefer --admin-token-file. Env: STEER_ADMIN_TOKEN.")
    var adminToken: String?
    @Option(name: .customLong("admin-token-file"), help: "File holding the admin key (trailing newline ignored). Env: STEER_ADMIN_TOKEN_FILE.")
    var adminTokenFile: String?
    @Option(name: .customLong("keys-file"), help: "JSON keys file {\"keys\":[{\"name\",\"scope\":\"read\"|\"admin\",\"key\"}]}; SIGHUP reloads it (docs/protocol.md). Env: STEER_KEYS_FILE.")
    var keysFile: String?
    @Option(name: .customLong("public-reads"), help: "true: reads need no key even when keys are configured (default false). Env: STEER_PUBLIC_READS.")
    var publicReads: String?
    @Option(name: .customLong("sync-writes"), help: "fsync the store's WAL per write: true/false (default true). Env: STEER_SYNC_WRITES.")
    var syncWrites: String?
    @Option(name: .customLong("index-save-seconds"), help: "Save each engine's own index every N seconds when its store changed, so a killed server reopens from it instead of rebuilding (default 60; 0: only on shutdown). Env: STEER_INDEX_SAVE_SECONDS.")
    var indexSaveSeconds: Int?
    @Option(name: .customLong("max-line-bytes"), help: "Longest request line (default 1048576). Env: STEER_MAX_LINE_BYTES.")
    var maxLineBytes: Int?
    @Option(name: .customLong("max-k"), help: "Largest k (default 1000). Env: STEER_MAX_K.")
    var maxK: Int?
    @Option(name: .customLong("max-batch"), help: "Most queries/items/ids per request (default 1024). Env: STEER_MAX_BATCH.")
    var maxBatch: Int?
    @OptionGroup var requestLimits: RequestLimitOptions
    @Option(name: .customLong("max-connections"), help: "Most simultaneous connections (default 1024). Env: STEER_MAX_CONNECTIONS.")
    var maxConnections: Int?
    @Option(name: .customLong("idle-timeout"), help: "Seconds before an idle connection is closed, 0 = never (default 300). Env: STEER_IDLE_TIMEOUT.")
    var idleTimeout: Int?
    @Option(name: .customLong("max-in-flight"), help: "Most unanswered requests per connection (default 64). Env: STEER_MAX_IN_FLIGHT.")
    var maxInFlight: Int?
    @Option(name: .customLong("worker-threads"), help: "Threads for index/store work (default: cores). Env: STEER_WORKER_THREADS.")
    var workerThreads: Int?
    @Option(name: .customLong("event-loop-threads"), help: "NIO event-loop threads (default: cores). Env: STEER_EVENT_LOOP_THREADS.")
    var eventLoopThreads: Int?
    @Option(name: .customLong("worker-spin-us"), help: "Microseconds an idle worker thread spins before parking, 0 = park at once (default 0: opt-in, docs/configuration.md). Env: STEER_WORKER_SPIN_US.")
    var workerSpinMicroseconds: Int?
    @Option(name: .customLong("loop-spin-us"), help: "Microseconds an event loop may spin for the answer of the only request running in the server, 0 = never (default 0: opt-in, docs/configuration.md). Env: STEER_LOOP_SPIN_US.")
    var loopSpinMicroseconds: Int?
    @Option(name: .customLong("payload-index"), help: "Declare a payload index ATTR:keyword or ATTR:numeric (repeatable; built over existing items at start). Also the admin op declare_index.")
    var payloadIndex: [String] = []
    @Option(name: .customLong("recall-target"), help: "Mean recall@10 the default ef_search/nprobe are calibrated to on the served index's own items (0 < T <= 1), or 'off' to keep the index defaults (default 0.95). Env: STEER_RECALL_TARGET.")
    var recallTarget: String?
    @Option(name: .customLong("filter-cache-mb"), help: "MiB of resolved filter match sets kept per store sequence, 0 = resolve every request's filter (default 64). Env: STEER_FILTER_CACHE_MB.")
    var filterCacheMB: Int?
    @Option(name: .customLong("max-scan-records"), help: "Most item records one filter may read to evaluate attribute leaves that no payload index answers; more is refused as too_large (default 1000000). Env: STEER_MAX_SCAN_RECORDS.")
    var maxScanRecords: Int?
    @Option(name: .customLong("record-cache-mb"), help: "MiB of item records (titles, tags) kept in memory for search answers, 0 = read each from RocksDB (default 256). Env: STEER_RECORD_CACHE_MB.")
    var recordCacheMB: Int?
    @Option(name: .customLong("history-cap"), help: "Most events kept per user in the stored histories (the most recent ones; default 200; docs/protocol.md). Env: STEER_HISTORY_CAP.")
    var historyCap: Int?
    @Option(name: .customLong("max-collections"), help: "Most named collections (and, separately, aliases) besides the default one (1 … 4096, default 64). Env: STEER_MAX_COLLECTIONS.")
    var maxCollections: Int?
    @Option(name: .customLong("omp-threads-per-worker"), help: "OpenMP threads FAISS may use per request (default 1). Env: STEER_OMP_THREADS_PER_WORKER.")
    var ompThreadsPerWorker: Int?
    @Option(name: .customLong("metrics-port"), help: "Serve Prometheus metrics on GET /metrics of this port (0 = free port; default off). Env: STEER_METRICS_PORT.")
    var metricsPort: Int?
    @Option(name: .customLong("tls-cert"), help: "PEM certificate chain: clients must then connect with TLS (with --tls-key). Env: STEER_TLS_CERT.")
    var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "PEM private key of --tls-cert. Env: STEER_TLS_KEY.")
    var tlsKey: String?
    @Option(help: "DPR checkpoint directory (Tools/train export): recommend/encode use its model; its catalog is ingested into the data directory. Env: STEER_CHECKPOINT.")
    var checkpoint: String?

    @Option(name: .customLong("snapshot-dir"), help: "Directory the admin op 'snapshot' writes snapshots into (created when missing); without it the op is refused. Env: STEER_SNAPSHOT_DIR.")
    var snapshotDir: String?

    @Option(name: .customLong("checkpoint-root"), help: "Directory that swap's 'checkpoint' must lie inside (symlinks resolved); default: the directory holding --checkpoint, or checkpoint swaps are refused. Env: STEER_CHECKPOINT_ROOT.")
    var checkpointRoot: String?

    @Option(help: "all-MiniLM-L6-v2 files for --checkpoint (default models/all-MiniLM-L6-v2). Env: STEER_MINILM_DIR.")
    var minilm: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error (default info). Env: STEER_LOG_LEVEL.")
    var logLevel: String?

    @Option(help: "Follow the shard's write log on this NATS JetStream server (nats://host:port; several nodes of one NATS cluster separated by commas): writes go through the stream, every replica applies it in order (docs/scaling.md). Env: STEER_FOLLOW.")
    var follow: String?
    @Option(help: "Cluster name of the stream steer.<cluster>.shard.<i> (letters, digits, _; with --follow). Env: STEER_CLUSTER.")
    var cluster: String?
    @Option(help: "Shard number of the stream (with --follow; default 0). Env: STEER_SHARD.")
    var shard: Int?
    @Option(name: .customLong("stream-replicas"), help: "Copies of the stream when this server creates it (1 = one NATS node; 3 in a 3-node cluster; default 1). Env: STEER_STREAM_REPLICAS.")
    var streamReplicas: Int?
    @Option(name: .customLong("stream-max-age"), help: "Seconds the shard's stream keeps a message (set when this server creates the stream, and on an existing stream with another limit; default: no limit). Env: STEER_STREAM_MAX_AGE.")
    var streamMaxAge: Int?
    @Option(name: .customLong("stream-max-messages"), help: "Messages the shard's stream keeps, the newest (set like --stream-max-age; default: no limit). Env: STEER_STREAM_MAX_MESSAGES.")
    var streamMaxMessages: Int?
    @Option(name: .customLong("shard-count"), help: "The cluster's shard count, recorded in its metadata bucket steer_<cluster> when none is (a different recorded count stops the server; with --follow). Env: STEER_SHARD_COUNT.")
    var shardCount: Int?
    @Option(help: "HOST:PORT routers reach this replica at, put in the cluster's replicas bucket every second (with --follow; default: the address it listens on). Env: STEER_ADVERTISE.")
    var advertise: String?
    @Option(help: "Start from this snapshot (steer snapshot): its files are checked and copied into --data, which must be new or empty (docs/operations.md). Env: STEER_RESTORE.")
    var restore: String?
}

/// The request-cost and connection-budget settings (docs/security.md) of `steer serve` and `steer route`,
/// resolved like every other setting (flag > environment > config file).
struct RequestLimitOptions: ParsableArguments {
    @Option(name: .customLong("max-ef-search"), help: "Largest ef_search (default 4096). Env: STEER_MAX_EF_SEARCH.")
    var maxEfSearch: Int?
    @Option(name: .customLong("max-nprobe"), help: "Largest nprobe (default 4096). Env: STEER_MAX_NPROBE.")
    var maxNprobe: Int?
    @Option(name: .customLong("max-query-cost"), help: "Most work units per request: sum over queries of max(k, ef_search, nprobe) (default 262144). Env: STEER_MAX_QUERY_COST.")
    var maxQueryCost: Int?
    @Option(name: .customLong("max-filter-terms"), help: "Most distinct tags in one filter (default 64). Env: STEER_MAX_FILTER_TERMS.")
    var maxFilterTerms: Int?
    @Option(name: .customLong("max-prompt-bytes"), help: "Longest prompt in UTF-8 bytes (default 4096). Env: STEER_MAX_PROMPT_BYTES.")
    var maxPromptBytes: Int?
    @Option(name: .customLong("max-response-bytes"), help: "Longest answer line; longer answers become too_large (default 16777216). Env: STEER_MAX_RESPONSE_BYTES.")
    var maxResponseBytes: Int?
    @Option(name: .customLong("request-timeout-ms"), help: "Deadline of a request without timeout_ms (default 10000). Env: STEER_REQUEST_TIMEOUT_MS.")
    var requestTimeoutMillis: Int?
    @Option(name: .customLong("max-timeout-ms"), help: "Largest timeout_ms a request may ask for (default 60000). Env: STEER_MAX_TIMEOUT_MS.")
    var maxTimeoutMillis: Int?
    @Option(name: .customLong("request-line-timeout"), help: "Seconds a request line may take to arrive from its first byte, 0 = no limit (default 10). Env: STEER_REQUEST_LINE_TIMEOUT.")
    var requestLineTimeout: Int?
    @Option(name: .customLong("write-timeout"), help: "Seconds a client may leave an answer untaken before it is closed, 0 = no limit (default 30). Env: STEER_WRITE_TIMEOUT.")
    var writeTimeout: Int?
    @Option(name: .customLong("max-connection-output-bytes"), help: "Untaken answer bytes per connection before it starts nothing new (default 8388608). Env: STEER_MAX_CONNECTION_OUTPUT_BYTES.")
    var maxConnectionOutputBytes: Int?
    @Option(name: .customLong("max-server-output-bytes"), help: "Untaken answer bytes over all connections before none starts anything new (default 536870912). Env: STEER_MAX_SERVER_OUTPUT_BYTES.")
    var maxServerOutputBytes: Int?

    static let keys = [
        "max_ef_search", "max_nprobe", "max_query_cost", "max_filter_terms", "max_prompt_bytes", "max_response_bytes",
        "request_timeout_ms", "max_timeout_ms", "request_line_timeout", "write_timeout", "max_connection_output_bytes",
        "max_server_output_bytes",
    ]

    func apply(_ source: SettingSource, to limits: inout ProtocolLimits) throws {
        limits.maxEfSearch = try source.int(maxEfSearch, env: "STEER_MAX_EF_SEARCH", key: "max_ef_search", range: 1...(1 << 20)) ?? limits.maxEfSearch
        limits.maxNprobe = try source.int(maxNprobe, env: "STEER_MAX_NPROBE", key: "max_nprobe", range: 1...(1 << 20)) ?? limits.maxNprobe
        limits.maxQueryCost = try source.int(maxQueryCost, env: "STEER_MAX_QUERY_COST", key: "max_query_cost", range: 1...(1 << 40)) ?? limits.maxQueryCost
        limits.maxFilterTerms = try source.int(maxFilterTerms, env: "STEER_MAX_FILTER_TERMS", key: "max_filter_terms", range: 1...100_000) ?? limits.maxFilterTerms
        limits.maxPromptBytes = try source.int(maxPromptBytes, env: "STEER_MAX_PROMPT_BYTES", key: "max_prompt_bytes", range: 1...(1 << 20)) ?? limits.maxPromptBytes
        limits.maxResponseBytes = try source.int(maxResponseBytes, env: "STEER_MAX_RESPONSE_BYTES", key: "max_response_bytes", range: 1024...(1 << 32)) ?? limits.maxResponseBytes
        limits.maxTimeoutMillis = try source.int(maxTimeoutMillis, env: "STEER_MAX_TIMEOUT_MS", key: "max_timeout_ms", range: 1...86_400_000) ?? limits.maxTimeoutMillis
    }

    func apply(_ source: SettingSource, to server: inout ServerConfiguration) throws {
        server.requestTimeoutMillis = try source.int(requestTimeoutMillis, env: "STEER_REQUEST_TIMEOUT_MS", key: "request_timeout_ms", range: 1...86_400_000) ?? server.requestTimeoutMillis
        server.requestLineTimeoutSeconds = try source.int(requestLineTimeout, env: "STEER_REQUEST_LINE_TIMEOUT", key: "request_line_timeout", range: 0...86_400) ?? server.requestLineTimeoutSeconds
        server.writeTimeoutSeconds = try source.int(writeTimeout, env: "STEER_WRITE_TIMEOUT", key: "write_timeout", range: 0...86_400) ?? server.writeTimeoutSeconds
        server.maxConnectionOutputBytes = try source.int(maxConnectionOutputBytes, env: "STEER_MAX_CONNECTION_OUTPUT_BYTES", key: "max_connection_output_bytes", range: 1024...(1 << 40)) ?? server.maxConnectionOutputBytes
        server.maxServerOutputBytes = try source.int(maxServerOutputBytes, env: "STEER_MAX_SERVER_OUTPUT_BYTES", key: "max_server_output_bytes", range: 1024...(1 << 40)) ?? server.maxServerOutputBytes
    }
}

/// Resolves settings in the order flag > environment > config file.
struct SettingSource {
    let environment: [String: String]
    let file: [String: Any]
    let filePath: String?

    /// - Parameters:
    ///   - configPath: the config file (`--config`); nil: `STEER_CONFIG`, when `readsConfigFile`.
    ///   - readsConfigFile: false for commands without a config file (`steer route`): flags and environment only.
    init(configPath: String?, readsConfigFile: Bool = true) throws {
        environment = ProcessInfo.processInfo.environment
        let path = readsConfigFile ? configPath ?? environment["STEER_CONFIG"] : nil
        filePath = path
        guard let path else {
            file = [:]
            return
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("config file '\(path)' cannot be read")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ValidationError("config file '\(path)' is not a JSON object")
        }
        let known = Set([
            "host", "port", "data", "dimension", "index_spec", "metric", "embedding_version", "admin_token", "sync_writes",
            "max_line_bytes", "max_k", "max_batch", "max_connections", "idle_timeout", "max_in_flight", "worker_threads",
            "event_loop_threads", "log_level", "metrics_port", "checkpoint", "minilm", "omp_threads_per_worker",
            "tls_cert", "tls_key", "worker_spin_us", "record_cache_mb", "recall_target", "filter_cache_mb", "max_scan_records", "history_cap", "max_collections", "loop_spin_us", "checkpoint_root",
            "admin_token_file", "keys_file", "public_reads", "follow", "cluster", "shard", "stream_replicas", "restore",
            "stream_max_age", "stream_max_messages", "index_save_seconds",
            "snapshot_dir", "shard_count", "advertise",
        ] + RequestLimitOptions.keys)
        if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
            throw ValidationError("config file '\(path)': unknown key '\(unknown)'")
        }
        file = object
    }

    func string(_ flag: String?, env: String, key: String) throws -> String? {
        if let flag { return flag }
        if let value = environment[env], !value.isEmpty { return value }
        if let value = file[key] {
            if let text = value as? String { return text }
            if let number = value as? NSNumber { return number.stringValue }
            throw ValidationError("config file '\(filePath ?? "")': '\(key)' must be a string or number")
        }
        return nil
    }

    func int(_ flag: Int?, env: String, key: String, range: ClosedRange<Int>) throws -> Int? {
        let value: Int?
        if let flag {
            value = flag
        } else if let text = try string(nil, env: env, key: key) {
            guard let parsed = Int(text) else { throw ValidationError("\(env) / '\(key)' must be an integer, got '\(text)'") }
            value = parsed
        } else {
            value = nil
        }
        if let value, !range.contains(value) {
            throw ValidationError("\(key.replacingOccurrences(of: "_", with: "-")) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
        }
        return value
    }

    func bool(_ flag: String?, env: String, key: String) throws -> Bool? {
        if let value = file[key] as? Bool, flag == nil, environment[env] == nil { return value }
        guard let text = try string(flag, env: env, key: key) else { return nil }
        switch text.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw ValidationError("\(key.replacingOccurrences(of: "_", with: "-")) must be true or false, got '\(text)'")
        }
    }
}

extension Serve {
    func run() async throws {
        let source = try SettingSource(configPath: config)
        let levelText = try source.string(logLevel, env: "STEER_LOG_LEVEL", key: "log_level") ?? "info"
        guard let level = Logger.Level(rawValue: levelText.lowercased()) else {
            throw ValidationError("log-level must be trace, debug, info, notice, warning, error or critical, got '\(levelText)'")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "steer.server")

        guard let dataDirectory = try source.string(data, env: "STEER_DATA", key: "data") else {
            throw ValidationError("give the data directory with --data (or STEER_DATA)")
        }
        if let snapshot = try source.string(restore, env: "STEER_RESTORE", key: "restore") {
            do {
                let manifest = try Snapshot.restore(snapshot, into: dataDirectory)
                logger.info("restored a snapshot", metadata: [
                    "steer.snapshot": "\(snapshot)", "steer.applied_sequence": "\(manifest.appliedSequence)", "steer.store": "\(manifest.storeID)",
                ])
            } catch {
                logger.error("cannot restore the snapshot", metadata: ["steer.error": "\(error)", "steer.snapshot": "\(snapshot)"])
                throw ExitCode(2)
            }
        }
        var metricValue: Metric?
        if let text = try source.string(metric, env: "STEER_METRIC", key: "metric") {
            do { metricValue = try Metric(parsing: text) } catch { throw ValidationError(error.message) }
        }
        var engineConfiguration = RetrievalEngine.Configuration(
            dataDirectory: dataDirectory,
            dimension: try source.int(dimension, env: "STEER_DIMENSION", key: "dimension", range: 1...65536),
            indexSpec: try source.string(indexSpec, env: "STEER_INDEX_SPEC", key: "index_spec"),
            metric: metricValue,
            embeddingVersion: try source.string(embeddingVersion, env: "STEER_EMBEDDING_VERSION", key: "embedding_version"),
            syncWrites: try source.bool(syncWrites, env: "STEER_SYNC_WRITES", key: "sync_writes") ?? true)
        if let megabytes = try source.int(recordCacheMB, env: "STEER_RECORD_CACHE_MB", key: "record_cache_mb", range: 0...(1 << 20)) {
            engineConfiguration.recordCacheBytes = megabytes << 20
        }
        if let target = try source.string(recallTarget, env: "STEER_RECALL_TARGET", key: "recall_target") {
            if target == "off" {
                engineConfiguration.recallTarget = nil
            } else {
                guard let value = Double(target), value > 0, value <= 1 else {
                    throw ValidationError("--recall-target takes a recall in (0, 1] or 'off', got '\(target)'")
                }
                engineConfiguration.recallTarget = value
            }
        }
        if let megabytes = try source.int(filterCacheMB, env: "STEER_FILTER_CACHE_MB", key: "filter_cache_mb", range: 0...(1 << 20)) {
            engineConfiguration.filterCacheBytes = megabytes << 20
        }
        if let records = try source.int(maxScanRecords, env: "STEER_MAX_SCAN_RECORDS", key: "max_scan_records", range: 0...(1 << 40)) {
            engineConfiguration.maxScanRecords = records
        }
        for declaration in payloadIndex {
            let parts = declaration.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw ValidationError("--payload-index takes ATTR:keyword or ATTR:numeric, got '\(declaration)'") }
            do { engineConfiguration.payloadIndexes[String(parts[0])] = try PayloadKind(parsing: String(parts[1])) } catch { throw ValidationError(error.message) }
        }
        if let cap = try source.int(historyCap, env: "STEER_HISTORY_CAP", key: "history_cap", range: 1...UserEvent.maxEventsPerUserLimit) {
            engineConfiguration.maxEventsPerUser = cap
        }
        let minilmDirectory = try source.string(minilm, env: "STEER_MINILM_DIR", key: "minilm") ?? CheckpointServing.defaultMiniLM
        engineConfiguration.miniLMDirectory = minilmDirectory
        let startCheckpoint = try source.string(checkpoint, env: "STEER_CHECKPOINT", key: "checkpoint")
        engineConfiguration.checkpointRoot = try source.string(checkpointRoot, env: "STEER_CHECKPOINT_ROOT", key: "checkpoint_root")
            ?? startCheckpoint.map { (($0 as NSString).standardizingPath as NSString).deletingLastPathComponent }.map { $0.isEmpty ? "." : $0 }
        if let checkpointDirectory = startCheckpoint {
            let serving: CheckpointServing
            do {
                serving = try CheckpointServing.prepare(checkpoint: checkpointDirectory, minilm: minilmDirectory,
                                                        dataDirectory: dataDirectory, logger: logger)
            } catch {
                logger.error("cannot serve the checkpoint", metadata: ["steer.error": "\(error)"])
                throw ExitCode(2)
            }
            if let wanted = engineConfiguration.dimension, wanted != serving.dimension {
                throw ValidationError("--dimension \(wanted) conflicts with the checkpoint's \(serving.dimension)-d item table")
            }
            if let wanted = engineConfiguration.embeddingVersion, wanted != serving.version {
                throw ValidationError("--embedding-version \(wanted) conflicts with the checkpoint's version \(serving.version)")
            }
            engineConfiguration.dimension = serving.dimension
            engineConfiguration.embeddingVersion = serving.version
            engineConfiguration.metric = engineConfiguration.metric ?? .innerProduct
            let model = serving.model
            engineConfiguration.encoderFactory = { _, _, _ in DPRQueryEncoder(model: model) }
        }

        var limits = ProtocolLimits()
        limits.maxLineBytes = try source.int(maxLineBytes, env: "STEER_MAX_LINE_BYTES", key: "max_line_bytes", range: 64...(1 << 30)) ?? limits.maxLineBytes
        limits.maxK = try source.int(maxK, env: "STEER_MAX_K", key: "max_k", range: 1...10_000) ?? limits.maxK
        limits.maxBatch = try source.int(maxBatch, env: "STEER_MAX_BATCH", key: "max_batch", range: 1...100_000) ?? limits.maxBatch
        try requestLimits.apply(source, to: &limits)
        var serverConfiguration = ServerConfiguration(limits: limits)
        try requestLimits.apply(source, to: &serverConfiguration)
        serverConfiguration.host = try source.string(host, env: "STEER_HOST", key: "host") ?? "127.0.0.1"
        serverConfiguration.port = try source.int(port, env: "STEER_PORT", key: "port", range: 0...65535) ?? 7878
        serverConfiguration.maxConnections = try source.int(maxConnections, env: "STEER_MAX_CONNECTIONS", key: "max_connections", range: 1...1_000_000) ?? serverConfiguration.maxConnections
        serverConfiguration.idleTimeoutSeconds = try source.int(idleTimeout, env: "STEER_IDLE_TIMEOUT", key: "idle_timeout", range: 0...86_400) ?? serverConfiguration.idleTimeoutSeconds
        serverConfiguration.maxInFlight = try source.int(maxInFlight, env: "STEER_MAX_IN_FLIGHT", key: "max_in_flight", range: 1...100_000) ?? serverConfiguration.maxInFlight
        serverConfiguration.workerThreads = try source.int(workerThreads, env: "STEER_WORKER_THREADS", key: "worker_threads", range: 1...1024) ?? serverConfiguration.workerThreads
        serverConfiguration.eventLoopThreads = try source.int(eventLoopThreads, env: "STEER_EVENT_LOOP_THREADS", key: "event_loop_threads", range: 1...1024) ?? serverConfiguration.eventLoopThreads
        serverConfiguration.accessKeys = try Self.accessKeys(
            token: adminToken, tokenFile: adminTokenFile, keysFile: keysFile, publicReads: publicReads, source: source, logger: logger)
        serverConfiguration.openMPThreadsPerWorker = try source.int(ompThreadsPerWorker, env: "STEER_OMP_THREADS_PER_WORKER", key: "omp_threads_per_worker", range: 1...256) ?? 1
        serverConfiguration.workerSpinMicroseconds = try source.int(workerSpinMicroseconds, env: "STEER_WORKER_SPIN_US", key: "worker_spin_us", range: 0...100_000) ?? ServerConfiguration.defaultWorkerSpinMicroseconds
        serverConfiguration.loopSpinMicroseconds = try source.int(loopSpinMicroseconds, env: "STEER_LOOP_SPIN_US", key: "loop_spin_us", range: 0...100_000) ?? ServerConfiguration.defaultLoopSpinMicroseconds
        serverConfiguration.metricsPort = try source.int(metricsPort, env: "STEER_METRICS_PORT", key: "metrics_port", range: 0...65535)
        switch (try source.string(tlsCert, env: "STEER_TLS_CERT", key: "tls_cert"), try source.string(tlsKey, env: "STEER_TLS_KEY", key: "tls_key")) {
        case (nil, nil):
            break
        case let (certificate?, key?):
            let files = TLSFiles(certificateChain: certificate, privateKey: key)
            do {
                try files.validate()
            } catch {
                logger.error("cannot use the TLS files", metadata: ["steer.error": "\(error)"])
                throw ExitCode(2)
            }
            serverConfiguration.tls = files
        default:
            throw ValidationError("--tls-cert and --tls-key go together: give both or neither")
        }
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = ServerMetricsBuckets.duration
        MetricsSystem.bootstrap(factory)

        let engine: RetrievalEngine
        do {
            engine = try RetrievalEngine(configuration: engineConfiguration)
        } catch {
            logger.error("cannot open the data directory", metadata: ["steer.error": "\(error)"])
            throw ExitCode(2)
        }
        for warning in engine.openingWarnings { logger.warning("\(warning)") }
        let collections: CollectionSet
        do {
            collections = try CollectionSet(
                defaultEngine: engine,
                maxCollections: try source.int(maxCollections, env: "STEER_MAX_COLLECTIONS", key: "max_collections",
                                               range: 1...CollectionCatalog.maxCollectionsLimit) ?? CollectionSet.defaultMaxCollections,
                makeEngine: Self.collectionFactory(base: engineConfiguration, minilm: minilmDirectory, logger: logger))
        } catch {
            logger.error("cannot open the data directory's collections", metadata: ["steer.error": "\(error)"])
            try? engine.close()
            throw ExitCode(2)
        }
        for (name, named) in collections.namedEngines {
            for warning in named.openingWarnings { logger.warning("collection \(name): \(warning)") }
        }
        let stats = engine.stats()
        logger.info("engine ready", metadata: [
            "steer.items": "\(stats.items)", "steer.dimension": "\(stats.dimension)", "steer.index": "\(stats.indexSpec)",
            "steer.metric": "\(stats.metric.rawValue)", "steer.generation": "\(stats.generation)",
        ])
        var followTask: Task<Void, Never>?
        var generationTask: Task<Void, Never>?
        defer { generationTask?.cancel() }
        var heartbeat: (beat: ReplicaHeartbeat, advertised: ClusterDirectory.Address?)?
        if let followURL = try source.string(follow, env: "STEER_FOLLOW", key: "follow") {
            let follower = try await startFollowing(url: followURL, source: source, engine: engine, collections: collections, limits: limits,
                                                  logger: logger)
            serverConfiguration.writeLog = follower.0
            let first = follower.1
            followTask = Task { await follower.0.run(first: first) }
            heartbeat = try await registerInCluster(follower: follower.0, source: source, logger: logger)
            let settings = follower.0.settings
            let generations = GenerationFollower(
                addresses: settings.addresses, cluster: settings.cluster,
                heartbeatKey: ClusterDirectory.replicaKey(shard: settings.shard, replicaID: follower.0.durable),
                bucketReplicas: settings.streamReplicas, engine: engine, logger: logger)
            generationTask = Task { await generations.run() }
        } else if try source.string(cluster, env: "STEER_CLUSTER", key: "cluster") != nil {
            throw ValidationError("--cluster, --shard, --stream-replicas, --stream-max-age and --stream-max-messages need --follow")
        }
        defer { followTask?.cancel() }
        let heartbeatTask = Locked<Task<Void, Never>?>(nil)
        defer { heartbeatTask.withLock { $0?.cancel() } }
        if let snapshotDirectory = try source.string(snapshotDir, env: "STEER_SNAPSHOT_DIR", key: "snapshot_dir") {
            do {
                serverConfiguration.snapshots = try ServeSnapshots(directory: snapshotDirectory, engine: engine, collections: collections)
            } catch {
                logger.error("cannot use the snapshot directory", metadata: ["steer.error": "\(error)"])
                throw ExitCode(2)
            }
        }
        let server = SteerServer(configuration: serverConfiguration, engine: engine, logger: logger, metricsRegistry: registry,
                                 collections: collections) { [heartbeat] host, port in
            FileHandle.standardOutput.write(Data("listening on \(host):\(port)\n".utf8))
            if let heartbeat {
                let address = heartbeat.advertised ?? ClusterDirectory.Address(host: host, port: port)
                heartbeatTask.withLock { $0 = Task { await heartbeat.beat.run(address: address) } }
            }
        }
        let hangup = Self.swapOnHangup(engine: engine, accessKeys: serverConfiguration.accessKeys, logger: logger)
        defer { hangup.cancel() }
        let saveSeconds = try source.int(indexSaveSeconds, env: "STEER_INDEX_SAVE_SECONDS", key: "index_save_seconds", range: 0...(7 * 86_400)) ?? 60
        let checkpointer = saveSeconds == 0 ? nil : IndexCheckpointer(
            interval: .seconds(saveSeconds), engines: { [engine] in [engine] + collections.namedEngines.map(\.engine) },
            onError: { [logger] directory, error in
                logger.warning("periodic index save failed; a restart after a crash replays more of the store", metadata: [
                    "steer.data": "\(directory)", "steer.error": "\(error)"])
            })
        checkpointer?.start()
        defer { checkpointer?.stop() }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [ServiceGroupConfiguration.ServiceConfiguration(service: server, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        do {
            try await group.run()
        } catch {
            await server.shutdown()
            logger.error("server failed", metadata: ["steer.error": "\(error)"])
            throw ExitCode(1)
        }
        logger.info("stopped")
    }

    /// Opens a named collection: the default engine's settings with the collection's own; a collection
    /// made from a checkpoint ingests it into its store (a no-op once complete, as `--checkpoint` does)
    /// and answers `recommend`/`encode` with its DPR model.
    static func collectionFactory(base: RetrievalEngine.Configuration, minilm: String, logger: Logger) -> CollectionSet.EngineFactory {
        let make: CollectionSet.EngineFactory = { entry, path throws(SteerError) in
            var configuration = CollectionSet.configuration(base: base, entry: entry, directory: path)
            if let checkpoint = entry.checkpoint {
                let serving = try CheckpointServing.prepare(checkpoint: checkpoint, minilm: minilm, dataDirectory: path, logger: logger)
                if entry.dimension > 0, entry.dimension != serving.dimension {
                    throw SteerError(.dimensionMismatch, "collection '\(entry.name)': dimension \(entry.dimension) conflicts with the checkpoint's \(serving.dimension)-d item table")
                }
                configuration.dimension = serving.dimension
                configuration.embeddingVersion = serving.version
                let model = serving.model
                configuration.encoderFactory = { _, _, _ in DPRQueryEncoder(model: model) }
            }
            return try RetrievalEngine(configuration: configuration)
        }
        return make
    }

    /// `--follow`: connects to NATS, makes sure the shard's stream exists and creates this replica's
    /// consumer from the stored sequence, before the server listens (a NATS that cannot be reached stops
    /// the start with exit code 2).
    ///
    /// - Throws: `ValidationError` for bad settings; `ExitCode(2)` when NATS refuses; `ExitCode(3)` when
    ///   the stream no longer holds the next message this replica needs (`StreamFollower.FellBehind`).
    func startFollowing(url: String, source: SettingSource, engine: RetrievalEngine, collections: CollectionSet, limits: ProtocolLimits,
                               logger: Logger) async throws -> (StreamFollower, NATSConnection) {
        guard let addresses = NATSAddresses(url) else {
            throw ValidationError("--follow must be nats://host:port (or host:port), several separated by commas, got '\(url)'")
        }
        guard let clusterName = try source.string(cluster, env: "STEER_CLUSTER", key: "cluster") else {
            throw ValidationError("--follow needs --cluster NAME")
        }
        let settings = StreamFollower.Settings(
            addresses: addresses, cluster: clusterName,
            shard: try source.int(shard, env: "STEER_SHARD", key: "shard", range: 0...65535) ?? 0,
            streamReplicas: try source.int(streamReplicas, env: "STEER_STREAM_REPLICAS", key: "stream_replicas", range: 1...5) ?? 1,
            retention: ShardStream.Retention(
                maxAgeSeconds: try source.int(streamMaxAge, env: "STEER_STREAM_MAX_AGE", key: "stream_max_age", range: 1...(100 * 365 * 86_400)).map(Int64.init),
                maxMessages: try source.int(streamMaxMessages, env: "STEER_STREAM_MAX_MESSAGES", key: "stream_max_messages", range: 1...Int(Int32.max)).map(Int64.init)))
        let follower: StreamFollower
        do {
            follower = try StreamFollower(settings: settings, engine: engine, collections: collections, limits: limits, logger: logger)
        } catch {
            throw ValidationError(error.message)
        }
        do {
            return (follower, try await follower.connect())
        } catch let behind as StreamFollower.FellBehind {
            logger.critical("\(behind)", metadata: ["steer.nats": "\(url)"])
            throw ExitCode(StreamFollower.FellBehind.exitCode)
        } catch {
            logger.error("cannot follow the shard's stream", metadata: ["steer.error": "\(error)", "steer.nats": "\(url)"])
            throw ExitCode(2)
        }
    }

    /// Records `--shard-count` in the cluster's metadata bucket (or checks it against the recorded one)
    /// and makes the heartbeat this replica puts once it listens (docs/scaling.md, "Cluster metadata").
    ///
    /// - Throws: `ValidationError` for a bad `--advertise` or `--shard-count`; `ExitCode(2)` when NATS
    ///   refuses or another shard count is recorded.
    func registerInCluster(follower: StreamFollower, source: SettingSource, logger: Logger) async throws
        -> (beat: ReplicaHeartbeat, advertised: ClusterDirectory.Address?) {
        let settings = follower.settings
        var advertised: ClusterDirectory.Address?
        if let text = try source.string(advertise, env: "STEER_ADVERTISE", key: "advertise") {
            do throws(SteerError) { advertised = try ClusterDirectory.Address(parsing: text) } catch { throw ValidationError("--advertise: \(error.message)") }
        }
        if let count = try source.int(shardCount, env: "STEER_SHARD_COUNT", key: "shard_count", range: 1...Sharding.maxShardCount) {
            guard settings.shard < count else { throw ValidationError("--shard \(settings.shard) is not below --shard-count \(count)") }
            do {
                let (nats, _) = try await settings.addresses.connect(startingAt: 0)
                defer { Task { await nats.close() } }
                let metadata = try await ClusterDirectory.metadata(JetStreamContext(connection: nats), cluster: settings.cluster,
                                                                   replicas: settings.streamReplicas)
                try await ClusterDirectory.registerShardCount(count, metadata)
            } catch {
                logger.error("cannot record the cluster's shard count", metadata: ["steer.error": "\(error)"])
                throw ExitCode(2)
            }
        }
        let beat = ReplicaHeartbeat(addresses: settings.addresses, cluster: settings.cluster, shard: settings.shard,
                                    replicaID: follower.durable, bucketReplicas: settings.streamReplicas, logger: logger,
                                    isFollowing: { follower.isFollowing })
        return (beat, advertised)
    }

    /// The keys of `--admin-token` (or `--admin-token-file`) and `--keys-file`; nil when none is given.
    /// An empty token, flag or `STEER_ADMIN_TOKEN` alike, stops the server: it never means "no auth".
    ///
    /// - Throws: `ValidationError` naming the setting at fault.
    static func accessKeys(token: String?, tokenFile: String?, keysFile: String?, publicReads: String?,
                           source: SettingSource, logger: Logger) throws -> AccessKeys? {
        if token == nil, let value = source.environment["STEER_ADMIN_TOKEN"], value.isEmpty {
            throw ValidationError("STEER_ADMIN_TOKEN is set but empty; an empty token does not mean 'no authentication': unset it or give a real one")
        }
        let tokenText = try source.string(token, env: "STEER_ADMIN_TOKEN", key: "admin_token")
        let tokenPath = try source.string(tokenFile, env: "STEER_ADMIN_TOKEN_FILE", key: "admin_token_file")
        let keysPath = try source.string(keysFile, env: "STEER_KEYS_FILE", key: "keys_file")
        let reads = try source.bool(publicReads, env: "STEER_PUBLIC_READS", key: "public_reads") ?? false
        guard tokenText == nil || tokenPath == nil else { throw ValidationError("give the admin token with --admin-token or --admin-token-file, not both") }
        do throws(SteerError) {
            var secret = tokenText
            if let tokenPath { secret = try AccessKeys.readSecret(file: tokenPath, what: "admin token file") }
            guard secret != nil || keysPath != nil else {
                if reads { logger.warning("--public-reads has no effect without keys: every op is open") }
                return nil
            }
            let keys = try AccessKeys(adminToken: secret, keysFile: keysPath, publicReads: reads)
            let counts = keys.counts
            logger.info("keys loaded", metadata: ["steer.read_keys": "\(counts.read)", "steer.admin_keys": "\(counts.admin)", "steer.public_reads": "\(reads)"])
            return keys
        } catch {
            throw ValidationError(error.message)
        }
    }

    /// SIGHUP: reload the keys file (when there is one; a file that fails validation keeps the keys in
    /// force) and swap to the newest complete generation under `DIR/generations/`, on a background queue
    /// (never on an event loop); the results are logged and a failure keeps the old generation serving.
    static func swapOnHangup(engine: RetrievalEngine, accessKeys: AccessKeys?, logger: Logger) -> any DispatchSourceSignal {
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: DispatchQueue(label: "steer.sighup"))
        source.setEventHandler {
            if let accessKeys { reloadKeys(accessKeys, logger: logger) }
            do {
                if let result = try engine.swapToNewest() {
                    logger.info("swapped generation (SIGHUP)", metadata: [
                        "steer.generation": "\(result.generation)", "steer.previous": "\(result.previous)",
                        "steer.replayed": "\(result.replayed)", "steer.directory": "\(result.directory)",
                    ])
                } else {
                    logger.info("SIGHUP: the newest generation is already serving", metadata: ["steer.generation": "\(engine.generation.id)"])
                }
            } catch {
                logger.error("SIGHUP swap refused; the old generation keeps serving", metadata: [
                    "steer.error": "\(error)", "steer.generation": "\(engine.generation.id)",
                ])
            }
        }
        source.resume()
        return source
    }
}

/// SIGHUP's key reload, shared by `steer serve` and `steer route`: logs the outcome; on failure the keys
/// in force stay.
func reloadKeys(_ keys: AccessKeys, logger: Logger) {
    guard keys.keysFile != nil else { return }
    do {
        try keys.reload()
        let counts = keys.counts
        logger.info("keys reloaded (SIGHUP)", metadata: ["steer.read_keys": "\(counts.read)", "steer.admin_keys": "\(counts.admin)"])
    } catch {
        logger.error("keys reload refused; the previous keys stay in force", metadata: ["steer.error": "\(error.message)"])
    }
}
