//! Compiling the parsed directives into rules the engine runs: targets resolved to variables,
//! operators compiled, actions interpreted, chains nested, exclusions applied, and every
//! transformation pipeline interned in one prefix tree so that a value's pipeline is computed
//! once per request whatever the number of rules sharing it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use regex::bytes::{Regex, RegexBuilder};

use super::CrsError;
use super::ast::{Action, Directive, IdRange, Location, OperatorSpec, RuleDecl, Spanned, VarSpec};
use super::macros::Template;
use super::operator::Operator;
use super::prefilter::{self, Prefilter};
use super::transform::Transform;

/// A request variable or collection a rule can target.
#[allow(clippy::enum_variant_names)] // MATCHED_VAR & co. are SecLang's names
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    Args,
    ArgsGet,
    ArgsPost,
    ArgsNames,
    ArgsGetNames,
    ArgsPostNames,
    Cookies,
    CookiesNames,
    Headers,
    HeadersNames,
    Files,
    FilesNames,
    MultipartPartHeaders,
    Xml,
    /// TX and the other key/value collections (IP, GLOBAL, SESSION, USER, RESOURCE): kept per
    /// transaction here (see `docs/rules.md`).
    Collection(Coll),
    MatchedVar,
    MatchedVarName,
    MatchedVars,
    MatchedVarsNames,
    /// A single-valued variable of the request.
    Scalar(Scalar),
    /// Variables that never have a value here (GEO without a database, ENV, response
    /// variables in request phases).
    Empty,
}

/// The key/value collections that `setvar` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coll {
    Tx,
    Ip,
    Global,
    Session,
    User,
    Resource,
}

impl Coll {
    pub fn from_name(name: &str) -> Option<Coll> {
        Coll::from_upper(&name.to_ascii_uppercase())
    }

    /// [`Coll::from_name`] of a name already uppercased (macro names are), without allocating.
    pub fn from_upper(name: &str) -> Option<Coll> {
        Some(match name {
            "TX" => Coll::Tx,
            "IP" => Coll::Ip,
            "GLOBAL" => Coll::Global,
            "SESSION" => Coll::Session,
            "USER" => Coll::User,
            "RESOURCE" => Coll::Resource,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Coll::Tx => "TX",
            Coll::Ip => "IP",
            Coll::Global => "GLOBAL",
            Coll::Session => "SESSION",
            Coll::User => "USER",
            Coll::Resource => "RESOURCE",
        }
    }
}

/// Single-valued request variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    RequestFilename,
    RequestBasename,
    RequestUri,
    RequestUriRaw,
    RequestLine,
    RequestMethod,
    RequestProtocol,
    QueryString,
    RequestBody,
    RequestBodyLength,
    ReqbodyProcessor,
    ReqbodyError,
    ReqbodyErrorMsg,
    ArgsCombinedSize,
    FilesCombinedSize,
    RemoteAddr,
    UniqueId,
    Duration,
    FullRequestLength,
    /// `MULTIPART_*` flags, by index in the list of their names (see [`multipart_name`]);
    /// an index rather than the name keeps `Var`, copied into every resolved value, small.
    Multipart(u8),
}

/// The name of the `MULTIPART_*` flag [`Scalar::Multipart`] holds.
pub fn multipart_name(i: u8) -> &'static str {
    MULTIPART_FLAGS.get(usize::from(i)).copied().unwrap_or("")
}

const MULTIPART_FLAGS: &[&str] = &[
    "MULTIPART_STRICT_ERROR",
    "MULTIPART_UNMATCHED_BOUNDARY",
    "MULTIPART_BOUNDARY_QUOTED",
    "MULTIPART_BOUNDARY_WHITESPACE",
    "MULTIPART_DATA_BEFORE",
    "MULTIPART_DATA_AFTER",
    "MULTIPART_HEADER_FOLDING",
    "MULTIPART_LF_LINE",
    "MULTIPART_MISSING_SEMICOLON",
    "MULTIPART_INVALID_QUOTING",
    "MULTIPART_INVALID_PART",
    "MULTIPART_INVALID_HEADER_FOLDING",
    "MULTIPART_FILE_LIMIT_EXCEEDED",
    "MULTIPART_CRLF_LF_LINES",
];

impl Var {
    /// The variable of a name as written in a rule (uppercased by the parser).
    pub fn from_name(name: &str) -> Option<Var> {
        Var::from_upper(&name.to_ascii_uppercase())
    }

    /// [`Var::from_name`] of a name already uppercased (macro names are), without allocating.
    pub fn from_upper(upper: &str) -> Option<Var> {
        if let Some(c) = Coll::from_upper(upper) {
            return Some(Var::Collection(c));
        }
        if let Some(flag) = MULTIPART_FLAGS.iter().position(|f| *f == upper) {
            return Some(Var::Scalar(Scalar::Multipart(flag as u8)));
        }
        Some(match upper {
            "ARGS" => Var::Args,
            "ARGS_GET" => Var::ArgsGet,
            "ARGS_POST" => Var::ArgsPost,
            "ARGS_NAMES" => Var::ArgsNames,
            "ARGS_GET_NAMES" => Var::ArgsGetNames,
            "ARGS_POST_NAMES" => Var::ArgsPostNames,
            "REQUEST_COOKIES" => Var::Cookies,
            "REQUEST_COOKIES_NAMES" => Var::CookiesNames,
            "REQUEST_HEADERS" => Var::Headers,
            "REQUEST_HEADERS_NAMES" => Var::HeadersNames,
            "FILES" => Var::Files,
            "FILES_NAMES" => Var::FilesNames,
            "MULTIPART_PART_HEADERS" => Var::MultipartPartHeaders,
            "XML" => Var::Xml,
            "MATCHED_VAR" => Var::MatchedVar,
            "MATCHED_VAR_NAME" => Var::MatchedVarName,
            "MATCHED_VARS" => Var::MatchedVars,
            "MATCHED_VARS_NAMES" => Var::MatchedVarsNames,
            "REQUEST_FILENAME" | "PATH_INFO" => Var::Scalar(Scalar::RequestFilename),
            "REQUEST_BASENAME" => Var::Scalar(Scalar::RequestBasename),
            "REQUEST_URI" => Var::Scalar(Scalar::RequestUri),
            "REQUEST_URI_RAW" => Var::Scalar(Scalar::RequestUriRaw),
            "REQUEST_LINE" => Var::Scalar(Scalar::RequestLine),
            "REQUEST_METHOD" => Var::Scalar(Scalar::RequestMethod),
            "REQUEST_PROTOCOL" => Var::Scalar(Scalar::RequestProtocol),
            "QUERY_STRING" => Var::Scalar(Scalar::QueryString),
            "REQUEST_BODY" => Var::Scalar(Scalar::RequestBody),
            "REQUEST_BODY_LENGTH" => Var::Scalar(Scalar::RequestBodyLength),
            "REQBODY_PROCESSOR" => Var::Scalar(Scalar::ReqbodyProcessor),
            "REQBODY_ERROR" | "REQBODY_PROCESSOR_ERROR" => Var::Scalar(Scalar::ReqbodyError),
            "REQBODY_ERROR_MSG" | "REQBODY_PROCESSOR_ERROR_MSG" => {
                Var::Scalar(Scalar::ReqbodyErrorMsg)
            }
            "ARGS_COMBINED_SIZE" => Var::Scalar(Scalar::ArgsCombinedSize),
            "FILES_COMBINED_SIZE" => Var::Scalar(Scalar::FilesCombinedSize),
            "REMOTE_ADDR" => Var::Scalar(Scalar::RemoteAddr),
            "UNIQUE_ID" => Var::Scalar(Scalar::UniqueId),
            "DURATION" => Var::Scalar(Scalar::Duration),
            "FULL_REQUEST_LENGTH" => Var::Scalar(Scalar::FullRequestLength),
            "GEO"
            | "ENV"
            | "AUTH_TYPE"
            | "REMOTE_USER"
            | "FILES_SIZES"
            | "FILES_TMPNAMES"
            | "FILES_TMP_CONTENT"
            | "FILES_SIZE"
            | "INBOUND_DATA_ERROR"
            | "URLENCODED_ERROR"
            | "RESPONSE_HEADERS"
            | "RESPONSE_HEADERS_NAMES"
            | "RESPONSE_BODY"
            | "RESPONSE_STATUS"
            | "RESPONSE_PROTOCOL"
            | "RESPONSE_CONTENT_TYPE"
            | "RESPONSE_CONTENT_LENGTH"
            | "OUTBOUND_DATA_ERROR"
            | "STATUS_LINE"
            | "WEBSERVER_ERROR_LOG" => Var::Empty,
            _ => return None,
        })
    }

