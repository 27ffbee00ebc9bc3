//! The trigram query of a pattern: an AND/OR formula over trigrams that every match of the
//! pattern satisfies, so a file whose trigram filter makes the formula false holds no match.
//!
//! The idea is Russ Cox's ("Regular Expression Matching with a Trigram Index", 2012): walk the
//! pattern's syntax tree and compute for every node what its matches are known to start with,
//! end with and contain. Here each node gets an [`Info`]: a set of prefixes and a set of
//! suffixes, each element flagged *complete* when it is the whole match (a small class or a
//! literal is a set of complete strings: the node's exact matches), and a query every match
//! satisfies. Concatenation multiplies complete strings out and adds the trigrams that span
//! the boundary (the last bytes of one side's suffixes followed by the first bytes of the
//! other's prefixes); alternation unions the sets and ORs the queries; repetition keeps what
//! every repetition starts or ends with. Sets are bounded ([`MAX_SET`] strings of at most
//! [`MAX_LEN`] bytes): before a set is cut down (strings shortened to their first or last
//! bytes, or dropped), the trigrams of its strings are ANDed into the query, so what is cut
//! from the sets is kept in the query as far as the query's own bound ([`MAX_LEAVES`]) allows.
//! Every step only ever weakens what is known, never claims more: dropping an AND operand, or
//! replacing any part of the formula by "anything", keeps it true of every match.
//!
//! The query is computed twice, over two alphabets: the bytes themselves, and the bytes
//! *folded* (every ASCII digit read as `0`, every byte of a multi-byte UTF-8 sequence as
//! `0x80`). Folded, `\d` (hundreds of Unicode digits) is four strings (`0`, and `0x80` two, three or
//! four times), so `_\d{4}` asks for one of the folded trigrams `_00`, `_0\x80`, `_\x80\x80`,
//! where over the bytes themselves it would be hundreds. The filter holds both kinds
//! (`grams`): each window's trigram and, for a window with a digit or a non-ASCII byte, its
//! folded trigram (tagged [`FOLDED`]).

use std::collections::BTreeMap;
use std::fmt;

use regex_syntax::hir::{Class, Hir, HirKind};

/// The tag of a folded trigram's key, beside the 24 bits of the trigram.
pub(crate) const FOLDED: u32 = 1 << 24;

/// Prefixes or suffixes kept per node.
const MAX_SET: usize = 64;
/// A concatenation multiplies complete strings out only up to this many results (then cut
/// down to [`MAX_SET`]).
const MAX_PRODUCT: usize = 4 * MAX_SET;
/// Bytes kept per prefix or suffix; longer literals go into the query.
const MAX_LEN: usize = 16;
/// Trigrams taken from one string (a longer literal needs no more to be ruled out).
const MAX_GRAMS_PER_STRING: usize = 16;
/// Trigram tests in a whole query: its cost per file searched.
pub(crate) const MAX_LEAVES: usize = 256;
/// Characters of one class written out; a larger class is "any string" (over the bytes
/// themselves; folded, a class is at most 128 ASCII characters and three lengths).
const MAX_CLASS: usize = 256;
/// Work (strings made, characters written out) allowed for one pattern; past it every node
/// left is "anything", so a hostile pattern costs bounded time.
const FUEL: usize = 100_000;

/// The byte as the folded alphabet reads it.
pub(crate) const fn fold(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b'0',
        0x80..=0xFF => 0x80,
        _ => b,
    }
}

/// Whether a byte gives its windows a folded key too (a digit or a non-ASCII byte): the
/// folded trigrams of other windows are their plain trigrams, looked up as such.
pub(crate) const fn folds(b: u8) -> bool {
    b.is_ascii_digit() || b >= 0x80
}

/// A condition on a file's trigrams.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Query {
    /// True of any file.
    All,
    /// The file holds this trigram key (a 24-bit trigram, with [`FOLDED`] for a folded one).
    Gram(u32),
    And(Vec<Query>),
    /// Any of these; empty: no file (the pattern can never match).
    Or(Vec<Query>),
}

impl Query {
    fn none() -> Query {
        Query::Or(Vec::new())
    }

    /// Trigram tests in the formula.
    pub(crate) fn leaves(&self) -> usize {
        match self {
            Query::All => 0,
            Query::Gram(_) => 1,
            Query::And(v) | Query::Or(v) => v.iter().map(Query::leaves).sum(),
        }
    }

