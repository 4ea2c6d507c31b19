//! A real nginx (Debian's `nginx-light`) on a free loopback port, for tests that need to know
//! what a server really serves.
//!
//! ```no_run
//! let nginx = palisade_tests::nginx::Nginx::start("location / { return 200 \"served\\n\"; }")?;
//! let addr = ("127.0.0.1", nginx.port());
//! # anyhow::Ok(())
//! ```
//! nginx runs in the foreground as one process (`daemon off; master_process off;`) with a
//! configuration written into a temporary directory: one `server` on `127.0.0.1:<port>` holding
//! the given `location` blocks, and otherwise nginx's defaults (header buffers, invalid header
//! handling, keep-alive), which are what the tests measure. The process is killed and the
//! directory removed when the guard drops.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running nginx (killed on drop).
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    listen: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Start nginx with `locations` (the inside of the `server` block) on a free port. Tries a
    /// few ports when another process takes the chosen one first.
    pub fn start(locations: &str) -> anyhow::Result<Nginx> {
        Nginx::start_with_http("", locations)
    }

    /// Like [`Nginx::start`], with `http` added at `http` level (upstream blocks, includes).
    pub fn start_with_http(http: &str, locations: &str) -> anyhow::Result<Nginx> {
        let mut last = None;
        for _ in 0..3 {
            match Nginx::start_once(None, http, locations) {
                Ok(nginx) => return Ok(nginx),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("nginx did not start")))
    }

    /// Like [`Nginx::start_with_http`], listening on `listen` (the demo's veth address).
    pub fn start_on(listen: SocketAddr, http: &str, locations: &str) -> anyhow::Result<Nginx> {
        Nginx::start_once(Some(listen), http, locations)
    }

    fn start_once(
        listen: Option<SocketAddr>,
        http: &str,
        locations: &str,
    ) -> anyhow::Result<Nginx> {
        let dir = tempfile::Builder::new()
            .prefix("palisade-nginx-")
            .tempdir()
            .context("creating nginx's directory")?;
        let listen = match listen {
            Some(addr) => addr,
            None => SocketAddr::from(([127, 0, 0, 1], crate::free_port()?)),
        };
        let conf = config(dir.path(), listen, http, locations);
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).context("writing nginx.conf")?;
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nginx (run scripts/setup.sh to install nginx-light)")?;
        let mut nginx = Nginx { child, listen, dir };
        nginx.wait_ready()?;
        Ok(nginx)
    }

    /// Wait until nginx accepts connections (hang guard: 30 s). A connection alone proves
    /// nothing: when another process took the port first, nginx retries its bind() for 2.5 s
    /// while that process accepts. nginx writes its pid file only once its listening sockets
    /// are bound, so the pid file comes first; a bind that keeps failing makes nginx exit,
    /// and the caller tries another port.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let pid_file = self.dir.path().join("nginx.pid");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                let mut stderr = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                bail!("nginx exited early with {status}: {}", stderr.trim());
            }
            if pid_file.exists() && TcpStream::connect(self.listen).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nginx did not listen on {} within 30 s", self.listen);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port nginx listens on (on 127.0.0.1 unless started with [`Nginx::start_on`]).
    pub fn port(&self) -> u16 {
        self.listen.port()
    }

    /// nginx's error log so far (`info` level: it names the header lines nginx ignored).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// `nginx -v`'s version string (`nginx/1.22.1`), when nginx is installed.
    pub fn version() -> Option<String> {
        let out = Command::new(nginx_binary()).arg("-v").output().ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        text.split_whitespace()
            .find(|w| w.starts_with("nginx/"))
            .map(str::to_owned)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `nginx` from `PATH`, or Debian's location (`/usr/sbin` is not on every user's `PATH`).
fn nginx_binary() -> &'static str {
    let debian = "/usr/sbin/nginx";
    if Path::new(debian).exists() {
        debian
    } else {
        "nginx"
    }
}

fn config(dir: &Path, listen: SocketAddr, http: &str, locations: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    {http}
    server {{
        listen {listen};
        {locations}
    }}
}}
"
    )
}

/// The shipped mirror configuration (`config/nginx/`), as an nginx in front of an app includes
/// it, sending the mirror to palisade-sensor on `127.0.0.1:sensor_port`: the `http`-level part
/// (the upstream file, only its port changed) and the `server`-level include of the snippet
/// itself, unchanged.
pub fn shipped_mirror(sensor_port: u16) -> anyhow::Result<(String, String)> {
    let dir = crate::workspace_root().join("config/nginx");
    let upstream_file = dir.join("palisade-mirror-upstream.conf");
    let upstream = std::fs::read_to_string(&upstream_file)
        .with_context(|| format!("reading {}", upstream_file.display()))?;
    let default = "127.0.0.1:9099";
    if !upstream.contains(default) {
        bail!("{} no longer names {default}", upstream_file.display());
    }
    let http = upstream.replace(default, &format!("127.0.0.1:{sensor_port}"));
    let server = format!("include {};", dir.join("palisade-mirror.conf").display());
    Ok((http, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another process listening on the port first must not pass for nginx: the start fails
    /// (and [`Nginx::start`] goes on to another port) instead of handing out a port that
    /// someone else answers on.
    #[test]
    fn a_port_taken_by_another_process_is_not_mistaken_for_nginx() {
        if crate::skip_because(
            "a_port_taken_by_another_process_is_not_mistaken_for_nginx",
            Nginx::version()
                .is_none()
                .then(|| "nginx is not installed (run scripts/setup.sh)".to_owned()),
        ) {
            return;
        }
        let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = squatter.local_addr().expect("addr");
        let started = Nginx::start_on(taken, "", r#"location / { return 200 "nginx\n"; }"#);
        assert!(
            started.is_err(),
            "nginx reported ready on {taken}, which another process holds"
        );
        // on a free port it starts
        let nginx = Nginx::start(r#"location / { return 200 "nginx\n"; }"#).expect("nginx starts");
        assert!(TcpStream::connect(("127.0.0.1", nginx.port())).is_ok());
    }
}
