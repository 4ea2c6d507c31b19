//! A real 3-node (or n-node) `nats-server` cluster with JetStream on free loopback ports.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let mut cluster = palisade_tests::nats::NatsCluster::start(3).await?;
//! // "nats://127.0.0.1:a,nats://127.0.0.1:b,nats://127.0.0.1:c", for `[nats] url`.
//! let urls = cluster.urls();
//! let js = cluster.jetstream().await?;
//! cluster.kill(0).await?; // SIGKILL: the other two keep a JetStream quorum
//! cluster.restart(0).await?; // same ports, same store: it catches up
//! # Ok(()) }
//! ```
//!
//! Each node gets a configuration file with a unique `server_name` (`n0`, `n1`, ...), its own
//! client port, cluster route port, monitoring port and JetStream store directory, and routes
//! to every other node. [`NatsCluster::start`] returns once the cluster has a JetStream meta
//! leader and a stream with one replica per node can be created (it creates and deletes a
//! probe stream), so a test may create an R3 stream at once. Each node's log is appended to
//! `<dir>/nN/nats-server.log` (kept across restarts) and quoted in the errors. The nodes are
//! killed and their directories removed when the guard drops.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How long [`NatsCluster::start`] and [`NatsCluster::restart`] wait.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Last bytes of each node's log quoted in an error.
const LOG_TAIL: usize = 3000;