    /// The collection prefix of `MATCHED_VAR_NAME` values (`ARGS:name`).
    pub fn name(self) -> &'static str {
        match self {
            Var::Args => "ARGS",
            Var::ArgsGet => "ARGS_GET",
            Var::ArgsPost => "ARGS_POST",
            Var::ArgsNames => "ARGS_NAMES",
            Var::ArgsGetNames => "ARGS_GET_NAMES",
            Var::ArgsPostNames => "ARGS_POST_NAMES",
            Var::Cookies => "REQUEST_COOKIES",
            Var::CookiesNames => "REQUEST_COOKIES_NAMES",
            Var::Headers => "REQUEST_HEADERS",
            Var::HeadersNames => "REQUEST_HEADERS_NAMES",
            Var::Files => "FILES",
            Var::FilesNames => "FILES_NAMES",
            Var::MultipartPartHeaders => "MULTIPART_PART_HEADERS",
            Var::Xml => "XML",
            Var::Collection(c) => c.name(),
            Var::MatchedVar => "MATCHED_VAR",
            Var::MatchedVarName => "MATCHED_VAR_NAME",
            Var::MatchedVars => "MATCHED_VARS",
            Var::MatchedVarsNames => "MATCHED_VARS_NAMES",
            Var::Scalar(s) => match s {
                Scalar::RequestFilename => "REQUEST_FILENAME",
                Scalar::RequestBasename => "REQUEST_BASENAME",
                Scalar::RequestUri => "REQUEST_URI",
                Scalar::RequestUriRaw => "REQUEST_URI_RAW",
                Scalar::RequestLine => "REQUEST_LINE",
                Scalar::RequestMethod => "REQUEST_METHOD",
                Scalar::RequestProtocol => "REQUEST_PROTOCOL",
                Scalar::QueryString => "QUERY_STRING",
                Scalar::RequestBody => "REQUEST_BODY",
                Scalar::RequestBodyLength => "REQUEST_BODY_LENGTH",
                Scalar::ReqbodyProcessor => "REQBODY_PROCESSOR",
                Scalar::ReqbodyError => "REQBODY_ERROR",
                Scalar::ReqbodyErrorMsg => "REQBODY_ERROR_MSG",
                Scalar::ArgsCombinedSize => "ARGS_COMBINED_SIZE",
                Scalar::FilesCombinedSize => "FILES_COMBINED_SIZE",
                Scalar::RemoteAddr => "REMOTE_ADDR",
                Scalar::UniqueId => "UNIQUE_ID",
                Scalar::Duration => "DURATION",
                Scalar::FullRequestLength => "FULL_REQUEST_LENGTH",
                Scalar::Multipart(n) => multipart_name(n),
            },
            Var::Empty => "EMPTY",
        }
    }
}

/// Which entries of a collection a target takes.
#[derive(Debug, Clone)]
pub enum Sel {
    All,
    /// Key compared ASCII-case-insensitively (stored lowercased). Text, as rules write it:
    /// TX and the other persistent collections are looked up by it as it is.
    Key(String),
    /// Keys matching a regex (case-insensitive).
    Regex(KeyRegex),
}

