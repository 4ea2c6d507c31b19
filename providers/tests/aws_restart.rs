//! The provider is dropped mid-sync (a blocker restart) and rebuilt: a reconciler-style
//! re-apply converges, and nothing it does not own is removed.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_wafv2::types::IpAddressVersion;
use palisade_providers::{Diff, Firewall, IpNet};
use palisade_tests::moto::ProxyConfig;
use tokio::task::JoinSet;

use common::{Emulator, adds, v4_hosts, v6_hosts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilt_provider_converges_and_keeps_foreign_entries() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let arns = vec![
        emu.create_set("restart-v4-a", IpAddressVersion::Ipv4).await,
        emu.create_set("restart-v4-b", IpAddressVersion::Ipv4).await,
        emu.create_set("restart-v6", IpAddressVersion::Ipv6).await,
    ];
    let foreign: Vec<String> = (1..=5).map(|i| format!("203.0.113.{i}/32")).collect();
    emu.foreign_edit(&arns[0], &foreign, &[]).await;
    let foreign_v6 = vec!["2001:db8:ffff::/48".to_string()];
    emu.foreign_edit(&arns[2], &foreign_v6, &[]).await;

    let ours_v4 = v4_hosts(0, 3000);
    let ours_v6 = v6_hosts(0, 300);
    let desired: BTreeSet<IpNet> = ours_v4.iter().chain(&ours_v6).copied().collect();

    // First life: batches arrive over 3 s; the process "dies" after 1.5 s.
    {
        let fw = emu
            .builder(&arns)
            .with_set_capacity(2000)
            .build()
            .await
            .expect("build");
        let mut tasks = JoinSet::new();
        for (i, (a, b)) in ours_v4.chunks(100).zip(ours_v6.chunks(10)).enumerate() {
            let fw = fw.clone();
            let mut nets = a.to_vec();
            nets.extend_from_slice(b);
            tasks.spawn(async move {
                tokio::time::sleep(Duration::from_millis(100 * i as u64)).await;
                fw.apply(&adds(&nets)).await
            });
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        drop(fw);
    }
    let mut partial = 0;
    for arn in &arns {
        partial += emu.addresses(arn).await.len();
    }
    // At 1 write/s, 1.5 s allow at most two UpdateIPSet calls: the sync was cut short.
    assert!(
        partial < desired.len(),
        "stopped mid-sync ({partial} entries)"
    );

    // Second life: the reconciler reads what is there and applies only the difference.
    let fw = emu
        .builder(&arns)
        .with_set_capacity(2000)
        .build()
        .await
        .expect("rebuild");
    let actual = fw.entries().await.expect("entries");
    let diff = Diff {
        add: desired.difference(&actual).copied().collect(),
        remove: BTreeSet::new(),
    };
    fw.apply(&diff).await.expect("converge");
    // And the blocks we own expire: remove them all; the foreign ones stay.
    let expire = Diff {
        add: BTreeSet::new(),
        remove: ours_v4[..1000].iter().copied().collect(),
    };
    fw.apply(&expire).await.expect("expire");

    let mut got = BTreeSet::new();
    for arn in &arns {
        got.extend(emu.addresses(arn).await);
    }
    let mut want: BTreeSet<IpNet> = ours_v4[1000..].iter().chain(&ours_v6).copied().collect();
    want.extend(
        foreign
            .iter()
            .chain(&foreign_v6)
            .map(|s| s.parse::<IpNet>().unwrap()),
    );
    assert_eq!(got, want);
    eprintln!(
        "restart: {partial} entries written before the drop, {} added after the rebuild",
        diff.add.len()
    );
}
