//! The training traffic of the profile-guided build (`bench/pgo/training_corpus.py`, run by
//! `scripts/pgo-build.sh`) is traffic the detector really works on: every request parses, and
//! the built-in rules flag the attacks and pass the ordinary requests, so the profile counts
//! the paths the sensor takes in service rather than its error paths.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use palisade_sensor::detect::Detector;
use palisade_sensor::http::{ParseLimits, Parsed, parse_request};
use palisade_tests::corpus::CorpusRequest;

fn generate(dir: &Path, requests: usize) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bench/pgo/training_corpus.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg("--out")
        .arg(dir)
        .arg("--requests")
        .arg(requests.to_string())
        .output()
        .unwrap_or_else(|e| panic!("running python3 {script}: {e} (scripts/setup.sh installs it)"));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("requests.jsonl")).expect("requests.jsonl written")
}

#[test]
fn training_traffic_parses_and_exercises_detection() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let text = generate(dir.path(), 3000);
    let detector = Detector::builtin().expect("built-in rules load");
    let limits = ParseLimits::default();
    let (mut attacks, mut flagged, mut benign, mut benign_flagged) = (0, 0, 0, 0);
    let mut categories = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for line in text.lines() {
        // (as the training harness, eval_corpus, reads and sends it)
        let l: CorpusRequest = serde_json::from_str(line).expect("one JSON object a line");
        assert!(ids.insert(l.id.clone()), "id {} twice", l.id);
        let Parsed::Complete { request, .. } = parse_request(&l.raw(), &limits) else {
            panic!("{} does not parse: {line}", l.id);
        };
        let hit = !detector.inspect_builtin(&request).is_empty();
        if l.class == "attack" {
            attacks += 1;
            flagged += usize::from(hit);
            categories.insert(l.category);
        } else {
            assert_eq!(l.class, "benign", "{}", l.id);
            benign += 1;
            benign_flagged += usize::from(hit);
        }
    }
    assert_eq!(attacks + benign, 3000);
    for family in [
        "sqli",
        "xss",
        "path_traversal",
        "cmdi",
        "ssrf",
        "rfi",
        "log4shell",
        "ssti",
        "php_injection",
        "xxe",
        "scanner",
    ] {
        assert!(categories.contains(family), "no {family} request");
    }
    // (12,000 requests: 95 % of attacks and 2.4 % of the rest flagged)
    assert!(
        flagged * 100 >= attacks * 80,
        "{flagged} of {attacks} attacks flagged"
    );
    assert!(
        benign_flagged * 100 <= benign * 8,
        "{benign_flagged} of {benign} ordinary requests flagged"
    );
}

#[test]
fn training_traffic_is_the_same_every_time() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert_eq!(generate(a.path(), 200), generate(b.path(), 200));
}
