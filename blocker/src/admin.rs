//! Admin HTTP API (axum): health, readiness, metrics, and the block list.
//!
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 when NATS is connected, the store is open and the last reconcile
//!   succeeded; 503 with the failing checks otherwise.
//! - `GET /metrics`: Prometheus text.
//! - `GET /v1/blocks`: every block with its reasons (JSON). Needs `Authorization: Bearer
//!   <admin.read_token or admin.token>` unless reads are open (`admin.open_reads`; by default
//!   open only when no token is configured).
//! - `POST /v1/blocks` `{"cidr": "..", "ttl_secs": 3600, "note": "..", "force": false}` and
//!   `DELETE /v1/blocks/{cidr}` (the `/` of a CIDR written as `_` or `%2F`): manual block and
//!   release. They need `Authorization: Bearer <admin.token>`; without a configured token they
//!   answer 403 "disabled".
//!
//! Tokens are compared as SHA-256 digests in constant time: neither the content nor the
//! length of a configured token shows in the time an answer takes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AdminConfig;
use crate::engine::Engine;
use crate::error::Error;
use crate::state::BlockRecord;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub engine: Arc<Engine>,
    pub nats_connected: Arc<AtomicBool>,
    pub reconcile_ok: Arc<AtomicBool>,
    pub tokens: Tokens,
}

/// SHA-256 of a token: fixed-size, so comparing digests takes the same time whatever the
/// lengths of the configured and the presented tokens.
type TokenDigest = [u8; 32];

fn digest(token: &[u8]) -> TokenDigest {
    Sha256::digest(token).into()
}

/// The admin tokens, kept only as digests.
#[derive(Clone)]
pub struct Tokens {
    write: Option<TokenDigest>,
    read: Option<TokenDigest>,
    open_reads: bool,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("write", &self.write.map(|_| "<set>"))
            .field("read", &self.read.map(|_| "<set>"))
            .field("open_reads", &self.open_reads)
            .finish()
    }
}

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

impl Tokens {
    /// From `[admin]`: `token` writes (and reads), `read_token` reads.
    pub fn new(config: &AdminConfig) -> Tokens {
        Tokens {
            write: config.token.as_deref().map(|t| digest(t.as_bytes())),
            read: config.read_token.as_deref().map(|t| digest(t.as_bytes())),
            open_reads: config.reads_open(),
        }
    }

    /// Does `given` match `want`? Constant time over the digests; `false` when unset.
    fn matches(want: Option<&TokenDigest>, given: &TokenDigest) -> bool {
        want.is_some_and(|w| bool::from(w.ct_eq(given)))
    }
}

/// The router (bound by [`crate::run`], or served by tests).
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/blocks", get(list).post(create))
        .route("/v1/blocks/{cidr}", delete(release))
        .with_state(state)
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    nats_connected: bool,
    store_open: bool,
    last_reconcile_ok: bool,
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let r = Readiness {
        nats_connected: s.nats_connected.load(Relaxed),
        store_open: !s.engine.metrics().store_failing.load(Relaxed),
        last_reconcile_ok: s.reconcile_ok.load(Relaxed),
        ready: false,
    };
    let ready = r.nats_connected && r.store_open && r.last_reconcile_ok;
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(Readiness { ready, ..r })).into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.engine.metrics().render(),
    )
        .into_response()
}

#[derive(Serialize)]
struct BlockList {
    count: usize,
    blocks: Vec<BlockRecord>,
}

async fn list(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(resp) = authorize(&s, &headers, Access::Read) {
        return *resp;
    }
    match s.engine.blocks().await {
        Ok(blocks) => Json(BlockList {
            count: blocks.len(),
            blocks,
        })
        .into_response(),
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Serialize)]
struct ApiError {
    error: String,
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(ApiError { error: msg.into() })).into_response()
}

/// Check the bearer token for `access`. `Err` is the response to send.
fn authorize(s: &AdminState, headers: &HeaderMap, access: Access) -> Result<(), Box<Response>> {
    let t = &s.tokens;
    if access == Access::Read && t.open_reads {
        return Ok(());
    }
    if access == Access::Write && t.write.is_none() {
        return Err(Box::new(err(
            StatusCode::FORBIDDEN,
            "disabled: no admin token is configured",
        )));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let given = digest(given.as_bytes());
    // Both comparisons always run: which token matched does not show in the timing.
    let write = Tokens::matches(t.write.as_ref(), &given);
    let read = Tokens::matches(t.read.as_ref(), &given);
    let ok = match access {
        Access::Write => write,
        Access::Read => write | read,
    };
    if ok {
        Ok(())
    } else {
        Err(Box::new(err(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        )))
    }
}

/// Body of `POST /v1/blocks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualBlock {
    /// Address or CIDR (at most /24 for IPv4, /48 for IPv6).
    pub cidr: String,
    /// TTL; the policy's (escalating) TTL when absent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Free text kept as the reason's evidence.
    #[serde(default)]
    pub note: Option<String>,
    /// Block an allowlisted or special-purpose CIDR anyway (the breadth limit still applies).
    #[serde(default)]
    pub force: bool,
}

async fn create(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<ManualBlock>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(resp) = authorize(&s, &headers, Access::Write) {
        return *resp;
    }
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let net = match palisade_providers::parse_cidr(&req.cidr) {
        Ok(n) => n,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match s
        .engine
        .manual_block(
            net,
            req.ttl_secs.map(Duration::from_secs),
            req.note,
            req.force,
        )
        .await
    {
        Ok(rec) => (StatusCode::CREATED, Json(rec)).into_response(),
        Err(e @ (Error::Refused { .. } | Error::Provider(_))) => {
            err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
        }
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn release(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(cidr): Path<String>,
) -> Response {
    if let Err(resp) = authorize(&s, &headers, Access::Write) {
        return *resp;
    }
    let net = match palisade_providers::parse_cidr(&cidr.replace('_', "/")) {
        Ok(n) => n,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match s.engine.release(net).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => err(StatusCode::NOT_FOUND, format!("{net} is not blocked")),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