/// A key selector's regex, with the literal forms CRS writes (`/^HEADER_NAME_/`, `/__utm/`)
/// answered without running it.
#[derive(Debug, Clone)]
pub struct KeyRegex {
    re: Regex,
    fast: Option<(LiteralKind, Vec<u8>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiteralKind {
    Exact,
    Prefix,
    Contains,
}

impl KeyRegex {
    fn new(pattern: &str) -> Result<KeyRegex, regex::Error> {
        let re = RegexBuilder::new(pattern)
            .case_insensitive(true)
            .unicode(false)
            .build()?;
        let (anchored, rest) = match pattern.strip_prefix('^') {
            Some(r) => (true, r),
            None => (false, pattern),
        };
        let (ended, mut lit) = match rest.strip_suffix('$') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        // Unanchored at the end, a trailing `.*` or `c*` matches the empty string and so
        // changes nothing: CRS writes `TX:/paramcounter_.*/` and
        // `TX:/MULTIPART_HEADERS_CONTENT_TYPES_*/`, which are looked at on every TX name.
        while let [.., c, b'*'] = lit.as_bytes()
            && !ended
            && (*c == b'.' || c.is_ascii_alphanumeric() || *c == b'_')
        {
            lit = &lit[..lit.len() - 2];
        }
        let plain = !lit.is_empty()
            && lit
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let fast = match (plain, anchored, ended) {
            (false, _, _) | (true, false, true) => None,
            (true, true, true) => Some(LiteralKind::Exact),
            (true, true, false) => Some(LiteralKind::Prefix),
            (true, false, false) => Some(LiteralKind::Contains),
        }
        .map(|k| (k, lit.to_ascii_lowercase().into_bytes()));
        Ok(KeyRegex { re, fast })
    }

    /// Does the key match (ASCII case-insensitively)?
    pub fn is_match(&self, key: &[u8]) -> bool {
        match &self.fast {
            None => self.re.is_match(key),
            Some((LiteralKind::Exact, l)) => key.eq_ignore_ascii_case(l),
            // the first byte alone rules out most keys (TX holds a hundred names per request)
            Some((LiteralKind::Prefix, l)) => {
                key.len() >= l.len()
                    && key.first().map(u8::to_ascii_lowercase) == l.first().copied()
                    && key[..l.len()].eq_ignore_ascii_case(l)
            }
            Some((LiteralKind::Contains, l)) => {
                key.windows(l.len()).any(|w| w.eq_ignore_ascii_case(l))
            }
        }
    }

    /// [`KeyRegex::is_match`] for a key without ASCII capitals (every TX name is lowercased
    /// when written): the literal, lowercased too, is compared byte for byte.
    pub fn is_match_lowercase(&self, key: &[u8]) -> bool {
        debug_assert!(!key.iter().any(u8::is_ascii_uppercase));
        match &self.fast {
            None => self.re.is_match(key),
            Some((LiteralKind::Exact, l)) => key == &l[..],
            // the first byte alone rules out most keys
            Some((LiteralKind::Prefix, l)) => key.first() == l.first() && key.starts_with(l),
            Some((LiteralKind::Contains, l)) => key.windows(l.len()).any(|w| w == &l[..]),
        }
    }
}

/// A compiled target or exclusion.
#[derive(Debug, Clone)]
pub struct Target {
    pub var: Var,
    pub sel: Sel,
    pub count: bool,
    /// As written after `!`/`&`, for `ctl:ruleRemoveTarget*` comparisons (`ARGS:foo`).
    pub full_name: String,
    /// For `TX:/regex/`: the names among the TX defaults every request starts with (see
    /// `eval::Layered`) that the regex matches, with the address of the defaults' map they
    /// were worked out for (on first use). A request then looks at its own writes and these
    /// names, not at every default.
    pub default_names: std::sync::OnceLock<(usize, Vec<Arc<str>>)>,
}

/// A compiled operator.
#[derive(Debug)]
pub enum Op {
    Static(Operator),
    SqlI,
    Xss,
    /// An operator whose argument has macros: compiled when the expanded argument changes
    /// (in CRS it expands to settings, the same on every request).
    Dynamic {
        name: String,
        arg: Template,
        last: DynamicCache,
        /// Every macro of `arg` is a TX variable: the expansion can only change when TX does.
        tx_only: bool,
    },
}

/// The last expansion of a dynamic operator's argument and the operator compiled from it.
#[derive(Debug, Default)]
pub struct DynamicCache(pub std::sync::Mutex<Option<(Vec<u8>, std::sync::Arc<Operator>)>>);

/// `setvar` parsed: `[!]collection.name[=[+|-]value]`.
#[derive(Debug, Clone)]
pub struct SetVar {
    pub coll: Coll,
    pub name: Template,
    pub op: SetOp,
    pub value: Template,
    /// The name when it has no macros (most do): no expansion per request.
    pub name_literal: Option<Arc<str>>,
    /// The value when it has no macros.
    pub value_literal: Option<Arc<[u8]>>,
    /// Set when the name or the value reads the captures (`%{tx.0}`) and nothing else that
    /// changes per request (the rule's own `%{rule.*}` aside): what it writes is then a
    /// function of the capture, kept with it in the evaluator's memo.
    pub of_captures: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    Set,
    Add,
    Sub,
    Unset,
}

/// `ctl:` actions the engine honours.
#[derive(Debug, Clone)]
pub enum Ctl {
    RuleRemoveById(Vec<IdRange>),
    RuleRemoveByTag(String),
    RuleRemoveTargetById(u64, String),
    RuleRemoveTargetByTag(String, String),
    BodyProcessor(super::collections::BodyProcessor),
    BodyAccess(bool),
    ForceBodyVariable(bool),
    RuleEngineOff,
    /// Audit log settings and the like: nothing to do out of band.
    Ignored,
}

/// One compiled rule (a chain's links are nested in `chain`).
#[derive(Debug)]
pub struct Rule {
    pub id: u64,
    pub phase: u8,
    pub loc: Location,
    pub targets: Vec<Target>,
    pub exclusions: Vec<Target>,
    /// None: SecAction (always matches, no variables).
    pub op: Option<Op>,
    pub negated: bool,
    /// Node of the transformation prefix tree holding this rule's pipeline.
    pub pipeline: u32,
    /// The nodes the operator sees each value after: the whole pipeline, or for multiMatch
    /// the value before any transformation and after each one (set at load).
    pub steps: Box<[u32]>,
    pub multi_match: bool,
    pub capture: bool,
    pub log: bool,
    pub setvars: Vec<SetVar>,
    pub ctls: Vec<Ctl>,
    pub skip_after: Option<String>,
    pub skip: u32,
    /// Shared with every `MatchedRule` of this rule.
    pub tags: Arc<[String]>,
    pub msg: Option<String>,
    /// `msg` split at its macros (expanded when the rule matched).
    pub msg_template: Option<Template>,
    pub severity: Option<u8>,
    /// Bit of this rule in the prefilter (None: no literal requirement). A value none of whose
    /// transformed forms contains one of the rule's literals cannot match.
    pub prefilter_bit: Option<u32>,
    /// For a top rule whose operator's verdict depends on the value's bytes alone: its number
    /// among [`Compiled::verdicts`]. Whether the rule matches a value then stands where the
    /// prefilter's answer stands for chained links (see `eval::index_live`): worked out once
    /// per value (after the prefilter, for a rule with literals: the operator runs only on
    /// values that hold one), and the rule is jumped over when it matches none of its values.
    /// Rules the prefilter cannot answer for (no literals: `@detectSQLi`, `@validateByteRange`,
    /// `@within` a fixed list, an `@rx` without literals; or negated) are jumped over this way
    /// only.
    /// `Some(u32::MAX)` until `index_live` numbers it.
    pub verdict: Option<u32>,
    /// Number of this rule link among all links of the rule set (a key of the evaluator's
    /// operator memo).
    pub link: u32,
    /// Where the prefilter looks before this link runs, worked out at load time (None: the
    /// link always runs, its values being more than request data or its operator having no
    /// literals).
    pub checks: Option<Checks>,
    /// The bit of this link's first target in the evaluator's per-value masks of the targets
    /// that may match (see `eval::index_live`; the others follow): set for links with checks
    /// in rules a request can reach.
    pub live_bit: Option<u32>,
    /// Set by `fold` on top rules no request reaches (every path jumps over them).
    pub unreached: bool,
    pub chain: Option<Box<Rule>>,
    /// What this rule does on every request, worked out at load time (see `fold`): set on top
    /// rules only, when their verdict cannot depend on the request.
    pub folded: Option<Box<Folded>>,
}

/// The effect of a rule whose verdict is the same on every request (it reads only TX values
/// that configuration sets and no request-dependent rule can change), replayed instead of
/// evaluating it: exactly what evaluating it does to the engine state.
#[derive(Debug, Clone, Default)]
pub struct Folded {
    /// The whole chain matched (then `skipAfter` and `skip` of every link apply).
    pub matched: bool,
    /// MATCHED_VAR(S) were cleared (a link did not match) ...
    pub cleared: bool,
    /// ... and then these (`MATCHED_VAR_NAME`, `MATCHED_VAR`) were set, in order.
    pub appended: Vec<(String, Vec<u8>)>,
    /// `setvar`s in order.
    pub writes: Vec<FoldedWrite>,
}

/// What a request meets from a folded rule on: that rule and every folded rule evaluation
/// reaches after it, jumps followed, up to the next rule that is evaluated (see
/// `fold::runs`). Applied at once when the rule is reached with no jump pending.
#[derive(Debug, Clone, Default)]
pub struct FoldedRun {
    /// Their effects in order, as one (`matched` unused: the jumps are taken).
    pub effect: Folded,
    /// The index in the phase's list where evaluation goes on.
    pub next: usize,
    /// When every write is a TX `setvar` (no unset): the TX collection the run leaves when it
    /// starts on an empty one (a request's first run), shared as the defaults under the
    /// request's own writes instead of written name by name.
    pub tx: Option<Arc<super::eval::CollMap>>,
}

/// One recorded `setvar`: collection index, name, value (None: unset).
pub type FoldedWrite = (usize, Arc<str>, Option<Arc<[u8]>>);

/// One place the prefilter looks before a rule link runs: the values of a kind, or only its
/// entries of one name, after one pipeline node. The link cannot match when none of its
/// checks' values holds one of its literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    /// The value kind (the request has values of it or not).
    pub kind: u32,
    /// The evaluator's union cell: `kind`, or a named entry of [`Compiled::keys`].
    pub cell: u32,
    pub node: u32,
}

/// The pipeline nodes checks of one union cell look at, each with the links that look there.
pub type LiveCell = Vec<LiveNode>;

/// The links whose checks of one union cell look at one pipeline node's output. A value's
/// answer for them is worked out once (see `eval::or_live`): the prefilter's bits for the
/// links its literals decide, the operator for the links with a verdict.
#[derive(Debug, Clone, Default)]
pub struct LiveNode {
    pub node: u32,
    /// The prefilter bits of the links decided by literals, as (word index, mask) over the
    /// scan's words: a value's hits are its words ANDed with these, not a test per link.
    pub words: Vec<(u32, u64)>,
    /// (prefilter bit, live bit) of those links, sorted.
    pub lives: Vec<(u32, u32)>,
    /// The links decided by their operator: (prefilter bit, or [`NO_PREFILTER`] when the
    /// operator runs on every value; verdict number; live bit), in rule order.
    pub verdicts: Vec<(u32, u32, u32)>,
}

/// A verdict link that no literal rules out (see [`LiveNode::verdicts`]).
pub const NO_PREFILTER: u32 = u32::MAX;

/// A rule link's prefilter checks, target by target.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    pub all: Box<[Check]>,
    /// Where each target's checks end in `all`.
    pub ends: Box<[u32]>,
}

