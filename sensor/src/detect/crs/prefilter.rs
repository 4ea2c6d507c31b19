//! Literal prefilter for `@rx` and `@pm`: the literals one of which every match must contain
//! (extracted from the regex's syntax tree, read as PCRE2 reads it, or the phrases), and one
//! scanner over the literals of every rule, run once per distinct transformed value. A rule's
//! operator runs on a value only when the scanner saw one of its literals there (the
//! evaluator keeps, per value, which rule targets that leaves: see `eval::index_live`); a
//! regex with no such literals always runs.
//!
//! Literals are compared ASCII-case-insensitively (a superset of the case-sensitive answer), so
//! the filter can let a value through that the regex then rejects, never the reverse.

use aho_corasick::automaton::Automaton as _;
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind};
use regex_syntax::hir::{Class, Hir, HirKind};

/// Largest literal set kept for one sub-pattern (cross products beyond it are cut).
const MAX_SET: usize = 64;
/// Largest set kept as a requirement (a union of alternatives, a boundary's pairs): it is
/// not multiplied further.
const MAX_REQUIRED: usize = 4 * MAX_SET;
/// The largest cross product cut down to a kept set (beyond it, nothing is read from it).
const MAX_PRODUCT: usize = 4096;
/// Largest class expanded into single-byte literals (after case folding).
const MAX_CLASS: usize = 4;
/// Bytes of a literal in the scanner's automaton; the rest is compared where the head occurs.
/// Shorter heads make a smaller table but more heads that occur without their literal: 6 was
/// the fastest of 3, 4, 6 and 16 on the dev corpus.
const HEAD: usize = 6;

/// The literals one of which every match of `pattern` contains (lowercased), or None when the
/// pattern has no such set (it can match without any literal, or the syntax is not understood).
pub fn required_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = pcre_like_hir(pattern).ok()?;
    let info = analyze(&hir);
    let best = best_of(info.required, info.exact.filter(|s| valid(s)));
    best.filter(|s| valid(s))
}

/// The literals of a `@pm`: the phrases themselves (a phrase matcher matches only where one
/// occurs). None when a phrase is empty or there are none.
pub fn phrase_literals(phrases: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    let lits: Vec<Vec<u8>> = phrases.iter().map(|p| p.to_ascii_lowercase()).collect();
    valid(&lits).then(|| dedup(lits))
}

/// The syntax tree of `pattern` read the way libmodsecurity compiles it for PCRE2: bytes (no
/// Unicode), `.` matching newlines, `^`/`$` at line ends, and a `{` that starts no quantifier
/// a literal brace (see [`pcre_braces`]).
pub fn pcre_like_hir(pattern: &str) -> Result<Hir, String> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .dot_matches_new_line(true)
        .multi_line(true)
        .build()
        .parse(&pcre_braces(pattern))
        .map_err(|e| e.to_string())
}

/// The byte a `\x{..}` escape's hex digits name, when it is one (PCRE2 without UTF refuses
/// larger values: the pattern does not compile, and it is left as written).
fn hex_brace_byte(digits: &str) -> Option<u8> {
    let digits = digits.trim_start_matches('0');
    if digits.len() > 2 || !digits.bytes().all(|d| d.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(if digits.is_empty() { "0" } else { digits }, 16).ok()
}

/// `pattern` with every `{` that PCRE2 (10.42, Debian's) reads as a literal escaped: outside a
/// character class, one not followed by `digits}`, `digits,}` or `digits,digits}`
/// (`function\s*\(\s*\)\s*{` in CRS). The regex crate refuses such a brace instead.
/// A `\x{..}` naming a byte above 0x7F becomes `\xHH` (see [`hex_brace_byte`]); other
/// escapes (with their braces, `\p{..}`) and classes are copied as they are.
pub fn pcre_braces(pattern: &str) -> std::borrow::Cow<'_, str> {
    let b = pattern.as_bytes();
    if !b.contains(&b'{') {
        return std::borrow::Cow::Borrowed(pattern);
    }
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    // the byte offset where a class's closing `]` may come (None: outside a class)
    let mut class_from: Option<usize> = None;
    while let Some(&c) = b.get(i) {
        if c == b'\\' {
            let mut end = (i + 2).min(b.len());
            if matches!(
                b.get(i + 1),
                Some(b'x' | b'p' | b'P' | b'o' | b'g' | b'k' | b'N')
            ) && b.get(i + 2) == Some(&b'{')
                && let Some(close) = b[i + 2..].iter().position(|&x| x == b'}')
            {
                end = i + 2 + close + 1;
                // `\x{bc}` is the byte 0xBC to PCRE2 without UTF, as `\xbc` is; the regex
                // crate reads the braced form as the character U+00BC (its UTF-8 bytes)
                if b[i + 1] == b'x'
                    && let Some(byte) = hex_brace_byte(&pattern[i + 3..end - 1])
                    && byte > 0x7f
                {
                    out.push_str(&format!("\\x{byte:02x}"));
                    i = end;
                    continue;
                }
            }
            out.push_str(&pattern[i..end]);
            i = end;
            continue;
        }
        match class_from {
            Some(from) => {
                if c == b'[' && b.get(i + 1) == Some(&b':') {
                    // a POSIX class inside the class: `[:alpha:]`
                    if let Some(close) = pattern[i + 2..].find(":]") {
                        let end = i + 2 + close + 2;
                        out.push_str(&pattern[i..end]);
                        i = end;
                        continue;
                    }
                }
                if c == b']' && i > from {
                    class_from = None;
                }
            }
            None if c == b'[' => {
                // `[]..]` and `[^]..]`: the first `]` is a member
                let mut from = i + 1;
                if b.get(from) == Some(&b'^') {
                    from += 1;
                }
                class_from = Some(from + usize::from(b.get(from) == Some(&b']')));
            }
            None if c == b'{' && !quantifier_at(&b[i..]) => {
                out.push_str("\\{");
                i += 1;
                continue;
            }
            None => {}
        }
        let len = pattern[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&pattern[i..i + len]);
        i += len;
    }
    std::borrow::Cow::Owned(out)
}

