//! The OWASP Core Rule Set, run natively: a SecLang engine for CRS's request rules, checked
//! rule for rule against libmodsecurity 3 (see `docs/rules.md`, "CRS").
//!
//! Loading: [`layout::discover`] finds the files of a CRS tree (Debian's 3.3.4 or a 4.x
//! release), [`parse`] reads them into [`ast`] directives, `rules` compiles them (operators,
//! transformation pipelines interned in one prefix tree, literal prefilters per pipeline,
//! exclusions). Running: `eval` takes one request through phase 1, the body processor
//! ([`collections`]) and phase 2 as libmodsecurity does in `DetectionOnly` mode, and
//! [`Crs::evaluate`] turns what matched into a [`Verdict`].

use std::path::PathBuf;
use std::sync::Arc;

pub mod ast;
pub mod collections;
mod eval;
mod fold;
pub mod injection;
pub mod layout;
mod macros;
pub mod mapping;
pub mod operator;
pub mod parse;
mod prefilter;
mod rules;
pub mod transform;

pub use collections::RequestInput;
pub use eval::{Evidence, MatchedRule};
pub use rules::LoadReport;

/// Errors loading a CRS tree.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrsError {
    /// A file could not be read or parsed.
    #[error(transparent)]
    Parse(#[from] parse::ParseError),
    /// A directive the engine cannot run as written.
    #[error("{loc}: {message}")]
    Rule {
        /// `file:line`.
        loc: String,
        /// What is wrong.
        message: String,
    },
    /// Settings out of range.
    #[error("{0}")]
    Settings(String),
}

/// Default inbound anomaly threshold (CRS's own default).
pub const DEFAULT_THRESHOLD: i64 = 5;

/// Where the rules are and how strict to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrsSettings {
    /// A CRS tree: a 4.x release directory, Debian's `/usr/share/modsecurity-crs`, or a
    /// `rules/` directory.
    pub dir: PathBuf,
    /// `crs-setup.conf` when it is not in `dir` (Debian keeps it in `/etc/modsecurity/crs`).
    pub setup: Option<PathBuf>,
    /// Paranoia level 1-4.
    pub paranoia: u8,
    /// Inbound anomaly score threshold.
    pub threshold: i64,
    /// Extra files loaded after the tree (site exclusions).
    pub extra: Vec<PathBuf>,
}

impl CrsSettings {
    /// Settings for a tree with the defaults: paranoia 1, threshold 5.
    pub fn new(dir: impl Into<PathBuf>) -> CrsSettings {
        CrsSettings {
            dir: dir.into(),
            setup: None,
            paranoia: 1,
            threshold: DEFAULT_THRESHOLD,
            extra: Vec::new(),
        }
    }
}

/// What the engine itself adds before the CRS files: the body processors of ModSecurity's
/// recommended configuration (XML and JSON bodies parsed into `XML:/*` and `ARGS`).
const PREAMBLE: &str = r#"
SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\+|/)|text/)xml" "id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "^application/json" "id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"
"#;

/// The CRS variables that carry the paranoia level and the threshold: set after
/// `crs-setup.conf`, so that the command line wins over the file (CRS 3 reads
/// `paranoia_level`, CRS 4 `blocking_paranoia_level` and `detection_paranoia_level`).
fn settings_rule(s: &CrsSettings) -> String {
    format!(
        "SecAction \"id:9000001,phase:1,pass,nolog,t:none,setvar:tx.paranoia_level={pl},\
         setvar:tx.blocking_paranoia_level={pl},setvar:tx.detection_paranoia_level={pl},\
         setvar:tx.executing_paranoia_level={pl},\
         setvar:tx.inbound_anomaly_score_threshold={th}\"\n",
        pl = s.paranoia,
        th = s.threshold
    )
}

/// Parses SecLang the engine writes itself (no Include).
fn parse_inline(
    text: &str,
    file: Arc<PathBuf>,
    out: &mut Vec<ast::Spanned<ast::Directive>>,
) -> Result<(), CrsError> {
    let mut no_include = |path: &str, _: bool, loc: &ast::Location, _: &mut Vec<_>| {
        Err(parse::ParseError::Layout(format!(
            "{loc}: Include {path} is not allowed here"
        )))
    };
    parse::parse_str(text, file, out, &mut no_include)?;
    Ok(())
}

/// The loaded rule set.
#[derive(Debug)]
pub struct Crs {
    compiled: rules::Compiled,
    settings: CrsSettings,
}

/// CRS rule families that make a report on their own (attacks), as opposed to protocol
/// enforcement (920, 922) and the scaffolding rules (901, 949, ...).
pub fn is_attack_family(id: u64) -> bool {
    matches!(id / 1000, 913 | 921 | 930..=934 | 941..=944)
}

/// One request's result.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    /// Rules that matched and log, in evaluation order.
    pub matched: Vec<MatchedRule>,
    /// The inbound anomaly score as CRS computes it (every rule family).
    pub inbound_score: i64,
    /// Points from attack-family rules only ([`is_attack_family`]).
    pub attack_score: i64,
    /// `attack_score` reached the threshold: the request is an attack to report.
    pub is_attack: bool,
}

impl Crs {
    /// Loads and compiles a CRS tree.
    pub fn load(s: &CrsSettings) -> Result<Crs, CrsError> {
        if !(1..=4).contains(&s.paranoia) {
            return Err(CrsError::Settings(format!(
                "paranoia level {} is out of range (1-4)",
                s.paranoia
            )));
        }
        if s.threshold < 1 {
            return Err(CrsError::Settings(format!(
                "anomaly threshold {} must be at least 1",
                s.threshold
            )));
        }
        let layout = layout::discover(&s.dir, s.setup.as_deref())?;
        let mut directives = Vec::new();
        let engine_file = Arc::new(PathBuf::from("<palisade>"));
        parse_inline(PREAMBLE, engine_file.clone(), &mut directives)?;
        let mut files = vec![layout.setup.clone()];
        directives.extend(parse::parse_file(&layout.setup)?);
        parse_inline(&settings_rule(s), engine_file, &mut directives)?;
        for f in layout.files.iter().chain(&s.extra) {
            directives.extend(parse::parse_file(f)?);
            files.push(f.clone());
        }
        let mut compiled = rules::compile(directives)?;
        compiled.report.folded = fold::fold(&mut compiled);
        fold::runs(&mut compiled);
        compiled.prefilter_reached();
        eval::index_live(&mut compiled);
        compiled.report.files = files;
        compiled.report.warnings = layout.warnings;
        Ok(Crs {
            compiled,
            settings: s.clone(),
        })
    }

    /// The same rules without the memo of earlier requests' values: every request's values
    /// are decoded, scanned and matched afresh (what a request of never-seen values costs;
    /// for measurements).
    pub fn without_value_memo(mut self) -> Crs {
        self.compiled.memo = false;
        self
    }

    /// What loading skipped or approximated.
    pub fn report(&self) -> &LoadReport {
        &self.compiled.report
    }

