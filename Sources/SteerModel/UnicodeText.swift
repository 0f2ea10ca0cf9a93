/// Text helpers that must agree with Python's `str` methods (the reference implementations in Tools/train).
enum UnicodeText {
    /// Python's `str.lower()`: the full lowercase mapping of every scalar, plus the Final_Sigma rule
    /// (Σ becomes ς when a cased letter precedes it and none follows, skipping case-ignorable scalars).
    /// Swift's `lowercased()` applies the full mapping but not Final_Sigma.
    static func pythonLower(_ text: String) -> String {
        let scalars = Array(text.unicodeScalars)
        guard scalars.contains("\u{03A3}") else { return text.lowercased() }
        var out = String.UnicodeScalarView()
        for (i, scalar) in scalars.enumerated() {
            guard scalar == "\u{03A3}" else {
                out.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
                continue
            }
            var before = i - 1
            while before >= 0, scalars[before].properties.isCaseIgnorable { before -= 1 }
            var after = i + 1
            while after < scalars.count, scalars[after].properties.isCaseIgnorable { after += 1 }
            let preceded = before >= 0 && scalars[before].properties.isCased
            let followed = after < scalars.count && scalars[after].properties.isCased
            out.append(preceded && !followed ? "\u{03C2}" : "\u{03C3}")
        }
        return String(out)
    }
}
