//! `palisade`: the command line of a Palisade blocker, through its admin API.
//!
//! The binary (`src/main.rs`) parses [`Cli`], calls [`run`] and turns an [`Error`] into a
//! message on stderr and an exit code ([`error::exit`]). Output goes to stdout: aligned
//! tables for people, or JSON (`-o json`) for scripts.

pub mod client;
pub mod error;
pub mod model;
pub mod render;

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use clap::{Args, Parser, Subcommand, ValueEnum};
use hyper::{Method, StatusCode};
use serde::Serialize;

pub use crate::client::Client;
pub use crate::error::{Error, Result};
use crate::model::{Block, BlockList, Filter, HistoryPage, SensorList, Status, Target};
use crate::render::{relative, table, time};

/// Operate a Palisade blocker: its state, its blocks and the sensors reporting to it.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every subcommand.
#[derive(Debug, Args)]
pub struct Global {
    /// The blocker's admin API (plain HTTP).
    #[arg(
        long,
        env = "PALISADE_URL",
        default_value = "http://127.0.0.1:9460",
        global = true
    )]
    pub url: String,
    /// Bearer token: a write token (reads and changes: admin.token, or an [[admin.tokens]]
    /// entry with access = "write") or a read token (reads). Without
    /// --token or --token-file, the PALISADE_TOKEN environment variable.
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Read the token from this file (surrounding whitespace ignored); --token wins over it,
    /// it wins over PALISADE_TOKEN.
    #[arg(long, env = "PALISADE_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Give up on the blocker after this many seconds.
    #[arg(long, default_value_t = 10, global = true)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON on stdout for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Readiness, lease, firewall set fill, last reconcile, sensors seen.
    Status,
    /// Blocks in force.
    #[command(subcommand)]
    Blocks(BlocksCommand),
    /// Sensors reporting to the blocker.
    #[command(subcommand)]
    Sensors(SensorsCommand),
    /// What happened to an address, newest first: decisions, manual blocks and releases (with
    /// who made them), expiries; kept after its blocks ended.
    History(HistoryArgs),
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// An address (the entries of every block that contained it) or a CIDR (those of every
    /// block inside it or containing it).
    pub target: String,
    /// At most this many entries (1 to 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Only entries older than this id (the `next_before` of the previous page).
    #[arg(long)]
    pub before: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum BlocksCommand {
    /// List blocks (every filter given must hold).
    List(ListArgs),
    /// One block with every reason and manual action.
    Show {
        /// An address (the block that contains it) or a CIDR.
        target: String,
    },
    /// Block an address or network by hand.
    Add {
        /// Address or CIDR (at most /24 for IPv4, /48 for IPv6).
        cidr: String,
        /// How long: 90s, 30m, 1h, 1h30m, 7d (default: the policy's TTL).
        #[arg(long)]
        ttl: Option<String>,
        /// Why (kept as the reason's evidence).
        #[arg(long)]
        note: Option<String>,
        /// Block an allowlisted or special-purpose network anyway.
        #[arg(long)]
        force: bool,
    },
    /// End a block now.
    Release {
        /// The blocked CIDR, or an address inside it.
        target: String,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Blocks inside this network, or the block containing this address.
    #[arg(long)]
    pub cidr: Option<String>,
    /// Blocks with a report of this rule.
    #[arg(long)]
    pub rule: Option<String>,
    /// Blocks with a report of this category (sqli, xss, rce, ...).
    #[arg(long)]
    pub category: Option<String>,
    /// Blocks reported by this sensor.
    #[arg(long)]
    pub sensor: Option<String>,
    /// Blocks with a report from a workload in this Kubernetes namespace.
    #[arg(long)]
    pub namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SensorsCommand {
    /// Per sensor: last report, reports per minute, rejected reports.
    List,
}

impl Global {
    /// The admin API client these options describe.
    pub fn client(&self) -> Result<Client> {
        let token = match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        Error::Usage(format!(
                            "cannot read the token file {}: {e}",
                            path.display()
                        ))
                    })?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => std::env::var("PALISADE_TOKEN").ok(),
        };
        Client::new(&self.url, token, Duration::from_secs(self.timeout.max(1)))
    }
}

