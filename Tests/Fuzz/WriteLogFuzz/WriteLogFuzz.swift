// libFuzzer target for the write-log message decoder (SteerProtocol's `WriteLogMessage` and
// `WriteLogBinary`): every replica reads its shard's stream with it, and the stream's bytes are as hostile
// as a client's (docs/scaling.md, "Message format"). Built only with STEER_FUZZ=1 (Tests/Fuzz/run.sh
// --target writelog). SwiftPM links an executable's entry point as `<module>_main`; here that hands over
// to libFuzzer's driver (`LLVMFuzzerRunDriver`), except for `--write-seeds DIR`, which writes the seed
// corpus with the real encoders (so no binary seed lives in the repository).
//
// Beyond "no crash", every input checks:
// - `decodeParts` returns at least one result, and every failure carries a bad-input code;
// - a message of one part decodes with `decodeMessage` exactly when its one part decodes;
// - every decoded write respects the limits: 1…maxBatch items or ids, no id twice, non-empty finite vectors;
// - a decoded write encodes to a message that decodes to one write whose encoding is the same bytes
//   (the encoding is a fixpoint: replicas that re-publish or compare bodies agree).
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif
import SteerCore
import SteerProtocol

private let limits = ProtocolLimits(maxLineBytes: 1 << 20, maxK: 50, maxBatch: 8, maxPromptBytes: 256, maxHistory: 16,
                                    maxEfSearch: 300, maxNprobe: 40, maxQueryCost: 200, maxFilterTerms: 6, maxTimeoutMillis: 5000)
private let decoder = RequestDecoder(limits: limits)
private let badInputCodes: Set<SteerError.Code> = [.parseError, .invalidRequest, .unknownOp, .tooLarge, .dimensionMismatch]

@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

@_cdecl("steer_fuzz_writelog_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    if argc == 3, let flag = argv?[1], String(cString: flag) == "--write-seeds", let directory = argv?[2] {
        return writeSeeds(String(cString: directory))
    }
    var count = argc
    var arguments = argv
    return runDriver(&count, &arguments, fuzzWriteLog)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWriteLog(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let payload = Array(UnsafeBufferPointer(start: data, count: size))
    let parts = WriteLogMessage.decodeParts(payload, decoder: decoder)
    require(!parts.isEmpty, "decodeParts returned no result")
    for part in parts {
        switch part {
        case .failure(let error):
            require(badInputCodes.contains(error.code), "a part failed with code \(error.code): \(error)")
        case .success(let message):
            check(message)
        }
    }
    if parts.count == 1 {
        var single = true
        do { _ = try WriteLogMessage.decodeMessage(payload, decoder: decoder) } catch { single = false }
        if case .success = parts[0] {
            require(single, "decodeParts accepted the one part that decodeMessage refused")
        } else {
            require(!single, "decodeMessage accepted the one part that decodeParts refused")
        }
    }
    return 0
}

private func check(_ message: WriteLogMessage.Message) {
    guard case .write(let entry) = message else { return }
    switch entry.operation {
    case .upsert(let items):
        require((1...limits.maxBatch).contains(items.count), "upsert of \(items.count) items")
        require(Set(items.map(\.id)).count == items.count, "duplicate ids in an upsert")
        for item in items {
            require(!item.vector.isEmpty && item.vector.allSatisfy(\.isFinite), "upsert vector empty or not finite")
        }
    case .delete(let ids):
        require((1...limits.maxBatch).contains(ids.count), "delete of \(ids.count) ids")
        require(Set(ids).count == ids.count, "repeated ids were not collapsed")
    case .events(let events):
        require((1...limits.maxBatch).contains(events.count), "\(events.count) events")
    case .deleteUser:
        break
    }
    let body = WriteLogMessage.encode(entry.operation, collection: entry.collection)
    let again = WriteLogMessage.decodeParts(body, decoder: decoder)
    require(again.count == 1, "an encoded write decodes to \(again.count) parts")
    switch again[0] {
    case .failure(let error):
        require(false, "an encoded write does not decode: \(error)")
    case .success(.collectionChange):
        require(false, "an encoded write decodes to a collection change")
    case .success(.write(let back)):
        require(back.collection == entry.collection, "the collection changed: \(String(describing: entry.collection)) → \(String(describing: back.collection))")
        require(WriteLogMessage.encode(back.operation, collection: back.collection) == body, "encode → decode → encode changed the bytes")
    }
}

private func require(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fatalError("fuzz invariant broken: \(message())") }
}

/// Seeds made by the encoders under test: binary upserts and deletes (integer and string ids, tags, a
/// title, attributes, a named collection), a merged batch message, JSON lines of each write kind, a batch
/// of JSON lines, and collection changes.
private func writeSeeds(_ directory: String) -> CInt {
    let items = [
        ItemInput(id: .int(7), vector: [0.5, -1, 2, 0.25], title: "Heat", tags: ["crime", "drama"],
                  attributesJSON: #"{"year":1995,"lang":"en","specs":{"hd":true}}"#),
        ItemInput(id: .string("tt-0113277"), vector: [1, 0, 0, 0]),
    ]
    let upsert = WriteLogMessage.encode(.upsert(items), collection: nil)
    let named = WriteLogMessage.encode(.upsert([items[1]]), collection: "films")
    let delete = WriteLogMessage.encode(.delete([.int(7), .string("tt-0113277")]), collection: "films")
    var seeds: [[UInt8]] = [
        upsert, named, delete,
        WriteLogMessage.encodeBatch([upsert, delete, named]),
        WriteLogMessage.encodeLine(.upsert(items), collection: "films"),
        WriteLogMessage.encodeLine(.delete([.int(1), .int(2)])),
        WriteLogMessage.encodeBatch([WriteLogMessage.encodeLine(.upsert([items[0]])), WriteLogMessage.encodeLine(.delete([.int(3)]))]),
        Array(#"{"op":"event","events":[{"user":"u1","item":7,"kind":"view","ts":1700000000}]}"#.utf8),
        Array(#"{"op":"delete_user","user":"u1"}"#.utf8),
        Array(#"{"op":"create_collection","name":"films","dimension":4,"metric":"ip"}"#.utf8),
        Array(#"{"op":"alias","alias":"live","collection":"films"}"#.utf8),
    ]
    seeds.append(WriteLogBinary.merge([named, WriteLogMessage.encodeLine(.delete([.int(9)]))]))
    for (index, seed) in seeds.enumerated() {
        let path = "\(directory)/seed-\(index)"
        guard let file = fopen(path, "wb") else {
            print("cannot write \(path)")
            return 1
        }
        let written = seed.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        fclose(file)
        guard written == seed.count else { return 1 }
    }
    return 0
}
