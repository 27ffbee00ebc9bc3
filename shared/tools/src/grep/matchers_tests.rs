//! The ASCII matcher against the Unicode matcher, both built as `grep` builds them: on ASCII
//! content they report the same matches, line by line, whenever `ascii_equivalent` allows the
//! ASCII one; and the cases the check exists for do differ.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use grep_matcher::Matcher;
use grep_regex::RegexMatcher;
use grep_searcher::sinks;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

use super::*;
use crate::grep::search::Searchers;

/// The ASCII and the Unicode matcher of `pattern`, when it is ASCII-equivalent and both build.
fn both(pattern: &str) -> Option<(RegexMatcher, RegexMatcher)> {
    if !ascii_equivalent(pattern) {
        return None;
    }
    let limits = Limits::default();
    Some((
        build(pattern, &limits, false).ok()?,
        build(pattern, &limits, true).ok()?,
    ))
}

/// Every match in each line of `content`: (line index, start, end).
fn matches(m: &RegexMatcher, content: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for (i, line) in content.split(|b| *b == b'\n').enumerate() {
        m.find_iter(line, |mat| {
            out.push((i, mat.start(), mat.end()));
            true
        })
        .unwrap();
    }
    out
}

type Lines = Vec<(u64, Vec<u8>)>;

/// The lines reported for `content` by the two searchers `search.rs` uses for content in
/// memory (plain: a slice without binary detection; otherwise the reader with it).
fn reported(m: &RegexMatcher, content: &[u8]) -> (Lines, Lines) {
    let mut searchers = Searchers::new();
    let mut plain = Vec::new();
    searchers
        .plain()
        .search_slice(
            m,
            content,
            sinks::Bytes(|n, line| {
                plain.push((n, line.to_vec()));
                Ok(true)
            }),
        )
        .unwrap();
    let mut numbered = Vec::new();
    searchers
        .numbered()
        .search_reader(
            m,
            content,
            sinks::Bytes(|n, line| {
                numbered.push((n, line.to_vec()));
                Ok(true)
            }),
        )
        .unwrap();
    (plain, numbered)
}

/// Every ASCII byte followed by every ASCII byte: each construct meets every character and
/// every boundary between two characters.
fn all_pairs() -> Vec<u8> {
    (0u8..0x80)
        .flat_map(|a| (0u8..0x80).flat_map(move |b| [a, b]))
        .collect()
}

#[test]
fn each_construct_matches_the_same_on_every_ascii_character_and_boundary() {
    let content = all_pairs();
    for p in [
        r"\w",
        r"\W",
        r"\d",
        r"\D",
        r"\s",
        r"\S",
        ".",
        "(?s:.)",
        "(?R).",
        "[^a]",
        r"[^\n]",
        r"[^\w\s]",
        "(?i)k",
        "(?i)s",
        "(?i)[^ks]",
        "(?i)[a-z]",
        "(?i)[K-S]+",
        r"(?i)\W",
        "[[:alpha:]]",
        "[[:^space:]]",
        r"[\w&&[^\d]]",
        r"[\W--\s]",
        r"[a-z~~k-s]",
        r"\b",
        r"\B",
        r"\b{start}",
        r"\b{end}",
        r"\b{start-half}",
        r"\b{end-half}",
        r"\<\w",
        r"\w\>",
        r"\w\b.",
        r"\B\W",
        r"(?i)\bk",
        r"(?u:\w)",
        r"(?-u:\w)",
        r"\x4B\x7F",
        r"(?m)^\w|\W$",
    ] {
        let (ascii, unicode) = both(p).unwrap_or_else(|| panic!("{p} should be compared"));
        assert_eq!(
            matches(&ascii, &content),
            matches(&unicode, &content),
            "{p}"
        );
        assert_eq!(
            reported(&ascii, &content),
            reported(&unicode, &content),
            "{p}"
        );
    }
}

#[test]
fn patterns_naming_non_ascii_characters_take_the_unicode_matcher() {
    // What the check is for: under (?i) the Kelvin sign and long s, written as escapes in an
    // ASCII pattern, match ASCII letters with Unicode only.
    let limits = Limits::default();
    for (p, hay) in [(r"(?i)\x{212A}", "k"), (r"(?i)\u{17F}", "S")] {
        let unicode = build(p, &limits, true).unwrap();
        let ascii = build(p, &limits, false).unwrap();
        assert!(unicode.is_match(hay.as_bytes()).unwrap(), "{p}");
        assert!(!ascii.is_match(hay.as_bytes()).unwrap(), "{p}");
        assert!(!ascii_equivalent(p), "{p}");
    }
    for p in [
        "é",
        r"\xE9",
        r"(?-u:\xFF)",
        r"[\x{80}-\x{10FFFF}]",
        r"[a\x{212A}]",
        r"[^\x{17F}]",
        r"\pL",
        r"\P{Greek}",
        r"[\p{Nd}a]",
        r"(?x) a # é",
        "(unclosed",
    ] {
        assert!(!ascii_equivalent(p), "{p}");
    }
    for p in [
        r"\w+_\d{4}",
        "NEEDLE_4242",
        "[a-z]+[0-9]+",
        r"(?i)\bfn\s+\w+",
        r"[\x00-\x7F]",
    ] {
        assert!(ascii_equivalent(p), "{p}");
    }
}