/// Whether `s` (starting at a `{`) starts a PCRE2 10.42 quantifier: `{n}`, `{n,}`, `{n,m}`.
fn quantifier_at(s: &[u8]) -> bool {
    let digits = |from: usize| s[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let n = digits(1);
    if n == 0 {
        return false;
    }
    match s.get(1 + n) {
        Some(b'}') => true,
        Some(b',') => {
            let m = digits(2 + n);
            s.get(2 + n + m) == Some(&b'}')
        }
        _ => false,
    }
}

struct Info {
    /// Every string the sub-pattern can match (lowercased), when that set is small.
    exact: Option<Vec<Vec<u8>>>,
    /// A set one of which every match contains.
    required: Option<Vec<Vec<u8>>>,
    /// A set one of which every match starts with (None: nothing known; an empty string in
    /// it: the sub-pattern may match nothing), when not `exact`.
    prefix: Option<Vec<Vec<u8>>>,
    /// A set one of which every match ends with, likewise.
    suffix: Option<Vec<Vec<u8>>>,
}

impl Info {
    fn new(exact: Option<Vec<Vec<u8>>>, required: Option<Vec<Vec<u8>>>) -> Info {
        Info {
            exact,
            required,
            prefix: None,
            suffix: None,
        }
    }

    /// What every match starts with: the exact set, else the prefixes.
    fn lead(&self) -> Option<&[Vec<u8>]> {
        self.exact.as_deref().or(self.prefix.as_deref())
    }

    /// What every match ends with: the exact set, else the suffixes.
    fn tail(&self) -> Option<&[Vec<u8>]> {
        self.exact.as_deref().or(self.suffix.as_deref())
    }
}

/// `set` within [`MAX_SET`]: its strings cut to their first (`front`) or last bytes, as few as
/// needed (a string's first bytes are still a prefix of what it prefixed).
fn shrink(set: Vec<Vec<u8>>, front: bool) -> Option<Vec<Vec<u8>>> {
    if set.len() <= MAX_SET {
        return Some(set);
    }
    (1..=HEAD).rev().find_map(|keep| {
        let cut = dedup(
            set.iter()
                .map(|l| {
                    let k = l.len().min(keep);
                    if front {
                        l[..k].to_vec()
                    } else {
                        l[l.len() - k..].to_vec()
                    }
                })
                .collect(),
        );
        (cut.len() <= MAX_SET).then_some(cut)
    })
}

/// A requirement at the boundary between two adjacent parts of a pattern: every match holds
/// an end of the first (`tail`) directly followed by a start of the second (`lead`). The
/// pairs are cut to at most [`HEAD`] bytes on each side of the boundary, as few as keep the
/// set within [`MAX_REQUIRED`]. For 930100's `(?:\.|%2e|...){2}` this gives `..`, `.%`, `?.`...
/// where either side alone has `.` and `?`, found in nearly every URI.
fn join(tail: Option<&[Vec<u8>]>, lead: Option<&[Vec<u8>]>) -> Option<Vec<Vec<u8>>> {
    let (tail, lead) = (tail?, lead?);
    if tail.len().saturating_mul(lead.len()) > MAX_PRODUCT {
        return None;
    }
    (1..=HEAD).rev().find_map(|keep| {
        let mut set = Vec::with_capacity(tail.len() * lead.len());
        for t in tail {
            for l in lead {
                let mut s = t[t.len() - t.len().min(keep)..].to_vec();
                s.extend_from_slice(&l[..l.len().min(keep)]);
                set.push(s);
            }
        }
        let set = dedup(set);
        (set.len() <= MAX_REQUIRED && valid(&set)).then_some(set)
    })
}

/// The union of the sub-patterns' starts (`front`) or ends, when every one has some.
fn union<'a>(
    sets: impl Iterator<Item = Option<&'a [Vec<u8>]>>,
    front: bool,
) -> Option<Vec<Vec<u8>>> {
    let mut all = Vec::new();
    for set in sets {
        all.extend_from_slice(set?);
    }
    shrink(dedup(all), front)
}

/// The start of a concatenation: the exact items' product from the left, then the first
/// inexact item's start (the end likewise, from the right, with `front` false). Cut short
/// (and no longer extended) past [`MAX_SET`].
fn concat_edge(infos: &[Info], front: bool) -> Option<Vec<Vec<u8>>> {
    let mut acc: Vec<Vec<u8>> = vec![Vec::new()];
    let n = infos.len();
    for i in 0..n {
        let info = &infos[if front { i } else { n - 1 - i }];
        let edge = if front { &info.prefix } else { &info.suffix };
        let (set, exact) = match (&info.exact, edge) {
            (Some(e), _) => (e, true),
            (None, Some(p)) => (p, false),
            (None, None) => break,
        };
        if acc.len().saturating_mul(set.len()) > MAX_PRODUCT {
            break;
        }
        let mut next = Vec::with_capacity(acc.len() * set.len());
        for a in &acc {
            for x in set {
                next.push(if front {
                    [a.as_slice(), x].concat()
                } else {
                    [x.as_slice(), a].concat()
                });
            }
        }
        let next = dedup(next);
        let cut = next.len() > MAX_SET;
        acc = shrink(next, front)?;
        if !exact || cut {
            break;
        }
    }
    (!acc.iter().all(Vec::is_empty)).then_some(acc)
}

fn valid(set: &[Vec<u8>]) -> bool {
    !set.is_empty() && set.iter().all(|s| !s.is_empty())
}

/// Higher is better: the set whose commonest literal is rarer (see [`commonness`]), then the
/// shortest literal's length, then fewer literals.
fn score(set: &[Vec<u8>]) -> (std::cmp::Reverse<u16>, usize, std::cmp::Reverse<usize>) {
    let min = set.iter().map(Vec::len).min().unwrap_or(0);
    let common = set.iter().map(|l| commonness(l)).max().unwrap_or(0);
    (
        std::cmp::Reverse(common),
        min.min(8),
        std::cmp::Reverse(set.len()),
    )
}

/// How often a literal of one or two bytes is expected in text (0 for longer ones, which the
/// prefilter's tables do not answer for): from the general byte-frequency ranks of
/// `regex_syntax` (the background distribution the regex crate picks its own prefilters by),
/// the commoner case of a letter counting. A pair is rarer than either of its bytes.
fn commonness(lit: &[u8]) -> u16 {
    let rank = |b: u8| {
        u16::from(regex_syntax::hir::literal::rank(b.to_ascii_lowercase())).max(u16::from(
            regex_syntax::hir::literal::rank(b.to_ascii_uppercase()),
        ))
    };
    match lit {
        [a] => 256 + rank(*a),
        [a, b] => (rank(*a) + rank(*b)).saturating_sub(255),
        _ => 0,
    }
}

fn best_of(a: Option<Vec<Vec<u8>>>, b: Option<Vec<Vec<u8>>>) -> Option<Vec<Vec<u8>>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if score(&b) > score(&a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

fn dedup(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v.dedup();
    v
}

fn product(a: &[Vec<u8>], b: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if a.len().saturating_mul(b.len()) > MAX_SET {
        return None;
    }
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            let mut s = x.clone();
            s.extend_from_slice(y);
            out.push(s);
        }
    }
    Some(dedup(out))
}

