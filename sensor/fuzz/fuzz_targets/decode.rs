//! Normalize arbitrary bytes with every flavor, plus the SQL-comment and lookup variants. Must
//! never panic, and the output must be valid UTF-8 (it is a `String`) no longer than a bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_sensor::detect::decode::{Flavor, normalize, resolve_lookups, strip_sql_comments};

fuzz_target!(|data: &[u8]| {
    let mut out = String::new();
    let mut variant = String::new();
    for flavor in [Flavor::Form, Flavor::Path, Flavor::Plain] {
        normalize(data, flavor, &mut out);
        // Decoding never grows the text much: each input byte yields at most one char (4 bytes)
        // after lowercasing, which can expand a char to at most 3 chars.
        assert!(out.len() <= data.len() * 12 + 16);
        strip_sql_comments(&out, &mut variant);
        resolve_lookups(&out, &mut variant);
    }
});
