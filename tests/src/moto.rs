//! The AWS WAFv2 emulator: moto in server mode, and a fault-and-limits proxy in front of it.
//!
//! moto (`.venv/bin/moto_server`, installed by `scripts/setup.sh`) serves the WAFv2 API and
//! honours lock tokens, but accepts things AWS rejects and never throttles. [`FaultProxy`] sits
//! between the SDK and moto and behaves as AWS documents:
//! - invalid addresses (not a CIDR, a `/0`, the wrong family) get `WAFInvalidParameterException`;
//! - more than [`ProxyConfig::max_entries`] addresses in one set get `WAFLimitsExceededException`;
//! - write calls (`Create*`, `Update*`, `Delete*`, `Put*`) above [`ProxyConfig::write_rate`] per
//!   second get `ThrottlingException` (HTTP 400, as WAF returns it);
//! - on demand: injected `ThrottlingException`, `WAFInternalErrorException` (HTTP 500) or
//!   `WAFOptimisticLockException`, a ratio of random failures, and latency;
//! - every call is counted per operation (the `X-Amz-Target` header).
//!
//! Errors follow the AWS JSON 1.1 protocol: an `x-amzn-ErrorType` header and a `__type` body field.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{free_port, workspace_root};

/// Largest request body the proxy reads (a full 10,000-entry IPv6 set is about 500 KB).
const MAX_BODY: usize = 16 * 1024 * 1024;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A moto server on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    /// Start `moto_server` and wait until `GET /moto-api/` answers.
    pub async fn start() -> anyhow::Result<MotoServer> {
        let bin = workspace_root().join(".venv/bin/moto_server");
        if !bin.exists() {
            bail!(
                "{} is missing: run scripts/setup.sh to install moto[server]",
                bin.display()
            );
        }
        let mut last_err = None;
        // The free port is released before moto binds it, so another process may take it:
        // try a few ports.
        for _ in 0..3 {
            let port = free_port()?;
            let child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("spawn {}", bin.display()))?;
            let mut server = MotoServer { child, port };
            match server.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return Ok(server),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("moto_server did not start")))
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = http_client();
        let uri: axum::http::Uri = format!("{}/moto-api/", self.endpoint()).parse()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("moto_server exited early: {status}");
            }
            if let Ok(resp) = client.get(uri.clone()).await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "moto_server not ready on port {} after {timeout:?}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The region of the sets the tests create.
pub const REGION: &str = "us-east-1";

/// An SDK configuration with static fake credentials (moto maps unknown keys to account
/// 123456789012) and [`REGION`].
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .test_credentials()
        .region(aws_config::Region::new(REGION))
        .load()
        .await
}

impl MotoServer {
    /// Create an empty regional IP set straight in moto (test setup: the provider never
    /// creates sets); its ARN.
    pub async fn create_ip_set(&self, name: &str, ipv6: bool) -> anyhow::Result<String> {
        use aws_sdk_wafv2::types::{IpAddressVersion, Scope};
        let sdk = sdk_config().await;
        let admin = aws_sdk_wafv2::Client::from_conf(
            aws_sdk_wafv2::config::Builder::from(&sdk)
                .endpoint_url(self.endpoint())
                .build(),
        );
        let version = if ipv6 {
            IpAddressVersion::Ipv6
        } else {
            IpAddressVersion::Ipv4
        };
        let out = admin
            .create_ip_set()
            .name(name)
            .scope(Scope::Regional)
            .ip_address_version(version)
            .description("managed by palisade tests")
            .set_addresses(Some(Vec::new()))
            .send()
            .await
            .with_context(|| format!("CreateIPSet {name}"))?;
        out.summary
            .and_then(|s| s.arn)
            .context("CreateIPSet returned no ARN")
    }
}

/// Limits the proxy enforces, as AWS documents them.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Write calls per second per account and region (AWS: about 1).
    pub write_rate: f64,
    /// Read calls per second (AWS: about 5); `None` does not throttle reads.
    pub read_rate: Option<f64>,
    /// Slack granted to a write that arrives slightly early (network jitter between client and
    /// proxy), as a fraction of one token.
    pub tolerance: f64,
    /// Most entries one IP set may hold.
    pub max_entries: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            write_rate: 1.0,
            read_rate: None,
            tolerance: 0.1,
            max_entries: 10_000,
        }
    }
}

/// A failure the proxy returns instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `ThrottlingException`, HTTP 400.
    Throttle,
    /// `WAFInternalErrorException`, HTTP 500.
    InternalError,
    /// `WAFOptimisticLockException`, HTTP 400.
    LockConflict,
}

