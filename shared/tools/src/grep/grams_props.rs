//! Property tests of the trigram filter against the matcher as `grep` builds it.
//!
//! The filter's two halves are tested exactly, each on its own: every match's own text
//! satisfies the pattern's query, evaluated on the exact set of trigram keys of that text (not
//! through a Bloom filter, whose false positives would let a wrong query leaf pass a third of
//! the time at [`MIN_BITS`]), and holds a byte of each of the pattern's byte sets
//! (`bytesets`); and a content's filter holds every key of its content and exactly its bytes.
//! Together they say a file with a match is never ruled out.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use grep_matcher::Matcher;
use grep_regex::RegexMatcher;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use regex_syntax::hir::{Class, Hir, HirKind};

use super::*;
use crate::Limits;
use crate::grep::bytesets::ByteSet;
use crate::grep::matchers::{ascii_equivalent, build, parser};

/// Pieces of patterns: literals over a small alphabet (so that random content contains
/// them), case-insensitivity, classes, repetitions, alternations, anchors, Unicode case
/// folds (`k` and the Kelvin sign, `é` and `É`).
pub(in crate::grep) fn pattern() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[abcK_]{1,4}",
        "[0-9_]{1,3}",
        Just("(?i)".to_string()),
        Just("é".to_string()),
        Just("\u{663}".to_string()),
        Just("|".to_string()),
        Just("?".to_string()),
        Just("*".to_string()),
        Just("+".to_string()),
        Just("{2}".to_string()),
        Just("{1,3}".to_string()),
        Just("{0,2}".to_string()),
        Just(".".to_string()),
        Just("[ab]".to_string()),
        Just("[_-]".to_string()),
        Just("[^a]".to_string()),
        Just("[a\\n]".to_string()),
        Just(r"\w".to_string()),
        Just(r"\d".to_string()),
        Just(r"\d{3}".to_string()),
        Just(r"\s".to_string()),
        Just("[0-9]".to_string()),
        Just(r"\b".to_string()),
        Just("^".to_string()),
        Just("$".to_string()),
        Just("(ab|bc)".to_string()),
        Just("(?:a|1_|)".to_string()),
        Just("(?-u:\\xE9)".to_string()),
        Just("(?-u:\\d\\w)".to_string()),
    ];
    prop::collection::vec(piece, 1..8).prop_map(|v| v.concat())
}

/// Patterns as trees: groups, alternations (some with an empty branch) and flags nested in
/// repetitions, wide alternations and long literals, so that the query's bounds come into
/// play: sets cut at `MAX_SET` strings of `MAX_LEN` bytes (a mutation of that cut failed the
/// nested tests in both runs tried, a flat test in one of them), and likely products past
/// `MAX_PRODUCT` and the leaf bound (not measured).
fn nested_pattern() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        8 => "[abcK_]{2,5}",
        2 => "[0-9_]{1,3}",
        2 => "[ab1_\u{e9}\u{663}K]{10,24}",
        5 => prop::sample::select(vec![
            ".",
            "(?s:.)",
            "[ab]",
            "[^a]",
            "[a-f]",
            "[0-9a-f]",
            "[_-]",
            r"\w",
            r"\W",
            r"\d",
            r"\s",
            r"\pN",
            "(?i:[a-k])",
            "(?i)k",
            "(?i)s",
            "\u{212A}",
            "\u{e9}",
            "\u{c9}",
            "\u{663}",
            "(?-u:\\xE9)",
            "(?-u:[\\x80-\\xFF])",
            "(?-u:\\w)",
            r"\b",
            "^",
            "$",
            "",
        ])
        .prop_map(str::to_string),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 2..5).prop_map(|v| v.concat()),
            2 => prop::collection::vec(
                prop_oneof![4 => inner.clone(), 1 => Just(String::new())],
                2..5,
            )
            .prop_map(|v| format!("(?:{})", v.join("|"))),
            3 => (
                inner.clone(),
                prop::sample::select(vec![
                    "?", "*", "+", "{2}", "{3}", "{5}", "{0,2}", "{1,3}", "{2,}", "{3,5}", "{0}",
                    "*?", "{1}",
                ]),
            )
                .prop_map(|(p, r)| format!("(?:{p}){r}")),
            1 => (
                inner.clone(),
                prop::sample::select(vec!["(?i:", "(?-u:", "(?s:", "(", "(?u:"]),
            )
                .prop_map(|(p, f)| format!("{f}{p})")),
            1 => prop::collection::vec("[a-d1_\u{e9}]{1,5}", 30..90)
                .prop_map(|v| format!("(?:{})", v.join("|"))),
        ]
    })
}

