//! Parse arbitrary bytes as a wire report (`Report::from_slice`, what the blocker runs on every
//! message, from any publisher). Must never panic; a report it accepts must serialize back to
//! a body it accepts again, as the same report (what a sensor publishes is what the blocker
//! reads), and every rejection must carry one of the stable metric labels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_wire::Report;

fuzz_target!(|data: &[u8]| {
    match Report::from_slice(data) {
        Ok(report) => {
            let body = match report.to_vec() {
                Ok(body) => body,
                Err(e) => panic!("an accepted report does not serialize: {e}\n{report:?}"),
            };
            match Report::from_slice(&body) {
                Ok(again) => assert_eq!(again, report, "the round trip changed the report"),
                Err(e) => panic!("a serialized report is rejected: {e}\n{report:?}"),
            }
            assert_eq!(report.subject(), palisade_wire::subject_for(&report.sensor));
            assert_eq!(
                palisade_wire::sensor_from_subject(&report.subject()),
                Some(report.sensor.as_str())
            );
        }
        Err(e) => {
            assert!(!e.reason().is_empty());
            let _ = e.to_string();
        }
    }
});