impl Fault {
    fn code(self) -> &'static str {
        match self {
            Fault::Throttle => "ThrottlingException",
            Fault::InternalError => "WAFInternalErrorException",
            Fault::LockConflict => "WAFOptimisticLockException",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Fault::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Fault::Throttle | Fault::LockConflict => StatusCode::BAD_REQUEST,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        let burst = rate.max(1.0);
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn take(&mut self, tolerance: f64) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 - tolerance {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Random {
    /// Operation the random failures apply to.
    op: String,
    ratio: f64,
    state: u64,
}

impl Random {
    /// xorshift64*: deterministic for a given seed, no extra dependency.
    fn next(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug)]
struct ProxyState {
    config: ProxyConfig,
    writes: Bucket,
    reads: Option<Bucket>,
    calls: HashMap<String, u64>,
    errors: HashMap<String, u64>,
    injected: HashMap<String, VecDeque<Fault>>,
    random: Option<Random>,
    latency: Duration,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    client: HttpClient,
    state: Mutex<ProxyState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fault-and-limits proxy, listening on a free loopback port until dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Listen on `127.0.0.1:0` and forward to `upstream` (moto's endpoint).
    pub async fn start(upstream: impl Into<String>, config: ProxyConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: upstream.into().trim_end_matches('/').to_string(),
            client: http_client(),
            state: Mutex::new(ProxyState {
                writes: Bucket::new(config.write_rate),
                reads: config.read_rate.map(Bucket::new),
                config,
                calls: HashMap::new(),
                errors: HashMap::new(),
                injected: HashMap::new(),
                random: None,
                latency: Duration::ZERO,
            }),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(cause = %e, "fault proxy stopped");
            }
        });
        Ok(FaultProxy { addr, shared, task })
    }

    /// `http://127.0.0.1:<port>`: give this to the SDK as the endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fail the next calls of operation `op` (e.g. `UpdateIPSet`), one fault per call, in order.
    pub fn inject(&self, op: &str, faults: impl IntoIterator<Item = Fault>) {
        self.shared
            .lock()
            .injected
            .entry(op.to_string())
            .or_default()
            .extend(faults);
    }

    /// Fail a `ratio` (0..=1) of the calls of `op` (`*`: every operation) at random
    /// (deterministic per `seed`), half throttling, half internal errors. A ratio of 0 stops it.
    pub fn fail_randomly(&self, op: &str, ratio: f64, seed: u64) {
        self.shared.lock().random = (ratio > 0.0).then(|| Random {
            op: op.to_string(),
            ratio,
            state: seed.max(1),
        });
    }

    /// Delay every call by `latency` before handling it.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Calls seen for operation `op`, failed or not.
    pub fn calls(&self, op: &str) -> u64 {
        self.shared.lock().calls.get(op).copied().unwrap_or(0)
    }

    /// Error responses with AWS error code `code` (e.g. `ThrottlingException`), whether the
    /// proxy produced them or moto did.
    pub fn errors(&self, code: &str) -> u64 {
        self.shared.lock().errors.get(code).copied().unwrap_or(0)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn aws_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({ "__type": code, "message": message }).to_string();
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = HeaderValue::from_str(code) {
        headers.insert("x-amzn-ErrorType", v);
    }
    resp
}

fn is_write(op: &str) -> bool {
    ["Create", "Update", "Delete", "Put"]
        .iter()
        .any(|p| op.starts_with(p))
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let op = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("")
        .to_string();
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                &e.to_string(),
            );
        }
    };

    // Decide what to do under the lock, act after releasing it.
    let (latency, verdict) = {
        let mut st = shared.lock();
        *st.calls.entry(op.clone()).or_default() += 1;
        let latency = st.latency;
        let mut verdict = st.injected.get_mut(&op).and_then(|q| q.pop_front());
        if verdict.is_none()
            && let Some(r) = st.random.as_mut()
            && (r.op == op || r.op == "*")
        {
            let x = r.next();
            if x < r.ratio {
                verdict = Some(if x < r.ratio / 2.0 {
                    Fault::Throttle
                } else {
                    Fault::InternalError
                });
            }
        }
        if verdict.is_none() && !op.is_empty() {
            let tolerance = st.config.tolerance;
            let allowed = if is_write(&op) {
                st.writes.take(tolerance)
            } else {
                st.reads.as_mut().is_none_or(|b| b.take(tolerance))
            };
            if !allowed {
                verdict = Some(Fault::Throttle);
            }
        }
        if let Some(f) = verdict {
            *st.errors.entry(f.code().to_string()).or_default() += 1;
        }
        (latency, verdict)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(f) = verdict {
        return aws_error(f.status(), f.code(), "injected by the palisade test proxy");
    }

    if op == "UpdateIPSet"
        && let Err((code, message)) = validate_update(&shared, &parts.headers, &body).await
    {
        *shared.lock().errors.entry(code.to_string()).or_default() += 1;
        return aws_error(StatusCode::BAD_REQUEST, code, &message);
    }

    match forward(&shared, &parts.method, &parts.uri, &parts.headers, body).await {
        Ok(resp) => {
            // Count moto's own errors too (a real lock conflict between two writers).
            if let Some(code) = resp
                .headers()
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
            {
                let code = code.split(':').next().unwrap_or(code).to_string();
                *shared.lock().errors.entry(code).or_default() += 1;
            }
            resp
        }
        Err(e) => aws_error(
            StatusCode::BAD_GATEWAY,
            "WAFUnavailableEntityException",
            &format!("proxy: upstream failed: {e}"),
        ),
    }
}