fn class_bytes(class: &Class) -> Option<Vec<Vec<u8>>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    match class {
        Class::Bytes(c) => {
            for r in c.iter() {
                for b in r.start()..=r.end() {
                    out.push(vec![b.to_ascii_lowercase()]);
                    if out.len() > 4 * MAX_CLASS {
                        return None;
                    }
                }
            }
        }
        Class::Unicode(c) => {
            for r in c.iter() {
                for ch in r.start()..=r.end() {
                    if !ch.is_ascii() {
                        return None;
                    }
                    out.push(vec![(ch as u8).to_ascii_lowercase()]);
                    if out.len() > 4 * MAX_CLASS {
                        return None;
                    }
                }
            }
        }
    }
    let out = dedup(out);
    (out.len() <= MAX_CLASS).then_some(out)
}

fn analyze(hir: &Hir) -> Info {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => Info::new(Some(vec![Vec::new()]), None),
        HirKind::Literal(lit) => Info::new(Some(vec![lit.0.to_ascii_lowercase()]), None),
        HirKind::Class(c) => Info::new(class_bytes(c), None),
        HirKind::Capture(c) => analyze(&c.sub),
        HirKind::Repetition(rep) => {
            let sub = analyze(&rep.sub);
            if rep.min == 0 {
                let exact = match (rep.max, sub.exact) {
                    (Some(1), Some(mut e)) if e.len() < MAX_SET => {
                        e.push(Vec::new());
                        Some(dedup(e))
                    }
                    _ => None,
                };
                return Info::new(exact, None);
            }
            let mut required =
                best_of(sub.required.clone(), sub.exact.clone().filter(|s| valid(s)));
            // two copies in a row: an end of one followed by a start of the next
            if rep.min >= 2 {
                required = best_of(required, join(sub.tail(), sub.lead()));
            }
            let exact = match (rep.min, rep.max, &sub.exact) {
                (1, Some(1), e) => e.clone(),
                (n, Some(m), Some(e)) if n == m && n <= 4 => {
                    let mut acc = vec![Vec::new()];
                    for _ in 0..n {
                        match product(&acc, e) {
                            Some(p) => acc = p,
                            None => {
                                acc = Vec::new();
                                break;
                            }
                        }
                    }
                    (!acc.is_empty()).then_some(acc)
                }
                _ => None,
            };
            // any match starts with a match of the piece, and ends with one
            let (prefix, suffix) = match exact {
                Some(_) => (None, None),
                None => (sub.lead().map(<[_]>::to_vec), sub.tail().map(<[_]>::to_vec)),
            };
            Info {
                exact,
                required,
                prefix,
                suffix,
            }
        }
        HirKind::Concat(subs) => {
            let infos: Vec<Info> = subs.iter().map(analyze).collect();
            let mut best: Option<Vec<Vec<u8>>> = None;
            let mut run: Option<Vec<Vec<u8>>> = Some(vec![Vec::new()]);
            let mut all_exact = true;
            for (i, info) in infos.iter().enumerate() {
                best = best_of(best, info.required.clone());
                // the boundary with the item before: an end of it, then a start of this one
                if let Some(before) = i.checked_sub(1).and_then(|j| infos.get(j))
                    && (before.exact.is_none() || info.exact.is_none())
                {
                    best = best_of(best, join(before.tail(), info.lead()));
                }
                match &info.exact {
                    Some(e) => {
                        let next = run.as_ref().and_then(|r| product(r, e));
                        match next {
                            Some(n) => run = Some(n),
                            None => {
                                // the run so far is a requirement; a new run starts here
                                best = best_of(best, run.take().filter(|r| valid(r)));
                                all_exact = false;
                                run = Some(e.clone());
                            }
                        }
                    }
                    None => {
                        // the run so far, and the run followed by a start of this item
                        best = best_of(
                            best,
                            run.as_deref().and_then(|r| join(Some(r), info.lead())),
                        );
                        best = best_of(best, run.take().filter(|r| valid(r)));
                        all_exact = false;
                        run = Some(vec![Vec::new()]);
                    }
                }
            }
            let exact = if all_exact { run.clone() } else { None };
            best = best_of(best, run.filter(|r| valid(r)));
            Info {
                prefix: if exact.is_none() {
                    concat_edge(&infos, true)
                } else {
                    None
                },
                suffix: if exact.is_none() {
                    concat_edge(&infos, false)
                } else {
                    None
                },
                exact,
                required: best,
            }
        }
        HirKind::Alternation(subs) => {
            let infos: Vec<Info> = subs.iter().map(analyze).collect();
            let exact = if infos.iter().all(|i| i.exact.is_some()) {
                let all: Vec<Vec<u8>> = infos
                    .iter()
                    .flat_map(|i| i.exact.clone().unwrap_or_default())
                    .collect();
                let all = dedup(all);
                (all.len() <= MAX_SET).then_some(all)
            } else {
                None
            };
            let (prefix, suffix) = if exact.is_none() {
                (
                    union(infos.iter().map(Info::lead), true),
                    union(infos.iter().map(Info::tail), false),
                )
            } else {
                (None, None)
            };
            let mut required = Vec::new();
            for i in infos {
                match best_of(i.required, i.exact.filter(|s| valid(s))) {
                    Some(r) => required.extend(r),
                    None => {
                        return Info {
                            exact,
                            required: None,
                            prefix,
                            suffix,
                        };
                    }
                }
            }
            let required = dedup(required);
            Info {
                exact,
                required: (required.len() <= MAX_REQUIRED).then_some(required),
                prefix,
                suffix,
            }
        }
    }
}

/// The literals of several rules; `scan` sets the bit of every rule one of whose literals occurs
/// in a value. One-byte literals (`<`, `'`) would make an automaton stop at nearly every byte:
/// each is numbered, and the scan gathers the numbers of the bytes it reads in one word.
/// Longer literals are found by their first [`HEAD`] bytes in an automaton laid out as a flat
/// table, and the rest of each is compared where its head occurs: the whole literals made a
/// trie of 40,000 states (20 MB as a DFA) whose transition loads stalled the scan; the heads
/// make one of about 5,800 states (1.6 MB with CRS 3.3.4).
#[derive(Debug)]
pub struct Prefilter {
    /// The automaton over the heads (first [`HEAD`] bytes) of the literals of two bytes or
    /// more, and of one-byte literals past the [`MAX_SINGLES`] numbered ones (every head
    /// ending at a byte is in that byte's state: overlapping matches).
    heads: Option<Table>,
    /// The literals' bytes after their heads, lowercased.
    tail_bytes: Vec<u8>,
    /// Per byte (both cases of a letter), the bit of its one-byte literal's number (none: 0),
    /// read with one load and gathered with an `or` (a shift by the number costs more).
    single_bit: Box<[u64; 256]>,
    /// The rule bits of each numbered one-byte literal.
    singles: Vec<Vec<u32>>,
}

