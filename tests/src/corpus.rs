//! Labelled request corpora in the `requests.jsonl` format: the dev corpus, and the training
//! traffic of the profile-guided build (`bench/pgo/training_corpus.py`). Read by the sensor's
//! `eval_corpus` harness and by the tests of the training traffic.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One line of `requests.jsonl`.
#[derive(Debug, Deserialize)]
pub struct CorpusRequest {
    pub id: String,
    /// `attack` or `benign`.
    pub class: String,
    pub category: String,
    pub method: String,
    pub uri: String,
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
    /// Where the payload sits (attacks) or which kind of ordinary request it is.
    #[serde(default)]
    pub placement: String,
}

impl CorpusRequest {
    /// The request as a client puts it on the wire (HTTP/1.1, a `Content-Length` added when a
    /// body has none).
    pub fn raw(&self) -> Vec<u8> {
        let mut raw = format!("{} {} HTTP/1.1\r\n", self.method, self.uri).into_bytes();
        for (k, v) in &self.headers {
            raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if !self.body.is_empty()
            && !self
                .headers
                .keys()
                .any(|k| k.eq_ignore_ascii_case("content-length"))
        {
            raw.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(self.body.as_bytes());
        raw
    }
}