#[test]
fn the_unicode_matcher_is_compiled_only_for_content_that_needs_it() {
    let limits = Limits::default();
    let compiled = Compiled::new(r"\w+_\d{4}", &limits).unwrap();
    let matchers = Matchers::new(&compiled);
    let ascii = matchers.get(true).unwrap();
    assert!(ascii.is_match(b"item_2024").unwrap());
    assert!(matchers.for_thread().get(true).is_some());
    assert!(!compiled.unicode_built());
    // Content that may not be ASCII: the Unicode matcher, compiled once for all threads.
    let unicode = matchers.get(false).unwrap();
    assert!(compiled.unicode_built());
    assert!(
        unicode
            .is_match("na\u{ef}ve_\u{663}\u{664}\u{665}\u{666}".as_bytes())
            .unwrap()
    );
    assert!(matchers.for_thread().get(false).is_some());
    assert!(compiled.failed().is_none());
    // No ASCII equivalent: the Unicode matcher at once, used for every content.
    let compiled = Compiled::new(r"\pL+", &limits).unwrap();
    assert!(compiled.unicode_built());
    assert!(Matchers::new(&compiled).get(true).is_some());
    // An invalid pattern is refused before any search, with the Unicode build's text.
    let e = Compiled::new("a(", &limits).err().unwrap();
    assert_eq!(e, build("a(", &limits, true).unwrap_err().to_string());
}

#[test]
fn a_pattern_over_the_limit_with_unicode_only_fails_when_non_ascii_content_needs_it() {
    // The smallest power-of-two program limit the ASCII build of `\w{64}` fits.
    let p = r"\w{64}";
    let mut limits = Limits {
        regex_size_limit: 1024,
        ..Limits::default()
    };
    while build(p, &limits, false).is_err() {
        limits.regex_size_limit *= 2;
        assert!(limits.regex_size_limit < 1 << 24);
    }
    let unicode_error = build(p, &limits, true).unwrap_err().to_string();
    let compiled = Compiled::new(p, &limits).unwrap();
    let matchers = Matchers::new(&compiled);
    assert!(matchers.get(true).is_some());
    assert!(compiled.failed().is_none());
    assert!(matchers.get(false).is_none());
    assert_eq!(compiled.failed(), Some(unicode_error.as_str()));
}

/// ASCII content, mostly the characters the constructs treat specially: word and non-word
/// bytes, the letters with non-ASCII case folds (`k`, `s`), every ASCII space (and 0x1C, which
/// is not White_Space), digits, NUL, DEL, line terminators; then any ASCII byte.
fn ascii_content() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(b"abckKsSx_-017 \t\n\r\x0B\x0C\x1C\x00\x7F.".to_vec()),
            1 => 0u8..0x80,
        ],
        0..200,
    )
}

/// The trigram tests' pattern pieces (`grams`), and the constructs whose Unicode and ASCII
/// forms differ off ASCII.
fn ascii_pattern() -> impl Strategy<Value = String> {
    let tricky = prop::sample::select(vec![
        r"(?i)k",
        r"(?i)s+",
        r"(?i)[^k]",
        r"\W",
        r"\S",
        r"\D",
        r"[^\w]",
        r"\B",
        r"\b{start}",
        r"\b{end-half}",
        r"\<",
        r"\>",
        r"[[:alpha:]]",
        r"[[:^space:]]",
        r"[\w&&[^\d]]",
        r"(?u:\w)",
        r"(?-u:.)",
        r"(?s:.)",
        r"(?m)^",
        r"(?R)$",
        r"\A",
        r"\z",
        r"\x{212A}",
        r"\pL",
    ]);
    let piece = prop_oneof![
        super::super::grams::props::pattern(),
        tricky.prop_map(str::to_string),
    ];
    prop::collection::vec(piece, 1..5).prop_map(|v| v.concat())
}

/// The property below is not vacuous: most generated patterns take the ASCII matcher (and
/// are then compared, unless their Unicode build fails; only the ASCII one is built here,
/// the Unicode builds being slow in a debug build).
#[test]
fn most_generated_patterns_take_the_ascii_matcher() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = ascii_pattern();
    let limits = Limits::default();
    let n = 200;
    let taken = (0..n)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .filter(|p| ascii_equivalent(p) && build(p, &limits, false).is_ok())
        .count();
    assert!(taken * 2 > n, "{taken} of {n}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// On ASCII content the ASCII matcher finds exactly the Unicode matcher's matches (every
    /// span on every line) and the searchers report the same lines, for every pattern that
    /// `ascii_equivalent` lets take the ASCII matcher.
    #[test]
    fn the_ascii_matcher_agrees_with_the_unicode_matcher_on_ascii_content(
        pattern in ascii_pattern(),
        content in ascii_content(),
    ) {
        let Some((ascii, unicode)) = both(&pattern) else {
            return Ok(());
        };
        prop_assert_eq!(
            matches(&ascii, &content),
            matches(&unicode, &content),
            "{:?} in {:?}",
            pattern,
            String::from_utf8_lossy(&content)
        );
        prop_assert_eq!(reported(&ascii, &content), reported(&unicode, &content), "{:?}", pattern);
    }
}
