//! Admin HTTP API (axum): health, readiness, metrics, and the block list.
//!
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 when NATS is connected, the store is open and the last reconcile
//!   succeeded; 503 with the failing checks otherwise.
//! - `GET /metrics`: Prometheus text.
//! - `GET /v1/blocks`: every block with its reasons (JSON).
//! - `POST /v1/blocks` `{"cidr": "..", "ttl_secs": 3600, "note": ".."}` and
//!   `DELETE /v1/blocks/{cidr}` (the `/` of a CIDR written as `_` or `%2F`): manual block and
//!   release. They need `Authorization: Bearer <admin.token>`; without a configured token they
//!   answer 403 "disabled".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::engine::Engine;
use crate::error::Error;
use crate::state::BlockRecord;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub engine: Arc<Engine>,
    pub nats_connected: Arc<AtomicBool>,
    pub reconcile_ok: Arc<AtomicBool>,
    pub token: Option<Arc<str>>,
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

async fn list(State(s): State<AdminState>) -> Response {
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

/// Check the bearer token in constant time. `Err` is the response to send.
fn authorize(s: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = &s.token else {
        return Err(Box::new(err(
            StatusCode::FORBIDDEN,
            "disabled: no admin token is configured",
        )));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
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
}

async fn create(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<ManualBlock>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Err(resp) = authorize(&s, &headers) {
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
        .manual_block(net, req.ttl_secs.map(Duration::from_secs), req.note)
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
    if let Err(resp) = authorize(&s, &headers) {
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