/// One-byte literals numbered (each a bit of one word).
const MAX_SINGLES: usize = 64;
/// Values from this length on are scanned as two streams at once (see [`Prefilter::scan`]).
const SPLIT: usize = 24;
// the second stream starts HEAD - 1 bytes before the middle: within the value
const _: () = assert!(SPLIT >= 2 * HEAD);

impl Prefilter {
    /// `rules`: (rule bit, its literals). None when there is nothing to filter.
    pub fn build(rules: &[(u32, Vec<Vec<u8>>)]) -> Option<Prefilter> {
        // literal head -> (rule bit, tail) of the literals starting with it
        let mut heads: std::collections::BTreeMap<Vec<u8>, Vec<(u32, &[u8])>> = Default::default();
        let mut singles: std::collections::BTreeMap<u8, Vec<u32>> = Default::default();
        for (bit, lits) in rules {
            for l in lits {
                match l.as_slice() {
                    [] => {}
                    [a] => singles
                        .entry(a.to_ascii_lowercase())
                        .or_default()
                        .push(*bit),
                    _ => {
                        let (head, tail) = l.split_at(l.len().min(HEAD));
                        heads
                            .entry(head.to_ascii_lowercase())
                            .or_default()
                            .push((*bit, tail));
                    }
                }
            }
        }
        if heads.is_empty() && singles.is_empty() {
            return None;
        }
        let mut single_bit = Box::new([0u64; 256]);
        let mut numbered = Vec::new();
        for (n, (byte, bits)) in singles.into_iter().enumerate() {
            if n < MAX_SINGLES {
                for b in [byte, byte.to_ascii_uppercase()] {
                    single_bit[usize::from(b)] = 1 << n;
                }
                numbered.push(bits);
            } else {
                let tails = heads.entry(vec![byte]).or_default();
                tails.extend(bits.into_iter().map(|bit| (bit, &[][..])));
            }
        }
        let mut head_tails = Vec::with_capacity(heads.len());
        let mut tails = Vec::new();
        let mut tail_bytes = Vec::new();
        for lits in heads.values() {
            let start = tails.len() as u32;
            for &(bit, tail) in lits {
                let at = tail_bytes.len() as u32;
                tail_bytes.extend(tail.iter().map(u8::to_ascii_lowercase));
                tails.push((bit, at, tail.len() as u32));
            }
            head_tails.push((start, tails.len() as u32));
        }
        let table = if heads.is_empty() {
            None
        } else {
            let dfa = DFA::builder()
                .ascii_case_insensitive(true)
                .match_kind(MatchKind::Standard)
                .build(heads.keys())
                .ok()?;
            Some(Table::of(&dfa, &head_tails, &tails)?)
        };
        Some(Prefilter {
            heads: table,
            tail_bytes,
            single_bit,
            singles: numbered,
        })
    }

    /// Sets in `bits` the bit of every rule with a literal in `hay`.
    ///
    /// One pass over the bytes: the heads' automaton (whose classes ignore case) and the
    /// numbers of the one-byte literals. A value of [`SPLIT`] bytes or more is read as two
    /// streams at once, its two halves, so that the automaton's table loads (each waits for
    /// the one before) overlap: the second stream starts [`HEAD`] - 1 bytes before the middle
    /// from the automaton's start, which is where a head ending in its half starts at the
    /// earliest. The automaton's state at a byte depends on the last [`HEAD`] bytes alone, so
    /// from the middle on the second stream is in the state a whole pass would be; what it
    /// finds before the middle, the first stream finds too (a bit set twice).
    pub fn scan(&self, hay: &[u8], bits: &mut [u64]) {
        let mut set = |bit: u32| {
            if let Some(w) = bits.get_mut(bit as usize / 64) {
                *w |= 1 << (bit % 64);
            }
        };
        let single = &self.single_bit;
        // the one-byte literals in a loop of their own: as fast as folded into the automaton's
        // loops below, which then only walk the automaton. (The automaton's step is written
        // out in each loop: through a shared `#[inline(always)]` method the scan ran 5 to 10 %
        // slower.)
        let mut seen = hay
            .iter()
            .fold(0u64, |seen, &b| seen | single[usize::from(b)]);
        match &self.heads {
            Some(t) if hay.len() >= SPLIT => {
                let mid = hay.len() / 2;
                let from = mid - (HEAD - 1);
                let (first, second) = (&hay[..mid], &hay[from..]);
                let (mut s1, mut s2) = (t.start, t.start);
                for (i, (&x, &y)) in first.iter().zip(second).enumerate() {
                    s1 = t.next(s1, x);
                    s2 = t.next(s2, y);
                    if s1 < t.match_end {
                        self.state_hit(t, s1, &hay[i + 1..], &mut set);
                    }
                    if s2 < t.match_end {
                        self.state_hit(t, s2, &hay[from + i + 1..], &mut set);
                    }
                }
                for (i, &y) in second.iter().enumerate().skip(first.len()) {
                    s2 = t.next(s2, y);
                    if s2 < t.match_end {
                        self.state_hit(t, s2, &hay[from + i + 1..], &mut set);
                    }
                }
            }
            Some(t) => {
                let mut state = t.start;
                for (at, &b) in hay.iter().enumerate() {
                    state = t.next(state, b);
                    if state < t.match_end {
                        self.state_hit(t, state, &hay[at + 1..], &mut set);
                    }
                }
            }
            None => {}
        }
        // the one-byte literals that occur, by their numbers
        while seen != 0 {
            let n = seen.trailing_zeros() as usize;
            seen &= seen - 1;
            if let Some(rule_bits) = self.singles.get(n) {
                rule_bits.iter().for_each(|&bit| set(bit));
            }
        }
    }

