//! A small client of the blocker's admin API (plain HTTP/1.1).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The admin API of one blocker.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    timeout: Duration,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Client {
    /// A client of the blocker at `url` (`http://host:port`, optionally with a path prefix).
    /// Only plain HTTP: the admin API listens on localhost or a cluster network.
    pub fn new(url: &str, token: Option<String>, timeout: Duration) -> Result<Client> {
        let url = url.trim().trim_end_matches('/');
        if url.starts_with("https://") {
            return Err(Error::Usage(format!(
                "{url}: https:// is not supported; the admin API is plain HTTP (reach it on \
                 localhost, the cluster network or through a tunnel, with http://)"
            )));
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(Error::Usage(format!(
                "{url}: the blocker's URL must start with http:// (e.g. http://127.0.0.1:9460)"
            )));
        };
        if rest.is_empty() || url.parse::<hyper::Uri>().is_err() {
            return Err(Error::Usage(format!("{url}: not a valid URL")));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Ok(Client {
            base: url.to_owned(),
            token: token.filter(|t| !t.is_empty()),
            timeout,
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The blocker's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Send a request; 401/403 become [`Error::Auth`], connection failures
    /// [`Error::Unreachable`]. Other statuses are the caller's to judge.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Answer> {
        let uri = format!("{}{path}", self.base);
        let mut req = Request::builder().method(method).uri(&uri);
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let payload = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| Error::Usage(format!("{uri}: {e}")))?;
        let unreachable = |cause: String| Error::Unreachable {
            url: self.base.clone(),
            cause,
        };
        let exchange = async {
            let resp = self.http.request(req).await.map_err(|e| {
                // The root cause ("Connection refused") says more than hyper's wrapper.
                let mut cause: &dyn std::error::Error = &e;
                while let Some(next) = cause.source() {
                    cause = next;
                }
                unreachable(cause.to_string())
            })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("answer cut short: {e}")))?
                .to_bytes();
            Ok::<_, Error>(Answer { status, body })
        };
        let answer = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {:?}", self.timeout)))??;
        if matches!(
            answer.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            let hint = if self.token.is_some() {
                "check --token, PALISADE_TOKEN or --token-file (changes need a write token)"
            } else {
                "no token given: set --token, PALISADE_TOKEN or --token-file"
            };
            return Err(Error::Auth {
                url: self.base.clone(),
                status: answer.status.as_u16(),
                message: format!("{}; {hint}", api_message(&answer.body)),
            });
        }
        Ok(answer)
    }

    /// `GET path`, expecting 200 and JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let answer = self.send(Method::GET, path, None).await?;
        if answer.status != StatusCode::OK {
            return Err(api_error(&answer));
        }
        self.decode(&answer.body)
    }

    /// Parse a JSON body.
    pub fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|source| Error::Decode {
            url: self.base.clone(),
            source,
        })
    }
}

/// The `error` field of an error answer, or the body itself.
pub fn api_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// An unexpected status as an error.
pub fn api_error(answer: &Answer) -> Error {
    Error::Api {
        status: answer.status.as_u16(),
        message: api_message(&answer.body),
    }
}
