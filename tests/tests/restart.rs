//! Issue scenario: the blocker is killed (SIGKILL) mid-sync with the AWS provider and
//! restarted: the IP sets converge to its blocks, and entries somebody else added (before the
//! crash and while it was down) survive. See `palisade_tests::restart`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocker_killed_mid_sync_converges_and_keeps_foreign_entries() {
    let o = palisade_tests::restart::blocker_killed_mid_sync(&palisade_tests::test_bin_dir(), 3000)
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
    palisade_tests::assert_converged(&o.expected, &o.final_entries);
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
