//! Which directories a glob's walk needs to enter.
//!
//! The pattern is matched against paths relative to the walk's root, so `src/mod05/*.rs` can
//! only match beneath `src/mod05`, and `*.md` only in the root itself: walking the rest of the
//! tree reads directories whose entries can never match. The walk asks before entering each
//! directory whether any path beneath it can match: the directory's relative path and a `/`
//! are fed to a lazy DFA built from the glob's own regex (the one `globset` matches with), and
//! a dead state (no continuation can ever reach a match) means the subtree is skipped. This is
//! exact for every glob feature (alternatives holding a `/`, classes, `**` anywhere), because
//! it asks the matcher's own automaton rather than re-parsing the pattern.
//!
//! Pruning may only ever leave out directories with nothing to list: anything the DFA cannot
//! decide (its cache given up, a quit byte) counts as "may match", and so does a pattern whose
//! automaton cannot be built (the walk then enters everything, as it did without pruning).

use globset::Glob;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input};

/// A glob's automaton and its working memory, for one walk.
pub(super) struct Pruner {
    dfa: DFA,
    cache: Cache,
}

impl Pruner {
    /// The pruner of `glob`; `None` when its automaton cannot be built (nothing is pruned).
    /// The syntax options are the ones `globset` builds its own regex with: bytes rather than
    /// UTF-8 (a path need not be UTF-8), and `.` matching a newline too.
    pub(super) fn new(glob: &Glob) -> Option<Pruner> {
        let dfa = DFA::builder()
            .syntax(syntax::Config::new().utf8(false).dot_matches_new_line(true))
            .thompson(regex_automata::nfa::thompson::Config::new().utf8(false))
            .build(glob.regex())
            .ok()?;
        let cache = dfa.create_cache();
        Some(Pruner { dfa, cache })
    }

    /// Whether a path beneath the directory `rel` (relative to the walk's root, not empty)
    /// can match: false only when the automaton is certain none can.
    pub(super) fn may_match_beneath(&mut self, rel: &[u8]) -> bool {
        let input = Input::new(rel).anchored(Anchored::Yes);
        let Ok(mut state) = self.dfa.start_state_forward(&mut self.cache, &input) else {
            return true;
        };
        for &byte in rel.iter().chain(b"/") {
            match self.dfa.next_state(&mut self.cache, state, byte) {
                Ok(next) if next.is_dead() => return false,
                Ok(next) if next.is_quit() => return true,
                Ok(next) => state = next,
                Err(_) => return true,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use globset::GlobBuilder;

    use super::*;

    fn pruner(pattern: &str) -> Pruner {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .empty_alternates(true)
            .build()
            .unwrap();
        Pruner::new(&glob).unwrap()
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
            let got = pruner(pattern).may_match_beneath(dir.as_bytes());
            assert_eq!(got, want, "pattern {pattern:?}, directory {dir:?}");
        }
    }

    /// Paths are bytes: a directory name that is not UTF-8 is fed as it is.
    #[test]
    fn a_directory_name_that_is_not_utf8_is_judged_by_its_bytes() {
        assert!(pruner("*/*.rs").may_match_beneath(b"\xff\xfe"));
        assert!(!pruner("src/*.rs").may_match_beneath(b"\xff\xfe"));
    }
}
