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
//! - `GET /v1/status`: readiness, the fill of each firewall set, the last reconcile and the
//!   number of sensors seen (JSON; `palisade status`). Same access as `GET /v1/blocks`.
//! - `GET /v1/sensors`: per sensor, its last report, reports per minute and rejected reports
//!   since this replica started deciding (JSON; `palisade sensors list`). Same access.
//!
//! Tokens are compared as SHA-256 digests in constant time: neither the content nor the
//! length of a configured token shows in the time an answer takes.
//!
//! With the `nats` state backend every replica answers: the lease holder from its engine, a
//! standby by reading the state bucket (`GET`) or by forwarding the change to the holder over
//! NATS (`POST`/`DELETE`, a request on `palisade.blocker.<bucket>.admin`, answered only by the
//! holder). Without a holder (the seconds of a takeover) changes answer 503.

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

use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::AdminConfig;
use crate::engine::Engine;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::state::BlockRecord;
use crate::state::jetstream::KvStore;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// The engine while this replica decides (always, with the embedded backend).
    pub leader: watch::Receiver<Option<Arc<Engine>>>,
    /// The other replicas (`nats` backend).
    pub cluster: Option<Cluster>,
    pub metrics: Arc<Metrics>,
    pub nats_connected: Arc<AtomicBool>,
    pub reconcile_ok: Arc<AtomicBool>,
    pub tokens: Tokens,
}

impl AdminState {
    /// One blocker that always decides (the embedded backend, tests).
    pub fn single(
        engine: Arc<Engine>,
        nats_connected: Arc<AtomicBool>,
        reconcile_ok: Arc<AtomicBool>,
        tokens: Tokens,
    ) -> AdminState {
        let metrics = Arc::clone(engine.metrics());
        let (tx, leader) = watch::channel(Some(engine));
        // The sender lives as long as the receivers: the value never changes.
        std::mem::forget(tx);
        AdminState {
            leader,
            cluster: None,
            metrics,
            nats_connected,
            reconcile_ok,
            tokens,
        }
    }

    fn engine(&self) -> Option<Arc<Engine>> {
        self.leader.borrow().clone()
    }
}

/// How a replica that does not decide reaches the state and the one that does.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The state bucket (read for `GET /v1/blocks`).
    pub store: KvStore,
    pub client: async_nats::Client,
    /// Subject of forwarded changes ([`command_subject`]).
    pub subject: String,
}

/// The subject on which the lease holder takes forwarded admin changes.
pub fn command_subject(bucket: &str) -> String {
    format!("palisade.blocker.{bucket}.admin")
}

/// A change made through the admin API, as forwarded to the lease holder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Command {
    Block(ManualBlock),
    Release { cidr: String },
}

/// The lease holder's answer to a [`Command`]: the HTTP status and JSON body to send.
#[derive(Debug, Serialize, Deserialize)]
pub struct CommandReply {
    pub status: u16,
    #[serde(default)]
    pub body: serde_json::Value,
}

/// How long a standby waits for the lease holder to answer a forwarded change (a holder busy
/// committing a flood of decisions applies it after them).
const FORWARD_WAIT: Duration = Duration::from_secs(30);

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
        .route("/v1/status", get(status))
        .route("/v1/sensors", get(sensors))
        .route("/v1/blocks", get(list).post(create))
        .route("/v1/blocks/{cidr}", delete(release))
        .with_state(state)
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    /// Does this replica decide (hold the lease)? Always with the embedded backend.
    leader: bool,
    nats_connected: bool,
    store_open: bool,
    /// The last reconcile succeeded (a standby does not reconcile: true).
    last_reconcile_ok: bool,
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let r = readiness(&s);
    let code = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(r)).into_response()
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Body of `GET /v1/status`.
#[derive(Serialize)]
struct Status {
    #[serde(flatten)]
    readiness: Readiness,
    reconcile: ReconcileStatus,
    /// Each firewall set as of the last reconcile run.
    sets: Vec<palisade_providers::SetStatus>,
    blocks_active: u64,
    blocks_deferred: u64,
    /// Sensors whose reports this replica has taken since it started deciding.
    sensors_seen: usize,
}

#[derive(Serialize)]
struct ReconcileStatus {
    runs: u64,
    /// When the last run succeeded (absent: none yet).
    last_success: Option<chrono::DateTime<chrono::Utc>>,
    last_duration_ms: f64,
}

fn readiness(s: &AdminState) -> Readiness {
    // A replica whose lease ran out by its own clock no longer claims it, even while its
    // engine is still winding down (a commit in flight).
    let leader = s.engine().is_some_and(|e| e.store().may_write());
    let r = Readiness {
        leader,
        nats_connected: s.nats_connected.load(Relaxed),
        store_open: !leader || !s.metrics.store_failing.load(Relaxed),
        last_reconcile_ok: !leader || s.reconcile_ok.load(Relaxed),
        ready: false,
    };
    let ready = r.nats_connected && r.store_open && r.last_reconcile_ok;
    Readiness { ready, ..r }
}

async fn status(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(resp) = authorize(&s, &headers, Access::Read) {
        return *resp;
    }
    let m = &s.metrics;
    let last = m.reconcile_last_success_unix.load(Relaxed);
    Json(Status {
        readiness: readiness(&s),
        reconcile: ReconcileStatus {
            runs: m.reconcile_runs.load(Relaxed),
            last_success: (last > 0)
                .then(|| chrono::DateTime::from_timestamp(last as i64, 0))
                .flatten(),
            last_duration_ms: m.reconcile_last_duration_micros.load(Relaxed) as f64 / 1e3,
        },
        sets: m.sets(),
        blocks_active: m.blocks_active.load(Relaxed),
        blocks_deferred: m.blocks_deferred.load(Relaxed),
        sensors_seen: m.sensors.len(),
    })
    .into_response()
}

