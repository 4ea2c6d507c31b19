//! Rule files: the YAML schema and its validation.
//!
//! See `docs/rules.md` for the operator-facing description.

use palisade_wire::{Category, MAX_MITRE, MAX_RULE_LEN, Severity};
use serde::Deserialize;

use super::DetectError;

/// One rule file: `rules: [...]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// The rules of this file.
    pub rules: Vec<RuleSpec>,
}

/// One rule as written in YAML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique id, `family.name` style (`sqli.union`), at most 64 characters of `[a-z0-9_.-]`.
    pub id: String,
    /// Wire category (`sqli`, `xss`, `lfi`, `rfi`, `rce`, `java`, `php`, `ssrf`, `scanner`, ...).
    pub category: String,
    /// `low`, `medium`, `high` or `critical` (critical: no benign request looks like this).
    pub severity: Severity,
    /// MITRE ATT&CK technique ids (`T1190`, `T1059.004`).
    #[serde(default)]
    pub mitre: Vec<String>,
    /// What the rule detects, for humans.
    #[serde(default)]
    pub description: String,
    /// Where the rule applies: `path`, `query`, `body`, `cookies`, `headers` (every header but
    /// `Cookie`), `user_agent`, `header:<name>`, or `any`. Default: every location.
    #[serde(default = "default_locations")]
    pub locations: Vec<String>,
    /// Optional regex on the field name (argument, cookie, header or JSON key name, decoded and
    /// lowercased): the rule only fires on fields whose name matches.
    #[serde(default)]
    pub names: Option<String>,
    /// The rule fires when any pattern matches.
    pub patterns: Vec<PatternSpec>,
    /// Examples checked by the test suite and [`super::Detector::self_test`].
    #[serde(default)]
    pub tests: RuleTests,
}

fn default_locations() -> Vec<String> {
    vec!["any".to_owned()]
}

/// One pattern: a literal, or a regex with the literals that must appear for it to run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternSpec {
    /// A literal matched anywhere in the normalized (lowercased) text.
    #[serde(default)]
    pub literal: Option<String>,
    /// A regular expression (Rust `regex` syntax, case-insensitive, ASCII classes) matched on the
    /// normalized text.
    #[serde(default)]
    pub regex: Option<String>,
    /// For a regex: literals of which at least one occurs in every text the regex matches. The
    /// regex runs only when one of them is found.
    #[serde(default)]
    pub prefilter: Vec<String>,
}

/// Examples for a rule. Each is a raw value as it would appear in the rule's first location
/// (encoded as on the wire).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTests {
    /// Field name the examples are placed under (matters for rules with `names`). Default `q`.
    #[serde(default = "default_test_field")]
    pub field: String,
    /// Values the rule must detect.
    #[serde(default, rename = "match")]
    pub matches: Vec<String>,
    /// Values the rule must not detect.
    #[serde(default)]
    pub no_match: Vec<String>,
}

impl Default for RuleTests {
    fn default() -> Self {
        RuleTests {
            field: default_test_field(),
            matches: Vec::new(),
            no_match: Vec::new(),
        }
    }
}

fn default_test_field() -> String {
    "q".to_owned()
}

/// The kinds of location a field can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The URL path.
    Path = 1,
    /// A query argument name or value.
    Query = 2,
    /// A body field (form pair, JSON string, multipart part) or the raw body.
    Body = 4,
    /// A cookie name or value.
    Cookie = 8,
    /// A header value other than `Cookie` and `User-Agent`.
    Header = 16,
    /// The `User-Agent` header.
    UserAgent = 32,
}

/// Where a rule applies.
#[derive(Debug, Clone, Default)]
pub struct LocSet {
    kinds: u8,
    /// Specific header names (lowercase).
    headers: Vec<String>,
}

impl LocSet {
    /// Parse the `locations` list of a rule.
    pub fn parse(list: &[String]) -> Result<LocSet, String> {
        let mut set = LocSet::default();
        if list.is_empty() {
            return Err("`locations` is empty".to_owned());
        }
        for loc in list {
            let l = loc.trim().to_ascii_lowercase();
            match l.as_str() {
                "any" => set.kinds |= 0x3f,
                "path" => set.kinds |= Kind::Path as u8,
                "query" => set.kinds |= Kind::Query as u8,
                "body" => set.kinds |= Kind::Body as u8,
                "cookies" | "cookie" => set.kinds |= Kind::Cookie as u8,
                "headers" => set.kinds |= Kind::Header as u8 | Kind::UserAgent as u8,
                "user_agent" => set.kinds |= Kind::UserAgent as u8,
                other => match other.strip_prefix("header:") {
                    Some(name) if !name.is_empty() => {
                        if name == "user-agent" {
                            set.kinds |= Kind::UserAgent as u8;
                        } else if name == "cookie" {
                            set.kinds |= Kind::Cookie as u8;
                        } else {
                            set.headers.push(name.to_owned());
                        }
                    }
                    _ => {
                        return Err(format!(
                            "unknown location `{loc}` (expected path, query, body, cookies, \
                             headers, user_agent, header:<name> or any)"
                        ));
                    }
                },
            }
        }
        Ok(set)
    }

