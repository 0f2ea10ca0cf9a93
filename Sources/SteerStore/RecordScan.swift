import SteerCore

extension ItemStore {
    /// Visits every live item's record in internal-id order (for exports), one range scan of the `items`
    /// family; on a read-only store, as of the open.
    ///
    /// - Parameter body: gets each record; returns false to stop.
    /// - Throws: `.corrupt` for an unreadable record; what `body` throws; store errors.
    public func forEachRecord(_ body: (ItemRecord) throws(SteerError) -> Bool) throws(SteerError) {
        try withDatabase { (database) throws(SteerError) in
            do {
                try database.scan(.items, from: [], to: nil) { key, value in
                    guard let internalID = StoreKey.decodeInternalID(key), let record = StoredRecord(decoding: Array(value)) else {
                        throw SteerError(.corrupt, "an item record is unreadable")
                    }
                    return try body(ItemRecord(id: record.id, internalID: internalID, title: record.title, tags: record.tags,
                                               attributesJSON: record.attributesJSON))
                }
            } catch {
                throw Self.steerError(error)
            }
        }
    }
}
