import Logging
import SteerCore
import SteerWriteLog
import Testing
@testable import SteerRouter

/// `ClusterDirectory` values (hostile input read from the cluster's buckets) and `Router.setReplicas`
/// (membership that changes while the router runs), without NATS or sockets.
@Suite struct ClusterDirectoryTests {
    @Test func valuesRoundTrip_andHostileOnesAreRefused() throws {
        let address = try ClusterDirectory.Address(parsing: "10.0.0.7:7878")
        let beat = try ClusterDirectory.decodeHeartbeat(ClusterDirectory.encodeHeartbeat(address: address, shard: 3))
        #expect(beat.address == address && beat.shard == 3)
        #expect(try ClusterDirectory.decodeShardCount(ClusterDirectory.encodeShardCount(12)) == 12)
        let v6 = try ClusterDirectory.Address(parsing: "[::1]:9")
        #expect(v6.host == "::1" && v6.description == "[::1]:9")
        for bad in ["", "host", "host:0", "host:70000", ":80", "a b:1", "h/x:1", "\(String(repeating: "h", count: 254)):1"] {
            #expect(throws: SteerError.self, "'\(bad.prefix(20))'") { try ClusterDirectory.Address(parsing: bad) }
        }
        let heartbeats = [#"{"address":"x:1"}"#, #"{"address":"x:1","shard":-1}"#, #"{"address":"x","shard":0}"#, #"[1]"#, "garbage",
                          #"{"address":"x:1","shard":"0"}"#, #"{"address":"x:1","shard":0,"pad":"\#(String(repeating: "p", count: 1100))"}"#]
        for value in heartbeats {
            #expect(throws: SteerError.self, "\(value.prefix(40))") { try ClusterDirectory.decodeHeartbeat(Array(value.utf8)) }
        }
        for value in [#"{"shards":0}"#, #"{"shards":-2}"#, #"{"shards":"2"}"#, #"{}"#, #"{"shards":100000000}"#] {
            #expect(throws: SteerError.self, "\(value)") { try ClusterDirectory.decodeShardCount(Array(value.utf8)) }
        }
        #expect(ClusterDirectory.replicaKey(shard: 2, replicaID: "replica-ab12.x/y>*") == "shard.2.replica-ab12xy")
        #expect(ClusterDirectory.replicasBucket(cluster: "prod") == "steer_prod_replicas")
    }

    @Test func setReplicasKeepsListedReplicas_addsNewOnes_andDropsTheOthers() async throws {
        let a = ShardEndpoint(host: "127.0.0.1", port: 1)
        let b = ShardEndpoint(host: "127.0.0.1", port: 2)
        let c = ShardEndpoint(host: "127.0.0.1", port: 3)
        let router = try Router(configuration: RouterConfiguration(shards: [[a], [b]]), logger: Logger(label: "test"))
        let kept = router.replicas[0][0]
        #expect(try await router.setReplicas([[a, c], [b]]))
        #expect(router.replicas.map { $0.map(\.endpoint) } == [[a, c], [b]])
        #expect(router.replicas[0][0] === kept, "a replica still listed keeps its state")
        #expect(try await router.setReplicas([[c], []]))
        #expect(router.replicas.map { $0.map(\.endpoint) } == [[c], []])
        #expect(try await !router.setReplicas([[c], []]), "nothing changed")
        // An endpoint under two shards stays under the first; the shard count never changes.
        _ = try await router.setReplicas([[a], [a, b]])
        #expect(router.replicas.map { $0.map(\.endpoint) } == [[a], [b]])
        await #expect(throws: SteerError.self) { try await router.setReplicas([[a]]) }
        await router.shutdown()
    }
}
