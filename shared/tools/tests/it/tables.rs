//! One table test per tool: the exact text the model reads, snapshotted with `insta`
//! (PROTOCOL.md §8.3 reference outputs).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::common::*;

fn case(name: &'static str, tool: &'static str, input: serde_json::Value) -> Case {
    Case { name, tool, input }
}

fn set_mtime(fx: &Fixture, rel: &str, secs_ago: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    std::fs::File::options()
        .write(true)
        .open(fx.path(rel))
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[tokio::test]
async fn bash_reference_outputs() {
    let fx = Fixture::with(|c| c.limits.bash_output_bytes = 64);
    std::fs::create_dir(fx.path("sub")).unwrap();
    let cases = vec![
        case("echo", "bash", json!({"command": "echo hello"})),
        case(
            "stdout and stderr interleaved",
            "bash",
            json!({"command": "echo out; echo err >&2; echo out2"}),
        ),
        case("empty output", "bash", json!({"command": "true"})),
        case(
            "non-zero exit carries the output",
            "bash",
            json!({"command": "echo failing; false"}),
        ),
        case(
            "non-zero exit without output",
            "bash",
            json!({"command": "exit_with() { return $1; }; exit_with 7"}),
        ),
        case(
            "ansi escapes stripped",
            "bash",
            json!({"command": "printf '\\033[1;31mred\\033[0m plain\\n'"}),
        ),
        case(
            "trailing newlines trimmed",
            "bash",
            json!({"command": "printf 'a\\n\\nb\\n\\n\\n'"}),
        ),
        case("cwd persists (cd)", "bash", json!({"command": "cd sub"})),
        case("cwd persists (pwd)", "bash", json!({"command": "pwd"})),
        case(
            "exports persist (export)",
            "bash",
            json!({"command": "export GREETING=hi"}),
        ),
        case(
            "exports persist (echo)",
            "bash",
            json!({"command": "echo $GREETING"}),
        ),
        case(
            "stdin is /dev/null",
            "bash",
            json!({"command": "read line; echo \"read exit=$?\""}),
        ),
        case(
            "output capped to the tail",
            "bash",
            json!({"command": "for i in $(seq 1 40); do echo line$i; done"}),
        ),
        case(
            "invalid utf-8 shown lossily",
            "bash",
            json!({"command": "printf 'ok \\xff\\xfe end\\n'"}),
        ),
        case(
            "syntax error is a result",
            "bash",
            json!({"command": "echo 'unclosed"}),
        ),
        case(
            "shell still fine after it",
            "bash",
            json!({"command": "echo still here"}),
        ),
        case(
            "background child does not hold the call",
            "bash",
            json!({"command": "sleep 1000 & echo started"}),
        ),
        case(
            "timeout",
            "bash",
            json!({"command": "echo before; sleep 30", "timeout_ms": 300}),
        ),
        case(
            "state reset after timeout",
            "bash",
            json!({"command": "pwd; echo \"[$GREETING]\""}),
        ),
        case("restart", "bash", json!({"restart": true})),
        case("command required", "bash", json!({})),
        case("empty command", "bash", json!({"command": ""})),
        case("invalid input", "bash", json!({"command": 5})),
        case(
            "shell exits",
            "bash",
            json!({"command": "echo bye; exit 4"}),
        ),
        case(
            "new shell after exit",
            "bash",
            json!({"command": "echo back"}),
        ),
    ];
    let t = transcript(&fx, cases).await;
    fx.tools.shutdown().await;
    insta::assert_snapshot!(t);
}

#[tokio::test]
async fn read_reference_outputs() {
    let fx = Fixture::new();
    fx.write("notes.txt", "one\ntwo\nthree\nfour\n");
    fx.write("noeol.txt", "alpha\nbeta");
    fx.write("latin1.txt", b"caf\xe9\n");
    fx.write("big.txt", "x".repeat(256 * 1024 + 1));
    fx.write("img.PNG", b"\x89PNG\r\n\x1a\nfake");
    fx.write("doc.pdf", b"%PDF-1.4 tiny");
    std::fs::create_dir(fx.path("dir")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fx.path("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_bits_truncate(0o644),
        0,
    )
    .unwrap();
    let cases = vec![
        case("whole file", "read", json!({"file_path": "notes.txt"})),
        case(
            "view_range",
            "read",
            json!({"file_path": "notes.txt", "view_range": [2, 3]}),
        ),
        case(
            "view_range to EOF (0)",
            "read",
            json!({"file_path": "notes.txt", "view_range": [3, 0]}),
        ),
        case(
            "view_range to EOF (-1)",
            "read",
            json!({"file_path": "notes.txt", "view_range": [2, -1]}),
        ),
        case(
            "view_range start 0",
            "read",
            json!({"file_path": "notes.txt", "view_range": [0, 1]}),
        ),
        case(
            "view_range past the end",
            "read",
            json!({"file_path": "notes.txt", "view_range": [9, 12]}),
        ),
        case(
            "view_range inverted",
            "read",
            json!({"file_path": "notes.txt", "view_range": [3, 2]}),
        ),
        case(
            "no final newline",
            "read",
            json!({"file_path": "noeol.txt", "view_range": [2, 2]}),
        ),
        case(
            "absolute path inside",
            "read",
            json!({"file_path": fx.path("noeol.txt")}),
        ),
        case("missing", "read", json!({"file_path": "nope.txt"})),
        case("missing parent", "read", json!({"file_path": "nope/x.txt"})),
        case("directory", "read", json!({"file_path": "dir"})),
        case("workdir itself", "read", json!({"file_path": "."})),
        case("fifo", "read", json!({"file_path": "fifo"})),
        case("not utf-8", "read", json!({"file_path": "latin1.txt"})),
        case("over the cap", "read", json!({"file_path": "big.txt"})),
        case(
            "over the cap, one line too long",
            "read",
            json!({"file_path": "big.txt", "view_range": [1, 1]}),
        ),
        case(
            "over the cap, range too long",
            "read",
            json!({"file_path": "big.txt", "view_range": [1, 5]}),
        ),
        case("image", "read", json!({"file_path": "img.PNG"})),
        case("pdf", "read", json!({"file_path": "doc.pdf"})),
        case(
            "view_range on an image",
            "read",
            json!({"file_path": "img.PNG", "view_range": [1, 2]}),
        ),
        case(
            "outside (relative)",
            "read",
            json!({"file_path": "../outside/secret.txt"}),
        ),
        case(
            "outside (absolute)",
            "read",
            json!({"file_path": "/etc/passwd"}),
        ),
        case(
            "invalid input: missing field",
            "read",
            json!({"path": "notes.txt"}),
        ),
        case(
            "invalid input: view_range shape",
            "read",
            json!({"file_path": "notes.txt", "view_range": [1]}),
        ),
    ];
    insta::assert_snapshot!(transcript(&fx, cases).await);
}

#[tokio::test]
async fn write_reference_outputs() {
    let fx = Fixture::with(|c| c.read_only_roots = vec!["memory/ro".into()]);
    std::fs::create_dir_all(fx.path("memory/ro")).unwrap();
    fx.write("file.txt", "old");
    std::fs::create_dir(fx.path("adir")).unwrap();
    let cases = vec![
        case(
            "new file",
            "write",
            json!({"file_path": "new.txt", "content": "hello\n"}),
        ),
        case(
            "bytes, not characters",
            "write",
            json!({"file_path": "utf8.txt", "content": "héllo ✓"}),
        ),
        case(
            "parents created",
            "write",
            json!({"file_path": "a/b/c/deep.txt", "content": "x"}),
        ),
        case(
            "overwrite",
            "write",
            json!({"file_path": "file.txt", "content": "new"}),
        ),
        case(
            "empty content",
            "write",
            json!({"file_path": "empty.txt", "content": ""}),
        ),
        case("read back", "read", json!({"file_path": "a/b/c/deep.txt"})),
        case(
            "read-only root",
            "write",
            json!({"file_path": "memory/ro/x.md", "content": "x"}),
        ),
        case(
            "directory target",
            "write",
            json!({"file_path": "adir", "content": "x"}),
        ),
        case(
            "through a file",
            "write",
            json!({"file_path": "file.txt/x", "content": "x"}),
        ),
        case(
            "outside",
            "write",
            json!({"file_path": "../outside/new.txt", "content": "x"}),
        ),
        case("invalid input", "write", json!({"file_path": "x.txt"})),
    ];
    insta::assert_snapshot!(transcript(&fx, cases).await);
    assert_eq!(std::fs::read_to_string(fx.path("file.txt")).unwrap(), "new");
    assert!(!exists(&fx.outside.join("new.txt")));
    assert!(!exists(&fx.path("memory/ro/x.md")));
}

#[tokio::test]
async fn edit_reference_outputs() {
    let fx = Fixture::with(|c| c.read_only_roots = vec![c.workdir.join("ro")]);
    fx.write("code.py", "def f():\n    return 1\n\nx = f()\ny = f()\n");
    fx.write("crlf.txt", "first line\r\nsecond line\r\n");
    fx.write("bin.dat", b"\x00\xff\x00");
    fx.write("ro/locked.txt", "locked");
    let cases = vec![
        case(
            "single replacement",
            "edit",
            json!({"file_path": "code.py", "old_string": "return 1", "new_string": "return 2"}),
        ),
        case(
            "not found",
            "edit",
            json!({"file_path": "code.py", "old_string": "return 3", "new_string": "x"}),
        ),
        case(
            "found twice",
            "edit",
            json!({"file_path": "code.py", "old_string": "f()\n", "new_string": "g()\n"}),
        ),
        case(
            "replace_all",
            "edit",
            json!({"file_path": "code.py", "old_string": "f()", "new_string": "g()", "replace_all": true}),
        ),
        case("result", "read", json!({"file_path": "code.py"})),
        case(
            "empty old_string",
            "edit",
            json!({"file_path": "code.py", "old_string": "", "new_string": "x"}),
        ),
        case(
            "crlf file edited with lf strings",
            "edit",
            json!({"file_path": "crlf.txt", "old_string": "first line\nsecond", "new_string": "1st line\n2nd"}),
        ),
        case(
            "missing file",
            "edit",
            json!({"file_path": "nope.py", "old_string": "a", "new_string": "b"}),
        ),
        case(
            "binary file",
            "edit",
            json!({"file_path": "bin.dat", "old_string": "a", "new_string": "b"}),
        ),
        case(
            "read-only root",
            "edit",
            json!({"file_path": "ro/locked.txt", "old_string": "locked", "new_string": "open"}),
        ),
        case(
            "outside",
            "edit",
            json!({"file_path": "../outside/secret.txt", "old_string": "outside", "new_string": "x"}),
        ),
        case(
            "invalid input",
            "edit",
            json!({"file_path": "code.py", "old_string": "a"}),
        ),
    ];
    insta::assert_snapshot!(transcript(&fx, cases).await);
    assert_eq!(
        std::fs::read(fx.path("crlf.txt")).unwrap(),
        b"1st line\r\n2nd line\r\n"
    );
    assert_eq!(
        std::fs::read_to_string(fx.path("ro/locked.txt")).unwrap(),
        "locked"
    );
}

#[tokio::test]
async fn glob_reference_outputs() {
    let fx = Fixture::with(|c| c.limits.glob_results = 4);
    for (i, rel) in [
        "a.txt",
        "b.txt",
        "src/main.rs",
        "src/lib.rs",
        "src/deep/mod.rs",
        ".hidden.txt",
        "many/1.md",
        "many/2.md",
        "many/3.md",
        "many/4.md",
        "many/5.md",
    ]
    .iter()
    .enumerate()
    {
        fx.write(rel, "x");
        set_mtime(&fx, rel, 1000 - i as u64 * 10);
    }
    std::os::unix::fs::symlink("/etc", fx.path("etc-link")).unwrap();
    std::os::unix::fs::symlink("a.txt", fx.path("a-link.txt")).unwrap();
    set_mtime(&fx, "a-link.txt", 5000);
    let cases = vec![
        case("top level", "glob", json!({"pattern": "*.txt"})),
        case("doublestar", "glob", json!({"pattern": "**/*.rs"})),
        case(
            "with path",
            "glob",
            json!({"pattern": "*.rs", "path": "src"}),
        ),
        case("braces", "glob", json!({"pattern": "src/{main,lib}.rs"})),
        case(
            "directories only for a trailing **",
            "glob",
            json!({"pattern": "src/**"}),
        ),
        case(
            "capped, newest first",
            "glob",
            json!({"pattern": "many/*.md"}),
        ),
        case(
            "symlink out is not followed",
            "glob",
            json!({"pattern": "etc-link/*"}),
        ),
        case("no matches", "glob", json!({"pattern": "*.zig"})),
        case("absolute pattern", "glob", json!({"pattern": "/etc/*"})),
        case("dotdot pattern", "glob", json!({"pattern": "../outside/*"})),
        case("invalid pattern", "glob", json!({"pattern": "a[.txt"})),
        case(
            "path outside",
            "glob",
            json!({"pattern": "*", "path": "../outside"}),
        ),
        case("invalid input", "glob", json!({"pattern": ["*"]})),
    ];
    insta::assert_snapshot!(transcript(&fx, cases).await);
}

#[tokio::test]
async fn grep_reference_outputs() {
    let fx = Fixture::with(|c| c.limits.grep_output_bytes = 400);
    fx.write("src/main.rs", "fn main() {\n    println!(\"hello\");\n}\n");
    fx.write("src/lib.rs", "pub fn hello_world() {}\r\n");
    fx.write("notes.md", "Hello there\nhello again\n");
    fx.write(".git/config", "hello from git\n");
    fx.write("node_modules/x/index.js", "hello from npm\n");
    fx.write("bin.dat", b"hello\x00binary\n");
    fx.write(
        "long.txt",
        format!("hello {}\nhello short\n", "y".repeat(2000)),
    );
    fx.write("latin1.txt", b"hello caf\xe9\n");
    fx.write("many/m.txt", "needle\n".repeat(100));
    std::os::unix::fs::symlink(fx.outside.join("secret.txt"), fx.path("secret-link")).unwrap();
    let cases = vec![
        case(
            "literal",
            "grep",
            json!({"pattern": "hello", "path": "src"}),
        ),
        case(
            "regex",
            "grep",
            json!({"pattern": "^[Hh]ello\\s+\\w+$", "path": "notes.md"}),
        ),
        case(
            "whole workdir skips .git, node_modules, binary, long lines, symlinks",
            "grep",
            json!({"pattern": "hello"}),
        ),
        case(
            "output cap",
            "grep",
            json!({"pattern": "needle", "path": "many"}),
        ),
        case("no matches", "grep", json!({"pattern": "zebra"})),
        case("invalid regex", "grep", json!({"pattern": "(unclosed"})),
        case(
            "backreferences are not supported",
            "grep",
            json!({"pattern": "(a)\\1"}),
        ),
        case(
            "compile bomb",
            "grep",
            json!({"pattern": "(a{1000}){1000}"}),
        ),
        case(
            "path outside",
            "grep",
            json!({"pattern": "secret", "path": "../outside"}),
        ),
        case(
            "symlink to outside",
            "grep",
            json!({"pattern": "secret", "path": "secret-link"}),
        ),
        case(
            "missing path",
            "grep",
            json!({"pattern": "x", "path": "nope"}),
        ),
        case("invalid input", "grep", json!({})),
    ];
    insta::assert_snapshot!(transcript(&fx, cases).await);
}

#[tokio::test]
async fn write_keeps_the_mode_of_an_existing_file() {
    let fx = Fixture::new();
    fx.write("run.sh", "#!/bin/sh\n");
    std::fs::set_permissions(fx.path("run.sh"), std::fs::Permissions::from_mode(0o751)).unwrap();
    let out = fx
        .call(
            "write",
            json!({"file_path": "run.sh", "content": "#!/bin/sh\necho hi\n"}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    let mode = std::fs::metadata(fx.path("run.sh"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o751);
    let out = fx
        .call(
            "edit",
            json!({"file_path": "run.sh", "old_string": "hi", "new_string": "ho"}),
        )
        .await;
    assert!(!out.is_error, "{out:?}");
    let mode = std::fs::metadata(fx.path("run.sh"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o751);
    // No temporary file is left next to it.
    let names: Vec<_> = std::fs::read_dir(&fx.ws)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["run.sh"]);
}
