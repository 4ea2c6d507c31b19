//! Running the compiled rules over one request, the way libmodsecurity 3 does in
//! `DetectionOnly` mode: phase 1 on the head, the body processor, phase 2; per rule, every
//! target value through the rule's transformation pipeline and operator; `setvar` once per
//! matching value; a chain's next link only when this one matched; `ctl`, `skipAfter` and the
//! log entry after the whole chain matched.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use foldhash::fast::RandomState;

use super::ast::IdRange;
use super::collections::{BodyProcessor, Collections, Entry, RequestInput};
use super::injection;
use super::macros::Template;
use super::operator::{Captures, Operator};
use super::rules::{
    Check, Checks, Coll, Compiled, Ctl, DynamicCache, Folded, Item, LiveNode, NO_PREFILTER, Op,
    Rule, Scalar, Sel, SetOp, SetVar, Target, Var, capture_index, multipart_name, scan_node,
    steps_back,
};
use super::transform::apply_all;

type Map<K, V> = HashMap<K, V, RandomState>;

/// Value kinds of the dense slot layout: one per collection (values and names apart), then
/// one per single-valued variable from [`SCALAR_BASE`]. `kind_len` says how many slots each
/// takes in a request; `resolve` hands values out under the same kinds.
mod kind {
    pub const ARGS_GET: u32 = 1;
    pub const ARGS_POST: u32 = 2;
    pub const ARGS_GET_NAMES: u32 = 3;
    pub const ARGS_POST_NAMES: u32 = 4;
    pub const COOKIES: u32 = 5;
    pub const COOKIES_NAMES: u32 = 6;
    pub const HEADERS: u32 = 7;
    pub const HEADERS_NAMES: u32 = 8;
    pub const FILES: u32 = 9;
    pub const FILES_NAMES: u32 = 10;
    pub const MULTIPART_PART_HEADERS: u32 = 11;
    pub const XML_TEXT: u32 = 12;
    pub const XML_ATTRS: u32 = 13;
    /// JSON arguments: in ARGS, not in ARGS_POST.
    pub const ARGS_OTHER: u32 = 14;
    pub const ARGS_OTHER_NAMES: u32 = 15;
}
const KINDS: usize = 64;
const SCALAR_BASE: u32 = 32;
const UNSET: u32 = u32::MAX - 1;
const RAW: u32 = u32::MAX;

/// The kinds in the order their slots are numbered: the headers, then the single-valued
/// variables, then the rest. A slot's number depends on how many slots come before it, so
/// the kinds whose counts vary least from request to request come first: a header keeps its
/// slot from one request to the next whatever the arguments (see [`Memo::slot_prev`]).
const SLOT_ORDER: [u32; KINDS] = {
    assert!(KINDS.is_power_of_two());
    let mut order = [0u32; KINDS];
    let mut at = 0;
    order[at] = kind::HEADERS;
    at += 1;
    order[at] = kind::HEADERS_NAMES;
    at += 1;
    let mut k = SCALAR_BASE;
    while (k as usize) < KINDS {
        order[at] = k;
        at += 1;
        k += 1;
    }
    k = 0;
    while k < SCALAR_BASE {
        if k != kind::HEADERS && k != kind::HEADERS_NAMES {
            order[at] = k;
            at += 1;
        }
        k += 1;
    }
    order
};

/// Most matches kept per rule for `--explain`.
const MAX_EVIDENCE: usize = 8;
/// Longest matched value kept per match.
const MAX_VALUE: usize = 256;

/// Bytes borrowed from the request, shared with the TX collection, or made for one use.
enum Data<'a> {
    Borrowed(&'a [u8]),
    Shared(Arc<[u8]>),
    Name(Arc<str>),
    Owned(Vec<u8>),
    /// A count, in decimal, without an allocation.
    Count {
        digits: [u8; 24],
        len: u8,
    },
}

impl Data<'_> {
    fn count(n: usize) -> Data<'static> {
        let mut digits = [0u8; 24];
        let len = decimal(false, n as u64, &mut digits) as u8;
        Data::Count { digits, len }
    }
}

/// An integer in decimal into `buf` (room for any 64-bit one and its sign); the length written.
/// By hand: `write!` through `fmt` costs more than the rule that asked for the count.
fn decimal(negative: bool, magnitude: u64, buf: &mut [u8; 24]) -> usize {
    let mut digits = [0u8; 24];
    let mut at = digits.len();
    let mut m = magnitude;
    loop {
        at -= 1;
        digits[at] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        digits[at] = b'-';
    }
    let len = (digits.len() - at).min(buf.len());
    buf[..len].copy_from_slice(&digits[at..at + len]);
    len
}

impl std::ops::Deref for Data<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Borrowed(b) => b,
            Data::Shared(b) => b,
            Data::Name(n) => n.as_bytes(),
            Data::Owned(b) => b,
            Data::Count { digits, len } => &digits[..usize::from(*len)],
        }
    }
}

impl<'a> From<Cow<'a, [u8]>> for Data<'a> {
    fn from(c: Cow<'a, [u8]>) -> Data<'a> {
        match c {
            Cow::Borrowed(b) => Data::Borrowed(b),
            Cow::Owned(o) => Data::Owned(o),
        }
    }
}

/// A TX (or other persistent collection) variable: name lowercased, value shared with readers.
pub(super) type CollMap = Map<Arc<str>, Arc<[u8]>>;

/// One value a target resolved to.
struct Val<'a> {
    var: Var,
    /// The entry's key (empty for single-valued variables).
    key: Data<'a>,
    data: Data<'a>,
    /// Stable identity of the value within the request, for the pipeline cache.
    slot: Option<u32>,
}

impl Val<'_> {
    /// `ARGS:name`, or the variable's name alone.
    fn full_key(&self) -> String {
        let mut out = String::new();
        self.write_full_key(&mut out);
        out
    }

    /// [`Val::full_key`] into a reused buffer.
    fn write_full_key(&self, out: &mut String) {
        out.clear();
        out.push_str(self.var.name());
        if !self.key.is_empty() || matches!(self.var, Var::Collection(_)) {
            out.push(':');
            match std::str::from_utf8(&self.key) {
                Ok(k) => out.push_str(k),
                Err(_) => {
                    let _ = write!(out, "{}", String::from_utf8_lossy(&self.key));
                }
            }
        }
    }
}

/// One match of a rule on one value, for reports and `--explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// `ARGS:q`, `REQUEST_HEADERS:User-Agent`, `REQUEST_FILENAME`.
    pub variable: String,
    /// The value after the rule's transformations (cut to 256 bytes).
    pub value: Vec<u8>,
    /// The transformations applied, in order.
    pub transforms: Vec<&'static str>,
}

/// A rule whose chain matched and that logs (what libmodsecurity reports through its log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedRule {
    pub id: u64,
    pub phase: u8,
    pub msg: Option<String>,
    pub severity: Option<u8>,
    /// The rule's tags (shared with the rule).
    pub tags: Arc<[String]>,
    /// Anomaly points this rule added (its `setvar:tx.*anomaly_score_pl*=+N`).
    pub points: i64,
    pub evidence: Vec<Evidence>,
}

/// Everything one request produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub matched: Vec<MatchedRule>,
    /// The TX collection at the end of phase 2.
    pub tx: Tx,
}

/// The TX collection (names lowercased).
#[derive(Debug, Clone, Default)]
pub struct Tx(Layered);

impl Tx {
    /// The value of `tx.<name>` (`name` lowercase).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get_key_value(name).map(|(_, v)| &v[..])
    }

    /// Gives the memory of the request's own writes to this thread's next request.
    pub fn recycle(self) {
        let Layered { over: mut map, .. } = self.0;
        map.clear();
        let _ = SCRATCH.try_with(|cell| {
            if let Ok(mut kept) = cell.try_borrow_mut()
                && kept.tx.capacity() < map.capacity()
            {
                kept.tx = map;
            }
        });
    }

    /// Every variable, sorted by name.
    #[cfg(test)]
    pub fn sorted(&self) -> Vec<(&str, &[u8])> {
        let mut all: Vec<(&str, &[u8])> = Vec::new();
        self.0
            .for_each(|_| true, None, |k, v| all.push((&k[..], &v[..])));
        all.sort_unstable();
        all
    }
}

/// A collection as a request sees it: the values every request starts with (TX as CRS's
/// defaults leave it, a map built at load and shared read-only between requests) under what
/// this request wrote. Nothing is copied per request: copying the hundred-odd defaults, two
/// reference counts per entry both ways, cost more than most rules. A name is read from the
/// request's writes first; a default the request unset is listed in `gone`.
#[derive(Debug, Clone, Default)]
pub(super) struct Layered {
    base: Option<Arc<CollMap>>,
    over: CollMap,
    /// A bit per [`name_tag`] of the names ever put in `over` (a superset): most reads are of
    /// defaults the request never wrote, answered without hashing the name for `over`.
    over_tags: [u64; 4],
    gone: Vec<Arc<str>>,
}

/// A cheap summary of a name for [`Layered::over_tags`].
fn name_tag(name: &str) -> u8 {
    let b = name.as_bytes();
    let first = b.first().copied().unwrap_or(0);
    let last = b.last().copied().unwrap_or(0);
    (b.len() as u8).wrapping_mul(31) ^ first.wrapping_mul(7) ^ last
}

impl Layered {
    fn from_map(over: CollMap) -> Layered {
        let mut l = Layered {
            base: None,
            over: CollMap::default(),
            over_tags: [0; 4],
            gone: Vec::new(),
        };
        for k in over.keys() {
            l.tag(k);
        }
        l.over = over;
        l
    }

    fn tag(&mut self, name: &str) {
        let t = name_tag(name);
        self.over_tags[usize::from(t >> 6)] |= 1 << (t & 63);
    }

    /// Whether `name` may be in `over` (false: certainly not).
    fn maybe_over(&self, name: &str) -> bool {
        let t = name_tag(name);
        self.over_tags[usize::from(t >> 6)] & (1 << (t & 63)) != 0
    }

    /// Whether the default `name` is hidden: written or unset by the request.
    fn hides(&self, name: &Arc<str>) -> bool {
        self.gone.contains(name) || (self.maybe_over(name) && self.over.contains_key(&**name))
    }

    /// No variable at all (the defaults not laid under yet).
    fn is_empty(&self) -> bool {
        self.base.is_none() && self.over.is_empty()
    }

    fn get_key_value(&self, name: &str) -> Option<(&Arc<str>, &Arc<[u8]>)> {
        if self.maybe_over(name)
            && let Some(kv) = self.over.get_key_value(name)
        {
            return Some(kv);
        }
        let base = self.base.as_deref()?;
        if self.gone.iter().any(|g| &**g == name) {
            return None;
        }
        base.get_key_value(name)
    }

    /// Calls `f` on every variable whose name passes `keep`, in no particular order (the
    /// names are checked before the request's writes are looked up for them). `defaults`, when
    /// given, are the names of the defaults known to pass `keep`: only those are looked at.
    fn for_each<'s>(
        &'s self,
        keep: impl Fn(&str) -> bool,
        defaults: Option<&[Arc<str>]>,
        mut f: impl FnMut(&'s Arc<str>, &'s Arc<[u8]>),
    ) {
        for (k, v) in &self.over {
            if keep(k) {
                f(k, v);
            }
        }
        let Some(base) = self.base.as_deref() else {
            return;
        };
        match defaults {
            Some(names) => {
                for name in names {
                    if !self.hides(name)
                        && let Some((k, v)) = base.get_key_value(&**name)
                    {
                        f(k, v);
                    }
                }
            }
            None => {
                for (k, v) in base {
                    if keep(k) && !self.hides(k) {
                        f(k, v);
                    }
                }
            }
        }
    }

    /// Sets `name` (`key`, when given, is `name` already shared).
    fn set(&mut self, name: &str, key: Option<&Arc<str>>, value: Arc<[u8]>) {
        if !self.gone.is_empty() {
            self.gone.retain(|g| &**g != name);
        }
        match key {
            // one lookup: the shared name is the entry's key if it is new
            Some(key) => {
                self.tag(key);
                self.over.insert(key.clone(), value);
            }
            None => {
                if self.maybe_over(name)
                    && let Some(cur) = self.over.get_mut(name)
                {
                    *cur = value;
                    return;
                }
                let key: Arc<str> = Arc::from(name);
                self.tag(&key);
                self.over.insert(key, value);
            }
        }
    }

    fn remove(&mut self, name: &str) {
        if self.maybe_over(name) {
            self.over.remove(name);
        }
        if let Some((k, _)) = self.base.as_deref().and_then(|b| b.get_key_value(name))
            && !self.gone.contains(k)
        {
            self.gone.push(k.clone());
        }
    }
}

struct State<'r> {
    /// The key/value collections by `coll_index`; TX (index 0) is `tx`, and `colls[0]` stays
    /// empty.
    colls: [CollMap; 6],
    tx: Layered,
    /// The entries matches appended to MATCHED_VARS: the first `matched_len` (the rest are
    /// spare buffers).
    matched_vars: Vec<(String, Vec<u8>)>,
    matched_len: usize,
    /// MATCHED_VARS in order: runs of those entries and the entries folded rules appended,
    /// lent by the rule set (never copied). The last entry is MATCHED_VAR(_NAME).
    matched_seq: Vec<MatchedRun<'r>>,
    removed_ids: Vec<IdRange>,
    removed_tags: Vec<String>,
    removed_target_id: Vec<(u64, String)>,
    removed_target_tag: Vec<(String, String)>,
    processor: Option<BodyProcessor>,
    body_access: bool,
    force_body: bool,
    engine_off: bool,
    marker: Option<&'r str>,
    skip_next: u32,
    /// First dense slot of each value kind (see `reset_caches`).
    bases: Vec<u32>,
    /// Bit k set when kind k has values in this request (a kind without any cannot hold a
    /// prefilter literal).
    nonempty: u64,
    /// Pipeline nodes in the rule set.
    nodes: u32,
    /// Union cells per node: the value kinds, then the named entries of `Compiled::keys`.
    cell_kinds: u32,
    /// The memo entry of each dense slot's value, or [`UNSET`] until looked up.
    slot_entry: Vec<u32>,
    /// Transformed values, prefilter answers and operator results per distinct value (boxed:
    /// handed between the thread's scratch and a request's state without copying it).
    memo: Box<Memo>,
    /// The union of the prefilter answers over every value of a kind (or of its entries of
    /// one name), per (cell, node), as offsets in `union_words` (or [`UNSET`]).
    union_bits: Vec<u32>,
    union_words: Vec<u64>,
    /// The cells of `union_bits` set since the last reset.
    union_touched: Vec<u32>,
    /// The rule targets some value of the request may match (by live bit), once `live_ready`.
    live: Vec<u64>,
    /// The part of `live` from the values of the head (see [`HEAD_KINDS`]), once worked out.
    live_head: Vec<u64>,
    live_ready: bool,
    /// The current phase's items to visit once `live_ready` (see [`runnable`]).
    runnable: Vec<u64>,
    /// The live bits `or_live` gathers for a value (a buffer).
    live_found: Vec<u32>,
    /// Bumped on every write to TX (a `%{tx.x}` expansion made at an earlier value stays
    /// right while it is unchanged).
    tx_gen: u64,
    /// The operator a TX-only dynamic argument last expanded to: (rule link, `tx_gen`).
    last_dynamic: Option<(u32, u64, Arc<Operator>)>,
    /// The captures in the memo (their index in `Memo::captures`) that TX:0-9 hold, when the
    /// last write of those names was a memoized capture.
    caps_at: Option<u32>,
    /// The buffer rules resolve their values into (kept between requests, emptied).
    vals: Vec<Val<'static>>,
    /// multiMatch's last value seen by the operator (a buffer kept between rules).
    multi_last: Vec<u8>,
    /// Buffers `setvar` expands names and values into (the value's also takes the expansions
    /// of operator arguments with macros).
    setvar_name: Vec<u8>,
    setvar_value: Vec<u8>,
    /// Per top-level rule evaluation.
    points: i64,
    /// The matches of the rule being evaluated that are evidence if its chain matches, as
    /// (MATCHED_VARS entry, pipeline node): copied into `evidence` only then. Most chains
    /// whose first link matches fail (920450's first link matches every header name).
    pending_evidence: Vec<(u32, u32)>,
    /// Buffers for a matched rule's evidence, reused between rules.
    evidence: Vec<Evidence>,
    outcome: Outcome,
    /// At load time only (see `fold`): what evaluating a rule did, recorded.
    trace: Option<Folded>,
}

