//! 30% of all calls throttled or failing with internal errors: callers that retry retriable
//! errors (as the reconciler does) converge once the faults stop, and nothing is lost.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_wafv2::types::IpAddressVersion;
use palisade_providers::{Diff, Firewall, IpNet};
use palisade_tests::moto::ProxyConfig;
use tokio::task::JoinSet;

use common::{Emulator, adds, removes, v4_hosts, v6_hosts};

/// Apply until done, retrying what is retriable, like the blocker's reconciler.
async fn apply_until_done(fw: &dyn Firewall, diff: &Diff) -> u32 {
    let mut retries = 0;
    loop {
        match fw.apply(diff).await {
            Ok(_) => return retries,
            Err(e) if e.is_retriable() => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("permanent error: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_failures_converge_without_loss() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let v4a = emu.create_set("faulty-v4-a", IpAddressVersion::Ipv4).await;
    let v4b = emu.create_set("faulty-v4-b", IpAddressVersion::Ipv4).await;
    let v6 = emu.create_set("faulty-v6", IpAddressVersion::Ipv6).await;
    let arns = vec![v4a.clone(), v4b.clone(), v6.clone()];
    let fw = emu
        .builder(&arns)
        .with_set_capacity(600)
        .with_max_attempts(3)
        .build()
        .await
        .expect("build");
    emu.proxy.fail_randomly("*", 0.3, 0x5eed);

    let v4 = v4_hosts(0, 1000);
    let v6n = v6_hosts(0, 200);
    let mut tasks = JoinSet::new();
    for (i, chunk) in v4.chunks(50).zip(v6n.chunks(10)).enumerate() {
        let fw = fw.clone();
        let mut nets = chunk.0.to_vec();
        nets.extend_from_slice(chunk.1);
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(100 * i as u64)).await;
            apply_until_done(&fw, &adds(&nets)).await
        });
    }
    let mut caller_retries = 0;
    while let Some(r) = tasks.join_next().await {
        caller_retries += r.expect("task");
    }
    // Take some back while the faults still happen.
    caller_retries += apply_until_done(&fw, &removes(&v4[..100])).await;
    let injected =
        emu.proxy.errors("ThrottlingException") + emu.proxy.errors("WAFInternalErrorException");
    emu.proxy.fail_randomly("*", 0.0, 0);

    let mut got = BTreeSet::new();
    for arn in &arns {
        got.extend(emu.addresses(arn).await);
    }
    let want: BTreeSet<IpNet> = v4[100..].iter().chain(&v6n).copied().collect();
    assert_eq!(got, want, "nothing lost, nothing extra");
    // Spilled: 600 in the first v4 set, the rest in the second.
    assert_eq!(
        emu.addresses(&v4a).await.len() + emu.addresses(&v4b).await.len(),
        900
    );
    assert!(injected > 0, "faults were injected");
    eprintln!(
        "faults: {injected} injected failures, {} UpdateIPSet and {} GetIPSet calls, \
         {caller_retries} caller-level retries",
        emu.proxy.calls("UpdateIPSet"),
        emu.proxy.calls("GetIPSet")
    );
}
