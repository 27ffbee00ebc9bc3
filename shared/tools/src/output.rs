//! Turning raw bytes into the text the model reads: ANSI stripping, lossy UTF-8 with a visible
//! note, tail truncation on a character boundary, and the reference's wording helpers.

use std::io;

/// Prefix of a bash result whose output was cut to its last bytes (reference text).
pub const TRUNCATED_PREFIX: &str = "[output truncated]\n";

/// Appended when output had to be decoded lossily (CATALOGUE T13): the model must know that
/// `\u{fffd}` characters are ours, not the program's.
pub const LOSSY_NOTE: &str = "[output was not valid UTF-8; shown lossily]";

/// Removes CSI escape sequences: the reference's `\x1b\[[0-9;?]*[ -/]*[@-~]`, byte for byte. An
/// incomplete sequence is left as it is, as the regular expression would.
pub fn strip_ansi(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == 0x1b && input.get(i + 1) == Some(&b'[') {
            let mut j = i + 2;
            while j < input.len()
                && (input[j].is_ascii_digit() || input[j] == b';' || input[j] == b'?')
            {
                j += 1;
            }
            while j < input.len() && (0x20..=0x2f).contains(&input[j]) {
                j += 1;
            }
            if j < input.len() && (0x40..=0x7e).contains(&input[j]) {
                i = j + 1;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// Decodes `bytes` as UTF-8, replacing invalid sequences; `true` when something was replaced.
pub fn lossy(bytes: &[u8]) -> (String, bool) {
    match String::from_utf8_lossy(bytes) {
        std::borrow::Cow::Borrowed(s) => (s.to_owned(), false),
        std::borrow::Cow::Owned(s) => (s, true),
    }
}

/// Skips the UTF-8 continuation bytes a cut left at the start of `bytes`, so a tail that began
/// mid-character does not start with a replacement character (at most 3 bytes are skipped).
pub fn from_char_boundary(bytes: &[u8]) -> &[u8] {
    let skip = bytes
        .iter()
        .take(3)
        .take_while(|&&b| (0x80..0xc0).contains(&b))
        .count();
    &bytes[skip..]
}

/// The reference's `str.rstrip("\n")`.
pub fn trim_trailing_newlines(s: &mut String) {
    let kept = s.trim_end_matches('\n').len();
    s.truncate(kept);
}

/// Process output as the model reads it (the reference's shaping): the last `limit` bytes
/// (cut on a character boundary, prefixed with [`TRUNCATED_PREFIX`] when anything was cut or
/// `already_truncated` says bytes were dropped while reading), ANSI escapes stripped, trailing
/// newlines trimmed, and [`LOSSY_NOTE`] appended when the bytes were not UTF-8. Returns the text
/// and whether it was truncated. Shared by `bash` and custom tools so both read the same.
pub fn shape_tail(buf: &[u8], limit: usize, already_truncated: bool) -> (String, bool) {
    let mut bytes = buf;
    let mut truncated = already_truncated;
    if bytes.len() > limit {
        bytes = &bytes[bytes.len() - limit..];
        truncated = true;
    }
    if truncated {
        bytes = from_char_boundary(bytes);
    }
    let (mut text, was_lossy) = lossy(&strip_ansi(bytes));
    trim_trailing_newlines(&mut text);
    if truncated {
        text.insert_str(0, TRUNCATED_PREFIX);
    }
    if was_lossy {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(LOSSY_NOTE);
    }
    (text, truncated)
}

/// Python's `repr()` of a string, as the reference puts paths in its error messages
/// (`path '../x' is outside ...`). Quotes with `'` unless the string contains `'` and no `"`.
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// The reference's normalised reason for a filesystem error (`_fs_reason`): the same words on
/// every platform and never a host path.
pub fn fs_reason(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::ENOENT) => "no such file or directory".into(),
        Some(libc::ENOTDIR) => "not a directory".into(),
        Some(libc::EISDIR) => "is a directory".into(),
        Some(libc::EACCES | libc::EPERM) => "permission denied".into(),
        Some(libc::EEXIST) => "file already exists".into(),
        Some(libc::ELOOP) => "too many levels of symbolic links".into(),
        _ => {
            // `strerror` wording, lowercased, without std's " (os error N)" suffix.
            let text = err.to_string();
            let cut = text.find(" (os error").unwrap_or(text.len());
            text[..cut].to_lowercase()
        }
    }
}

/// Appends `note` (a sentence about a limit the call hit) to the text the model reads, on its
/// own line; an empty result (`(no output)`) becomes the note alone.
pub fn append_note(out: &mut hands_protocol::toolset::ToolOutput, note: &str) {
    use hands_protocol::toolset::{ContentBlock, NO_OUTPUT};
    match out.content.last_mut() {
        Some(ContentBlock::Text { text }) if text == NO_OUTPUT => *text = note.to_owned(),
        Some(ContentBlock::Text { text }) => {
            text.push('\n');
            text.push_str(note);
        }
        _ => out.content.push(ContentBlock::Text {
            text: note.to_owned(),
        }),
    }
}

/// Under `RLIMIT_NPROC` (no pids cgroup, so no kernel counter of refused forks): the note for
/// a call that failed (an error result: a non-zero exit, a timeout) whose text shows a refused
/// process or thread start (see [`hands_sandbox::nproc_note`]). One rule for the shell and
/// custom tools, which add it where the pids cgroup's note goes: before the full-disk note.
pub fn nproc_note(
    rlimits: &hands_sandbox::Rlimits,
    out: &hands_protocol::toolset::ToolOutput,
) -> Option<String> {
    use hands_protocol::toolset::ContentBlock;
    if !out.is_error {
        return None;
    }
    out.content.iter().find_map(|block| match block {
        ContentBlock::Text { text } => rlimits.nproc_note(text),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_csi_sequences_only() {
        assert_eq!(strip_ansi(b"\x1b[1;31mred\x1b[0m plain"), b"red plain");
        assert_eq!(strip_ansi(b"\x1b[?25lcursor\x1b[2K"), b"cursor");
        // Not CSI, or incomplete: kept, as the reference's regex keeps them.
        assert_eq!(strip_ansi(b"\x1b]0;title\x07x"), b"\x1b]0;title\x07x");
        assert_eq!(strip_ansi(b"tail \x1b[12"), b"tail \x1b[12");
        assert_eq!(strip_ansi(b"\x1b[\xff"), b"\x1b[\xff");
    }

    #[test]
    fn cut_never_starts_mid_character() {
        let s = "héllo".as_bytes();
        assert_eq!(from_char_boundary(&s[2..]), "llo".as_bytes());
        assert_eq!(
            from_char_boundary(&[0x80, 0x80, 0x80, 0x80, b'a']),
            &[0x80, b'a']
        );
    }

    #[test]
    fn repr_matches_python() {
        assert_eq!(py_repr("../x"), "'../x'");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(py_repr("a'b\"c"), "'a\\'b\"c'");
        assert_eq!(py_repr("a\nb\\"), "'a\\nb\\\\'");
        assert_eq!(py_repr("\u{1}"), "'\\x01'");
    }

    #[test]
    fn lossy_reports_replacement() {
        assert_eq!(lossy(b"ok"), ("ok".into(), false));
        assert_eq!(lossy(b"\xff\xfe"), ("\u{fffd}\u{fffd}".into(), true));
    }

    #[test]
    fn the_nproc_note_is_for_failed_calls_under_rlimit_nproc_only() {
        use hands_protocol::toolset::ToolOutput;
        let refused = "bash: fork: retry: Resource temporarily unavailable";
        let nproc = hands_sandbox::Rlimits {
            nproc: Some(1064),
            ..hands_sandbox::Rlimits::default()
        };
        let note = nproc_note(&nproc, &ToolOutput::error(refused)).unwrap();
        assert!(note.contains("limit of 1064 processes"), "{note}");
        assert_eq!(nproc_note(&nproc, &ToolOutput::ok(refused)), None);
        assert_eq!(
            nproc_note(
                &hands_sandbox::Rlimits::default(),
                &ToolOutput::error(refused)
            ),
            None
        );
    }
}