/// Characters of random content: the pattern pieces' alphabet, their case folds (`K` and the
/// Kelvin sign, `é` and `É`), digits of other scripts, spaces and line ends.
fn content_char() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        'a',
        'b',
        'c',
        'A',
        'B',
        'K',
        'k',
        '\u{212A}',
        'é',
        'É',
        '_',
        '-',
        '0',
        '1',
        '7',
        '\u{663}',
        '\u{96A}',
        '\u{1D7D8}',
        ' ',
        '\n',
    ])
}

fn content() -> impl Strategy<Value = String> {
    prop::collection::vec(content_char(), 0..200).prop_map(|v| v.into_iter().collect())
}

/// Content with many distinct trigrams.
fn varied_content() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_ \n\u{e9}\u{c9}\u{212A}\u{663}]{3,300}"
}

/// Bytes that are often not valid UTF-8 (bytes of multi-byte sequences on their own, or in
/// order), which the matcher searches as bytes too.
fn raw_content() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop::sample::select(vec![
            b'a', b'b', b'K', b'_', b'-', b'0', b'1', b'7', b' ', b'\n', 0xE9, 0xC3, 0xA9, 0xD9,
            0xA3, 0xE2, 0x84, 0xAA, 0xFF,
        ]),
        0..200,
    )
}

/// Every trigram key of `text`, exactly: each window's plain trigram and, for a window with a
/// byte that folds, its folded one (what `Grams::of` sets a bit for).
fn exact_keys(text: &[u8]) -> HashSet<u32> {
    let mut keys = HashSet::new();
    for w in text.windows(3) {
        let key = |f: fn(u8) -> u8| {
            u32::from(f(w[0])) << 16 | u32::from(f(w[1])) << 8 | u32::from(f(w[2]))
        };
        keys.insert(key(|b| b));
        if w.iter().any(|&b| query::folds(b)) {
            keys.insert(key(query::fold) | FOLDED);
        }
    }
    keys
}

/// Checks every match of `matcher` in every line of `content` against the query of `needs`
/// on the match's own keys; the number of matches checked.
fn check_matches(
    matcher: &RegexMatcher,
    needs: &Needs,
    content: &[u8],
) -> Result<usize, TestCaseError> {
    let mut checked = 0;
    let mut bad = None;
    for line in content.split(|b| *b == b'\n') {
        matcher
            .find_iter(line, |m| {
                let text = &line[m];
                let keys = exact_keys(text);
                let mut bytes = ByteSet::default();
                text.iter().for_each(|&b| bytes.insert(b));
                checked += 1;
                if needs.query.eval(&|k| keys.contains(&k)) && needs.bytes.may_match(&bytes) {
                    true
                } else {
                    bad = Some(text.to_vec());
                    false
                }
            })
            .unwrap();
        if let Some(text) = bad {
            return Err(TestCaseError::fail(format!(
                "the match {:?} does not satisfy {} or {:?}",
                String::from_utf8_lossy(&text),
                needs.query,
                needs.bytes
            )));
        }
    }
    Ok(checked)
}

/// The whole property for one pattern and content: every match of the Unicode matcher (and,
/// when the pattern takes it, of the ASCII matcher on the content's ASCII bytes) satisfies
/// the query on its own keys, and the content's filter passes the query when anything
/// matched. The number of matches checked (0 when the pattern has no query or no build).
fn check(pattern: &str, content: &[u8]) -> Result<usize, TestCaseError> {
    // The query first: it is cheap, and a pattern without one needs no matcher.
    let Some(needs) = Needs::of(pattern) else {
        return Ok(0);
    };
    let limits = Limits::default();
    let Ok(matcher) = build(pattern, &limits, true) else {
        return Ok(0);
    };
    let mut checked = check_matches(&matcher, &needs, content)?;
    let grams = Grams::of(content);
    if checked > 0 {
        prop_assert!(
            needs.may_match(&grams),
            "{pattern:?} in {:?}",
            String::from_utf8_lossy(content)
        );
    }
    if ascii_equivalent(pattern)
        && let Ok(ascii) = build(pattern, &limits, false)
    {
        let content: Vec<u8> = content.iter().copied().filter(u8::is_ascii).collect();
        checked += check_matches(&ascii, &needs, &content)?;
    }
    Ok(checked)
}