    /// Whether the formula holds for a file with the trigrams `has` says it has.
    pub(crate) fn eval(&self, has: &impl Fn(u32) -> bool) -> bool {
        match self {
            Query::All => true,
            Query::Gram(k) => has(*k),
            Query::And(v) => v.iter().all(|q| q.eval(has)),
            Query::Or(v) => v.iter().any(|q| q.eval(has)),
        }
    }

    /// `self AND other`.
    pub(crate) fn and(self, other: Query) -> Query {
        Query::all_of(vec![self, other])
    }

    /// `self OR other`.
    pub(crate) fn or(self, other: Query) -> Query {
        Query::one_of(vec![self, other])
    }

    /// All of `ops`. Over the size bound, operands are dropped (single trigrams, sorted
    /// first, are kept longest): the result then holds for more files, never fewer.
    fn all_of(ops: Vec<Query>) -> Query {
        let mut flat = Vec::with_capacity(ops.len());
        for q in ops {
            match q {
                Query::All => {}
                Query::And(v) => flat.extend(v),
                Query::Or(v) if v.is_empty() => return Query::none(),
                q => flat.push(q),
            }
        }
        flat.sort_unstable();
        flat.dedup();
        let mut leaves = 0;
        flat.retain(|q| {
            leaves += q.leaves();
            leaves <= MAX_LEAVES
        });
        match flat.len() {
            0 => Query::All,
            1 => flat.pop().unwrap_or(Query::All),
            _ => Query::And(flat),
        }
    }

    /// One of `ops`; over the size bound, [`Query::All`].
    fn one_of(ops: Vec<Query>) -> Query {
        let mut flat = Vec::with_capacity(ops.len());
        for q in ops {
            match q {
                Query::All => return Query::All,
                Query::Or(v) => flat.extend(v),
                q => flat.push(q),
            }
        }
        flat.sort_unstable();
        flat.dedup();
        if flat.iter().map(Query::leaves).sum::<usize>() > MAX_LEAVES {
            return Query::All;
        }
        match flat.len() {
            1 => flat.pop().unwrap_or(Query::All),
            _ => Query::Or(flat),
        }
    }
}

/// Trigrams are shown as their bytes (escaped), folded ones after a `~`; AND as `(a b)`, OR as
/// `[a|b]`, anything as `*`, nothing as `[]`.
impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::All => f.write_str("*"),
            Query::Gram(k) => {
                if k & FOLDED != 0 {
                    f.write_str("~")?;
                }
                for b in [(k >> 16) as u8, (k >> 8) as u8, *k as u8] {
                    match b {
                        b'!'..=b'~' if !b"\\()[]|~*".contains(&b) => write!(f, "{}", b as char)?,
                        _ => write!(f, "\\x{b:02x}")?,
                    }
                }
                Ok(())
            }
            Query::And(v) | Query::Or(v) => {
                let (open, sep, close) = match self {
                    Query::And(_) => ("(", " ", ")"),
                    _ => ("[", "|", "]"),
                };
                f.write_str(open)?;
                for (i, q) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(sep)?;
                    }
                    write!(f, "{q}")?;
                }
                f.write_str(close)
            }
        }
    }
}

/// Strings, each flagged complete (the whole match) or not (a prefix, or a suffix, of it).
type Set = BTreeMap<Vec<u8>, bool>;

fn insert(set: &mut Set, s: Vec<u8>, complete: bool) {
    // A string known only as a part covers more than the same string known whole.
    let e = set.entry(s).or_insert(complete);
    *e &= complete;
}

/// What is known of a node's matches: every match has a prefix in `pre` (equal to it when
/// flagged complete), a suffix in `suf` (likewise), and satisfies `query`.
#[derive(Clone, Debug)]
struct Info {
    pre: Set,
    suf: Set,
    query: Query,
}

impl Info {
    /// Exactly these strings.
    fn exact(strings: impl IntoIterator<Item = Vec<u8>>) -> Info {
        let mut pre = Set::new();
        for s in strings {
            insert(&mut pre, s, true);
        }
        Info {
            suf: pre.clone(),
            pre,
            query: Query::All,
        }
    }

    /// Nothing known: any string.
    fn any() -> Info {
        let unknown = Set::from([(Vec::new(), false)]);
        Info {
            pre: unknown.clone(),
            suf: unknown,
            query: Query::All,
        }
    }
}

/// Which end of a string a set keeps when it is cut down.
#[derive(Clone, Copy)]
enum End {
    Front,
    Back,
}