impl Checks {
    /// The checks of target `i`.
    pub fn target(&self, i: usize) -> &[Check] {
        let start = i
            .checked_sub(1)
            .and_then(|p| self.ends.get(p))
            .copied()
            .unwrap_or(0);
        let end = self.ends.get(i).copied().unwrap_or(0);
        self.all.get(start as usize..end as usize).unwrap_or(&[])
    }
}

/// A phase's list: rules and markers in file order.
#[derive(Debug)]
pub enum Item {
    Rule(Box<Rule>),
    Marker(String),
}

/// A node of the transformation prefix tree: the pipeline `parent` followed by `step`.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub parent: u32,
    pub step: Transform,
}

/// What loading skipped or could only approximate, for `--check-rules`.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Files read, in order.
    pub files: Vec<std::path::PathBuf>,
    /// Request-phase rules (phases 1 and 2) compiled.
    pub rules: usize,
    /// Response and logging phase rules skipped (phases 3-5).
    pub skipped_response: usize,
    /// Rules removed by SecRuleRemoveById/ByTag/ByMsg.
    pub removed: usize,
    /// Rules using operators that never match here (`@rbl`, `@geoLookup`), with why.
    pub never_match: Vec<(u64, String)>,
    /// Regexes run by PCRE2 rather than the linear-time engine.
    pub pcre_regexes: usize,
    /// Regexes of the linear-time engine with their whole DFA built at load (the rest build
    /// their states as they search).
    pub whole_dfa_regexes: usize,
    /// @rx and @pm operators with a literal prefilter / without.
    pub prefiltered: usize,
    pub unfiltered: usize,
    /// Of `prefiltered`, those in rules a request can evaluate: only their literals are in
    /// the prefilter.
    pub prefiltered_evaluated: usize,
    /// Rules evaluated once at load time (their verdict is the same on every request).
    pub folded: usize,
    /// Rules jumped over by their operator's verdicts per value (see [`Rule::verdict`]), and
    /// how many of them the prefilter cannot answer for.
    pub verdicts: usize,
    pub verdicts_unfiltered: usize,
    /// What the operator should know about how the tree was loaded.
    pub warnings: Vec<String>,
}

/// The compiled rule set.
#[derive(Debug)]
pub struct Compiled {
    /// Phase 1 and phase 2 lists.
    pub phases: [Vec<Item>; 2],
    pub nodes: Vec<Node>,
    /// Per node: the node whose output the prefilter scans for it. A step that only changes the
    /// case of ASCII letters (`t:lowercase`, `t:uppercase`) leaves every prefilter answer as it
    /// was (the automaton, byte and pair tables all ignore ASCII case), so such a node shares
    /// its parent's scan, and its output is made only when an operator needs it.
    pub scan_nodes: Vec<u32>,
    /// Per node, its pipeline's steps (see [`Compiled::pipeline`]).
    pipelines: Vec<Box<[Transform]>>,
    /// One automaton over the literals of the prefiltered rules a request can evaluate, run
    /// once per distinct transformed value: built once the rules are folded (see
    /// [`Compiled::prefilter_reached`]). Until then (None) every value passes for every
    /// literal.
    pub prefilter: Option<Prefilter>,
    /// (prefilter bit, literals) of every prefiltered rule link, those of rules a request never
    /// evaluates included (see [`Compiled::prefilter_reached`]).
    literals: Vec<(u32, Vec<Vec<u8>>)>,
    /// Number of prefilter bits.
    pub prefilter_bits: u32,
    /// Per phase and item index: the run of folded rules starting there (see [`FoldedRun`]).
    pub folded_runs: [Vec<Option<Box<FoldedRun>>>; 2],
    /// Per union cell (kind, then named entry of `keys`): the pipeline nodes checks look at,
    /// each with the (prefilter bit, live bit) of the links that look there (see
    /// `eval::index_live`).
    pub live_cells: Vec<LiveCell>,
    /// Per phase and item: the top rule's first live bit and number of targets ((0, 0) for
    /// none). The evaluator works out the live mask at the first rule with targets it reaches;
    /// `phase_always` and `live_items` are derived from this.
    pub phase_skips: [Vec<(u32, u32)>; 2],
    /// Per phase, a bit per item: the items visited whatever the request's live targets
    /// (markers, rules without live bits, starts of folded runs). The evaluator jumps from
    /// one of these, or of the rules with a live target, to the next.
    pub phase_always: [Vec<u64>; 2],
    /// Per live bit of a top rule's target: (phase, item index) of the rule; `(u32::MAX, 0)`
    /// for the bits of chained links.
    pub live_items: Vec<(u32, u32)>,
    /// Per kind: the indices in `keys` of its named entries some live target checks.
    pub live_keys: Vec<Vec<usize>>,
    /// Number of live bits (one per target of a link with a `live_bit`).
    pub live_bits: u32,
    /// Per [`Rule::verdict`] number: where the rule is, as (phase, item index).
    pub verdicts: Vec<(u32, u32)>,
    /// The (kind, lowercased name) of every named entry a prefilter [`Check`] looks at.
    pub keys: Vec<(u32, Vec<u8>)>,
    pub report: LoadReport,
    /// Identifies this rule set to the per-thread memo of the evaluator (unique per compile).
    pub memo_id: u64,
    /// Whether values seen in earlier requests reuse their memoized work (see `eval::Memo`).
    pub memo: bool,
}

