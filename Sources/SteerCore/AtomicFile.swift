#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Steer's one durable-replace helper: every file that must never be seen torn (`steer.json`,
/// `index/index.json`, `index/index.bin`, generation manifests, the version registry, the collection
/// catalog) is written through it, and every directory published whole (a generation) goes through
/// `publishDirectory`.
///
/// Steps: create `PATH.tmp-<pid>-<random>` beside the target (`O_EXCL`, so two writers never share a
/// temporary), write every byte, `fsync` it, `rename` it over `PATH`, then `fsync` the directory so the
/// rename itself survives a crash. Readers see the old file or the new one, never a mix. On any failure
/// the temporary is removed and the old file is left as it was.
public enum AtomicFile {
    /// Writes `bytes` to `path` durably and atomically.
    ///
    /// - Throws: `io_error` naming the file and the step the system refused.
    public static func write(_ bytes: [UInt8], to path: String) throws(SteerError) {
        var failure: SteerError?
        bytes.withUnsafeBytes { raw in
            do throws(SteerError) { try write(parts: [raw], to: path) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Writes the concatenation of `parts` to `path` durably and atomically (no copy into one buffer).
    ///
    /// - Throws: `io_error` naming the file and the step the system refused.
    public static func write(parts: [UnsafeRawBufferPointer], to path: String) throws(SteerError) {
        var random = SystemRandomNumberGenerator()
        let temporary = "\(path).tmp-\(getpid())-\(String(random.next() & 0xFFFF_FFFF, radix: 16))"
        func failure(_ step: String) -> SteerError {
            SteerError(.io, "cannot write '\(path)': \(step) failed: \(String(cString: strerror(errno)))")
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("creating \(temporary)") }
        var renamed = false
        defer { if !renamed { unlink(temporary) } }
        do {
            defer { close(fd) }
            for part in parts where !writeAll(fd, part) { throw failure("write") }
            guard fsync(fd) == 0 else { throw failure("fsync") }
        }
        guard rename(temporary, path) == 0 else { throw failure("rename") }
        renamed = true
        syncDirectory(containing: path)
    }

    /// Publishes a directory written under a temporary name (its files already synced): fsyncs it, renames
    /// it to `final` (which must not exist, or be an empty directory), then fsyncs the parent so the
    /// rename survives a crash. Readers see no directory or the whole one.
    ///
    /// - Throws: `io_error` naming both paths when the rename is refused.
    public static func publishDirectory(_ temporary: String, as final: String) throws(SteerError) {
        syncDirectory(temporary)
        guard rename(temporary, final) == 0 else {
            throw SteerError(.io, "cannot rename '\(temporary)' to '\(final)': \(String(cString: strerror(errno)))")
        }
        syncDirectory(containing: final)
    }

    /// Fsyncs the directory holding `path` (best effort: some file systems refuse directory fsync).
    public static func syncDirectory(containing path: String) {
        guard let slash = path.lastIndex(of: "/") else { return syncDirectory(".") }
        let directory = String(path[..<slash])
        syncDirectory(directory.isEmpty ? "/" : directory)
    }

    /// Fsyncs a directory so a rename or a new entry in it survives a crash (best effort).
    public static func syncDirectory(_ directory: String) {
        let fd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        close(fd)
    }

    /// Fsyncs a file.
    /// - Throws: `io_error` when it cannot be opened or synced.
    public static func syncFile(_ path: String) throws(SteerError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SteerError(.io, "cannot open '\(path)': \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw SteerError(.io, "cannot fsync '\(path)': \(String(cString: strerror(errno)))") }
    }

    /// Writes every byte; false (errno set) on failure.
    private static func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) -> Bool {
        guard let base = buffer.baseAddress else { return true }
        var done = 0
        while done < buffer.count {
            #if canImport(Glibc)
            let wrote = Glibc.write(fd, base + done, buffer.count - done)
            #else
            let wrote = Darwin.write(fd, base + done, buffer.count - done)
            #endif
            if wrote < 0 {
                if errno == EINTR { continue }
                return false
            }
            done += wrote
        }
        return true
    }
}
