import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SteerCore
import SteerEngine
import SteerModel
import SteerProtocol
import SteerService
import SteerRouter
import SteerServer
import SteerWriteLog

/// `steer route`: a router in front of shard servers (docs/scaling.md).
struct Route: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Route the line protocol to shard servers: fan-out search, routed writes, failover (docs/scaling.md).")

    @Option(name: .customLong("shard"), help: "One shard's replicas, host:port[,host:port...]; repeat once per shard, in shard order.")
    var shards: [String] = []
    @Option(name: .customLong("shards-file"), help: "JSON file {\"shards\": [[\"host:port\", ...], ...]} instead of --shard.")
    var shardsFile: String?
    @Option(help: "Address to bind.")
    var host: String = "127.0.0.1"
    @Option(help: "Port; 0 picks a free one.")
    var port: Int = 7979
    @Option(name: .customLong("shard-timeout-ms"), help: "The health check's timeout, in ms: a replica that does not answer within it is marked down. (A request's deadline is its timeout_ms or --request-timeout-ms.)")
    var shardTimeoutMillis: Int = 1000
    @Option(name: .customLong("max-shard-response-bytes"), help: "Longest answer line accepted from a shard; a longer one fails its request with too_large.")
    var maxShardResponseBytes: Int = 64 << 20
    @Option(name: .customLong("health-interval-ms"), help: "Period of the replicas' health check.")
    var healthIntervalMillis: Int = 1000
    @Option(name: .customLong("connections-per-replica"), help: "Pipelined connections to each replica.")
    var connectionsPerReplica: Int = 2
    @Option(name: .customLong("swap-timeout"), help: "Seconds every replica may take to answer a swap.")
    var swapTimeout: Int = 300
    @Option(help: "DPR checkpoint directory: recommend/encode queries are encoded here, once (default: mean of the history's vectors).")
    var checkpoint: String?
    @Option(help: "all-MiniLM-L6-v2 files for --checkpoint (default models/all-MiniLM-L6-v2). Env: STEER_MINILM_DIR.")
    var minilm: String?
    @Option(name: .customLong("max-line-bytes"), help: "Longest request line.")
    var maxLineBytes: Int = 1 << 20
    @Option(name: .customLong("max-k"), help: "Largest k; keep it at most the shards' max-k.")
    var maxK: Int = 1000
    @Option(name: .customLong("max-batch"), help: "Most queries/items/ids per request.")
    var maxBatch: Int = 1024
    @Option(name: .customLong("max-connections"), help: "Most simultaneous client connections.")
    var maxConnections: Int = 1024
    @Option(name: .customLong("max-in-flight"), help: "Most unanswered requests per client connection.")
    var maxInFlight: Int = 64
    @Option(name: .customLong("idle-timeout"), help: "Seconds before an idle client connection is closed, 0 = never.")
    var idleTimeout: Int = 300
    @Option(name: .customLong("event-loop-threads"), help: "NIO event-loop threads for clients (default: cores).")
    var eventLoopThreads: Int?
    @Option(name: .customLong("tls-cert"), help: "PEM certificate chain: clients must connect with TLS (with --tls-key).")
    var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: "The certificate's unencrypted PEM private key.")
    var tlsKey: String?
    @Option(name: .customLong("shard-tls-ca"), help: "PEM certificates to trust: speak TLS to the shards (their --tls-cert must name the listed host or IP).")
    var shardTLSCA: String?
    @Option(name: .customLong("admin-token"), help: "Admin key clients must send for upsert/delete/swap (and reads unless --public-reads); visible in `ps`: prefer --admin-token-file.")
    var adminToken: String?
    @Option(name: .customLong("admin-token-file"), help: "File holding the admin key (trailing newline ignored).")
    var adminTokenFile: String?
    @Option(name: .customLong("keys-file"), help: "JSON keys file {\"keys\":[{\"name\",\"scope\":\"read\"|\"admin\",\"key\"}]}; SIGHUP reloads it (docs/protocol.md).")
    var keysFile: String?
    @Option(name: .customLong("public-reads"), help: "true: reads need no key even when keys are configured (default false).")
    var publicReads: String?
    @Option(name: .customLong("shard-key-file"), help: "File holding the key the router sends to the shards on every request (an admin key of the shards for writes and swaps); without it the caller's token is forwarded.")
    var shardKeyFile: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.")
    var logLevel: String = "info"
    @Option(name: .customLong("max-running-per-connection"), help: "Most requests of one client connection forwarded at once (1...1024); the rest wait in order.")
    var maxRunningPerConnection: Int = 4
    @Option(help: "The shards follow NATS JetStream streams (steer serve --follow): write to the streams on these NATS servers (nats://host:port, several nodes separated by commas) instead of to the replicas (docs/scaling.md).")
    var follow: String?
    @Option(help: "Cluster name of the streams steer.<cluster>.shard.<i> (with --follow).")
    var cluster: String?
    @OptionGroup var requestLimits: RequestLimitOptions

    func validate() throws {
        if !shards.isEmpty && shardsFile != nil { throw ValidationError("give the shards with --shard (once per shard) or --shards-file, not both") }
        if shards.isEmpty && shardsFile == nil && follow == nil {
            throw ValidationError("give the shards with --shard (once per shard) or --shards-file, or --follow and --cluster to read them from the cluster's metadata")
        }
        guard (0...65535).contains(port) else { throw ValidationError("port must be in 0...65535, got \(port)") }
        guard (1...3_600_000).contains(shardTimeoutMillis) else { throw ValidationError("shard-timeout-ms must be in 1...3600000, got \(shardTimeoutMillis)") }
        guard (1024...(1 << 30)).contains(maxShardResponseBytes) else {
            throw ValidationError("max-shard-response-bytes must be in 1024...\(1 << 30), got \(maxShardResponseBytes)")
        }
        guard adminToken == nil || adminTokenFile == nil else { throw ValidationError("give the admin token with --admin-token or --admin-token-file, not both") }
        guard shardKeyFile == nil || adminToken != nil || adminTokenFile != nil || keysFile != nil else {
            throw ValidationError("--shard-key-file needs keys of the router's own (--keys-file or --admin-token[-file]): otherwise anyone reaching the router would act with the shard key")
        }
        guard (1...1024).contains(maxRunningPerConnection) else { throw ValidationError("max-running-per-connection must be in 1...1024, got \(maxRunningPerConnection)") }
        guard (10...3_600_000).contains(healthIntervalMillis) else { throw ValidationError("health-interval-ms must be in 10...3600000, got \(healthIntervalMillis)") }
        guard (1...64).contains(connectionsPerReplica) else { throw ValidationError("connections-per-replica must be in 1...64, got \(connectionsPerReplica)") }
        guard (1...86_400).contains(swapTimeout) else { throw ValidationError("swap-timeout must be in 1...86400, got \(swapTimeout)") }
        guard (64...(1 << 30)).contains(maxLineBytes) else { throw ValidationError("max-line-bytes must be in 64...\(1 << 30), got \(maxLineBytes)") }
        guard (1...10_000).contains(maxK) else { throw ValidationError("max-k must be in 1...10000, got \(maxK)") }
        guard (1...100_000).contains(maxBatch) else { throw ValidationError("max-batch must be in 1...100000, got \(maxBatch)") }
        guard maxConnections >= 1, maxInFlight >= 1, idleTimeout >= 0, (eventLoopThreads ?? 1) >= 1 else {
            throw ValidationError("max-connections, max-in-flight and event-loop-threads must be at least 1, idle-timeout at least 0")
        }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("give --tls-cert and --tls-key together") }
        guard (follow == nil) == (cluster == nil) else { throw ValidationError("give --follow and --cluster together") }
        if let follow, NATSAddresses(follow) == nil {
            throw ValidationError("--follow must be nats://host:port (or host:port), several separated by commas, got '\(follow)'")
        }
        if let cluster {
            do throws(SteerError) { try ShardStream.validate(cluster: cluster) } catch { throw ValidationError(error.message) }
        }
        guard Logger.Level(rawValue: logLevel.lowercased()) != nil else {
            throw ValidationError("log-level must be trace, debug, info, notice, warning, error or critical, got '\(logLevel)'")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel.lowercased()) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "steer.router")
        var shardSets: [[ShardEndpoint]]
        var discovery: ClusterDiscovery?
        do throws(SteerError) {
            if let shardsFile {
                shardSets = try RouterConfiguration.shards(fromFile: shardsFile)
            } else if !shards.isEmpty {
                shardSets = try RouterConfiguration.parseShards(shards)
            } else {
                shardSets = []
            }
        } catch {
            throw ValidationError(error.message)
        }
        if shardSets.isEmpty, let follow, let cluster, let addresses = NATSAddresses(follow) {
            let found = ClusterDiscovery(addresses: addresses, cluster: cluster, logger: logger)
            do {
                shardSets = try await found.initialShards(timeout: .seconds(30))
            } catch {
                logger.error("cannot read the cluster's shard map and replicas", metadata: ["steer.error": "\(error)", "steer.nats": "\(follow)"])
                throw ExitCode(2)
            }
            discovery = found
        }
        var limits = ProtocolLimits(maxLineBytes: maxLineBytes, maxK: maxK, maxBatch: maxBatch)
        let limitSource = try SettingSource(configPath: nil, readsConfigFile: false)
        try requestLimits.apply(limitSource, to: &limits)
        var routerConfiguration = RouterConfiguration(
            shards: shardSets, shardTimeoutMillis: shardTimeoutMillis, healthIntervalMillis: healthIntervalMillis,
            connectionsPerReplica: connectionsPerReplica, swapTimeoutSeconds: swapTimeout, maxShardResponseBytes: maxShardResponseBytes,
            limits: limits)
        routerConfiguration.maxRequestTimeoutMillis = limits.maxTimeoutMillis
        var deadlines = ServerConfiguration()
        try requestLimits.apply(limitSource, to: &deadlines)
        routerConfiguration.defaultRequestTimeoutMillis = deadlines.requestTimeoutMillis
        routerConfiguration.shardTLSCertificateAuthority = shardTLSCA
        let publicReads: Bool
        switch self.publicReads?.lowercased() {
        case nil, "false", "0", "no", "off": publicReads = false
        case "true", "1", "yes", "on": publicReads = true
        default: throw ValidationError("public-reads must be true or false, got '\(self.publicReads ?? "")'")
        }
        do throws(SteerError) {
            var secret = adminToken
            if let adminTokenFile { secret = try AccessKeys.readSecret(file: adminTokenFile, what: "admin token file") }
            if secret != nil || keysFile != nil {
                let keys = try AccessKeys(adminToken: secret, keysFile: keysFile, publicReads: publicReads)
                let counts = keys.counts
                logger.info("keys loaded", metadata: ["steer.read_keys": "\(counts.read)", "steer.admin_keys": "\(counts.admin)", "steer.public_reads": "\(publicReads)"])
                routerConfiguration.accessKeys = keys
            } else if publicReads {
                logger.warning("--public-reads has no effect without keys: every op is open")
            }
            if let shardKeyFile { routerConfiguration.shardKey = try AccessKeys.readSecret(file: shardKeyFile, what: "shard key file") }
        } catch {
            throw ValidationError(error.message)
        }
        var tls: TLSFiles?
        if let tlsCert, let tlsKey {
            let files = TLSFiles(certificateChain: tlsCert, privateKey: tlsKey)
            do {
                try files.validate()
            } catch {
                logger.error("cannot use the TLS files", metadata: ["steer.error": "\(error)"])
                throw ExitCode(2)
            }
            tls = files
        }
        let minilmDirectory = minilm ?? ProcessInfo.processInfo.environment["STEER_MINILM_DIR"] ?? CheckpointServing.defaultMiniLM
        let loadEncoder: @Sendable (String) throws(SteerError) -> any QueryEncoder = { path throws(SteerError) in
            DPRQueryEncoder(model: try DPRModel.load(checkpoint: path, minilm: minilmDirectory))
        }
        var shardLog: NATSShardLog?
        if let follow, let cluster, let addresses = NATSAddresses(follow) {
            do {
                let log = try NATSShardLog(addresses: addresses, cluster: cluster, shardCount: shardSets.count)
                try await log.connect()
                shardLog = log
                logger.info("writes go to the shards' streams", metadata: ["steer.nats": "\(addresses)", "steer.cluster": "\(cluster)"])
            } catch {
                logger.error("cannot reach NATS for the shards' streams", metadata: ["steer.error": "\(error)", "steer.nats": "\(follow)"])
                throw ExitCode(2)
            }
        }
        let router: Router
        do {
            var encoder: (any QueryEncoder)?
            if let checkpoint { encoder = try loadEncoder(checkpoint) }
            router = try Router(configuration: routerConfiguration, encoder: encoder, loadEncoder: loadEncoder, shardLog: shardLog, logger: logger)
        } catch {
            logger.error("cannot start the router", metadata: ["steer.error": "\(error)"])
            throw ExitCode(2)
        }
        if let follow, let cluster, let addresses = NATSAddresses(follow) {
            router.setClusterSwap(NATSClusterSwapCoordinator(addresses: addresses, cluster: cluster))
        }
        await router.start()
        let membership = Task { [discovery] in
            guard let discovery else { return }
            await discovery.follow(router, interval: .milliseconds(max(1000, healthIntervalMillis)))
        }
        defer { membership.cancel() }
        let commits = Task {
            guard let follow, let cluster, let addresses = NATSAddresses(follow) else { return }
            await CommitWatch(addresses: addresses, cluster: cluster, logger: logger).run(router)
        }
        defer { commits.cancel() }
        logger.info("router ready", metadata: [
            "steer.shards": "\(shardSets.count)", "steer.replicas": "\(shardSets.map(\.count).reduce(0, +))",
            "steer.generation": "\(router.currentGeneration ?? "unknown")",
        ])
        var serverConfiguration = ServerConfiguration(host: host, port: port, limits: limits, maxConnections: maxConnections,
                                                      idleTimeoutSeconds: idleTimeout, maxInFlight: maxInFlight,
                                                      eventLoopThreads: eventLoopThreads ?? ProcessInfo.processInfo.activeProcessorCount,
                                                      workerThreads: 1)
        serverConfiguration.accessKeys = nil // the router checks keys itself (Router.execute)
        serverConfiguration.tls = tls
        try requestLimits.apply(limitSource, to: &serverConfiguration)
        serverConfiguration.maxRunningPerConnection = maxRunningPerConnection
        let server = SteerServer(configuration: serverConfiguration, service: router, logger: logger) { host, port in
            FileHandle.standardOutput.write(Data("listening on \(host):\(port)\n".utf8))
        }
        let group = ServiceGroup(configuration: ServiceGroupConfiguration(
            services: [ServiceGroupConfiguration.ServiceConfiguration(service: server, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        let hangup = Self.reloadOnHangup(routerConfiguration.accessKeys, logger: logger)
        defer { hangup?.cancel() }
        do {
            try await group.run()
        } catch {
            await server.shutdown()
            await router.shutdown()
            logger.error("router failed", metadata: ["steer.error": "\(error)"])
            throw ExitCode(1)
        }
        await router.shutdown()
        logger.info("stopped")
    }

    /// SIGHUP: reload the keys file (a file that fails validation keeps the keys in force); nil when
    /// there is no keys file (SIGHUP is then ignored).
    static func reloadOnHangup(_ keys: AccessKeys?, logger: Logger) -> (any DispatchSourceSignal)? {
        signal(SIGHUP, SIG_IGN)
        guard let keys, keys.keysFile != nil else { return nil }
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: DispatchQueue(label: "steer.sighup"))
        source.setEventHandler { reloadKeys(keys, logger: logger) }
        source.resume()
        return source
    }
}