/// The next [`Compiled::memo_id`] (0 is never handed out).
static NEXT_MEMO_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Compiled {
    /// Builds the prefilter over the literals of the rules a request can evaluate: not those
    /// folding found jumped over on every request (the rules above the paranoia level, for
    /// one) nor those it replays (folded), whose operators never run. Their literals made the
    /// automaton larger (1.7 times the heads at PL1) and were found in values for nothing.
    /// Call after `fold`, which evaluates rules without a prefilter (every value passes).
    pub fn prefilter_reached(&mut self) {
        let bits = self.evaluated_bits();
        let kept: Vec<(u32, Vec<Vec<u8>>)> = self
            .literals
            .iter()
            .filter(|(bit, _)| bits.contains(bit))
            .cloned()
            .collect();
        self.report.prefiltered_evaluated = kept.len();
        self.prefilter = Prefilter::build(&kept);
    }

    /// The prefilter bits of the links of rules a request can evaluate (neither unreached nor
    /// folded).
    pub fn evaluated_bits(&self) -> std::collections::HashSet<u32> {
        let mut bits = std::collections::HashSet::new();
        for item in self.phases.iter().flatten() {
            let Item::Rule(top) = item else { continue };
            if top.unreached || top.folded.is_some() {
                continue;
            }
            let mut link = Some(&**top);
            while let Some(r) = link {
                bits.extend(r.prefilter_bit);
                link = r.chain.as_deref();
            }
        }
        bits
    }

    /// (prefilter bit, literals) of every prefiltered rule link.
    #[cfg(test)]
    pub fn literals(&self) -> &[(u32, Vec<Vec<u8>>)] {
        &self.literals
    }

    /// The steps of the transformation pipeline ending at `node`, first step first (the empty
    /// pipeline, node 0, has none).
    pub fn pipeline(&self, node: u32) -> &[Transform] {
        self.pipelines.get(node as usize).map_or(&[], |p| &p[..])
    }

    /// The rule of [`Rule::verdict`] number `v`.
    pub fn verdict_rule(&self, v: u32) -> Option<&Rule> {
        let &(phase, at) = self.verdicts.get(v as usize)?;
        match self.phases.get(phase as usize)?.get(at as usize)? {
            Item::Rule(r) => Some(r),
            Item::Marker(_) => None,
        }
    }
}

/// Per node, the steps of the pipeline ending there ([`Compiled::pipeline`]).
fn pipelines(nodes: &[Node]) -> Vec<Box<[Transform]>> {
    (0..nodes.len() as u32)
        .map(|node| {
            let mut steps: Vec<Transform> = steps_back(nodes, node)
                .filter_map(|n| nodes.get(n as usize).map(|x| x.step))
                .collect();
            steps.reverse();
            steps.into_boxed_slice()
        })
        .collect()
}

/// The node whose output the prefilter scans for `node`, from [`Compiled::scan_nodes`] (a
/// free function: the load-time indexing reads it while it changes the rules).
pub fn scan_node(scan_nodes: &[u32], node: u32) -> u32 {
    scan_nodes.get(node as usize).copied().unwrap_or(node)
}

/// [`Compiled::scan_nodes`]: each node's nearest ancestor (or itself) whose step is not a
/// change of ASCII case. Parents come before their children in `nodes`.
fn scan_nodes(nodes: &[Node]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::with_capacity(nodes.len());
    for (i, n) in nodes.iter().enumerate() {
        let case_only = matches!(n.step, Transform::Lowercase | Transform::Uppercase);
        let scan = match out.get(n.parent as usize) {
            Some(&p) if i > 0 && case_only => p,
            _ => i as u32,
        };
        out.push(scan);
    }
    out
}

/// The nodes of the transformation pipeline ending at `node`, last step first (the empty
/// pipeline, node 0, has none).
pub fn steps_back(nodes: &[Node], node: u32) -> impl Iterator<Item = u32> + '_ {
    std::iter::successors(Some(node), |&n| nodes.get(n as usize).map(|x| x.parent))
        .take_while(|&n| n != 0)
}

#[derive(Default)]
struct Defaults {
    log: Option<bool>,
    transforms: Vec<Option<Transform>>,
}

/// A rule's prefilter bit and the literals one of which its `@rx` or `@pm` needs.
type RuleLiterals = (u32, Vec<Vec<u8>>);

struct Builder {
    nodes: Vec<Node>,
    node_index: HashMap<(u32, Transform), u32>,
    defaults: [Defaults; 6],
    report: LoadReport,
    /// Literal requirements: (bit, literals).
    literals: Vec<RuleLiterals>,
    next_bit: u32,
}

fn err(loc: &Location, what: impl std::fmt::Display) -> CrsError {
    CrsError::Rule {
        loc: loc.to_string(),
        message: what.to_string(),
    }
}