/// The strings of `set` cut to at most `n` bytes at `end` (a cut string is no longer whole).
fn cut(set: &Set, n: usize, end: End) -> Set {
    let mut out = Set::new();
    for (s, &complete) in set {
        if s.len() <= n {
            insert(&mut out, s.clone(), complete);
        } else {
            let part = match end {
                End::Front => &s[..n],
                End::Back => &s[s.len() - n..],
            };
            insert(&mut out, part.to_vec(), false);
        }
    }
    out
}

/// Walks a pattern's syntax tree over one alphabet.
struct Walker {
    folded: bool,
    fuel: usize,
}

impl Walker {
    fn burn(&mut self, work: usize) {
        self.fuel = self.fuel.saturating_sub(work);
    }

    /// The key a trigram of this walk's strings is looked up by.
    fn key(&self, w: &[u8]) -> u32 {
        let t = u32::from(w[0]) << 16 | u32::from(w[1]) << 8 | u32::from(w[2]);
        if self.folded && w.iter().any(|&b| b == b'0' || b == 0x80) {
            t | FOLDED
        } else {
            t
        }
    }

    /// The trigram keys of `s`, the first [`MAX_GRAMS_PER_STRING`] distinct ones (a long
    /// literal is cut here, not ignored); `None` for a string shorter than three bytes, which
    /// needs no trigram.
    fn grams(&self, s: &[u8]) -> Option<Vec<u32>> {
        if s.len() < 3 {
            return None;
        }
        let mut keys: Vec<u32> = Vec::new();
        for w in s.windows(3) {
            let k = self.key(w);
            if !keys.contains(&k) {
                keys.push(k);
                if keys.len() == MAX_GRAMS_PER_STRING {
                    break;
                }
            }
        }
        Some(keys)
    }

    /// What a file holding one of `set`'s strings holds: the trigrams common to all of them,
    /// and one of the strings' own trigrams, as many of each as fit in the query's bound
    /// (fewer trigrams per string make a weaker but smaller OR: `(?i)needle` asks for one of
    /// the 8 spellings of `nee` rather than all 64 spellings of the word).
    fn any_of(&mut self, set: &Set) -> Query {
        self.burn(set.len() * MAX_GRAMS_PER_STRING);
        let mut each = Vec::with_capacity(set.len());
        for s in set.keys() {
            match self.grams(s) {
                Some(keys) => each.push(keys),
                None => return Query::All,
            }
        }
        let Some(first) = each.first() else {
            return Query::none();
        };
        let common: Vec<u32> = first
            .iter()
            .copied()
            .filter(|k| each.iter().all(|keys| keys.contains(k)))
            .collect();
        for keys in &mut each {
            keys.retain(|k| !common.contains(k));
        }
        let all = |keys: &[u32]| Query::all_of(keys.iter().map(|&k| Query::Gram(k)).collect());
        let mut rest = Query::All;
        if each.iter().all(|keys| !keys.is_empty()) {
            // The most trigrams per string that keep the OR within the bound.
            let per = (1..=MAX_GRAMS_PER_STRING)
                .rev()
                .find(|&n| each.iter().map(|keys| keys.len().min(n)).sum::<usize>() <= MAX_LEAVES);
            if let Some(per) = per {
                rest = Query::one_of(
                    each.iter()
                        .map(|keys| all(&keys[..keys.len().min(per)]))
                        .collect(),
                );
            }
        }
        all(&common).and(rest)
    }

    /// Keeps the sets within bounds, moving what is cut into the query first.
    fn bound(&mut self, mut info: Info) -> Info {
        for end in [End::Front, End::Back] {
            let set = match end {
                End::Front => &mut info.pre,
                End::Back => &mut info.suf,
            };
            if set.len() <= MAX_SET && set.keys().all(|s| s.len() <= MAX_LEN) {
                continue;
            }
            let holds = self.any_of(set);
            info.query = std::mem::replace(&mut info.query, Query::All).and(holds);
            // Two bytes are what a neighbour's trigram can use.
            let mut n = 2;
            let mut smaller = cut(set, n, end);
            while smaller.len() > MAX_SET && n > 0 {
                n -= 1;
                smaller = cut(&smaller, n, end);
            }
            *set = smaller;
        }
        info
    }

    fn literal(&mut self, bytes: &[u8]) -> Info {
        self.burn(bytes.len());
        let bytes = if self.folded {
            bytes.iter().map(|&b| fold(b)).collect()
        } else {
            bytes.to_vec()
        };
        self.bound(Info::exact([bytes]))
    }

