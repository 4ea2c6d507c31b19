//! A real `nats-server` with JetStream on a free loopback port, for tests.
//!
//! ```no_run
//! # async fn t() -> anyhow::Result<()> {
//! let server = palisade_tests::nats::NatsServer::start().await?;
//! let client = server.connect().await?;
//! # Ok(()) }
//! ```
//! The server runs `nats-server -js -a 127.0.0.1 -p <port> -sd <tempdir>`; it is killed and its
//! store directory removed when the guard drops. [`NatsServer::stop`] and
//! [`NatsServer::restart`] keep the store (and the port), to test restarts.
//! [`NatsServer::start_with_config`] runs it from a configuration file instead (users and
//! their permissions), with JetStream and the listen address added.
//!
//! [`NatsCluster`] runs several servers clustered with each other (JetStream replicas,
//! failover when a node is killed).

mod cluster;

pub use cluster::NatsCluster;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A running `nats-server` (killed on drop).
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    /// The configuration file, when started with [`NatsServer::start_with_config`].
    config: Option<std::path::PathBuf>,
}

impl NatsServer {
    /// Start a JetStream-enabled server on a free port with a fresh store dir.
    pub async fn start() -> anyhow::Result<NatsServer> {
        let store = tempfile::Builder::new()
            .prefix("palisade-nats-")
            .tempdir()
            .context("creating the JetStream store dir")?;
        let port = crate::free_port()?;
        let mut server = NatsServer {
            child: None,
            port,
            store,
            config: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// Start a JetStream-enabled server from `conf` (nats-server configuration: typically an
    /// `authorization { users = [...] }` block) on a free port with a fresh store dir. Ready
    /// once it accepts TCP connections (anonymous clients may be refused by `conf`; the
    /// server enables JetStream before it accepts any client).
    pub async fn start_with_config(conf: &str) -> anyhow::Result<NatsServer> {
        let store = tempfile::Builder::new()
            .prefix("palisade-nats-")
            .tempdir()
            .context("creating the JetStream store dir")?;
        let port = crate::free_port()?;
        let path = store.path().join("nats.conf");
        let jetstream = store.path().join("js");
        std::fs::write(
            &path,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\n{conf}\n",
                jetstream.display()
            ),
        )
        .context("writing the nats-server configuration")?;
        let mut server = NatsServer {
            child: None,
            port,
            store,
            config: Some(path),
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("nats-server");
        match &self.config {
            Some(path) => cmd.arg("-c").arg(path),
            None => cmd
                .args(["-js", "-a", "127.0.0.1", "-p"])
                .arg(self.port.to_string())
                .arg("-sd")
                .arg(self.store.path()),
        };
        // A server started from a configuration logs to a file, quoted when it exits early.
        let stderr = match &self.config {
            Some(_) => Stdio::from(
                std::fs::File::create(self.store.path().join("nats-server.log"))
                    .context("creating the nats-server log")?,
            ),
            None => Stdio::null(),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .context("starting nats-server (run scripts/setup.sh to install it)")?;
        self.child = Some(child);
        if self.config.is_some() {
            self.wait_listening().await
        } else {
            self.wait_ready().await
        }
    }

    /// Wait until the server accepts TCP connections.
    async fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let log = std::fs::read_to_string(self.store.path().join("nats-server.log"))
                    .unwrap_or_default();
                bail!("nats-server exited early with {status}: {}", log.trim());
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("nats-server on port {} did not listen", self.port);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until the server accepts connections and JetStream answers.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let last_error: String;
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("nats-server exited early with {status}");
            }
            match async_nats::connect(self.url()).await {
                // A raw request: this client's typed account info does not parse the older
                // servers' reply, and only "JetStream answers" matters here.
                Ok(client) => match client.request("$JS.API.INFO", "".into()).await {
                    Ok(reply) if !reply.payload.is_empty() => return Ok(()),
                    Ok(_) => last_error = "empty JetStream account info".into(),
                    Err(e) => last_error = format!("JetStream account info: {e}"),
                },
                Err(e) => last_error = format!("connect: {e}"),
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "nats-server on port {} did not become ready: {last_error}",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server's process (SIGSTOP) without closing its connections: requests to it
    /// wait, as on a stalled disk or network, until [`NatsServer::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, which: &str) -> anyhow::Result<()> {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .context("the server is not running")?;
        crate::signal(pid, which)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// What a server started with [`NatsServer::start_with_config`] has logged so far
    /// (permission violations among it); empty for the others.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.store.path().join("nats-server.log")).unwrap_or_default()
    }

    /// A plain client.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::connect(self.url())
            .await
            .with_context(|| format!("connecting to {}", self.url()))
    }

    /// A JetStream context on a new client.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.connect().await?))
    }

    /// Every message stored in `stream`, oldest first (none when the stream does not exist
    /// yet; deleted sequences are left out).
    pub async fn stored_messages(
        &self,
        stream: &str,
    ) -> anyhow::Result<Vec<async_nats::jetstream::message::StreamMessage>> {
        let js = self.jetstream().await?;
        let Ok(mut stream) = js.get_stream(stream).await else {
            return Ok(Vec::new());
        };
        let last = stream.info().await?.state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            if let Ok(msg) = stream.get_raw_message(seq).await {
                out.push(msg);
            }
        }
        Ok(out)
    }

    /// Stop the server (SIGKILL), keeping its store.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing nats-server")?;
        }
        Ok(())
    }

    /// Start it again on the same port with the same store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        // The port was just released by the killed server.
        self.spawn().await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}
