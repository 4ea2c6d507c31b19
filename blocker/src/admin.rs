//! Admin HTTP API (axum): health, readiness, metrics, and the block list.
//!
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 when NATS is connected, the store is open and the last reconcile
//!   succeeded; 503 with the failing checks otherwise.
//! - `GET /metrics`: OpenMetrics or Prometheus text (by the `Accept` header).
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

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{AdminConfig, TokenAccess};
use crate::engine::Engine;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::state::BlockRecord;
use crate::state::history::{HistoryEntry, HistoryQuery};
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
    /// The broadest prefix a block can have, IPv4 and IPv6 (history queries).
    pub history_scope: (u8, u8),
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
    Release {
        cidr: String,
        /// Who asked (the token's name; forwarded in the [`ACTOR_HEADER`]).
        #[serde(skip)]
        actor: Option<String>,
    },
}

impl Command {
    fn actor(&self) -> Option<&str> {
        match self {
            Command::Block(b) => b.actor.as_deref(),
            Command::Release { actor, .. } => actor.as_deref(),
        }
    }

    fn set_actor(&mut self, who: Option<String>) {
        match self {
            Command::Block(b) => b.actor = who,
            Command::Release { actor, .. } => *actor = who,
        }
    }
}

/// Header of a forwarded change that names who asked (the token's name). A header rather
/// than a field of the command, so that replicas of the versions before and after named
/// tokens still understand each other's changes during a rolling upgrade.
pub const ACTOR_HEADER: &str = "Palisade-Actor";

/// The lease holder's answer to a [`Command`]: the HTTP status and JSON body to send.
#[derive(Debug, Serialize, Deserialize)]
pub struct CommandReply {
    pub status: u16,
    #[serde(default)]
    pub body: serde_json::Value,
}

/// The actor of a change forwarded by a replica that predates named tokens (it checked the
/// one write token there was, `admin.token`).
const DEFAULT_ACTOR: &str = "admin";

/// How long a standby waits for the lease holder to answer a forwarded change (a holder busy
/// committing a flood of decisions applies it after them).
const FORWARD_WAIT: Duration = Duration::from_secs(30);

/// SHA-256 of a token: fixed-size, so comparing digests takes the same time whatever the
/// lengths of the configured and the presented tokens.
type TokenDigest = [u8; 32];

fn digest(token: &[u8]) -> TokenDigest {
    Sha256::digest(token).into()
}

/// The admin tokens, kept only as digests, each with its name and what it may do.
#[derive(Clone)]
pub struct Tokens {
    entries: Arc<[TokenEntry]>,
    /// Is any token allowed to write? Without one, changes are disabled (403).
    any_write: bool,
    open_reads: bool,
}

#[derive(Clone)]
struct TokenEntry {
    name: Arc<str>,
    digest: TokenDigest,
    access: Access,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{} ({:?})", e.name, e.access))
            .collect();
        f.debug_struct("Tokens")
            .field("tokens", &names)
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

/// Who a request is: the name of the token it presented (`None`: none needed, reads open).
#[derive(Debug, Clone)]
struct Caller(Option<Arc<str>>);

impl Tokens {
    /// From `[admin]`: `token` (named `admin`) writes and reads, `read_token` (named `read`)
    /// reads, and every `[[admin.tokens]]` entry as its `access` says. Reads token files:
    /// fails with a configuration error naming the token when one cannot be read or is
    /// invalid.
    pub fn new(config: &AdminConfig) -> Result<Tokens, Error> {
        let entries: Vec<TokenEntry> = config
            .resolve_tokens()?
            .into_iter()
            .map(|t| TokenEntry {
                name: Arc::from(t.name.as_str()),
                digest: digest(t.secret.as_bytes()),
                access: match t.access {
                    TokenAccess::Read => Access::Read,
                    TokenAccess::Write => Access::Write,
                },
            })
            .collect();
        Ok(Tokens {
            any_write: entries.iter().any(|e| e.access == Access::Write),
            entries: entries.into(),
            open_reads: config.reads_open(),
        })
    }