/// Compiles directives in file order.
pub fn compile(directives: Vec<Spanned<Directive>>) -> Result<Compiled, CrsError> {
    let mut b = Builder {
        nodes: vec![Node {
            parent: 0,
            step: Transform::Lowercase,
        }],
        node_index: HashMap::new(),
        defaults: Default::default(),
        report: LoadReport::default(),
        literals: Vec::new(),
        next_bit: 0,
    };
    let mut phases: [Vec<Item>; 2] = [Vec::new(), Vec::new()];
    let mut remove_ids: Vec<IdRange> = Vec::new();
    let mut remove_tags: Vec<String> = Vec::new();
    let mut remove_msgs: Vec<String> = Vec::new();
    let mut updates: Vec<(Location, UpdateKey, Vec<VarSpec>)> = Vec::new();
    // chain under construction: the top rule and its links so far
    let mut pending: Vec<(Location, RuleDecl)> = Vec::new();

    for Spanned { loc, item } in directives {
        match item {
            Directive::Rule(decl) => {
                let chained = decl
                    .actions
                    .iter()
                    .any(|a| a.name.eq_ignore_ascii_case("chain"));
                pending.push((loc, decl));
                if !chained {
                    let chain = std::mem::take(&mut pending);
                    if let Some(rule) = b.chain(chain)? {
                        let idx = usize::from(rule.phase - 1);
                        phases[idx].push(Item::Rule(Box::new(rule)));
                    }
                }
            }
            Directive::Action(actions) => {
                if !pending.is_empty() {
                    return Err(err(&loc, "SecAction cannot follow a rule with `chain`"));
                }
                let decl = RuleDecl {
                    variables: Vec::new(),
                    operator: OperatorSpec {
                        negated: false,
                        name: "unconditionalMatch".into(),
                        argument: String::new(),
                    },
                    actions,
                };
                if let Some(mut rule) = b.chain(vec![(loc, decl)])? {
                    rule.op = None;
                    let idx = usize::from(rule.phase - 1);
                    phases[idx].push(Item::Rule(Box::new(rule)));
                }
            }
            Directive::Marker(name) => {
                // markers belong to every phase, as in libmodsecurity
                for p in &mut phases {
                    p.push(Item::Marker(name.clone()));
                }
            }
            Directive::DefaultAction(actions) => b.default_action(&loc, &actions)?,
            Directive::RemoveById(ids) => remove_ids.extend(ids),
            Directive::RemoveByTag(tag) => remove_tags.push(tag),
            Directive::RemoveByMsg(msg) => remove_msgs.push(msg),
            Directive::UpdateTargetById { ids, targets } => {
                updates.push((loc, UpdateKey::Ids(ids), targets))
            }
            Directive::UpdateTargetByTag { tag, targets } => {
                updates.push((loc, UpdateKey::Tag(tag), targets))
            }
            Directive::UpdateTargetByMsg { msg, targets } => {
                updates.push((loc, UpdateKey::Msg(msg), targets))
            }
            Directive::UpdateActionById { .. } => {
                return Err(err(&loc, "SecRuleUpdateActionById is not supported"));
            }
            Directive::Config { name, args } => config_directive(&loc, &name, &args)?,
        }
    }
    if let Some((loc, _)) = pending.first() {
        return Err(err(loc, "the last rule has `chain` but no rule follows"));
    }

    // static exclusions apply wherever they are written, as in libmodsecurity
    for phase in &mut phases {
        let before = phase.len();
        phase.retain(|item| match item {
            Item::Rule(r) => {
                !(remove_ids
                    .iter()
                    .any(|range| r.id != 0 && range.contains(r.id))
                    || remove_tags.iter().any(|t| r.tags.iter().any(|rt| rt == t))
                    || remove_msgs.iter().any(|m| r.msg.as_deref() == Some(m)))
            }
            Item::Marker(_) => true,
        });
        b.report.removed += before - phase.len();
        for item in phase.iter_mut() {
            let Item::Rule(rule) = item else { continue };
            for (loc, key, targets) in &updates {
                let hit = match key {
                    UpdateKey::Ids(ids) => ids.iter().any(|r| r.contains(rule.id)),
                    UpdateKey::Tag(t) => rule.tags.iter().any(|rt| rt == t),
                    UpdateKey::Msg(m) => rule.msg.as_deref() == Some(m),
                };
                if !hit {
                    continue;
                }
                for spec in targets {
                    let t = target(loc, spec)?;
                    if spec.exclude {
                        rule.exclusions.push(t);
                    } else {
                        rule.targets.push(t);
                    }
                }
            }
        }
    }
    let mut links = 0u32;
    let mut keys = Vec::new();
    for item in phases.iter_mut().flat_map(|p| p.iter_mut()) {
        if let Item::Rule(rule) = item {
            let top_link = links;
            let mut link = Some(&mut **rule);
            while let Some(r) = link {
                r.link = links;
                links += 1;
                r.msg_template = r.msg.as_deref().map(Template::parse);
                r.steps = if r.multi_match {
                    let mut path: Vec<u32> = steps_back(&b.nodes, r.pipeline).collect();
                    path.push(0);
                    path.reverse();
                    path.into()
                } else {
                    Box::new([r.pipeline])
                };
                if r.link == top_link && super::eval::wants_verdict(r) {
                    r.verdict = Some(u32::MAX);
                }
                r.checks = super::eval::prefilter_checks(r, &mut keys);
                link = r.chain.as_deref_mut();
            }
        }
    }
    b.report.rules = phases
        .iter()
        .flat_map(|p| p.iter())
        .filter(|i| matches!(i, Item::Rule(_)))
        .count();

    let scan_nodes = scan_nodes(&b.nodes);
    let pipelines = pipelines(&b.nodes);
    Ok(Compiled {
        phases,
        nodes: b.nodes,
        scan_nodes,
        pipelines,
        prefilter: None,
        literals: b.literals,
        prefilter_bits: b.next_bit,
        folded_runs: Default::default(),
        live_cells: Vec::new(),
        live_keys: Vec::new(),
        phase_skips: Default::default(),
        phase_always: Default::default(),
        live_items: Vec::new(),
        live_bits: 0,
        verdicts: Vec::new(),
        keys,
        report: b.report,
        memo_id: NEXT_MEMO_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        memo: true,
    })
}

enum UpdateKey {
    Ids(Vec<IdRange>),
    Tag(String),
    Msg(String),
}

/// Engine-wide directives: the ones that change what rules see are refused when set to
/// something the engine cannot honour; the rest only configure logging, limits or storage.
fn config_directive(loc: &Location, name: &str, args: &[String]) -> Result<(), CrsError> {
    let lower = name.to_ascii_lowercase();
    match lower.as_str() {
        "secargumentseparator" if args.first().is_some_and(|a| a != "&") => {
            Err(err(loc, format!("{name}: only `&` is supported")))
        }
        "seccookieformat" if args.first().is_some_and(|a| a != "0") => Err(err(
            loc,
            format!("{name}: only version 0 cookies are supported"),
        )),
        _ => Ok(()),
    }
}

fn parse_phase(loc: &Location, v: &str) -> Result<u8, CrsError> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "1" => 1,
        "2" | "request" => 2,
        "3" => 3,
        "4" | "response" => 4,
        "5" | "logging" => 5,
        "0" | "connection" => 1,
        other => return Err(err(loc, format!("phase `{other}` is not a phase"))),
    })
}

/// Target of a variable spec.
pub fn target(loc: &Location, spec: &VarSpec) -> Result<Target, CrsError> {
    let var = Var::from_name(&spec.collection).ok_or_else(|| {
        err(
            loc,
            format!("variable `{}` is not supported", spec.collection),
        )
    })?;
    let sel = match &spec.selector {
        None => Sel::All,
        Some(super::ast::Selector::Key(k)) => Sel::Key(k.to_ascii_lowercase()),
        Some(super::ast::Selector::Regex(r)) => Sel::Regex(
            KeyRegex::new(r).map_err(|e| err(loc, format!("`{}:/{r}/`: {e}", spec.collection)))?,
        ),
    };
    let full_name = match &spec.selector {
        None => spec.collection.clone(),
        Some(super::ast::Selector::Key(k)) => format!("{}:{k}", spec.collection),
        Some(super::ast::Selector::Regex(r)) => format!("{}:/{r}/", spec.collection),
    };
    Ok(Target {
        var,
        sel,
        count: spec.count,
        full_name,
        default_names: std::sync::OnceLock::new(),
    })
}

fn parse_setvar(loc: &Location, v: &str) -> Result<SetVar, CrsError> {
    let (unset, body) = match v.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (lhs, rhs) = match body.split_once('=') {
        Some((l, r)) => (l, Some(r)),
        None => (body, None),
    };
    let (coll, name) = lhs
        .split_once('.')
        .ok_or_else(|| err(loc, format!("setvar `{v}`: expected collection.name")))?;
    let coll = Coll::from_name(coll.trim())
        .ok_or_else(|| err(loc, format!("setvar `{v}`: unknown collection `{coll}`")))?;
    let (op, value) = match (unset, rhs) {
        (true, _) => (SetOp::Unset, ""),
        (false, None) => (SetOp::Set, "1"),
        (false, Some(r)) => match r.as_bytes().first() {
            Some(b'+') => (SetOp::Add, &r[1..]),
            Some(b'-') => (SetOp::Sub, &r[1..]),
            _ => (SetOp::Set, r),
        },
    };
    let name = Template::parse(&name.trim().to_ascii_lowercase());
    let value = Template::parse(value);
    let digit = |k: Option<&str>| k.and_then(capture_index).is_some();
    let macros = || name.macros().chain(value.macros());
    let of_captures = op == SetOp::Set
        && macros().any(|(n, k)| n == "TX" && digit(k))
        && macros().all(|(n, k)| n == "RULE" || (n == "TX" && digit(k)));
    Ok(SetVar {
        of_captures,
        coll,
        name_literal: name
            .literal()
            .map(|l| Arc::from(String::from_utf8_lossy(l).to_ascii_lowercase())),
        value_literal: value.literal().map(Arc::from),
        name,
        op,
        value,
    })
}