/// Run a command; the text to print on stdout.
pub async fn run(cli: &Cli) -> Result<String> {
    let client = cli.global.client()?;
    let json = cli.global.output == Output::Json;
    match &cli.command {
        Command::Status => status(&client, json).await,
        Command::Sensors(SensorsCommand::List) => sensors(&client, json).await,
        Command::Blocks(BlocksCommand::List(args)) => list(&client, args, json).await,
        Command::Blocks(BlocksCommand::Show { target }) => show(&client, target, json).await,
        Command::Blocks(BlocksCommand::Add {
            cidr,
            ttl,
            note,
            force,
        }) => add(&client, cidr, ttl.as_deref(), note.clone(), *force, json).await,
        Command::Blocks(BlocksCommand::Release { target }) => release(&client, target, json).await,
        Command::History(args) => history(&client, args, json).await,
    }
}

fn to_json(v: &impl Serialize) -> String {
    // Our own types, plain data: serialization cannot fail.
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

async fn status(client: &Client, json: bool) -> Result<String> {
    let s: Status = client.get("/v1/status").await?;
    if json {
        return Ok(to_json(&s));
    }
    let now = Utc::now();
    let mut out = String::new();
    let ready = if s.ready { "ready" } else { "NOT READY" };
    out.push_str(&format!("Blocker      {}  {ready}\n", client.url()));
    out.push_str(&format!(
        "Leader       {}\nNATS         {}\nStore        {}\n",
        yes_no(s.leader),
        if s.nats_connected {
            "connected"
        } else {
            "DISCONNECTED"
        },
        if s.store_open { "open" } else { "FAILING" },
    ));
    let last = match s.reconcile.last_success {
        Some(t) => format!("{} ({})", relative(t, now), time(t)),
        None => "never".into(),
    };
    out.push_str(&format!(
        "Reconcile    {}, last success {last}, {} runs, last took {:.1} ms\n",
        if s.last_reconcile_ok { "ok" } else { "FAILING" },
        s.reconcile.runs,
        s.reconcile.last_duration_ms,
    ));
    out.push_str(&format!(
        "Blocks       {} active, {} deferred\nSensors      {} seen\n",
        s.blocks_active, s.blocks_deferred, s.sensors_seen
    ));
    if !s.leader {
        out.push_str(
            "(a standby replica: the lease holder has the reconcile, set and sensor figures)\n",
        );
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .sets
        .iter()
        .map(|set| {
            let fill = if set.capacity == 0 {
                0.0
            } else {
                set.entries as f64 * 100.0 / set.capacity as f64
            };
            vec![
                set.id.clone(),
                set.family.clone(),
                set.entries.to_string(),
                set.capacity.to_string(),
                format!("{fill:.1}%"),
            ]
        })
        .collect();
    out.push_str(&table(
        &["SET", "FAMILY", "ENTRIES", "CAPACITY", "FILL"],
        &rows,
    ));
    Ok(out)
}

async fn sensors(client: &Client, json: bool) -> Result<String> {
    let list: SensorList = client.get("/v1/sensors").await?;
    if json {
        return Ok(to_json(&list));
    }
    let now = Utc::now();
    let rows: Vec<Vec<String>> = list
        .sensors
        .iter()
        .map(|s| {
            vec![
                s.sensor.clone(),
                relative(s.last_report, now),
                format!("{:.1}", s.reports_per_min),
                s.reports.to_string(),
                s.rejected.to_string(),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "SENSOR",
            "LAST REPORT",
            "REPORTS/MIN",
            "REPORTS",
            "REJECTED",
        ],
        &rows,
    );
    if list.untracked_reports > 0 {
        out.push_str(&format!(
            "({} reports from sensors beyond the ones tracked)\n",
            list.untracked_reports
        ));
    }
    Ok(out)
}

async fn blocks(client: &Client) -> Result<Vec<Block>> {
    Ok(client.get::<BlockList>("/v1/blocks").await?.blocks)
}

fn target(s: &str) -> Result<Target> {
    Target::parse(s).ok_or_else(|| Error::Usage(format!("`{s}` is not an IP address or a CIDR")))
}

async fn list(client: &Client, args: &ListArgs, json: bool) -> Result<String> {
    let filter = Filter {
        cidr: args.cidr.as_deref().map(target).transpose()?,
        rule: args.rule.clone(),
        category: args.category.clone(),
        sensor: args.sensor.clone(),
        namespace: args.namespace.clone(),
    };
    let blocks: Vec<Block> = blocks(client)
        .await?
        .into_iter()
        .filter(|b| filter.matches(b))
        .collect();
    if json {
        return Ok(to_json(&BlockList {
            count: blocks.len(),
            blocks,
        }));
    }
    let now = Utc::now();
    let rows: Vec<Vec<String>> = blocks
        .iter()
        .map(|b| {
            let dash = |v: Vec<&str>| {
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    v.join(",")
                }
            };
            let mut flags = Vec::new();
            if b.manual {
                flags.push("manual");
            }
            if b.deferred {
                flags.push("deferred");
            }
            vec![
                b.cidr.to_string(),
                b.severity.clone(),
                dash(b.distinct(|r| Some(r.category.as_str()))),
                b.reasons.last().map(|r| r.rule.clone()).unwrap_or_default(),
                b.decided_by().to_owned(),
                dash(b.distinct(|r| r.context_str("namespace"))),
                b.hits.to_string(),
                relative(b.first_seen, now),
                relative(b.expires_at, now),
                dash(flags),
            ]
        })
        .collect();
    Ok(table(
        &[
            "CIDR",
            "SEVERITY",
            "CATEGORY",
            "LAST RULE",
            "SENSOR",
            "NAMESPACE",
            "HITS",
            "DECIDED",
            "EXPIRES",
            "FLAGS",
        ],
        &rows,
    ))
}

/// The block `s` designates: the one containing an address, or equal to (or containing) a
/// network.
async fn find(client: &Client, s: &str) -> Result<Block> {
    let t = target(s)?;
    let mut found: Vec<Block> = blocks(client)
        .await?
        .into_iter()
        .filter(|b| match t {
            Target::Addr(a) => b.cidr.contains(&a),
            Target::Net(n) => b.cidr.contains(&n),
        })
        .collect();
    // The most specific block first.
    found.sort_by_key(|b| std::cmp::Reverse(b.cidr.prefix_len()));
    found.into_iter().next().ok_or_else(|| {
        Error::NotFound(format!(
            "{s} is not blocked (what happened to it before: palisade history {s})"
        ))
    })
}

async fn show(client: &Client, s: &str, json: bool) -> Result<String> {
    let b = find(client, s).await?;
    if json {
        return Ok(to_json(&b));
    }
    let now = Utc::now();
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<13}{v}\n"));
    line("CIDR", b.cidr.to_string());
    line("Severity", b.severity.clone());
    line(
        "Decided",
        format!("{} ({})", time(b.first_seen), relative(b.first_seen, now)),
    );
    line(
        "Last report",
        format!("{} ({})", time(b.last_seen), relative(b.last_seen, now)),
    );
    line(
        "Expires",
        format!("{} ({})", time(b.expires_at), relative(b.expires_at, now)),
    );
    line("Hits", b.hits.to_string());
    line("Offences", b.offences.to_string());
    line("Sensors", b.sensors.join(", "));
    line("History", format!("palisade history {}", b.cidr));
    let mut flags = Vec::new();
    if b.manual {
        flags.push("manual");
    }
    if b.deferred {
        flags.push("deferred (waiting for the new-block cap)");
    }
    if !flags.is_empty() {
        line("Flags", flags.join(", "));
    }
    let (manual, reports): (Vec<_>, Vec<_>) = b.reasons.iter().partition(|r| r.is_manual());
    if !reports.is_empty() {
        out.push_str(&format!("\nReports ({}, oldest first):\n", reports.len()));
    }
    for r in &reports {
        out.push_str(&format!(
            "  {}  {}  {} ({}, {})  sensor {}\n",
            time(r.observed_at),
            r.report_id,
            r.rule,
            r.category,
            r.severity,
            r.sensor
        ));
        out.push_str(&format!("      evidence  {}\n", r.evidence));
        if !r.mitre.is_empty() {
            out.push_str(&format!("      mitre     {}\n", r.mitre.join(", ")));
        }
        if let Some(ctx) = &r.context {
            let parts: Vec<String> = ctx
                .iter()
                .map(|(k, v)| match v.as_str() {
                    Some(s) => format!("{k}={s}"),
                    None => format!("{k}={v}"),
                })
                .collect();
            out.push_str(&format!("      context   {}\n", parts.join(" ")));
        }
    }
    if !manual.is_empty() {
        out.push_str(&format!("\nManual actions ({}):\n", manual.len()));
        for r in &manual {
            out.push_str(&format!(
                "  {}  {}  by {}  note: {}\n",
                time(r.observed_at),
                r.report_id,
                r.who(),
                if r.evidence.is_empty() {
                    "-"
                } else {
                    &r.evidence
                }
            ));
        }
    }
    Ok(out)
}

async fn add(
    client: &Client,
    cidr: &str,
    ttl: Option<&str>,
    note: Option<String>,
    force: bool,
    json: bool,
) -> Result<String> {
    let ttl_secs = ttl
        .map(|t| {
            render::parse_ttl(t).ok_or_else(|| {
                Error::Usage(format!("--ttl {t}: not a duration (e.g. 90s, 30m, 1h, 7d)"))
            })
        })
        .transpose()?;
    let body = serde_json::json!({
        "cidr": cidr,
        "ttl_secs": ttl_secs,
        "note": note,
        "force": force,
    });
    let answer = client.send(Method::POST, "/v1/blocks", Some(body)).await?;
    if answer.status != StatusCode::CREATED {
        return Err(client::api_error(&answer));
    }
    let b: Block = client.decode(&answer.body)?;
    if json {
        return Ok(to_json(&b));
    }
    Ok(format!(
        "blocked {} until {} ({})\n",
        b.cidr,
        time(b.expires_at),
        relative(b.expires_at, Utc::now())
    ))
}

#[derive(Serialize)]
struct Released {
    released: String,
}

async fn release(client: &Client, s: &str, json: bool) -> Result<String> {
    // An address stands for the block that contains it; a CIDR is released as written.
    let cidr = match target(s)? {
        Target::Addr(_) => find(client, s).await?.cidr.to_string(),
        Target::Net(n) => n.to_string(),
    };
    let path = format!("/v1/blocks/{}", cidr.replace('/', "_"));
    let answer = client.send(Method::DELETE, &path, None).await?;
    match answer.status {
        StatusCode::NO_CONTENT | StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Err(Error::NotFound(format!("{cidr} is not blocked"))),
        _ => return Err(client::api_error(&answer)),
    }
    if json {
        return Ok(to_json(&Released { released: cidr }));
    }
    Ok(format!("released {cidr}\n"))
}

async fn history(client: &Client, args: &HistoryArgs, json: bool) -> Result<String> {
    let t = target(&args.target)?;
    if !(1..=1000).contains(&args.limit) {
        return Err(Error::Usage(format!(
            "--limit {}: must be 1 to 1000",
            args.limit
        )));
    }
    let what = match t {
        Target::Addr(a) => a.to_string(),
        Target::Net(n) => n.to_string(),
    };
    let mut path = format!(
        "/v1/history/{}?limit={}",
        what.replace('/', "_"),
        args.limit
    );
    if let Some(b) = args.before {
        path.push_str(&format!("&before={b}"));
    }
    let page: HistoryPage = client.get(&path).await?;
    if page.entries.is_empty() {
        return Err(Error::NotFound(match args.before {
            Some(_) => format!("no older history for {what}"),
            None => format!("no history for {what}"),
        }));
    }
    if json {
        return Ok(to_json(&page));
    }
    let now = Utc::now();
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            let mut rules: Vec<&str> = Vec::new();
            for r in &e.reasons {
                if !rules.contains(&r.rule.as_str()) {
                    rules.push(&r.rule);
                }
            }
            let by = match (&e.actor, e.event.as_str()) {
                (Some(a), _) => a.clone(),
                (None, "decided") => e.sensors.first().cloned().unwrap_or_default(),
                (None, "expired") => "(ttl)".into(),
                _ => "-".into(),
            };
            let detail = match e.event.as_str() {
                "decided" | "manual_block" => {
                    let mut d = format!("until {}", time(e.expires_at));
                    if let Some(n) = &e.note {
                        d.push_str(&format!("; note: {n}"));
                    } else if let Some(r) = e.reasons.first().filter(|r| !r.is_manual()) {
                        d.push_str(&format!("; evidence: {}", r.evidence));
                    }
                    d
                }
                _ => format!("{} hits", e.hits),
            };
            vec![
                format!("{} ({})", time(e.at), relative(e.at, now)),
                e.event.replace('_', " "),
                e.cidr.to_string(),
                by,
                e.severity.clone(),
                if rules.is_empty() {
                    "-".into()
                } else {
                    rules.join(",")
                },
                detail,
            ]
        })
        .collect();
    let mut out = table(
        &["TIME", "EVENT", "CIDR", "BY", "SEVERITY", "RULES", "DETAIL"],
        &rows,
    );
    if let Some(b) = page.next_before {
        out.push_str(&format!(
            "(older entries: palisade history {} --before {b})\n",
            args.target
        ));
    }
    Ok(out)
}