    /// Sets the bit of every literal whose head ends in match state `state` and whose tail
    /// `rest` (the bytes after the head) starts with.
    #[cold]
    fn state_hit(&self, t: &Table, state: u32, rest: &[u8], set: &mut impl FnMut(u32)) {
        let row = (state / t.stride) as usize;
        let Some(&(from, to)) = t.match_at.get(row) else {
            return;
        };
        for &(bit, at, len) in t
            .match_literals
            .get(from as usize..to as usize)
            .unwrap_or(&[])
        {
            if len == 0 {
                set(bit);
                continue;
            }
            let tail = self
                .tail_bytes
                .get(at as usize..(at + len) as usize)
                .unwrap_or(&[]);
            if rest
                .get(..tail.len())
                .is_some_and(|r| r.eq_ignore_ascii_case(tail))
            {
                set(bit);
            }
        }
    }
}

/// A DFA's transitions as one flat table walked with a lookup and a compare per byte: rows of
/// byte classes, states numbered by their row's start, match states first (a state below
/// `match_end` is one).
#[derive(Debug)]
struct Table {
    /// Byte -> column.
    class: [u8; 256],
    /// Columns per row.
    stride: u32,
    /// Row-major: the next state (its row's start).
    trans: Vec<u32>,
    start: u32,
    match_end: u32,
    /// Per match state (by row), its range in `match_literals`.
    match_at: Vec<(u32, u32)>,
    /// (rule bit, range in `tail_bytes`) of every literal whose head ends in each match
    /// state, the state's in one run: a hit walks one list, not its heads and then theirs.
    match_literals: Vec<(u32, u32, u32)>,
}

impl Table {
    /// Walks `dfa` from its unanchored start and lays out every state it reaches, with the
    /// literals of its patterns: pattern (head) id -> range in `literals`, which holds (rule
    /// bit, range in the tail bytes) of each. None when the automaton is too large for the
    /// table's 32-bit offsets.
    fn of(dfa: &DFA, head_literals: &[(u32, u32)], literals: &[(u32, u32, u32)]) -> Option<Table> {
        use aho_corasick::automaton::StateID;
        use std::collections::HashMap;
        let start = dfa.start_state(Anchored::No).ok()?;
        // the reachable states, in the order found
        let mut ids: HashMap<StateID, u32> = HashMap::new();
        let mut order = vec![start];
        ids.insert(start, 0);
        let mut i = 0;
        while let Some(&sid) = order.get(i) {
            for b in 0..=255u8 {
                let n = dfa.next_state(Anchored::No, sid, b);
                ids.entry(n).or_insert_with(|| {
                    order.push(n);
                    (order.len() - 1) as u32
                });
            }
            i += 1;
        }
        // bytes that lead every state to the same state share a class (both cases of a letter
        // do: the automaton ignores case), found by refining one class state by state; never
        // more classes than the automaton's own, so the table is no larger than the DFA
        let mut class = [0u16; 256];
        let mut split: HashMap<(u16, StateID), u16> = HashMap::new();
        for &sid in &order {
            split.clear();
            for (b, c) in class.iter_mut().enumerate() {
                let n = dfa.next_state(Anchored::No, sid, b as u8);
                let fresh = split.len() as u16;
                *c = *split.entry((*c, n)).or_insert(fresh);
            }
        }
        let mut reps: Vec<usize> = Vec::new();
        let mut column = [0u8; 256];
        let mut seen: HashMap<u16, u8> = HashMap::new();
        for (b, &c) in class.iter().enumerate() {
            let fresh = u8::try_from(seen.len()).ok()?;
            column[b] = *seen.entry(c).or_insert_with(|| {
                reps.push(b);
                fresh
            });
        }
        let stride = reps.len() as u32;
        let states = order.len();
        // match states first
        let mut rank: Vec<u32> = vec![0; states];
        let mut n = 0u32;
        for pass in [true, false] {
            for (s, r) in rank.iter_mut().enumerate() {
                if dfa.is_match(order[s]) == pass {
                    *r = n;
                    n += 1;
                }
            }
        }
        let matches = order.iter().filter(|&&sid| dfa.is_match(sid)).count() as u32;
        let total = u32::try_from(states).ok()?.checked_mul(stride)?;
        let mut trans = vec![0u32; total as usize];
        let mut match_at = vec![(0u32, 0u32); matches as usize];
        let mut match_literals = Vec::new();
        for (s, &sid) in order.iter().enumerate() {
            let row = rank[s] as usize * stride as usize;
            for (c, &b) in reps.iter().enumerate() {
                let to = ids.get(&dfa.next_state(Anchored::No, sid, b as u8))?;
                trans[row + c] = rank[*to as usize] * stride;
            }
            if dfa.is_match(sid) {
                let from = match_literals.len() as u32;
                for k in 0..dfa.match_len(sid) {
                    let head = dfa.match_pattern(sid, k).as_usize();
                    let &(a, b) = head_literals.get(head)?;
                    match_literals.extend_from_slice(literals.get(a as usize..b as usize)?);
                }
                match_at[rank[s] as usize] = (from, match_literals.len() as u32);
            }
        }
        Some(Table {
            class: column,
            stride,
            trans,
            start: rank[0] * stride,
            match_end: matches * stride,
            match_at,
            match_literals,
        })
    }

