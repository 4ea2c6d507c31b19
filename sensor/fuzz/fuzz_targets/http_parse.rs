//! Parse arbitrary bytes as a stream of pipelined requests (with resync on garbage) and run the
//! detector on every request found. Must never panic; `consumed` must make progress.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use palisade_sensor::detect::Detector;
use palisade_sensor::http::{ParseLimits, Parsed, find_request_start, parse_request};

static DETECTOR: LazyLock<Option<Detector>> = LazyLock::new(|| Detector::builtin().ok());

fuzz_target!(|data: &[u8]| {
    let limits = ParseLimits {
        max_head: 4096,
        max_body: 512,
    };
    let mut pos = 0;
    while pos < data.len() {
        match parse_request(&data[pos..], &limits) {
            Parsed::Complete { request, consumed } => {
                if let Some(d) = DETECTOR.as_ref() {
                    for det in d.inspect(&request) {
                        assert!(det.evidence.len() <= 256);
                    }
                }
                let _ = (request.path(), request.query(), request.cookies().count());
                match consumed {
                    Some(n) => {
                        assert!(n > 0);
                        pos += n;
                    }
                    None => break,
                }
            }
            Parsed::Partial => break,
            Parsed::Invalid(_) => match find_request_start(&data[pos + 1..]) {
                Some(at) => pos += 1 + at,
                None => break,
            },
        }
    }
});
