import Foundation
import SteerIndex

/// The text `steer-index inspect` prints.
public enum GenerationSummary {
    public static func text(_ m: GenerationManifest) -> String {
        var lines: [String] = []
        lines.append("generation      \(m.generationID)   (format \(m.format) v\(m.formatVersion), created \(m.createdAt))")
        lines.append("source          embedding version '\(m.embeddingVersion)' at store sequence \(m.storeSequence)")
        lines.append("checkpoint      \(m.checkpointHash ?? "(not recorded)")")
        lines.append("index           \(m.indexSpec), metric \(m.metric.rawValue), dimension \(m.dimension)")
        lines.append("vectors         \(m.count) in \(m.shards.count) shard\(m.shards.count == 1 ? "" : "s") (\(m.sharding.function))")
        let totalBytes = m.shards.reduce(Int64(0)) { $0 + $1.bytes }
        lines.append("size            \(formatBytes(totalBytes))")
        for shard in m.shards {
            lines.append(String(format: "  shard %4d    %@  %10d vectors  %10@  %@", shard.index, shard.file, shard.count,
                                formatBytes(shard.bytes), shard.checksum))
        }
        let b = m.build
        var built = "built by        \(b.command)"
        if let parent = b.parentGeneration { built += " from \(parent)" }
        if let source = b.source { built += " (vectors from \(source))" }
        lines.append(built)
        if let sample = b.trainSample { lines.append("training        \(sample) sampled vectors, seed \(b.seed.map(String.init) ?? "-"), shared quantizer \(b.sharedQuantizer == true ? "yes" : "no")") }
        if let parallel = b.parallelShards { lines.append("parallel shards \(parallel)") }
        if !b.timingsSeconds.isEmpty {
            let timings = b.timingsSeconds.sorted { $0.key < $1.key }.map { String(format: "%@ %.2fs", $0.key, $0.value) }
            lines.append("timings         " + timings.joined(separator: ", "))
        }
        if let peak = b.peakRSSBytes { lines.append("peak memory     \(formatBytes(peak))") }
        if let skipped = b.skippedDeleted, skipped > 0 { lines.append("skipped         \(skipped) items deleted during the build") }
        return lines.joined(separator: "\n")
    }

    public static func formatBytes(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
    }
}