impl<'r> State<'r> {
    /// A fresh state around `memo`. Deriving `Default` made a memo for every request only to
    /// drop it for the thread's own (an allocation, its hash seeds and cold code each time).
    fn with_memo(memo: Box<Memo>) -> State<'r> {
        State {
            colls: Default::default(),
            tx: Default::default(),
            matched_vars: Default::default(),
            matched_len: Default::default(),
            matched_seq: Default::default(),
            removed_ids: Default::default(),
            removed_tags: Default::default(),
            removed_target_id: Default::default(),
            removed_target_tag: Default::default(),
            processor: Default::default(),
            body_access: Default::default(),
            force_body: Default::default(),
            engine_off: Default::default(),
            marker: Default::default(),
            skip_next: Default::default(),
            bases: Default::default(),
            nonempty: Default::default(),
            nodes: Default::default(),
            cell_kinds: Default::default(),
            slot_entry: Default::default(),
            memo,
            union_bits: Default::default(),
            union_words: Default::default(),
            union_touched: Default::default(),
            live: Default::default(),
            live_head: Default::default(),
            live_ready: Default::default(),
            runnable: Default::default(),
            live_found: Default::default(),
            tx_gen: Default::default(),
            last_dynamic: Default::default(),
            caps_at: Default::default(),
            vals: Default::default(),
            multi_last: Default::default(),
            setvar_name: Default::default(),
            setvar_value: Default::default(),
            points: Default::default(),
            pending_evidence: Default::default(),
            evidence: Default::default(),
            outcome: Default::default(),
            trace: Default::default(),
        }
    }
}

impl Default for State<'_> {
    fn default() -> Self {
        State::with_memo(Box::default())
    }
}

pub(super) fn coll_index(c: Coll) -> usize {
    match c {
        Coll::Tx => 0,
        Coll::Ip => 1,
        Coll::Global => 2,
        Coll::Session => 3,
        Coll::User => 4,
        Coll::Resource => 5,
    }
}

/// `name` in the collection `idx` (see [`coll_index`]).
fn coll_get<'s>(
    st: &'s State<'_>,
    idx: usize,
    name: &str,
) -> Option<(&'s Arc<str>, &'s Arc<[u8]>)> {
    if idx == 0 {
        st.tx.get_key_value(name)
    } else {
        st.colls.get(idx)?.get_key_value(name)
    }
}

/// Sets `name` in the collection `idx` (`key`, when given, is `name` already shared).
fn coll_set(st: &mut State<'_>, idx: usize, name: &str, key: Option<&Arc<str>>, value: Arc<[u8]>) {
    if idx == 0 {
        forget_captures(st, name);
        st.tx.set(name, key, value);
    } else if let Some(map) = st.colls.get_mut(idx) {
        match map.get_mut(name) {
            Some(cur) => *cur = value,
            None => {
                map.insert(key.cloned().unwrap_or_else(|| Arc::from(name)), value);
            }
        }
    }
}

fn coll_remove(st: &mut State<'_>, idx: usize, name: &str) {
    if idx == 0 {
        forget_captures(st, name);
        st.tx.remove(name);
    } else if let Some(map) = st.colls.get_mut(idx) {
        map.remove(name);
    }
}

/// A write of TX `name` other than a capture's: TX:0-9 no longer stand for the last capture
/// once one of them is written.
fn forget_captures(st: &mut State<'_>, name: &str) {
    if capture_index(name).is_some() {
        st.caps_at = None;
    }
}

/// C `stoi`-like: optional whitespace and sign, then digits; 0 when there are none.
pub(crate) fn to_int(v: &[u8]) -> i64 {
    let s = v.iter().skip_while(|b| b.is_ascii_whitespace());
    let mut neg = false;
    let mut n: i64 = 0;
    for (i, &b) in s.enumerate() {
        match b {
            b'-' if i == 0 => neg = true,
            b'+' if i == 0 => {}
            b'0'..=b'9' => n = n.saturating_mul(10).saturating_add(i64::from(b - b'0')),
            _ => break,
        }
    }
    if neg { -n } else { n }
}

/// The work done on distinct values, kept between the requests of one thread: what a value
/// becomes through each pipeline, the prefilter's answer on each of those, and the verdicts of
/// the costly operators (`@rx`, `@pm`, `@detectSQLi`, `@detectXSS`) on them. Every one of
/// these is a function of the value's bytes alone, so a header, cookie or argument seen before
/// (in this request or an earlier one) costs a hash lookup instead of being decoded, scanned
/// and matched again. Bounded (see [`Memo::begin`]); emptied when the rule set changes.
#[derive(Default)]
struct Memo {
    /// `Compiled::memo_id` of the rule set the memo was filled for.
    owner: u64,
    /// Distinct raw values and their entry numbers.
    entries: Values,
    /// Per slot (below [`SLOT_PREV`]), the entry of the value the previous request had there:
    /// requests repeat their headers in the same places (Host, User-Agent, Accept), and
    /// comparing the bytes with that entry's costs less than hashing them and probing.
    slot_prev: Vec<u32>,
    /// Pipeline outputs per (entry, node): index in `arena`, [`RAW`] (the value itself) or
    /// [`UNSET`].
    cache: Vec<u32>,
    arena: Vec<Vec<u8>>,
    /// The arena entries of one value, as a list: the last one made per entry, and per arena
    /// entry the one made before it for the same value (or [`UNSET`]).
    entry_last: Vec<u32>,
    arena_prev: Vec<u32>,
    /// Prefilter answers per distinct transformed value, as offsets in `bit_words` (or
    /// [`UNSET`]): for each entry's value itself, and for each arena entry.
    raw_bits: Vec<u32>,
    arena_bits: Vec<u32>,
    bit_words: Vec<u64>,
    /// Operator results per rule link (high half) and transformed value (low half: arena
    /// index, or entry number with [`ENTRY_BIT`]): [`NO_MATCH`], [`MATCH`] (nothing
    /// captured), or `MATCH + 1 + i` for the captures in `captures[i]`. Compact, as it is
    /// looked up for most values a costly operator sees. For the rules with a
    /// [`Rule::verdict`] number it holds only the matches with captures: the rest of their
    /// results are in the verdict rows below (see [`known`]).
    ops: Map<u64, u32>,
    /// The verdicts of the rules with a [`Rule::verdict`] number, per transformed value: two
    /// bits a rule (see [`VERDICT_NO_MATCH`]) in a row of `verdict_row` words of
    /// `verdict_words`, found by offset per entry (`raw_verdicts`) and per arena entry
    /// (`arena_verdicts`), or [`UNSET`]. The live mask asks several of these rules about one
    /// value in turn: one row is one cache line, where the operator map spread them over the
    /// table. A match with captures is kept in `ops` (its code there names them).
    raw_verdicts: Vec<u32>,
    arena_verdicts: Vec<u32>,
    verdict_words: Vec<u64>,
    verdict_row: u32,
    captures: Vec<Captures>,
    /// What a [`SetVar::of_captures`] writes, by (rule link, `setvar` number, captures in
    /// `captures`): the expanded name (shared, so that a write adds no key) and value.
    capture_writes: Map<u64, (Arc<str>, Arc<[u8]>)>,
    /// The targets whose checks of a union cell a value passes (see [`live_mask`]), as an
    /// offset in `live_lists` ([`NO_TARGET`] for none). Per entry, the first cell asked about
    /// (most values only ever sit in one), as (cell, offset) with cell [`UNSET`] until then;
    /// other cells in `live_more`, keyed `cell << 32 | entry`.
    entry_live: Vec<(u32, u32)>,
    live_more: Map<u64, u32>,
    /// Lists of live bits: a length, then the bits (a value passes few targets' literals).
    live_lists: Vec<u32>,
    /// Bytes held in keys, arena and prefilter answers.
    bytes: usize,
}

/// A value's list of live targets when it has none (see [`Memo::entry_live`]).
const NO_TARGET: u32 = u32::MAX;
/// Marks an entry number (the value itself) among arena indices in operator memo keys.
const ENTRY_BIT: u32 = 1 << 31;
/// Operator memo results (see [`Memo::ops`]).
const NO_MATCH: u32 = 0;
const MATCH: u32 = 1;
/// Bounds of the memo, checked before each request: past any of them it starts afresh.
const MEMO_ENTRIES: usize = 1 << 16;
const MEMO_BYTES: usize = 32 << 20;
const MEMO_OPS: usize = 1 << 20;
const MEMO_CELLS: usize = 1 << 23;
/// Slots whose previous value [`Memo::slot_prev`] keeps.
const SLOT_PREV: usize = 1 << 12;

/// Distinct values numbered in order of arrival: a hash table of entry numbers, the bytes of
/// each kept by number (so that an entry's value is found from its number).
#[derive(Default)]
struct Values {
    table: hashbrown::HashTable<u32>,
    keys: Vec<Box<[u8]>>,
    hasher: RandomState,
}

/// The hash of entry `e`'s bytes (how the table finds it again when it grows).
fn key_hash(hasher: &RandomState, keys: &[Box<[u8]>], e: u32) -> u64 {
    use std::hash::BuildHasher;
    hasher.hash_one(keys.get(e as usize).map_or(&[][..], |k| &k[..]))
}

impl Values {
    /// The entry of `value`, numbered next when it is new.
    fn entry(&mut self, value: &[u8]) -> (u32, bool) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(value);
        let keys = &self.keys;
        if let Some(&e) = self.table.find(hash, |&e| {
            keys.get(e as usize).is_some_and(|k| **k == *value)
        }) {
            return (e, false);
        }
        let e = self.keys.len() as u32;
        self.keys.push(value.into());
        let (keys, hasher) = (&self.keys, &self.hasher);
        self.table
            .insert_unique(hash, e, |&e| key_hash(hasher, keys, e));
        (e, true)
    }

    /// The bytes of entry `e`.
    fn key(&self, e: u32) -> Option<&[u8]> {
        self.keys.get(e as usize).map(|k| &k[..])
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.table.capacity().min(self.keys.capacity())
    }

    fn reserve(&mut self, n: usize) {
        let (keys, hasher) = (&self.keys, &self.hasher);
        self.table.reserve(n, |&e| key_hash(hasher, keys, e));
        self.keys.reserve(n);
    }

    fn clear(&mut self) {
        self.table.clear();
        self.keys.clear();
    }
}

impl Memo {
    /// Readies the memo for a request under the rule set `owner`: kept when it was filled
    /// for these rules, `keep` says so and it is within its bounds; emptied otherwise (and its
    /// memory given back when it grew past them).
    fn begin(&mut self, owner: u64, keep: bool, nodes: usize, verdicts: usize) {
        let over = self.entries.len() > MEMO_ENTRIES
            || self.bytes > MEMO_BYTES
            || self.ops.len() + self.live_more.len() + self.capture_writes.len() > MEMO_OPS
            || self.cache.len() > MEMO_CELLS;
        if over {
            *self = Memo::default();
        } else if self.owner != owner || !keep {
            self.clear();
        }
        self.owner = owner;
        self.verdict_row = verdict_row_words(verdicts);
        if self.cache.capacity() == 0 {
            self.reserve(nodes);
        }
    }

    /// Reserves the two largest tables, the map of distinct values and the per-value lists to
    /// their bounds at once: address space, mostly (pages are touched as they fill). Grown by doubling
    /// instead, each step copied megabytes and faulted their pages in again, and the map
    /// hashed every value again, within the one request that crossed it (up to 3 ms). The
    /// operator map is left to grow: it is looked up far more often, and reserved to its
    /// bound it spread its entries over more cache lines, which cost more than the rehashing.
    ///
    /// The two tables fill from the front, a row per new value: they are backed by huge pages
    /// where the kernel offers them (see [`advise_huge_pages`]).
    fn reserve(&mut self, nodes: usize) {
        self.cache.reserve(MEMO_CELLS.min(MEMO_ENTRIES * nodes));
        advise_huge_pages(&self.cache);
        self.bit_words.reserve(MEMO_BYTES / 8);
        advise_huge_pages(&self.bit_words);
        self.entries.reserve(MEMO_ENTRIES);
        // a word or two per value each: reserved alike, never copied as they grow
        self.raw_bits.reserve(MEMO_ENTRIES);
        self.raw_verdicts.reserve(MEMO_ENTRIES);
        self.entry_last.reserve(MEMO_ENTRIES);
        self.entry_live.reserve(MEMO_ENTRIES);
        // and per pipeline output, of which a value has about one
        self.arena.reserve(MEMO_ENTRIES);
        self.arena_bits.reserve(MEMO_ENTRIES);
        self.arena_verdicts.reserve(MEMO_ENTRIES);
        self.arena_prev.reserve(MEMO_ENTRIES);
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.slot_prev.clear();
        self.cache.clear();
        self.arena.clear();
        self.entry_last.clear();
        self.arena_prev.clear();
        self.raw_bits.clear();
        self.arena_bits.clear();
        self.bit_words.clear();
        self.ops.clear();
        self.raw_verdicts.clear();
        self.arena_verdicts.clear();
        self.verdict_words.clear();
        self.captures.clear();
        self.capture_writes.clear();
        self.entry_live.clear();
        self.live_more.clear();
        self.live_lists.clear();
        self.bytes = 0;
    }
}

/// Asks the kernel to back the whole 2 MiB pages inside `v`'s reserved buffer with
/// transparent huge pages (`MADV_HUGEPAGE`; honoured when
/// `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`, ignored otherwise).
/// The memo's two largest tables gain a row for every new value a request brings: on 4 KiB
/// pages a cold memo took a page fault every 20 values (the pass over the dev corpus spent
/// about 5 % of its time in them), on huge pages one per 2 MiB. Touched from the front,
/// they commit at most one huge page more than they use.
fn advise_huge_pages<T>(v: &Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + v.capacity() * std::mem::size_of::<T>();
        let first = start.next_multiple_of(HUGE);
        let last = end - end % HUGE;
        if last > first {
            // SAFETY: the range lies inside `v`'s allocation; MADV_HUGEPAGE only changes how
            // the kernel backs the pages, never their contents (an error leaves them as they
            // were, and is ignored)
            unsafe {
                libc::madvise(
                    first as *mut libc::c_void,
                    last - first,
                    libc::MADV_HUGEPAGE,
                );
            }
        }
    }
}

