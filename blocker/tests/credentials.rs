//! `palisade-blocker credentials`, the binary as an operator runs it: the seed file it writes is
//! private, holds a seed of the public key the printed entry names, and is never overwritten;
//! an id that is not a subject token is refused. (That nats-server accepts the entries and
//! enforces them: tests/tests/nats_identity.rs.)

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn blocker() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade-blocker"));
    // The run flags read the environment too; none of it may leak in from the test's.
    cmd.env_clear();
    cmd
}

#[test]
fn sensor_seed_file_matches_the_printed_entry() {
    let dir = tempfile::tempdir().unwrap();
    let seed_path = dir.path().join("node-1.nk");
    let out = blocker()
        .args(["credentials", "sensor", "node-1", "--seed-file"])
        .arg(&seed_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let entry = String::from_utf8(out.stdout).unwrap();
    let seed_file = std::fs::read_to_string(&seed_path).unwrap();
    let mode = std::fs::metadata(&seed_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the seed file is private");
    let seed = seed_file
        .lines()
        .find(|l| l.starts_with("SU"))
        .expect("a seed line");
    let public = nkeys::KeyPair::from_seed(seed).unwrap().public_key();
    assert!(entry.contains(&format!("nkey: \"{public}\"")), "{entry}");
    assert!(!entry.contains(seed), "the entry never holds the seed");
    assert!(
        entry.contains("publish: { allow: [\"palisade.reports.node-1\""),
        "{entry}"
    );

    // A second mint never replaces an existing seed file.
    let again = blocker()
        .args(["credentials", "sensor", "node-1", "--seed-file"])
        .arg(&seed_path)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&seed_path).unwrap(), seed_file);
}

#[test]
fn ids_that_are_not_subject_tokens_are_refused() {
    for id in ["node.1", "node-*", ">", "a b", ""] {
        let out = blocker()
            .args(["credentials", "sensor", id])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{id:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a valid sensor id"), "{id:?}: {err}");
        assert!(out.stdout.is_empty(), "nothing minted for {id:?}");
    }
}

#[test]
fn blocker_entry_follows_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("blocker.toml");
    std::fs::write(
        &config,
        "[nats]\nstream = \"REPORTS_EU\"\nconsumer = \"blk\"\ninbox_prefix = \"_INBOX_blk\"\n",
    )
    .unwrap();
    let out = blocker()
        .arg("--config")
        .arg(&config)
        .args(["credentials", "blocker"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("$JS.API.CONSUMER.MSG.NEXT.REPORTS_EU.blk"),
        "{text}"
    );
    assert!(text.contains("$JS.ACK.REPORTS_EU.blk.>"), "{text}");
    assert!(
        text.contains("subscribe: { allow: [\"_INBOX_blk.>\"] }"),
        "{text}"
    );
    // Without --seed-file the seed is printed, decorated as the NATS tools write it.
    assert!(
        text.contains("-----BEGIN USER NKEY SEED-----\nSU"),
        "{text}"
    );
}
