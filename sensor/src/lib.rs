//! Palisade sensor library.
//!
//! - [`http`]: HTTP/1.x request-head parser (method, target, headers, cookies, body prefix).
//! - [`detect`]: normalization and the rule engine (rules are data, `sensor/rules/*.yaml`).

pub mod detect;
pub mod http;