/// Body of `GET /v1/sensors`.
#[derive(Serialize)]
struct SensorList {
    count: usize,
    sensors: Vec<crate::metrics::sensors::SensorActivity>,
    /// Reports from sensors beyond the number tracked one by one.
    untracked_reports: u64,
}

async fn sensors(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    if let Err(resp) = authorize(&s, &headers, Access::Read) {
        return *resp;
    }
    let sensors = s.metrics.sensors.list();
    Json(SensorList {
        count: sensors.len(),
        sensors,
        untracked_reports: s.metrics.sensors.untracked(),
    })
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
    let blocks = match (s.engine(), &s.cluster) {
        (Some(engine), _) => engine.blocks().await,
        (None, Some(c)) => c.store.blocks().await.map(|mut v| {
            v.sort_by(|a, b| b.first_seen.cmp(&a.first_seen).then(a.cidr.cmp(&b.cidr)));
            v
        }),
        (None, None) => Err(Error::NotLeader),
    };
    match blocks {
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
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    execute(&s, Command::Block(req)).await
}

async fn release(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(cidr): Path<String>,
) -> Response {
    if let Err(resp) = authorize(&s, &headers, Access::Write) {
        return *resp;
    }
    execute(&s, Command::Release { cidr }).await
}

/// Carry out a change: on the engine when this replica decides, else forwarded to the one
/// that does.
async fn execute(s: &AdminState, cmd: Command) -> Response {
    let reply = match (s.engine(), &s.cluster) {
        (Some(engine), _) => apply(&engine, cmd).await,
        (None, Some(c)) => forward(c, &cmd).await,
        (None, None) => unavailable(),
    };
    let code = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code == StatusCode::NO_CONTENT {
        code.into_response()
    } else {
        (code, Json(reply.body)).into_response()
    }
}

fn reply(status: StatusCode, body: impl Serialize) -> CommandReply {
    CommandReply {
        status: status.as_u16(),
        body: serde_json::to_value(body).unwrap_or_default(),
    }
}

fn reply_err(status: StatusCode, msg: impl Into<String>) -> CommandReply {
    reply(status, ApiError { error: msg.into() })
}

fn unavailable() -> CommandReply {
    reply_err(
        StatusCode::SERVICE_UNAVAILABLE,
        "no replica holds the lease right now (a takeover takes a few seconds); retry",
    )
}

/// Apply a change on the engine of the lease holder.
pub async fn apply(engine: &Engine, cmd: Command) -> CommandReply {
    match cmd {
        Command::Block(req) => {
            let net = match palisade_providers::parse_cidr(&req.cidr) {
                Ok(n) => n,
                Err(e) => return reply_err(StatusCode::BAD_REQUEST, e.to_string()),
            };
            match engine
                .manual_block(
                    net,
                    req.ttl_secs.map(Duration::from_secs),
                    req.note,
                    req.force,
                )
                .await
            {
                Ok(rec) => reply(StatusCode::CREATED, rec),
                Err(e @ (Error::Refused { .. } | Error::Provider(_))) => {
                    reply_err(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
                }
                Err(e) => reply_err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        Command::Release { cidr } => {
            let net = match palisade_providers::parse_cidr(&cidr.replace('_', "/")) {
                Ok(n) => n,
                Err(e) => return reply_err(StatusCode::BAD_REQUEST, e.to_string()),
            };
            match engine.release(net).await {
                Ok(true) => reply(StatusCode::NO_CONTENT, serde_json::Value::Null),
                Ok(false) => reply_err(StatusCode::NOT_FOUND, format!("{net} is not blocked")),
                Err(e) => reply_err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
    }
}

/// Send a change to the lease holder and wait for its answer.
async fn forward(c: &Cluster, cmd: &Command) -> CommandReply {
    let payload = match serde_json::to_vec(cmd) {
        Ok(p) => p,
        Err(e) => return reply_err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let request = c.client.send_request(
        c.subject.clone(),
        async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(FORWARD_WAIT)),
    );
    match tokio::time::timeout(FORWARD_WAIT + Duration::from_secs(1), request).await {
        Ok(Ok(msg)) => serde_json::from_slice(&msg.payload).unwrap_or_else(|e| {
            reply_err(
                StatusCode::BAD_GATEWAY,
                format!("unreadable answer from the lease holder: {e}"),
            )
        }),
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => unavailable(),
        Ok(Err(e)) if e.kind() != async_nats::RequestErrorKind::TimedOut => {
            reply_err(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        _ => reply_err(
            StatusCode::GATEWAY_TIMEOUT,
            "the lease holder did not answer in time; the change may still be applied",
        ),
    }
}

/// The lease holder's side: answer forwarded changes until `stop` resolves.
pub async fn serve_commands(
    engine: Arc<Engine>,
    client: async_nats::Client,
    subject: String,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut sub = match client.subscribe(subject.clone()).await {
        Ok(sub) => sub,
        Err(e) => {
            warn!(cause = %e, %subject, "cannot take forwarded admin changes");
            return;
        }
    };
    info!(%subject, "taking forwarded admin changes");
    tokio::pin!(stop);
    loop {
        let msg = tokio::select! {
            _ = &mut stop => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let answer = match serde_json::from_slice::<Command>(&msg.payload) {
            Ok(cmd) => apply(&engine, cmd).await,
            Err(e) => reply_err(StatusCode::BAD_REQUEST, format!("bad command: {e}")),
        };
        if let Some(to) = msg.reply {
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(e) = client.publish(to, body.into()).await {
                warn!(cause = %e, "cannot answer a forwarded admin change");
            }
        }
    }
    let _ = sub.unsubscribe().await;
}