    /// The state after `state` on the byte `b`.
    #[inline(always)]
    fn next(&self, state: u32, b: u8) -> u32 {
        let c = u32::from(self.class[usize::from(b)]);
        self.trans
            .get((state + c) as usize)
            .copied()
            .unwrap_or(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str) -> Option<Vec<String>> {
        required_literals(p).map(|v| {
            v.into_iter()
                .map(|s| String::from_utf8_lossy(&s).into_owned())
                .collect()
        })
    }

    #[test]
    fn extracts_required_literals() {
        assert_eq!(lits("(?i)union\\s+select"), Some(vec!["select".into()]));
        assert_eq!(lits("foo|bar"), Some(vec!["bar".into(), "foo".into()]));
        assert_eq!(lits("(?i:<script)"), Some(vec!["<script".into()]));
        assert_eq!(lits("a?b*"), None);
        assert_eq!(lits("\\d+"), None);
        // alternation with one branch without literals: no requirement
        assert_eq!(lits("abc|\\d+"), None);
        // small classes expand: [fF]oo -> "foo"
        assert_eq!(lits("[fF]oo"), Some(vec!["foo".into()]));
        // an optional piece makes two exact strings
        assert_eq!(
            lits("java(?:script)?:"),
            Some(vec!["java:".into(), "javascript:".into()])
        );
        // an unbounded optional piece is not required, the rest is
        assert_eq!(lits("java(?:script)*:"), Some(vec!["java".into()]));
    }

    /// The scan's answer is exactly which rules have a literal in the value (ASCII case
    /// ignored), for literals of every length the tables and the automaton split between.
    #[test]
    fn scan_answers_which_rules_have_a_literal_in_the_value() {
        let rules: Vec<(u32, Vec<Vec<u8>>)> = vec![
            (0, vec![b"<".to_vec(), b">".to_vec()]),
            (1, vec![b"||".to_vec()]),
            (2, vec![b"Ab".to_vec(), b"c".to_vec()]),
            (3, vec![b"select".to_vec(), b"<sc".to_vec()]),
            (4, vec![b"'".to_vec(), b"a'b".to_vec()]),
            (5, vec![b"zz".to_vec()]),
        ];
        let pf = Prefilter::build(&rules).unwrap();
        let alphabet = b"aAbBcCsSeElLtTzZ<>|' x";
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..5_000 {
            let x = next();
            let len = (x % 12) as usize;
            let hay: Vec<u8> = (0..len)
                .map(|i| alphabet[((x >> (5 * i % 59)) as usize) % alphabet.len()])
                .collect();
            scan_as_naive_search(&pf, &rules, &hay);
        }
    }

    /// Scans `hay` and checks each rule's bit against a naive case-insensitive search for its
    /// literals; returns the rules found.
    fn scan_as_naive_search(pf: &Prefilter, rules: &[(u32, Vec<Vec<u8>>)], hay: &[u8]) -> u64 {
        let mut bits = [0u64];
        pf.scan(hay, &mut bits);
        let lower = hay.to_ascii_lowercase();
        for (bit, lits) in rules {
            let want = lits.iter().any(|l| {
                let l = l.to_ascii_lowercase();
                lower.windows(l.len()).any(|w| w == l.as_slice())
            });
            let got = bits[0] & (1 << bit) != 0;
            assert_eq!(
                got,
                want,
                "rule {bit} on {:?}",
                String::from_utf8_lossy(hay)
            );
        }
        bits[0]
    }

    /// [`scan_as_naive_search`], counting per rule the values it was found in.
    fn scan_counting(
        pf: &Prefilter,
        rules: &[(u32, Vec<Vec<u8>>)],
        hay: &[u8],
        hits: &mut [usize],
    ) {
        let found = scan_as_naive_search(pf, rules, hay);
        for (bit, _) in rules {
            if let Some(h) = hits.get_mut(*bit as usize) {
                *h += usize::from(found & (1 << bit) != 0);
            }
        }
    }

    /// Literals longer than the automaton's heads: those sharing a head, tails running past
    /// the value's end, both cases; the answer is still exactly a naive search's.
    #[test]
    fn literals_longer_than_their_heads_are_checked_to_their_end() {
        let rules: Vec<(u32, Vec<Vec<u8>>)> = vec![
            (0, vec![b"abab-abab".to_vec()]),
            (1, vec![b"abab-abba".to_vec(), b"bbbbbbbbbbbb".to_vec()]),
            (2, vec![b"abab-a".to_vec()]),
            (3, vec![b"ab-".to_vec(), b"aaaaaaab".to_vec()]),
            (4, vec![b"b-b-b-b-a".to_vec()]),
            (5, vec![b"Ba".to_vec(), b"-".to_vec()]),
        ];
        assert!(rules.iter().any(|(_, l)| l.iter().any(|l| l.len() > HEAD)));
        let pf = Prefilter::build(&rules).unwrap();
        let all: Vec<&[u8]> = rules
            .iter()
            .flat_map(|(_, l)| l.iter().map(|l| &l[..]))
            .collect();
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut hits = [0usize; 6];
        for _ in 0..20_000 {
            // pieces of literals (whole, cut short, in either case) and single bytes
            let mut hay = Vec::new();
            for _ in 0..next() % 4 {
                let r = next();
                let lit = all[(r % all.len() as u64) as usize];
                let (from, to) = match (r >> 8) % 4 {
                    0 => (0, lit.len()),
                    1 => (0, (r >> 16) as usize % lit.len()),
                    2 => ((r >> 16) as usize % lit.len(), lit.len()),
                    _ => (0, 0),
                };
                for &b in &lit[from..to] {
                    let upper = next().is_multiple_of(3);
                    hay.push(if upper { b.to_ascii_uppercase() } else { b });
                }
                if (r >> 24).is_multiple_of(3) {
                    hay.push(b"ab-xB"[(r >> 32) as usize % 5]);
                }
            }
            scan_counting(&pf, &rules, &hay, &mut hits);
        }
        // every rule both matched and did not somewhere (the test saw both answers)
        assert!(hits.iter().all(|&h| h > 100 && h < 19_900), "{hits:?}");
    }

    /// Values long enough to be read as two streams at once: literals of every length placed
    /// anywhere (across the middle, at either end, in either case); the answer is still
    /// exactly a naive search's.
    #[test]
    fn long_values_read_in_two_streams_answer_as_a_naive_search() {
        let rules: Vec<(u32, Vec<Vec<u8>>)> = vec![
            (0, vec![b"abcdef-ghij".to_vec()]),
            (1, vec![b"xyz".to_vec(), b"q".to_vec()]),
            (2, vec![b"<".to_vec()]),
            (3, vec![b"||".to_vec(), b"or".to_vec()]),
            (4, vec![b"bcdefg".to_vec()]),
            (5, vec![b"ef-g".to_vec(), b"zz".to_vec()]),
        ];
        let pf = Prefilter::build(&rules).unwrap();
        let all: Vec<&[u8]> = rules
            .iter()
            .flat_map(|(_, l)| l.iter().map(|l| &l[..]))
            .collect();
        let filler = b"abcdefgxyz-|<orq .";
        let mut next = xorshift(0x51_7cc1_b727_220a);
        let mut hits = [0usize; 6];
        for _ in 0..20_000 {
            let len = SPLIT + (next() % 150) as usize;
            let mut hay: Vec<u8> = (0..len)
                .map(|_| filler[(next() % filler.len() as u64) as usize])
                .collect();
            for _ in 0..next() % 3 {
                let r = next();
                let lit = all[(r % all.len() as u64) as usize];
                // around the middle, where the second stream starts, or anywhere
                let at = match (r >> 8) % 3 {
                    0 => (len / 2).saturating_sub((r >> 16) as usize % (HEAD + 2)),
                    1 => len.saturating_sub(lit.len()),
                    _ => (r >> 16) as usize % len,
                };
                for (i, &b) in lit.iter().enumerate() {
                    if let Some(slot) = hay.get_mut(at + i) {
                        let upper = next().is_multiple_of(2);
                        *slot = if upper { b.to_ascii_uppercase() } else { b };
                    }
                }
            }
            scan_counting(&pf, &rules, &hay, &mut hits);
        }
        assert!(hits.iter().all(|&h| h > 100 && h < 19_900), "{hits:?}");
    }

    /// One-byte literals past the [`MAX_SINGLES`] that are numbered are found by the
    /// automaton instead.
    #[test]
    fn one_byte_literals_past_the_numbered_ones_are_still_found() {
        let bytes: Vec<u8> = (0x80..=0xFF).chain(b"<>'".iter().copied()).collect();
        assert!(bytes.len() > MAX_SINGLES);
        let rules: Vec<(u32, Vec<Vec<u8>>)> = (0..60u32)
            .map(|bit| {
                let lits = bytes
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i as u32 % 60 == bit)
                    .map(|(_, &b)| vec![b])
                    .collect();
                (bit, lits)
            })
            .collect();
        let pf = Prefilter::build(&rules).unwrap();
        assert_eq!(pf.singles.len(), MAX_SINGLES);
        let mut next = xorshift(0x2f6b_1c3d_9a4e_8b71);
        for _ in 0..5_000 {
            let len = (next() % 40) as usize;
            let hay: Vec<u8> = (0..len)
                .map(|_| match next() % 4 {
                    0 => b'a',
                    _ => bytes[(next() % bytes.len() as u64) as usize],
                })
                .collect();
            scan_as_naive_search(&pf, &rules, &hay);
        }
    }

