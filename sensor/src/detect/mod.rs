//! The detection engine: is this request malicious?
//!
//! Rules are data (`sensor/rules/*.yaml`, see `docs/rules.md`). [`Detector::inspect`] splits a
//! request into fields (path, query arguments, cookies, headers, body fields), normalizes each
//! field once ([`decode::normalize`]), runs one Aho-Corasick automaton holding every rule literal
//! over the normalized text, and runs a rule's regex only when one of its prefilter literals was
//! found. A rule fires at most once per request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use palisade_wire::Severity;
use regex::bytes::{Regex, RegexBuilder};

use crate::http::{Request, form_pairs};

mod clean;
pub mod crs;
pub mod decode;
mod rules;

use decode::Flavor;
use rules::{Kind, LocSet};
pub use rules::{PatternSpec, RuleFile, RuleSpec, RuleTests};

/// The built-in rule files, embedded at compile time: (file name, YAML).
pub const BUILTIN_RULES: &[(&str, &str)] = &[
    ("java.yaml", include_str!("../../rules/java.yaml")),
    ("sqli.yaml", include_str!("../../rules/sqli.yaml")),
    ("xss.yaml", include_str!("../../rules/xss.yaml")),
    ("lfi.yaml", include_str!("../../rules/lfi.yaml")),
    ("rfi.yaml", include_str!("../../rules/rfi.yaml")),
    ("rce.yaml", include_str!("../../rules/rce.yaml")),
    ("php.yaml", include_str!("../../rules/php.yaml")),
    ("ssrf.yaml", include_str!("../../rules/ssrf.yaml")),
    ("ssti.yaml", include_str!("../../rules/ssti.yaml")),
    ("xxe.yaml", include_str!("../../rules/xxe.yaml")),
    ("scanner.yaml", include_str!("../../rules/scanner.yaml")),
];

/// Largest compiled size of one regex.
const REGEX_SIZE_LIMIT: usize = 2 * 1024 * 1024;
/// Lazy DFA cache of one regex (per thread using it); big enough that the cache is not reset
/// over and over on mixed traffic.
const DFA_CACHE_LIMIT: usize = 8 * 1024 * 1024;
/// Longest field inspected, in bytes (longer fields are cut; bodies are already a prefix).
const MAX_FIELD: usize = 8 * 1024;
/// Longest location label.
const MAX_LABEL: usize = 64;

/// Errors loading rules.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectError {
    /// A rule directory or file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A rule file is not valid YAML for the schema.
    #[error("{file}: {source}")]
    Yaml {
        /// The file.
        file: String,
        /// The cause (with line and column).
        source: serde_yaml::Error,
    },
    /// A rule breaks the schema.
    #[error("{file}: rule `{rule}`: {message}")]
    InvalidRule {
        /// The file.
        file: String,
        /// The rule id.
        rule: String,
        /// What is wrong.
        message: String,
    },
    /// A regex does not compile.
    #[error("{file}: rule `{rule}`: bad regex: {source}")]
    Regex {
        /// The file.
        file: String,
        /// The rule id.
        rule: String,
        /// The cause.
        source: regex::Error,
    },
    /// Two rules share an id.
    #[error("{file}: rule `{rule}` is already defined in {first}")]
    DuplicateRule {
        /// The file of the second definition.
        file: String,
        /// The rule id.
        rule: String,
        /// The file of the first definition.
        first: String,
    },
    /// The directory holds no rule.
    #[error("no rules found in {0} (expected *.yaml files with a `rules:` list)")]
    NoRules(PathBuf),
    /// The literal automaton could not be built.
    #[error("cannot build the literal prefilter: {0}")]
    Prefilter(String),
}

/// One rule that fired on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// Rule id (`sqli.union`).
    pub rule_id: String,
    /// Wire category (`sqli`, `xss`, ...).
    pub category: String,
    /// Severity of the rule.
    pub severity: Severity,
    /// MITRE ATT&CK technique ids.
    pub mitre: Vec<String>,
    /// The matched fragment in decoded form, at most 256 bytes.
    pub evidence: String,
    /// Where it matched: `path`, `query:<name>`, `body:<name>`, `cookie:<name>`, `header:<name>`
    /// (CRS detections: the SecLang variable, `ARGS:id`).
    pub location: String,
    /// The Core Rule Set's verdict, when CRS runs and flagged the request.
    pub crs: Option<palisade_wire::CrsDetail>,
}