    fn class(&mut self, class: &Class) -> Info {
        let strings: Vec<Vec<u8>> = match class {
            Class::Bytes(c) => {
                let n: usize = c.ranges().iter().map(|r| r.len()).sum();
                self.burn(n);
                c.iter()
                    .flat_map(|r| r.start()..=r.end())
                    .map(|b| vec![if self.folded { fold(b) } else { b }])
                    .collect()
            }
            Class::Unicode(c) if self.folded => {
                // ASCII characters folded one by one; the others by their encoded length.
                let mut out = Vec::new();
                let mut lengths = [false; 5];
                for r in c.iter() {
                    let (lo, hi) = (u32::from(r.start()), u32::from(r.end()));
                    for b in lo..=hi.min(0x7F) {
                        out.push(vec![fold(b as u8)]);
                    }
                    for (len, from, to) in [
                        (2, 0x80, 0x7FF),
                        (3, 0x800, 0xFFFF),
                        (4, 0x10000, 0x10_FFFF),
                    ] {
                        if lo <= to && hi >= from {
                            lengths[len] = true;
                        }
                    }
                }
                for (len, used) in lengths.iter().enumerate() {
                    if *used {
                        out.push(vec![0x80; len]);
                    }
                }
                self.burn(out.len());
                out
            }
            Class::Unicode(c) => {
                let n: usize = c.ranges().iter().map(|r| r.len()).sum();
                if n > MAX_CLASS {
                    return Info::any();
                }
                self.burn(n);
                c.iter()
                    .flat_map(|r| r.start()..=r.end())
                    .map(|ch| ch.to_string().into_bytes())
                    .collect()
            }
        };
        self.bound(Info::exact(strings))
    }

    /// Matches of `x` followed by matches of `y`.
    fn concat(&mut self, x: Info, y: Info) -> Info {
        let complete = |set: &Set| set.values().filter(|c| **c).count();
        self.burn(x.pre.len() * y.pre.len() + x.suf.len() * y.suf.len());
        let mut pre = Set::new();
        let multiply = complete(&x.pre) * y.pre.len() <= MAX_PRODUCT;
        for (p, &whole) in &x.pre {
            if whole && multiply {
                for (q, &q_whole) in &y.pre {
                    insert(&mut pre, [p.as_slice(), q].concat(), q_whole);
                }
            } else {
                insert(&mut pre, p.clone(), false);
            }
        }
        let mut suf = Set::new();
        let multiply = complete(&y.suf) * x.suf.len() <= MAX_PRODUCT;
        for (q, &whole) in &y.suf {
            if whole && multiply {
                for (p, &p_whole) in &x.suf {
                    insert(&mut suf, [p.as_slice(), q].concat(), p_whole);
                }
            } else {
                insert(&mut suf, q.clone(), false);
            }
        }
        // The trigrams across the boundary: the end of x's match followed by the start of
        // y's, two bytes of each, or two of one and one of the other (fewer alternatives).
        let mut query = x.query.and(y.query);
        for (a, b) in [(2, 2), (2, 1), (1, 2)] {
            let ends = cut(&x.suf, a, End::Back);
            let starts = cut(&y.pre, b, End::Front);
            if ends.len() * starts.len() > MAX_SET {
                continue;
            }
            self.burn(ends.len() * starts.len());
            let mut across = Set::new();
            for e in ends.keys() {
                for s in starts.keys() {
                    insert(&mut across, [e.as_slice(), s].concat(), false);
                }
            }
            let holds = self.any_of(&across);
            query = query.and(holds);
        }
        self.bound(Info { pre, suf, query })
    }

    /// Matches of `x` or of `y`.
    fn alternate(&mut self, x: Info, y: Info) -> Info {
        self.burn(x.pre.len() + y.pre.len() + x.suf.len() + y.suf.len());
        let mut info = x;
        for (s, c) in y.pre {
            insert(&mut info.pre, s, c);
        }
        for (s, c) in y.suf {
            insert(&mut info.suf, s, c);
        }
        info.query = info.query.or(y.query);
        self.bound(info)
    }

    /// Zero or more matches of `x`: empty, or starting with a start of `x` and ending with an
    /// end of it (the first and last non-empty repetitions).
    fn star(&mut self, x: &Info) -> Info {
        let open = |set: &Set| {
            let mut out = Set::from([(Vec::new(), true)]);
            for s in set.keys() {
                insert(&mut out, s.clone(), false);
            }
            out
        };
        Info {
            pre: open(&x.pre),
            suf: open(&x.suf),
            query: Query::All,
        }
    }

