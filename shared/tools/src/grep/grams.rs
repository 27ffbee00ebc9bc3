//! Trigram filters: which files cannot match a pattern, told without reading their content.
//!
//! Each cached file's content gets a bit set of the byte trigrams it contains (hashed, one bit
//! each: a Bloom filter with one hash), built when cached content is searched a second time
//! (`cache::Content::filter`). A window of
//! three bytes holding a digit or a non-ASCII byte also sets the bit of its *folded* trigram
//! (digits read as `0`, non-ASCII bytes as `0x80`: `query`), so that patterns made of classes
//! like `\d` can be asked about too. A pattern's trigram query (`query`: an AND/OR formula
//! over trigrams that every match satisfies, computed from its syntax tree) is evaluated
//! against the filter; a file for which it is false cannot match and is not searched. The
//! filter has false positives (a file searched in vain), never false negatives: a skipped file
//! is one the search would have found nothing in.
//!
//! Only content searched as the bytes on disk gets a filter (no NUL byte, no byte-order mark:
//! `Content::plain`); content that is transcoded or binary-checked is always searched. A
//! pattern whose matches need no trigram at all (`\w+`, `a|bc`, `x*`, `[a-z]+[0-9]+`) gets no
//! trigram query; the same pass records the exact set of byte values the content holds, which
//! rules out files lacking a byte every match needs (`bytesets`: a digit for `[a-z]+[0-9]+`).
//! A pattern that needs neither (`x*`, `(?s:.)`) gets no filter: every file is searched.

use std::sync::{Arc, Mutex, PoisonError};

use super::bytesets::{self, ByteNeeds, ByteSet};
use super::query::{self, FOLDED, Query};

/// Bits per byte of content in a file's filter, rounded to a power of two and bounded by
/// [`MIN_BITS`] and [`MAX_BITS`]: half a bit per byte keeps the filter about a sixteenth of
/// the content. Source code has far fewer distinct trigrams than bytes (a 10 KiB file a few
/// thousand), so such a filter is around a third full and a literal of six bytes (four
/// trigrams) passes a file that lacks it about 1 % of the time.
const MIN_BITS: usize = 512;
const MAX_BITS: usize = 64 * 1024;

/// The trigrams a file's content holds.
pub(crate) struct Grams {
    bits: Box<[u64]>,
    /// `64 - log2(bits)`: the hash's top bits pick the bit.
    shift: u32,
    /// Every byte value the content holds, exactly (`bytesets`).
    pub bytes: ByteSet,
}

/// The bit a trigram key sets.
fn slot(key: u32, shift: u32) -> usize {
    // Fibonacci hashing of the 25-bit key; the top bits are the well-mixed ones.
    ((u64::from(key)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> shift) as usize
}

/// The folded alphabet as a table (lookups while building).
static FOLD: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = query::fold(i as u8);
        i += 1;
    }
    t
};

/// The bytes whose windows also get a folded trigram, as a table.
static FOLDS: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = query::folds(i as u8);
        i += 1;
    }
    t
};

impl Grams {
    pub(crate) fn of(content: &[u8]) -> Grams {
        let nbits = (content.len() / 2)
            .next_power_of_two()
            .clamp(MIN_BITS, MAX_BITS);
        let mut bits = vec![0u64; nbits / 64].into_boxed_slice();
        let shift = 64 - nbits.trailing_zeros();
        // One mark per byte value seen: a plain store per byte, no dependency between bytes.
        let mut seen = [0u8; 256];
        let (Some(&a), Some(&b)) = (content.first(), content.get(1)) else {
            content.iter().for_each(|&c| seen[usize::from(c)] = 1);
            let bytes = ByteSet::from_marks(&seen);
            return Grams { bits, shift, bytes };
        };
        seen[usize::from(a)] = 1;
        seen[usize::from(b)] = 1;
        let mut set = |key: u32| {
            let s = slot(key, shift);
            bits[s / 64] |= 1 << (s % 64);
        };
        let mut trigram = u32::from(a) << 8 | u32::from(b);
        // One bit per byte of the window: a digit or a non-ASCII byte. The folded trigram is
        // made only for such windows, from the plain one (measured cheaper than folding every
        // byte as it comes).
        let mut folds = u32::from(FOLDS[usize::from(a)]) << 1 | u32::from(FOLDS[usize::from(b)]);
        for &c in &content[2..] {
            seen[usize::from(c)] = 1;
            trigram = ((trigram << 8) | u32::from(c)) & 0x00FF_FFFF;
            folds = ((folds << 1) | u32::from(FOLDS[usize::from(c)])) & 0b111;
            set(trigram);
            if folds != 0 {
                let byte = |shift: u32| u32::from(FOLD[((trigram >> shift) & 0xFF) as usize]);
                set((byte(16) << 16 | byte(8) << 8 | byte(0)) | FOLDED);
            }
        }
        Grams {
            bits,
            shift,
            bytes: ByteSet::from_marks(&seen),
        }
    }