#[derive(Debug)]
struct Rule {
    id: String,
    category: String,
    severity: Severity,
    mitre: Vec<String>,
    locs: LocSet,
    names: Option<Regex>,
    tests: RuleTests,
    file: String,
}

#[derive(Debug)]
enum Matcher {
    Literal,
    Regex(Regex),
}

#[derive(Debug)]
struct Pattern {
    rule: usize,
    matcher: Matcher,
}

/// The compiled rule set. `Send + Sync`; [`Detector::inspect`] takes `&self` and no lock, so
/// share one behind an `Arc`.
#[derive(Debug)]
pub struct Detector {
    rules: Vec<Rule>,
    patterns: Vec<Pattern>,
    ac: AhoCorasick,
    /// For each automaton literal, the patterns it stands for.
    lit_patterns: Vec<Vec<u32>>,
    /// Header fields already scanned clean (skipped when they come again).
    clean_headers: clean::CleanHeaders,
    /// The OWASP Core Rule Set, when configured: runs beside the built-in rules.
    crs: Option<std::sync::Arc<crs::Crs>>,
}

/// One field of a request, about to be scanned.
struct Field<'a> {
    kind: Kind,
    /// Lowercase header name for headers, "" otherwise.
    header: &'a str,
    /// Location label prefix (`query`, `body`, `cookie`, `header`, `path`).
    prefix: &'static str,
    /// Location label suffix (argument/cookie/header name), may be empty.
    name: &'a str,
}

/// Per-call scratch space.
struct Scratch {
    text: String,
    sql: String,
    name: String,
    /// The header name being scanned, lowercased (reused: one allocation per request).
    header: String,
    /// Set when a literal hit was passed over because its rule had already fired.
    skipped_fired: bool,
    tried: Vec<u64>,
    fired: Vec<bool>,
}

impl Detector {
    /// The default rules, embedded in the binary.
    pub fn builtin() -> Result<Detector, DetectError> {
        let mut files = Vec::with_capacity(BUILTIN_RULES.len());
        for (name, yaml) in BUILTIN_RULES {
            files.push(((*name).to_owned(), parse_file(name, yaml)?));
        }
        Detector::from_files(files)
    }