async fn forward(
    shared: &Shared,
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    headers: &axum::http::HeaderMap,
    body: Bytes,
) -> anyhow::Result<Response> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = axum::http::Request::builder()
        .method(method.clone())
        .uri(format!("{}{path}", shared.upstream));
    for (name, value) in headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            req = req.header(name, value);
        }
    }
    let resp = shared.client.request(req.body(Full::new(body))?).await?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await?.to_bytes();
    let mut out = Response::from_parts(parts, Body::from(bytes));
    out.headers_mut().remove(header::CONTENT_LENGTH);
    out.headers_mut().remove(header::TRANSFER_ENCODING);
    Ok(out)
}

/// Check an UpdateIPSet body as AWS would: every address a CIDR of the set's family, no `/0`,
/// at most `max_entries`.
async fn validate_update(
    shared: &Shared,
    headers: &axum::http::HeaderMap,
    body: &Bytes,
) -> Result<(), (&'static str, String)> {
    const INVALID: &str = "WAFInvalidParameterException";
    let v: Value = serde_json::from_slice(body).map_err(|e| (INVALID, e.to_string()))?;
    let addresses = v
        .get("Addresses")
        .and_then(Value::as_array)
        .ok_or((INVALID, "Addresses is required".to_string()))?;
    let max = shared.lock().config.max_entries;
    if addresses.len() > max {
        return Err((
            "WAFLimitsExceededException",
            format!(
                "{} addresses, an IP set holds at most {max}",
                addresses.len()
            ),
        ));
    }
    let version = set_version(shared, headers, &v)
        .await
        .map_err(|e| (INVALID, format!("cannot look up the IP set: {e}")))?;
    for a in addresses {
        let text = a
            .as_str()
            .ok_or((INVALID, format!("{a} is not a string")))?;
        let net: IpNet = text
            .parse()
            .map_err(|e| (INVALID, format!("{text}: not a CIDR: {e}")))?;
        if net.prefix_len() == 0 {
            return Err((INVALID, format!("{text}: /0 is not supported")));
        }
        let family = match net {
            IpNet::V4(_) => "IPV4",
            IpNet::V6(_) => "IPV6",
        };
        if family != version {
            return Err((INVALID, format!("{text} in an {version} set")));
        }
    }
    Ok(())
}

/// The IPAddressVersion of the set an UpdateIPSet names, read from moto behind the SDK's back
/// (not counted).
async fn set_version(
    shared: &Shared,
    headers: &axum::http::HeaderMap,
    update: &Value,
) -> anyhow::Result<String> {
    let body = json!({
        "Name": update.get("Name"),
        "Scope": update.get("Scope"),
        "Id": update.get("Id"),
    })
    .to_string();
    let mut req = axum::http::Request::builder()
        .method("POST")
        .uri(format!("{}/", shared.upstream))
        .header(header::CONTENT_TYPE, "application/x-amz-json-1.1")
        .header("x-amz-target", "AWSWAF_20190729.GetIPSet");
    // moto picks the account from the access key in the Authorization header.
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let resp = shared
        .client
        .request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("GetIPSet: {status}: {}", String::from_utf8_lossy(&bytes));
    }
    let v: Value = serde_json::from_slice(&bytes)?;
    v.pointer("/IPSet/IPAddressVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
        .context("GetIPSet answer without IPSet.IPAddressVersion")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_rate_and_refuses_bursts() {
        let mut b = Bucket::new(1.0);
        assert!(b.take(0.0), "starts with one token");
        assert!(
            !b.take(0.0),
            "second write in the same instant is throttled"
        );
        // Pretend a second went by.
        b.at -= Duration::from_secs(1);
        assert!(b.take(0.0));
        // Slightly early (95% of a token) passes only with tolerance.
        b.at -= Duration::from_millis(950);
        assert!(!b.take(0.0));
        assert!(b.take(0.1));
    }

    #[test]
    fn random_failures_follow_the_ratio() {
        let mut r = Random {
            op: "*".into(),
            ratio: 0.3,
            state: 42,
        };
        let hits = (0..10_000).filter(|_| r.next() < 0.3).count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
    }

    #[test]
    fn writes_are_recognized() {
        for op in [
            "UpdateIPSet",
            "CreateIPSet",
            "DeleteIPSet",
            "PutLoggingConfiguration",
        ] {
            assert!(is_write(op), "{op}");
        }
        for op in ["GetIPSet", "ListIPSets", ""] {
            assert!(!is_write(op), "{op}");
        }
    }
}
