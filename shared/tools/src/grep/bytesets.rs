//! Which bytes every match of a pattern holds, and which bytes a file holds: the filter for
//! patterns whose matches need no trigram.
//!
//! A match of `[a-z]+[0-9]+` can be two bytes long, so the trigram query (`query`) asks
//! nothing of a file and every cached file was searched. Every such match still holds a
//! digit and a lowercase letter: a file with no digit at all cannot match. So each cached
//! file also records the exact set of byte values it contains (256 bits, built by the trigram
//! pass: `grams`), and each pattern gets a list of byte sets such that every match holds at
//! least one byte of each set ([`needs`], from the same syntax tree as the trigram query).
//! Unlike the trigram filter this one is exact: it has no false positives either.
//!
//! It rules out a file only when the file lacks every byte of some set: a literal byte, a
//! narrow class (digits, punctuation, uppercase letters), or a byte above 0x7F for a pattern
//! that names non-ASCII characters. In a source tree where digits are everywhere it does
//! nothing for `[a-z]+[0-9]+`, and such a pattern matches almost every file; there the search
//! stops once the output is full (`search_parallel`).

use regex_syntax::hir::{Class, Hir, HirKind};

/// A set of byte values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ByteSet([u64; 4]);

impl ByteSet {
    pub(crate) fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn insert_range(&mut self, lo: u8, hi: u8) {
        for b in lo..=hi {
            self.insert(b);
        }
    }

    pub(crate) fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    fn union(self, other: ByteSet) -> ByteSet {
        ByteSet(std::array::from_fn(|i| self.0[i] | other.0[i]))
    }

    fn intersects(&self, other: &ByteSet) -> bool {
        self.0.iter().zip(other.0).any(|(a, b)| a & b != 0)
    }

    fn is_subset(&self, of: &ByteSet) -> bool {
        self.0.iter().zip(of.0).all(|(a, b)| a & !b == 0)
    }

    fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    /// The set of the bytes marked in `seen` (one entry per byte value, non-zero: present).
    pub(crate) fn from_marks(seen: &[u8; 256]) -> ByteSet {
        let mut set = ByteSet::default();
        for (b, &mark) in (0..=255u8).zip(seen) {
            if mark != 0 {
                set.insert(b);
            }
        }
        set
    }
}

/// Sets kept per node and in the final list: more would cost more per file than they save.
const MAX_SETS: usize = 8;

/// What every match holds: each byte of `all`, and at least one byte of each of `any`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ByteNeeds {
    all: ByteSet,
    any: Vec<ByteSet>,
}

impl ByteNeeds {
    /// Nothing is asked of a file.
    pub(crate) fn is_empty(&self) -> bool {
        self.all == ByteSet::default() && self.any.is_empty()
    }

    /// Whether a file holding exactly the bytes `file` may hold a match.
    pub(crate) fn may_match(&self, file: &ByteSet) -> bool {
        self.all.is_subset(file) && self.any.iter().all(|s| s.intersects(file))
    }
}

/// The byte sets every match of `hir` holds one byte of (an AND of ORs), as [`ByteNeeds`].
pub(crate) fn needs(hir: &Hir) -> ByteNeeds {
    let mut out = ByteNeeds::default();
    for set in sets(hir) {
        match set.len() {
            1 => out.all = out.all.union(set),
            // A set of every byte asks only for a non-empty file: nothing worth a test.
            256 => {}
            _ => out.any.push(set),
        }
    }
    // Smallest first (they rule out the most), duplicates and the surplus dropped: dropping
    // a set only asks less of a file.
    out.any.sort_by_key(ByteSet::len);
    out.any.dedup();
    out.any.truncate(MAX_SETS);
    out
}

