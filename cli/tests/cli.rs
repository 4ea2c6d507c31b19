//! The `palisade` binary against a running blocker: a real nats-server, the blocker library
//! with the memory firewall, reports published on the stream as sensors publish them. Every
//! subcommand, table and JSON output, filters, a manual block and its release seen in the
//! firewall, and the exit codes for a wrong token (3), an unreachable blocker (4) and an
//! address that is not blocked (2).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use ipnet::IpNet;
use palisade_blocker::Config;
use palisade_providers::memory::MemoryFirewall;
use palisade_tests::nats::NatsServer;
use serde_json::{Value, json};

const TOKEN: &str = "cli-test-admin-token-0123456789";
const READ_TOKEN: &str = "cli-test-read-token-0123456789";
/// A named write token (`[[admin.tokens]]`): its name is the actor of its changes.
const CAROL: &str = "cli-test-carol-token-0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// What a run of the binary gives back.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "{self:?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Run `palisade` with `args` against `url` (token given through the environment).
async fn palisade(url: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade"));
    cmd.args(args)
        .env("PALISADE_URL", url)
        .env_remove("PALISADE_TOKEN")
        .env_remove("PALISADE_TOKEN_FILE");
    if let Some(t) = token {
        cmd.env("PALISADE_TOKEN", t);
    }
    let out = cmd.output().await.expect("run palisade");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn config(nats_url: &str, state_dir: &Path) -> Config {
    let mut c = Config::default();
    c.nats.url = nats_url.to_string();
    c.state.dir = state_dir.to_path_buf();
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c.admin.token = Some(TOKEN.into());
    c.admin.read_token = Some(READ_TOKEN.into());
    c.admin.tokens = vec![palisade_blocker::config::NamedTokenConfig {
        name: "carol".into(),
        token: Some(CAROL.into()),
        token_file: None,
        access: palisade_blocker::config::TokenAccess::Write,
    }];
    c.reconcile.interval_ms = 100;
    c.guardrails.allow_special = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]
        .iter()
        .map(|s| s.parse().expect("net"))
        .collect();
    c
}

/// A critical report (one is enough for a block) with an optional Kubernetes context.
fn report(
    id: &str,
    sensor: &str,
    client: &str,
    rule: &str,
    category: &str,
    ns: Option<&str>,
) -> Vec<u8> {
    let mut v = json!({
        "v": 1,
        "id": id,
        "sensor": sensor,
        "observed_at": chrono::Utc::now().to_rfc3339(),
        "client_ip": client,
        "peer_ip": client,
        "rule": rule,
        "category": category,
        "severity": "critical",
        "mitre": ["T1190"],
        "evidence": format!("evidence of {rule}"),
    });
    if let Some(ns) = ns {
        v["context"] =
            json!({"node": "node-a", "namespace": ns, "pod": "web-0", "container": "app"});
    }
    serde_json::to_vec(&v).expect("report")
}

async fn publish(js: &jetstream::Context, sensor: &str, id: &str, body: Vec<u8>) {
    js.send_publish(
        palisade_wire::subject_for(sensor),
        PublishMessage::build().payload(body.into()).message_id(id),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cidrs(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .map(|b| b["cidr"].as_str().expect("cidr").to_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subcommand_against_a_running_blocker() {
    let nats = NatsServer::start().await.expect("nats-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let firewall = Arc::new(MemoryFirewall::new());
    let palisade_blocker::Spawned { admin, stop, task } = tokio::time::timeout(
        WAIT,
        palisade_blocker::spawn(config(&nats.url(), dir.path()), firewall.clone()),
    )
    .await
    .expect("ready in time")
    .expect("blocker started");
    let url = format!("http://{admin}");
    let url = url.as_str();

    let js = nats.jetstream().await.expect("jetstream");
    publish(
        &js,
        "s1",
        "r1",
        report("r1", "s1", "203.0.113.10", "sqli-1", "sqli", Some("shop")),
    )
    .await;
    publish(
        &js,
        "s2",
        "r2",
        report("r2", "s2", "203.0.113.20", "xss-7", "xss", Some("billing")),
    )
    .await;
    publish(
        &js,
        "s1",
        "r3",
        report("r3", "s1", "198.51.100.5", "sqli-1", "sqli", None),
    )
    .await;
    // Not a report: rejected, and counted against s2.
    publish(&js, "s2", "r4", b"{\"v\": 1, \"garbage\": true}".to_vec()).await;
    let fw = firewall.clone();
    wait_for("three blocks in the firewall", || {
        let s = fw.snapshot();
        ["203.0.113.10/32", "203.0.113.20/32", "198.51.100.5/32"]
            .iter()
            .all(|n| s.contains(&net(n)))
    })
    .await;

    // status: ready, leader, sets, a reconcile, two sensors.
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let s = palisade(url, Some(READ_TOKEN), &["status", "-o", "json"])
            .await
            .json();
        if s["ready"] == true && !s["reconcile"]["last_success"].is_null() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["leader"], true, "{status}");
    assert_eq!(status["sensors_seen"], 2, "{status}");
    assert!(status["blocks_active"].as_u64() >= Some(3), "{status}");
    let sets = status["sets"].as_array().expect("sets");
    assert!(
        sets.iter()
            .any(|s| s["id"] == "memory-v4" && s["entries"].as_u64() >= Some(3)),
        "{status}"
    );
    let text = palisade(url, Some(READ_TOKEN), &["status"]).await;
    assert_eq!(text.code, 0, "{text:?}");
    for want in [
        "ready",
        "Leader       yes",
        "memory-v4",
        "FILL",
        "2 seen",
        "last success",
    ] {
        assert!(text.stdout.contains(want), "{want} in {}", text.stdout);
    }

    // blocks list: table and JSON.
    let table = palisade(url, Some(READ_TOKEN), &["blocks", "list"]).await;
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "header and three rows: {}", table.stdout);
    assert!(lines[0].starts_with("CIDR  "), "{}", table.stdout);
    // aligned: every row's second column starts where the header's does
    let col = lines[0].find("SEVERITY").expect("SEVERITY");
    for l in &lines[1..] {
        assert_eq!(&l[col..col + 8], "critical", "{}", table.stdout);
    }
    let row = lines
        .iter()
        .find(|l| l.starts_with("203.0.113.20/32"))
        .expect("row");
    for want in ["xss", "xss-7", "s2", "billing"] {
        assert!(row.contains(want), "{want} in {row}");
    }
    let all = palisade(url, Some(READ_TOKEN), &["blocks", "list", "-o", "json"])
        .await
        .json();
    assert_eq!(all["count"], 3);
    assert_eq!(
        cidrs(&all),
        ["198.51.100.5/32", "203.0.113.10/32", "203.0.113.20/32"]
    );

    // Filters narrow the list.
    let filtered = |args: &'static [&'static str]| async move {
        let mut a = vec!["blocks", "list", "-o", "json"];
        a.extend_from_slice(args);
        cidrs(&palisade(url, Some(READ_TOKEN), &a).await.json())
    };
    assert_eq!(
        filtered(&["--cidr", "203.0.113.0/24"]).await,
        ["203.0.113.10/32", "203.0.113.20/32"]
    );
    assert_eq!(
        filtered(&["--cidr", "203.0.113.10"]).await,
        ["203.0.113.10/32"]
    );
    assert_eq!(filtered(&["--rule", "xss-7"]).await, ["203.0.113.20/32"]);
    assert_eq!(
        filtered(&["--category", "sqli"]).await,
        ["198.51.100.5/32", "203.0.113.10/32"]
    );
    assert_eq!(filtered(&["--sensor", "s2"]).await, ["203.0.113.20/32"]);
    assert_eq!(
        filtered(&["--namespace", "shop"]).await,
        ["203.0.113.10/32"]
    );
    assert_eq!(
        filtered(&["--namespace", "shop", "--sensor", "s2"]).await,
        Vec::<String>::new()
    );
    let bad = palisade(
        url,
        Some(READ_TOKEN),
        &["blocks", "list", "--cidr", "nonsense"],
    )
    .await;
    assert_eq!(bad.code, 1, "{bad:?}");

    // blocks show: the whole record.
    let shown = palisade(url, Some(READ_TOKEN), &["blocks", "show", "203.0.113.10"]).await;
    assert_eq!(shown.code, 0, "{shown:?}");
    for want in [
        "203.0.113.10/32",
        "sqli-1",
        "r1",
        "evidence of sqli-1",
        "T1190",
        "namespace=shop",
        "pod=web-0",
        "sensor s1",
    ] {
        assert!(shown.stdout.contains(want), "{want} in {}", shown.stdout);
    }
    let rec = palisade(
        url,
        Some(READ_TOKEN),
        &["blocks", "show", "203.0.113.10/32", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(rec["cidr"], "203.0.113.10/32");
    assert_eq!(rec["reasons"][0]["rule"], "sqli-1");
    assert_eq!(rec["reasons"][0]["sensor"], "s1");
    assert_eq!(rec["reasons"][0]["context"]["namespace"], "shop");
    assert_eq!(rec["reasons"][0]["mitre"][0], "T1190");

    // sensors list (once the rejected message, published last, has been taken).
    let deadline = tokio::time::Instant::now() + WAIT;
    let sensors = loop {
        let v = palisade(url, Some(READ_TOKEN), &["sensors", "list", "-o", "json"])
            .await
            .json();
        let reports: u64 = v["sensors"]
            .as_array()
            .expect("sensors")
            .iter()
            .filter_map(|s| s["reports"].as_u64())
            .sum();
        if reports >= 4 {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by = |id: &str| {
        sensors["sensors"]
            .as_array()
            .expect("sensors")
            .iter()
            .find(|s| s["sensor"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {sensors}"))
    };
    assert_eq!(by("s1")["reports"], 2);
    assert_eq!(by("s1")["rejected"], 0);
    assert_eq!(by("s2")["reports"], 2);
    assert_eq!(by("s2")["rejected"], 1);
    assert!(
        by("s1")["reports_per_min"].as_f64() > Some(0.0),
        "{sensors}"
    );
    let text = palisade(url, Some(READ_TOKEN), &["sensors", "list"]).await;
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.starts_with("SENSOR  "), "{}", text.stdout);
    let s2 = text
        .stdout
        .lines()
        .find(|l| l.starts_with("s2 "))
        .expect("s2 row");
    assert!(
        s2.contains("ago") && s2.trim_end().ends_with('1'),
        "{}",
        text.stdout
    );

    // add and release, seen in the firewall; the token from a file.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let tf = token_file.to_str().expect("path");
    let added = palisade(
        url,
        None,
        &[
            "--token-file",
            tf,
            "blocks",
            "add",
            "192.0.2.77",
            "--ttl",
            "1h",
            "--note",
            "ticket 42",
            "-o",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(added["cidr"], "192.0.2.77/32");
    assert_eq!(added["manual"], true);
    let fw = firewall.clone();
    wait_for("the manual block in the firewall", || {
        fw.snapshot().contains(&net("192.0.2.77/32"))
    })
    .await;
    let shown = palisade(url, Some(READ_TOKEN), &["blocks", "show", "192.0.2.77"]).await;
    assert!(
        shown.stdout.contains("Manual actions (1)") && shown.stdout.contains("ticket 42"),
        "{shown:?}"
    );
    let listed = palisade(url, Some(READ_TOKEN), &["blocks", "list"]).await;
    let row = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("192.0.2.77/32"))
        .expect("row");
    assert!(row.contains("manual") && row.contains("in 59m"), "{row}");
    assert!(
        shown
            .stdout
            .contains("History      palisade history 192.0.2.77/32"),
        "{shown:?}"
    );
    let released = palisade(url, Some(CAROL), &["blocks", "release", "192.0.2.77"]).await;
    assert_eq!(
        (released.code, released.stdout.as_str()),
        (0, "released 192.0.2.77/32\n"),
        "{released:?}"
    );
    let fw = firewall.clone();
    wait_for("the release in the firewall", || {
        !fw.snapshot().contains(&net("192.0.2.77/32"))
    })
    .await;
    let text_add = palisade(
        url,
        Some(TOKEN),
        &["blocks", "add", "192.0.2.0/28", "--ttl", "30m"],
    )
    .await;
    assert_eq!(text_add.code, 0, "{text_add:?}");
    assert!(
        text_add.stdout.starts_with("blocked 192.0.2.0/28 until "),
        "{text_add:?}"
    );
    let rel = palisade(
        url,
        Some(TOKEN),
        &["blocks", "release", "192.0.2.0/28", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(rel["released"], "192.0.2.0/28");

    // history: the block ended, its story is kept; who did what is the token's name.
    let h = palisade(
        url,
        Some(READ_TOKEN),
        &["history", "192.0.2.77", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(h["count"], 2, "{h}");
    assert_eq!(h["entries"][0]["event"], "released");
    assert_eq!(h["entries"][0]["actor"], "carol");
    assert_eq!(h["entries"][1]["event"], "manual_block");
    assert_eq!(h["entries"][1]["actor"], "admin");
    assert_eq!(h["entries"][1]["note"], "ticket 42");
    let text = palisade(url, Some(READ_TOKEN), &["history", "192.0.2.77"]).await;
    assert_eq!(text.code, 0, "{text:?}");
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert!(lines[0].starts_with("TIME  "), "{}", text.stdout);
    assert!(
        lines[1].contains("released") && lines[1].contains("carol"),
        "{}",
        text.stdout
    );
    assert!(
        lines[2].contains("manual block")
            && lines[2].contains("admin")
            && lines[2].contains("ticket 42"),
        "{}",
        text.stdout
    );
    // A decision of the policy, with its rule and sensor; paging.
    let d = palisade(
        url,
        Some(READ_TOKEN),
        &["history", "203.0.113.10", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(d["entries"][0]["event"], "decided", "{d}");
    assert_eq!(d["entries"][0]["reasons"][0]["rule"], "sqli-1");
    assert_eq!(d["entries"][0]["sensors"][0], "s1");
    let p1 = palisade(
        url,
        Some(READ_TOKEN),
        &["history", "192.0.2.0/24", "--limit", "1", "-o", "json"],
    )
    .await
    .json();
    assert_eq!(p1["count"], 1, "{p1}");
    let before = p1["next_before"].as_u64().expect("more").to_string();
    let p2 = palisade(
        url,
        Some(READ_TOKEN),
        &[
            "history",
            "192.0.2.0/24",
            "--limit",
            "1",
            "--before",
            &before,
        ],
    )
    .await;
    assert_eq!(p2.code, 0, "{p2:?}");
    assert!(
        p2.stdout.contains("--before"),
        "a next page is offered: {p2:?}"
    );
    // Never blocked: 2, nothing on stdout.
    let none = palisade(
        url,
        Some(READ_TOKEN),
        &["history", "198.51.100.200", "-o", "json"],
    )
    .await;
    assert_eq!(none.code, 2, "{none:?}");
    assert!(
        none.stdout.is_empty() && none.stderr.contains("no history for 198.51.100.200"),
        "{none:?}"
    );
    let r = palisade(url, Some(READ_TOKEN), &["history", "nonsense"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    let r = palisade(
        url,
        Some("wrong-token-0123456789"),
        &["history", "192.0.2.77"],
    )
    .await;
    assert_eq!(r.code, 3, "{r:?}");

    // Not blocked: 2.
    for args in [
        &["blocks", "show", "192.0.2.77"][..],
        &["blocks", "release", "192.0.2.77"],
        &["blocks", "release", "192.0.2.0/28"],
    ] {
        let r = palisade(url, Some(TOKEN), args).await;
        assert_eq!(r.code, 2, "{args:?}: {r:?}");
        assert!(
            r.stderr.contains("is not blocked") && r.stdout.is_empty(),
            "{r:?}"
        );
    }

    // Refused: 3 (wrong token; no token; a read token for a change).
    let r = palisade(
        url,
        Some("wrong-token-0123456789"),
        &["blocks", "list", "-o", "json"],
    )
    .await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(
        r.stdout.is_empty() && r.stderr.contains("refused") && r.stderr.contains("401"),
        "{r:?}"
    );
    let r = palisade(url, None, &["status"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    let r = palisade(url, Some(READ_TOKEN), &["blocks", "add", "192.0.2.78"]).await;
    assert_eq!(r.code, 3, "{r:?}");
    // A bad TTL or an https:// URL: 1.
    let r = palisade(
        url,
        Some(TOKEN),
        &["blocks", "add", "192.0.2.78", "--ttl", "soon"],
    )
    .await;
    assert_eq!(r.code, 1, "{r:?}");
    let r = palisade(
        &url.replace("http://", "https://"),
        Some(TOKEN),
        &["status"],
    )
    .await;
    assert!(
        r.code == 1 && r.stderr.contains("https:// is not supported"),
        "{r:?}"
    );
    assert!(!firewall.snapshot().contains(&net("192.0.2.78/32")));

    // The token file wins over PALISADE_TOKEN; a usage error is 1, not clap's 2.
    let r = palisade(
        url,
        Some("wrong-token-0123456789"),
        &["status", "--token-file", tf],
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = palisade(url, Some(TOKEN), &["blocks", "list", "--no-such-option"]).await;
    assert_eq!(r.code, 1, "{r:?}");
    let r = palisade(url, Some(TOKEN), &["blocks", "show"]).await;
    assert_eq!(r.code, 1, "{r:?}");

    // Unreachable: 4.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let down = format!("http://{closed}");
    let r = palisade(&down, Some(TOKEN), &["blocks", "list", "-o", "json"]).await;
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.stdout.is_empty(), "{r:?}");
    assert!(
        r.stderr
            .contains(&format!("cannot reach the blocker at {down}")),
        "{r:?}"
    );

    let _ = stop.send(());
    tokio::time::timeout(WAIT, task)
        .await
        .expect("blocker stops")
        .expect("task")
        .expect("clean stop");
}
