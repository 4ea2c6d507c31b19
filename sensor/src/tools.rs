//! `--check-rules` and `--explain`: the sensor's rule tools for operators tuning CRS.

use std::io::Read;

use anyhow::{Context as _, bail};
use palisade_sensor::config::Config;
use palisade_sensor::detect::crs::{self, Verdict};
use palisade_sensor::http::{ParseLimits, Parsed, parse_request};

/// Largest request `--explain` reads.
const MAX_EXPLAIN_BYTES: usize = 4 * 1024 * 1024;

/// Loads every rule, prints what was loaded and skipped, exits.
pub fn check_rules(config: &Config) -> anyhow::Result<()> {
    let detector = palisade_sensor::load_detector(config).context("rules do not load")?;
    println!("built-in rules: {}", detector.rule_count());
    let Some(engine) = detector.crs() else {
        println!("CRS: off (set --crs-dir or [detect] crs_dir)");
        return Ok(());
    };
    let s = engine.settings();
    let r = engine.report();
    println!(
        "CRS: {} (paranoia {}, anomaly threshold {})",
        s.dir.display(),
        s.paranoia,
        s.threshold
    );
    for f in &r.files {
        println!("  loaded {}", f.display());
    }
    println!("  request rules compiled: {}", r.rules);
    println!(
        "  response/logging-phase rules skipped: {}",
        r.skipped_response
    );
    println!("  rules removed by exclusions: {}", r.removed);
    println!(
        "  rules evaluated once at load (the same on every request): {}",
        r.folded
    );
    println!(
        "  @rx/@pm with a literal prefilter: {} ({} in rules a request can evaluate), without: {}; @rx run by PCRE2: {}",
        r.prefiltered, r.prefiltered_evaluated, r.unfiltered, r.pcre_regexes
    );
    println!(
        "  @rx with their whole DFA built at load: {} (the others build theirs as they search)",
        r.whole_dfa_regexes
    );
    println!(
        "  rules skipped by their operator's verdict per value: {} ({} of them without a prefilter)",
        r.verdicts, r.verdicts_unfiltered
    );
    for (id, why) in &r.never_match {
        println!("  rule {id} never matches here: {why}");
    }
    for w in &r.warnings {
        println!("  warning: {w}");
    }
    Ok(())
}

/// Reads a raw request on stdin and prints what matched.
pub fn explain(config: &Config) -> anyhow::Result<()> {
    let detector = palisade_sensor::load_detector(config).context("rules do not load")?;
    let mut raw = Vec::new();
    std::io::stdin()
        .take(MAX_EXPLAIN_BYTES as u64)
        .read_to_end(&mut raw)
        .context("reading the request from stdin")?;
    // a request typed by hand often ends its lines with LF alone: accepted as servers do
    let limits = ParseLimits {
        max_body: MAX_EXPLAIN_BYTES,
        ..ParseLimits::default()
    };
    let request = match parse_request(&raw, &limits) {
        Parsed::Complete { request, .. } => request,
        Parsed::Partial => {
            bail!(
                "stdin holds an incomplete request (head without its blank line, or a body shorter than Content-Length)"
            )
        }
        Parsed::Invalid(e) => bail!("stdin is not an HTTP request: {e}"),
    };
    println!("{} {}", request.method, request.target);
    let builtin = detector.inspect_builtin(&request);
    if builtin.is_empty() {
        println!("built-in rules: no match");
    }
    for d in &builtin {
        println!(
            "built-in {} ({}, {}) at {}: {}",
            d.rule_id, d.category, d.severity, d.location, d.evidence
        );
    }
    let Some(verdict) = detector.crs_verdict(&request) else {
        println!("CRS: off");
        return Ok(());
    };
    print_verdict(
        &verdict,
        detector
            .crs()
            .map_or(crs::DEFAULT_THRESHOLD, |c| c.settings().threshold),
    );
    Ok(())
}

fn print_verdict(v: &Verdict, threshold: i64) {
    if v.matched.is_empty() {
        println!("CRS: no rule matched");
    }
    for m in &v.matched {
        let family = if crs::is_attack_family(m.id) {
            "attack"
        } else {
            "protocol/other"
        };
        println!(
            "CRS {} (+{} points, {family}): {}",
            m.id,
            m.points,
            m.msg.as_deref().unwrap_or("")
        );
        for e in &m.evidence {
            let t = if e.transforms.is_empty() {
                "none".to_string()
            } else {
                e.transforms.join(",")
            };
            println!(
                "    {} after t:{t} = {:?}",
                e.variable,
                String::from_utf8_lossy(&e.value)
            );
        }
    }
    println!(
        "CRS inbound score {} (attack families {}), threshold {threshold}: {}",
        v.inbound_score,
        v.attack_score,
        if v.is_attack {
            "REPORTED"
        } else {
            "not reported"
        }
    );
}
