#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A directory that paths named by clients (`swap`'s `generation` and `checkpoint`) must stay inside.
/// The one owner of Steer's path policy: the server's `swap` uses it, and the router can reuse it.
///
/// Invariant: `path` is the `realpath` of an existing directory (absolute, no `.`/`..`, no symbolic
/// links), and every path `resolve` returns is a `realpath` strictly inside it (`path + "/" + …`).
///
/// Rules for a reference (in this order; every refusal is `invalid_request` naming the field):
/// - non-empty, at most `maxReferenceBytes` UTF-8 bytes, no NUL byte;
/// - no `..` component anywhere (even one that would stay inside);
/// - a relative reference is taken relative to the root; an absolute one must lie lexically inside the
///   root as configured or as resolved (so a path outside is refused without touching the file system,
///   and the answer never says whether it exists);
/// - the reference, symbolic links resolved (`realpath`), must still lie strictly inside the root;
///   one that does not exist there is `not_found`.
public struct PathRoot: Sendable, Equatable, CustomStringConvertible {
    /// The longest reference accepted, in UTF-8 bytes (Linux's PATH_MAX).
    public static let maxReferenceBytes = 4096

    /// The root, resolved (`realpath`).
    public let path: String
    /// The root as configured, standardised lexically (no `.`, no duplicate `/`); absolute.
    public let configured: String

    /// Resolves `directory` (which must exist and be a directory).
    ///
    /// - Throws: `not_found` when it does not exist, `invalid_request` when it is not a directory.
    public init(_ directory: String) throws(SteerError) {
        guard !directory.isEmpty, !directory.utf8.contains(0) else { throw SteerError.invalid("root directory must be a non-empty path") }
        guard let real = Self.realPath(directory) else {
            throw SteerError.notFound("root directory '\(directory)' does not exist")
        }
        var info = stat()
        guard stat(real, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else {
            throw SteerError.invalid("root '\(directory)' is not a directory")
        }
        path = real
        configured = Self.lexical(directory.hasPrefix("/") ? directory : Self.currentDirectory() + "/" + directory)
    }

    public var description: String { path }

    /// The real path of `reference` inside the root.
    ///
    /// - Parameters:
    ///   - reference: a path relative to the root, or an absolute path inside it.
    ///   - field: the request field, named in errors.
    /// - Returns: an absolute, symlink-free path strictly inside `path`.
    /// - Throws: `invalid_request` for a reference the rules above refuse, `not_found` when it does not
    ///   exist inside the root.
    public func resolve(_ reference: String, field: String) throws(SteerError) -> String {
        guard !reference.isEmpty else { throw SteerError.invalid("\(field) must not be empty") }
        guard reference.utf8.count <= Self.maxReferenceBytes else {
            throw SteerError.invalid("\(field) is \(reference.utf8.count) bytes, limit is \(Self.maxReferenceBytes)")
        }
        guard !reference.utf8.contains(0) else { throw SteerError.invalid("\(field) contains a NUL byte") }
        guard !reference.split(separator: "/", omittingEmptySubsequences: true).contains("..") else {
            throw SteerError.invalid("\(field) must not contain a '..' component")
        }
        let candidate: String
        if reference.hasPrefix("/") {
            let lexical = Self.lexical(reference)
            guard Self.isStrictlyInside(lexical, configured) || Self.isStrictlyInside(lexical, path) else {
                throw SteerError.invalid("\(field) '\(reference)' lies outside the allowed directory \(path)")
            }
            candidate = lexical
        } else {
            candidate = Self.lexical(path + "/" + reference)
            guard Self.isStrictlyInside(candidate, path) else {
                throw SteerError.invalid("\(field) '\(reference)' names the allowed directory itself, not an entry inside it")
            }
        }
        guard let real = Self.realPath(candidate) else {
            throw SteerError.notFound("\(field) '\(reference)' does not exist under \(path)")
        }
        guard Self.isStrictlyInside(real, path) else {
            throw SteerError.invalid("\(field) '\(reference)' resolves (through a symbolic link) to a path outside the allowed directory \(path)")
        }
        return real
    }

    /// Whether `inner` is `outer + "/" + something` (both lexical, absolute, without trailing `/`).
    static func isStrictlyInside(_ inner: String, _ outer: String) -> Bool {
        if outer == "/" { return inner.count > 1 && inner.hasPrefix("/") }
        return inner.utf8.count > outer.utf8.count + 1 && inner.hasPrefix(outer + "/")
    }

    /// Removes empty and `.` components; keeps `..` (callers refuse it first). `/` for the root.
    static func lexical(_ absolute: String) -> String {
        let parts = absolute.split(separator: "/", omittingEmptySubsequences: true).filter { $0 != "." }
        return "/" + parts.joined(separator: "/")
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func currentDirectory() -> String {
        guard let cwd = getcwd(nil, 0) else { return "/" }
        defer { free(cwd) }
        return String(cString: cwd)
    }
}
