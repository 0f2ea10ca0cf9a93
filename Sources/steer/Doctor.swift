import ArgumentParser
import CBLAS
import CFaissKernels
import CRocksDB
import Foundation
import SteerIndex

/// `steer doctor`: what native code this process runs on, and how to fix a slow configuration.
struct Doctor: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the versions and kernels of faiss, RocksDB and OpenBLAS, and the thread settings."
    )

    @Flag(help: "Print one JSON object instead of text.") var json = false

    func run() throws {
        let report = DoctorReport.collect()
        if json {
            let data = try JSONSerialization.data(withJSONObject: report.dictionary, options: [.sortedKeys, .prettyPrinted])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(report.text)
        }
    }
}

/// Facts about the running process's native libraries. Collected, not assumed: versions come from the
/// loaded libraries where they say so.
struct DoctorReport {
    var cpuModel: String
    var cpuFlags: Set<String>
    var cores: Int
    var faissVersion: String
    var faissOpenMPThreads: Int
    var kernelsCompiled: Bool
    var kernelsISA: String
    var rocksdbLibrary: String
    var openblasCore: String
    var openblasConfig: String
    var openblasThreads: Int
    var environment: [String: String]
    var warnings: [String]

    static let threadVariables = ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OMP_WAIT_POLICY"]

    static func collect() -> DoctorReport {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        func field(_ name: String) -> String {
            for line in cpuinfo.split(separator: "\n") where line.hasPrefix(name) {
                return line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            }
            return "unknown"
        }
        let flags = Set(field("flags").split(separator: " ").map(String.init))
        let env = ProcessInfo.processInfo.environment
        var report = DoctorReport(
            cpuModel: field("model name"),
            cpuFlags: flags,
            cores: ProcessInfo.processInfo.activeProcessorCount,
            faissVersion: FaissInfo.version,
            faissOpenMPThreads: FaissInfo.openMPMaxThreads,
            kernelsCompiled: steer_kernels_compiled_for_faiss() != 0,
            kernelsISA: String(cString: steer_kernels_isa()),
            rocksdbLibrary: loadedLibraryPath(prefix: "librocksdb"),
            openblasCore: String(cString: openblas_get_corename()),
            openblasConfig: String(cString: openblas_get_config()).trimmingCharacters(in: .whitespaces),
            openblasThreads: Int(openblas_get_num_threads()),
            environment: Dictionary(uniqueKeysWithValues: threadVariables.compactMap { key in env[key].map { (key, $0) } }),
            warnings: []
        )
        report.warnings = report.diagnose()
        return report
    }

    /// The best OpenBLAS core for this CPU, by instruction set.
    var recommendedOpenBLASCore: String? {
        if cpuFlags.contains("avx512f") && cpuFlags.contains("avx512bw") { return "SkylakeX" }
        if cpuFlags.contains("avx2") && cpuFlags.contains("fma") { return "Haswell" }
        return nil
    }

    func diagnose() -> [String] {
        var warnings: [String] = []
        let generic = ["prescott", "core2", "nehalem", "atom", "generic", "katmai", "coppermine", "northwood", "banias"]
        if let best = recommendedOpenBLASCore, generic.contains(openblasCore.lowercased()) {
            warnings.append(
                "OpenBLAS fell back to the generic '\(openblasCore)' core on a CPU with \(best == "SkylakeX" ? "AVX-512" : "AVX2"): "
                    + "matrix products run up to 4x slower. Fix: export OPENBLAS_CORETYPE=\(best) before starting steer "
                    + "(it is read when the library loads, so setting it inside the process is too late)."
            )
        }
        if !kernelsCompiled {
            warnings.append("The AVX2 faiss kernels are not compiled in (faiss \(faissVersion) is not the version they were written for): faiss uses its own scalar distance code, 2-3x slower.")
        } else if kernelsISA == "scalar" {
            warnings.append("The faiss kernels run their scalar path: this CPU lacks AVX2+FMA, or STEER_FAISS_KERNELS=scalar is set.")
        }
        if environment["OPENBLAS_NUM_THREADS"] == nil && cores > 1 {
            warnings.append("OPENBLAS_NUM_THREADS is unset: OpenBLAS threads plus faiss's OpenMP threads oversubscribe the cores (Flat search 3-4x slower). Fix: export OPENBLAS_NUM_THREADS=1.")
        }
        if environment["OMP_NUM_THREADS"] == nil && cores > 1 {
            warnings.append("OMP_NUM_THREADS is unset: single-query searches may use every core and wait on each other under load. Fix: export OMP_NUM_THREADS=1 (Steer parallelises across requests).")
        }
        if environment["OMP_WAIT_POLICY"]?.lowercased() == "passive" {
            warnings.append("OMP_WAIT_POLICY=passive measured 2x slower for one-query searches; unset it.")
        }
        return warnings
    }

    var dictionary: [String: Any] {
        [
            "cpu": ["model": cpuModel, "cores": cores, "avx2": cpuFlags.contains("avx2"), "fma": cpuFlags.contains("fma"), "avx512f": cpuFlags.contains("avx512f")],
            "faiss": ["version": faissVersion, "openmp_max_threads": faissOpenMPThreads, "avx2_kernels_compiled": kernelsCompiled, "kernels_isa": kernelsISA],
            "rocksdb": ["library": rocksdbLibrary],
            "openblas": ["core": openblasCore, "config": openblasConfig, "threads": openblasThreads, "recommended_core": recommendedOpenBLASCore ?? "none"],
            "environment": environment,
            "warnings": warnings,
        ]
    }

    var text: String {
        var lines = [
            "cpu        \(cpuModel), \(cores) cores, avx2 \(yes(cpuFlags.contains("avx2"))), fma \(yes(cpuFlags.contains("fma"))), avx512f \(yes(cpuFlags.contains("avx512f")))",
            "faiss      \(faissVersion), OpenMP max threads \(faissOpenMPThreads)",
            "kernels    faiss kernels (AVX2, AVX-512) \(kernelsCompiled ? "compiled in" : "not compiled in"), running: \(kernelsISA)",
            "rocksdb    \(rocksdbLibrary)",
            "openblas   core \(openblasCore), \(openblasThreads) thread(s); \(openblasConfig)",
            "threads    " + Self.threadVariables.map { "\($0)=\(environment[$0] ?? "(unset)")" }.joined(separator: " "),
        ]
        if warnings.isEmpty {
            lines.append("ok         no problems found")
        } else {
            lines += warnings.map { "warning    \($0)" }
        }
        return lines.joined(separator: "\n")
    }

    private func yes(_ flag: Bool) -> String { flag ? "yes" : "no" }
}

/// The resolved file of the loaded shared library whose name starts with `prefix` (read from
/// /proc/self/maps; its versioned name carries the library's version, e.g. librocksdb.so.7.8.3).
func loadedLibraryPath(prefix: String) -> String {
    // /proc files report size 0, so read them through a handle rather than contentsOfFile.
    guard let handle = FileHandle(forReadingAtPath: "/proc/self/maps"),
          let data = try? handle.readToEnd(), let maps = String(data: data, encoding: .utf8) else { return "unknown" }
    for line in maps.split(separator: "\n") {
        guard let slash = line.firstIndex(of: "/") else { continue }
        let path = String(line[slash...])
        guard (path as NSString).lastPathComponent.hasPrefix(prefix) else { continue }
        return (try? FileManager.default.destinationOfSymbolicLink(atPath: path)).map {
            $0.hasPrefix("/") ? $0 : ((path as NSString).deletingLastPathComponent as NSString).appendingPathComponent($0)
        } ?? path
    }
    return "not loaded"
}
