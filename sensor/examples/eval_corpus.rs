//! Detection quality on a labelled corpus.
//!
//! Runs every request of a labelled `requests.jsonl` (one JSON request per line, read as
//! `palisade_tests::corpus::CorpusRequest`) through the HTTP parser and the built-in detector,
//! prints the detection rate per attack category and the false positives per benign kind, and
//! writes `bench/results/detector_corpus.json`.
//!
//! ```text
//! cargo run --release -p palisade-sensor --example eval_corpus -- [--corpus DIR] [--out FILE]
//!     [--misses N] [--fps N] [--min-severity low|medium|high|critical]
//!     [--crs-dir DIR [--paranoia N] [--mode builtin|crs|combined] [--verdicts FILE] [--dump FILE]
//!      [--no-value-memo]]
//! ```
//! With `--crs-dir` the OWASP Core Rule Set runs too: `--mode crs` counts a request as
//! detected when CRS alone reports it, `combined` (the default with CRS) when either does,
//! `builtin` ignores CRS. `--verdicts` writes one JSON line per request with the CRS rule ids
//! that matched and the inbound score, in the format of `bench/modsec/crs_driver.c`, for
//! `bench/crs_compare.py`. `--dump FILE` writes every CRS verdict in full (matched rules in
//! order with their points, messages and evidence, and the scores), one line per request: two
//! builds of the engine agree when their dumps are byte-identical. `--no-value-memo` turns off
//! the engine's memo of values seen in earlier requests (every request is worked afresh).
//! The corpus directory defaults to `$PALISADE_CORPUS`, then `../shared/corpus` relative to the
//! workspace root.

// the sensor binary's allocator, so that the figures are the sensor's
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use palisade_sensor::detect::Detector;
use palisade_sensor::detect::crs::{Crs, CrsSettings};
use palisade_sensor::http::{ParseLimits, Parsed, parse_request};
use palisade_tests::corpus::CorpusRequest;
use palisade_wire::Severity;
use serde_json::json;