/// One server of the cluster.
#[derive(Debug)]
struct Node {
    /// `server_name`: `n0`, `n1`, ...
    name: String,
    client_port: u16,
    route_port: u16,
    monitor_port: u16,
    /// `<dir>/nN`: configuration, log and JetStream store.
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn config_path(&self) -> PathBuf {
        self.dir.join("nats.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("nats-server.log")
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }
}

/// Tries at starting a cluster when a free port was taken by someone else meanwhile.
const START_ATTEMPTS: usize = 3;

/// A running cluster of `nats-server`s (killed on drop).
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Start `n` JetStream servers (3 for a cluster that survives the loss of one) clustered
    /// with each other on free loopback ports, and wait until JetStream is usable (meta
    /// leader elected, an R`n` stream can be created). The error quotes every node's log tail.
    ///
    /// The free ports are found by binding and releasing them, so another process may take
    /// one before its node binds it (`address already in use`): the cluster is then started
    /// again on fresh ports, up to [`START_ATTEMPTS`] times.
    pub async fn start(n: usize) -> anyhow::Result<NatsCluster> {
        let mut attempt = 1;
        loop {
            match NatsCluster::start_once(n).await {
                Err(e)
                    if attempt < START_ATTEMPTS
                        && format!("{e:#}").contains("address already in use") =>
                {
                    eprintln!("nats cluster: a port was taken before its node bound it; again");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(n: usize) -> anyhow::Result<NatsCluster> {
        if n == 0 {
            bail!("a NATS cluster needs at least one node");
        }
        let dir = tempfile::Builder::new()
            .prefix("palisade-nats-cluster-")
            .tempdir()
            .context("creating the cluster's directory")?;
        // Ports are taken together (all bound, then released) so that no two are the same.
        let ports = free_ports(3 * n)?;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(&node_dir)
                .with_context(|| format!("creating {}", node_dir.display()))?;
            nodes.push(Node {
                name: format!("n{i}"),
                client_port: ports[3 * i],
                route_port: ports[3 * i + 1],
                monitor_port: ports[3 * i + 2],
                dir: node_dir,
                child: None,
            });
        }
        for i in 0..n {
            let routes: Vec<String> = nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, other)| format!("\"nats-route://127.0.0.1:{}\"", other.route_port))
                .collect();
            let node = &nodes[i];
            let conf = format!(
                "server_name: {name}\n\
                 listen: 127.0.0.1:{client}\n\
                 http: 127.0.0.1:{monitor}\n\
                 jetstream {{\n  store_dir: \"{store}\"\n}}\n\
                 cluster {{\n  name: palisade-test\n  listen: 127.0.0.1:{route}\n  \
                 routes: [{routes}]\n}}\n",
                name = node.name,
                client = node.client_port,
                monitor = node.monitor_port,
                store = node.dir.join("js").display(),
                route = node.route_port,
                routes = routes.join(", "),
            );
            std::fs::write(node.config_path(), conf)
                .with_context(|| format!("writing {}", node.config_path().display()))?;
        }
        let mut cluster = NatsCluster { nodes, dir };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_path())
            .with_context(|| format!("opening {}", node.log_path().display()))?;
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(node.config_path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (run scripts/setup.sh to install it)")?;
        node.child = Some(child);
        Ok(())
    }

    /// Fail if a node that should run has exited.
    fn check_running(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.nodes[i].child = None;
                bail!(
                    "nats-server {} exited with {status}\n{}",
                    self.nodes[i].name,
                    self.log_tails()
                );
            }
        }
        Ok(())
    }

    /// Wait until JetStream answers through every running node and a stream with one replica
    /// per running node can be created.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            self.check_running()?;
            let last_error = match self.probe().await {
                Ok(()) => return Ok(()),
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the NATS cluster did not become ready in {READY_TIMEOUT:?}: {last_error}\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One readiness check: account info through each running node (answered by the meta
    /// leader, so it fails while there is none), then create and delete an R`k` stream (`k`
    /// running nodes), which needs every running node to be a current JetStream peer.
    async fn probe(&self) -> anyhow::Result<()> {
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
        for node in &running {
            let client = quick_connect(&node.url()).await?;
            js_account_info(&client)
                .await
                .with_context(|| format!("JetStream through {}", node.name))?;
        }
        let Some(first) = running.first() else {
            bail!("no node is running");
        };
        let js = async_nats::jetstream::new(quick_connect(&first.url()).await?);
        let name = "PALISADE_CLUSTER_PROBE";
        let created = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: name.into(),
                subjects: vec!["palisade-cluster-probe".into()],
                num_replicas: running.len(),
                storage: async_nats::jetstream::stream::StorageType::Memory,
                ..Default::default()
            })
            .await;
        // A probe left from an earlier attempt (created, then the reply timed out).
        let _ = js.delete_stream(name).await;
        created.with_context(|| format!("creating an R{} probe stream", running.len()))?;
        Ok(())
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's client URL, comma separated (`[nats] url`, `--nats-url`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(Node::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Node `i`'s `server_name` (`n<i>`, as stream and consumer infos name their leaders).
    pub fn server_name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The node whose `server_name` is `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Node `i`'s JetStream store directory.
    pub fn store_dir(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("js")
    }

    /// The cluster's directory (one `nN/` per node: configuration, log, store).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether node `i` runs (not killed, or restarted since).
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// A client that may use every node (it fails over to the others).
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        let servers: Vec<String> = self.nodes.iter().map(Node::url).collect();
        async_nats::ConnectOptions::new()
            .connect(servers.as_slice())
            .await
            .with_context(|| format!("connecting to {}", self.urls()))
    }

    /// A JetStream context on a new client of [`NatsCluster::connect`].
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.connect().await?))
    }

    /// The node that leads `stream` (its RAFT group), when one does.
    pub async fn stream_leader(&self, stream: &str) -> anyhow::Result<Option<usize>> {
        let js = self.jetstream().await?;
        let mut stream = js
            .get_stream(stream)
            .await
            .with_context(|| format!("stream {stream}"))?;
        let info = stream.info().await.context("stream info")?;
        Ok(info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.as_deref())
            .and_then(|leader| self.index_of(leader)))
    }

    /// The running nodes that have a client connection named `name` (the blocker connects
    /// as `palisade-blocker`, the sensor as `palisade-sensor`), read from each node's
    /// monitoring endpoint (`/connz`).
    pub async fn nodes_with_client(&self, name: &str) -> anyhow::Result<Vec<usize>> {
        let mut out = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let body = http_get(node.monitor_port, "/connz?limit=1024")
                .await
                .with_context(|| format!("/connz of {}", node.name))?;
            let connz: serde_json::Value = serde_json::from_str(&body)
                .with_context(|| format!("/connz of {} is not JSON", node.name))?;
            let found = connz["connections"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["name"].as_str() == Some(name)));
            if found {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// The node that leads the JetStream meta group (which places streams and consumers), as
    /// the running nodes' `/jsz` say.
    pub async fn meta_leader(&self) -> anyhow::Result<Option<usize>> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let body = http_get(node.monitor_port, "/jsz")
                .await
                .with_context(|| format!("/jsz of {}", node.name))?;
            let jsz: serde_json::Value = serde_json::from_str(&body)
                .with_context(|| format!("/jsz of {} is not JSON", node.name))?;
            if let Some(leader) = jsz["meta_cluster"]["leader"].as_str() {
                return Ok(self.index_of(leader));
            }
        }
        Ok(None)
    }

    /// Kill node `i` (SIGKILL), keeping its store, ports and log. A no-op for a node that is
    /// not running.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            child
                .kill()
                .await
                .with_context(|| format!("killing nats-server {}", node.name))?;
        }
        Ok(())
    }

    /// Start node `i` again (killing it first if it runs) with the same configuration, ports
    /// and store, and wait until the cluster is ready again with it (JetStream answers
    /// through every running node and an R`k` stream over the `k` running nodes can be
    /// created).
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i).await?;
        self.spawn(i)?;
        self.wait_ready().await
    }

    /// The last lines of every node's log, for error messages.
    pub fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                // A dead peer's reconnect attempts (one line a second) would fill the tail.
                let log: String = std::fs::read_to_string(node.log_path())
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.contains("Error trying to connect to route"))
                    .flat_map(|l| [l, "\n"])
                    .collect();
                let start = log.len().saturating_sub(LOG_TAIL);
                // Cut at a line start (the log is ASCII; `get` guards a char boundary).
                let tail = log.get(start..).unwrap_or(&log);
                let tail = match tail.find('\n') {
                    Some(nl) if start > 0 => &tail[nl + 1..],
                    _ => tail,
                };
                format!(
                    "--- {} (client port {}, route port {}) log tail:\n{}",
                    node.name,
                    node.client_port,
                    node.route_port,
                    tail.trim_end()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}

/// `count` distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("binding free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A client of one server that gives up quickly (readiness polling).
async fn quick_connect(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// `$JS.API.INFO`, raw (this client's typed account info does not parse the older servers'
/// reply): an error while JetStream has no meta leader.
async fn js_account_info(client: &async_nats::Client) -> anyhow::Result<()> {
    let reply = tokio::time::timeout(
        Duration::from_secs(2),
        client.request("$JS.API.INFO", "".into()),
    )
    .await
    .context("no JetStream account info in 2 s")?
    .context("JetStream account info")?;
    let info: serde_json::Value =
        serde_json::from_slice(&reply.payload).context("JetStream account info is not JSON")?;
    if let Some(err) = info.get("error") {
        bail!("JetStream account info: {err}");
    }
    Ok(())
}

/// GET `path` from the HTTP server on `127.0.0.1:port`: the body.
async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let text = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .context("no answer in 5 s")??;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("an HTTP answer without a body")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("HTTP {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}
