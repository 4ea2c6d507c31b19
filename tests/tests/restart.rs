//! Issue scenario: the blocker is killed (SIGKILL) mid-sync with the AWS provider and
//! restarted: the IP sets converge to its blocks, and entries somebody else added (before the
//! crash and while it was down) survive. See `palisade_tests::restart`.

use std::path::PathBuf;

/// `target/<profile>`, where cargo put the workspace's binaries for this test run.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocker_killed_mid_sync_converges_and_keeps_foreign_entries() {
    let o = palisade_tests::restart::blocker_killed_mid_sync(&bin_dir(), 3000)
        .await
        .expect("the scenario runs");
    eprintln!(
        "{} attackers, {} of them in the WAF at the kill",
        o.attackers, o.ours_at_kill
    );
    assert!(
        o.ours_at_kill < o.attackers,
        "the kill must come mid-sync: {} of {} already in the sets",
        o.ours_at_kill,
        o.attackers
    );
    let missing: Vec<_> = o.expected.difference(&o.final_entries).take(5).collect();
    let extra: Vec<_> = o.final_entries.difference(&o.expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "did not converge: missing e.g. {missing:?}, unexpected e.g. {extra:?}"
    );
    assert!(o.foreign.is_subset(&o.final_entries));
    // The restarted process's write budget starts full, and AWS's is per account: its first
    // write may meet the first process's last one inside a second. Such a throttle is retried
    // (convergence above shows it); more than a couple would mean the budget is not kept.
    assert!(
        o.throttled <= 2,
        "{} ThrottlingExceptions: the write budget is not kept",
        o.throttled
    );
}