    fn walk(&mut self, hir: &Hir) -> Info {
        if self.fuel == 0 {
            return Info::any();
        }
        self.burn(1);
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) => Info::exact([Vec::new()]),
            HirKind::Literal(lit) => self.literal(&lit.0),
            HirKind::Class(class) => self.class(class),
            HirKind::Capture(cap) => self.walk(&cap.sub),
            HirKind::Concat(subs) => {
                let mut info = Info::exact([Vec::new()]);
                for sub in subs {
                    if self.fuel == 0 {
                        // What the rest matches is unknown; what came before still holds.
                        return self.concat(info, Info::any());
                    }
                    let next = self.walk(sub);
                    info = self.concat(info, next);
                }
                info
            }
            HirKind::Alternation(subs) => {
                let mut info: Option<Info> = None;
                for sub in subs {
                    if self.fuel == 0 {
                        return Info::any();
                    }
                    let next = self.walk(sub);
                    info = Some(match info {
                        None => next,
                        Some(info) => self.alternate(info, next),
                    });
                }
                info.unwrap_or_else(Info::any)
            }
            HirKind::Repetition(rep) => {
                let x = self.walk(&rep.sub);
                if rep.min == 0 {
                    return if rep.max == Some(0) {
                        Info::exact([Vec::new()])
                    } else {
                        self.star(&x)
                    };
                }
                // Every match starts (and ends) with min(n, 3) repetitions: enough for any
                // trigram of repetitions of one-byte strings.
                let unrolled = rep.min.min(3);
                let mut info = x.clone();
                for _ in 1..unrolled {
                    info = self.concat(info, x.clone());
                }
                if rep.max == Some(rep.min) && rep.min == unrolled {
                    info
                } else {
                    let more = self.star(&x);
                    self.concat(info, more)
                }
            }
        }
    }

    /// The query every match of `hir` satisfies, over this walk's alphabet.
    fn query(&mut self, hir: &Hir) -> Query {
        let info = self.walk(hir);
        let starts = self.any_of(&info.pre);
        let ends = self.any_of(&info.suf);
        info.query.and(starts).and(ends)
    }
}

