import Foundation
import SteerCore

/// Where the item store of a `--data` argument lives. `steer serve --data DIR` keeps its store in
/// `DIR/store`; `steer ingest` and `steer-index` take the same DIR, and also accept a bare store
/// directory (one that holds RocksDB's `CURRENT` file).
public enum DataDirectory {
    public static func storePath(_ data: String) -> String {
        FileManager.default.fileExists(atPath: (data as NSString).appendingPathComponent("CURRENT")) ? data : data + "/store"
    }

    /// The directory of collection `name` in data directory `data` (`--data DIR --collection NAME` of the
    /// offline tools): `data` itself for nil or `default`, else `DIR/collections/NAME`, which the catalog
    /// must list (`CollectionCatalog`).
    ///
    /// - Throws: `.invalidRequest` for a bad name; `.notFound` when the catalog does not list it;
    ///   what reading the catalog throws.
    public static func collection(_ name: String?, in data: String) throws(SteerError) -> String {
        guard let name, name != CollectionName.defaultName else { return data }
        try CollectionName.validate(name, field: "--collection")
        let catalog = try CollectionCatalog.read(dataDirectory: data)
        guard catalog.collections[name] != nil else {
            let known = catalog.collections.keys.sorted().joined(separator: ", ")
            throw SteerError.notFound("data directory '\(data)' has no collection '\(name)' (collections: \(known.isEmpty ? "none" : known))")
        }
        return CollectionCatalog.directory(of: name, dataDirectory: data)
    }
}
