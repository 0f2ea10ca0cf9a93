import Foundation
import SteerCore

/// The BERT uncased WordPiece tokenizer of all-MiniLM-L6-v2 (the rules of `Tools/train/steer_train/minilm.py`
/// and Hugging Face's `BertTokenizer`): drop NUL, U+FFFD and control/format characters, whitespace to
/// spaces, spaces around CJK ideographs, split on whitespace, lowercase, strip accents (NFD, then drop
/// non-spacing marks), split off every punctuation character, then greedy longest-match WordPiece with
/// `##` continuations (a word over 100 characters or with no match becomes `[UNK]`), wrapped in
/// `[CLS]` … `[SEP]` and cut to 256 ids.
public struct WordPieceTokenizer: Sendable {
    /// The most ids `encode` returns, `[CLS]` and `[SEP]` included.
    public static let maxTokens = 256
    /// Words longer than this (in Unicode scalars) become `[UNK]`.
    public static let maxWordScalars = 100

    /// Vocabulary keyed by UTF-8 bytes: Swift `String` equality is canonical equivalence, the vocabulary
    /// lookup must be exact.
    private let vocabulary: [[UInt8]: Int32]
    public let unknownID: Int32
    public let clsID: Int32
    public let sepID: Int32
    /// Number of entries (30,522 for MiniLM).
    public var count: Int { vocabulary.count }

    /// Builds the tokenizer from the vocabulary's lines (line `i` is id `i`).
    /// - Throws: `.corrupt` if `[UNK]`, `[CLS]` or `[SEP]` is missing.
    public init(vocabulary lines: [String], source: String = "vocabulary") throws(SteerError) {
        var table: [[UInt8]: Int32] = [:]
        table.reserveCapacity(lines.count)
        for (i, line) in lines.enumerated() where table[Array(line.utf8)] == nil {
            table[Array(line.utf8)] = Int32(i)
        }
        guard let unk = table[Array("[UNK]".utf8)], let cls = table[Array("[CLS]".utf8)],
              let sep = table[Array("[SEP]".utf8)] else {
            throw SteerError(.corrupt, "\(source): vocabulary lacks [UNK], [CLS] or [SEP]")
        }
        vocabulary = table
        unknownID = unk
        clsID = cls
        sepID = sep
    }

    /// Reads `vocab.txt` (one token a line).
    public init(vocabularyFile path: String) throws(SteerError) {
        guard FileManager.default.fileExists(atPath: path) else { throw SteerError(.notFound, "\(path): no such file") }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw SteerError(.corrupt, "\(path): not readable as UTF-8 text")
        }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
        }
        if lines.last == "" { lines.removeLast() }
        try self.init(vocabulary: lines, source: path)
    }

    /// The id of one vocabulary entry, if present.
    public func id(of token: String) -> Int32? { vocabulary[Array(token.utf8)] }

    /// Token ids of `text`: `[CLS]`, at most 254 WordPiece ids, `[SEP]`.
    public func encode(_ text: String) -> [Int32] {
        var ids: [Int32] = [clsID]
        for word in basicTokens(text) {
            if ids.count > Self.maxTokens - 2 { break }
            ids.append(contentsOf: wordPiece(word))
        }
        if ids.count > Self.maxTokens - 1 { ids.removeSubrange((Self.maxTokens - 1)...) }
        ids.append(sepID)
        return ids
    }

    /// The basic tokenizer's words (lowercased, accents stripped, punctuation split off).
    public func basicTokens(_ text: String) -> [String] {
        var cleaned = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            let value = scalar.value
            if value == 0 || value == 0xFFFD { continue }
            let category = scalar.properties.generalCategory
            if scalar == " " || scalar == "\t" || scalar == "\n" || scalar == "\r" || category == .spaceSeparator {
                cleaned.append(" ")
            } else if category == .control || category == .format {
                continue
            } else if Self.isCJK(value) {
                cleaned.append(" ")
                cleaned.append(scalar)
                cleaned.append(" ")
            } else {
                cleaned.append(scalar)
            }
        }
        var tokens: [String] = []
        // Python's str.split(): after the cleaning above the whitespace left is ' ', U+2028, U+2029.
        let words = String(cleaned).unicodeScalars.split { $0 == " " || $0.value == 0x2028 || $0.value == 0x2029 }
        for raw in words {
            let lowered = UnicodeText.pythonLower(String(String.UnicodeScalarView(raw))).decomposedStringWithCanonicalMapping
            var current = String.UnicodeScalarView()
            for scalar in lowered.unicodeScalars where scalar.properties.generalCategory != .nonspacingMark {
                if Self.isPunctuation(scalar) {
                    if !current.isEmpty { tokens.append(String(current)) }
                    tokens.append(String(scalar))
                    current = String.UnicodeScalarView()
                } else {
                    current.append(scalar)
                }
            }
            if !current.isEmpty { tokens.append(String(current)) }
        }
        return tokens
    }

    /// Greedy longest-match-first WordPiece of one basic token.
    public func wordPiece(_ word: String) -> [Int32] {
        let scalars = Array(word.unicodeScalars)
        if scalars.count > Self.maxWordScalars { return [unknownID] }
        // UTF-8 byte offset of every scalar boundary.
        let bytes = Array(word.utf8)
        var offsets = [0]
        offsets.reserveCapacity(scalars.count + 1)
        for scalar in scalars { offsets.append(offsets.last! + UTF8.width(scalar)) }
        var ids: [Int32] = []
        var start = 0
        while start < scalars.count {
            var end = scalars.count
            var found: Int32?
            while start < end {
                var key: [UInt8] = start == 0 ? [] : [0x23, 0x23]
                key.append(contentsOf: bytes[offsets[start]..<offsets[end]])
                if let id = vocabulary[key] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let id = found else { return [unknownID] }
            ids.append(id)
            start = end
        }
        return ids
    }

    /// BERT's punctuation: ASCII non-alphanumeric printable characters, or any Unicode `P*` category.
    static func isPunctuation(_ scalar: Unicode.Scalar) -> Bool {
        let v = scalar.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) {
            return true
        }
        switch scalar.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }

    /// The CJK Unified Ideographs blocks BERT splits into single characters.
    static func isCJK(_ v: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
            || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B820...0x2CEAF).contains(v)
            || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
    }
}