/// A tiny deterministic generator for sampling content from a pattern (proptest draws the
/// seed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Appends to `out` a string the pattern `hir` may match (or nearly: looks are ignored, and
/// `budget` bounds the nodes visited), so that content holds matches, including those of
/// deep alternatives and long repetitions.
fn sample(hir: &Hir, rng: &mut Rng, out: &mut Vec<u8>, budget: &mut usize) {
    if *budget == 0 {
        return;
    }
    *budget -= 1;
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(lit) => out.extend_from_slice(&lit.0),
        HirKind::Class(Class::Unicode(class)) => {
            let ranges = class.ranges();
            if ranges.is_empty() {
                return;
            }
            // Often an ASCII member when there is one (the ASCII matcher's content), and a
            // range's ends (where off-by-one errors live) as often as its inside.
            let ascii: Vec<_> = ranges.iter().filter(|r| r.start().is_ascii()).collect();
            let range = if !ascii.is_empty() && rng.below(2) == 0 {
                *ascii[rng.below(ascii.len())]
            } else {
                ranges[rng.below(ranges.len())]
            };
            let (lo, hi) = (u32::from(range.start()), u32::from(range.end()));
            let c = match rng.below(4) {
                0 => lo,
                1 => hi,
                _ => lo + rng.below((hi - lo + 1) as usize) as u32,
            };
            if let Some(c) = char::from_u32(c) {
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
        }
        HirKind::Class(Class::Bytes(class)) => {
            let ranges = class.ranges();
            if ranges.is_empty() {
                return;
            }
            let range = ranges[rng.below(ranges.len())];
            let span = usize::from(range.end() - range.start()) + 1;
            out.push(range.start() + rng.below(span) as u8);
        }
        HirKind::Capture(cap) => sample(&cap.sub, rng, out, budget),
        HirKind::Concat(subs) => {
            for sub in subs {
                sample(sub, rng, out, budget);
            }
        }
        HirKind::Alternation(subs) => sample(&subs[rng.below(subs.len())], rng, out, budget),
        HirKind::Repetition(rep) => {
            let extra = rep.max.map_or(3, |max| (max - rep.min).min(3));
            let n = rep.min.min(20) + rng.below(extra as usize + 1) as u32;
            for _ in 0..n {
                sample(&rep.sub, rng, out, budget);
            }
        }
    }
}

/// Content holding a string sampled from `pattern`, between the two halves of `pad`, then
/// the same string with the case of some ASCII letters swapped: a near miss, which a matcher
/// that read the pattern differently from the query (case-insensitively) would match.
fn sampled_content(pattern: &str, seed: u64, pad: &str, at: usize) -> Vec<u8> {
    let pad = pad.as_bytes();
    let at = at % (pad.len() + 1);
    let mut out = pad[..at].to_vec();
    if let Ok(hir) = parser().parse(pattern) {
        let mut rng = Rng(seed | 1);
        let mut sampled = Vec::new();
        sample(&hir, &mut rng, &mut sampled, &mut 400);
        out.extend_from_slice(&sampled);
        out.push(b'\n');
        for b in &mut sampled {
            if b.is_ascii_alphabetic() && rng.below(2) == 0 {
                *b ^= 0x20;
            }
        }
        out.extend_from_slice(&sampled);
    }
    out.extend_from_slice(&pad[at..]);
    out
}

/// A pattern made from a piece of `content` (so it often matches), wrapped in syntax that
/// keeps a literal prefix: case-insensitivity, alternation, optional and repeated prefixes,
/// word boundaries.
fn pattern_from(content: &str, start: usize, len: usize, wrap: usize) -> String {
    let chars: Vec<char> = content.chars().collect();
    let start = start % chars.len();
    let piece: String = chars[start..(start + len).min(chars.len())]
        .iter()
        .collect();
    let piece = regex_syntax::escape(&piece);
    let wraps = [
        "{}",
        "(?i){}",
        "{}|qqqq",
        "zz?{}",
        "{}\\w*",
        "(?:{})+",
        "\\b{}",
        "[ab]{}",
        "(?i:{})x?",
        "\\w*{}\\d?",
        "{}{2}",
        "(?:{}|\\d\\d)",
    ];
    wraps[wrap % wraps.len()].replace("{}", &piece)
}

