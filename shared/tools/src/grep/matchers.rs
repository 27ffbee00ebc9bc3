//! The compiled pattern of one call: a matcher built without Unicode for content that is all
//! ASCII, where it matches exactly what the Unicode matcher matches, and the Unicode matcher,
//! compiled only when some content needs it.
//!
//! Why: compiling Unicode classes is most of a cached search's cost for a pattern like
//! `\w+_\d{4}` (Unicode `\w` alone is hundreds of ranges, and the engine determinises them),
//! while the same pattern without Unicode is a few byte classes. Source trees are mostly ASCII.
//!
//! Why it is exact: built without Unicode, `\w`, `\d`, `\s`, `\b` (and their negations and
//! halves) are the ASCII classes, `(?i)` folds ASCII letters only, and `.` and negated classes
//! match any byte but the excluded ones. The Unicode forms differ from these only on non-ASCII
//! code points (the Unicode classes restricted to ASCII are exactly the ASCII classes; simple
//! case folding adds only `K` (U+212A) to `k` and `ſ` (U+017F) to `s`; a negated class over
//! bytes and one over code points hold the same ASCII members), and a word boundary is decided
//! by the characters on either side, which in ASCII content are ASCII. So on content with no
//! byte above 0x7F the two matchers find the same matches, line by line. That holds only while
//! every character the *pattern* names is ASCII: `(?i)\x{212A}` matches `k` with Unicode and
//! only the bytes of `K` without; a literal or class bound above 0x7F (written or escaped)
//! and any `\p{..}`/`\P{..}` therefore make a pattern take the Unicode matcher for everything
//! (`ascii_equivalent`). Explicit `(?u)`/`(?-u)` groups mean the same in both builds. The
//! property test below checks all of this against random patterns and ASCII content.
//!
//! Limits: both matchers are built with the same size limits (T25). A pattern whose Unicode
//! program is over the limit while its ASCII one fits is answered for ASCII content and refused,
//! with the error the Unicode build gives, as soon as content that is not ASCII must be searched.

use std::sync::OnceLock;

use grep_regex::{RegexMatcher, RegexMatcherBuilder};
use regex_syntax::ast::{self, Ast, ClassSetItem};

use crate::Limits;

/// Builds the matcher `grep` searches with: the pattern's size limits and a `\n` line
/// terminator; with Unicode (the tool's meaning of the pattern) or without it.
///
/// The trigram filter reads the pattern with [`parser`], not with this builder: an option set
/// here that makes a pattern match more (`case_insensitive`, `case_smart`, `fixed_strings`,
/// `ignore_whitespace`, ...) must be set there too, or the filter rules out files that hold
/// real matches. The test `the_filter_reads_the_pattern_as_the_matcher_does` (`grams_props`)
/// fails when they diverge on case-insensitivity, fixed strings or ignored whitespace; an
/// option under which patterns that `parser` refuses build (`octal`) leaves their filter off.
pub(crate) fn build(
    pattern: &str,
    limits: &Limits,
    unicode: bool,
) -> Result<RegexMatcher, grep_regex::Error> {
    RegexMatcherBuilder::new()
        .size_limit(limits.regex_size_limit)
        .dfa_size_limit(limits.regex_dfa_size_limit)
        .line_terminator(Some(b'\n'))
        .unicode(unicode)
        .build(pattern)
}

/// The parser that reads a pattern as [`build`]'s matcher does (`grep-regex`'s defaults:
/// Unicode on, invalid UTF-8 allowed, its nesting limit), for the trigram query (`grams`).
/// `build` leaves every syntax option at its default; see there.
pub(crate) fn parser() -> regex_syntax::Parser {
    regex_syntax::ParserBuilder::new()
        .utf8(false)
        .nest_limit(250)
        .build()
}

/// Whether `pattern` built without Unicode matches what it matches with Unicode on every
/// ASCII haystack (module doc): every character it names is ASCII and it has no Unicode
/// class. A pattern that does not parse is not (the Unicode build reports the error).
pub(crate) fn ascii_equivalent(pattern: &str) -> bool {
    if !pattern.is_ascii() {
        return false;
    }
    // Parsed as `grep-regex` parses it (its default nesting limit, no octal, no `x` flag).
    let Ok(ast) = ast::parse::ParserBuilder::new()
        .nest_limit(250)
        .build()
        .parse(pattern)
    else {
        return false;
    };
    ast::visit(&ast, NamesAsciiOnly).is_ok()
}