    /// Load every `*.yaml` / `*.yml` file of `dir` (sorted by name).
    pub fn from_dir(dir: &Path) -> Result<Detector, DetectError> {
        let io = |path: &Path, source| DetectError::Io {
            path: path.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(DetectError::NoRules(dir.to_owned()));
        }
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let yaml = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            let name = path.display().to_string();
            let file = parse_file(&name, &yaml)?;
            files.push((name, file));
        }
        Detector::from_files(files)
    }

    /// Compile parsed rule files (name, content).
    pub fn from_files(files: Vec<(String, RuleFile)>) -> Result<Detector, DetectError> {
        let mut rules = Vec::new();
        let mut patterns = Vec::new();
        let mut literals: Vec<String> = Vec::new();
        let mut lit_index: HashMap<String, usize> = HashMap::new();
        let mut lit_patterns: Vec<Vec<u32>> = Vec::new();
        let mut seen: HashMap<String, String> = HashMap::new();

        for (file, content) in files {
            for spec in content.rules {
                rules::validate(&spec, &file)?;
                if let Some(first) = seen.get(&spec.id) {
                    return Err(DetectError::DuplicateRule {
                        file,
                        rule: spec.id,
                        first: first.clone(),
                    });
                }
                seen.insert(spec.id.clone(), file.clone());
                let locs =
                    LocSet::parse(&spec.locations).map_err(|message| DetectError::InvalidRule {
                        file: file.clone(),
                        rule: spec.id.clone(),
                        message,
                    })?;
                let names = match &spec.names {
                    None => None,
                    Some(r) => Some(
                        RegexBuilder::new(r)
                            .case_insensitive(true)
                            .unicode(false)
                            .size_limit(REGEX_SIZE_LIMIT)
                            .build()
                            .map_err(|source| DetectError::Regex {
                                file: file.clone(),
                                rule: spec.id.clone(),
                                source,
                            })?,
                    ),
                };
                let rule_idx = rules.len();
                for p in &spec.patterns {
                    let pat_idx = patterns.len() as u32;
                    let (matcher, lits): (Matcher, Vec<String>) = match (&p.literal, &p.regex) {
                        (Some(l), _) => (Matcher::Literal, vec![l.to_lowercase()]),
                        (None, Some(r)) => {
                            let re = RegexBuilder::new(r)
                                .case_insensitive(true)
                                .unicode(false)
                                .size_limit(REGEX_SIZE_LIMIT)
                                .dfa_size_limit(DFA_CACHE_LIMIT)
                                .build()
                                .map_err(|source| DetectError::Regex {
                                    file: file.clone(),
                                    rule: spec.id.clone(),
                                    source,
                                })?;
                            (
                                Matcher::Regex(re),
                                p.prefilter.iter().map(|l| l.to_lowercase()).collect(),
                            )
                        }
                        (None, None) => unreachable_pattern(&file, &spec.id)?,
                    };
                    for lit in lits {
                        let idx = *lit_index.entry(lit.clone()).or_insert_with(|| {
                            literals.push(lit);
                            lit_patterns.push(Vec::new());
                            literals.len() - 1
                        });
                        if !lit_patterns[idx].contains(&pat_idx) {
                            lit_patterns[idx].push(pat_idx);
                        }
                    }
                    patterns.push(Pattern {
                        rule: rule_idx,
                        matcher,
                    });
                }
                rules.push(Rule {
                    id: spec.id,
                    category: spec.category,
                    severity: spec.severity,
                    mitre: spec.mitre,
                    locs,
                    names,
                    tests: spec.tests,
                    file: file.clone(),
                });
            }
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&literals)
            .or_else(|_| {
                AhoCorasick::builder()
                    .match_kind(MatchKind::Standard)
                    .build(&literals)
            })
            .map_err(|e| DetectError::Prefilter(e.to_string()))?;
        Ok(Detector {
            rules,
            patterns,
            ac,
            lit_patterns,
            clean_headers: clean::CleanHeaders::default(),
            crs: None,
        })
    }

    /// Runs the Core Rule Set beside the built-in rules.
    pub fn with_crs(mut self, crs: std::sync::Arc<crs::Crs>) -> Detector {
        self.crs = Some(crs);
        self
    }

    /// The Core Rule Set, when configured.
    pub fn crs(&self) -> Option<&crs::Crs> {
        self.crs.as_deref()
    }

    /// Runs the Core Rule Set over a request (None without CRS, or for a later body window:
    /// CRS sees a request once, with its first body window).
    pub fn crs_verdict(&self, req: &Request) -> Option<crs::Verdict> {
        let engine = self.crs.as_deref()?;
        if req.body_window.is_some() {
            return None;
        }
        // the usual versions without formatting one per request
        let protocol: std::borrow::Cow<'static, str> =
            match (req.versionless, req.major, req.version) {
                (true, _, _) => "".into(),
                (false, 1, 1) => "HTTP/1.1".into(),
                (false, 1, 0) => "HTTP/1.0".into(),
                (false, 2, 0) => "HTTP/2.0".into(),
                (false, major, minor) => format!("HTTP/{major}.{minor}").into(),
            };
        let headers: Vec<(&[u8], &[u8])> = req
            .headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let input = crs::RequestInput {
            method: req.method.as_bytes(),
            target: req.target.as_bytes(),
            protocol: protocol.as_bytes(),
            headers: &headers,
            body: &req.body,
            remote_addr: "",
        };
        Some(engine.evaluate(&input))
    }

    /// Inspect one request with the built-in rules and, when configured, the Core Rule Set.
    /// A request both flag gives the built-in detections, the most severe one carrying the CRS
    /// verdict; a request only CRS flags gives one CRS detection (see [`crs::mapping`]).
    pub fn inspect(&self, req: &Request) -> Vec<Detection> {
        self.inspect_with_verdict(req).0
    }

    /// [`Detector::inspect`], also returning the CRS verdict it was made from (None without
    /// CRS, or for a later body window).
    pub fn inspect_with_verdict(&self, req: &Request) -> (Vec<Detection>, Option<crs::Verdict>) {
        let mut out = self.inspect_builtin(req);
        let verdict = self.crs_verdict(req);
        if let Some(v) = verdict.as_ref().filter(|v| v.is_attack) {
            match out.first_mut() {
                Some(first) => first.crs = Some(crs::mapping::detail(v)),
                None => out.extend(self.crs_detection(v)),
            }
        }
        (out, verdict)
    }

    /// The detection a CRS verdict makes on its own (None when it does not reach the
    /// threshold): led by its attack rule with the most points (see [`crs::mapping`]).
    pub fn crs_detection(&self, verdict: &crs::Verdict) -> Option<Detection> {
        if !verdict.is_attack {
            return None;
        }
        let threshold = self
            .crs
            .as_deref()
            .map_or(crs::DEFAULT_THRESHOLD, |c| c.settings().threshold);
        let s = crs::mapping::summary(verdict)?;
        Some(Detection {
            rule_id: s.rule_id,
            category: s.category.to_string(),
            severity: crs::mapping::severity(verdict.attack_score, threshold),
            mitre: s.mitre,
            evidence: s.evidence,
            location: s.location,
            crs: Some(crs::mapping::detail(verdict)),
        })
    }

    /// Forget the header fields remembered clean, so the next requests are scanned in full
    /// (benchmarks that replay one corpus many times measure the cold path with it).
    pub fn forget_clean_headers(&self) {
        self.clean_headers.clear();
    }

    /// Number of rules loaded.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Ids of the rules loaded, in load order.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }

    /// Inspect one request with the built-in rules. Returns at most one detection per rule,
    /// most severe first. A later window of a body ([`Request::body_window`]) has its body
    /// fields inspected only: its head was inspected with the first window.
    pub fn inspect_builtin(&self, req: &Request) -> Vec<Detection> {
        let mut s = self.scratch();
        let mut out = Vec::new();
        if req.body_window.is_some() {
            self.scan_body(req, &mut s, &mut out);
            out.sort_by_key(|d| std::cmp::Reverse(d.severity));
            return out;
        }

        let path = req.path();
        self.scan_raw(
            path.as_bytes(),
            Flavor::Path,
            &Field {
                kind: Kind::Path,
                header: "",
                prefix: "path",
                name: "",
            },
            &mut s,
            &mut out,
        );
        if let Some(q) = req.query() {
            self.scan_pairs(q.as_bytes(), Kind::Query, "query", &mut s, &mut out);
        }
        for (name, value) in &req.headers {
            if name.eq_ignore_ascii_case("cookie") {
                for (cname, cvalue) in req_cookie_pairs(value) {
                    self.scan_named(
                        cname,
                        cvalue.as_bytes(),
                        Kind::Cookie,
                        "cookie",
                        Flavor::Form,
                        &mut s,
                        &mut out,
                    );
                }
                continue;
            }
            let mut lname = std::mem::take(&mut s.header);
            lname.clear();
            lname.push_str(name);
            lname.make_ascii_lowercase();
            // A header field seen clean before is clean again (see `clean`).
            let key = self.clean_headers.key(&lname, value.as_bytes());
            if self.clean_headers.contains(key) {
                s.header = lname;
                continue;
            }
            let before = out.len();
            s.skipped_fired = false;
            let kind = if lname == "user-agent" {
                Kind::UserAgent
            } else {
                Kind::Header
            };
            // Referer holds a URL whose query uses `+` for spaces.
            let flavor = if lname == "referer" {
                Flavor::Form
            } else {
                Flavor::Plain
            };
            self.scan_raw(
                value.as_bytes(),
                flavor,
                &Field {
                    kind,
                    header: &lname,
                    prefix: "header",
                    name: &lname,
                },
                &mut s,
                &mut out,
            );
            // Clean only if nothing fired here and no rule was passed over because it had
            // already fired on an earlier field of this request.
            if out.len() == before && !s.skipped_fired {
                self.clean_headers.insert(key);
            }
            s.header = lname;
        }
        self.scan_body(req, &mut s, &mut out);
        out.sort_by_key(|d| std::cmp::Reverse(d.severity));
        out
    }

    /// Scan the fields of the request's body (prefix or window).
    fn scan_body(&self, req: &Request, s: &mut Scratch, out: &mut Vec<Detection>) {
        if req.body.is_empty() {
            return;
        }
        let body = req.body_view();
        body.for_each_field(|name, value, form| {
            let flavor = if form { Flavor::Form } else { Flavor::Plain };
            if form {
                // Names of form pairs are raw too.
                self.scan_named(name, value, Kind::Body, "body", flavor, s, out);
            } else {
                self.scan_raw(
                    value,
                    flavor,
                    &Field {
                        kind: Kind::Body,
                        header: "",
                        prefix: "body",
                        name,
                    },
                    s,
                    out,
                );
            }
        });
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            text: String::new(),
            sql: String::new(),
            name: String::new(),
            header: String::new(),
            skipped_fired: false,
            tried: vec![0; self.patterns.len().div_ceil(64)],
            fired: vec![false; self.rules.len()],
        }
    }

    /// Scan `name=value&...` pairs.
    fn scan_pairs(
        &self,
        raw: &[u8],
        kind: Kind,
        prefix: &'static str,
        s: &mut Scratch,
        out: &mut Vec<Detection>,
    ) {
        for (name, value) in form_pairs(raw) {
            let name = String::from_utf8_lossy(name);
            self.scan_named(&name, value, kind, prefix, Flavor::Form, s, out);
        }
    }

    /// Scan a raw (still encoded) name and its value; the decoded name labels the location.
    #[allow(clippy::too_many_arguments)]
    fn scan_named(
        &self,
        raw_name: &str,
        value: &[u8],
        kind: Kind,
        prefix: &'static str,
        flavor: Flavor,
        s: &mut Scratch,
        out: &mut Vec<Detection>,
    ) {
        let mut name = std::mem::take(&mut s.name);
        decode::normalize(raw_name.as_bytes(), flavor, &mut name);
        let label = clip(&name, MAX_LABEL);
        let field = Field {
            kind,
            header: "",
            prefix,
            name: label,
        };
        if !name.is_empty() {
            self.scan_text_and_sql(&name, &field, s, out);
        }
        self.scan_raw(value, flavor, &field, s, out);
        s.name = name;
    }

    fn scan_raw(
        &self,
        raw: &[u8],
        flavor: Flavor,
        field: &Field<'_>,
        s: &mut Scratch,
        out: &mut Vec<Detection>,
    ) {
        if raw.is_empty() {
            return;
        }
        let raw = &raw[..raw.len().min(MAX_FIELD)];
        let mut text = std::mem::take(&mut s.text);
        decode::normalize(raw, flavor, &mut text);
        self.scan_text_and_sql(&text, field, s, out);
        s.text = text;
    }

    fn scan_text_and_sql(
        &self,
        text: &str,
        field: &Field<'_>,
        s: &mut Scratch,
        out: &mut Vec<Detection>,
    ) {
        self.scan_text(text, field, s, out);
        let mut sql = std::mem::take(&mut s.sql);
        if decode::strip_sql_comments(text, &mut sql) {
            self.scan_text(&sql, field, s, out);
        }
        if decode::resolve_lookups(text, &mut sql) && sql != text {
            self.scan_text(&sql, field, s, out);
        }
        s.sql = sql;
    }

    fn scan_text(&self, text: &str, field: &Field<'_>, s: &mut Scratch, out: &mut Vec<Detection>) {
        let mut any_tried = false;
        for m in self.ac.find_overlapping_iter(text) {
            for &p in &self.lit_patterns[m.pattern().as_usize()] {
                let pat = &self.patterns[p as usize];
                if s.fired[pat.rule] {
                    s.skipped_fired = true;
                    continue;
                }
                let rule = &self.rules[pat.rule];
                if !rule.locs.applies(field.kind, field.header) {
                    continue;
                }
                if let Some(names) = &rule.names
                    && !names.is_match(field.name.as_bytes())
                {
                    continue;
                }
                let evidence = match &pat.matcher {
                    Matcher::Literal => window(text, m.start(), m.end()),
                    Matcher::Regex(re) => {
                        let (w, b) = (p as usize / 64, 1u64 << (p % 64));
                        if s.tried[w] & b != 0 {
                            continue;
                        }
                        s.tried[w] |= b;
                        any_tried = true;
                        match re.find(text.as_bytes()) {
                            Some(found) => String::from_utf8_lossy(found.as_bytes()).into_owned(),
                            None => continue,
                        }
                    }
                };
                s.fired[pat.rule] = true;
                out.push(Detection {
                    rule_id: rule.id.clone(),
                    category: rule.category.clone(),
                    severity: rule.severity,
                    mitre: rule.mitre.clone(),
                    evidence: palisade_wire::truncate_evidence(&evidence).to_owned(),
                    location: if field.name.is_empty() {
                        field.prefix.to_owned()
                    } else {
                        format!("{}:{}", field.prefix, field.name)
                    },
                    crs: None,
                });
            }
        }
        if any_tried {
            s.tried.iter_mut().for_each(|w| *w = 0);
        }
    }

    /// Rule ids that fire on one raw field value of the given location kind (for rule examples).
    fn inspect_field(&self, kind: Kind, header: &str, name: &str, raw: &str) -> Vec<String> {
        let mut s = self.scratch();
        let mut out = Vec::new();
        let flavor = match kind {
            Kind::Path => Flavor::Path,
            Kind::Query | Kind::Cookie => Flavor::Form,
            _ => Flavor::Plain,
        };
        self.scan_raw(
            raw.as_bytes(),
            flavor,
            &Field {
                kind,
                header,
                prefix: "test",
                name,
            },
            &mut s,
            &mut out,
        );
        out.into_iter().map(|d| d.rule_id).collect()
    }

    /// Check every rule's `tests` examples: each `match` value must fire the rule and each
    /// `no_match` value must not, placed in the rule's first location. Returns one message per
    /// failure (empty when all pass).
    pub fn self_test(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for rule in &self.rules {
            let (kind, header) = rule.locs.first_kind();
            for m in &rule.tests.matches {
                if !self
                    .inspect_field(kind, header, &rule.tests.field, m)
                    .contains(&rule.id)
                {
                    failures.push(format!("{}: rule `{}` misses `{m}`", rule.file, rule.id));
                }
            }
            for m in &rule.tests.no_match {
                if self
                    .inspect_field(kind, header, &rule.tests.field, m)
                    .contains(&rule.id)
                {
                    failures.push(format!("{}: rule `{}` fires on `{m}`", rule.file, rule.id));
                }
            }
        }
        failures
    }
}

fn unreachable_pattern(file: &str, rule: &str) -> Result<(Matcher, Vec<String>), DetectError> {
    Err(DetectError::InvalidRule {
        file: file.to_owned(),
        rule: rule.to_owned(),
        message: "pattern without `literal` or `regex`".to_owned(),
    })
}

fn parse_file(name: &str, yaml: &str) -> Result<RuleFile, DetectError> {
    serde_yaml::from_str(yaml).map_err(|source| DetectError::Yaml {
        file: name.to_owned(),
        source,
    })
}

fn req_cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|kv| {
        let kv = kv.trim();
        if kv.is_empty() {
            return None;
        }
        Some(match kv.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => ("", kv),
        })
    })
}

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The literal match plus some context after it, on character boundaries.
fn window(text: &str, start: usize, end: usize) -> String {
    let mut from = start.saturating_sub(16);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (end + 48).min(text.len());
    while !text.is_char_boundary(to) {
        to += 1;
    }
    text[from..to].to_owned()
}

#[cfg(test)]
mod tests;