    /// Does a field of `kind` (with `header` name, lowercase, for headers) fall in this set?
    #[inline]
    pub fn applies(&self, kind: Kind, header: &str) -> bool {
        self.kinds & kind as u8 != 0
            || (kind == Kind::Header
                && !self.headers.is_empty()
                && self.headers.iter().any(|h| h == header))
    }

    /// The first kind in the set, for rule examples.
    pub fn first_kind(&self) -> (Kind, &str) {
        for k in [
            Kind::Query,
            Kind::Body,
            Kind::Path,
            Kind::Cookie,
            Kind::UserAgent,
            Kind::Header,
        ] {
            if self.kinds & k as u8 != 0 {
                return (k, "x-test");
            }
        }
        (
            Kind::Header,
            self.headers.first().map_or("x-test", String::as_str),
        )
    }
}

/// Validate the fields of a rule that do not need compiling. `file` names the source in errors.
pub fn validate(spec: &RuleSpec, file: &str) -> Result<(), DetectError> {
    let bad = |message: String| DetectError::InvalidRule {
        file: file.to_owned(),
        rule: spec.id.clone(),
        message,
    };
    if spec.id.is_empty() || spec.id.len() > MAX_RULE_LEN {
        return Err(bad(format!("id must be 1 to {MAX_RULE_LEN} characters")));
    }
    if !spec
        .id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(bad(
            "id may only hold lowercase letters, digits, `.`, `_`, `-`".to_owned(),
        ));
    }
    Category::new(spec.category.clone()).map_err(|e| bad(format!("category: {e}")))?;
    if spec.mitre.len() > MAX_MITRE {
        return Err(bad(format!("at most {MAX_MITRE} MITRE techniques")));
    }
    for t in &spec.mitre {
        if !is_technique(t) {
            return Err(bad(format!(
                "MITRE technique `{t}` is not of the form T1234 or T1234.001"
            )));
        }
    }
    if spec.patterns.is_empty() {
        return Err(bad("`patterns` is empty".to_owned()));
    }
    for (i, p) in spec.patterns.iter().enumerate() {
        match (&p.literal, &p.regex) {
            (Some(l), None) => {
                if l.trim().is_empty() {
                    return Err(bad(format!("pattern {i}: empty literal")));
                }
                if !p.prefilter.is_empty() {
                    return Err(bad(format!(
                        "pattern {i}: `prefilter` only applies to `regex` patterns"
                    )));
                }
            }
            (None, Some(_)) => {
                if p.prefilter.is_empty() || p.prefilter.iter().any(|l| l.is_empty()) {
                    return Err(bad(format!(
                        "pattern {i}: a regex needs a non-empty `prefilter` list of literals, \
                         one of which occurs in every match"
                    )));
                }
            }
            _ => {
                return Err(bad(format!(
                    "pattern {i}: give exactly one of `literal` or `regex`"
                )));
            }
        }
    }
    Ok(())
}

fn is_technique(t: &str) -> bool {
    let b = t.as_bytes();
    let base = b.len() >= 5 && b[0] == b'T' && b[1..5].iter().all(u8::is_ascii_digit);
    match b.len() {
        5 => base,
        9 => base && b[5] == b'.' && b[6..9].iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn techniques() {
        assert!(is_technique("T1190"));
        assert!(is_technique("T1059.004"));
        assert!(!is_technique("T119"));
        assert!(!is_technique("t1190"));
        assert!(!is_technique("T1059.4"));
    }

    #[test]
    fn locations() {
        let l = LocSet::parse(&["query".into(), "header:X-Api-Version".into()]).unwrap();
        assert!(l.applies(Kind::Query, ""));
        assert!(!l.applies(Kind::Body, ""));
        assert!(l.applies(Kind::Header, "x-api-version"));
        assert!(!l.applies(Kind::Header, "referer"));
        let h = LocSet::parse(&["headers".into()]).unwrap();
        assert!(h.applies(Kind::UserAgent, "user-agent"));
        assert!(LocSet::parse(&["qurey".into()]).is_err());
        assert!(LocSet::parse(&[]).is_err());
    }
}