    /// Between required sets of single bytes, the rarer bytes are chosen: a command separator
    /// before the letters of the command that follows it.
    #[test]
    fn rarer_literals_are_preferred() {
        assert_eq!(
            required_literals(r"(?:;|\|)\s*(?:s|t)"),
            Some(vec![b";".to_vec(), b"|".to_vec()])
        );
        assert_eq!(
            required_literals(r"(?:s|t)\s*(?:;|\|)"),
            Some(vec![b";".to_vec(), b"|".to_vec()])
        );
        // a longer literal still beats any single byte
        assert_eq!(
            required_literals(r";\s*select"),
            Some(vec![b"select".to_vec()])
        );
    }

    /// A start and an end read across the boundary of two adjacent pieces: `..` and `e.`
    /// for 930100's doubled dot, where either piece alone only requires `.`.
    #[test]
    fn literals_are_read_across_piece_boundaries() {
        // the class of more than four bytes leaves the piece inexact: no product of its
        // strings, but its starts (`.`, `%2e`, `c0%`) and ends (`.`, `%2e`, `e`)
        let dots = lits("(?:\\.|%2e|c0%[256aef]e){2}").unwrap();
        assert!(dots.iter().all(|l| l.len() >= 2), "{dots:?}");
        assert!(
            dots.contains(&"..".into()) && dots.contains(&"e.".into()),
            "{dots:?}"
        );
        // an end of a class-led piece and a start of the next: `<a`..`<z`, not `<` alone
        let tags = lits("<(?:a[a-z]*|b[a-z]+|script)\\s").unwrap();
        assert!(
            tags.iter().all(|l| l.starts_with('<') && l.len() >= 2),
            "{tags:?}"
        );
    }

    /// A xorshift generator (deterministic test inputs).
    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// A string the syntax tree `h` describes: a random branch, repetition count (at most
    /// three beyond the minimum, eight in all) and class byte at each node. Assertions are
    /// ignored: the caller keeps the strings the pattern really matches.
    fn generate(h: &Hir, next: &mut impl FnMut() -> u64, out: &mut Vec<u8>) {
        match h.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(l) => out.extend_from_slice(&l.0),
            HirKind::Class(Class::Bytes(c)) => {
                let ranges = c.ranges();
                if let Some(r) = ranges.get(next() as usize % ranges.len().max(1)) {
                    let span = u64::from(r.end() - r.start()) + 1;
                    out.push(r.start() + (next() % span) as u8);
                }
            }
            HirKind::Class(Class::Unicode(c)) => {
                let ranges = c.ranges();
                if let Some(r) = ranges.get(next() as usize % ranges.len().max(1)) {
                    let span = u64::from(r.end() as u32 - r.start() as u32) + 1;
                    if let Some(ch) = char::from_u32(r.start() as u32 + (next() % span) as u32) {
                        let mut b = [0; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                    }
                }
            }
            HirKind::Capture(c) => generate(&c.sub, next, out),
            HirKind::Repetition(r) => {
                let extra = r.max.map_or(3, |m| (m - r.min).min(3));
                let n = r.min + (next() % u64::from(extra + 1)) as u32;
                for _ in 0..n.min(8) {
                    generate(&r.sub, next, out);
                }
            }
            HirKind::Concat(subs) => subs.iter().for_each(|s| generate(s, next, out)),
            HirKind::Alternation(subs) => generate(&subs[next() as usize % subs.len()], next, out),
        }
    }

    /// Generates `tries` strings from `hir` and checks that each one `matches` holds one of
    /// `want` (ASCII case ignored); the number checked.
    fn literals_in_matches(
        pattern: &str,
        want: &[Vec<u8>],
        hir: &Hir,
        tries: usize,
        next: &mut impl FnMut() -> u64,
        matches: impl Fn(&[u8]) -> bool,
    ) -> usize {
        let mut checked = 0;
        for _ in 0..tries {
            let mut s = Vec::new();
            generate(hir, next, &mut s);
            if !matches(&s) {
                continue;
            }
            let lower = s.to_ascii_lowercase();
            assert!(
                want.iter()
                    .any(|l| lower.windows(l.len()).any(|w| w == &l[..])),
                "{pattern} matches {:?} without any of {want:?}",
                s.escape_ascii().to_string()
            );
            checked += 1;
        }
        checked
    }