/// The buffers of one evaluation whose allocations are kept for the next request of the same
/// thread (their contents are cleared or overwritten before use: `reset_caches`, and
/// MATCHED_VARS entries past `matched_len` are spare), and the memo.
#[derive(Default)]
struct Scratch {
    bases: Vec<u32>,
    slot_entry: Vec<u32>,
    memo: Option<Box<Memo>>,
    union_bits: Vec<u32>,
    union_words: Vec<u64>,
    /// The cells of `union_bits` set since the last reset.
    union_touched: Vec<u32>,
    matched_vars: Vec<(String, Vec<u8>)>,
    matched_seq: Vec<MatchedRun<'static>>,
    setvar_name: Vec<u8>,
    setvar_value: Vec<u8>,
    vals: Vec<Val<'static>>,
    multi_last: Vec<u8>,
    pending_evidence: Vec<(u32, u32)>,
    evidence: Vec<Evidence>,
    live: Vec<u64>,
    live_head: Vec<u64>,
    runnable: Vec<u64>,
    live_found: Vec<u32>,
    /// An empty TX collection with the room the last request's needed (see [`Tx::recycle`]),
    /// so that the next one is not grown (and rehashed) by doubling.
    tx: CollMap,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// A fresh state with this thread's kept buffers.
fn state_with_scratch<'r>() -> State<'r> {
    let s = SCRATCH
        .try_with(|s| s.try_borrow_mut().map(|mut s| std::mem::take(&mut *s)))
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    State {
        body_access: true,
        tx: Layered::from_map(s.tx),
        bases: s.bases,
        slot_entry: s.slot_entry,
        union_bits: s.union_bits,
        union_words: s.union_words,
        union_touched: s.union_touched,
        matched_vars: s.matched_vars,
        matched_seq: recycle(s.matched_seq),
        setvar_name: s.setvar_name,
        setvar_value: s.setvar_value,
        vals: s.vals,
        multi_last: s.multi_last,
        pending_evidence: s.pending_evidence,
        evidence: s.evidence,
        // the head's mask is the last request's: it is worked out again
        live: s.live,
        live_head: {
            let mut head = s.live_head;
            head.clear();
            head
        },
        runnable: s.runnable,
        live_found: s.live_found,
        ..State::with_memo(s.memo.unwrap_or_default())
    }
}

/// Keeps the state's buffers for the thread's next request, and returns what the request
/// produced. The state's fields are moved out of it by value, the memo as a pointer.
fn keep_scratch(st: State<'_>) -> Outcome {
    let s = Scratch {
        bases: st.bases,
        slot_entry: st.slot_entry,
        memo: Some(st.memo),
        union_bits: st.union_bits,
        union_words: st.union_words,
        union_touched: st.union_touched,
        matched_vars: st.matched_vars,
        matched_seq: recycle(st.matched_seq),
        setvar_name: st.setvar_name,
        setvar_value: st.setvar_value,
        vals: st.vals,
        multi_last: st.multi_last,
        pending_evidence: st.pending_evidence,
        evidence: st.evidence,
        live: st.live,
        live_head: st.live_head,
        runnable: st.runnable,
        live_found: st.live_found,
        tx: CollMap::default(),
    };
    let _ = SCRATCH.try_with(|cell| {
        if let Ok(mut kept) = cell.try_borrow_mut() {
            *kept = s;
        }
    });
    st.outcome
}

/// Runs the rules over one request.
pub fn run(rules: &Compiled, input: &RequestInput<'_>) -> Outcome {
    let mut c = Collections::from_head(input);
    let mut st = state_with_scratch();
    st.nodes = rules.nodes.len() as u32;
    st.cell_kinds = (KINDS + rules.keys.len()) as u32;
    st.memo.begin(
        rules.memo_id,
        rules.memo,
        rules.nodes.len(),
        rules.verdicts.len(),
    );
    reset_caches(&c, &mut st);
    run_phase(rules, 0, &c, &mut st);
    if st.body_access {
        let processor = st.processor.or_else(|| c.default_processor());
        c.process_body(processor, input.body);
    }
    // the body adds values and may change some: the slots are laid out again (the memo,
    // keyed by the values' bytes, stays)
    reset_caches(&c, &mut st);
    if !st.engine_off {
        run_phase(rules, 1, &c, &mut st);
    }
    st.outcome.tx = Tx(std::mem::take(&mut st.tx));
    keep_scratch(st)
}

/// Evaluates one top rule at load time (see `fold`) on the empty request `c` and the TX
/// collection `tx`, and returns everything it did to the engine state.
pub(super) fn trace_rule(rules: &Compiled, rule: &Rule, c: &Collections, tx: CollMap) -> Folded {
    let mut st = State {
        body_access: true,
        trace: Some(Folded::default()),
        ..State::default()
    };
    st.nodes = rules.nodes.len() as u32;
    st.cell_kinds = (KINDS + rules.keys.len()) as u32;
    st.tx = Layered::from_map(tx);
    reset_caches(c, &mut st);
    let matched = eval_rule(rules, rule, rule, c, &mut st, &mut Vec::new());
    let mut f = st.trace.take().unwrap_or_default();
    f.matched = matched;
    f
}

/// [`kind_len`] of every kind at once: asking for the 64 kinds one by one, twice per request,
/// cost more than the rest of the slot layout.
fn kind_lens(c: &Collections) -> [u32; KINDS] {
    let mut n = [0u32; KINDS];
    let mut set = |k: u32, len: usize| {
        if let Some(slot) = n.get_mut(k as usize) {
            *slot = len as u32;
        }
    };
    for (entries, values, names) in [
        (&c.args_get, kind::ARGS_GET, Some(kind::ARGS_GET_NAMES)),
        (&c.args_post, kind::ARGS_POST, Some(kind::ARGS_POST_NAMES)),
        (
            &c.args_other,
            kind::ARGS_OTHER,
            Some(kind::ARGS_OTHER_NAMES),
        ),
        (&c.request_cookies, kind::COOKIES, Some(kind::COOKIES_NAMES)),
        (&c.request_headers, kind::HEADERS, Some(kind::HEADERS_NAMES)),
        (&c.files, kind::FILES, Some(kind::FILES_NAMES)),
        (
            &c.multipart_part_headers,
            kind::MULTIPART_PART_HEADERS,
            None,
        ),
    ] {
        set(values, entries.len());
        if let Some(names) = names {
            set(names, entries.len());
        }
    }
    set(kind::XML_TEXT, usize::from(c.xml_text.is_some()));
    set(kind::XML_ATTRS, c.xml_attrs.len());
    for k in SCALAR_BASE..SCALAR_BASE + 20 {
        set(k, 1);
    }
    n
}

/// Number of values of each kind, for the dense slot layout.
fn kind_len(c: &Collections, k: u32) -> usize {
    if let Some((entries, _)) = kind_entries(c, k) {
        return entries.len();
    }
    match k {
        kind::XML_TEXT => usize::from(c.xml_text.is_some()),
        kind::XML_ATTRS => c.xml_attrs.len(),
        k if (SCALAR_BASE..SCALAR_BASE + 20).contains(&k) => 1,
        _ => 0,
    }
}

/// The entries behind a collection kind, and whether the kind is their names (None for XML and
/// single-valued kinds).
fn kind_entries(c: &Collections, k: u32) -> Option<(&[Entry], bool)> {
    Some(match k {
        kind::ARGS_GET => (&c.args_get, false),
        kind::ARGS_GET_NAMES => (&c.args_get, true),
        kind::ARGS_POST => (&c.args_post, false),
        kind::ARGS_POST_NAMES => (&c.args_post, true),
        kind::ARGS_OTHER => (&c.args_other, false),
        kind::ARGS_OTHER_NAMES => (&c.args_other, true),
        kind::COOKIES => (&c.request_cookies, false),
        kind::COOKIES_NAMES => (&c.request_cookies, true),
        kind::HEADERS => (&c.request_headers, false),
        kind::HEADERS_NAMES => (&c.request_headers, true),
        kind::FILES => (&c.files, false),
        kind::FILES_NAMES => (&c.files, true),
        kind::MULTIPART_PART_HEADERS => (&c.multipart_part_headers, false),
        _ => return None,
    })
}

/// Lays the request's values out in dense slots and empties the per-request caches.
fn reset_caches(c: &Collections, st: &mut State<'_>) {
    let mut next = 0u32;
    st.bases.resize(KINDS, 0);
    st.nonempty = 0;
    let lens = kind_lens(c);
    let mut bases = [0u32; KINDS];
    for &k in &SLOT_ORDER {
        // KINDS is a power of two: the mask keeps the index in bounds without a check
        let k = k as usize & (KINDS - 1);
        bases[k] = next;
        st.nonempty |= u64::from(lens[k] > 0) << k;
        next += lens[k];
    }
    st.bases.copy_from_slice(&bases);
    st.slot_entry.clear();
    st.slot_entry.resize(next as usize, UNSET);
    // only the cells the last phase filled are reset (a rule set has a few dozen pipelines
    // per kind, a request touches a handful)
    let cells = st.cell_kinds as usize * st.nodes as usize;
    if st.union_bits.len() == cells {
        for &cell in &st.union_touched {
            if let Some(c) = st.union_bits.get_mut(cell as usize) {
                *c = UNSET;
            }
        }
    } else {
        st.union_bits.clear();
        st.union_bits.resize(cells, UNSET);
    }
    st.union_touched.clear();
    st.union_words.clear();
    st.live_ready = false;
}

fn run_phase<'r>(rules: &'r Compiled, phase: usize, c: &Collections, st: &mut State<'r>) {
    let mut vals = recycle(std::mem::take(&mut st.vals));
    st.marker = None;
    st.skip_next = 0;
    let items = &rules.phases[phase];
    let runs = &rules.folded_runs[phase];
    let skips = &rules.phase_skips[phase];
    let mut jumps = false;
    let mut at = 0;
    while let Some(item) = items.get(at) {
        if st.engine_off {
            break;
        }
        // rules whose targets' live bits are all clear cannot match: jumped over together,
        // without being read (unless a marker, skip or ctl is pending: a removed rule is not
        // evaluated, a jump or skip counts the rules it passes)
        if st.marker.is_none()
            && st.skip_next == 0
            && st.removed_ids.is_empty()
            && st.removed_tags.is_empty()
        {
            // the first rule that could be skipped asks for the live mask
            if !st.live_ready && skips.get(at).is_some_and(|&(_, targets)| targets > 0) {
                live_mask(rules, c, st);
            }
            if st.live_ready {
                if !jumps {
                    runnable(rules, phase, st);
                    jumps = true;
                }
                let next = next_runnable(&st.runnable, at, items.len());
                if next > at {
                    if cfg!(debug_assertions) {
                        for skipped in &items[at..next] {
                            // no jump is pending: a marker is a no-op
                            assert!(match skipped {
                                Item::Rule(r) => cannot_match(rules, r, c, st),
                                Item::Marker(_) => true,
                            });
                        }
                    }
                    clear_matched(st);
                    at = next;
                    continue;
                }
            }
        }
        // folded rules from here to the next evaluated one: their effect at once
        if st.marker.is_none()
            && st.skip_next == 0
            && let Some(Some(run)) = runs.get(at)
        {
            match &run.tx {
                // on an empty TX (the request's first writes) the result is known: laid under
                // the request's writes, shared
                Some(tx) if st.tx.is_empty() => {
                    st.tx.base = Some(tx.clone());
                    st.tx_gen += 1;
                    apply_matched(&run.effect, st);
                }
                _ => apply_folded(&run.effect, st),
            }
            at = run.next;
            continue;
        }
        at += 1;
        let rule = match item {
            Item::Marker(name) => {
                if st.marker == Some(name.as_str()) {
                    st.marker = None;
                }
                continue;
            }
            Item::Rule(r) => r,
        };
        if st.marker.is_some() {
            continue;
        }
        if st.skip_next > 0 {
            st.skip_next -= 1;
            continue;
        }
        if st.removed_ids.iter().any(|r| r.contains(rule.id))
            || st
                .removed_tags
                .iter()
                .any(|t| rule.tags.iter().any(|rt| rt == t))
        {
            continue;
        }
        st.points = 0;
        st.pending_evidence.clear();
        if let Some(f) = &rule.folded {
            // the same on every request: replayed, never logs
            replay(rule, f, st);
            continue;
        }
        let m = eval_rule(rules, rule, rule, c, st, &mut vals);
        if m && rule.log {
            let evidence = take_evidence(rules, st);
            st.outcome.matched.push(MatchedRule {
                id: rule.id,
                phase: rule.phase,
                // as libmodsecurity logs it: macros (%{MATCHED_VAR}, %{tx.anomaly_score})
                // expanded once the chain matched
                msg: rule
                    .msg_template
                    .as_ref()
                    .map(|m| lossy_string(expand(m, Some(rule), c, st))),
                severity: rule.severity,
                tags: rule.tags.clone(),
                points: st.points,
                evidence,
            });
        }
    }
    st.vals = recycle(vals);
}

/// `bytes` as a string, invalid UTF-8 replaced as `String::from_utf8_lossy` replaces it (valid
/// bytes, nearly always, are checked the fast way and kept, not copied).
fn lossy_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A run of MATCHED_VARS entries (see [`State::matched_seq`]).
#[derive(Clone, Copy)]
enum MatchedRun<'r> {
    /// `matched_vars[start..end]`.
    Own { start: u32, end: u32 },
    /// A folded rule's entries (never empty).
    Folded(&'r [(String, Vec<u8>)]),
}

impl<'r> MatchedRun<'r> {
    fn entries<'s>(self, own: &'s [(String, Vec<u8>)]) -> &'s [(String, Vec<u8>)]
    where
        'r: 's,
    {
        match self {
            MatchedRun::Own { start, end } => own.get(start as usize..end as usize).unwrap_or(&[]),
            MatchedRun::Folded(entries) => entries,
        }
    }
}

fn clear_matched(st: &mut State<'_>) {
    st.matched_len = 0;
    st.matched_seq.clear();
    if let Some(t) = st.trace.as_mut() {
        t.cleared = true;
        t.appended.clear();
    }
}

/// An emptied buffer, its allocation kept for items of another lifetime (values, MATCHED_VARS
/// runs): the in-place `collect` of an empty vector reuses it when the two item types have
/// the same layout, as one type under two lifetimes has.
// the filter_map changes the item type, which a filter cannot
#[allow(clippy::unnecessary_filter_map)]
fn recycle<A, B>(mut v: Vec<A>) -> Vec<B> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// Does to `st` what evaluating `rule` did when it was folded (see [`Folded`]).
fn replay<'r>(rule: &'r Rule, f: &'r Folded, st: &mut State<'r>) {
    apply_folded(f, st);
    if f.matched {
        after_chain(rule, st);
    }
}

/// A folded effect's MATCHED_VAR(S) and `setvar`s.
fn apply_folded<'r>(f: &'r Folded, st: &mut State<'r>) {
    apply_matched(f, st);
    for (idx, name, value) in &f.writes {
        if *idx == 0 {
            st.tx_gen += 1;
        }
        match value {
            Some(v) => coll_set(st, *idx, name, Some(name), v.clone()),
            None => coll_remove(st, *idx, name),
        }
    }
}

/// A folded effect's MATCHED_VAR(S).
fn apply_matched<'r>(f: &'r Folded, st: &mut State<'r>) {
    if f.cleared {
        clear_matched(st);
    }
    if f.appended.is_empty() {
        return;
    }
    // kept by reference, never copied
    st.matched_seq.push(MatchedRun::Folded(&f.appended));
    if let Some(t) = st.trace.as_mut() {
        // the load-time fold records every entry appended
        t.appended.extend(f.appended.iter().cloned());
    }
}

/// `after_match` of every link of a chain that matched, last link first (as `eval_rule` runs
/// them).
fn after_chain<'r>(rule: &'r Rule, st: &mut State<'r>) {
    if let Some(next) = &rule.chain {
        after_chain(next, st);
    }
    after_match(rule, st);
}

/// Evaluates `rule` (a link of `top`'s chain); true when it and the rest of the chain matched.
/// `vals` is a buffer reused between rules.
fn eval_rule<'r, 'c>(
    rules: &'r Compiled,
    top: &'r Rule,
    rule: &'r Rule,
    c: &'c Collections,
    st: &mut State<'r>,
    vals: &mut Vec<Val<'c>>,
) -> bool {
    let Some(op) = &rule.op else {
        // SecAction
        for sv in &rule.setvars {
            setvar(top, sv, c, st);
        }
        after_match(rule, st);
        return true;
    };
    let mut matched_any = false;
    let steps: &[u32] = &rule.steps;
    // multiMatch: the value the operator saw last (not run twice on the same bytes)
    let mut last = std::mem::take(&mut st.multi_last);
    for (ti, t) in rule.targets.iter().enumerate() {
        if target_cannot_match(rules, rule, ti, c, st) {
            continue;
        }
        if rule
            .exclusions
            .iter()
            .any(|e| matches!(e.sel, Sel::All) && e.var == t.var)
        {
            continue;
        }
        if st.removed_target_id.iter().any(|(id, name)| {
            *id == top.id && rule.id == top.id && name.eq_ignore_ascii_case(&t.full_name)
        }) {
            continue;
        }
        vals.clear();
        resolve(t, c, st, vals);
        for v in vals.iter() {
            if excluded(rule, top, v, st) {
                continue;
            }
            let mut have_last = false;
            for &node in steps {
                // the transformed value, borrowed from the request, or moved out of the
                // pipeline cache for the time of the operator (and put back)
                if let (Some(bit), Some(slot)) = (rule.prefilter_bit, v.slot)
                    && !rule.negated
                    && !prefilter_hit(rules, v, slot, node, bit, st)
                {
                    // a regex whose literals are all absent cannot match: no need for the value
                    continue;
                }
                let tv = transformed(rules, v, node, st);
                let held: Vec<u8> = match &tv {
                    Tv::Raw => Vec::new(),
                    Tv::Arena(i) => std::mem::take(&mut st.memo.arena[*i as usize]),
                    Tv::Owned(_) => Vec::new(),
                };
                let value: &[u8] = match &tv {
                    Tv::Raw => &v.data,
                    Tv::Arena(_) => &held,
                    Tv::Owned(o) => o,
                };
                if rule.multi_match && have_last && last == value {
                    if let Tv::Arena(i) = tv {
                        st.memo.arena[i as usize] = held;
                    }
                    continue;
                }
                // the costly operators' verdicts on a value are kept in the memo
                let memo_key = if memoizable(op) {
                    match (&tv, v.slot) {
                        (Tv::Arena(i), _) => Some(*i),
                        (Tv::Raw, Some(slot)) => Some(entry_of(&v.data, slot, st) | ENTRY_BIT),
                        _ => None,
                    }
                    .map(|id| OpKey::of(rule, id))
                } else {
                    None
                };
                let hit = apply_op(rule, op, value, c, st, memo_key);
                if hit {
                    set_matched(st, v, value);
                    // evidence only for rules that log (the paranoia-level gates and the
                    // scaffolding match on every request and log nothing)
                    if top.log && st.pending_evidence.len() < MAX_EVIDENCE {
                        let at = st.matched_len.saturating_sub(1) as u32;
                        st.pending_evidence.push((at, node));
                    }
                    for (i, sv) in rule.setvars.iter().enumerate() {
                        setvar_at(top, sv, (rule.link, i), c, st);
                    }
                    matched_any = true;
                }
                if rule.multi_match {
                    last.clear();
                    last.extend_from_slice(value);
                    have_last = true;
                }
                if let Tv::Arena(i) = tv {
                    st.memo.arena[i as usize] = held;
                }
            }
        }
    }
    st.multi_last = last;
    if !matched_any {
        clear_matched(st);
        return false;
    }
    if let Some(next) = &rule.chain
        && !eval_rule(rules, top, next, c, st, vals)
    {
        return false;
    }
    after_match(rule, st);
    true
}

