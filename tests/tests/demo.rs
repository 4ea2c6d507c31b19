//! `make demo` in CI: the whole chain on this machine (sensor -> NATS -> blocker -> emulated
//! AWS WAF), checked by outcome: every attacker blocked, no benign client blocked, the IP sets
//! hold exactly the attackers.

use palisade_tests::demo::{self, DemoOptions, SensorMode};

async fn run_demo(mode: SensorMode) {
    if palisade_tests::netns::skip_unless_ci("the demo (needs root and network namespaces)") {
        return;
    }
    let outcome = demo::run(DemoOptions {
        bin_dir: palisade_tests::test_bin_dir(),
        mode: Some(mode),
        verbose: true,
        crs_dir: None,
    })
    .await
    .expect("the demo runs to the end");
    demo::print_summary(&outcome);
    assert_eq!(outcome.mode, mode);
    assert!(outcome.requests_answered > 40, "{outcome:#?}");
    assert!(outcome.benign_blocked.is_empty(), "{outcome:#?}");
    for a in &outcome.attackers {
        assert!(
            a.seconds_to_block.is_some(),
            "{} not blocked: {outcome:#?}",
            a.client
        );
        assert!(
            !a.rules.is_empty(),
            "{} blocked without a recorded rule",
            a.client
        );
        // Every source but TC (which sees no socket and no pod) says which pod was probed:
        // the cgroup source from the receiving socket's cgroup, the sidecars from the
        // Downward API.
        if mode != SensorMode::Ebpf {
            assert_eq!(
                a.probed,
                vec![format!("{}/{}", demo::DEMO_NAMESPACE, demo::DEMO_POD)],
                "{}",
                a.client
            );
        }
    }
    // The IP sets hold the attackers' host routes and nothing else.
    let in_sets: std::collections::BTreeSet<String> =
        outcome.ip_sets.values().flatten().cloned().collect();
    let expected: std::collections::BTreeSet<String> = outcome
        .attackers
        .iter()
        .map(|a| match a.client {
            std::net::IpAddr::V4(v4) => format!("{v4}/32"),
            // IPv6 attackers are blocked as their /64 (policy.ipv6_prefix_len).
            std::net::IpAddr::V6(v6) => {
                let s = v6.segments();
                let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{net}/64")
            }
        })
        .collect();
    assert_eq!(in_sets, expected);
    // The demo ends with the operator's view: `palisade blocks list` names every attacker.
    let list = outcome
        .cli_blocks
        .as_deref()
        .expect("the palisade CLI is built beside the services");
    for cidr in &expected {
        assert!(list.contains(cidr.as_str()), "{cidr} missing from:\n{list}");
    }
    assert_eq!(
        outcome.throttled, 0,
        "the blocker stays within the AWS write budget"
    );
    assert!(outcome.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_cgroup_sensor() {
    run_demo(SensorMode::Cgroup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_ebpf_sensor() {
    run_demo(SensorMode::Ebpf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_log_sensor() {
    run_demo(SensorMode::Log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_with_mirror_sensor() {
    run_demo(SensorMode::Mirror).await;
}