/// The filter's options are the matcher's: for each `RegexMatcherBuilder` option that makes
/// a pattern match more, a pattern and content that match only with it, checked as above (a
/// match whose keys fail the query is a file the filter would hide). With the options as
/// they are those contents hold no match; the probes that match show the check sees matches.
#[test]
fn the_filter_reads_the_pattern_as_the_matcher_does() {
    // (pattern, content, whether it matches with the options as they are)
    let probes: [(&str, &[u8], bool); 5] = [
        // case_insensitive, case_smart
        ("needle", b"a NEEDLE", false),
        // ignore_whitespace
        ("nee dle", b"a needle", false),
        // fixed_strings
        ("ne(e)+dle", b"a ne(e)+dle", false),
        // The others (word, multi_line, crlf, dot_matches_new_line, swap_greed, the line
        // terminator) change anchors or greed, or only remove matches; unicode(false) is the
        // ASCII matcher, checked by `check` on ASCII content.
        ("(?i)n\u{e9}edle", "a N\u{c9}EDLE".as_bytes(), true),
        ("needle", b"a needle", true),
    ];
    for (pattern, content, matches) in probes {
        let checked = check(pattern, content).unwrap_or_else(|e| panic!("{pattern:?}: {e}"));
        if matches {
            assert!(checked > 0, "{pattern:?} in {content:?}");
        }
    }
}

/// The filter of a content holds every key of the content (a Bloom filter never loses one).
#[test]
fn a_filter_holds_every_key_of_its_content() {
    let mut runner = proptest::test_runner::TestRunner::default();
    runner
        .run(
            &prop_oneof![raw_content(), content().prop_map(String::into_bytes)],
            |c| {
                let grams = Grams::of(&c);
                for key in exact_keys(&c) {
                    prop_assert!(grams.has(key), "{key:#x} of {c:?}");
                }
                for b in 0..=255u8 {
                    prop_assert_eq!(
                        grams.bytes.contains(b),
                        c.contains(&b),
                        "{:#x} of {:?}",
                        b,
                        c
                    );
                }
                Ok(())
            },
        )
        .unwrap();
}

/// The nested test below is not vacuous: many nested patterns get a query (the others need
/// no trigram: optional, empty alternatives), and the content sampled from most of those
/// holds matches that are checked.
#[test]
fn nested_patterns_and_sampled_content_give_matches_to_check() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (nested_pattern(), any::<u64>(), content(), any::<usize>());
    let n = 60;
    let (mut with_query, mut with_matches) = (0, 0);
    for _ in 0..n {
        let (pattern, seed, pad, at) = strategy.new_tree(&mut runner).unwrap().current();
        if Needs::of(&pattern).is_some() {
            with_query += 1;
            if check(&pattern, &sampled_content(&pattern, seed, &pad, at)).unwrap() > 0 {
                with_matches += 1;
            }
        }
    }
    assert!(with_query * 3 > n, "{with_query} of {n} have a query");
    assert!(
        with_matches * 2 > with_query,
        "{with_matches} of {with_query} matched"
    );
}

// Case counts keep `cargo test -p hands-tools --lib grep` near 30 s of CPU in a debug build:
// building a Unicode matcher (`\w`, `\d`) there takes tens of milliseconds, and the patterns
// taken from the content are the slowest (each builds two matchers and most match often).
proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every match of a random pattern in random content satisfies the pattern's query.
    #[test]
    fn every_match_satisfies_the_query(pattern in pattern(), content in content()) {
        check(&pattern, content.as_bytes())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The same in content that is not valid UTF-8.
    #[test]
    fn every_match_in_raw_bytes_satisfies_the_query(
        pattern in pattern(),
        content in raw_content(),
    ) {
        check(&pattern, &content)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The same for patterns taken from the content: most of them match.
    #[test]
    fn every_match_of_a_piece_of_the_content_satisfies_the_query(
        content in varied_content(),
        start in 0usize..300,
        len in 3usize..9,
        wrap in 0usize..12,
    ) {
        check(&pattern_from(&content, start, len, wrap), content.as_bytes())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// The same for nested patterns, in content holding a string sampled from the pattern.
    #[test]
    fn every_match_of_a_nested_pattern_satisfies_the_query(
        pattern in nested_pattern(),
        seed in any::<u64>(),
        pad in content(),
        at in any::<usize>(),
    ) {
        check(&pattern, &sampled_content(&pattern, seed, &pad, at))?;
    }
}
