import Foundation

/// Where the item store of a `--data` argument lives. `steer serve --data DIR` keeps its store in
/// `DIR/store`; `steer ingest` and `steer-index` take the same DIR, and also accept a bare store
/// directory (one that holds RocksDB's `CURRENT` file).
public enum DataDirectory {
    public static func storePath(_ data: String) -> String {
        FileManager.default.fileExists(atPath: (data as NSString).appendingPathComponent("CURRENT")) ? data : data + "/store"
    }
}
