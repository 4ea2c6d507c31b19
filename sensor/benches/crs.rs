//! The CRS engine on one core: the whole OWASP Core Rule Set (Debian's 3.3.4, PL1) over single
//! requests, warm. `cargo bench -p palisade-sensor --bench crs`. Skipped with a message when
//! `/usr/share/modsecurity-crs` is not installed (`scripts/setup.sh` installs it).
//!
//! One request evaluated again and again is the value memo's best case (every value known after
//! the first iteration), so each request is measured twice: `crs_pl1` as the sensor runs it,
//! `crs_pl1_no_memo` with the memo off (every value decoded, scanned and matched afresh, what a
//! request of values never seen before costs).
//!
//! - `benign_get`: a browser GET with a query argument (what most traffic is);
//! - `form_post`: a urlencoded form with three fields;
//! - `sqli_get`: a SQL injection in a query argument (rules match, scores, logs).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_sensor::detect::crs::{Crs, CrsSettings, DEBIAN_CRS_DIR, RequestInput};

const UA: &[u8] = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";

fn request<'a>(
    method: &'a [u8],
    target: &'a [u8],
    headers: &'a [(&'a [u8], &'a [u8])],
    body: &'a [u8],
) -> RequestInput<'a> {
    RequestInput {
        method,
        target,
        protocol: b"HTTP/1.1",
        headers,
        body,
        remote_addr: "192.0.2.1",
    }
}

fn bench(c: &mut Criterion) {
    if !Path::new(DEBIAN_CRS_DIR).join("rules").is_dir() {
        eprintln!("{DEBIAN_CRS_DIR} not installed: skipping the CRS benchmarks");
        return;
    }
    let with_memo = Crs::load(&CrsSettings::new(DEBIAN_CRS_DIR)).expect("CRS loads");
    let without_memo = Crs::load(&CrsSettings::new(DEBIAN_CRS_DIR))
        .expect("CRS loads")
        .without_value_memo();
    let get_headers: &[(&[u8], &[u8])] = &[
        (b"Host", b"shop.example.com"),
        (b"User-Agent", UA),
        (b"Accept", b"text/html,application/xhtml+xml"),
        (b"Accept-Language", b"en-US,en;q=0.9"),
        (b"Cookie", b"session=3f2a9c; theme=dark"),
    ];
    let form_headers: &[(&[u8], &[u8])] = &[
        (b"Host", b"shop.example.com"),
        (b"User-Agent", UA),
        (b"Accept", b"*/*"),
        (b"Content-Type", b"application/x-www-form-urlencoded"),
        (b"Content-Length", b"44"),
    ];
    type Case<'a> = (
        &'a str,
        &'a [u8],
        &'a [u8],
        &'a [(&'a [u8], &'a [u8])],
        &'a [u8],
    );
    let cases: [Case; 3] = [
        (
            "benign_get",
            b"GET",
            b"/products/list?page=2&sort=price",
            get_headers,
            b"",
        ),
        (
            "form_post",
            b"POST",
            b"/account/profile",
            form_headers,
            b"name=Ana+Lima&city=Porto&newsletter=yes",
        ),
        (
            "sqli_get",
            b"GET",
            b"/item?id=1%27%20UNION%20SELECT%20password%20FROM%20users--",
            get_headers,
            b"",
        ),
    ];
    for (group, crs) in [("crs_pl1", &with_memo), ("crs_pl1_no_memo", &without_memo)] {
        let mut g = c.benchmark_group(group);
        for (name, method, target, headers, body) in cases {
            g.bench_function(name, |b| {
                let r = request(method, target, headers, body);
                b.iter(|| black_box(crs.evaluate(black_box(&r))))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
