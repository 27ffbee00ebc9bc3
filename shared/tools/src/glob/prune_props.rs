//! Property test of the pruner against the glob it prunes for: every path the glob matches
//! has each of its ancestor directories entered, so pruning never loses a match.

#![allow(clippy::unwrap_used)]

use globset::GlobBuilder;
use proptest::prelude::*;

use super::prune::Pruner;

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
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn no_matching_path_lies_beneath_a_pruned_directory(
        pattern in pattern(),
        paths in prop::collection::vec(path(), 1..40),
    ) {
        let Ok(glob) = GlobBuilder::new(&pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .empty_alternates(true)
            .build()
        else {
            return Ok(());
        };
        let matcher = glob.compile_matcher();
        let mut pruner = Pruner::new(&glob).unwrap();
        for p in paths.iter().filter(|p| matcher.is_match(p.as_str())) {
            let mut ancestor = 0;
            while let Some(slash) = p[ancestor..].find('/') {
                ancestor += slash;
                prop_assert!(
                    pruner.may_match_beneath(&p.as_bytes()[..ancestor]),
                    "{pattern:?} matches {p:?} but {:?} was pruned",
                    &p[..ancestor]
                );
                ancestor += 1;
            }
        }
    }
}