    /// The requirements hold on patterns built to stress what may match nothing (optional
    /// and empty branches, zero-minimum repetitions, assertions) beside classes too large to
    /// multiply, where a start or an end read wrongly would drop a literal a match needs.
    #[test]
    fn literals_hold_where_pieces_may_match_nothing() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let patterns = [
            r"a(?:b|)c[a-z]+d",
            r"(?:x[a-z]*)?y{2}[0-9]+",
            r"(?:ab|c[0-9a-f]d){2,3}e",
            r"^(?:\.|%2e){2}(?:/|\\)",
            r"[a-z]{0,2}\.\.[a-z]{2,}",
            r"(?:a|b?)(?:c|d?)e[a-z]+",
            r"x(?:[a-z]+y)?z",
            r"(?:(?:ab)*|cd)ef",
            r"\b(?:on[a-z]+|src)\s*=",
            r"[<>](?:[a-z]+|)[/ ]+x",
            r"(?:%[0-9a-f]{2}|[a-z])+\.php",
            r"(?:\.{2}|%2e%2e)[/\\]",
            r"(?:[a-z][0-9]|){3}q",
            r"(?:u[0-9a-f]{4}|x[0-9a-f]{2})+;",
        ];
        let mut checked = 0;
        for pattern in patterns {
            let want = required_literals(pattern).unwrap_or_else(|| panic!("none: {pattern}"));
            let hir = pcre_like_hir(pattern).unwrap();
            let re = regex::bytes::RegexBuilder::new(pattern)
                .unicode(false)
                .build()
                .unwrap();
            checked +=
                literals_in_matches(pattern, &want, &hir, 2_000, &mut next, |s| re.is_match(s));
        }
        assert!(checked > 20_000, "{checked} matches");
    }

    /// Every requirement read from CRS 3.3.4's patterns holds: strings generated from each
    /// pattern's syntax tree (a random branch, repetition count and class byte at each node)
    /// that the pattern matches contain one of its literals.
    #[test]
    fn crs_literals_hold_on_generated_matches() {
        let dir = std::path::Path::new("/usr/share/modsecurity-crs/rules");
        if super::super::without_debian_crs("crs_literals_hold_on_generated_matches") {
            return;
        }
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let (mut checked, mut patterns) = (0, 0);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "conf") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (name, pattern) in super::super::operator::tests::crs_operators(&text) {
                if name != "rx" {
                    continue;
                }
                let (Some(want), Ok(hir)) = (required_literals(&pattern), pcre_like_hir(&pattern))
                else {
                    continue;
                };
                let Ok(pcre) = pcre2::bytes::RegexBuilder::new()
                    .dotall(true)
                    .multi_line(true)
                    .build(&pattern)
                else {
                    continue;
                };
                patterns += 1;
                checked += literals_in_matches(&pattern, &want, &hir, 300, &mut next, |s| {
                    pcre.is_match(s).unwrap_or(false)
                });
            }
        }
        println!("{checked} generated matches of {patterns} patterns hold a literal");
        assert!(
            patterns > 150 && checked > 10_000,
            "{patterns} patterns, {checked} matches"
        );
    }

    #[test]
    fn prefilter_is_a_superset_of_the_regex() {
        // long literals go to the automaton, one- and two-byte ones to the tables
        let pats = [
            "(?i)union\\s+select",
            "etc/passwd",
            "<script",
            "abc|\\d+",
            "[<>]",
            "\\|\\|",
            "(?i)a[bB]",
        ];
        let mut rules = Vec::new();
        for (i, p) in pats.iter().enumerate() {
            if let Some(l) = required_literals(p) {
                rules.push((i as u32, l));
            }
        }
        let pf = Prefilter::build(&rules).unwrap();
        assert_eq!(lits("[<>]"), Some(vec!["<".into(), ">".into()]));
        assert_eq!(lits("\\|\\|"), Some(vec!["||".into()]));
        for hay in [
            "x UNION  SELECT y",
            "/etc/passwd",
            "<SCRIPT>",
            "nothing here",
            "a || b",
            "x>y",
            "AB",
            "ab",
            "",
        ] {
            let mut bits = [0u64];
            pf.scan(hay.as_bytes(), &mut bits);
            if hay == "nothing here" || hay.is_empty() {
                assert_eq!(bits[0], 0, "no literal in {hay:?}");
            }
            for (i, p) in pats.iter().enumerate() {
                let re = regex::bytes::RegexBuilder::new(p)
                    .unicode(false)
                    .build()
                    .unwrap();
                let filtered = rules.iter().any(|(b, _)| *b == i as u32);
                if re.is_match(hay.as_bytes()) && filtered {
                    assert!(bits[0] & (1 << i) != 0, "{p} on {hay}");
                }
            }
        }
    }

    #[test]
    fn literal_braces_read_as_pcre2_does() {
        for (pattern, want) in [
            ("a{2}b{1,}c{3,4}", "a{2}b{1,}c{3,4}"),
            ("\\)\\s*{", "\\)\\s*\\{"),
            ("{.+}", "\\{.+}"),
            // `{,3}` is a literal before PCRE2 10.43
            ("a{,3}", "a\\{,3}"),
            ("x{1,y}", "x\\{1,y}"),
            // classes and escapes as they are
            ("[{}]\\{\\x{7f}", "[{}]\\{\\x{7f}"),
            ("[]{][:alpha:]{", "[]{][:alpha:]\\{"),
            // a braced hex escape above 0x7F is a byte to PCRE2 (CRS 4's 941310), the fixed
            // form says so to the regex crate; larger values do not compile in PCRE2 either
            ("\\x{bc}[^\\x{BE}>]*", "\\xbc[^\\xbe>]*"),
            ("\\x{00bc}\\x{100}\\x{zz}", "\\xbc\\x{100}\\x{zz}"),
        ] {
            assert_eq!(pcre_braces(pattern), want, "{pattern}");
        }
        // CRS 3.3.4 patterns the regex crate refused before (933170, 934100): literals now
        assert_eq!(
            lits("[oOcC]:\\d+:\\\".+?\\\":\\d+:{.*}"),
            Some(vec![":\"".into()])
        );
        assert_eq!(
            lits("function\\s*\\(\\s*\\)\\s*{|this\\.constructor"),
            Some(vec!["function".into(), "this.constructor".into()])
        );
        // the literals are PCRE2's: every value PCRE2 matches holds one
        for pattern in [
            "[oOcC]:\\d+:\\\".+?\\\":\\d+:{.*}",
            "^\\(\\s*\\)\\s+{",
            "(?:function\\s*\\(\\s*\\)\\s*{|this\\.constructor)",
            "a{,3}b",
        ] {
            let l = required_literals(pattern).unwrap_or_else(|| panic!("{pattern}"));
            let pcre = pcre2::bytes::RegexBuilder::new()
                .build(pattern)
                .unwrap_or_else(|e| panic!("{pattern}: {e}"));
            for hay in [
                "O:8:\"stdClass\":1:{s:1:\"a\";}",
                "() { :; }; /bin/cat",
                "function ( ) {return 1}",
                "a{,3}b",
                "ab",
                "plain text",
            ] {
                if pcre.is_match(hay.as_bytes()).unwrap_or(false) {
                    let lower = hay.to_ascii_lowercase();
                    assert!(
                        l.iter()
                            .any(|x| lower.as_bytes().windows(x.len()).any(|w| w == &x[..])),
                        "{pattern} matches {hay:?} without any of {l:?}"
                    );
                }
            }
        }
    }
}