/// Sets such that every match of `hir` holds a byte of each; none when nothing is known.
/// Recursion follows the syntax tree, whose depth the parser bounds (its nesting limit).
fn sets(hir: &Hir) -> Vec<ByteSet> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Vec::new(),
        HirKind::Literal(lit) => {
            // Its bytes, each as a set of one.
            let mut seen = ByteSet::default();
            for &b in lit.0.iter() {
                seen.insert(b);
            }
            (0..=255u8)
                .filter(|&b| seen.contains(b))
                .map(|b| {
                    let mut one = ByteSet::default();
                    one.insert(b);
                    one
                })
                .collect()
        }
        HirKind::Class(class) => vec![class_bytes(class)],
        HirKind::Capture(cap) => sets(&cap.sub),
        HirKind::Concat(subs) => {
            let mut all: Vec<ByteSet> = subs.iter().flat_map(sets).collect();
            all.sort_by_key(ByteSet::len);
            all.dedup();
            all.truncate(MAX_SETS * 4);
            all
        }
        HirKind::Alternation(subs) => {
            // A match of the alternation is a match of one branch: it holds a byte of that
            // branch's smallest set, so of the union of every branch's smallest set.
            let mut union = ByteSet::default();
            for sub in subs {
                match sets(sub).into_iter().min_by_key(ByteSet::len) {
                    Some(set) => union = union.union(set),
                    None => return Vec::new(),
                }
            }
            vec![union]
        }
        HirKind::Repetition(rep) if rep.min == 0 => Vec::new(),
        HirKind::Repetition(rep) => sets(&rep.sub),
    }
}

/// The bytes a match of `class` may start with or contain: the class's own bytes, or for a
/// class of characters its ASCII members and, if it has any other member, every byte above
/// 0x7F (a character's UTF-8 encoding beyond ASCII is made of such bytes only).
fn class_bytes(class: &Class) -> ByteSet {
    let mut set = ByteSet::default();
    match class {
        Class::Bytes(c) => {
            for r in c.iter() {
                set.insert_range(r.start(), r.end());
            }
        }
        Class::Unicode(c) => {
            for r in c.iter() {
                let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                if lo <= 0x7F {
                    set.insert_range(lo as u8, hi.min(0x7F) as u8);
                }
            }
            // Ranges are sorted: the last one reaches highest.
            if c.ranges().last().is_some_and(|r| u32::from(r.end()) > 0x7F) {
                set.insert_range(0x80, 0xFF);
            }
        }
    }
    set
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn of(pattern: &str) -> ByteNeeds {
        needs(&crate::grep::matchers::parser().parse(pattern).unwrap())
    }

    fn file(text: &[u8]) -> ByteSet {
        let mut set = ByteSet::default();
        text.iter().for_each(|&b| set.insert(b));
        set
    }

    #[test]
    fn patterns_ask_for_these_bytes() {
        let digits = {
            let mut s = ByteSet::default();
            s.insert_range(b'0', b'9');
            s
        };
        let n = of("[a-z]+[0-9]+");
        assert_eq!(n.all, ByteSet::default());
        assert_eq!(n.any.first(), Some(&digits));
        assert_eq!(n.any.len(), 2);
        // Literal bytes must all be there.
        assert_eq!(of("ab").all, file(b"ab"));
        // Optional parts and empty alternatives ask nothing.
        for p in ["", "x*", "a?", "(?:a|)", r"\b", "^$", "(?s:.)"] {
            assert!(of(p).is_empty(), "{p}");
        }
        // An alternation asks for a byte of one set of each branch (of the smallest, the
        // first of equals: here the digits).
        let n = of("x1|y2");
        assert_eq!(n.any, vec![file(b"12")]);
        assert!(n.may_match(&file(b"x2")) && !n.may_match(&file(b"xy")));
        // A Unicode class: its ASCII members, and any byte above 0x7F.
        let n = of(r"\d");
        assert!(n.any[0].contains(b'7') && n.any[0].contains(0x80) && n.any[0].contains(0xFF));
        assert!(!n.any[0].contains(b'a'));
        // Case-insensitive letters are classes of both cases (and the Kelvin sign).
        let n = of("(?i)k");
        assert!(n.any[0].contains(b'k') && n.any[0].contains(b'K') && n.any[0].contains(0xE2));
    }

    #[test]
    fn files_without_a_needed_byte_are_ruled_out() {
        let tree = file(b"fn let match struct impl return\n");
        assert!(!of("[a-z]+[0-9]+").may_match(&tree));
        assert!(of("[a-z]+[0-9]+").may_match(&file(b"abc x1")));
        assert!(!of("NEEDLE").may_match(&tree));
        assert!(of("fn").may_match(&tree));
        assert!(!of(r"\w+_\d{4}").may_match(&tree));
        assert!(!of("\u{e9}").may_match(&tree));
        assert!(of("x*").may_match(&file(b"")));
    }
}
