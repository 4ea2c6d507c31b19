//! Test harness shared by every crate's integration tests: real servers on free loopback ports,
//! started by the tests and stopped when their guard drops.
//!
//! - [`nats`]: a real `nats-server` with JetStream, or a cluster of them.
//! - [`moto`]: the AWS WAFv2 emulator (moto in server mode) and a fault-and-limits proxy that
//!   behaves as AWS documents where moto does not.
//! - [`netns`]: network namespaces and veth pairs for the eBPF tests (root only).
//! - [`nginx`]: a real nginx (Debian's `nginx-light`) with a configuration the test writes.
//! - [`openmetrics`]: a strict parser of `/metrics` pages (OpenMetrics and Prometheus text).

pub mod cgroup;
pub mod corpus;
pub mod demo;
pub mod failover;
pub mod moto;
pub mod nats;
pub mod netns;
pub mod nginx;
pub mod openmetrics;
pub mod restart;
pub mod time_to_block;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound, then released for the server to take).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Sends `signal` (`kill`'s spelling: `-TERM`, `-STOP`, `-CONT`) to process `pid`; `Err` when
/// `kill` cannot run or fails (the process is gone).
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .map_err(|e| anyhow::anyhow!("running kill: {e}"))?;
    if !status.success() {
        anyhow::bail!("kill {signal} {pid} failed: {status}");
    }
    Ok(())
}

/// The workspace root (where `Cargo.toml`, `.venv` and `scripts/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// For tests that need something a machine may lack: `true` (after printing why) when
/// `missing` says what is missing and `test` should return early. Under `CI=true` (CI
/// installs everything with `scripts/setup.sh` and runs as root) a test that cannot run is a
/// failure, not a skip: this panics with the reason instead.
pub fn skip_because(test: &str, missing: Option<String>) -> bool {
    let Some(reason) = missing else {
        return false;
    };
    if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        panic!("{test} cannot run with CI=true: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
    true
}

/// Where the workspace's binaries are when none is given: the directory of the running
/// executable (`target/<profile>/`, since the demo and bench binaries are built beside them).
pub fn default_bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("{exe:?} has no parent directory"))
}

/// `target/<profile>`, where cargo put the workspace's binaries, seen from an integration
/// test binary (which runs from `target/<profile>/deps/`).
pub fn test_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// Poll `f` every `poll` until it is true; panic naming `what` after `within`.
pub async fn wait_for<F, Fut>(what: &str, within: Duration, poll: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(poll).await;
    }
}

/// Assert that the IP sets hold exactly `expected`, naming a few of the entries missing and
/// unexpected when not.
pub fn assert_converged(expected: &BTreeSet<String>, entries: &BTreeSet<String>) {
    let missing: Vec<_> = expected.difference(entries).take(5).collect();
    let extra: Vec<_> = entries.difference(expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "did not converge: missing e.g. {missing:?}, unexpected e.g. {extra:?}"
    );
}