#[derive(Default)]
struct Tally {
    total: u64,
    hit: u64,
    examples: Vec<String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn main() -> anyhow::Result<()> {
    let mut corpus: Option<PathBuf> = std::env::var_os("PALISADE_CORPUS").map(PathBuf::from);
    let mut out = workspace_root().join("bench/results/detector_corpus.json");
    let mut show_misses = 0usize;
    let mut show_fps = 0usize;
    let mut min_severity = Severity::Low;
    let mut crs_dir: Option<PathBuf> = None;
    let mut paranoia = 1u8;
    let mut mode: Option<String> = None;
    let mut verdicts_path: Option<PathBuf> = None;
    let mut dump_path: Option<PathBuf> = None;
    let mut value_memo = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--corpus" => corpus = Some(PathBuf::from(val()?)),
            "--out" => out = PathBuf::from(val()?),
            "--misses" => show_misses = val()?.parse()?,
            "--fps" => show_fps = val()?.parse()?,
            "--min-severity" => min_severity = val()?.parse()?,
            "--crs-dir" => crs_dir = Some(PathBuf::from(val()?)),
            "--paranoia" => paranoia = val()?.parse()?,
            "--mode" => mode = Some(val()?),
            "--verdicts" => verdicts_path = Some(PathBuf::from(val()?)),
            "--dump" => dump_path = Some(PathBuf::from(val()?)),
            "--no-value-memo" => value_memo = false,
            other => bail!("unknown argument {other}"),
        }
    }
    let corpus = corpus.unwrap_or_else(|| workspace_root().join("../shared/corpus"));
    let file = corpus.join("requests.jsonl");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading {} (set PALISADE_CORPUS)", file.display()))?;

    let mut detector = Detector::builtin()?;
    let mut limits = ParseLimits::default();
    let mode = mode.unwrap_or_else(|| {
        if crs_dir.is_some() {
            "combined"
        } else {
            "builtin"
        }
        .into()
    });
    if let Some(dir) = &crs_dir {
        let mut settings = CrsSettings::new(dir);
        settings.paranoia = paranoia;
        let load = Instant::now();
        let mut crs =
            Crs::load(&settings).with_context(|| format!("loading CRS from {}", dir.display()))?;
        if !value_memo {
            crs = crs.without_value_memo();
        }
        eprintln!(
            "CRS loaded in {:.2}s: {} request rules, {} response rules skipped",
            load.elapsed().as_secs_f64(),
            crs.report().rules,
            crs.report().skipped_response
        );
        detector = detector.with_crs(std::sync::Arc::new(crs));
        // CRS sees whole bodies (the sensor hands it its first body window)
        limits.max_body = 1 << 20;
    } else if mode != "builtin" {
        bail!("--mode {mode} needs --crs-dir");
    }
    let mut verdicts = match &verdicts_path {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut dump = match &dump_path {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut attacks: BTreeMap<String, Tally> = BTreeMap::new();
    let mut benign: BTreeMap<String, Tally> = BTreeMap::new();
    let mut rule_hits: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut parse_errors = 0u64;
    let mut bytes = 0u64;
    let mut inspect_time = std::time::Duration::ZERO;

    for (n, line) in text.lines().enumerate() {
        let rec: CorpusRequest = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: bad JSON", file.display(), n + 1))?;
        let raw = rec.raw();
        bytes += raw.len() as u64;

        let start = Instant::now();
        let (detections, verdict) = match parse_request(&raw, &limits) {
            Parsed::Complete { request, .. } => match mode.as_str() {
                "builtin" => (detector.inspect_builtin(&request), None),
                "crs" => {
                    let v = detector.crs_verdict(&request);
                    let d = v.as_ref().and_then(|v| detector.crs_detection(v));
                    (d.into_iter().collect(), v)
                }
                _ => detector.inspect_with_verdict(&request),
            },
            Parsed::Partial | Parsed::Invalid(_) => {
                parse_errors += 1;
                (Vec::new(), None)
            }
        };
        inspect_time += start.elapsed();
        if let Some(w) = dump.as_mut() {
            use std::io::Write as _;
            writeln!(w, "{}\t{:?}", rec.id, verdict)?;
        }
        if let Some(w) = verdicts.as_mut() {
            use std::io::Write as _;
            let (rules, score): (Vec<u64>, i64) = match &verdict {
                Some(v) => (v.matched.iter().map(|m| m.id).collect(), v.inbound_score),
                None => (Vec::new(), 0),
            };
            let mut rules = rules;
            rules.sort_unstable();
            rules.dedup();
            writeln!(
                w,
                "{}",
                json!({"id": rec.id, "rules": rules, "score": score})
            )?;
        }
        let detections: Vec<_> = detections
            .into_iter()
            .filter(|d| d.severity >= min_severity)
            .collect();
        let is_attack = rec.class == "attack";
        let hit = !detections.is_empty();
        for d in &detections {
            let e = rule_hits.entry(d.rule_id.clone()).or_default();
            if is_attack {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        let (bucket, key) = if is_attack {
            (&mut attacks, rec.category.clone())
        } else {
            (&mut benign, rec.placement.clone())
        };
        let t = bucket.entry(key).or_default();
        t.total += 1;
        if hit {
            t.hit += 1;
        }
        if is_attack && !hit && t.examples.len() < show_misses {
            t.examples.push(format!(
                "{} {} {}",
                rec.id,
                rec.placement,
                line_excerpt(&rec)
            ));
        }
        if !is_attack && hit && t.examples.len() < show_fps {
            let d = &detections[0];
            t.examples.push(format!(
                "{} {} {} {:?} | {}",
                rec.id,
                d.rule_id,
                d.location,
                d.evidence,
                line_excerpt(&rec)
            ));
        }
    }

    let (a_total, a_hit) = attacks
        .values()
        .fold((0, 0), |(t, h), x| (t + x.total, h + x.hit));
    let (b_total, b_fp) = benign
        .values()
        .fold((0, 0), |(t, h), x| (t + x.total, h + x.hit));
    let requests = a_total + b_total;

    println!("attack category          detected / total   TPR");
    for (cat, t) in &attacks {
        println!(
            "  {cat:<22} {:>8} / {:<8} {:6.2}%",
            t.hit,
            t.total,
            pct(t.hit, t.total)
        );
        for e in &t.examples {
            println!("      miss: {e}");
        }
    }
    println!(
        "  {:<22} {:>8} / {:<8} {:6.2}%",
        "ALL",
        a_hit,
        a_total,
        pct(a_hit, a_total)
    );
    println!("benign kind              false pos / total  FPR");
    for (kind, t) in &benign {
        println!(
            "  {kind:<22} {:>8} / {:<8} {:6.2}%",
            t.hit,
            t.total,
            pct(t.hit, t.total)
        );
        for e in &t.examples {
            println!("      fp: {e}");
        }
    }
    println!(
        "  {:<22} {:>8} / {:<8} {:6.3}%",
        "ALL",
        b_fp,
        b_total,
        pct(b_fp, b_total)
    );
    let secs = inspect_time.as_secs_f64();
    println!(
        "parse errors: {parse_errors}; parse+inspect of {requests} requests ({bytes} bytes) took {secs:.3}s: {:.0} req/s, {:.1} MB/s (single thread, unwarmed)",
        requests as f64 / secs,
        bytes as f64 / secs / 1e6
    );

    let report = json!({
        "corpus": file.display().to_string(),
        "rules": detector.rule_count(),
        "mode": mode,
        "crs_dir": crs_dir.as_ref().map(|d| d.display().to_string()),
        "paranoia": crs_dir.as_ref().map(|_| paranoia),
        "min_severity": min_severity.as_str(),
        "requests": requests,
        "parse_errors": parse_errors,
        "attacks": {
            "total": a_total,
            "detected": a_hit,
            "tpr": ratio(a_hit, a_total),
            "per_category": attacks.iter().map(|(k, t)| (k.clone(), json!({
                "total": t.total, "detected": t.hit, "tpr": ratio(t.hit, t.total)
            }))).collect::<serde_json::Map<_, _>>(),
        },
        "benign": {
            "total": b_total,
            "false_positives": b_fp,
            "fpr": ratio(b_fp, b_total),
            "per_kind": benign.iter().map(|(k, t)| (k.clone(), json!({
                "total": t.total, "false_positives": t.hit, "fpr": ratio(t.hit, t.total)
            }))).collect::<serde_json::Map<_, _>>(),
        },
        "rule_hits": rule_hits.iter().map(|(k, (a, b))| (k.clone(), json!({
            "attack": a, "benign": b
        }))).collect::<serde_json::Map<_, _>>(),
        "throughput_unwarmed": {
            "requests_per_s": requests as f64 / secs,
            "mb_per_s": bytes as f64 / secs / 1e6,
        },
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn line_excerpt(rec: &CorpusRequest) -> String {
    let mut s = format!("{} {}", rec.method, rec.uri);
    if rec.placement == "user_agent" || rec.placement.starts_with("header") {
        for (k, v) in &rec.headers {
            if !matches!(
                k.as_str(),
                "Host" | "Accept" | "Content-Type" | "Content-Length"
            ) {
                s.push_str(&format!(" [{k}: {v}]"));
            }
        }
    }
    if rec.placement == "cookie"
        && let Some(c) = rec.headers.get("Cookie")
    {
        s.push_str(&format!(" [Cookie: {c}]"));
    }
    if !rec.body.is_empty() {
        s.push_str(" body=");
        s.push_str(&rec.body);
    }
    s.chars().take(300).collect()
}

fn pct(a: u64, b: u64) -> f64 {
    100.0 * ratio(a, b)
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}
