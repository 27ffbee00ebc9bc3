//! The generated repository the trace works on: 2,000 files in 40 directories, deterministic
//! content (so every run and both workers see the same tree), with known markers for grep.

use std::fmt::Write as _;
use std::path::Path;

pub const DIRS: usize = 40;
pub const FILES_PER_DIR: usize = 50;
const EXTS: [&str; 4] = ["rs", "py", "md", "txt"];
/// Written last: a tree with this stamp is complete and of this layout.
const STAMP: &str = ".hands-bench-repo-v1";

/// Relative path of file `f` in directory `d`.
pub fn file(d: usize, f: usize) -> String {
    format!("src/mod{d:02}/file{f:03}.{}", EXTS[f % EXTS.len()])
}

/// The first line of every file: what a `read` of it must show.
pub fn header(d: usize, f: usize) -> String {
    format!("// {} generated for the hands e2e benchmark", file(d, f))
}

/// Whether file `f` of directory `d` carries a `TODO` line (one file in 7).
pub fn has_todo(d: usize, f: usize) -> bool {
    (d * FILES_PER_DIR + f) % 7 == 3
}

/// The file holding `NEEDLE_<n>` (one per directory, so a whole-tree grep has one hit).
pub fn needle_file(n: usize) -> (usize, usize) {
    (n % DIRS, (n * 13) % FILES_PER_DIR)
}

fn content(d: usize, f: usize) -> String {
    let mut s = header(d, f);
    s.push('\n');
    // 4-10 KiB of code-like lines.
    let lines = 100 + (d * 31 + f * 17) % 150;
    for i in 0..lines {
        let _ = writeln!(
            s,
            "fn item_{d}_{f}_{i}(value: u32) -> u32 {{ value.wrapping_mul({}) ^ 0x{:04x} }}",
            i + 3,
            (d * 7919 + f * 104_729 + i) % 65_536
        );
        if i == lines / 2 && has_todo(d, f) {
            let _ = writeln!(s, "// TODO: revisit item_{d}_{f}_{i}");
        }
    }
    if needle_file(d) == (d, f) {
        let _ = writeln!(s, "const MARKER: &str = \"NEEDLE_{d}\";");
    }
    s
}

/// Creates the tree under `root` unless a complete one is already there; returns whether it
/// had to write it.
pub fn ensure(root: &Path) -> std::io::Result<bool> {
    if root.join(STAMP).exists() {
        return Ok(false);
    }
    for d in 0..DIRS {
        std::fs::create_dir_all(root.join(format!("src/mod{d:02}")))?;
        for f in 0..FILES_PER_DIR {
            std::fs::write(root.join(file(d, f)), content(d, f))?;
        }
    }
    std::fs::write(root.join(STAMP), "complete\n")?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_thousand_files_with_one_needle_per_directory() {
        assert_eq!(DIRS * FILES_PER_DIR, 2000);
        for n in 0..DIRS {
            let (d, f) = needle_file(n);
            assert_eq!(d, n);
            assert!(content(d, f).contains(&format!("NEEDLE_{n}\"")));
        }
        let c = content(3, 5);
        assert!(c.starts_with(&header(3, 5)));
        assert!((4000..12_000).contains(&c.len()), "{}", c.len());
    }
}