/// The group `name` stands for when it is one of TX:0-9 (what `capture` writes).
pub fn capture_index(name: &str) -> Option<usize> {
    match name.as_bytes() {
        &[d] if d.is_ascii_digit() => Some(usize::from(d - b'0')),
        _ => None,
    }
}

fn parse_ids(loc: &Location, s: &str) -> Result<Vec<IdRange>, CrsError> {
    let mut out = Vec::new();
    for part in s.split([' ', ',']).filter(|p| !p.is_empty()) {
        let (a, z) = part.split_once('-').unwrap_or((part, part));
        let first: u64 = a
            .trim()
            .parse()
            .map_err(|_| err(loc, format!("bad rule id `{part}`")))?;
        let last: u64 = z
            .trim()
            .parse()
            .map_err(|_| err(loc, format!("bad rule id `{part}`")))?;
        out.push(IdRange { first, last });
    }
    Ok(out)
}

fn parse_ctl(loc: &Location, v: &str) -> Result<Ctl, CrsError> {
    let (name, value) = v
        .split_once('=')
        .ok_or_else(|| err(loc, format!("ctl `{v}`: expected name=value")))?;
    let (name, value) = (name.trim(), value.trim());
    let split_target = |what: &str| -> Result<(String, String), CrsError> {
        let (a, t) = value
            .split_once(';')
            .ok_or_else(|| err(loc, format!("ctl:{what} `{value}`: expected id;TARGET")))?;
        Ok((a.trim().to_string(), t.trim().to_string()))
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        "ruleremovebyid" => Ctl::RuleRemoveById(parse_ids(loc, value)?),
        "ruleremovebytag" => Ctl::RuleRemoveByTag(value.to_string()),
        "ruleremovetargetbyid" => {
            let (id, t) = split_target(name)?;
            // libmodsecurity 3.0.9 reads the id with `stoi`: a range `941000-942999` is its
            // first id (CRS's own exclusion packages write such ranges)
            let digits: String = id.chars().take_while(char::is_ascii_digit).collect();
            let id = digits
                .parse()
                .map_err(|_| err(loc, format!("ctl:{name}: bad id `{id}`")))?;
            Ctl::RuleRemoveTargetById(id, t)
        }
        "ruleremovetargetbytag" => {
            let (tag, t) = split_target(name)?;
            Ctl::RuleRemoveTargetByTag(tag, t)
        }
        "requestbodyprocessor" => {
            use super::collections::BodyProcessor as P;
            Ctl::BodyProcessor(match value.to_ascii_uppercase().as_str() {
                "XML" => P::Xml,
                "JSON" => P::Json,
                "URLENCODED" => P::UrlEncoded,
                "MULTIPART" => P::Multipart,
                other => return Err(err(loc, format!("ctl:{name}: unknown processor `{other}`"))),
            })
        }
        "requestbodyaccess" => Ctl::BodyAccess(on_off(loc, name, value)?),
        "forcerequestbodyvariable" => Ctl::ForceBodyVariable(on_off(loc, name, value)?),
        "ruleengine" => {
            if value.eq_ignore_ascii_case("off") {
                Ctl::RuleEngineOff
            } else {
                Ctl::Ignored
            }
        }
        "auditengine" | "auditlogparts" | "requestbodylimit" | "debugloglevel" | "hashengine"
        | "responsebodyaccess" => Ctl::Ignored,
        other => return Err(err(loc, format!("ctl:{other} is not supported"))),
    })
}

fn on_off(loc: &Location, name: &str, v: &str) -> Result<bool, CrsError> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(err(
            loc,
            format!("ctl:{name}: expected On or Off, got `{v}`"),
        )),
    }
}

impl Builder {
    fn default_action(&mut self, loc: &Location, actions: &[Action]) -> Result<(), CrsError> {
        let mut phase = 2u8;
        let mut d = Defaults::default();
        for a in actions {
            let v = a.value.as_deref().unwrap_or("");
            match a.name.to_ascii_lowercase().as_str() {
                "phase" => phase = parse_phase(loc, v)?,
                "log" => d.log = Some(true),
                "nolog" => d.log = Some(false),
                "t" => d.transforms.push(transform(loc, v)?),
                _ => {}
            }
        }
        if let Some(slot) = self.defaults.get_mut(usize::from(phase)) {
            *slot = d;
        }
        Ok(())
    }

    fn intern(&mut self, steps: &[Transform]) -> u32 {
        let mut node = 0u32;
        for &step in steps {
            node = match self.node_index.get(&(node, step)) {
                Some(&n) => n,
                None => {
                    let n = self.nodes.len() as u32;
                    self.nodes.push(Node { parent: node, step });
                    self.node_index.insert((node, step), n);
                    n
                }
            };
        }
        node
    }

    /// Compiles a chain (top rule first). None when the rule belongs to a response phase.
    fn chain(&mut self, chain: Vec<(Location, RuleDecl)>) -> Result<Option<Rule>, CrsError> {
        let mut phase = 2u8;
        if let Some((loc, top)) = chain.first() {
            for a in &top.actions {
                if a.name.eq_ignore_ascii_case("phase") {
                    phase = parse_phase(loc, a.value.as_deref().unwrap_or(""))?;
                }
            }
        }
        if phase > 2 {
            self.report.skipped_response += 1;
            return Ok(None);
        }
        let mut links = Vec::new();
        let reported = self.report.never_match.len();
        for (i, (loc, decl)) in chain.into_iter().enumerate() {
            links.push(self.rule(loc, decl, phase, i == 0)?);
        }
        // a chained link has no id of its own: the report names its rule's
        if let Some(top) = links.first().map(|r| r.id) {
            for (id, _) in self.report.never_match.iter_mut().skip(reported) {
                *id = top;
            }
        }
        let mut next: Option<Box<Rule>> = None;
        while let Some(mut r) = links.pop() {
            r.chain = next;
            next = Some(Box::new(r));
        }
        Ok(next.map(|b| *b))
    }