/// MATCHED_VAR(_NAME) and a new MATCHED_VARS entry, in reused buffers.
fn set_matched(st: &mut State<'_>, v: &Val<'_>, value: &[u8]) {
    push_matched(st, |name| v.write_full_key(name), value);
}

/// MATCHED_VAR(_NAME): the last entry of MATCHED_VARS (None when cleared).
fn matched_var<'s>(st: &'s State<'_>) -> Option<(&'s str, &'s [u8])> {
    let run = *st.matched_seq.last()?;
    run.entries(&st.matched_vars)
        .last()
        .map(|(name, value)| (name.as_str(), value.as_slice()))
}

/// Appends a MATCHED_VARS entry, its name written by `name` into a reused buffer: it is
/// MATCHED_VAR(_NAME) from now on.
fn push_matched(st: &mut State<'_>, name: impl FnOnce(&mut String), value: &[u8]) {
    if st.matched_len == st.matched_vars.len() {
        st.matched_vars.push((String::new(), Vec::new()));
    }
    let at = st.matched_len as u32;
    if let Some((n, data)) = st.matched_vars.get_mut(st.matched_len) {
        name(n);
        data.clear();
        data.extend_from_slice(value);
        st.matched_len += 1;
        match st.matched_seq.last_mut() {
            Some(MatchedRun::Own { end, .. }) if *end == at => *end += 1,
            _ => st.matched_seq.push(MatchedRun::Own {
                start: at,
                end: at + 1,
            }),
        }
        if let Some(t) = st.trace.as_mut() {
            t.appended.push((n.clone(), value.to_vec()));
        }
    }
}

/// The evidence of a rule whose chain matched, for reports and `--explain`: its pending
/// matches (see [`State::pending_evidence`]) read back from MATCHED_VARS, which keeps the name
/// and transformed value of each until the rule ends. The entries' buffers are reused from
/// rule to rule.
fn take_evidence(rules: &Compiled, st: &mut State<'_>) -> Vec<Evidence> {
    let n = st.pending_evidence.len();
    while st.evidence.len() < n {
        st.evidence.push(Evidence {
            variable: String::new(),
            value: Vec::new(),
            transforms: Vec::new(),
        });
    }
    for (e, &(at, node)) in st.evidence.iter_mut().zip(&st.pending_evidence) {
        let (name, value) = st
            .matched_vars
            .get(at as usize)
            .map_or(("", &[][..]), |(n, v)| (n.as_str(), v.as_slice()));
        e.variable.clear();
        e.variable.push_str(name);
        e.value.clear();
        e.value
            .extend_from_slice(&value[..value.len().min(MAX_VALUE)]);
        e.transforms.clear();
        e.transforms.extend(
            steps_back(&rules.nodes, node)
                .filter_map(|n| rules.nodes.get(n as usize).map(|x| x.step.name())),
        );
        e.transforms.reverse();
    }
    st.pending_evidence.clear();
    st.evidence.drain(..n).collect()
}

/// ctl, skipAfter, skip: run once the chain matched.
fn after_match<'r>(rule: &'r Rule, st: &mut State<'r>) {
    for ctl in &rule.ctls {
        match ctl {
            Ctl::RuleRemoveById(ids) => st.removed_ids.extend(ids.iter().copied()),
            Ctl::RuleRemoveByTag(t) => st.removed_tags.push(t.clone()),
            Ctl::RuleRemoveTargetById(id, t) => st.removed_target_id.push((*id, t.clone())),
            Ctl::RuleRemoveTargetByTag(tag, t) => {
                st.removed_target_tag.push((tag.clone(), t.clone()))
            }
            Ctl::BodyProcessor(p) => st.processor = Some(*p),
            Ctl::BodyAccess(on) => st.body_access = *on,
            Ctl::ForceBodyVariable(on) => st.force_body = *on,
            Ctl::RuleEngineOff => st.engine_off = true,
            Ctl::Ignored => {}
        }
    }
    if let Some(m) = &rule.skip_after {
        st.marker = Some(m.as_str());
    }
    if rule.skip > 0 {
        st.skip_next = rule.skip;
    }
}

fn excluded(rule: &Rule, top: &Rule, v: &Val<'_>, st: &State<'_>) -> bool {
    let same_var = |t: &Target| base_of(t.var) == base_of(v.var);
    for e in &rule.exclusions {
        let hit = match &e.sel {
            Sel::Regex(re) => same_var(e) && re.is_match(&v.key),
            Sel::Key(k) => same_var(e) && v.key.eq_ignore_ascii_case(k.as_bytes()),
            Sel::All => same_var(e),
        };
        if hit {
            return true;
        }
    }
    if st.removed_target_id.is_empty() && st.removed_target_tag.is_empty() {
        return false;
    }
    let full = v.full_key();
    let by_name =
        |name: &str| name.eq_ignore_ascii_case(&full) || name.eq_ignore_ascii_case(v.var.name());
    st.removed_target_id
        .iter()
        .any(|(id, name)| *id == top.id && rule.id == top.id && by_name(name))
        || st
            .removed_target_tag
            .iter()
            .any(|(tag, name)| top.tags.iter().any(|t| t == tag) && by_name(name))
}

/// ARGS_GET and ARGS_POST values carry the name ARGS when resolved through ARGS.
fn base_of(v: Var) -> Var {
    match v {
        Var::ArgsGet | Var::ArgsPost => Var::Args,
        other => other,
    }
}

fn push_entries<'a>(
    bases: &[u32],
    var: Var,
    k: u32,
    entries: &'a [Entry],
    names: bool,
    t: &Target,
    out: &mut Vec<Val<'a>>,
) {
    // libmodsecurity keeps a collection in a hash multimap, where entries under one key come
    // out newest first: with a key selector the last header/argument of that name comes first
    // (it decides TX:0 and MATCHED_VAR when several match)
    let keyed = matches!(t.sel, Sel::Key(_));
    let n = entries.len();
    for j in 0..n {
        let i = if keyed { n - 1 - j } else { j };
        let e = &entries[i];
        let ok = match &t.sel {
            Sel::All => true,
            Sel::Key(k) => e.name.eq_ignore_ascii_case(k.as_bytes()),
            Sel::Regex(re) => re.is_match(&e.name),
        };
        if !ok {
            continue;
        }
        let slot = Some(bases[k as usize] + i as u32);
        let data = if names { &e.name } else { &e.value };
        out.push(Val {
            var,
            key: Data::Borrowed(&e.name),
            data: Data::Borrowed(data),
            slot,
        });
    }
}

fn scalar(s: Scalar, c: &Collections) -> Option<Cow<'_, [u8]>> {
    let num = |n: usize| Some(Cow::Owned(n.to_string().into_bytes()));
    match s {
        Scalar::RequestFilename => Some(Cow::Borrowed(&c.request_filename)),
        Scalar::RequestBasename => Some(Cow::Borrowed(&c.request_basename)),
        Scalar::RequestUri => Some(Cow::Borrowed(&c.request_uri)),
        Scalar::RequestUriRaw => Some(Cow::Borrowed(&c.request_uri_raw)),
        Scalar::RequestLine => Some(Cow::Borrowed(&c.request_line)),
        Scalar::RequestMethod => Some(Cow::Borrowed(&c.request_method)),
        Scalar::RequestProtocol => Some(Cow::Borrowed(&c.request_protocol)),
        Scalar::QueryString => Some(Cow::Borrowed(&c.query_string)),
        Scalar::RequestBody => c.request_body.as_deref().map(Cow::Borrowed),
        Scalar::RequestBodyLength => num(c.request_body_length),
        Scalar::ReqbodyProcessor => c.reqbody_processor.map(|p| {
            Cow::Borrowed(match p {
                BodyProcessor::UrlEncoded => &b"URLENCODED"[..],
                BodyProcessor::Multipart => b"MULTIPART",
                BodyProcessor::Xml => b"XML",
                BodyProcessor::Json => b"JSON",
            })
        }),
        Scalar::ReqbodyError => num(usize::from(c.reqbody_error)),
        Scalar::ReqbodyErrorMsg => Some(Cow::Borrowed(&c.reqbody_error_msg)),
        Scalar::ArgsCombinedSize => num(c.args_combined_size),
        Scalar::FilesCombinedSize => num(c.files_combined_size),
        Scalar::RemoteAddr => Some(Cow::Borrowed(&c.remote_addr)),
        Scalar::UniqueId => Some(Cow::Borrowed(b"palisade")),
        Scalar::Duration => num(0),
        Scalar::FullRequestLength => num(c.request_line.len() + c.request_body_length),
        Scalar::Multipart(name) => {
            multipart_flag(c, multipart_name(name)).map(|v| Cow::Owned(v.to_string().into_bytes()))
        }
    }
}

fn multipart_flag(c: &Collections, name: &str) -> Option<u8> {
    let m = &c.multipart;
    Some(match name {
        "MULTIPART_STRICT_ERROR" => m.strict_error,
        "MULTIPART_UNMATCHED_BOUNDARY" => m.unmatched_boundary,
        "MULTIPART_BOUNDARY_QUOTED" => m.boundary_quoted,
        "MULTIPART_BOUNDARY_WHITESPACE" => m.boundary_whitespace,
        "MULTIPART_DATA_BEFORE" => m.data_before,
        "MULTIPART_DATA_AFTER" => m.data_after,
        "MULTIPART_HEADER_FOLDING" => m.header_folding,
        "MULTIPART_LF_LINE" => m.lf_line,
        "MULTIPART_MISSING_SEMICOLON" => m.missing_semicolon,
        "MULTIPART_INVALID_QUOTING" => m.invalid_quoting,
        "MULTIPART_INVALID_PART" => m.invalid_part,
        "MULTIPART_INVALID_HEADER_FOLDING" => m.invalid_header_folding,
        "MULTIPART_FILE_LIMIT_EXCEEDED" => m.file_limit_exceeded,
        "MULTIPART_CRLF_LF_LINES" => m.crlf_lf_lines,
        _ => return None,
    })
}

/// A distinct number per single-valued variable (pipeline cache slots).
const fn scalar_kind(s: Scalar) -> u32 {
    match s {
        Scalar::RequestFilename => 0,
        Scalar::RequestBasename => 1,
        Scalar::RequestUri => 2,
        Scalar::RequestUriRaw => 3,
        Scalar::RequestLine => 4,
        Scalar::RequestMethod => 5,
        Scalar::RequestProtocol => 6,
        Scalar::QueryString => 7,
        Scalar::RequestBody => 8,
        Scalar::RequestBodyLength => 9,
        Scalar::ReqbodyProcessor => 10,
        Scalar::ReqbodyError => 11,
        Scalar::ReqbodyErrorMsg => 12,
        Scalar::ArgsCombinedSize => 13,
        Scalar::FilesCombinedSize => 14,
        Scalar::RemoteAddr => 15,
        Scalar::UniqueId => 16,
        Scalar::Duration => 17,
        Scalar::FullRequestLength => 18,
        Scalar::Multipart(_) => 19,
    }
}

/// The values of one target (before exclusions).
fn resolve<'a>(t: &Target, c: &'a Collections, st: &State<'_>, out: &mut Vec<Val<'a>>) {
    let start = out.len();
    match t.var {
        Var::Args => {
            push_entries(
                &st.bases,
                Var::Args,
                kind::ARGS_GET,
                &c.args_get,
                false,
                t,
                out,
            );
            push_entries(
                &st.bases,
                Var::Args,
                kind::ARGS_POST,
                &c.args_post,
                false,
                t,
                out,
            );
            push_entries(
                &st.bases,
                Var::Args,
                kind::ARGS_OTHER,
                &c.args_other,
                false,
                t,
                out,
            );
        }
        Var::ArgsGet => push_entries(
            &st.bases,
            Var::ArgsGet,
            kind::ARGS_GET,
            &c.args_get,
            false,
            t,
            out,
        ),
        Var::ArgsPost => push_entries(
            &st.bases,
            Var::ArgsPost,
            kind::ARGS_POST,
            &c.args_post,
            false,
            t,
            out,
        ),
        Var::ArgsNames => {
            push_entries(
                &st.bases,
                Var::ArgsNames,
                kind::ARGS_GET_NAMES,
                &c.args_get,
                true,
                t,
                out,
            );
            push_entries(
                &st.bases,
                Var::ArgsNames,
                kind::ARGS_POST_NAMES,
                &c.args_post,
                true,
                t,
                out,
            );
            push_entries(
                &st.bases,
                Var::ArgsNames,
                kind::ARGS_OTHER_NAMES,
                &c.args_other,
                true,
                t,
                out,
            );
        }
        Var::ArgsGetNames => push_entries(
            &st.bases,
            Var::ArgsGetNames,
            kind::ARGS_GET_NAMES,
            &c.args_get,
            true,
            t,
            out,
        ),
        Var::ArgsPostNames => push_entries(
            &st.bases,
            Var::ArgsPostNames,
            kind::ARGS_POST_NAMES,
            &c.args_post,
            true,
            t,
            out,
        ),
        Var::Cookies => push_entries(
            &st.bases,
            Var::Cookies,
            kind::COOKIES,
            &c.request_cookies,
            false,
            t,
            out,
        ),
        Var::CookiesNames => push_entries(
            &st.bases,
            Var::CookiesNames,
            kind::COOKIES_NAMES,
            &c.request_cookies,
            true,
            t,
            out,
        ),
        Var::Headers => push_entries(
            &st.bases,
            Var::Headers,
            kind::HEADERS,
            &c.request_headers,
            false,
            t,
            out,
        ),
        Var::HeadersNames => push_entries(
            &st.bases,
            Var::HeadersNames,
            kind::HEADERS_NAMES,
            &c.request_headers,
            true,
            t,
            out,
        ),
        Var::Files => push_entries(&st.bases, Var::Files, kind::FILES, &c.files, false, t, out),
        Var::FilesNames => push_entries(
            &st.bases,
            Var::FilesNames,
            kind::FILES_NAMES,
            &c.files,
            true,
            t,
            out,
        ),
        Var::MultipartPartHeaders => push_entries(
            &st.bases,
            Var::MultipartPartHeaders,
            kind::MULTIPART_PART_HEADERS,
            &c.multipart_part_headers,
            false,
            t,
            out,
        ),
        Var::Xml => {
            // `XML:/*` is the document's text, `XML://@*` its attribute values; other XPath
            // expressions have no values here (see docs/crs.md)
            let (root, attrs) = match &t.sel {
                Sel::Key(k) => (k == "/*", k == "//@*"),
                Sel::All => (true, false),
                Sel::Regex(_) => (false, false),
            };
            if attrs && c.xml_text.is_some() {
                for (i, a) in c.xml_attrs.iter().enumerate() {
                    out.push(Val {
                        var: Var::Xml,
                        key: Data::Borrowed(b"//@*"),
                        data: Data::Borrowed(a),
                        slot: Some(st.bases[kind::XML_ATTRS as usize] + i as u32),
                    });
                }
            }
            if let Some(x) = c.xml_text.as_ref().filter(|_| root) {
                out.push(Val {
                    var: Var::Xml,
                    key: Data::Borrowed(b"/*"),
                    data: Data::Borrowed(x),
                    slot: Some(st.bases[kind::XML_TEXT as usize]),
                });
            }
        }
        Var::Collection(coll) => {
            let idx = coll_index(coll);
            let shared = |(k, v): (&Arc<str>, &Arc<[u8]>)| Val {
                var: t.var,
                key: Data::Name(k.clone()),
                data: Data::Shared(v.clone()),
                slot: None,
            };
            match &t.sel {
                Sel::Key(k) => {
                    if let Some(kv) = coll_get(st, idx, k.as_str()) {
                        out.push(shared(kv));
                    }
                }
                sel => {
                    // TX names are lowercase (see `KeyRegex::is_match_lowercase`)
                    let keep = |k: &str| match sel {
                        Sel::Regex(re) if idx == 0 => re.is_match_lowercase(k.as_bytes()),
                        Sel::Regex(re) => re.is_match(k.as_bytes()),
                        _ => true,
                    };
                    let mut items: Vec<(&Arc<str>, &Arc<[u8]>)> = Vec::with_capacity(16);
                    let push = |k, v| items.push((k, v));
                    if idx == 0 {
                        // a regex over the defaults has the same answer on every request
                        let listed = match (sel, &st.tx.base) {
                            (Sel::Regex(_), Some(base)) => {
                                let at = Arc::as_ptr(base) as usize;
                                let (of, names) = t.default_names.get_or_init(|| {
                                    let names = base.keys().filter(|k| keep(k));
                                    (at, names.cloned().collect())
                                });
                                (*of == at).then_some(names)
                            }
                            _ => None,
                        };
                        st.tx.for_each(keep, listed.map(|n| &n[..]), push);
                    } else if let Some(map) = st.colls.get(idx) {
                        items.extend(map.iter().filter(|(k, _)| keep(k)));
                    }
                    items.sort();
                    out.extend(items.into_iter().map(shared));
                }
            }
        }
        Var::MatchedVar => {
            if let Some((_, value)) = matched_var(st) {
                out.push(Val {
                    var: t.var,
                    key: Data::Borrowed(b""),
                    data: Data::Owned(value.to_vec()),
                    slot: None,
                });
            }
        }
        Var::MatchedVarName => {
            if let Some((name, _)) = matched_var(st) {
                out.push(Val {
                    var: t.var,
                    key: Data::Borrowed(b""),
                    data: Data::Owned(name.as_bytes().to_vec()),
                    slot: None,
                });
            }
        }
        Var::MatchedVars | Var::MatchedVarsNames => {
            let all = st
                .matched_seq
                .iter()
                .flat_map(|run| run.entries(&st.matched_vars));
            for (k, v) in all {
                let ok = match &t.sel {
                    Sel::All => true,
                    Sel::Key(sel) => k.as_bytes().eq_ignore_ascii_case(sel.as_bytes()),
                    Sel::Regex(re) => re.is_match(k.as_bytes()),
                };
                if !ok {
                    continue;
                }
                let data = if t.var == Var::MatchedVars {
                    v.clone()
                } else {
                    k.as_bytes().to_vec()
                };
                out.push(Val {
                    var: t.var,
                    key: Data::Owned(k.as_bytes().to_vec()),
                    data: Data::Owned(data),
                    slot: None,
                });
            }
        }
        Var::Scalar(s) => {
            if let Some(data) = scalar(s, c) {
                let kind = (SCALAR_BASE + scalar_kind(s)) as usize;
                out.push(Val {
                    var: t.var,
                    key: Data::Borrowed(b""),
                    data: data.into(),
                    slot: Some(st.bases[kind]),
                });
            }
        }
        Var::Empty => {}
    }
    if t.count {
        let n = out.len() - start;
        out.truncate(start);
        out.push(Val {
            var: t.var,
            key: Data::Borrowed(b""),
            data: Data::count(n),
            slot: None,
        });
    }
}