    /// The filter's size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.bits.len() * 8
    }

    /// Whether the content may hold the trigram `key`.
    fn has(&self, key: u32) -> bool {
        let s = slot(key, self.shift);
        self.bits[s / 64] & (1 << (s % 64)) != 0
    }
}

/// Patterns whose analyses are kept ([`Needs::recall`]), and the longest pattern kept: a
/// query has at most [`query::MAX_LEAVES`] trigram tests and at most eight byte sets, so the
/// whole memo stays under 1 MiB.
const MEMO_PATTERNS: usize = 32;
const MEMO_PATTERN_BYTES: usize = 1024;

/// The analyses of the patterns searched most recently, most recent first.
type Memo = Vec<(Box<str>, Option<Arc<Needs>>)>;

/// What every match of a pattern holds: a trigram query and byte sets (`bytesets`), not both
/// trivially true.
pub(crate) struct Needs {
    query: Query,
    bytes: ByteNeeds,
}

impl Needs {
    /// The query of `pattern`, parsed as the matcher reads it (`matchers::parser`: Unicode
    /// on, invalid UTF-8 allowed, the same nesting limit); `None` when a match needs no
    /// trigram or the pattern is not understood here (the search then reads every file, and
    /// the matcher, built separately, still decides what matches). `grep-regex` also strips
    /// the line terminator from the pattern's classes, which only removes matches: the query
    /// of the unstripped pattern holds for every match of the stripped one. The matcher built
    /// without Unicode for ASCII content matches there exactly what the Unicode one does
    /// (`matchers`), so this query holds for its matches too.
    pub(crate) fn of(pattern: &str) -> Option<Needs> {
        let hir = super::matchers::parser().parse(pattern).ok()?;
        let query = query::of(&hir);
        let bytes = bytesets::needs(&hir);
        (query != Query::All || !bytes.is_empty()).then_some(Needs { query, bytes })
    }

