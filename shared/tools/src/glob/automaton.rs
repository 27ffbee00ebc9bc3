//! A glob's automaton: which paths it matches, and which directories a walk needs to enter.
//!
//! Both questions go to one lazy DFA built from the glob's own regex (the one `globset`
//! matches with, with `globset`'s syntax options), anchored at the start of the path relative
//! to the walk's root. Building it costs 14-20 µs; `globset`'s own matcher for a pattern that
//! needs a regex (`src/mod05/*.rs`) took 127-241 µs to build here, more than the walk of one
//! directory, so the lazy DFA answers both and `globset` is built only if the DFA cannot
//! answer (its cache given up, a quit byte: not expected for a glob's regex).
//!
//! Pruning: `src/mod05/*.rs` can only match beneath `src/mod05`, and `*.md` only in the root
//! itself; walking the rest of the tree reads directories whose entries can never match. The
//! walk asks before entering each directory whether any path beneath it can match: the
//! directory's relative path and a `/` are fed to the DFA, and a dead state (no continuation
//! can ever reach a match) means the subtree is skipped. This is exact for every glob feature
//! (alternatives holding a `/`, classes, `**` anywhere), because it asks the matcher's own
//! automaton rather than re-parsing the pattern; anything undecided counts as "may match".

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use globset::{Candidate, Glob, GlobMatcher};
use regex_automata::hybrid::LazyStateID;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};

/// A glob's automaton and its working memory, for one walk.
pub(super) struct GlobAutomaton {
    glob: Glob,
    dfa: Option<(DFA, Cache)>,
    /// `globset`'s matcher, built only when the DFA cannot answer.
    fallback: Option<GlobMatcher>,
}

impl GlobAutomaton {
    /// The syntax options are the ones `globset` builds its own regex with: bytes rather than
    /// UTF-8 (a path need not be UTF-8), and `.` matching a newline too.
    pub(super) fn new(glob: Glob) -> GlobAutomaton {
        let dfa = DFA::builder()
            .syntax(syntax::Config::new().utf8(false).dot_matches_new_line(true))
            .thompson(regex_automata::nfa::thompson::Config::new().utf8(false))
            .build(glob.regex())
            .ok()
            .map(|dfa| {
                let cache = dfa.create_cache();
                (dfa, cache)
            });
        GlobAutomaton {
            glob,
            dfa,
            fallback: None,
        }
    }

    /// Whether the glob matches `path` (relative to the walk's root).
    pub(super) fn is_match(&mut self, path: &[u8]) -> bool {
        if let Some(answer) = self.dfa_match(path) {
            return answer;
        }
        self.fallback
            .get_or_insert_with(|| self.glob.compile_matcher())
            .is_match_candidate(&Candidate::new(OsStr::from_bytes(path)))
    }

    /// Whether a path beneath the directory `rel` (relative to the walk's root, not empty)
    /// can match: false only when the automaton is certain none can.
    pub(super) fn may_match_beneath(&mut self, rel: &[u8]) -> bool {
        let Some(mut state) = self.start(rel) else {
            return true;
        };
        let Some((dfa, cache)) = self.dfa.as_mut() else {
            return true;
        };
        for &byte in rel.iter().chain(b"/") {
            match dfa.next_state(cache, state, byte) {
                Ok(next) if next.is_dead() => return false,
                Ok(next) if next.is_quit() => return true,
                Ok(next) => state = next,
                Err(_) => return true,
            }
        }
        true
    }

    /// The DFA's answer for `path`; `None` when it has none.
    fn dfa_match(&mut self, path: &[u8]) -> Option<bool> {
        let mut state = self.start(path)?;
        let (dfa, cache) = self.dfa.as_mut()?;
        for &byte in path {
            state = dfa.next_state(cache, state, byte).ok()?;
            if state.is_dead() {
                return Some(false);
            }
            if state.is_quit() {
                return None;
            }
        }
        let end = dfa.next_eoi_state(cache, state).ok()?;
        if end.is_quit() {
            return None;
        }
        Some(end.is_match())
    }

    /// The anchored start state for a search of `haystack`.
    fn start(&mut self, haystack: &[u8]) -> Option<LazyStateID> {
        let (dfa, cache) = self.dfa.as_mut()?;
        let input = Input::new(haystack).anchored(Anchored::Yes);
        dfa.start_state_forward(cache, &input).ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn automaton(pattern: &str) -> GlobAutomaton {
        let automaton = GlobAutomaton::new(super::super::compile(pattern).unwrap());
        assert!(automaton.dfa.is_some(), "{pattern}: no DFA");
        automaton
    }

    /// (pattern, directory, whether the walk must enter it).
    const CASES: &[(&str, &str, bool)] = &[
        ("src/mod05/*.rs", "src", true),
        ("src/mod05/*.rs", "src/mod05", true),
        ("src/mod05/*.rs", "src/mod06", false),
        ("src/mod05/*.rs", "src/mod05/deeper", false),
        ("src/mod05/*.rs", "out", false),
        ("*.md", "docs", false),
        ("*/*.md", "docs", true),
        ("*/*.md", "docs/deeper", false),
        ("**/*.md", "a/b/c/d", true),
        ("src/**/*.py", "src/a/b", true),
        ("src/**/*.py", "tests", false),
        ("src/**", "src", true),
        ("{src,tests}/*.rs", "tests", true),
        ("{src,tests}/*.rs", "benches", false),
        // An alternative holding a separator: one branch goes a level deeper.
        ("{a/b,c}/*.rs", "a", true),
        ("{a/b,c}/*.rs", "a/b", true),
        ("{a/b,c}/*.rs", "c/d", false),
        ("[st]rc/*", "src", true),
        ("[st]rc/*", "arc", false),
        // A class never matches the separator (literal_separator), negated or not.
        ("a[!x]b", "a", false),
        ("a?b/*", "a/b", false),
        ("a?b/*", "axb", true),
        // An escaped wildcard is a literal.
        ("a\\*/x", "a*", true),
        ("a\\*/x", "ab", false),
        // Hidden directories are entered like any other.
        ("**/*.toml", ".config", true),
        (".config/*", ".config", true),
        ("**", "any/depth/at/all", true),
    ];

    #[test]
    fn directories_that_can_hold_a_match_are_entered_and_no_others() {
        for &(pattern, dir, want) in CASES {
            let got = automaton(pattern).may_match_beneath(dir.as_bytes());
            assert_eq!(got, want, "pattern {pattern:?}, directory {dir:?}");
        }
    }

    /// Paths are bytes: a name that is not UTF-8 is fed as it is.
    #[test]
    fn a_name_that_is_not_utf8_is_judged_by_its_bytes() {
        assert!(automaton("*/*.rs").may_match_beneath(b"\xff\xfe"));
        assert!(!automaton("src/*.rs").may_match_beneath(b"\xff\xfe"));
        assert!(automaton("*.rs").is_match(b"a\xff.rs"));
        assert!(automaton("*").is_match(b"\xff\xfe"));
        assert!(!automaton("*.rs").is_match(b"\xff\xfe"));
    }

    /// Without a DFA, `globset` answers what matches and every directory is entered.
    #[test]
    fn without_a_dfa_globset_answers_and_nothing_is_pruned() {
        let glob = super::super::compile("src/*.rs").unwrap();
        let mut automaton = GlobAutomaton {
            glob,
            dfa: None,
            fallback: None,
        };
        assert!(automaton.is_match(b"src/a.rs"));
        assert!(!automaton.is_match(b"src/a/b.rs"));
        assert!(automaton.may_match_beneath(b"elsewhere"));
    }
}
