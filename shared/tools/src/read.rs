//! `read`: a text file (optionally a line range), an image, or a PDF.
//!
//! Only regular files are read: the leaf is checked with `fstatat` before it is opened (so a
//! device is never opened at all), opened `O_NOFOLLOW | O_NONBLOCK` relative to its resolved
//! directory (so a FIFO swapped in cannot block and a symlink swapped in cannot be followed),
//! and checked again with `fstat` on the opened descriptor (T20). Reads are bounded by the caps
//! whatever size the file claims.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::path::Path;

use base64::Engine;
use hands_protocol::toolset::{ContentBlock, MediaSource, ReadInput, ToolOutput};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::Session;
use crate::output::fs_reason;

fn media_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        _ => return None,
    })
}

enum Failure {
    Text(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

pub(crate) fn run(session: &Session, input: ReadInput) -> ToolOutput {
    let p = &input.file_path;
    match read(session, &input) {
        Ok(out) => out,
        Err(Failure::Text(msg)) => ToolOutput::error(format!("read: {msg}")),
        Err(Failure::Io(e)) => ToolOutput::error(format!("read: {p}: {}", fs_reason(&e))),
    }
}

fn not_utf8(p: &str) -> Failure {
    Failure::Text(format!(
        "{p}: not valid UTF-8 text (binary files are only supported for image/PDF extensions)"
    ))
}

fn read(session: &Session, input: &ReadInput) -> Result<ToolOutput, Failure> {
    let p = &input.file_path;
    let resolved = session
        .roots
        .resolve(p)
        .map_err(|e| Failure::Text(e.to_string()))?;
    let not_regular = || Failure::Text(format!("{p}: not a regular file"));
    let Some(leaf) = resolved.leaf() else {
        return Err(if resolved.rest.is_empty() {
            not_regular()
        } else {
            Failure::Io(std::io::Error::from_raw_os_error(libc::ENOENT))
        });
    };
    let dir = resolved.dir.as_fd();
    let st =
        rustix::fs::statat(dir, leaf, AtFlags::SYMLINK_NOFOLLOW).map_err(std::io::Error::from)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(not_regular());
    }
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    let file = File::from(
        rustix::fs::openat(dir, leaf, flags, Mode::empty()).map_err(std::io::Error::from)?,
    );
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    let size = meta.len();
    let limits = &session.limits;

    if let Some(media) = media_type(&resolved.path) {
        if input.view_range.is_some() {
            return Err(Failure::Text(
                "view_range is not supported for image/PDF files".into(),
            ));
        }
        let limit = if media == "application/pdf" {
            limits.max_pdf_bytes
        } else {
            // The image cap is on the encoded form: n raw bytes become 4*ceil(n/3).
            (limits.max_image_base64_bytes / 4) * 3
        };
        let too_big = |size: u64| {
            Failure::Text(format!(
                "{p} is {size} bytes, exceeds {limit}-byte limit for image/PDF files."
            ))
        };
        if size > limit {
            return Err(too_big(size));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        file.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(too_big(bytes.len() as u64));
        }
        let source = MediaSource::Base64 {
            media_type: media.to_owned(),
            data: base64::engine::general_purpose::STANDARD.encode(&bytes),
        };
        let block = if media == "application/pdf" {
            ContentBlock::Document {
                source,
                title: None,
            }
        } else {
            ContentBlock::Image { source }
        };
        return Ok(ToolOutput::blocks(vec![block]));
    }

    let limit = limits.max_file_bytes;
    if size > limit {
        let Some((start, end)) = input.view_range else {
            return Err(Failure::Text(format!(
                "{p} is {size} bytes, exceeds {limit}-byte limit. Use the view_range parameter to read specific line ranges, e.g. view_range: [1, 500]."
            )));
        };
        return stream_range(file, p, start, end, limit).map(ToolOutput::ok);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        // The file grew past the cap since the stat: read the range from the start instead.
        if let Some((start, end)) = input.view_range {
            let file = File::from(
                rustix::fs::openat(dir, leaf, flags, Mode::empty())
                    .map_err(std::io::Error::from)?,
            );
            return stream_range(file, p, start, end, limit).map(ToolOutput::ok);
        }
        return Err(Failure::Text(format!(
            "{p} is {} bytes, exceeds {limit}-byte limit. Use the view_range parameter to read specific line ranges, e.g. view_range: [1, 500].",
            bytes.len()
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| not_utf8(p))?;
    // Whole-file reads only: the model saw every byte, so a later edit can be checked against
    // exactly this content.
    if input.view_range.is_none() {
        session.seen.record(&resolved.path, text.as_bytes());
    }
    let Some((start, end)) = input.view_range else {
        return Ok(ToolOutput::ok(text));
    };
    // The reference: `lines[max(0, start-1) : (end if end > 0 else len)]`, joined by `\n`.
    let lines: Vec<&str> = text.split('\n').collect();
    let from = usize::try_from(start.saturating_sub(1).max(0))
        .unwrap_or(usize::MAX)
        .min(lines.len());
    let to = if end > 0 {
        usize::try_from(end).unwrap_or(usize::MAX).min(lines.len())
    } else {
        lines.len()
    };
    let selected = if to > from {
        lines[from..to].join("\n")
    } else {
        String::new()
    };
    Ok(ToolOutput::ok(selected))
}

/// Lines `[start, end]` of a file larger than the cap, streamed, with at most `limit` bytes
/// kept (the reference's `read_line_range`).
fn stream_range(
    file: File,
    p: &str,
    start_line: i64,
    end_line: i64,
    limit: u64,
) -> Result<String, Failure> {
    let start = u64::try_from(start_line.saturating_sub(1)).unwrap_or(0);
    let end = if end_line > 0 {
        u64::try_from(end_line).unwrap_or(u64::MAX)
    } else {
        u64::MAX
    };
    if end <= start {
        return Ok(String::new());
    }
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut collected: Vec<u8> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut line_no: u64 = 0;
    // Each piece read is at most `limit + 2` bytes, so memory stays bounded even for a file
    // that is one enormous line.
    let piece = limit + 2;
    while line_no < end {
        line.clear();
        let n = (&mut reader).take(piece).read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let terminated = line.last() == Some(&b'\n');
        if line_no < start {
            if !terminated && n as u64 == piece {
                // A long line before the range: skip the rest of it piece by piece.
                loop {
                    line.clear();
                    let m = (&mut reader).take(piece).read_until(b'\n', &mut line)?;
                    if m == 0 || line.last() == Some(&b'\n') {
                        break;
                    }
                }
            }
        } else {
            let body = if terminated {
                &line[..line.len() - 1]
            } else {
                &line[..]
            };
            collected.extend_from_slice(body);
            if terminated && line_no + 1 < end {
                collected.push(b'\n');
            }
            if collected.len() as u64 > limit {
                return Err(Failure::Text(if end - start == 1 {
                    format!(
                        "line {} of {p} alone exceeds {limit}-byte limit. The read tool cannot return part of a line, so view_range cannot narrow this further.",
                        start + 1
                    )
                } else {
                    format!(
                        "view_range [{start_line}, {end_line}] of {p} exceeds {limit}-byte limit. Narrow the view_range to read a smaller portion."
                    )
                }));
            }
            if !terminated {
                break;
            }
        }
        line_no += 1;
    }
    String::from_utf8(collected).map_err(|_| not_utf8(p))
}