/// Fails on the first literal, class bound or Unicode class that is not ASCII.
struct NamesAsciiOnly;

impl ast::Visitor for NamesAsciiOnly {
    type Output = ();
    type Err = ();

    fn finish(self) -> Result<(), ()> {
        Ok(())
    }

    fn visit_pre(&mut self, ast: &Ast) -> Result<(), ()> {
        match ast {
            Ast::Literal(lit) if !lit.c.is_ascii() => Err(()),
            Ast::ClassUnicode(_) => Err(()),
            _ => Ok(()),
        }
    }

    fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), ()> {
        match item {
            ClassSetItem::Literal(lit) if !lit.c.is_ascii() => Err(()),
            ClassSetItem::Range(r) if !(r.start.c.is_ascii() && r.end.c.is_ascii()) => Err(()),
            ClassSetItem::Unicode(_) => Err(()),
            _ => Ok(()),
        }
    }
}

/// What one call compiles, shared by its search threads.
pub(crate) struct Compiled<'a> {
    pattern: &'a str,
    limits: &'a Limits,
    /// Built without Unicode, when that is equivalent on ASCII content and within the limits.
    ascii: Option<RegexMatcher>,
    /// The Unicode matcher, or the text of its build error, once some content needed it.
    unicode: OnceLock<Result<RegexMatcher, String>>,
}

impl<'a> Compiled<'a> {
    /// Compiles the ASCII matcher when the pattern allows one, else the Unicode matcher at
    /// once (so an invalid pattern is refused before any file is read, as before). The error
    /// is the Unicode build's text.
    pub(crate) fn new(pattern: &'a str, limits: &'a Limits) -> Result<Compiled<'a>, String> {
        let ascii = if ascii_equivalent(pattern) {
            build(pattern, limits, false).ok()
        } else {
            None
        };
        let compiled = Compiled {
            pattern,
            limits,
            ascii,
            unicode: OnceLock::new(),
        };
        if compiled.ascii.is_none() {
            compiled.unicode().map_err(str::to_string)?;
        }
        Ok(compiled)
    }

    fn unicode(&self) -> Result<&RegexMatcher, &str> {
        self.unicode
            .get_or_init(|| build(self.pattern, self.limits, true).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(String::as_str)
    }

    /// The Unicode build's error, if some content needed it and it failed.
    pub(crate) fn failed(&self) -> Option<&str> {
        self.unicode.get()?.as_ref().err().map(String::as_str)
    }

    /// Whether the Unicode matcher was compiled (for tests and the debug log).
    pub(crate) fn unicode_built(&self) -> bool {
        self.unicode.get().is_some()
    }
}

/// One thread's matchers: its own clones of the shared ones, so the regex engine's scratch
/// space is never shared between threads.
pub(crate) struct Matchers<'a> {
    compiled: &'a Compiled<'a>,
    ascii: Option<RegexMatcher>,
    unicode: OnceLock<Option<RegexMatcher>>,
}

impl<'a> Matchers<'a> {
    pub(crate) fn new(compiled: &'a Compiled<'a>) -> Matchers<'a> {
        Matchers {
            compiled,
            ascii: compiled.ascii.clone(),
            unicode: OnceLock::new(),
        }
    }

    /// Matchers for another thread, sharing this call's compiled ones.
    pub(crate) fn for_thread(&self) -> Matchers<'a> {
        Matchers::new(self.compiled)
    }

    /// The matcher for content that is all ASCII (`ascii`) or may not be; `None` when the
    /// Unicode matcher is needed and failed to build (`Compiled::failed` says why).
    pub(crate) fn get(&self, ascii: bool) -> Option<&RegexMatcher> {
        if ascii && let Some(m) = &self.ascii {
            return Some(m);
        }
        self.unicode
            .get_or_init(|| self.compiled.unicode().ok().cloned())
            .as_ref()
    }
}

#[cfg(test)]
#[path = "matchers_tests.rs"]
mod tests;