    /// The token whose digest is `given`, if any. Compares against every configured digest,
    /// always, in constant time each, and picks the match without a branch on it: neither
    /// which token matched nor where it is in the list shows in the timing.
    fn find(&self, given: &TokenDigest) -> Option<&TokenEntry> {
        let mut index = 0u32;
        let mut found = Choice::from(0);
        for (i, e) in self.entries.iter().enumerate() {
            let m = e.digest.ct_eq(given);
            index.conditional_assign(&(i as u32), m);
            found |= m;
        }
        if bool::from(found) {
            self.entries.get(index as usize)
        } else {
            None
        }
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
        .route("/v1/history/{ip}", get(history))
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

/// OpenMetrics text when the scraper asks for it (Prometheus does), else the Prometheus text
/// format 0.0.4: the same series either way.
async fn metrics(State(s): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::metrics::Exposition::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        s.metrics.render(format),
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

/// Most entries one `GET /v1/history` answers.
pub const MAX_HISTORY_PAGE: usize = 1000;
/// Entries answered without `?limit=`.
pub const DEFAULT_HISTORY_PAGE: usize = 100;

/// Query of `GET /v1/history/{ip}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    /// At most this many entries (1..=1000; default 100).
    limit: Option<usize>,
    /// Only entries with an id below this (the `next_before` of the previous page).
    before: Option<u64>,
}

/// Body of `GET /v1/history/{ip}`.
#[derive(Serialize)]
struct HistoryPage {
    /// The address or network asked about.
    query: ipnet::IpNet,
    count: usize,
    /// Newest first.
    entries: Vec<HistoryEntry>,
    /// Pass as `?before=` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<u64>,
}

async fn history(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(ip): Path<String>,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(resp) = authorize(&s, &headers, Access::Read) {
        return *resp;
    }
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let limit = params.limit.unwrap_or(DEFAULT_HISTORY_PAGE);
    if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
        return err(
            StatusCode::BAD_REQUEST,
            format!("limit must be 1..={MAX_HISTORY_PAGE}"),
        );
    }
    let net = match parse_target(&ip) {
        Some(n) => n,
        None => {
            return err(
                StatusCode::BAD_REQUEST,
                format!(
                    "`{ip}` is not an IP address or a CIDR (write the / of a CIDR as _ or %2F)"
                ),
            );
        }
    };
    // One more than asked: tells whether there is a next page.
    let entries = match (s.engine(), &s.cluster) {
        (Some(engine), _) => {
            engine
                .history(engine.history_query(net, params.before, limit + 1))
                .await
        }
        (None, Some(c)) => {
            let q = HistoryQuery {
                net,
                before: params.before,
                limit: limit + 1,
                scope_v4: c.history_scope.0,
                scope_v6: c.history_scope.1,
            };
            c.store.history(&q).await
        }
        (None, None) => Err(Error::NotLeader),
    };
    match entries {
        Ok(mut entries) => {
            let more = entries.len() > limit;
            entries.truncate(limit);
            let next_before = if more {
                entries.last().map(|e| e.id)
            } else {
                None
            };
            Json(HistoryPage {
                query: net,
                count: entries.len(),
                entries,
                next_before,
            })
            .into_response()
        }
        Err(e) => err(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// An address (as a host network, /32 or /128) or a CIDR, its `/` written as `/`, `_` or
/// `%2F` (decoded by the router).
fn parse_target(s: &str) -> Option<ipnet::IpNet> {
    let s = s.replace('_', "/");
    if let Ok(addr) = s.parse::<std::net::IpAddr>() {
        return Some(ipnet::IpNet::from(addr));
    }
    s.parse::<ipnet::IpNet>().ok().map(|n| n.trunc())
}

#[derive(Serialize)]
struct ApiError {
    error: String,
}

fn err(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(ApiError { error: msg.into() })).into_response()
}

/// Check the bearer token for `access`. `Ok` is who the caller is; `Err` the response to send.
fn authorize(s: &AdminState, headers: &HeaderMap, access: Access) -> Result<Caller, Box<Response>> {
    let t = &s.tokens;
    if access == Access::Read && t.open_reads {
        return Ok(Caller(None));
    }
    if access == Access::Write && !t.any_write {
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
    match t.find(&digest(given.as_bytes())) {
        Some(e) if access == Access::Read || e.access == Access::Write => {
            Ok(Caller(Some(Arc::clone(&e.name))))
        }
        _ => Err(Box::new(err(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))),
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
    /// Who asked: the name of the token, set by the replica that checked it (never read from
    /// the body: an `actor` field there is an unknown field). Forwarded in the
    /// [`ACTOR_HEADER`].
    #[serde(skip)]
    pub actor: Option<String>,
}

async fn create(
    State(s): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<ManualBlock>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let caller = match authorize(&s, &headers, Access::Write) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let Json(mut req) = match body {
        Ok(b) => b,
        Err(e) => return err(StatusCode::BAD_REQUEST, e.body_text()),
    };
    // Who did it is the token's name, never what the body claims.
    req.actor = caller.0.as_deref().map(str::to_owned);
    execute(&s, Command::Block(req)).await
}

async fn release(
    State(s): State<AdminState>,
    headers: HeaderMap,
    Path(cidr): Path<String>,
) -> Response {
    let caller = match authorize(&s, &headers, Access::Write) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    let actor = caller.0.as_deref().map(str::to_owned);
    execute(&s, Command::Release { cidr, actor }).await
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
                    req.actor.as_deref().unwrap_or(DEFAULT_ACTOR),
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
        Command::Release { cidr, actor } => {
            let net = match palisade_providers::parse_cidr(&cidr.replace('_', "/")) {
                Ok(n) => n,
                Err(e) => return reply_err(StatusCode::BAD_REQUEST, e.to_string()),
            };
            match engine
                .release(net, actor.as_deref().unwrap_or(DEFAULT_ACTOR))
                .await
            {
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
    let mut request = async_nats::Request::new()
        .payload(payload.into())
        .timeout(Some(FORWARD_WAIT));
    if let Some(who) = cmd.actor() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(ACTOR_HEADER, who);
        request = request.headers(headers);
    }
    let request = c.client.send_request(c.subject.clone(), request);
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
            Ok(mut cmd) => {
                let who = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(ACTOR_HEADER))
                    .map(|v| v.as_str().to_owned());
                cmd.set_actor(who);
                apply(&engine, cmd).await
            }
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
