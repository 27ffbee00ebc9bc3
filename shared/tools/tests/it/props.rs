//! Property tests: path confinement over random trees of directories, files and symlinks
//! (nothing outside the root is ever read or written), and `edit` against a model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hands_tools::Roots;
use proptest::prelude::*;
use serde_json::json;

use crate::common::*;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Clone, Debug)]
enum Node {
    Dir(String),
    File(String),
    Link(String, String),
}

/// A relative path of 1-3 names from a small alphabet, so paths collide and nest.
fn rel() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(NAMES.to_vec()), 1..4).prop_map(|v| v.join("/"))
}

/// Symlink targets: relative with `..`, absolute inside and outside, magic `/proc` entries,
/// `/`, dangling.
fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        rel(),
        rel().prop_map(|r| format!("../{r}")),
        rel().prop_map(|r| format!("../../{r}")),
        rel().prop_map(|r| format!("@WS/{r}")),
        rel().prop_map(|r| format!("@OUT/{r}")),
        Just("@OUT".to_owned()),
        Just("/".to_owned()),
        Just("/proc/self/environ".to_owned()),
        Just("/proc/self/cwd".to_owned()),
        Just("../outside/secret.txt".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
    ]
}

fn node() -> impl Strategy<Value = Node> {
    prop_oneof![
        rel().prop_map(Node::Dir),
        rel().prop_map(Node::File),
        (rel(), target()).prop_map(|(r, t)| Node::Link(r, t)),
    ]
}

/// Paths as the model might send them.
fn input_path() -> impl Strategy<Value = String> {
    prop_oneof![
        rel(),
        rel().prop_map(|r| format!("{r}/..")),
        rel().prop_map(|r| format!("../{r}")),
        rel().prop_map(|r| format!("a/../../{r}")),
        rel().prop_map(|r| format!("@WS/{r}")),
        rel().prop_map(|r| format!("@OUT/{r}")),
        rel().prop_map(|r| format!("./{r}/./x")),
    ]
}

fn normpath(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

fn expand(s: &str, fx: &Fixture) -> String {
    s.replace("@WS", &fx.ws.display().to_string())
        .replace("@OUT", &fx.outside.display().to_string())
}

fn build(fx: &Fixture, nodes: &[Node]) {
    std::fs::create_dir_all(fx.outside.join("a/b")).unwrap();
    std::fs::write(fx.outside.join("a/secret.txt"), SECRET).unwrap();
    for node in nodes {
        let (Node::Dir(r) | Node::File(r) | Node::Link(r, _)) = node;
        // The tree builder itself must not write through a link it planted earlier.
        let mut prefix = fx.ws.clone();
        let through_link = Path::new(r).components().any(|c| {
            prefix.push(c);
            std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink())
        });
        if through_link {
            continue;
        }
        let _ = match node {
            Node::Dir(r) => std::fs::create_dir_all(fx.path(r)),
            Node::File(r) if fx.path(r).parent().is_some_and(|p| !p.exists()) => continue,
            Node::File(r) => std::fs::write(fx.path(r), "inside"),
            Node::Link(r, t) => std::os::unix::fs::symlink(expand(t, fx), fx.path(r)),
        };
    }
}

/// Every file under `dir` (not following links) with its content, to detect any change.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in walk(dir) {
        let meta = std::fs::symlink_metadata(&entry).unwrap();
        let content = if meta.is_file() {
            std::fs::read(&entry).unwrap()
        } else {
            Vec::new()
        };
        out.insert(entry, content);
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Whatever the tree and the path: a successful read returns only inside content, a write
    /// never changes anything outside, and whatever the resolver accepts lies under the root
    /// by the kernel's own `realpath`.
    #[test]
    fn file_tools_stay_inside(nodes in prop::collection::vec(node(), 0..12), paths in prop::collection::vec(input_path(), 1..6)) {
        let fx = Fixture::new();
        build(&fx, &nodes);
        let outside_before = snapshot(&fx.root.join("outside"));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let roots = Roots::new(&fx.ws, &[], &[]).unwrap();
        for p in &paths {
            let p = expand(p, &fx);
            if let Ok(resolved) = roots.resolve(&p) {
                prop_assert!(resolved.path.starts_with(&fx.ws), "{p} -> {}", resolved.path.display());
                // The reference collapses `..` lexically first, then follows links: the kernel's
                // `realpath` of the lexically normalised path is the oracle.
                if let Ok(real) = std::fs::canonicalize(normpath(&fx.ws.join(&p))) {
                    prop_assert!(real.starts_with(&fx.ws), "kernel says {p} is {}", real.display());
                    prop_assert_eq!(&real, &resolved.path);
                }
            }
            let out = rt.block_on(fx.call("read", json!({"file_path": p})));
            let shown = fx.shown(&out);
            prop_assert!(!shown.contains(SECRET), "read {p} leaked");
            if !out.is_error {
                // Files only ever hold what the tree or an earlier call of this case put there.
                prop_assert!(["inside", "written", "edited", "(no output)"].contains(&shown.as_str()), "{p}: {shown}");
            }
            let _ = rt.block_on(fx.call("write", json!({"file_path": p, "content": "written"})));
            let _ = rt.block_on(fx.call("edit", json!({"file_path": p, "old_string": "inside", "new_string": "edited"})));
            prop_assert_eq!(&snapshot(&fx.root.join("outside")), &outside_before, "{} changed something outside", p);
        }
        // Nothing appeared beside the workdir either.
        let mut top: Vec<_> = std::fs::read_dir(&fx.root).unwrap().map(|e| e.unwrap().file_name()).collect();
        top.sort();
        prop_assert_eq!(top, vec!["outside", "ws"]);
    }

    /// `edit` agrees with a model: exactly-once replacement unless `replace_all`; every refusal
    /// leaves the file byte-for-byte unchanged.
    #[test]
    fn edit_matches_the_model(
        content in "[ab\n]{0,40}",
        old in "[ab\n]{0,3}",
        new in "[abc\n]{0,3}",
        replace_all in any::<bool>(),
    ) {
        let fx = Fixture::new();
        fx.write("f.txt", &content);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let out = rt.block_on(fx.call("edit", json!({"file_path": "f.txt", "old_string": old, "new_string": new, "replace_all": replace_all})));
        let after = std::fs::read_to_string(fx.path("f.txt")).unwrap();
        let count = if old.is_empty() { 0 } else { content.matches(old.as_str()).count() };
        if old.is_empty() || count == 0 || (count > 1 && !replace_all) {
            prop_assert!(out.is_error);
            prop_assert_eq!(after, content);
        } else {
            prop_assert!(!out.is_error, "{:?}", out);
            let expected = if replace_all { content.replace(old.as_str(), &new) } else { content.replacen(old.as_str(), &new, 1) };
            prop_assert_eq!(after, expected);
            prop_assert_eq!(text(&out), format!("edited f.txt ({} replacement(s))", if replace_all { count } else { 1 }));
        }
    }
}