/// Where a transformed value is.
enum Tv {
    /// The value itself (no transformation changed it).
    Raw,
    /// In the pipeline cache.
    Arena(u32),
    /// Computed for this use only (values that change during the request: TX, MATCHED_*).
    Owned(Vec<u8>),
}

/// The value after the pipeline ending at `node` (cached per slot for request values).
fn transformed(rules: &Compiled, v: &Val<'_>, node: u32, st: &mut State<'_>) -> Tv {
    if node == 0 {
        return Tv::Raw;
    }
    let Some(slot) = v.slot else {
        return match apply_all(rules.pipeline(node), &v.data[..]) {
            Cow::Borrowed(_) => Tv::Raw,
            Cow::Owned(o) => Tv::Owned(o),
        };
    };
    match cached(rules, &v.data, slot, node, st) {
        RAW => Tv::Raw,
        i => Tv::Arena(i),
    }
}

/// The memo entry of the value in `slot` (`raw`), made when the value is new.
// the known case inline (most calls), the lookup in the memo out of line
#[inline]
fn entry_of(raw: &[u8], slot: u32, st: &mut State<'_>) -> u32 {
    match st.slot_entry.get(slot as usize) {
        Some(&e) if e != UNSET => e,
        _ => new_entry_of(raw, slot, st),
    }
}

#[inline(never)]
fn new_entry_of(raw: &[u8], slot: u32, st: &mut State<'_>) -> u32 {
    let m = &mut st.memo;
    let prev = m.slot_prev.get(slot as usize).copied().unwrap_or(UNSET);
    let e = if prev != UNSET && m.entries.key(prev) == Some(raw) {
        prev
    } else {
        let (e, new) = m.entries.entry(raw);
        if new {
            m.raw_bits.push(UNSET);
            m.raw_verdicts.push(UNSET);
            m.entry_last.push(UNSET);
            m.entry_live.push((UNSET, NO_TARGET));
            m.cache.resize(m.cache.len() + st.nodes as usize, UNSET);
            m.bytes += raw.len();
        }
        if (slot as usize) < SLOT_PREV {
            if m.slot_prev.len() <= slot as usize {
                m.slot_prev.resize(slot as usize + 1, UNSET);
            }
            m.slot_prev[slot as usize] = e;
        }
        e
    };
    if let Some(cell) = st.slot_entry.get_mut(slot as usize) {
        *cell = e;
    }
    e
}

/// Arena index of the pipeline output ([`RAW`]: the value itself).
fn cached(rules: &Compiled, raw: &[u8], slot: u32, node: u32, st: &mut State<'_>) -> u32 {
    if node == 0 {
        return RAW;
    }
    let entry = entry_of(raw, slot, st);
    cached_entry(rules, raw, entry, node, st)
}

// the known case inline (most calls), the transformation out of line
#[inline]
fn cached_entry(rules: &Compiled, raw: &[u8], entry: u32, node: u32, st: &mut State<'_>) -> u32 {
    if node == 0 {
        return RAW;
    }
    let cell = entry as usize * st.nodes as usize + node as usize;
    match st.memo.cache.get(cell) {
        Some(&i) if i != UNSET => i,
        Some(_) => new_cached_entry(rules, raw, entry, node, cell, st),
        None => RAW,
    }
}

#[inline(never)]
fn new_cached_entry(
    rules: &Compiled,
    raw: &[u8],
    entry: u32,
    node: u32,
    cell: usize,
    st: &mut State<'_>,
) -> u32 {
    let n = rules.nodes[node as usize];
    let parent = cached_entry(rules, raw, entry, n.parent, st);
    let m = &mut st.memo;
    let input: &[u8] = if parent == RAW {
        raw
    } else {
        &m.arena[parent as usize]
    };
    let idx = match n.step.apply(input) {
        // a transformation that returns its input unchanged shares the input's cache entries
        // (and prefilter answer); so does one whose output is the value itself or an output
        // another pipeline already made of it (`t:lowercase` after different decoders of a
        // value with nothing to decode): equal bytes, one entry, one prefilter scan
        Some(out) if out.as_slice() != input => {
            if out.as_slice() == raw {
                RAW
            } else if let Some(same) = same_output(m, entry, &out) {
                same
            } else {
                let prev = m.entry_last.get(entry as usize).copied().unwrap_or(UNSET);
                m.bytes += out.len();
                m.arena.push(out);
                m.arena_bits.push(UNSET);
                m.arena_verdicts.push(UNSET);
                m.arena_prev.push(prev);
                let idx = (m.arena.len() - 1) as u32;
                if let Some(last) = m.entry_last.get_mut(entry as usize) {
                    *last = idx;
                }
                idx
            }
        }
        _ => parent,
    };
    m.cache[cell] = idx;
    idx
}

/// The arena entry of `entry` holding exactly `out`, if one was made.
fn same_output(m: &Memo, entry: u32, out: &[u8]) -> Option<u32> {
    let mut at = m.entry_last.get(entry as usize).copied().unwrap_or(UNSET);
    while at != UNSET {
        let i = at as usize;
        if m.arena.get(i).is_some_and(|a| a.as_slice() == out) {
            return Some(at);
        }
        at = m.arena_prev.get(i).copied().unwrap_or(UNSET);
    }
    None
}

/// Where in the memo's `bit_words` the prefilter's answer for the value in `slot` after
/// pipeline `node` is: the automaton runs once per distinct transformed value (a
/// transformation that changes nothing shares its input's answer).
fn scan_bits(rules: &Compiled, raw: &[u8], slot: u32, node: u32, st: &mut State<'_>) -> usize {
    let entry = entry_of(raw, slot, st);
    entry_bits(rules, raw, entry, node, st)
}

/// [`scan_bits`] for the value `raw` of memo entry `entry`.
// the known case inline (most calls), the scan out of line
#[inline]
fn entry_bits(rules: &Compiled, raw: &[u8], entry: u32, node: u32, st: &mut State<'_>) -> usize {
    // a change of case alone answers as its input does
    let node = scan_node(&rules.scan_nodes, node);
    let idx = cached_entry(rules, raw, entry, node, st);
    let m = &st.memo;
    let known = if idx == RAW {
        m.raw_bits.get(entry as usize)
    } else {
        m.arena_bits.get(idx as usize)
    };
    match known {
        Some(&at) if at != UNSET => at as usize,
        _ => new_entry_bits(rules, raw, entry, idx, st),
    }
}

/// Scans the value `idx` of `entry` (its arena index, or [`RAW`]) and records the answer.
#[inline(never)]
fn new_entry_bits(rules: &Compiled, raw: &[u8], entry: u32, idx: u32, st: &mut State<'_>) -> usize {
    let m = &mut st.memo;
    let words = (rules.prefilter_bits as usize).div_ceil(64);
    let at = m.bit_words.len();
    m.bytes += words * 8;
    match &rules.prefilter {
        Some(pf) => {
            m.bit_words.resize(at + words, 0);
            let hay: &[u8] = if idx == RAW {
                raw
            } else {
                &m.arena[idx as usize]
            };
            pf.scan(hay, &mut m.bit_words[at..at + words]);
        }
        // not built yet (folding runs before it is): every value may hold every literal
        None => m.bit_words.resize(at + words, !0),
    }
    let cell = if idx == RAW {
        m.raw_bits.get_mut(entry as usize)
    } else {
        m.arena_bits.get_mut(idx as usize)
    };
    if let Some(cell) = cell {
        *cell = at as u32;
    }
    at
}

fn bit_set(words: &[u64], at: usize, bit: u32) -> bool {
    words
        .get(at + bit as usize / 64)
        .is_some_and(|w| w & (1 << (bit % 64)) != 0)
}

/// The prefilter's answer for `bit` on the value in `slot` after pipeline `node`.
fn prefilter_hit(
    rules: &Compiled,
    v: &Val<'_>,
    slot: u32,
    node: u32,
    bit: u32,
    st: &mut State<'_>,
) -> bool {
    let at = scan_bits(rules, &v.data, slot, node, st);
    bit_set(&st.memo.bit_words, at, bit)
}

/// Whether any value of a check's cell (every value of its kind, or its kind's entries of
/// one name) after its pipeline node has one of `bit`'s literals: the union of the per-value
/// answers, computed once per (cell, node) and request.
fn union_hit(rules: &Compiled, c: &Collections, ch: &Check, bit: u32, st: &mut State<'_>) -> bool {
    let node = scan_node(&rules.scan_nodes, ch.node);
    let cell = ch.cell as usize * st.nodes as usize + node as usize;
    let Some(&known) = st.union_bits.get(cell) else {
        return true;
    };
    if known != UNSET {
        return bit_set(&st.union_words, known as usize, bit);
    }
    let words = (rules.prefilter_bits as usize).div_ceil(64);
    let acc = st.union_words.len();
    st.union_words.resize(acc + words, 0);
    let base = st.bases[ch.kind as usize];
    for (i, data) in cell_values(rules, c, ch) {
        let at = scan_bits(rules, &data, base + i as u32, node, st);
        for w in 0..words {
            let v = st.memo.bit_words[at + w];
            st.union_words[acc + w] |= v;
        }
    }
    st.union_bits[cell] = acc as u32;
    st.union_touched.push(cell as u32);
    bit_set(&st.union_words, acc, bit)
}

/// The values a check looks at, with their index in the kind: every value of its kind, or
/// only those of the entries named as its cell's key.
fn cell_values<'a>(
    rules: &'a Compiled,
    c: &'a Collections,
    ch: &Check,
) -> impl Iterator<Item = (usize, Cow<'a, [u8]>)> + use<'a> {
    let k = ch.kind;
    let key = (ch.cell as usize)
        .checked_sub(KINDS)
        .and_then(|i| rules.keys.get(i))
        .map(|(_, key)| &key[..]);
    let entries = kind_entries(c, k).map(|(e, _)| e);
    (0..kind_len(c, k)).filter_map(move |i| {
        if let (Some(key), Some(entries)) = (key, entries)
            && !entries
                .get(i)
                .is_some_and(|e| e.name.eq_ignore_ascii_case(key))
        {
            return None;
        }
        slot_data(c, k, i).map(|data| (i, data))
    })
}

/// The value in slot `i` of kind `k` (as `resolve` hands it out).
fn slot_data(c: &Collections, k: u32, i: usize) -> Option<Cow<'_, [u8]>> {
    if let Some((entries, names)) = kind_entries(c, k) {
        let e = entries.get(i)?;
        return Some(Cow::Borrowed(if names {
            &e.name[..]
        } else {
            &e.value[..]
        }));
    }
    match k {
        kind::XML_TEXT => c.xml_text.as_deref().map(Cow::Borrowed),
        kind::XML_ATTRS => c.xml_attrs.get(i).map(|a| Cow::Borrowed(&a[..])),
        k => SCALARS
            .get(k.wrapping_sub(SCALAR_BASE) as usize)
            .and_then(|&s| scalar(s, c)),
    }
}

/// The single-valued variables in [`scalar_kind`] order (multipart flags share one kind and
/// are left out: their slot does not say which flag).
const SCALARS: [Scalar; 19] = [
    Scalar::RequestFilename,
    Scalar::RequestBasename,
    Scalar::RequestUri,
    Scalar::RequestUriRaw,
    Scalar::RequestLine,
    Scalar::RequestMethod,
    Scalar::RequestProtocol,
    Scalar::QueryString,
    Scalar::RequestBody,
    Scalar::RequestBodyLength,
    Scalar::ReqbodyProcessor,
    Scalar::ReqbodyError,
    Scalar::ReqbodyErrorMsg,
    Scalar::ArgsCombinedSize,
    Scalar::FilesCombinedSize,
    Scalar::RemoteAddr,
    Scalar::UniqueId,
    Scalar::Duration,
    Scalar::FullRequestLength,
];

/// The value kinds a target's values come from (None: values that are not request data,
/// or a count).
fn target_kinds(t: &Target) -> Option<&'static [u32]> {
    use kind::*;
    if t.count {
        return None;
    }
    Some(match t.var {
        Var::Args => &[ARGS_GET, ARGS_POST, ARGS_OTHER],
        Var::ArgsGet => &[ARGS_GET],
        Var::ArgsPost => &[ARGS_POST],
        Var::ArgsNames => &[ARGS_GET_NAMES, ARGS_POST_NAMES, ARGS_OTHER_NAMES],
        Var::ArgsGetNames => &[ARGS_GET_NAMES],
        Var::ArgsPostNames => &[ARGS_POST_NAMES],
        Var::Cookies => &[COOKIES],
        Var::CookiesNames => &[COOKIES_NAMES],
        Var::Headers => &[HEADERS],
        Var::HeadersNames => &[HEADERS_NAMES],
        Var::Files => &[FILES],
        Var::FilesNames => &[FILES_NAMES],
        Var::MultipartPartHeaders => &[MULTIPART_PART_HEADERS],
        Var::Xml => &[XML_TEXT, XML_ATTRS],
        Var::Scalar(Scalar::Multipart(_)) => return None,
        Var::Scalar(s) => {
            const K: [u32; 19] = {
                let mut k = [0u32; 19];
                let mut i = 0;
                while i < 19 {
                    k[i] = SCALAR_BASE + i as u32;
                    i += 1;
                }
                k
            };
            let i = scalar_kind(s) as usize;
            return K.get(i..i + 1);
        }
        Var::Collection(_)
        | Var::MatchedVar
        | Var::MatchedVarName
        | Var::MatchedVars
        | Var::MatchedVarsNames
        | Var::Empty => return None,
    })
}

