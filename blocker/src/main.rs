//! `palisade-blocker`: parse flags, set up tracing, signals and systemd notification, run the
//! library; or, with `credentials`, mint the NATS NKey users of the sensors and the blocker.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use palisade_blocker::identity::{self, Credentials};
use palisade_blocker::{Cli, StateBackend, build_firewall, migrate_state, run_with};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// Consumes attack reports from NATS JetStream, decides blocks and keeps the firewall in sync.
#[derive(Debug, Parser)]
#[command(name = "palisade-blocker", version, about)]
struct Args {
    #[command(flatten)]
    run: Cli,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint the NATS NKey user of a sensor or of the blocker: the seed file for the service
    /// and the nats-server `authorization { users = [...] }` entry with its permissions.
    #[command(subcommand)]
    Credentials(Mint),
    /// Copy the embedded backend's state (blocks, offence counts, the IP-set entries Palisade
    /// owns) into the `nats` backend's bucket (`[state] bucket`), before the replicas start
    /// on it. Stop the old blocker first. Fills an empty bucket only.
    MigrateState {
        /// The directory of the old blocker's `blocker.redb` (default: `[state] dir`).
        #[arg(long)]
        from: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum Mint {
    /// A sensor's user: may publish only on `palisade.reports.<ID>`.
    Sensor {
        /// The sensor's id (its `sensor_id`; one NATS subject token: letters, digits, `_`, `-`).
        id: String,
        /// Write the seed to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        seed_file: Option<PathBuf>,
    },
    /// The blocker's user (shared by its replicas), for the stream, consumer and inbox prefix
    /// of the configuration (`--config` and the flags before `credentials`), and with the
    /// `nats` state backend for its bucket and the replicas' admin subject.
    Blocker {
        /// Write the seed to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        seed_file: Option<PathBuf>,
    },
}

/// Write the seed file (never over an existing file) and print the server entry; without a
/// file, print both.
fn emit(creds: &Credentials, seed_file: Option<&Path>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match seed_file {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating the seed file {}", path.display()))?;
            f.write_all(creds.seed_file().as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("writing the seed file {}", path.display()))?;
            eprintln!("seed of {} written to {}", creds.who, path.display());
        }
        None => {
            writeln!(
                out,
                "# Seed file of {} (secret: give it to that service only, mode 0400):",
                creds.who
            )?;
            out.write_all(creds.seed_file().as_bytes())?;
            writeln!(out)?;
        }
    }
    writeln!(
        out,
        "# nats-server: add this user to authorization {{ users = [ ... ] }}"
    )?;
    out.write_all(creds.server_entry().as_bytes())?;
    Ok(())
}

fn credentials(run: &Cli, mint: &Mint) -> anyhow::Result<()> {
    match mint {
        Mint::Sensor { id, seed_file } => {
            let creds = identity::mint_sensor(id).context("minting the sensor's credentials")?;
            emit(&creds, seed_file.as_deref())
        }
        Mint::Blocker { seed_file } => {
            let config = run.load().context("loading the configuration")?;
            let n = &config.nats;
            let bucket =
                (config.state.backend == StateBackend::Nats).then_some(&*config.state.bucket);
            let f = &config.falco;
            let falco = f.enabled.then_some((&*f.subject, &*f.sensor_id));
            let creds =
                identity::mint_blocker(&n.stream, &n.consumer, &n.inbox_prefix, bucket, falco)
                    .context("minting the blocker's credentials")?;
            emit(&creds, seed_file.as_deref())
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Credentials(mint)) = &args.command {
        return credentials(&args.run, mint);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    if let Some(Command::MigrateState { from }) = &args.command {
        let config = args.run.load().context("loading the configuration")?;
        let from = from.clone().unwrap_or_else(|| config.state.dir.clone());
        let m = migrate_state(&config, &from).await.with_context(|| {
            format!(
                "migrating {} into bucket `{}`",
                from.display(),
                config.state.bucket
            )
        })?;
        println!(
            "migrated {} blocks, {} offence records and {} owned IP-set entries from {} into bucket `{}`",
            m.blocks,
            m.offences,
            m.owned,
            from.display(),
            config.state.bucket
        );
        return Ok(());
    }
    let cli = args.run;
    let config = cli.load().context("loading the configuration")?;
    let firewall = build_firewall(&config.provider)
        .await
        .context("building the firewall provider")?;

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "stopping"),
            _ = int.recv() => info!(signal = "SIGINT", "stopping"),
        }
    };

    // systemd: READY=1 once up, watchdog pings when WATCHDOG_USEC is set. Both are no-ops
    // when not running under systemd.
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) {
        let every = Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(err) = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]) {
                    warn!(cause = %err, "systemd watchdog ping failed");
                }
            }
        });
    }
    run_with(config, firewall, shutdown, |addr| {
        info!(admin = %addr, "ready");
        if let Err(err) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            warn!(cause = %err, "systemd notification failed");
        }
    })
    .await
    .context("blocker failed")?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    Ok(())
}
