//! The CRS engine against the reference implementation: the same requests through
//! libmodsecurity 3 + OWASP CRS 3.3.4 (Debian's packages, driven by
//! `bench/modsec/crs_driver.c` in `DetectionOnly` mode) and through Palisade's engine, at
//! paranoia levels 1 and 2. Per request, the set of CRS rule ids that matched (and log) and the
//! inbound anomaly score must be identical for at least 99 % of a fixed sample of 2,400
//! generated requests (`crs_sample`: benign traffic and every attack family, in every place
//! and encoding).
//!
//! Needs gcc, pkg-config, libmodsecurity-dev and modsecurity-crs (`scripts/setup.sh`
//! installs them); with `CI=true` a missing piece is a failure, not a skip.

#[allow(dead_code)]
mod crs_sample;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use palisade_sensor::detect::Detector;
use palisade_sensor::detect::crs::{Crs, CrsSettings, RequestInput};
use palisade_sensor::http::{ParseLimits, Parsed, parse_request};

const CRS_DIR: &str = "/usr/share/modsecurity-crs";
const SETUP: &str = "/etc/modsecurity/crs/crs-setup.conf";
const SAMPLE: usize = 2400;
const SEED: u64 = 0x5eed_c0de;
const MIN_AGREEMENT: f64 = 99.0;

type Verdicts = BTreeMap<String, (BTreeSet<u64>, i64)>;

/// Why the reference cannot run here, if it cannot.
fn missing() -> Option<String> {
    for f in [
        SETUP,
        "/usr/share/modsecurity-crs/rules/REQUEST-901-INITIALIZATION.conf",
    ] {
        if !Path::new(f).exists() {
            return Some(format!("{f} is missing (Debian package modsecurity-crs)"));
        }
    }
    let pc = Command::new("pkg-config")
        .args(["--exists", "modsecurity"])
        .status();
    if !pc.is_ok_and(|s| s.success()) {
        return Some("pkg-config cannot find modsecurity (libmodsecurity-dev)".into());
    }
    if Command::new("gcc").arg("--version").output().is_err() {
        return Some("gcc is missing".into());
    }
    None
}

fn can_run(test: &str) -> bool {
    !palisade_tests::skip_because(
        test,
        missing().map(|why| format!("{why} (run scripts/setup.sh)")),
    )
}

fn build_driver(dir: &Path) -> PathBuf {
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "modsecurity"])
        .output()
        .expect("pkg-config");
    let flags = String::from_utf8(flags.stdout).expect("pkg-config output");
    let out = dir.join("crs_driver");
    let status = Command::new("gcc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(palisade_tests::workspace_root().join("bench/modsec/crs_driver.c"))
        .args(flags.split_whitespace())
        .status()
        .expect("gcc");
    assert!(status.success(), "building crs_driver failed");
    out
}

fn parse_verdicts(text: &str) -> Verdicts {
    let mut out = Verdicts::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("verdict line is JSON");
        let id = v["id"].as_str().expect("id").to_string();
        let rules = v["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|r| r.as_u64().expect("rule id"))
            .collect();
        out.insert(id, (rules, v["score"].as_i64().expect("score")));
    }
    out
}

