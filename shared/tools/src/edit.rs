//! `edit`: replace `old_string` by `new_string`, exactly once unless `replace_all`.
//!
//! Every refusal (not found, found several times, empty `old_string`, not UTF-8, too large)
//! happens before anything is written, so the file stays byte-for-byte as it was (T21, T22).
//! The write is the same atomic replace as `write`, keeping the permission bits (T23).
//! A file whose line endings are all CRLF stays CRLF: the model usually sends `\n`, so bare
//! `\n` in `old_string`/`new_string` are read as `\r\n` for such a file.

use std::borrow::Cow;
use std::io::Read;
use std::os::fd::AsFd;

use hands_protocol::toolset::{EditInput, ToolOutput};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::Session;
use crate::output::fs_reason;
use crate::write::replace_file;

/// Whether the text has line endings and every one is CRLF.
fn is_crlf_only(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut lines = memchr::memchr_iter(b'\n', bytes).peekable();
    lines.peek().is_some() && lines.all(|i| i > 0 && bytes[i - 1] == b'\r')
}

/// `text` with the occurrences at `at` (non-overlapping, ascending) of a string `old_len`
/// bytes long replaced by `new`.
fn splice(text: &[u8], at: &[usize], old_len: usize, new: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() - at.len() * old_len + at.len() * new.len());
    let mut last = 0;
    for &i in at {
        out.extend_from_slice(&text[last..i]);
        out.extend_from_slice(new);
        last = i + old_len;
    }
    out.extend_from_slice(&text[last..]);
    out
}

fn to_crlf(s: &str) -> Cow<'_, str> {
    if s.contains('\n') && !s.contains("\r\n") {
        Cow::Owned(s.replace('\n', "\r\n"))
    } else {
        Cow::Borrowed(s)
    }
}

pub(crate) fn run(session: &Session, input: EditInput) -> ToolOutput {
    let p = &input.file_path;
    let err = |msg: String| ToolOutput::error(format!("edit: {msg}"));
    let fs_err = |e: &std::io::Error| ToolOutput::error(format!("edit: {p}: {}", fs_reason(e)));
    let resolved = match session.roots.resolve(p) {
        Ok(r) => r,
        Err(e) => return err(e.to_string()),
    };
    if let Some(root) = session.roots.read_only_root_of(&resolved.path) {
        return err(format!("{p} is inside read-only directory {root}"));
    }
    if input.old_string.is_empty() {
        return err("old_string must not be empty".into());
    }
    let Some(leaf) = resolved.leaf() else {
        let errno = if resolved.rest.is_empty() {
            libc::EISDIR
        } else {
            libc::ENOENT
        };
        return fs_err(&std::io::Error::from_raw_os_error(errno));
    };
    let dir = resolved.dir.as_fd();
    let st = match rustix::fs::statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(e) => return fs_err(&e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return err(format!("{p}: not a regular file"));
    }
    let limit = session.limits.max_file_bytes;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > limit {
        return err(format!(
            "{p} is {size} bytes, exceeds {limit}-byte limit. The edit tool loads the whole file and cannot modify a file this large."
        ));
    }
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let bytes = match rustix::fs::openat(dir, leaf, flags, Mode::empty())
        .map_err(std::io::Error::from)
        .and_then(|fd| {
            let file = std::fs::File::from(fd);
            if !file.metadata()?.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            // Bounded even if the file grew since the stat.
            file.take(limit + 1).read_to_end(&mut buf)?;
            Ok(buf)
        }) {
        Ok(b) if b.len() as u64 > limit => {
            return err(format!(
                "{p} is {} bytes, exceeds {limit}-byte limit. The edit tool loads the whole file and cannot modify a file this large.",
                b.len()
            ));
        }
        Ok(b) => b,
        Err(e) => return fs_err(&e),
    };
    if session.seen.check(&resolved.path, &bytes).is_err() {
        return err(format!(
            "{p} changed since it was last read (modified outside the file tools); read it again before editing"
        ));
    }
    let Ok(text) = String::from_utf8(bytes) else {
        return err(format!(
            "{p}: not valid UTF-8 text (cannot edit binary files)"
        ));
    };
    let crlf = is_crlf_only(&text);
    let (old, new) = if crlf {
        (to_crlf(&input.old_string), to_crlf(&input.new_string))
    } else {
        (
            Cow::Borrowed(input.old_string.as_str()),
            Cow::Borrowed(input.new_string.as_str()),
        )
    };
    // One search (memchr's SIMD substring search) finds every occurrence, non-overlapping as
    // `str::matches` counts them; the replacement splices at those positions.
    let at: Vec<usize> = memchr::memmem::find_iter(text.as_bytes(), old.as_bytes()).collect();
    let count = at.len();
    if count == 0 {
        return err(format!("old_string not found in {p}"));
    }
    let replace_all = input.replace_all.unwrap_or(false);
    if !replace_all && count > 1 {
        return err(format!(
            "old_string appears {count} times in {p} (must be unique)"
        ));
    }
    let take = if replace_all { count } else { 1 };
    let updated = splice(text.as_bytes(), &at[..take], old.len(), new.as_bytes());
    let mode = st.st_mode & 0o777;
    if let Err(e) = replace_file(dir, leaf, &updated, Some(mode)) {
        return fs_err(&e);
    }
    session.seen.record(&resolved.path, &updated);
    let n = if replace_all { count } else { 1 };
    ToolOutput::ok(format!("edited {p} ({n} replacement(s))"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_only_means_every_line_ending_is_crlf() {
        for (text, crlf) in [
            ("", false),
            ("no ending", false),
            ("\r\n", true),
            ("a\r\nb\r\nc", true),
            ("\n", false),
            ("a\r\nb\n", false),
            ("\r", false),
            ("\r\r\n\n", false),
        ] {
            assert_eq!(is_crlf_only(text), crlf, "{text:?}");
        }
    }

    #[test]
    fn splice_replaces_at_the_positions_given() {
        assert_eq!(splice(b"abcabc", &[0, 3], 1, b"XY"), b"XYbcXYbc");
        assert_eq!(splice(b"abcabc", &[3], 3, b""), b"abc");
        assert_eq!(splice(b"abc", &[], 1, b"z"), b"abc");
    }
}