    /// The settings it was loaded with.
    pub fn settings(&self) -> &CrsSettings {
        &self.settings
    }

    /// Runs the rules over one request.
    pub fn evaluate(&self, input: &RequestInput<'_>) -> Verdict {
        let outcome = eval::run(&self.compiled, input);
        let tx = |name: &str| outcome.tx.get(name).map(eval::to_int);
        // CRS 4 keeps the total in blocking_inbound_anomaly_score, CRS 3 in anomaly_score
        let inbound_score = tx("blocking_inbound_anomaly_score")
            .or_else(|| tx("anomaly_score"))
            .or_else(|| tx("inbound_anomaly_score"))
            .unwrap_or(0);
        let attack_score = outcome
            .matched
            .iter()
            .filter(|m| is_attack_family(m.id))
            .map(|m| m.points)
            .sum::<i64>();
        outcome.tx.recycle();
        Verdict {
            is_attack: attack_score >= self.settings.threshold,
            matched: outcome.matched,
            inbound_score,
            attack_score,
        }
    }
}

/// Where Debian's package puts CRS (used as the default of `--crs-dir` docs and tests).
pub const DEBIAN_CRS_DIR: &str = "/usr/share/modsecurity-crs";

/// True when Debian's CRS (its rules and its setup file) is not installed and `test` skips:
/// a failure under `CI=true`. Shared by the tests of every module that reads that tree.
#[cfg(test)]
fn without_debian_crs(test: &str) -> bool {
    let rules = std::path::Path::new(DEBIAN_CRS_DIR).join("rules");
    let setup = std::path::Path::new(layout::DEBIAN_SETUP);
    let missing = (!rules.is_dir() || !setup.is_file()).then(|| {
        format!(
            "{DEBIAN_CRS_DIR} or {} is missing (Debian package modsecurity-crs: scripts/setup.sh)",
            setup.display()
        )
    });
    palisade_tests::skip_because(test, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CRS-4-layout tree with `rules` as its one rule file.
    fn tree(rules: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("crs-setup.conf.example"),
            "SecDefaultAction \"phase:1,log,auditlog,pass\"\n\
             SecDefaultAction \"phase:2,log,auditlog,pass\"\n",
        )
        .expect("setup");
        std::fs::create_dir(dir.path().join("rules")).expect("rules dir");
        std::fs::write(dir.path().join("rules/REQUEST-942-TEST.conf"), rules).expect("rules");
        dir
    }

    fn load(rules: &str) -> Crs {
        let dir = tree(rules);
        let crs = Crs::load(&CrsSettings::new(dir.path())).expect("loads");
        drop(dir);
        crs
    }

    /// Calls `f` with the request: a GET, or a POST when there is a body.
    fn with_request<R>(
        target: &str,
        headers: &[(&str, &str)],
        body: &str,
        f: impl FnOnce(&RequestInput<'_>) -> R,
    ) -> R {
        let h: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        f(&RequestInput {
            method: if body.is_empty() { b"GET" } else { b"POST" },
            target: target.as_bytes(),
            protocol: b"HTTP/1.1",
            headers: &h,
            body: body.as_bytes(),
            remote_addr: "192.0.2.1",
        })
    }

    fn run(crs: &Crs, target: &str, headers: &[(&str, &str)], body: &str) -> Verdict {
        with_request(target, headers, body, |input| crs.evaluate(input))
    }

    /// What the engine itself returns (TX included).
    fn outcome(crs: &Crs, target: &str, headers: &[(&str, &str)], body: &str) -> eval::Outcome {
        with_request(target, headers, body, |input| {
            eval::run(&crs.compiled, input)
        })
    }

    /// The top rule `id` of the compiled rule set.
    fn rule(crs: &Crs, id: u64) -> &rules::Rule {
        crs.compiled
            .phases
            .iter()
            .flatten()
            .find_map(|i| match i {
                rules::Item::Rule(r) if r.id == id => Some(&**r),
                rules::Item::Rule(_) | rules::Item::Marker(_) => None,
            })
            .expect("the rule")
    }

    fn ids(v: &Verdict) -> Vec<u64> {
        v.matched.iter().map(|m| m.id).collect()
    }

    const SCORE: &str = "setvar:'tx.anomaly_score_pl1=+5',setvar:'tx.anomaly_score=+5'";

    #[test]
    fn messages_expand_their_macros_like_the_log_does() {
        let crs = load(&format!(
            "SecRule ARGS:q \"@rx (?i)union\\s+select\" \"id:942100,phase:2,block,t:none,t:lowercase,\
             msg:'SQLi in %{{MATCHED_VAR_NAME}}: %{{MATCHED_VAR}} (rule %{{rule.id}})',{SCORE}\"\n"
        ));
        let v = run(&crs, "/?q=UNION%20SELECT", &[], "");
        assert_eq!(
            v.matched[0].msg.as_deref(),
            Some("SQLi in ARGS:q: union select (rule 942100)")
        );
    }

    #[test]
    fn scores_every_matching_value_and_reports_attack_families_only() {
        let crs = load(&format!(
            "SecRule ARGS \"@rx (?i)union\\s+select\" \"id:942100,phase:2,block,t:none,t:urlDecodeUni,{SCORE}\"\n\
             SecRule REQUEST_HEADERS:X-Odd \"@streq 1\" \"id:920999,phase:1,block,{SCORE}\"\n"
        ));
        // two arguments match: libmodsecurity runs setvar once per matching value
        let v = run(&crs, "/?a=1%20union%20select&b=UNION%20%20SELECT", &[], "");
        assert_eq!(ids(&v), vec![942100]);
        assert_eq!(
            (v.inbound_score, v.attack_score, v.is_attack),
            (10, 10, true)
        );
        // a protocol rule adds to the score, never makes a report on its own
        let v = run(&crs, "/", &[("X-Odd", "1")], "");
        assert_eq!(ids(&v), vec![920999]);
        assert_eq!(
            (v.inbound_score, v.attack_score, v.is_attack),
            (5, 0, false)
        );
    }

    #[test]
    fn chains_markers_and_exclusions() {
        let crs = load(&format!(
            "SecRule ARGS:skip \"@streq yes\" \"id:942001,phase:2,pass,nolog,skipAfter:END\"\n\
             SecRule ARGS \"@contains evil\" \"id:942110,phase:2,block,chain\"\n\
             \tSecRule REQUEST_METHOD \"@streq POST\" \"{SCORE}\"\n\
             SecRule ARGS|!ARGS:safe \"@contains evil\" \"id:942120,phase:2,block,{SCORE}\"\n\
             SecRule ARGS \"@contains evil\" \"id:942130,phase:2,block,{SCORE}\"\n\
             SecMarker END\n\
             SecRuleRemoveById 942130\n\
             SecRuleUpdateTargetById 942120 \"!ARGS:also_safe\"\n"
        ));
        let v = run(
            &crs,
            "/",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            "q=evil",
        );
        assert_eq!(ids(&v), vec![942110, 942120]);
        // the chain needs POST; a GET matches only 942120
        let v = run(&crs, "/?q=evil", &[], "");
        assert_eq!(ids(&v), vec![942120]);
        // excluded targets
        let v = run(&crs, "/?safe=evil&also_safe=evil", &[], "");
        assert!(ids(&v).is_empty(), "{:?}", ids(&v));
        // skipAfter jumps over every rule up to the marker
        let v = run(&crs, "/?skip=yes&q=evil", &[], "");
        assert!(ids(&v).is_empty(), "{:?}", ids(&v));
    }

    #[test]
    fn folds_configuration_gates_and_keeps_what_a_request_can_change() {
        let crs = load(&format!(
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.level=1,setvar:tx.on=1\"\n\
             SecRule ARGS:raise \"@streq yes\" \"id:2,phase:1,pass,nolog,setvar:tx.level=2\"\n\
             SecRule ARGS:skip \"@streq yes\" \"id:3,phase:1,pass,nolog,skipAfter:M\"\n\
             SecAction \"id:4,phase:1,pass,nolog,setvar:tx.on=2\"\n\
             SecMarker M\n\
             SecRule TX:level \"@lt 2\" \"id:5,phase:2,pass,nolog,skipAfter:END\"\n\
             SecRule ARGS \"@contains evil\" \"id:942100,phase:2,block,{SCORE}\"\n\
             SecMarker END\n\
             SecRule TX:on \"@eq 2\" \"id:6,phase:2,pass,nolog,skipAfter:END2\"\n\
             SecRule ARGS \"@contains evil\" \"id:942200,phase:2,block,{SCORE}\"\n\
             SecMarker END2\n\
             SecRule &TX:unset \"@eq 0\" \"id:7,phase:2,pass,nolog,skipAfter:END3\"\n\
             SecRule ARGS \"@contains evil\" \"id:942300,phase:2,block,{SCORE}\"\n\
             SecMarker END3\n"
        ));
        // folded: the engine's settings SecAction, 1, 4 (runs the same whenever it is reached)
        // and 7 (always jumps); not 5 and 6, which read what rule 2 may change or rule 3 may
        // jump over; 942300 is never reached
        assert_eq!(crs.report().folded, 4, "{:?}", crs.report());
        assert!(ids(&run(&crs, "/?q=evil", &[], "")).is_empty());
        assert_eq!(ids(&run(&crs, "/?q=evil&raise=yes", &[], "")), vec![942100]);
        assert_eq!(
            ids(&run(&crs, "/?q=evil&raise=yes&skip=yes", &[], "")),
            vec![942100, 942200]
        );
        assert_eq!(ids(&run(&crs, "/?q=evil&skip=yes", &[], "")), vec![942200]);
    }

    /// A rule whose first link reads known TX values and matches none of them is folded
    /// however unknowable its actions (they never run); one that matches is not.
    #[test]
    fn a_rule_that_never_matches_is_folded_whatever_its_actions() {
        let crs = load(
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.pl=1,setvar:tx.anomaly_score=0\"\n\
             SecRule ARGS \"@contains evil\" \"id:942100,phase:2,pass,nolog,setvar:tx.pl2=+7\"\n\
             SecRule TX:pl \"@ge 2\" \"id:949061,phase:2,pass,nolog,setvar:'tx.anomaly_score=+%{tx.pl2}'\"\n\
             SecRule TX:pl \"@ge 1\" \"id:949060,phase:2,pass,nolog,setvar:'tx.anomaly_score=+%{tx.pl2}'\"\n",
        );
        // the engine's settings SecAction, 1 and 949061; not 949060 (it matches, and adds
        // what 942100 may have written)
        assert_eq!(crs.report().folded, 3, "{:?}", crs.report());
        assert_eq!(run(&crs, "/?q=evil", &[], "").inbound_score, 7);
        assert_eq!(run(&crs, "/?q=good", &[], "").inbound_score, 0);
    }

    /// An operator argument made of TX values known where the rule runs is expanded and
    /// compiled at load; one that reads what a request may write stays expanded per request.
    #[test]
    fn constant_operator_arguments_are_compiled_at_load() {
        let crs = load(&format!(
            "SecAction \"id:1,phase:1,pass,nolog,setvar:'tx.allowed=GET HEAD'\"\n\
             SecRule REQUEST_METHOD \"!@within %{{tx.allowed}}\" \"id:911100,phase:2,block,{SCORE}\"\n\
             SecRule ARGS:m \"@streq x\" \"id:2,phase:2,pass,nolog,setvar:tx.later=GET\"\n\
             SecRule REQUEST_METHOD \"@within %{{tx.later}}\" \"id:920100,phase:2,block,{SCORE}\"\n"
        ));
        let op_of = |id: u64| matches!(rule(&crs, id).op, Some(rules::Op::Static(_)));
        assert!(op_of(911100), "compiled at load");
        assert!(!op_of(920100), "left to each request");
        assert!(ids(&run(&crs, "/", &[], "")).is_empty());
        assert_eq!(ids(&run(&crs, "/", &[], "body")), vec![911100]);
        assert_eq!(ids(&run(&crs, "/?m=x", &[], "")), vec![920100]);
        assert_eq!(ids(&run(&crs, "/?m=x", &[], "body")), vec![911100]);
    }

    /// A `setvar` value made of TX values known where its rule runs and of the rule's own
    /// `%{rule.*}` is expanded at load; one that reads what a request, or the rule itself, may
    /// write stays expanded per match. The scores and TX come out the same either way.
    #[test]
    fn constant_setvar_values_are_expanded_at_load() {
        let crs = load(
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.points=4,setvar:tx.anomaly_score_pl1=0\"\n\
             SecRule ARGS:m \"@streq x\" \"id:2,phase:1,pass,nolog,setvar:tx.later=3\"\n\
             SecRule ARGS \"@contains evil\" \"id:942100,phase:2,block,msg:'Evil',setvar:'tx.msg=%{rule.msg} %{rule.id}',setvar:'tx.anomaly_score_pl1=+%{tx.points}',setvar:'tx.own=2',setvar:'tx.twice=%{tx.own}',setvar:'tx.mixed=+%{tx.later}'\"\n",
        );
        let values: Vec<Option<&[u8]>> = rule(&crs, 942100)
            .setvars
            .iter()
            .map(|sv| sv.value_literal.as_deref())
            .collect();
        assert_eq!(
            values,
            vec![
                Some(&b"Evil 942100"[..]),
                Some(&b"4"[..]),
                Some(&b"2"[..]),
                // reads what the rule itself writes, and what a request may write
                None,
                None,
            ]
        );
        // the points the rule added, as the score counters are summed
        assert_eq!(run(&crs, "/?a=evil&m=x", &[], "").attack_score, 4);
        let tx = |target: &str| outcome(&crs, target, &[], "").tx;
        let later = tx("/?a=evil&m=x");
        assert_eq!(later.get("msg"), Some(&b"Evil 942100"[..]));
        assert_eq!(later.get("twice"), Some(&b"2"[..]));
        assert_eq!(later.get("mixed"), Some(&b"3"[..]));
        assert_eq!(tx("/?a=evil").get("mixed"), Some(&b"0"[..]));
    }

    /// A `setvar` that writes what the captures dictate (`tx.hn_%{tx.0}=/%{tx.0}/`) takes its
    /// name and value from the memo once the same captures were seen: TX comes out as without
    /// the memo, request after request, also where a template reads a group the capture did
    /// not set (an earlier capture's stands) and where a `setvar` overwrote a digit first.
    #[test]
    fn writes_of_captures_kept_in_the_memo_change_nothing() {
        let rules = "SecRule REQUEST_HEADERS_NAMES \"@rx ^.*$\" \"id:1,phase:1,pass,nolog,capture,t:lowercase,setvar:'tx.hn_%{tx.0}=/%{tx.0}/'\"\n\
             SecRule ARGS:a|ARGS:c \"@rx ^(x)(y)?\" \"id:2,phase:1,pass,nolog,capture,setvar:'tx.two=%{tx.1}-%{tx.2}'\"\n\
             SecRule ARGS:b \"@rx ^(b+)\" \"id:3,phase:1,pass,nolog,capture,setvar:'tx.own=%{tx.1}'\"\n\
             SecRule ARGS:z \"@streq 1\" \"id:4,phase:1,pass,nolog,setvar:tx.0=zero\"\n\
             SecRule ARGS:b \"@rx ^b\" \"id:5,phase:1,pass,nolog,setvar:'tx.after=%{tx.0}'\"\n";
        let memo = load(rules);
        let fresh = load(rules).without_value_memo();
        let tx = |crs: &Crs, target: &str, headers: &[(&str, &str)]| {
            format!("{:?}", outcome(crs, target, headers, "").tx.sorted())
        };
        let headers: [&[(&str, &str)]; 2] = [
            &[("Host", "a"), ("X-Up", "1")],
            &[("x-up", "2"), ("Host", "b")],
        ];
        // each engine's requests in a row (the thread's memo starts afresh when the rule set
        // changes)
        let sequence = |crs: &Crs| {
            let mut out = Vec::new();
            for _round in 0..2 {
                // `c=x` after `a=xy`: group 2 is the earlier capture's
                // `z=1`: rule 4 overwrites TX:0 before rule 5 reads it
                for target in ["/?a=xy&c=x&b=bb", "/?c=x&b=bb", "/?b=bb&z=1", "/?b=b&a=xy"] {
                    for h in headers {
                        out.push(tx(crs, target, h));
                    }
                }
            }
            out
        };
        let seen = sequence(&memo);
        assert_eq!(seen, sequence(&fresh));
        let all = seen.join("\n");
        // the writes were made (the comparison is not between two empty collections)
        for want in [
            "(\"hn_x-up\", [47, 120, 45, 117, 112, 47])",
            "(\"two\", [120, 45, 121])",
            "(\"two\", [120, 45])",
            "(\"after\", [122, 101, 114, 111])",
            "(\"after\", [98, 98])",
        ] {
            assert!(all.contains(want), "{want} in {all}");
        }
    }

    #[test]
    fn ctl_exclusions_apply_at_run_time() {
        let crs = load(&format!(
            "SecRule REQUEST_FILENAME \"@beginsWith /search\" \"id:1000,phase:1,pass,nolog,ctl:ruleRemoveTargetById=942100;ARGS:q\"\n\
             SecRule REQUEST_FILENAME \"@streq /import\" \"id:1001,phase:1,pass,nolog,ctl:ruleRemoveById=942000-942999\"\n\
             SecRule ARGS \"@contains evil\" \"id:942100,phase:2,block,{SCORE}\"\n\
             SecRule &ARGS \"@gt 2\" \"id:942200,phase:2,block,{SCORE}\"\n"
        ));
        assert_eq!(ids(&run(&crs, "/x?q=evil", &[], "")), vec![942100]);
        assert!(ids(&run(&crs, "/search?q=evil", &[], "")).is_empty());
        assert_eq!(ids(&run(&crs, "/search?r=evil", &[], "")), vec![942100]);
        assert!(ids(&run(&crs, "/import?q=evil&a=1&b=2", &[], "")).is_empty());
        assert_eq!(ids(&run(&crs, "/x?a=1&b=2&c=3", &[], "")), vec![942200]);
    }

    #[test]
    fn response_rules_are_skipped_and_unsupported_directives_name_their_line() {
        let crs = load(
            "SecRule RESPONSE_BODY \"@contains x\" \"id:950100,phase:4,block\"\n\
             SecRule ARGS \"@contains y\" \"id:942100,phase:2,block\"\n\
             SecRule REMOTE_ADDR \"@unconditionalMatch\" \"id:910100,phase:2,block,chain\"\n\
             \tSecRule REMOTE_ADDR \"@rbl x.example\" \"t:none\"\n",
        );
        assert_eq!(crs.report().skipped_response, 1);
        // an operator that never matches here, in a chained link: named by its rule's id
        assert_eq!(
            crs.report()
                .never_match
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
            vec![910100]
        );
        // the file's two request rules, plus the engine's two body-processor rules and the
        // rule that sets the paranoia level and threshold
        assert_eq!(crs.report().rules, 5);

        let dir =
            tree("\n\nSecRule ARGS \"@contains y\" \"id:942100,phase:2,block,exec:/bin/x\"\n");
        let err = Crs::load(&CrsSettings::new(dir.path())).expect_err("exec is refused");
        let text = err.to_string();
        assert!(
            text.contains("REQUEST-942-TEST.conf:3") && text.contains("exec"),
            "{text}"
        );

        let mut s = CrsSettings::new(dir.path());
        s.paranoia = 5;
        assert!(
            Crs::load(&s)
                .expect_err("paranoia 5")
                .to_string()
                .contains("1-4")
        );
    }

    /// The prefilter's checks (worked out per rule at load) look at a named entry's values
    /// only, under the rule's pipeline, and at every step of a multiMatch pipeline.
    #[test]
    fn prefilter_checks_see_named_entries_and_multimatch_steps() {
        let crs = load(&format!(
            "SecRule REQUEST_HEADERS:User-Agent \"@rx sqlmap\" \"id:913100,phase:1,block,t:none,t:lowercase,{SCORE}\"\n\
             SecRule ARGS|XML:/* \"@rx <script\" \"id:941100,phase:2,block,t:none,t:urlDecodeUni,{SCORE}\"\n\
             SecRule ARGS \"@rx ^%41$\" \"id:942100,phase:2,block,t:none,t:urlDecodeUni,multiMatch,{SCORE}\"\n"
        ));
        // the literal in another header, or in no header
        assert!(ids(&run(&crs, "/", &[("Referer", "sqlmap")], "")).is_empty());
        assert!(ids(&run(&crs, "/", &[], "")).is_empty());
        assert_eq!(
            ids(&run(
                &crs,
                "/",
                &[("Referer", "x"), ("user-agent", "SQLMap/1.7")],
                ""
            )),
            vec![913100]
        );
        // after the pipeline only (the argument %253cscript decodes once to %3cscript), and
        // in XML text
        assert!(ids(&run(&crs, "/?q=%25253cscript", &[], "")).is_empty());
        assert_eq!(ids(&run(&crs, "/?q=%253cscript", &[], "")), vec![941100]);
        assert_eq!(
            ids(&run(
                &crs,
                "/",
                &[("Content-Type", "text/xml")],
                "<a>&lt;script&gt;</a>"
            )),
            vec![941100]
        );
        // multiMatch: the value before decoding holds the literal, after it does not
        assert_eq!(ids(&run(&crs, "/?q=%2541", &[], "")), vec![942100]);
    }

    #[test]
    fn a_folded_run_keeps_the_last_write_of_a_name_and_takes_its_jumps() {
        let crs = load(&format!(
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.a=1\"\n\
             SecAction \"id:2,phase:1,pass,nolog,setvar:tx.a=2,setvar:tx.b=1\"\n\
             SecRule TX:b \"@eq 1\" \"id:3,phase:1,pass,nolog,skipAfter:M\"\n\
             SecAction \"id:4,phase:1,pass,nolog,setvar:tx.a=3\"\n\
             SecMarker M\n\
             SecRule TX:a \"@eq 2\" \"id:942100,phase:1,block,{SCORE}\"\n"
        ));
        // 1, 2 and 3 are one run: it ends at 942100, past the marker, with a = 2
        let phase = &crs.compiled.phases[0];
        let first = phase
            .iter()
            .position(|i| matches!(i, rules::Item::Rule(r) if r.id == 1))
            .expect("rule 1");
        let folded = crs.compiled.folded_runs[0][first]
            .as_ref()
            .expect("a run from rule 1");
        assert!(
            matches!(phase.get(folded.next), Some(rules::Item::Rule(r)) if r.id == 942100),
            "{folded:?}"
        );
        assert_eq!(ids(&run(&crs, "/", &[], "")), vec![942100]);
    }

    /// MATCHED_VAR and MATCHED_VARS a folded rule leaves (kept by reference, see
    /// `eval::State::matched_folded`) are what the next evaluated rule's targets see.
    #[test]
    fn the_next_rule_sees_what_a_folded_rule_matched() {
        for (target, value, matches) in [
            ("MATCHED_VAR", "xyz", true),
            ("MATCHED_VAR_NAME", "TX:a", true),
            ("MATCHED_VARS", "xyz", true),
            ("MATCHED_VARS_NAMES", "TX:a", true),
            ("MATCHED_VAR", "nope", false),
        ] {
            let crs = load(&format!(
                "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.a=xyz\"\n\
                 SecRule TX:a \"@rx xyz\" \"id:2,phase:1,pass,nolog\"\n\
                 SecRule {target} \"@streq {value}\" \"id:3,phase:1,pass,nolog,chain\"\n\
                 SecRule REQUEST_URI \"@contains /\" \"setvar:tx.seen=%{{MATCHED_VAR_NAME}}\"\n\
                 SecRule TX:seen \"@streq REQUEST_URI\" \"id:942100,phase:1,block,{SCORE}\"\n"
            ));
            let rule_2_folded = crs.compiled.phases[0]
                .iter()
                .any(|i| matches!(i, rules::Item::Rule(r) if r.id == 2 && r.folded.is_some()))
                || crs.compiled.folded_runs[0].iter().any(Option::is_some);
            assert!(
                rule_2_folded,
                "rule 2 is not folded: the test tests nothing"
            );
            let want: Vec<u64> = if matches { vec![942100] } else { vec![] };
            assert_eq!(ids(&run(&crs, "/", &[], "")), want, "{target} {value}");
        }
    }

    /// A logging rule's evidence is each link's match, read back once the whole chain
    /// matched; a chain that failed after its first link matched leaves none behind.
    #[test]
    fn evidence_is_each_link_of_a_chain_that_matched() {
        let crs = load(&format!(
            "SecRule REQUEST_HEADERS_NAMES \"@rx ^.*$\" \"id:920450,phase:2,block,t:none,t:lowercase,chain\"\n\
             SecRule REQUEST_METHOD \"@streq DELETE\" \"{SCORE}\"\n\
             SecRule ARGS:q \"@rx union\" \"id:942100,phase:2,block,t:none,t:urlDecodeUni,t:lowercase,chain\"\n\
             SecRule REQUEST_METHOD \"@streq GET\" \"{SCORE}\"\n"
        ));
        let o = outcome(
            &crs,
            "/?q=UNION%20Select",
            &[("X-A", "1"), ("X-B", "2")],
            "",
        );
        let ids: Vec<u64> = o.matched.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![942100]);
        let evidence: Vec<(&str, &[u8], &[&str])> = o.matched[0]
            .evidence
            .iter()
            .map(|e| (e.variable.as_str(), &e.value[..], &e.transforms[..]))
            .collect();
        assert_eq!(
            evidence,
            vec![
                (
                    "ARGS:q",
                    &b"union select"[..],
                    &["urlDecodeUni", "lowercase"][..]
                ),
                ("REQUEST_METHOD", &b"GET"[..], &[][..]),
            ]
        );
    }

    /// A `t:lowercase` or `t:uppercase` step shares its input's prefilter scan (the scan
    /// ignores ASCII case): rules behind such a step still see the changed value, still run
    /// when their literal is there in any case, and are still skipped when it is not.
    #[test]
    fn a_change_of_case_shares_its_inputs_prefilter_scan() {
        let crs = load(&format!(
            "SecRule ARGS \"@rx foobar\" \"id:942100,phase:2,block,t:none,t:urlDecodeUni,t:lowercase,{SCORE}\"\n\
             SecRule ARGS \"@rx BAZQUX\" \"id:942200,phase:2,block,t:none,t:uppercase,{SCORE}\"\n\
             SecRule ARGS \"@rx (?i)zzyzx\" \"id:942300,phase:2,block,t:none,t:lowercase,t:uppercase,{SCORE}\"\n"
        ));
        let c = &crs.compiled;
        // every case-only node scans as its nearest other ancestor, and no other node does
        let case_only = |n: &rules::Node| {
            matches!(
                n.step,
                transform::Transform::Lowercase | transform::Transform::Uppercase
            )
        };
        let mut shared = 0;
        for (i, n) in c.nodes.iter().enumerate().skip(1) {
            let scan = c.scan_nodes[i] as usize;
            if case_only(n) {
                assert_eq!(scan, c.scan_nodes[n.parent as usize] as usize, "node {i}");
                shared += 1;
            } else {
                assert_eq!(scan, i, "node {i}");
            }
        }
        assert_eq!(
            shared, 4,
            "the rules' case-only steps: the test tests nothing"
        );
        for (target, want) in [
            ("/?a=FooBar", vec![942100]),
            ("/?a=F%4FOBAR", vec![942100]),
            ("/?a=bazqux", vec![942200]),
            ("/?a=BaZqUx&b=ZZYZX", vec![942200, 942300]),
            ("/?a=foo%20bar&b=baz", vec![]),
        ] {
            assert_eq!(ids(&run(&crs, target, &[], "")), want, "{target}");
        }
    }

    /// A top rule whose operator's verdict depends on the value alone is jumped over when it
    /// matches none of its values: the rules the prefilter cannot answer for (`@detectSQLi`,
    /// an `@rx` without literals, a negated operator), and those with literals, whose operator
    /// runs on the values holding one (a value with the literal that the pattern does not
    /// match leaves the rule out). Chained links are left as they were. (Debug builds check
    /// every jump.)
    #[test]
    fn operator_verdicts_stand_in_for_literals() {
        let crs = load(&format!(
            "SecRule ARGS \"@validateByteRange 32-126\" \"id:920270,phase:2,block,t:none,{SCORE}\"\n\
             SecRule ARGS|REQUEST_HEADERS:User-Agent \"@detectSQLi\" \"id:942100,phase:2,block,capture,t:none,t:urlDecodeUni,msg:'%{{tx.0}}',{SCORE}\"\n\
             SecRule ARGS \"@rx ^\\d+$\" \"id:942200,phase:2,block,t:none,t:urlDecodeUni,multiMatch,{SCORE}\"\n\
             SecRule ARGS \"!@rx ^\\w+$\" \"id:942300,phase:2,block,t:none,{SCORE}\"\n\
             SecRule REQUEST_METHOD \"@rx ^G\" \"id:942400,phase:2,block,chain,{SCORE}\"\n\
             \tSecRule ARGS \"@rx ^\\d\" \"t:none\"\n\
             SecRule ARGS \"@rx select\\s+\\d\" \"id:942500,phase:2,block,t:none,t:urlDecodeUni,{SCORE}\"\n"
        ));
        let c = &crs.compiled;
        let with_verdicts: Vec<u64> = c
            .verdicts
            .iter()
            .filter_map(
                |&(phase, at)| match &c.phases[phase as usize][at as usize] {
                    rules::Item::Rule(r) => {
                        // jumped over unless a value matches
                        let always = c.phase_always[phase as usize][at as usize / 64];
                        assert_eq!(always & (1 << (at % 64)), 0, "{}", r.id);
                        Some(r.id)
                    }
                    rules::Item::Marker(_) => None,
                },
            )
            .collect();
        // 200000 and 200001 (the body processors by Content-Type) have literals too
        assert_eq!(
            with_verdicts,
            vec![
                200000, 200001, 920270, 942100, 942200, 942300, 942400, 942500
            ]
        );
        for (target, ua, want) in [
            ("/?a=hello", "", vec![]),
            ("/?a=1%27%20or%201%3D1--", "", vec![942100, 942300, 942400]),
            // multiMatch: only the value decoded by the rule (ARGS are decoded once) is digits
            ("/?a=%2531%2532", "", vec![942200, 942300]),
            ("/", "1' or 1=1--", vec![942100]),
            ("/?a=caf%C3%A9", "", vec![920270, 942300]),
            // the literal without the pattern, then both
            ("/?a=select%20x", "", vec![942300]),
            ("/?a=select%201", "", vec![942300, 942500]),
        ] {
            let headers: Vec<(&str, &str)> = if ua.is_empty() {
                vec![("Referer", "1' or 1=1--")]
            } else {
                vec![("User-Agent", ua)]
            };
            let v = run(&crs, target, &headers, "");
            assert_eq!(ids(&v), want, "{target} {ua:?}");
            if want.first() == Some(&942100) {
                // the capture (the fingerprint) as the rule itself would have made it
                assert!(v.matched[0].msg.as_ref().is_some_and(|m| !m.is_empty()));
            }
        }
    }

    /// A `TX:/regex/` target sees CRS's defaults (shared between requests, their matching
    /// names listed once per rule set) and the request's own writes, in name order, and not a
    /// default the request unset; the same on a second request that reuses the list.
    #[test]
    fn a_tx_regex_sees_defaults_and_writes_but_not_what_was_unset() {
        let crs = load(&format!(
            "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.hdr_a=1,setvar:tx.hdr_c=2,setvar:tx.other=3\"\n\
             SecRule REQUEST_HEADERS_NAMES \"@rx ^x-\" \"id:2,phase:1,pass,nolog,capture,t:lowercase,setvar:'tx.hdr_%{{tx.0}}=9'\"\n\
             SecAction \"id:3,phase:1,pass,nolog,setvar:!tx.hdr_c\"\n\
             SecRule TX:/^hdr_/ \"@rx .\" \"id:942100,phase:1,block,{SCORE}\"\n"
        ));
        let base_laid = crs.compiled.folded_runs[0]
            .iter()
            .flatten()
            .any(|r| r.tx.is_some());
        assert!(
            base_laid,
            "no folded run lays TX defaults: the test tests nothing"
        );
        let vars = |headers: &[(&str, &str)]| -> Vec<String> {
            let v = run(&crs, "/", headers, "");
            v.matched
                .iter()
                .filter(|m| m.id == 942100)
                .flat_map(|m| m.evidence.iter().map(|e| e.variable.clone()))
                .collect()
        };
        for _ in 0..2 {
            assert_eq!(
                vars(&[("X-Foo", "1"), ("Accept", "*/*")]),
                ["TX:hdr_a", "TX:hdr_x-"]
            );
            assert_eq!(vars(&[("Accept", "*/*")]), ["TX:hdr_a"]);
        }
    }

    /// Taking the folded rules from one evaluated rule to the next at once (`fold::runs`)
    /// changes nothing a request ends with: matched rules in full, and every TX variable.
    #[test]
    fn folded_runs_change_no_verdict_and_no_tx_variable() {
        if without_debian_crs("folded_runs_change_no_verdict_and_no_tx_variable") {
            return;
        }
        type Request<'a> = (&'a [u8], &'a str, Vec<(&'a str, &'a str)>, &'a str);
        let requests: [Request; 6] = [
            (
                b"GET",
                "/search?q=shoes",
                vec![("Host", "shop"), ("Accept", "*/*")],
                "",
            ),
            (
                b"GET",
                "/item?id=1%27%20OR%201=1--",
                vec![("Host", "shop")],
                "",
            ),
            (b"GET", "/../../etc/passwd", vec![("Host", "10.0.0.1")], ""),
            (
                b"TRACE",
                "/x.bak",
                vec![("Proxy", "x"), ("Range", "bytes=0-,1-2,3-4,5-6,7-8,9-")],
                "",
            ),
            (
                b"POST",
                "/a",
                vec![
                    ("Host", "shop"),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                "s=%3Cscript%3Ealert(1)%3C/script%3E&cmd=;cat%20/etc/passwd",
            ),
            (
                b"POST",
                "/api",
                vec![("Host", "shop"), ("Content-Type", "application/json")],
                r#"{"a":"<svg onload=alert(1)>","b":[1,"union select"]}"#,
            ),
        ];
        for pl in 1..=4 {
            let mut s = CrsSettings::new(DEBIAN_CRS_DIR);
            s.paranoia = pl;
            let runs = Crs::load(&s).expect("CRS 3.3.4 loads");
            assert!(
                runs.compiled.folded_runs[0].iter().any(Option::is_some),
                "PL{pl}: no folded run in phase 1"
            );
            let mut each = Crs::load(&s).expect("CRS 3.3.4 loads");
            each.compiled.folded_runs = Default::default();
            for (method, target, headers, body) in &requests {
                let h: Vec<(&[u8], &[u8])> = headers
                    .iter()
                    .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
                    .collect();
                let input = RequestInput {
                    method,
                    target: target.as_bytes(),
                    protocol: b"HTTP/1.1",
                    headers: &h,
                    body: body.as_bytes(),
                    remote_addr: "192.0.2.1",
                };
                let outcome = |crs: &Crs| {
                    let o = eval::run(&crs.compiled, &input);
                    (format!("{:?}", o.matched), format!("{:?}", o.tx.sorted()))
                };
                let (got, want) = (outcome(&runs), outcome(&each));
                assert!(
                    want.1.contains("anomaly_score"),
                    "PL{pl} {target}: {}",
                    want.1
                );
                assert_eq!(got, want, "PL{pl} {target}");
            }
        }
    }

    /// The prefilter holds the literals of the rules a request can evaluate, and only those:
    /// each literal of a rule link, scanned on its own, sets the link's bit exactly when
    /// folding left its rule to be evaluated (at PL1 the rules of PL2-PL4 are jumped over on
    /// every request, and their literals left out).
    #[test]
    fn the_prefilter_holds_the_literals_of_evaluated_rules_only() {
        if without_debian_crs("the_prefilter_holds_the_literals_of_evaluated_rules_only") {
            return;
        }
        let mut kept_at = Vec::new();
        for pl in [1, 4] {
            let mut s = CrsSettings::new(DEBIAN_CRS_DIR);
            s.paranoia = pl;
            let crs = Crs::load(&s).expect("CRS 3.3.4 loads");
            let c = &crs.compiled;
            let evaluated = c.evaluated_bits();
            let pf = c.prefilter.as_ref().expect("a prefilter");
            let words = (c.prefilter_bits as usize).div_ceil(64);
            let mut kept = 0;
            for (bit, lits) in c.literals() {
                for l in lits {
                    let mut bits = vec![0u64; words];
                    pf.scan(l, &mut bits);
                    let set = bits[*bit as usize / 64] & (1 << (bit % 64)) != 0;
                    assert_eq!(
                        set,
                        evaluated.contains(bit),
                        "PL{pl}: bit {bit}, literal {:?}",
                        l.escape_ascii().to_string()
                    );
                }
                kept += usize::from(evaluated.contains(bit));
            }
            assert!(kept > 100, "PL{pl}: {kept} rule links keep their literals");
            kept_at.push((kept, c.literals().len()));
        }
        let ((pl1, all), (pl4, _)) = (kept_at[0], kept_at[1]);
        assert!(pl1 < pl4 && pl4 <= all, "PL1 {pl1}, PL4 {pl4}, of {all}");
    }

    /// The memo of earlier requests' values (transformations, prefilter answers, operator
    /// results with their captures) changes no verdict: requests sharing values, run in turn
    /// through two rule sets on one thread, give exactly what fresh evaluations give.
    #[test]
    fn the_value_memo_changes_no_verdict() {
        if without_debian_crs("the_value_memo_changes_no_verdict") {
            return;
        }
        let load_pl = |pl: u8| {
            let mut s = CrsSettings::new(DEBIAN_CRS_DIR);
            s.paranoia = pl;
            Crs::load(&s).expect("CRS 3.3.4 loads")
        };
        let memo = [load_pl(1), load_pl(2)];
        let fresh = [
            load_pl(1).without_value_memo(),
            load_pl(2).without_value_memo(),
        ];
        let ua = (
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0",
        );
        type Request<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
        let requests: [Request; 8] = [
            ("/search?q=shoes&page=2", vec![("Host", "shop"), ua], ""),
            // the same argument value as an attack, twice, then under another name
            ("/item?id=1%27%20OR%201=1--", vec![("Host", "shop"), ua], ""),
            (
                "/item?id=1%27%20OR%201=1--&x=1",
                vec![("Host", "shop"), ua],
                "",
            ),
            (
                "/item?ref=1%27%20OR%201=1--",
                vec![("Host", "shop"), ("Referer", "1' OR 1=1--")],
                "",
            ),
            // a value seen as a header, then as a cookie and as a body argument
            (
                "/a",
                vec![("Host", "shop"), ("Cookie", "s=<script>alert(1)</script>")],
                "",
            ),
            (
                "/a",
                vec![
                    ("Host", "shop"),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                "s=%3Cscript%3Ealert(1)%3C/script%3E&cmd=;cat%20/etc/passwd",
            ),
            ("/../../etc/passwd", vec![("Host", "shop"), ua], ""),
            ("/search?q=shoes&page=2", vec![("Host", "shop"), ua], ""),
        ];
        // each engine's requests in a row: the thread's memo starts afresh when the rule set
        // changes, so alternating them would never reuse it across requests
        let sequence = |crs: &Crs| {
            let mut out = Vec::new();
            for round in 0..2 {
                for (target, headers, body) in &requests {
                    let o = outcome(crs, target, headers, body);
                    out.push(format!(
                        "round {round} {target}: {:?} {:?}",
                        o.matched,
                        o.tx.sorted()
                    ));
                }
            }
            out
        };
        for pl in [0, 1] {
            let (got, want) = (sequence(&memo[pl]), sequence(&fresh[pl]));
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "PL{}", pl + 1);
            }
            assert_eq!(got.len(), want.len());
        }
        // the attacks were seen (the comparison is not between two empty verdicts)
        let v = run(&memo[0], requests[1].0, &requests[1].1, "");
        assert!(v.is_attack, "{:?}", ids(&v));
    }

    /// What CRS 4.x request rules write that CRS 3.3 does not, each in a rule of our own (no
    /// CRS 4 release can be installed from the registries CI reaches): CRS 4's score variables
    /// (`blocking_inbound_anomaly_score`), `t:normalisePath` (British spelling), `XML://@*`, a
    /// cookie key regex with `\xHH` escapes, a chained rule with no action string, an operator
    /// argument expanding a request header, a `TX:/UPPER_CASE/` key regex over names `setvar`
    /// wrote in lower case, `\x{HH}` and `\z`, `(?is)`, and UTF-8 bytes in a class.
    #[test]
    fn loads_and_runs_what_crs4_rules_write() {
        let rules = r#"
SecComponentSignature "OWASP_CRS/4.0.0"
SecRule &TX:critical_anomaly_score "@eq 0" "id:901140,phase:1,pass,nolog,setvar:'tx.critical_anomaly_score=5'"
SecAction "id:901200,phase:1,pass,t:none,nolog,setvar:'tx.blocking_inbound_anomaly_score=0',setvar:'tx.detection_inbound_anomaly_score=0',setvar:'tx.inbound_anomaly_score_pl1=0',setvar:'tx.early_blocking=1',setvar:'tx.probe_types_a=text/html'"
SecRule REQBODY_PROCESSOR "!@rx (?:URLENCODED|MULTIPART|XML|JSON)" "id:901340,phase:1,pass,nolog,noauditlog,ctl:forceRequestBodyVariable=On"
SecRule TX:DETECTION_PARANOIA_LEVEL "@lt 1" "id:930011,phase:1,pass,nolog,skipAfter:END-PROBES"
SecRule REQUEST_FILENAME "@rx /etc/passwd$" "id:930901,phase:2,block,t:none,t:utf8toUnicode,t:urlDecodeUni,t:normalisePath,t:lowercase,msg:'LFI',severity:'CRITICAL',setvar:'tx.inbound_anomaly_score_pl1=+%{tx.critical_anomaly_score}'"
SecRule XML://@* "@rx (?i)javascript:" "id:941901,phase:2,block,t:none,msg:'XSS in an attribute',severity:'CRITICAL',setvar:'tx.inbound_anomaly_score_pl1=+%{tx.critical_anomaly_score}'"
SecRule REQUEST_COOKIES:/\x22?\x24Version/ "@rx ^1$" "id:921901,phase:2,block,t:none,msg:'cookie $Version',severity:'CRITICAL',setvar:'tx.inbound_anomaly_score_pl1=+%{tx.critical_anomaly_score}'"
SecRule REQUEST_HEADERS:Referer "!@endsWith .%{request_headers.host}/" "id:920901,phase:1,pass,t:none,log,msg:'foreign referer'"
SecRule TX:/PROBE_TYPES_*/ "@rx html" "id:922901,phase:2,pass,t:none,log,msg:'tx key regex'"
SecRule ARGS "@rx \x{bc}\z" "id:942901,phase:2,block,t:none,msg:'byte at the end',severity:'CRITICAL',setvar:'tx.inbound_anomaly_score_pl1=+%{tx.critical_anomaly_score}'"
SecRule ARGS "@rx (?is)a.b" "id:942902,phase:2,block,t:none,msg:'dot and newline',severity:'CRITICAL',setvar:'tx.inbound_anomaly_score_pl1=+%{tx.critical_anomaly_score}'"
SecRule ARGS "@rx [´’‘]x" "id:942903,phase:2,block,t:none,msg:'quote bytes',severity:'CRITICAL',setvar:'tx.inbound_anomaly_score_pl1=+%{tx.critical_anomaly_score}'"
SecMarker "END-PROBES"
SecAction "id:949052,phase:2,pass,t:none,nolog,setvar:'tx.blocking_inbound_anomaly_score=+%{tx.inbound_anomaly_score_pl1}'"
SecRule TX:BLOCKING_INBOUND_ANOMALY_SCORE "@ge 5" "id:949111,phase:2,pass,t:none,log,msg:'early blocking',chain"
    SecRule TX:EARLY_BLOCKING "@eq 1"
"#;
        let crs = load(rules);
        let host = ("Host", "shop.example");
        // nothing to see: the score is CRS 4's, and zero
        let v = run(&crs, "/index.html?q=hello", &[host], "");
        assert_eq!(ids(&v), vec![922901], "only the TX key regex matches");
        assert_eq!((v.inbound_score, v.is_attack), (0, false));
        // path normalised (British spelling), then the chained rule without actions
        let v = run(&crs, "/a/../ETC/./passwd", &[host], "");
        assert_eq!(ids(&v), vec![930901, 922901, 949111]);
        assert_eq!((v.inbound_score, v.attack_score, v.is_attack), (5, 5, true));
        // an XML attribute, read through XML://@*
        let v = run(
            &crs,
            "/api",
            &[host, ("Content-Type", "text/xml")],
            r#"<r a="JavaScript:alert(1)"><b>text</b></r>"#,
        );
        assert!(ids(&v).contains(&941901), "{:?}", ids(&v));
        // a cookie named $Version, through the key regex's \x24
        let v = run(&crs, "/", &[host, ("Cookie", "$Version=1; sid=2")], "");
        assert!(ids(&v).contains(&921901), "{:?}", ids(&v));
        // the operator's argument expands the request's Host
        let v = run(
            &crs,
            "/",
            &[host, ("Referer", "https://www.shop.example/")],
            "",
        );
        assert!(!ids(&v).contains(&920901), "{:?}", ids(&v));
        let v = run(
            &crs,
            "/",
            &[host, ("Referer", "https://elsewhere.test/")],
            "",
        );
        assert!(ids(&v).contains(&920901), "{:?}", ids(&v));
        // \x{bc} is the byte 0xBC, \z the very end; (?is) lets `.` take a newline
        let v = run(&crs, "/?q=a%BC&r=A%0AB", &[host], "");
        assert_eq!(ids(&v), vec![922901, 942901, 942902, 949111]);
        let v = run(&crs, "/?q=a%BCz&r=A%0A%0AB", &[host], "");
        assert_eq!(ids(&v), vec![922901]);
        // a class of UTF-8 quote characters is a class of their bytes, as in PCRE without UTF
        let v = run(&crs, "/?q=%E2%80%99x", &[host], "");
        assert!(ids(&v).contains(&942903), "{:?}", ids(&v));
        let v = run(&crs, "/?q=ax", &[host], "");
        assert!(!ids(&v).contains(&942903), "{:?}", ids(&v));
    }

    #[test]
    fn loads_debians_crs_when_installed() {
        if without_debian_crs("loads_debians_crs_when_installed") {
            return;
        }
        for pl in 1..=4 {
            let mut s = CrsSettings::new(DEBIAN_CRS_DIR);
            s.paranoia = pl;
            let crs = Crs::load(&s).expect("CRS 3.3.4 loads");
            assert!(crs.report().rules > 500, "{:?}", crs.report());
            let v = run(
                &crs,
                "/?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
                &[("Host", "x")],
                "",
            );
            assert!(
                v.is_attack && ids(&v).contains(&942100),
                "PL{pl}: {:?}",
                ids(&v)
            );
            let v = run(
                &crs,
                "/index.html?page=2",
                &[
                    ("Host", "x"),
                    ("Accept", "*/*"),
                    ("User-Agent", "Mozilla/5.0"),
                ],
                "",
            );
            assert!(!v.is_attack, "PL{pl}: {:?}", ids(&v));
        }
    }
}