    /// [`Needs::of`], kept for the most recent patterns. An agent repeats searches (the same
    /// pattern in another directory, again after an edit), and the analysis of a pattern
    /// with wide classes is a good part of a cached search: `\w+_\d{4}` (the folded sets of
    /// `\w`, then their products) took 10 % of such a search's CPU over a 2,000-file tree in a
    /// `perf` profile. It is a pure function of the pattern, so a kept one is always right.
    pub(crate) fn recall(pattern: &str) -> Option<Arc<Needs>> {
        static MEMO: Mutex<Memo> = Mutex::new(Vec::new());
        if pattern.len() > MEMO_PATTERN_BYTES {
            return Needs::of(pattern).map(Arc::new);
        }
        let lock = || MEMO.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut memo = lock();
            if let Some(i) = memo.iter().position(|(p, _)| **p == *pattern) {
                let entry = memo.remove(i);
                let needs = entry.1.clone();
                memo.insert(0, entry);
                return needs;
            }
        }
        // Analysed outside the lock: other calls need not wait for it.
        let needs = Needs::of(pattern).map(Arc::new);
        let mut memo = lock();
        if !memo.iter().any(|(p, _)| **p == *pattern) {
            memo.truncate(MEMO_PATTERNS - 1);
            memo.insert(0, (pattern.into(), needs.clone()));
        }
        needs
    }

    /// Whether content with these trigrams and bytes may hold a match. The byte sets first:
    /// they are exact and held in the filter itself, the trigram bits are a lookup away.
    pub(crate) fn may_match(&self, grams: &Grams) -> bool {
        self.bytes.may_match(&grams.bytes) && self.query.eval(&|k| grams.has(k))
    }

    /// Whether a match needs some trigram (for tests: a pattern may have byte sets only).
    #[cfg(test)]
    pub(crate) fn has_query(&self) -> bool {
        self.query != Query::All
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_literal_present_is_never_filtered_out() {
        let text = "fn main() {\n    let needle_42 = 1; // caf\u{e9} \u{663}\u{664}\n}\n";
        let grams = Grams::of(text.as_bytes());
        for lit in [
            "needle_42",
            "fn ",
            "main() {",
            "= 1;",
            "caf\u{e9}",
            "\u{663}\u{664}",
        ] {
            let needs = Needs::of(&regex_syntax::escape(lit)).unwrap();
            assert!(needs.may_match(&grams), "{lit:?}");
        }
        // The first window, and the last, get their folded trigrams too.
        for (text, p) in [
            ("42x", r"\d\dx"),
            ("x42", r"x\d\d"),
            ("\u{e9}4", r"\u{e9}\d"),
        ] {
            let needs = Needs::of(p).unwrap();
            assert!(
                needs.may_match(&Grams::of(text.as_bytes())),
                "{p} in {text}"
            );
            assert!(!needs.may_match(&Grams::of(b"xyz")), "{p}");
        }
        for p in [
            r"needle_\d+",
            r"\w+_\d{2}",
            r"caf\w",
            r"\d\d\n",
            r"let \w+ = \d",
        ] {
            assert!(Needs::of(p).unwrap().may_match(&grams), "{p}");
        }
    }

    /// The filter does rule files out: content without the literal (one trigram, one bit set)
    /// cannot pass for every alternative.
    #[test]
    fn content_without_the_literals_is_ruled_out() {
        let grams = Grams::of(&[b'a'; 4096]);
        assert!(!Needs::of("needle").unwrap().may_match(&grams));
        assert!(!Needs::of("(?i)needle|haystack").unwrap().may_match(&grams));
        assert!(Needs::of("needle|aaaa").unwrap().may_match(&grams));
        // Classes ask for folded trigrams: no digit follows an underscore here.
        let grams = Grams::of("a_b c_d\nthe_end 12 ab_".repeat(50).as_bytes());
        assert!(!Needs::of(r"\w+_\d{4}").unwrap().may_match(&grams));
        assert!(!Needs::of(r"_[0-9]{2}").unwrap().may_match(&grams));
        assert!(Needs::of(r" \d\d ").unwrap().may_match(&grams));
    }

    #[test]
    fn patterns_whose_matches_need_no_trigram_have_no_query() {
        // Some still need bytes (`bytesets`): `[a-z]+[0-9]+` a digit, `\w+\(` a parenthesis.
        for (p, bytes) in [
            (r"\w+", true),
            ("a|bc", true),
            ("x*", false),
            ("", false),
            ("(?i)ab", true),
            ("[a-z]{3}", true),
            ("a.b.c", true),
            ("[a-z]+[0-9]+", true),
            (r"\w+\(", true),
            ("(?:ab)?", false),
        ] {
            let needs = Needs::of(p);
            assert!(needs.as_ref().is_none_or(|n| !n.has_query()), "{p}");
            assert_eq!(needs.is_some(), bytes, "{p}");
        }
        for p in [
            "needle",
            "foo|barbaz",
            r"err(or)?\d",
            "(?i)needle",
            r"\bfn main",
            r"\w+_\d{4}",
            r"fn item_\d+_1_7\(",
        ] {
            assert!(Needs::of(p).unwrap().has_query(), "{p}");
        }
    }

    /// A recalled analysis is the pattern's own, however many other patterns came between.
    #[test]
    fn recalled_analyses_are_the_patterns_own() {
        let patterns: Vec<String> = (0..MEMO_PATTERNS * 2 + 3)
            .map(|i| format!("needle{i}_[a-z]+"))
            .chain(["x*".to_string(), "q".repeat(MEMO_PATTERN_BYTES + 1)])
            .collect();
        let grams = Grams::of(b"the needle7_abc and needle30_x here");
        for round in 0..3 {
            for (i, p) in patterns.iter().enumerate() {
                let fresh = Needs::of(p);
                let recalled = Needs::recall(p);
                assert_eq!(recalled.is_some(), fresh.is_some(), "{p}");
                if let (Some(fresh), Some(recalled)) = (fresh, recalled) {
                    assert_eq!(recalled.query, fresh.query, "{p} in round {round}");
                    assert_eq!(recalled.bytes, fresh.bytes, "{p}");
                    assert_eq!(recalled.may_match(&grams), i == 7 || i == 30, "{p}");
                }
            }
        }
    }

    /// The byte sets rule out what the trigrams cannot: a file without a digit for a
    /// letter followed by a digit; the exact byte set of the content is kept.
    #[test]
    fn content_without_a_needed_byte_is_ruled_out() {
        let text = b"fn let match struct impl\nreturn value\n";
        let grams = Grams::of(text);
        for b in 0..=255u8 {
            assert_eq!(grams.bytes.contains(b), text.contains(&b), "{b}");
        }
        assert!(!Needs::of("[a-z]+[0-9]+").unwrap().may_match(&grams));
        assert!(
            Needs::of("[a-z]+[0-9]+")
                .unwrap()
                .may_match(&Grams::of(b"x1"))
        );
        assert!(Needs::of("[a-z]+").unwrap().may_match(&grams));
        for short in [&b""[..], b"a", b"a1"] {
            let grams = Grams::of(short);
            for b in 0..=255u8 {
                assert_eq!(
                    grams.bytes.contains(b),
                    short.contains(&b),
                    "{b} in {short:?}"
                );
            }
        }
    }
}

#[cfg(test)]
#[path = "grams_props.rs"]
pub(super) mod props;
