//! `palisade-blocker`: parse flags, set up tracing, signals and systemd notification, run the
//! library.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use palisade_blocker::{Cli, build_firewall, run_with};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
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