/// True when no value of any of the rule's targets, after any pipeline the rule looks at,
/// holds one of its literals: the rule cannot match (what the evaluator's jumps assume; debug
/// builds check every jumped-over rule with it).
fn cannot_match(rules: &Compiled, rule: &Rule, c: &Collections, st: &mut State<'_>) -> bool {
    let Some(checks) = rule.checks.as_ref() else {
        return false;
    };
    (0..checks.ends.len()).all(|i| target_cannot_match(rules, rule, i, c, st))
}

/// Gives live bits to the targets of links with prefilter checks in rules a request can
/// reach (a link's targets have consecutive bits from its `live_bit`), and lists per union
/// cell and node the (prefilter bit, live bit) of the targets checking there.
pub(super) fn index_live(rules: &mut Compiled) {
    let mut cells: Vec<Vec<NodeLinks>> = vec![Vec::new(); KINDS + rules.keys.len()];
    let mut next = 0u32;
    let mut verdicts = Vec::new();
    let mut unfiltered = 0;
    for (phase, items) in rules.phases.iter_mut().enumerate() {
        for (at, item) in items.iter_mut().enumerate() {
            let Item::Rule(top) = item else { continue };
            let reached = !top.unreached;
            let mut link = Some(&mut **top);
            while let Some(r) = link {
                if !reached || r.checks.is_none() {
                    r.verdict = None;
                }
                // the literals that let a verdict's operator run: none for a negated operator
                // (it matches where they are absent)
                let filter = r.prefilter_bit.filter(|_| !r.negated);
                if r.verdict.is_some() {
                    r.verdict = Some(verdicts.len() as u32);
                    verdicts.push((phase as u32, at as u32));
                    if filter.is_none() {
                        unfiltered += 1;
                    }
                }
                let answer = match (r.verdict, r.prefilter_bit) {
                    (Some(v), _) => Some(VERDICT | v),
                    (None, Some(bit)) => Some(bit),
                    (None, None) => None,
                };
                if let (true, Some(answer), Some(checks)) = (reached, answer, r.checks.as_ref()) {
                    r.live_bit = Some(next);
                    for t in 0..checks.ends.len() {
                        for ch in checks.target(t) {
                            let Some(cell) = cells.get_mut(ch.cell as usize) else {
                                continue;
                            };
                            // checks of nodes that share a scan are answered by one; a verdict
                            // is the operator's on the node's own output
                            let node = if answer & VERDICT == 0 {
                                scan_node(&rules.scan_nodes, ch.node)
                            } else {
                                ch.node
                            };
                            let link = (answer, next, filter.unwrap_or(NO_PREFILTER));
                            match cell.iter_mut().find(|(n, _)| *n == node) {
                                Some((_, links)) => links.push(link),
                                None => cell.push((node, vec![link])),
                            }
                        }
                        next += 1;
                    }
                }
                link = r.chain.as_deref_mut();
            }
        }
    }
    rules.report.verdicts = verdicts.len();
    rules.report.verdicts_unfiltered = unfiltered;
    rules.verdicts = verdicts;
    let mut named = vec![Vec::new(); KINDS];
    for (at, (kind, _)) in rules.keys.iter().enumerate() {
        let live = cells.get(KINDS + at).is_some_and(|c| !c.is_empty());
        if let Some(n) = named.get_mut(*kind as usize).filter(|_| live) {
            n.push(at);
        }
    }
    for (phase, items) in rules.phases.iter().enumerate() {
        rules.phase_skips[phase] = items
            .iter()
            .map(|item| match item {
                Item::Rule(r) => match (r.live_bit, &r.checks) {
                    (Some(first), Some(checks)) => (first, checks.ends.len() as u32),
                    _ => (0, 0),
                },
                Item::Marker(_) => (0, 0),
            })
            .collect();
    }
    let mut live_items = vec![(u32::MAX, 0); next as usize];
    for (phase, skips) in rules.phase_skips.iter().enumerate() {
        let mut always = vec![0u64; skips.len().div_ceil(64)];
        for (at, &(first, targets)) in skips.iter().enumerate() {
            let run = rules.folded_runs[phase]
                .get(at)
                .is_some_and(Option::is_some);
            // a marker does nothing unless a jump to it is pending, and then the items are
            // walked one by one (the live mask is not used): it is not visited otherwise
            let marker = matches!(rules.phases[phase].get(at), Some(Item::Marker(_)));
            if run || (targets == 0 && !marker) {
                always[at / 64] |= 1 << (at % 64);
                continue;
            }
            for b in first..first + targets {
                if let Some(item) = live_items.get_mut(b as usize) {
                    *item = (phase as u32, at as u32);
                }
            }
        }
        rules.phase_always[phase] = always;
    }
    rules.live_items = live_items;
    let cells = cells
        .into_iter()
        .map(|nodes| {
            nodes
                .into_iter()
                .map(|(node, links)| live_node(node, &links))
                .collect()
        })
        .collect();
    rules.live_cells = cells;
    rules.live_keys = named;
    rules.live_bits = next;
}

/// A pipeline node of a union cell and the links that look there, as they are gathered:
/// (prefilter bit, or [`VERDICT`] and the verdict number; live bit; for a verdict, the
/// prefilter bit that lets its operator run, or [`NO_PREFILTER`]) each.
type NodeLinks = (u32, Vec<(u32, u32, u32)>);

/// The [`LiveNode`] of `node` for its links (see [`NodeLinks`]).
fn live_node(node: u32, links: &[(u32, u32, u32)]) -> LiveNode {
    let mut n = LiveNode {
        node,
        ..LiveNode::default()
    };
    for &(answer, live, filter) in links {
        if answer & VERDICT == 0 {
            n.lives.push((answer, live));
        } else {
            n.verdicts.push((filter, answer & !VERDICT, live));
        }
    }
    n.lives.sort_unstable();
    n.lives.dedup();
    for &(bit, _) in &n.lives {
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        match n.words.last_mut() {
            Some((w, m)) if *w == word => *m |= mask,
            _ => n.words.push((word, mask)),
        }
    }
    n
}

/// The items of `phase` to visit once the live mask is known: those always visited and the
/// rules with a live target, as a bitset over item indices.
fn runnable(rules: &Compiled, phase: usize, st: &mut State<'_>) {
    st.runnable.clear();
    st.runnable.extend_from_slice(&rules.phase_always[phase]);
    for (w, &word) in st.live.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let b = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            if let Some(&(p, at)) = rules.live_items.get(b)
                && p as usize == phase
                && let Some(r) = st.runnable.get_mut(at as usize / 64)
            {
                *r |= 1 << (at % 64);
            }
        }
    }
}

/// The first item at or after `at` set in `bits` (`len` when none).
fn next_runnable(bits: &[u64], at: usize, len: usize) -> usize {
    let mut w = at / 64;
    let Some(&first) = bits.get(w) else {
        return len;
    };
    let mut word = first & (!0u64 << (at % 64));
    loop {
        if word != 0 {
            return (w * 64 + word.trailing_zeros() as usize).min(len);
        }
        w += 1;
        match bits.get(w) {
            Some(&next) => word = next,
            None => return len,
        }
    }
}

/// The request's live targets: the union over its values of each value's mask for its kind
/// (and for a named entry's cell when its name is one), kept in the memo per value.
fn live_mask(rules: &Compiled, c: &Collections, st: &mut State<'_>) {
    let words = (rules.live_bits as usize).div_ceil(64);
    st.live.clear();
    // the values of the head are the same in both phases: phase 2 starts from their mask
    let head_known = st.live_head.len() == words;
    if head_known {
        st.live.extend_from_slice(&st.live_head);
    } else {
        st.live.resize(words, 0);
    }
    st.live_ready = true;
    for head in [true, false] {
        if head && head_known {
            continue;
        }
        add_live(rules, c, st, head);
        if head {
            st.live_head.clear();
            st.live_head.extend_from_slice(&st.live);
        }
    }
}

/// The kinds whose values come from the request head only (the body processor never
/// changes them): phase 2 reuses their part of the live mask.
const HEAD_KINDS: u64 = {
    use kind::*;
    let mut m = 1 << ARGS_GET
        | 1 << ARGS_GET_NAMES
        | 1 << COOKIES
        | 1 << COOKIES_NAMES
        | 1 << HEADERS
        | 1 << HEADERS_NAMES;
    let mut i = 0;
    while i < SCALARS.len() {
        if head_scalar(SCALARS[i]) {
            m |= 1 << (SCALAR_BASE + scalar_kind(SCALARS[i]));
        }
        i += 1;
    }
    m
};

/// The single-valued variables the request head alone sets (any other, and any added later,
/// is worked out again in phase 2).
const fn head_scalar(s: Scalar) -> bool {
    matches!(
        s,
        Scalar::RequestFilename
            | Scalar::RequestBasename
            | Scalar::RequestUri
            | Scalar::RequestUriRaw
            | Scalar::RequestLine
            | Scalar::RequestMethod
            | Scalar::RequestProtocol
            | Scalar::QueryString
            | Scalar::RemoteAddr
            | Scalar::UniqueId
            | Scalar::Duration
    )
}

/// ORs into the request's live targets the masks of the values of the head's kinds (`head`),
/// or of the other kinds.
fn add_live(rules: &Compiled, c: &Collections, st: &mut State<'_>, head: bool) {
    // the kinds with values in this request, of the head's or the others
    let mut kinds = st.nonempty & if head { HEAD_KINDS } else { !HEAD_KINDS };
    while kinds != 0 {
        let k = kinds.trailing_zeros();
        kinds &= kinds - 1;
        let wholesale = rules
            .live_cells
            .get(k as usize)
            .is_some_and(|c| !c.is_empty());
        let named = rules.live_keys.get(k as usize).map_or(&[][..], |n| &n[..]);
        if !wholesale && named.is_empty() {
            continue;
        }
        let entries = kind_entries(c, k).map(|(e, _)| e);
        let base = st.bases[k as usize];
        for i in 0..kind_len(c, k) {
            let Some(data) = slot_data(c, k, i) else {
                continue;
            };
            let entry = entry_of(&data, base + i as u32, st);
            if wholesale {
                or_live(rules, c, &data, entry, k, st);
            }
            if let Some(e) = entries.and_then(|e| e.get(i)) {
                for &at in named {
                    if rules
                        .keys
                        .get(at)
                        .is_some_and(|(_, key)| e.name.eq_ignore_ascii_case(key))
                    {
                        or_live(rules, c, &data, entry, (KINDS + at) as u32, st);
                    }
                }
            }
        }
    }
}

/// ORs into the request's live targets those whose checks of `cell` the value `raw` (memo
/// entry `entry`) passes, worked out once per value and cell.
fn or_live(
    rules: &Compiled,
    c: &Collections,
    raw: &[u8],
    entry: u32,
    cell: u32,
    st: &mut State<'_>,
) {
    let m = &st.memo;
    let first = m.entry_live.get(entry as usize).copied();
    let known = match first {
        Some((c, at)) if c == cell => Some(at),
        Some((c, _)) if c == UNSET => None,
        _ => m
            .live_more
            .get(&(u64::from(cell) << 32 | u64::from(entry)))
            .copied(),
    };
    let at = match known {
        Some(at) => at,
        None => {
            let mut bits = std::mem::take(&mut st.live_found);
            bits.clear();
            for n in rules.live_cells.get(cell as usize).into_iter().flatten() {
                // the prefilter's answer, looked up once the first link needs it
                let mut answer = None;
                if !n.words.is_empty() {
                    // the links decided by literals: the scan's words ANDed with theirs
                    let at = *answer.insert(entry_bits(rules, raw, entry, n.node, st));
                    for &(w, mask) in &n.words {
                        let word = st.memo.bit_words.get(at + w as usize).copied();
                        let mut hits = word.unwrap_or(0) & mask;
                        while hits != 0 {
                            let bit = w * 64 + hits.trailing_zeros();
                            hits &= hits - 1;
                            let from = n.lives.partition_point(|&(b, _)| b < bit);
                            let of_bit = n.lives[from..].iter().take_while(|&&(b, _)| b == bit);
                            for &(_, live) in of_bit {
                                if !bits.contains(&live) {
                                    bits.push(live);
                                }
                            }
                        }
                    }
                }
                for &(bit, v, live) in &n.verdicts {
                    let hit = if bit == NO_PREFILTER {
                        verdict(rules, c, v, raw, entry, n.node, st)
                    } else {
                        // a rule with literals runs its operator only on a value that holds one
                        let at = match answer {
                            Some(at) => at,
                            None => *answer.insert(entry_bits(rules, raw, entry, n.node, st)),
                        };
                        bit_set(&st.memo.bit_words, at, bit)
                            && verdict(rules, c, v, raw, entry, n.node, st)
                    };
                    if hit && !bits.contains(&live) {
                        bits.push(live);
                    }
                }
            }
            let m = &mut st.memo;
            let at = if bits.is_empty() {
                NO_TARGET
            } else {
                let at = m.live_lists.len() as u32;
                m.live_lists.push(bits.len() as u32);
                m.live_lists.extend_from_slice(&bits);
                m.bytes += 4 * (bits.len() + 1);
                at
            };
            st.live_found = bits;
            match m.entry_live.get_mut(entry as usize) {
                Some(slot) if slot.0 == UNSET => *slot = (cell, at),
                _ => {
                    m.live_more
                        .insert(u64::from(cell) << 32 | u64::from(entry), at);
                }
            }
            at
        }
    };
    if at == NO_TARGET {
        return;
    }
    let at = at as usize;
    let m = &st.memo;
    let n = m.live_lists.get(at).copied().unwrap_or(0) as usize;
    for &live in m.live_lists.get(at + 1..at + 1 + n).unwrap_or(&[]) {
        if let Some(w) = st.live.get_mut(live as usize / 64) {
            *w |= 1 << (live % 64);
        }
    }
}

/// Whether a value of one of `checks` holds one of `bit`'s literals.
fn any_hit(
    rules: &Compiled,
    c: &Collections,
    checks: &[Check],
    bit: u32,
    st: &mut State<'_>,
) -> bool {
    // a kind without values has no literal under any pipeline
    checks
        .iter()
        .any(|ch| st.nonempty & (1 << ch.kind) != 0 && union_hit(rules, c, ch, bit, st))
}

/// True when no value of `rule`'s target `i` holds one of its literals (the target need not
/// be resolved).
fn target_cannot_match(
    rules: &Compiled,
    rule: &Rule,
    i: usize,
    c: &Collections,
    st: &mut State<'_>,
) -> bool {
    let Some(checks) = rule.checks.as_ref() else {
        return false;
    };
    let Some(first) = rule.live_bit else {
        return rule.verdict.is_none()
            && rule
                .prefilter_bit
                .is_some_and(|bit| !any_hit(rules, c, checks.target(i), bit, st));
    };
    if !st.live_ready {
        live_mask(rules, c, st);
    }
    let cannot = !bit_set(&st.live, 0, first + i as u32);
    debug_assert_eq!(
        cannot,
        match (rule.verdict, rule.prefilter_bit) {
            (Some(v), _) => !any_verdict(rules, c, checks.target(i), v, st),
            (None, Some(bit)) => !any_hit(rules, c, checks.target(i), bit, st),
            (None, None) => false,
        },
        "{}",
        rule.id
    );
    cannot
}

/// Marks a [`Rule::verdict`] number among the prefilter bits of [`Compiled::live_cells`].
const VERDICT: u32 = 1 << 31;