fn reference(driver: &Path, bin: &Path, paranoia: u8) -> Verdicts {
    let out = Command::new(driver)
        .args(["-p", &paranoia.to_string(), "-c"])
        .arg(Path::new(CRS_DIR).join("rules"))
        .args(["-s", SETUP])
        .arg(bin)
        .output()
        .expect("running crs_driver");
    assert!(
        out.status.success(),
        "crs_driver: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_verdicts(&String::from_utf8_lossy(&out.stdout))
}

fn engine(paranoia: u8) -> Crs {
    let mut s = CrsSettings::new(CRS_DIR);
    s.paranoia = paranoia;
    Crs::load(&s).expect("Debian's CRS 3.3.4 loads")
}

fn ours(crs: &Crs, reqs: &[crs_sample::SampleRequest]) -> Verdicts {
    let mut out = Verdicts::new();
    for r in reqs {
        let headers: Vec<(&[u8], &[u8])> = r
            .headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        let cl = r.body.len().to_string();
        let mut headers = headers;
        if !r.body.is_empty()
            && !r
                .headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        {
            headers.push((b"Content-Length", cl.as_bytes()));
        }
        let v = crs.evaluate(&RequestInput {
            method: r.method.as_bytes(),
            target: r.target.as_bytes(),
            protocol: b"HTTP/1.1",
            headers: &headers,
            body: &r.body,
            remote_addr: "192.0.2.1",
        });
        let rules = v.matched.iter().map(|m| m.id).collect();
        out.insert(r.id.clone(), (rules, v.inbound_score));
    }
    out
}

/// Agreement in percent, and a readable account of the disagreements.
fn compare(ours: &Verdicts, theirs: &Verdicts) -> (f64, String) {
    let mut agree = 0usize;
    let mut only_ours: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    let mut only_theirs: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    let mut score_only = Vec::new();
    for (id, (t_rules, t_score)) in theirs {
        let Some((o_rules, o_score)) = ours.get(id) else {
            continue;
        };
        if o_rules == t_rules && o_score == t_score {
            agree += 1;
            continue;
        }
        for r in o_rules.difference(t_rules) {
            only_ours.entry(*r).or_default().push(id);
        }
        for r in t_rules.difference(o_rules) {
            only_theirs.entry(*r).or_default().push(id);
        }
        if o_rules == t_rules {
            score_only.push(format!("{id}: ours {o_score}, modsecurity {t_score}"));
        }
    }
    let mut text = String::new();
    for (label, map) in [
        ("only Palisade", &only_ours),
        ("only ModSecurity", &only_theirs),
    ] {
        for (rule, ids) in map {
            let ex: Vec<&str> = ids.iter().take(3).copied().collect();
            text.push_str(&format!(
                "  {label} {rule}: {} requests, e.g. {ex:?}\n",
                ids.len()
            ));
        }
    }
    for s in score_only.iter().take(10) {
        text.push_str(&format!("  score differs: {s}\n"));
    }
    (100.0 * agree as f64 / theirs.len().max(1) as f64, text)
}

fn differential(paranoia: u8) {
    let test = format!("crs_agrees_with_modsecurity_at_pl{paranoia}");
    if !can_run(&test) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let driver = build_driver(dir.path());
    let reqs = crs_sample::generate(SAMPLE, SEED);
    let bin = dir.path().join("requests.bin");
    crs_sample::write_bin(&reqs, &bin).expect("writing requests.bin");
    let theirs = reference(&driver, &bin, paranoia);
    assert_eq!(
        theirs.len(),
        reqs.len(),
        "the driver answered every request"
    );
    let ours = ours(&engine(paranoia), &reqs);
    let (agreement, text) = compare(&ours, &theirs);
    let attacks_flagged = theirs.values().filter(|(r, _)| !r.is_empty()).count();
    eprintln!(
        "PL{paranoia}: {agreement:.2} % of {} requests agree exactly ({attacks_flagged} with a \
         CRS match)\n{text}",
        theirs.len()
    );
    assert!(attacks_flagged > reqs.len() / 4, "the sample exercises CRS");
    assert!(
        agreement >= MIN_AGREEMENT,
        "PL{paranoia}: {agreement:.2} % agreement, below {MIN_AGREEMENT} %:\n{text}"
    );
}

#[test]
fn crs_agrees_with_modsecurity_at_pl1() {
    differential(1);
}

#[test]
fn crs_agrees_with_modsecurity_at_pl2() {
    differential(2);
}

/// The production path (raw bytes through the sensor's HTTP parser, then the detector with
/// CRS beside the built-in rules) gives the engine the same request as the direct input.
#[test]
fn sensor_path_gives_crs_the_same_requests() {
    if !can_run("sensor_path_gives_crs_the_same_requests") {
        return;
    }
    let reqs = crs_sample::generate(400, SEED);
    let crs = engine(1);
    let direct = ours(&crs, &reqs);
    let detector = Detector::builtin()
        .expect("built-in rules")
        .with_crs(std::sync::Arc::new(crs));
    let limits = ParseLimits {
        max_body: 1 << 20,
        ..ParseLimits::default()
    };
    let mut same = 0usize;
    let mut differ = Vec::new();
    for r in &reqs {
        let raw = crs_sample::to_http(r);
        let Parsed::Complete { request, .. } = parse_request(&raw, &limits) else {
            panic!("{}: the sensor cannot parse a sample request", r.id);
        };
        let v = detector.crs_verdict(&request).expect("CRS runs");
        let rules: BTreeSet<u64> = v.matched.iter().map(|m| m.id).collect();
        if direct.get(&r.id) == Some(&(rules.clone(), v.inbound_score)) {
            same += 1;
        } else {
            differ.push(format!("{}: {:?} vs {:?}", r.id, rules, direct.get(&r.id)));
        }
    }
    assert!(
        same * 100 >= reqs.len() * 99,
        "{} differ: {:#?}",
        differ.len(),
        &differ[..differ.len().min(10)]
    );
}