    fn rule(
        &mut self,
        loc: Location,
        decl: RuleDecl,
        phase: u8,
        top: bool,
    ) -> Result<Rule, CrsError> {
        let defaults = &self.defaults[usize::from(phase)];
        let mut log = defaults.log.unwrap_or(true);
        let mut noaudit = false;
        let mut tags: Vec<String> = Vec::new();
        let mut steps: Vec<Option<Transform>> = defaults.transforms.clone();
        let mut r = Rule {
            id: 0,
            phase,
            loc: loc.clone(),
            targets: Vec::new(),
            exclusions: Vec::new(),
            op: None,
            negated: decl.operator.negated,
            pipeline: 0,
            steps: Box::new([]),
            multi_match: false,
            capture: false,
            log: true,
            setvars: Vec::new(),
            ctls: Vec::new(),
            skip_after: None,
            skip: 0,
            tags: Arc::from([]),
            msg: None,
            msg_template: None,
            severity: None,
            prefilter_bit: None,
            verdict: None,
            link: 0,
            checks: None,
            live_bit: None,
            unreached: false,
            folded: None,
            chain: None,
        };
        for a in &decl.actions {
            let v = a.value.as_deref().unwrap_or("");
            match a.name.to_ascii_lowercase().as_str() {
                "id" => {
                    r.id = v
                        .trim()
                        .parse()
                        .map_err(|_| err(&loc, format!("bad id `{v}`")))?
                }
                "phase" => {}
                "t" => steps.push(transform(&loc, v)?),
                "chain" => {}
                "multimatch" => r.multi_match = true,
                "capture" => r.capture = true,
                "log" => log = true,
                // libmodsecurity 3.0.9 sends no log line for a rule with `noauditlog`, even
                // with `log` (checked with the reference library): such a rule is not "logged"
                "nolog" => log = false,
                "noauditlog" => noaudit = true,
                "setvar" => r.setvars.push(parse_setvar(&loc, v)?),
                "ctl" => r.ctls.push(parse_ctl(&loc, v)?),
                "skipafter" => r.skip_after = Some(v.trim().to_string()),
                "skip" => {
                    r.skip = v
                        .trim()
                        .parse()
                        .map_err(|_| err(&loc, format!("bad skip `{v}`")))?
                }
                "tag" => tags.push(v.to_string()),
                "msg" => r.msg = Some(v.to_string()),
                "severity" => r.severity = severity(v),
                // disruptive actions do nothing out of band (libmodsecurity in DetectionOnly
                // mode does not run them either); metadata and persistence are not needed
                "pass"
                | "block"
                | "deny"
                | "drop"
                | "allow"
                | "redirect"
                | "status"
                | "proxy"
                | "pause"
                | "auditlog"
                | "logdata"
                | "ver"
                | "rev"
                | "maturity"
                | "accuracy"
                | "initcol"
                | "expirevar"
                | "setuid"
                | "setsid"
                | "setrsc"
                | "setenv"
                | "deprecatevar"
                | "sanitisearg"
                | "sanitisematched"
                | "sanitisematchedbytes"
                | "sanitiserequestheader"
                | "sanitiseresponseheader"
                | "xmlns" => {}
                other => {
                    return Err(err(&loc, format!("action `{other}` is not supported")));
                }
            }
        }
        if top && r.id == 0 {
            return Err(err(&loc, "rule has no id"));
        }
        r.tags = tags.into();
        r.log = log && !noaudit;
        // t:none drops every transformation before it (including the default action's)
        let mut pipeline = Vec::new();
        for s in steps {
            match s {
                None => pipeline.clear(),
                Some(t) => pipeline.push(t),
            }
        }
        r.pipeline = self.intern(&pipeline);
        for spec in &decl.variables {
            let t = target(&loc, spec)?;
            if spec.exclude {
                r.exclusions.push(t);
            } else {
                r.targets.push(t);
            }
        }
        let op = self.operator(&loc, &decl.operator)?;
        if let Op::Static(o) = &op {
            if let Some(why) = o.unsupported_reason() {
                self.report.never_match.push((r.id, why.to_string()));
            }
            if o.pcre_reason().is_some() {
                self.report.pcre_regexes += 1;
            }
            if o.has_whole_dfa() {
                self.report.whole_dfa_regexes += 1;
            }
            let lits = match (o.regex_source(), o.phrases()) {
                (Some(src), _) => Some(prefilter::required_literals(src)),
                (None, Some(phrases)) => Some(prefilter::phrase_literals(phrases)),
                _ => None,
            };
            match lits {
                Some(Some(lits)) => {
                    let bit = self.next_bit;
                    self.next_bit += 1;
                    self.literals.push((bit, lits));
                    r.prefilter_bit = Some(bit);
                    self.report.prefiltered += 1;
                }
                Some(None) => self.report.unfiltered += 1,
                None => {}
            }
        }
        r.op = Some(op);
        Ok(r)
    }

    fn operator(&mut self, loc: &Location, spec: &OperatorSpec) -> Result<Op, CrsError> {
        let base = loc.file.parent().unwrap_or(Path::new("."));
        let name = spec.name.as_str();
        if name.eq_ignore_ascii_case("detectSQLi") {
            return Ok(Op::SqlI);
        }
        if name.eq_ignore_ascii_case("detectXSS") {
            return Ok(Op::Xss);
        }
        let arg = Template::parse(&spec.argument);
        let from_file = name.to_ascii_lowercase().ends_with("fromfile")
            || name.eq_ignore_ascii_case("pmf")
            || name.eq_ignore_ascii_case("ipMatchF");
        if arg.has_macros() && !from_file {
            // compile once with the macros blank to catch errors at load time
            let blank = String::from_utf8_lossy(&arg.expand_with(|_, _, _| {})).into_owned();
            if !name.eq_ignore_ascii_case("rx") {
                Operator::compile(name, &blank, base).map_err(|e| err(loc, e))?;
            }
            let tx_only = arg
                .macros()
                .all(|(name, key)| name == "TX" && key.is_some());
            return Ok(Op::Dynamic {
                name: name.to_string(),
                arg,
                last: DynamicCache::default(),
                tx_only,
            });
        }
        Operator::compile(name, &spec.argument, base)
            .map(Op::Static)
            .map_err(|e| err(loc, e))
    }
}

fn transform(loc: &Location, name: &str) -> Result<Option<Transform>, CrsError> {
    if name.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    Transform::from_name(name.trim())
        .map(Some)
        .ok_or_else(|| err(loc, format!("transformation `t:{name}` is not supported")))
}

/// CRS severities: names or 0-7 (EMERGENCY..DEBUG).
fn severity(v: &str) -> Option<u8> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u8>() {
        return Some(n);
    }
    Some(match v.to_ascii_uppercase().as_str() {
        "EMERGENCY" => 0,
        "ALERT" => 1,
        "CRITICAL" => 2,
        "ERROR" => 3,
        "WARNING" => 4,
        "NOTICE" => 5,
        "INFO" => 6,
        "DEBUG" => 7,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::KeyRegex;

    #[test]
    fn literal_key_regexes_answer_like_the_regex() {
        let keys: &[&[u8]] = &[
            b"header_name_host",
            b"HEADER_NAME_X",
            b"x_header_name_",
            b"__utma",
            b"a__UTMz",
            b"utm",
            b"",
            b"paramcounter_",
            b"tx_paramcounter_x",
            b"PARAMCOUNTER",
            b"multipart_headers_content_types_",
            b"multipart_headers_content_types",
            b"header_aaa",
            b"header_",
            b"a*",
            b"\\x",
        ];
        for pattern in [
            "^HEADER_NAME_",
            "__utm",
            "^__utma$",
            "utm$",
            "^a.c",
            "(?:x|y)",
            "paramcounter_.*",
            "^paramcounter_.*",
            "MULTIPART_HEADERS_CONTENT_TYPES_*",
            "header_a*$",
            "name_.*.*",
            "a\\*",
            "\\.*",
            ".*",
        ] {
            let k = KeyRegex::new(pattern).unwrap();
            let re = regex::bytes::RegexBuilder::new(pattern)
                .case_insensitive(true)
                .unicode(false)
                .build()
                .unwrap();
            for key in keys {
                assert_eq!(k.is_match(key), re.is_match(key), "{pattern} on {key:?}");
                // TX names are written lowercase
                let lower = key.to_ascii_lowercase();
                let want = re.is_match(&lower);
                assert_eq!(k.is_match_lowercase(&lower), want, "{pattern} on {lower:?}");
            }
        }
    }
}