/// Whether the [`Rule::verdict`] rule `v` matches the value `raw` (memo entry `entry`) after
/// pipeline `node`. A costly operator's result is kept in the operator memo as the rule would
/// keep it, so that the rule, when it runs, finds it there.
fn verdict(
    rules: &Compiled,
    c: &Collections,
    v: u32,
    raw: &[u8],
    entry: u32,
    node: u32,
    st: &mut State<'_>,
) -> bool {
    let Some(rule) = rules.verdict_rule(v) else {
        return true;
    };
    let Some(op) = rule.op.as_ref() else {
        return true;
    };
    let idx = cached_entry(rules, raw, entry, node, st);
    let id = if idx == RAW { entry | ENTRY_BIT } else { idx };
    let key = memoizable(op).then(|| OpKey::of(rule, id));
    if let Some(code) = key.and_then(|k| known(&st.memo, k)) {
        return (code != NO_MATCH) != rule.negated;
    }
    // the value moved out of the memo for the time of the operator
    let held = if idx == RAW {
        Vec::new()
    } else {
        st.memo
            .arena
            .get_mut(idx as usize)
            .map(std::mem::take)
            .unwrap_or_default()
    };
    let value: &[u8] = if idx == RAW { raw } else { &held };
    let matched = op_outcome(rule, op, value, c, st, key).is_some();
    if idx != RAW
        && let Some(slot) = st.memo.arena.get_mut(idx as usize)
    {
        *slot = held;
    }
    matched != rule.negated
}

/// Whether the [`Rule::verdict`] rule `v` matches a value of one of `checks` (what its live
/// bits say, worked out value by value).
fn any_verdict(
    rules: &Compiled,
    c: &Collections,
    checks: &[Check],
    v: u32,
    st: &mut State<'_>,
) -> bool {
    for ch in checks {
        if st.nonempty & (1 << ch.kind) == 0 {
            continue;
        }
        let base = st.bases[ch.kind as usize];
        for (i, data) in cell_values(rules, c, ch) {
            let entry = entry_of(&data, base + i as u32, st);
            if verdict(rules, c, v, &data, entry, ch.node, st) {
                return true;
            }
        }
    }
    false
}

/// The places [`cannot_match`] looks for `rule` (None: it always runs): every kind of every
/// target, after each of the rule's steps (its pipeline and, for multiMatch, each step
/// before it and before any). A target naming one entry (`REQUEST_HEADERS:User-Agent`) looks
/// at the entries of that name only, through a cell of its own in `keys`. Returns the checks
/// in target order, and where each target's end.
pub(super) fn prefilter_checks(rule: &Rule, keys: &mut Vec<(u32, Vec<u8>)>) -> Option<Checks> {
    // a negated operator matches where the literals are absent: only a verdict answers for it
    if rule.verdict.is_none() && (rule.negated || rule.prefilter_bit.is_none()) {
        return None;
    }
    // asked which kinds are a collection's entries (named entries get cells of their own)
    let no_request = Collections::default();
    let mut checks: Vec<Check> = Vec::new();
    let mut ends = Vec::new();
    for t in &rule.targets {
        let start = checks.len();
        for &kind in target_kinds(t)? {
            let cell = match &t.sel {
                Sel::Key(key) if kind_entries(&no_request, kind).is_some() => {
                    let at = match keys
                        .iter()
                        .position(|(k, n)| *k == kind && n.as_slice() == key.as_bytes())
                    {
                        Some(at) => at,
                        None => {
                            keys.push((kind, key.as_bytes().to_vec()));
                            keys.len() - 1
                        }
                    };
                    (KINDS + at) as u32
                }
                _ => kind,
            };
            for &node in &rule.steps {
                let ch = Check { kind, cell, node };
                if !checks[start..].contains(&ch) {
                    checks.push(ch);
                }
            }
        }
        ends.push(checks.len() as u32);
    }
    Some(Checks {
        all: checks.into_boxed_slice(),
        ends: ends.into_boxed_slice(),
    })
}

/// Whether a top rule link can have a [`Rule::verdict`]: its operator's result depends on
/// the value's bytes alone (no macro in its argument). Where the rule has literals the
/// operator runs only on the values that hold one (see [`or_live`]): a value with the
/// literal but not the pattern then leaves the rule out too, instead of having it evaluated
/// on every request that carries the value.
pub(super) fn wants_verdict(r: &Rule) -> bool {
    r.op.as_ref()
        .is_some_and(|op| !matches!(op, Op::Dynamic { .. }))
}

/// Whether `op`'s result on a value is worth keeping in the memo: a function of the value's
/// bytes alone (no macro in the argument), and costlier than a lookup.
pub(super) fn memoizable(op: &Op) -> bool {
    match op {
        Op::Static(o) => matches!(o, Operator::Rx(_) | Operator::Pm(_)),
        Op::SqlI | Op::Xss => true,
        Op::Dynamic { .. } => false,
    }
}

/// Runs `rule`'s operator on `value` (or takes its result from the memo under `memo_key`),
/// writes its captures, and says whether the rule matched the value.
fn apply_op(
    rule: &Rule,
    op: &Op,
    value: &[u8],
    c: &Collections,
    st: &mut State<'_>,
    memo_key: Option<OpKey>,
) -> bool {
    let found = match memo_key.and_then(|k| known(&st.memo, k)) {
        Some(code) => caps_of(code),
        None => op_outcome(rule, op, value, c, st, memo_key),
    };
    let Some(found) = found else {
        return rule.negated;
    };
    if rule.negated {
        return false;
    }
    if rule.capture {
        let caps: &[Option<Arc<[u8]>>] = match &found {
            Caps::Kept(at) => st.memo.captures.get(*at).map_or(&[], |c| &c[..]),
            Caps::Made(caps) => caps,
        };
        if !caps.is_empty() {
            st.tx_gen += 1;
            for (i, cap) in caps.iter().enumerate() {
                if let Some(cap) = cap {
                    match capture_name(i) {
                        Some(name) => st.tx.set(name, Some(name), cap.clone()),
                        None => st.tx.set(&i.to_string(), None, cap.clone()),
                    }
                }
            }
            st.caps_at = match found {
                Caps::Kept(at) => Some(at as u32),
                Caps::Made(_) => None,
            };
        }
    }
    true
}

/// An operator's match, with its captures in the memo (`Kept`) or made for this call (`Made`).
enum Caps {
    Kept(usize),
    Made(Captures),
}

/// `op`'s result on `value` (None: no match, before any negation) when the memo has none,
/// worked out and kept there under `memo_key`.
fn op_outcome(
    rule: &Rule,
    op: &Op,
    value: &[u8],
    c: &Collections,
    st: &mut State<'_>,
    memo_key: Option<OpKey>,
) -> Option<Caps> {
    let result = operator_result(rule, op, value, c, st);
    match memo_key {
        Some(k) => caps_of(remember(&mut st.memo, k, result)),
        None => result.map(Caps::Made),
    }
}

/// The match an operator memo code stands for.
fn caps_of(code: u32) -> Option<Caps> {
    match code {
        NO_MATCH => None,
        MATCH => Some(Caps::Made(Vec::new())),
        code => Some(Caps::Kept((code - MATCH - 1) as usize)),
    }
}

/// Where the memo keeps an operator's result: the rule (its link, and its [`Rule::verdict`]
/// number if it has one) and the transformed value (arena index, or entry number with
/// [`ENTRY_BIT`]).
#[derive(Clone, Copy)]
struct OpKey {
    link: u32,
    id: u32,
    verdict: Option<u32>,
}

impl OpKey {
    fn of(rule: &Rule, id: u32) -> OpKey {
        OpKey {
            link: rule.link,
            id,
            verdict: rule.verdict,
        }
    }

    /// The key of the operator map.
    fn map_key(self) -> u64 {
        (u64::from(self.link) << 32) | u64::from(self.id)
    }
}

/// A rule's two bits in a value's row of verdicts: unknown (0), no match, a match that
/// captured nothing, or a match whose code (naming its captures) is in the operator map.
const VERDICT_NO_MATCH: u64 = 0b01;
const VERDICT_MATCH: u64 = 0b11;
const VERDICT_CAPTURES: u64 = 0b10;

/// The words of a value's row of verdicts for `verdicts` rules (two bits each).
fn verdict_row_words(verdicts: usize) -> u32 {
    (2 * verdicts).div_ceil(64) as u32
}

/// Where value `id`'s row of verdicts starts in `verdict_words` (None: no verdict kept yet).
fn verdict_row(m: &Memo, id: u32) -> Option<usize> {
    let at = if id & ENTRY_BIT != 0 {
        m.raw_verdicts.get((id & !ENTRY_BIT) as usize)
    } else {
        m.arena_verdicts.get(id as usize)
    };
    at.filter(|&&at| at != UNSET).map(|&at| at as usize)
}

/// The operator result the memo keeps under `k`, as a code of [`Memo::ops`].
#[inline]
fn known(m: &Memo, k: OpKey) -> Option<u32> {
    let Some(v) = k.verdict else {
        return m.ops.get(&k.map_key()).copied();
    };
    let word = m
        .verdict_words
        .get(verdict_row(m, k.id)? + v as usize / 32)?;
    match (word >> (2 * (v % 32))) & 3 {
        VERDICT_NO_MATCH => Some(NO_MATCH),
        VERDICT_MATCH => Some(MATCH),
        VERDICT_CAPTURES => m.ops.get(&k.map_key()).copied(),
        _ => None,
    }
}

/// Keeps an operator's result in the memo under `key` and returns its code there.
fn remember(m: &mut Memo, key: OpKey, result: Option<Captures>) -> u32 {
    let code = match result {
        None => NO_MATCH,
        Some(caps) if caps.is_empty() => MATCH,
        Some(caps) => {
            m.bytes += caps.iter().flatten().map(|c| c.len()).sum::<usize>();
            m.captures.push(caps);
            MATCH + 1 + (m.captures.len() - 1) as u32
        }
    };
    let Some(v) = key.verdict else {
        m.ops.insert(key.map_key(), code);
        return code;
    };
    let row = match verdict_row(m, key.id) {
        Some(row) => row,
        None => {
            let row = m.verdict_words.len();
            let words = m.verdict_row as usize;
            m.verdict_words.resize(row + words, 0);
            m.bytes += words * 8;
            let cell = if key.id & ENTRY_BIT != 0 {
                m.raw_verdicts.get_mut((key.id & !ENTRY_BIT) as usize)
            } else {
                m.arena_verdicts.get_mut(key.id as usize)
            };
            if let Some(cell) = cell {
                *cell = row as u32;
            }
            row
        }
    };
    if let Some(word) = m.verdict_words.get_mut(row + v as usize / 32) {
        let bits = match code {
            NO_MATCH => VERDICT_NO_MATCH,
            MATCH => VERDICT_MATCH,
            _ => VERDICT_CAPTURES,
        };
        *word |= bits << (2 * (v % 32));
    }
    if code > MATCH {
        m.ops.insert(key.map_key(), code);
    }
    code
}

/// The TX name of capture `i` for `0` to `9`, made once and lent: a capture that replaces
/// the value of an earlier one touches no reference count.
fn capture_name(i: usize) -> Option<&'static Arc<str>> {
    static NAMES: std::sync::LazyLock<[Arc<str>; 10]> =
        std::sync::LazyLock::new(|| std::array::from_fn(|i| Arc::from(i.to_string())));
    NAMES.get(i)
}

/// The operator's own result: None when it did not match, else its captures (empty when the
/// rule does not capture).
fn operator_result(
    rule: &Rule,
    op: &Op,
    value: &[u8],
    c: &Collections,
    st: &mut State<'_>,
) -> Option<Captures> {
    match op {
        Op::Static(o) if !rule.capture => o.is_match(value).then(Vec::new),
        Op::Static(o) => o.evaluate(value),
        Op::SqlI => injection::detect_sqli(value).map(|fp| vec![Some(Arc::from(fp))]),
        Op::Xss => injection::detect_xss(value).then(Vec::new),
        Op::Dynamic {
            name,
            arg,
            last,
            tx_only,
        } => {
            // an argument of TX variables only is expanded again only when TX changed
            if *tx_only
                && let Some((link, generation, op)) = &st.last_dynamic
                && *link == rule.link
                && *generation == st.tx_gen
            {
                return op.evaluate(value);
            }
            // expanded into a buffer kept between calls (most expand to what they did last)
            let mut expanded = std::mem::take(&mut st.setvar_value);
            expanded.clear();
            arg.expand_into(&mut expanded, |n, k, out| {
                macro_value(n, k, None, c, st, out)
            });
            let op = dynamic_operator(rule, name, &expanded, last);
            st.setvar_value = expanded;
            let op = op?;
            if *tx_only {
                st.last_dynamic = Some((rule.link, st.tx_gen, op.clone()));
            }
            op.evaluate(value)
        }
    }
}

/// The operator for an expanded argument, compiled once per distinct expansion in a row.
fn dynamic_operator(
    rule: &Rule,
    name: &str,
    expanded: &[u8],
    last: &DynamicCache,
) -> Option<std::sync::Arc<Operator>> {
    if let Ok(guard) = last.0.lock()
        && let Some((arg, op)) = guard.as_ref()
        && arg.as_slice() == expanded
    {
        return Some(op.clone());
    }
    let op = std::sync::Arc::new(compile_expanded(rule, name, expanded)?);
    if let Ok(mut guard) = last.0.lock() {
        *guard = Some((expanded.to_vec(), op.clone()));
    }
    Some(op)
}

/// The operator `name` of `rule` for an argument whose macros are expanded (data files are
/// found beside the rule's file).
pub(super) fn compile_expanded(rule: &Rule, name: &str, expanded: &[u8]) -> Option<Operator> {
    let base = rule.loc.file.parent().unwrap_or(std::path::Path::new("."));
    Operator::compile(name, &String::from_utf8_lossy(expanded), base).ok()
}

fn expand(t: &Template, top: Option<&Rule>, c: &Collections, st: &State<'_>) -> Vec<u8> {
    t.expand_with(|name, key, out| macro_value(name, key, top, c, st, out))
}

fn macro_value(
    name: &str,
    key: Option<&str>,
    top: Option<&Rule>,
    c: &Collections,
    st: &State<'_>,
    out: &mut Vec<u8>,
) {
    if name == "RULE" {
        if let Some(r) = top {
            rule_macro(r, key, out);
        }
        return;
    }
    // macro names are uppercased when the template is parsed
    if let Some(coll) = Coll::from_upper(name) {
        if let Some((_, v)) = key.and_then(|k| coll_get(st, coll_index(coll), k)) {
            out.extend_from_slice(v);
        }
        return;
    }
    match name {
        "MATCHED_VAR" => {
            if let Some((_, value)) = matched_var(st) {
                out.extend_from_slice(value);
            }
            return;
        }
        "MATCHED_VAR_NAME" => {
            if let Some((name, _)) = matched_var(st) {
                out.extend_from_slice(name.as_bytes());
            }
            return;
        }
        _ => {}
    }
    // macro names are uppercased when the template is parsed
    let Some(var) = Var::from_upper(name) else {
        return;
    };
    let t = Target {
        var,
        sel: match key {
            Some(k) => Sel::Key(k.to_owned()),
            None => Sel::All,
        },
        count: false,
        full_name: String::new(),
        default_names: std::sync::OnceLock::new(),
    };
    let mut vals = Vec::new();
    resolve(&t, c, st, &mut vals);
    if let Some(v) = vals.first() {
        out.extend_from_slice(&v.data);
    }
}

/// `%{rule.<key>}` of the rule `r` (the top rule of a chain): its id, msg or severity.
pub(super) fn rule_macro(r: &Rule, key: Option<&str>, out: &mut Vec<u8>) {
    match key.unwrap_or("") {
        "id" => out.extend_from_slice(r.id.to_string().as_bytes()),
        "msg" => out.extend_from_slice(r.msg.as_deref().unwrap_or("").as_bytes()),
        "severity" => out.extend_from_slice(
            r.severity
                .map(|s| s.to_string())
                .unwrap_or_default()
                .as_bytes(),
        ),
        _ => {}
    }
}

