//! `make demo`: Palisade end to end on this machine. See `palisade_tests::demo`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use palisade_tests::demo::{self, DemoOptions, SensorMode};

/// Run Palisade end to end locally: nats-server, the AWS WAFv2 emulator, a web app behind a
/// veth pair, the blocker and the sensor, and a mix of benign and malicious clients.
#[derive(Debug, Parser)]
#[command(name = "palisade-demo", version, about)]
struct Cli {
    /// Directory with the palisade-blocker and palisade-sensor binaries (default: next to this one).
    #[arg(long, env = "PALISADE_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Use the access-log source even where eBPF is available.
    #[arg(long, conflicts_with_all = ["mirror_source", "tc_source"])]
    log_source: bool,
    /// Capture with TC on the veth (`--source ebpf`) instead of the cgroup source.
    #[arg(long, conflicts_with = "mirror_source")]
    tc_source: bool,
    /// Put nginx with the shipped mirror snippet in front of the app and run the sensor in
    /// mirror mode (the Fargate sidecar), even where eBPF is available.
    #[arg(long, env = "PALISADE_DEMO_MIRROR")]
    mirror_source: bool,
    /// Also write the outcome as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run the sensor with the OWASP Core Rule Set beside its built-in rules (e.g. Debian's
    /// /usr/share/modsecurity-crs).
    #[arg(long, env = "PALISADE_CRS_DIR")]
    crs_dir: Option<PathBuf>,
    /// Internal: run only the demo web app on this address (the demo starts it so, inside its
    /// pod's cgroup).
    #[arg(long, hide = true, requires = "access_log")]
    serve_app: Option<std::net::SocketAddr>,
    /// Internal: the access log of `--serve-app`.
    #[arg(long, hide = true)]
    access_log: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let (Some(addr), Some(log)) = (cli.serve_app, cli.access_log) {
        return demo::serve_app_on(addr, log).await;
    }
    let bin_dir = match cli.bin_dir {
        Some(d) => d,
        None => palisade_tests::default_bin_dir()?,
    };
    let opts = DemoOptions {
        bin_dir,
        mode: if cli.mirror_source {
            Some(SensorMode::Mirror)
        } else if cli.tc_source {
            Some(SensorMode::Ebpf)
        } else {
            cli.log_source.then_some(SensorMode::Log)
        },
        verbose: true,
        crs_dir: cli.crs_dir,
    };
    // Ctrl-C or SIGTERM drops the demo future, and with it every guard: processes, the
    // namespace, the servers.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let outcome = tokio::select! {
        r = demo::run(opts) => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; everything the demo started was stopped"),
        _ = term.recv() => anyhow::bail!("terminated; everything the demo started was stopped"),
    };
    demo::print_summary(&outcome);
    if let Some(path) = cli.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&outcome)?)
            .with_context(|| format!("writing {path:?}"))?;
    }
    if !outcome.success() {
        std::process::exit(1);
    }
    Ok(())
}
