// Helper for SteerStoreTests' crash test: writes large synced batches in a loop until it is killed,
// printing each batch number to stdout only after `upsert` has returned (the batch is acknowledged).
//
// Usage: steer-store-crashtest <store path> <first batch number> <items per batch> <dimension>
//
// Batch k upserts items "b<k>-<i>" tagged "batch-<k>" whose vectors are all k, and replaces the items
// "shared-<i>" with title "batch <k>", so a reader can tell whether any batch was applied in part.
import Foundation
import SteerCore
import SteerStore

let arguments = CommandLine.arguments
guard arguments.count == 5, let firstBatch = Int(arguments[2]), let perBatch = Int(arguments[3]),
      let dimension = Int(arguments[4]), perBatch > 0, dimension > 0
else {
    FileHandle.standardError.write(Data("usage: steer-store-crashtest <path> <first batch> <items per batch> <dimension>\n".utf8))
    exit(2)
}

do {
    let store = try ItemStore(options: .init(path: arguments[1], syncWrites: true))
    try store.createVersion("v1", dimension: dimension)
    var batch = firstBatch
    while true {
        var items: [ItemStore.ItemWrite] = []
        items.reserveCapacity(2 * perBatch)
        let vector = [Float](repeating: Float(batch), count: dimension)
        for index in 0..<perBatch {
            items.append(.init(id: .string("b\(batch)-\(index)"), title: "batch \(batch)", tags: ["batch-\(batch)"], vectors: ["v1": vector]))
            items.append(.init(id: .string("shared-\(index)"), title: "batch \(batch)", tags: ["shared"], vectors: ["v1": vector]))
        }
        _ = try store.upsert(items)
        FileHandle.standardOutput.write(Data("\(batch)\n".utf8))
        batch += 1
    }
} catch {
    FileHandle.standardError.write(Data("steer-store-crashtest: \(error)\n".utf8))
    exit(1)
}
