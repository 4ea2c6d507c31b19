//! Parse arbitrary bytes as an access-log line in every supported format and inspect whatever
//! request comes out. Must never panic (a quoted `\x` before multi-byte text once did).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use palisade_sensor::config::LogFormat;
use palisade_sensor::detect::Detector;
use palisade_sensor::logsource::parse_line;

static DETECTOR: LazyLock<Option<Detector>> = LazyLock::new(|| Detector::builtin().ok());

fuzz_target!(|data: &[u8]| {
    // The log source reads lines as lossy UTF-8, as here.
    let line = String::from_utf8_lossy(data);
    for format in [LogFormat::Nginx, LogFormat::Json, LogFormat::Alb] {
        if let Ok(entry) = parse_line(format, &line)
            && let Some(d) = DETECTOR.as_ref()
        {
            let _ = d.inspect(&entry.request);
        }
    }
});