/// The query every match of the pattern `hir` satisfies, over both alphabets.
pub(crate) fn of(hir: &Hir) -> Query {
    let mut plain = Walker {
        folded: false,
        fuel: FUEL,
    };
    let mut folded = Walker {
        folded: true,
        fuel: FUEL,
    };
    plain.query(hir).and(folded.query(hir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn shape(pattern: &str) -> String {
        let hir = crate::grep::matchers::parser().parse(pattern).unwrap();
        of(&hir).to_string()
    }

    /// What the query asks of a file, for patterns of each kind. `~` marks a folded trigram
    /// (digits as `0`, non-ASCII bytes as `\x80`); `(a b)` is AND, `[a|b]` OR, `*` anything.
    #[test]
    fn patterns_give_these_queries() {
        let table: &[(&str, &str)] = &[
            // A literal: its trigrams, and folded, those its digits make.
            ("TODO", "(ODO TOD)"),
            (
                "NEEDLE_4242",
                "(242 424 DLE EDL EED E_4 LE_ NEE _42 ~000 ~E_0 ~_00)",
            ),
            // Literals inside the pattern, not just a prefix.
            ("abc.*def", "(abc def)"),
            (
                r"\bfoo\d",
                "(foo [~oo0|~oo\\x80] [~oo0|(~oo\\x80 ~o\\x80\\x80)] \
                 [~oo0|(~oo\\x80 ~o\\x80\\x80)|(~oo\\x80 ~o\\x80\\x80 ~\\x80\\x80\\x80)])",
            ),
            // Alternatives and small classes: ORs.
            ("foo|barbaz", "[foo|(arb bar baz rba)]"),
            ("a[bc]d", "[abd|acd]"),
            (
                "[_-]x[a-f]",
                "[-xa|-xb|-xc|-xd|-xe|-xf|_xa|_xb|_xc|_xd|_xe|_xf]",
            ),
            // Case-insensitive letters are classes of two.
            (
                "(?i)todo",
                "([ODO|ODo|OdO|Odo|oDO|oDo|odO|odo] [TOD|TOd|ToD|Tod|tOD|tOd|toD|tod] \
                 [(ODO TOD)|(ODO tOD)|(ODo TOD)|(ODo tOD)|(OdO TOd)|(OdO tOd)|(Odo TOd)|\
                 (Odo tOd)|(ToD oDO)|(ToD oDo)|(Tod odO)|(Tod odo)|(oDO toD)|(oDo toD)|\
                 (odO tod)|(odo tod)])",
            ),
            // Unicode `\d` folds to one-, two-, three- and four-byte digits: after `_`, one
            // of three folded trigrams, where the bytes themselves would need hundreds.
            (
                r"\w+_\d{4}",
                "([~000|~00\\x80|~\\x8000|~\\x800\\x80|~\\x80\\x800|~\\x80\\x80\\x80] \
                 [~000|~\\x8000|~\\x80\\x800|~\\x80\\x80\\x80|(~00\\x80 ~0\\x80\\x80)|\
                 (~0\\x80\\x80 ~\\x800\\x80)] \
                 [~000|~\\x80\\x80\\x80|(~000 ~00\\x80)|(~00\\x80 ~0\\x80\\x80)|\
                 (~0\\x80\\x80 ~\\x80\\x800)|(~0\\x80\\x80 ~\\x80\\x80\\x80)|\
                 (~\\x8000 ~\\x80\\x800)|(~\\x800\\x80 ~\\x80\\x800)|\
                 (~\\x80\\x800 ~\\x80\\x80\\x80)] \
                 [~_00|~_0\\x80|~_\\x80\\x80])",
            ),
            // ASCII classes only: no multi-byte alternatives, and `\w_\d` (54 folded
            // trigrams) fits in the bound too.
            (
                r"(?-u:\w+_\d{4})",
                "(~000 ~_00 [~0_0|~A_0|~B_0|~C_0|~D_0|~E_0|~F_0|~G_0|~H_0|~I_0|~J_0|~K_0|~L_0|\
                 ~M_0|~N_0|~O_0|~P_0|~Q_0|~R_0|~S_0|~T_0|~U_0|~V_0|~W_0|~X_0|~Y_0|~Z_0|~__0|\
                 ~a_0|~b_0|~c_0|~d_0|~e_0|~f_0|~g_0|~h_0|~i_0|~j_0|~k_0|~l_0|~m_0|~n_0|~o_0|\
                 ~p_0|~q_0|~r_0|~s_0|~t_0|~u_0|~v_0|~w_0|~x_0|~y_0|~z_0])",
            ),
            // Nothing of three bytes every match must hold.
            ("[a-z]+[0-9]+", "*"),
            (r"\w+\(", "*"),
            ("[a-z]{3}", "*"),
            ("a|bc", "*"),
            ("x*", "*"),
            ("", "*"),
            ("[^a]", "*"),
            // A class that can match nothing: no file can match.
            (r"[^\x00-\x{10FFFF}]", "[]"),
        ];
        for (pattern, want) in table {
            assert_eq!(shape(pattern), *want, "{pattern:?}");
        }
        // Small classes on both sides of a literal: one of their 36 trigrams.
        let wide = shape("[a-f]_[a-f]");
        assert_eq!(
            (wide.matches('|').count() + 1, wide.len()),
            (36, 36 * 4 + 1),
            "{wide}"
        );
    }

    /// Hostile patterns cost bounded time and memory and give a bounded query: long
    /// literals, long classes repeated, wide alternations, deep nesting.
    #[test]
    fn hostile_patterns_give_bounded_queries() {
        let patterns = [
            "[a-z]{30}".to_string(),
            "[a-z0-9_]{1000}".to_string(),
            "x".repeat(100_000),
            "(?i)abcdefghij".repeat(10_000),
            "[ab][cd][ef]".repeat(10_000),
            (0..20_000)
                .map(|i| format!("w{i}"))
                .collect::<Vec<_>>()
                .join("|"),
            format!("{}x{}", "(?:a|".repeat(120), ")".repeat(120)),
            r"(\w+_\d{4}|[a-f0-9]{40})+".repeat(2_000),
        ];
        for pattern in &patterns {
            let hir = crate::grep::matchers::parser().parse(pattern).unwrap();
            let q = of(&hir);
            assert!(q.leaves() <= MAX_LEAVES, "{} leaves", q.leaves());
        }
        // Cut short, what was learnt before the cut still counts.
        assert_eq!(shape(&"x".repeat(100_000)), "xxx");
        assert!(shape(&"(?i)abcdefghij".repeat(10_000)).starts_with("([ABC|ABc|"));
    }
}
