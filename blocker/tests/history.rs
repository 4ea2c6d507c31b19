//! Named admin tokens and the history, against a real nats-server.
//!
//! - The real binary on the embedded backend, tokens from a config file (one from a
//!   `token_file`): a read-only named token cannot block or release; a write token's name is
//!   the actor of its changes, on the block and in the history; the history of a decision, a
//!   manual block, a release and an expiry is there after the blocks ended and after a
//!   restart; paging; pruning to `history.max_entries`.
//! - A bad token configuration stops the binary with an error naming the token.
//! - The `nats` backend keeps the history in the bucket: a standby reads it and forwards a
//!   change with its actor; taking over the lease, it reads what the first wrote; pruning
//!   purges the bucket's history down to `history.max_entries`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_providers::memory::MemoryFirewall;
use palisade_tests::nats::NatsServer;
use serde_json::Value;
use tokio::process::{Child, Command};

const ALICE: &str = "alice-writes-0123456789";
const BOB: &str = "bob-only-reads-0123456789";

fn write_config(dir: &Path, nats_url: &str, admin: SocketAddr, extra: &str) -> std::path::PathBuf {
    let token_file = dir.join("alice.token");
    std::fs::write(&token_file, format!("  {ALICE}\n")).unwrap();
    let path = dir.join("blocker.toml");
    let text = format!(
        r#"
[nats]
url = "{nats_url}"
[guardrails]
allow_special = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]
[state]
dir = "{state}"
sweep_interval_secs = 1
[reconcile]
interval_ms = 100
[admin]
listen = "{admin}"
token = "{TOKEN}"

[[admin.tokens]]
name = "alice"
token_file = "{token_file}"
access = "write"

[[admin.tokens]]
name = "bob"
token = "{BOB}"
access = "read"
{extra}
"#,
        state = dir.join("state").display(),
        token_file = token_file.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// SIGTERM, and wait for the clean exit.
async fn stop(mut child: Child) {
    palisade_tests::signal(child.id().expect("running"), "-TERM").unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

async fn history(admin: SocketAddr, target: &str, query: &str, token: &str) -> Value {
    let (code, body) = http(
        admin,
        "GET",
        &format!("/v1/history/{target}{query}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The events of a history page, newest first, as `event/actor`.
fn events(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["event"].as_str().unwrap(),
                e["actor"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_tokens_and_history_across_expiry_release_and_restart() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", palisade_tests::free_port().unwrap())
        .parse()
        .unwrap();
    let config = write_config(dir.path(), &nats.url(), admin, "");
    let first = spawn_blocker(&config, admin).await;

    // A decision of the policy.
    let js = nats.jetstream().await.unwrap();
    publish(
        &js,
        "s1",
        "r1",
        report("r1", "s1", "203.0.113.10", "sqli-1", "critical"),
    )
    .await;
    wait_until(30, "the decision", || async {
        blocks(admin)
            .await
            .iter()
            .any(|b| b["cidr"] == "203.0.113.10/32")
    })
    .await;

    // bob reads but cannot change anything; alice (token from a file) can.
    let post = |token: &'static str, body: &'static str| async move {
        http(admin, "POST", "/v1/blocks", Some(token), Some(body)).await
    };
    let body = r#"{"cidr":"192.0.2.50","note":"ticket 42"}"#;
    assert_eq!(post(BOB, body).await.0, 401);
    // Who did it comes from the token, never from the body.
    let (code, claimed) = post(ALICE, r#"{"cidr":"192.0.2.50","actor":"mallory"}"#).await;
    assert_eq!(code, 400, "{claimed}");
    assert!(claimed.contains("actor"), "{claimed}");
    let (code, _) = http(admin, "DELETE", "/v1/blocks/203.0.113.10", Some(BOB), None).await;
    assert_eq!(code, 401, "a read token cannot release");
    let (code, _) = http(admin, "GET", "/v1/blocks", Some(BOB), None).await;
    assert_eq!(code, 200);
    let (code, created) = post(ALICE, body).await;
    assert_eq!(code, 201, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["reasons"][0]["actor"], "alice", "{created}");
    let (code, body) = http(
        admin,
        "DELETE",
        "/v1/blocks/192.0.2.50_32",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(code, 204, "{body}");
    // The legacy admin.token is the write token named `admin`; a block that expires.
    let (code, body) = post(TOKEN, r#"{"cidr":"192.0.2.60","ttl_secs":1}"#).await;
    assert_eq!(code, 201, "{body}");
    wait_until(30, "the expiry", || async {
        !blocks(admin)
            .await
            .iter()
            .any(|b| b["cidr"] == "192.0.2.60/32")
    })
    .await;

    // The history of the released block, newest first, with who did it.
    let page = history(admin, "192.0.2.50", "", BOB).await;
    assert_eq!(
        events(&page),
        ["released/alice", "manual_block/alice"],
        "{page}"
    );
    assert_eq!(page["entries"][1]["note"], "ticket 42");
    let expired = history(admin, "192.0.2.60", "", BOB).await;
    assert_eq!(
        events(&expired),
        ["expired/-", "manual_block/admin"],
        "{expired}"
    );

    // Restart: everything is still there.
    stop(first).await;
    let second = spawn_blocker(&config, admin).await;
    let page = history(admin, "192.0.2.50", "", BOB).await;
    assert_eq!(
        events(&page),
        ["released/alice", "manual_block/alice"],
        "{page}"
    );
    let decided = history(admin, "203.0.113.10", "", TOKEN).await;
    assert_eq!(events(&decided), ["decided/-"], "{decided}");
    let e = &decided["entries"][0];
    assert_eq!(e["cidr"], "203.0.113.10/32");
    assert_eq!(e["reasons"][0]["rule"], "sqli-1");
    assert_eq!(e["reasons"][0]["sensor"], "s1");
    assert_eq!(e["reasons"][0]["evidence"], "' OR 1=1 --");
    // A network asks for every entry inside it; paging walks them newest first.
    let all = history(admin, "192.0.2.0_24", "", BOB).await;
    assert_eq!(all["count"], 4, "{all}");
    let p1 = history(admin, "192.0.2.0%2F24", "?limit=3", BOB).await;
    assert_eq!(p1["count"], 3, "{p1}");
    let before = p1["next_before"].as_u64().expect("a next page");
    let p2 = history(
        admin,
        "192.0.2.0_24",
        &format!("?limit=3&before={before}"),
        BOB,
    )
    .await;
    assert_eq!(p2["count"], 1, "{p2}");
    assert!(p2.get("next_before").is_none(), "{p2}");
    assert_eq!(p2["entries"][0], all["entries"][3]);
    // Nothing about an address never blocked; bad input is a 400; reads need a token.
    assert_eq!(history(admin, "198.51.100.1", "", BOB).await["count"], 0);
    for bad in ["nonsense", "192.0.2.1?limit=0", "192.0.2.1?limit=x"] {
        let (code, body) = http(admin, "GET", &format!("/v1/history/{bad}"), Some(BOB), None).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let (code, _) = http(admin, "GET", "/v1/history/192.0.2.50", None, None).await;
    assert_eq!(code, 401);
    let m = metrics(admin).await;
    assert_eq!(m.get("palisade_history_entries"), Some(&5.0), "{m:?}");
    stop(second).await;

    // The size bound: restarted with room for 2 entries, the oldest are pruned and counted.
    let config = write_config(
        dir.path(),
        &nats.url(),
        admin,
        "[history]\nmax_entries = 2\n",
    );
    let third = spawn_blocker(&config, admin).await;
    wait_until(30, "pruning", || async {
        metric(admin, "palisade_history_pruned_total{reason=\"size\"}").await >= 3.0
    })
    .await;
    let all = history(admin, "192.0.2.0_24", "", BOB).await;
    assert_eq!(
        events(&all),
        ["expired/-", "manual_block/admin"],
        "the newest two are kept: {all}"
    );
    assert_eq!(history(admin, "203.0.113.10", "", BOB).await["count"], 0);
    stop(third).await;
}

#[tokio::test]
async fn a_bad_token_configuration_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[admin.tokens]]\nname = \"alice\"\ntoken_file = \"/nonexistent/alice.token\"\naccess = \"write\"\n",
            "admin.tokens[0] (`alice`): cannot read token_file /nonexistent/alice.token",
        ),
        (
            "[[admin.tokens]]\nname = \"alice\"\ntoken = \"short\"\naccess = \"write\"\n",
            "at least 16 characters",
        ),
        (
            "[[admin.tokens]]\nname = \"admin\"\ntoken = \"another-token-0123456789\"\naccess = \"read\"\n",
            "the name `admin` is used twice (the name of admin.token)",
        ),
        (
            "[[admin.tokens]]\nname = \"bob\"\ntoken = \"bob-token-0123456789\"\naccess = \"rw\"\n",
            "unknown variant `rw`",
        ),
    ];
    for (tokens, want) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, format!("[admin]\ntoken = \"{TOKEN}\"\n{tokens}")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_palisade-blocker"))
            .arg("--config")
            .arg(&path)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tokens}: {stderr}");
        assert!(stderr.contains(want), "{want} in: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_backend_keeps_the_history_across_a_takeover() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let replica = |replica: &'static str, max_entries: usize| {
        let mut c = config(&nats.url(), dir.path());
        c.history.max_entries = max_entries;
        c.state.backend = palisade_blocker::StateBackend::Nats;
        c.state.replica_id = Some(replica.into());
        c.state.lease_secs = 2;
        c.state.sweep_interval_secs = 1;
        c.admin.tokens = vec![palisade_blocker::config::NamedTokenConfig {
            name: "alice".into(),
            token: Some(ALICE.into()),
            token_file: None,
            access: palisade_blocker::config::TokenAccess::Write,
        }];
        palisade_blocker::spawn(c, Arc::new(MemoryFirewall::new()))
    };
    let leader = |admin: SocketAddr| async move {
        wait_until(30, "the lease", || async {
            let (code, body) = http(admin, "GET", "/readyz", None, None).await;
            code == 200 && body.contains("\"leader\":true")
        })
        .await;
    };

    let palisade_blocker::Spawned {
        admin,
        stop: stop1,
        task: task1,
    } = replica("one", 100).await.unwrap();
    leader(admin).await;
    let js = nats.jetstream().await.unwrap();
    publish(
        &js,
        "s1",
        "n1",
        report("n1", "s1", "2001:db8:bad::7", "rce-1", "critical"),
    )
    .await;
    wait_until(30, "the decision", || async {
        blocks(admin)
            .await
            .iter()
            .any(|b| b["cidr"] == "2001:db8:bad::/64")
    })
    .await;
    let post = http(
        admin,
        "POST",
        "/v1/blocks",
        Some(ALICE),
        Some(r#"{"cidr":"198.51.100.9","note":"incident 7"}"#),
    )
    .await;
    assert_eq!(post.0, 201, "{}", post.1);
    let del = http(
        admin,
        "DELETE",
        "/v1/blocks/198.51.100.9",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(del.0, 204, "{}", del.1);
    let page = history(admin, "198.51.100.9", "", TOKEN).await;
    assert_eq!(
        events(&page),
        ["released/alice", "manual_block/alice"],
        "{page}"
    );
    // A standby reads the history from the bucket, and forwards a change to the holder
    // with the name of the token it checked.
    let palisade_blocker::Spawned {
        admin: standby,
        stop: stop2,
        task: task2,
    } = replica("two", 100).await.unwrap();
    let (_, ready_body) = http(standby, "GET", "/readyz", None, None).await;
    assert!(ready_body.contains("\"leader\":false"), "{ready_body}");
    let page = history(standby, "198.51.100.9", "", TOKEN).await;
    assert_eq!(
        events(&page),
        ["released/alice", "manual_block/alice"],
        "{page}"
    );
    let post = http(
        standby,
        "POST",
        "/v1/blocks",
        Some(ALICE),
        Some(r#"{"cidr":"198.51.100.10","ttl_secs":3600}"#),
    )
    .await;
    assert_eq!(post.0, 201, "{}", post.1);
    let fwd = history(standby, "198.51.100.10", "", TOKEN).await;
    assert_eq!(events(&fwd), ["manual_block/alice"], "{fwd}");
    let _ = stop1.send(());
    tokio::time::timeout(Duration::from_secs(30), task1)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();

    // It takes the lease and reads the history from the bucket.
    let admin = standby;
    leader(admin).await;
    let page = history(admin, "198.51.100.9", "", TOKEN).await;
    assert_eq!(
        events(&page),
        ["released/alice", "manual_block/alice"],
        "{page}"
    );
    assert_eq!(page["entries"][1]["note"], "incident 7");
    // An address inside the /64 that was blocked finds its decision.
    let v6 = history(admin, "2001:db8:bad::1", "", TOKEN).await;
    assert_eq!(events(&v6), ["decided/-"], "{v6}");
    assert_eq!(v6["entries"][0]["reasons"][0]["rule"], "rce-1");
    // Its release by hand, recorded by this replica, follows it.
    let del = http(
        admin,
        "DELETE",
        "/v1/blocks/2001:db8:bad::_64",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(del.0, 204, "{}", del.1);
    let v6 = history(
        admin,
        "2001:db8:bad::/64".replace('/', "_").as_str(),
        "",
        TOKEN,
    )
    .await;
    assert_eq!(events(&v6), ["released/alice", "decided/-"], "{v6}");
    let m = metrics(admin).await;
    assert_eq!(m.get("palisade_history_entries"), Some(&5.0), "{m:?}");
    let _ = stop2.send(());
    tokio::time::timeout(Duration::from_secs(30), task2)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();

    // A third with room for one entry prunes the bucket's history to the newest.
    let palisade_blocker::Spawned {
        admin,
        stop: stop3,
        task: task3,
    } = replica("three", 1).await.unwrap();
    leader(admin).await;
    wait_until(30, "pruning", || async {
        metric(admin, "palisade_history_pruned_total{reason=\"size\"}").await >= 4.0
    })
    .await;
    let v6 = history(admin, "2001:db8:bad::1", "", TOKEN).await;
    assert_eq!(events(&v6), ["released/alice"], "{v6}");
    let gone = history(admin, "198.51.100.9", "", TOKEN).await;
    assert_eq!(gone["count"], 0, "{gone}");
    let _ = stop3.send(());
    tokio::time::timeout(Duration::from_secs(30), task3)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();

    // What the purge left is what a fourth replica restores: one entry.
    let palisade_blocker::Spawned {
        admin,
        stop: stop4,
        task: task4,
    } = replica("four", 100).await.unwrap();
    leader(admin).await;
    let m = metrics(admin).await;
    assert_eq!(m.get("palisade_history_entries"), Some(&1.0), "{m:?}");
    let _ = stop4.send(());
    tokio::time::timeout(Duration::from_secs(30), task4)
        .await
        .expect("stops")
        .unwrap()
        .unwrap();
}
