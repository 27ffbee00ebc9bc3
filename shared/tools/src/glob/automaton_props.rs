//! Property tests of the glob's automaton against `globset`'s own matcher: it matches exactly
//! the paths `globset` matches, and every path matched has each of its ancestor directories
//! entered, so pruning never loses a match.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::automaton::GlobAutomaton;

/// Pattern components: literals, wildcards, `**`, classes (negated too), alternatives (one
/// holding a separator), an escaped wildcard, a hidden name.
fn pattern() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("src"),
        Just("a"),
        Just("b"),
        Just("*"),
        Just("**"),
        Just("?"),
        Just("[ab]"),
        Just("[!a]"),
        Just("{a,b}"),
        Just("{a/b,c}"),
        Just("*.rs"),
        Just("a*"),
        Just(".x"),
        Just("\\*"),
        Just("{,a}"),
    ];
    prop::collection::vec(part, 1..5).prop_map(|parts| parts.join("/"))
}

/// Paths over the names the patterns speak of.
fn path() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("src"),
        Just("a"),
        Just("b"),
        Just("ab"),
        Just("c"),
        Just("x.rs"),
        Just("a.rs"),
        Just(".x"),
        Just("*"),
    ];
    prop::collection::vec(name, 1..6).prop_map(|names| names.join("/"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn it_matches_what_globset_matches_and_prunes_no_match_away(
        pattern in pattern(),
        paths in prop::collection::vec(path(), 1..40),
    ) {
        let Ok(glob) = super::compile(&pattern) else {
            return Ok(());
        };
        let matcher = glob.compile_matcher();
        let mut automaton = GlobAutomaton::new(glob);
        for p in &paths {
            let matched = matcher.is_match(p.as_str());
            prop_assert_eq!(automaton.is_match(p.as_bytes()), matched, "{:?} on {:?}", pattern, p);
            if !matched {
                continue;
            }
            let mut ancestor = 0;
            while let Some(slash) = p[ancestor..].find('/') {
                ancestor += slash;
                prop_assert!(
                    automaton.may_match_beneath(&p.as_bytes()[..ancestor]),
                    "{pattern:?} matches {p:?} but {:?} was pruned",
                    &p[..ancestor]
                );
                ancestor += 1;
            }
        }
    }
}
