#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A pthread reader-writer lock: many readers at once, or one writer.
///
/// `ItemStore` holds it shared for every call and exclusively to close the database, so `close()`
/// never frees RocksDB handles under a reader; `VectorIndex` holds it shared for searches and
/// exclusively for every mutation (a faiss handle is not safe for concurrent mutation).
/// `@unchecked Sendable`: pthread locks are made for sharing between threads, and the lock lives at a
/// stable heap address. The methods are inlinable so hot paths in other modules are specialised.
public final class ReadWriteLock: @unchecked Sendable {
    @usableFromInline let lock: UnsafeMutablePointer<pthread_rwlock_t>

    /// - Parameter preferWriters: a waiting writer goes before readers that arrive after it (glibc's
    ///   default lets a steady stream of readers starve writers). Only for locks that are never taken
    ///   for reading by a thread that already holds them: a reader that re-enters while a writer waits
    ///   would deadlock.
    public init(preferWriters: Bool = false) {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        var attributes = pthread_rwlockattr_t()
        pthread_rwlockattr_init(&attributes)
        defer { pthread_rwlockattr_destroy(&attributes) }
        #if canImport(Glibc)
        if preferWriters {
            // PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP (glibc's pthread.h), not exported to Swift.
            pthread_rwlockattr_setkind_np(&attributes, 2)
        }
        #endif
        let status = pthread_rwlock_init(lock, &attributes)
        precondition(status == 0, "pthread_rwlock_init failed: \(status)")
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    @inlinable
    public func withReadLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    @inlinable
    public func withWriteLock<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