/// [`setvar`] of the `setvar` number `site.1` of the rule link `site.0`: one that writes what
/// the captures dictate takes its name and value from the memo, kept there with the captures
/// the first time they were written (the restricted-header rule writes one per header name).
fn setvar_at(top: &Rule, sv: &SetVar, site: (u32, usize), c: &Collections, st: &mut State<'_>) {
    let (key, at) = match (sv.of_captures, st.caps_at, &st.trace) {
        (true, Some(at), None) if site.1 < 256 => (
            (u64::from(site.0) << 40) | ((site.1 as u64) << 32) | u64::from(at),
            at,
        ),
        _ => return setvar(top, sv, c, st),
    };
    if let Some((name, value)) = st.memo.capture_writes.get(&key) {
        let (name, value) = (name.clone(), value.clone());
        st.tx_gen += 1;
        // (never a digit: a write of one forgets the captures, and was not kept)
        coll_set(st, coll_index(sv.coll), &name, Some(&name), value);
        return;
    }
    // the digits the templates read must all be this capture's (an earlier one's would be
    // read otherwise)
    let caps = st.memo.captures.get(at as usize);
    let held = |k: Option<&str>| {
        k.and_then(capture_index)
            .is_some_and(|d| caps.is_some_and(|c| c.get(d).is_some_and(Option::is_some)))
    };
    let complete = sv
        .name
        .macros()
        .chain(sv.value.macros())
        .all(|(n, k)| n != "TX" || held(k));
    setvar(top, sv, c, st);
    if !complete || st.caps_at.is_none() {
        return;
    }
    // what was just written, read back under the name `setvar` expanded (left in its buffer)
    let written = match &sv.name_literal {
        Some(n) => coll_get(st, coll_index(sv.coll), n),
        None => coll_get(st, coll_index(sv.coll), &crate::http::text(&st.setvar_name)),
    };
    if let Some((k, v)) = written {
        let entry = (k.clone(), v.clone());
        let m = &mut st.memo;
        m.bytes += entry.0.len() + entry.1.len();
        m.capture_writes.insert(key, entry);
    }
}

fn setvar(top: &Rule, sv: &SetVar, c: &Collections, st: &mut State<'_>) {
    // expansions go to buffers kept in the state (most setvars run per matching value)
    let mut name_buf = std::mem::take(&mut st.setvar_name);
    let mut value_buf = std::mem::take(&mut st.setvar_value);
    name_buf.clear();
    value_buf.clear();
    let expanded_name = match &sv.name_literal {
        Some(_) => None,
        None => {
            sv.name.expand_into(&mut name_buf, |n, k, out| {
                macro_value(n, k, Some(top), c, st, out)
            });
            name_buf.make_ascii_lowercase();
            // names are ASCII but for hostile input
            Some(crate::http::text(&name_buf))
        }
    };
    let name: &str = match (&sv.name_literal, &expanded_name) {
        (Some(n), _) => n,
        (None, Some(n)) => n,
        (None, None) => "",
    };
    let idx = coll_index(sv.coll);
    if idx == 0 {
        st.tx_gen += 1;
    }
    let value: Option<Arc<[u8]>> = match sv.op {
        SetOp::Unset => None,
        SetOp::Set => Some(match &sv.value_literal {
            Some(v) => v.clone(),
            None => {
                sv.value.expand_into(&mut value_buf, |n, k, out| {
                    macro_value(n, k, Some(top), c, st, out)
                });
                Arc::from(&value_buf[..])
            }
        }),
        SetOp::Add | SetOp::Sub => {
            let cur = coll_get(st, idx, name).map_or(0, |(_, v)| to_int(v));
            let delta = match &sv.value_literal {
                Some(v) => to_int(v),
                None => {
                    sv.value.expand_into(&mut value_buf, |n, k, out| {
                        macro_value(n, k, Some(top), c, st, out)
                    });
                    to_int(&value_buf)
                }
            };
            let new = if sv.op == SetOp::Add {
                cur + delta
            } else {
                cur - delta
            };
            if sv.op == SetOp::Add && sv.coll == Coll::Tx && is_score_var(name) {
                st.points += delta;
            }
            let mut digits = [0u8; 24];
            let n = decimal(new < 0, new.unsigned_abs(), &mut digits);
            Some(Arc::from(&digits[..n]))
        }
    };
    if let Some(t) = st.trace.as_mut() {
        let name = sv.name_literal.clone().unwrap_or_else(|| Arc::from(name));
        t.writes.push((idx, name, value.clone()));
    }
    match value {
        None => coll_remove(st, idx, name),
        // a name already set keeps its key (no new allocation for it)
        Some(v) => coll_set(st, idx, name, sv.name_literal.as_ref(), v),
    }
    drop(expanded_name);
    st.setvar_name = name_buf;
    st.setvar_value = value_buf;
}

/// The per-paranoia-level inbound score counters CRS 3 and 4 add rule points to.
fn is_score_var(name: &str) -> bool {
    name.starts_with("anomaly_score_pl") || name.starts_with("inbound_anomaly_score_pl")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{
        Captures, CollMap, Data, ENTRY_BIT, Layered, MATCH, MEMO_BYTES, MEMO_ENTRIES, Memo,
        NO_MATCH, OpKey, UNSET, Val, Var, known, remember, to_int, verdict_row_words,
    };

    #[test]
    fn the_memo_is_kept_only_for_its_rules_and_within_bounds() {
        let mut m = Memo::default();
        let fill = |m: &mut Memo| {
            m.entries.entry(b"value");
            m.raw_bits.push(UNSET);
            m.ops.insert(1, MATCH);
            m.bytes = 5;
        };
        m.begin(1, true, 3, 0);
        assert!(
            m.cache.capacity() >= 3 * MEMO_ENTRIES
                && m.bit_words.capacity() >= MEMO_BYTES / 8
                && m.entries.capacity() >= MEMO_ENTRIES
                && m.raw_bits.capacity() >= MEMO_ENTRIES,
            "the largest tables reserved to their bounds"
        );
        fill(&mut m);
        m.begin(1, true, 3, 0);
        assert_eq!(m.entries.len(), 1, "same rules: kept");
        m.begin(2, true, 3, 0);
        assert!(
            m.entries.is_empty() && m.raw_bits.is_empty(),
            "other rules: emptied"
        );
        fill(&mut m);
        m.begin(2, false, 3, 0);
        assert!(
            m.entries.is_empty(),
            "memo off: emptied before every request"
        );
        fill(&mut m);
        m.bytes = MEMO_BYTES + 1;
        m.begin(2, true, 3, 0);
        assert!(
            m.entries.is_empty() && m.bytes == 0,
            "past its bounds: emptied"
        );
        assert_eq!(m.ops.capacity(), 0, "and its memory given back");
        assert!(
            m.cache.capacity() >= 3 * MEMO_ENTRIES && m.entries.capacity() >= MEMO_ENTRIES,
            "and its bounds reserved again"
        );
    }

    /// The memo's two largest tables are advised to use huge pages: the mapping of each
    /// one's first whole 2 MiB page carries the `hg` flag (`VM_HUGEPAGE`) in
    /// `/proc/self/smaps`.
    #[test]
    #[cfg(target_os = "linux")]
    fn the_memos_largest_tables_are_advised_huge_pages() {
        let mut m = Memo::default();
        m.begin(1, true, 51, 0);
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        // the VmFlags of the mapping holding `addr`
        let flags_at = |addr: usize| -> Option<String> {
            let mut inside = false;
            for line in smaps.lines() {
                let range = line
                    .split_whitespace()
                    .next()
                    .and_then(|r| r.split_once('-'));
                if let Some((a, b)) = range
                    && let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                {
                    inside = (a..b).contains(&addr);
                } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                    return Some(flags.to_string());
                }
            }
            None
        };
        for (table, start) in [
            ("pipeline table", m.cache.as_ptr() as usize),
            ("prefilter answers", m.bit_words.as_ptr() as usize),
        ] {
            let page = start.next_multiple_of(2 << 20);
            let flags = flags_at(page).unwrap_or_else(|| panic!("no mapping holds the {table}"));
            assert!(
                flags.split_whitespace().any(|f| f == "hg"),
                "the {table} is not advised huge pages: VmFlags{flags}"
            );
        }
    }

    #[test]
    fn every_kind_gets_its_slots_once() {
        let mut seen = [false; super::KINDS];
        for k in super::SLOT_ORDER {
            assert!(
                !std::mem::replace(&mut seen[k as usize], true),
                "kind {k} twice"
            );
        }
        assert!(seen.iter().all(|&s| s));
    }

    /// The verdicts of rules with a verdict number sit in one row per value (two bits a rule);
    /// a match with captures is found through the operator map, and rules without a number
    /// use the map alone.
    #[test]
    fn verdicts_are_kept_in_one_row_per_value() {
        let mut m = Memo {
            verdict_row: verdict_row_words(70),
            raw_verdicts: vec![UNSET, UNSET],
            arena_verdicts: vec![UNSET],
            ..Memo::default()
        };
        let key = |id, v| OpKey {
            link: 7 + v,
            id,
            verdict: Some(v),
        };
        let (e0, e1, a0) = (ENTRY_BIT, 1 | ENTRY_BIT, 0);
        assert_eq!(known(&m, key(e0, 3)), None);
        assert_eq!(remember(&mut m, key(e0, 3), None), NO_MATCH);
        assert_eq!(remember(&mut m, key(e0, 69), Some(Vec::new())), MATCH);
        let caps: Captures = vec![Some(Arc::from(&b"x"[..]))];
        let code = remember(&mut m, key(a0, 3), Some(caps));
        assert!(code > MATCH);
        assert_eq!(known(&m, key(e0, 3)), Some(NO_MATCH));
        assert_eq!(known(&m, key(e0, 69)), Some(MATCH));
        assert_eq!(known(&m, key(e0, 4)), None);
        assert_eq!(known(&m, key(e0, 68)), None);
        assert_eq!(known(&m, key(e1, 3)), None);
        assert_eq!(known(&m, key(a0, 3)), Some(code));
        assert_eq!(known(&m, key(a0, 69)), None);
        // two rows of three words (the entry's and the arena value's); only the captures in
        // the map
        assert_eq!(m.verdict_words.len(), 6);
        assert_eq!(m.ops.len(), 1);
        let plain = OpKey {
            link: 99,
            id: e1,
            verdict: None,
        };
        assert_eq!(known(&m, plain), None);
        assert_eq!(remember(&mut m, plain, None), NO_MATCH);
        assert_eq!(known(&m, plain), Some(NO_MATCH));
        assert_eq!(m.ops.len(), 2);
        assert_eq!(known(&m, key(e1, 3)), None);
    }

    #[test]
    fn values_are_numbered_once_and_found_by_number() {
        let mut v = super::Values::default();
        let value = |i: usize| format!("value {i}").into_bytes();
        // past the table's first capacities: entries survive its growth
        for i in 0..5000 {
            assert_eq!(v.entry(&value(i)), (i as u32, true));
        }
        for i in (0..5000).rev() {
            assert_eq!(v.entry(&value(i)), (i as u32, false));
            assert_eq!(v.key(i as u32), Some(&value(i)[..]));
        }
        assert_eq!(v.entry(b""), (5000, true));
        assert_eq!(v.len(), 5001);
        assert_eq!(v.key(5001), None);
        v.clear();
        assert!(v.is_empty());
        assert_eq!(v.entry(&value(7)), (0, true));
    }

    #[test]
    fn a_recycled_value_buffer_keeps_its_allocation() {
        let kept: Vec<Val<'static>> = Vec::with_capacity(64);
        let ptr = kept.as_ptr() as usize;
        let data = vec![1u8, 2, 3];
        let mut v: Vec<Val<'_>> = super::recycle(kept);
        assert!(v.capacity() >= 64);
        assert_eq!(v.as_ptr() as usize, ptr);
        v.push(Val {
            var: Var::Empty,
            key: Data::Borrowed(b""),
            data: Data::Borrowed(&data),
            slot: None,
        });
        let back: Vec<Val<'static>> = super::recycle(v);
        assert!(back.is_empty() && back.capacity() >= 64);
    }

    /// The layout's lengths of every kind at once are `kind_len`'s, kind by kind, for a
    /// request with values of every kind (each collection a different number).
    #[test]
    fn kind_lengths_at_once_are_kind_len() {
        use crate::detect::crs::collections::{Collections, Entry};
        let entries = |n: usize| -> Vec<Entry> {
            (0..n)
                .map(|i| Entry {
                    name: format!("n{i}").into_bytes(),
                    value: format!("v{i}").into_bytes(),
                })
                .collect()
        };
        let mut c = Collections::default();
        c.args_get = entries(1);
        c.args_post = entries(2);
        c.args_other = entries(3);
        c.request_cookies = entries(4);
        c.request_headers = entries(5);
        c.files = entries(6);
        c.multipart_part_headers = entries(7);
        c.xml_text = Some(b"text".to_vec());
        c.xml_attrs = vec![b"a".to_vec(); 8];
        let all = super::kind_lens(&c);
        for (k, &n) in all.iter().enumerate() {
            assert_eq!(n as usize, super::kind_len(&c, k as u32), "kind {k}");
        }
        assert_eq!(all.iter().filter(|&&n| n > 0).count(), 15 + 20);
    }

    #[test]
    fn counts_read_as_their_decimal_digits() {
        for n in [0usize, 7, 10, 4096, usize::MAX] {
            assert_eq!(&*Data::count(n), n.to_string().as_bytes());
        }
        for n in [0i64, -1, 9, -10, 123_456, i64::MIN, i64::MAX] {
            let mut buf = [0u8; 24];
            let len = super::decimal(n < 0, n.unsigned_abs(), &mut buf);
            assert_eq!(&buf[..len], n.to_string().as_bytes());
        }
    }

    #[test]
    fn integers_parse_like_stoi() {
        assert_eq!(to_int(b"5"), 5);
        assert_eq!(to_int(b" 12abc"), 12);
        assert_eq!(to_int(b"-3"), -3);
        assert_eq!(to_int(b"abc"), 0);
        assert_eq!(to_int(b""), 0);
    }

    /// Every target resolves into `Val`s (a million and a half per corpus pass): a wide
    /// variant in `Var` (a `&str`) made each one a fifth bigger.
    #[test]
    fn resolved_values_stay_small() {
        assert_eq!(std::mem::size_of::<Var>(), 2);
        assert!(std::mem::size_of::<Val<'_>>() <= 80);
    }

    #[test]
    fn counts_keep_their_digits() {
        for n in [0usize, 7, 10, 12345, 999_999_999_999_999] {
            assert_eq!(&*Data::count(n), n.to_string().as_bytes());
        }
    }

    /// The layered TX (shared defaults under the request's writes) reads, iterates, sets and
    /// unsets like one plain map holding a copy of the defaults, over a long pseudo-random
    /// run of operations on names that are defaults, request names, or both in turn.
    #[test]
    fn a_layered_collection_behaves_like_a_copied_one() {
        use std::collections::BTreeMap;
        let names: Vec<String> = (0..40)
            .map(|i| format!("n{i}_{}", "x".repeat(i % 7)))
            .collect();
        let mut base = CollMap::default();
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (i, n) in names.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            base.insert(Arc::from(n.as_str()), Arc::from(format!("d{i}").as_bytes()));
            model.insert(n.clone(), format!("d{i}").into_bytes());
        }
        let mut l = Layered {
            base: Some(Arc::new(base)),
            ..Layered::default()
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..20_000 {
            let r = next();
            let name = &names[(r % names.len() as u64) as usize];
            match (r >> 8) % 4 {
                0 | 1 => {
                    let v = format!("v{step}");
                    let key: Arc<str> = Arc::from(name.as_str());
                    l.set(
                        name,
                        ((r >> 12) % 2 == 0).then_some(&key),
                        Arc::from(v.as_bytes()),
                    );
                    model.insert(name.clone(), v.into_bytes());
                }
                2 => {
                    l.remove(name);
                    model.remove(name);
                }
                _ => {}
            }
            let probe = &names[((r >> 20) % names.len() as u64) as usize];
            assert_eq!(
                l.get_key_value(probe)
                    .map(|(k, v)| (k.to_string(), v.to_vec())),
                model.get(probe).map(|v| (probe.clone(), v.clone())),
                "step {step}: {probe}"
            );
            if step % 97 == 0 {
                let mut all: Vec<(String, Vec<u8>)> = Vec::new();
                l.for_each(|_| true, None, |k, v| all.push((k.to_string(), v.to_vec())));
                all.sort();
                let want: Vec<(String, Vec<u8>)> =
                    model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                assert_eq!(all, want, "step {step}");
                let mut some: Vec<String> = Vec::new();
                l.for_each(|k| k.ends_with("xx"), None, |k, _| some.push(k.to_string()));
                some.sort();
                let want: Vec<String> = model
                    .keys()
                    .filter(|k| k.ends_with("xx"))
                    .cloned()
                    .collect();
                assert_eq!(some, want, "step {step}");
                // the same through the defaults' names listed beforehand
                let listed: Vec<Arc<str>> = l
                    .base
                    .iter()
                    .flat_map(|b| b.keys())
                    .filter(|k| k.ends_with("xx"))
                    .cloned()
                    .collect();
                let mut some: Vec<String> = Vec::new();
                l.for_each(
                    |k| k.ends_with("xx"),
                    Some(&listed),
                    |k, _| some.push(k.to_string()),
                );
                some.sort();
                assert_eq!(some, want, "step {step}, listed");
            }
        }
    }
}
