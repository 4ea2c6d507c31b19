//! The shared conformance suite and the AWS-specific contract, against moto behind the fault
//! proxy (real HTTP, real SDK, AWS error types).

mod common;

use std::collections::BTreeSet;

use aws_sdk_wafv2::types::IpAddressVersion;
use palisade_providers::aws::AwsFirewall;
use palisade_providers::{Diff, Error, Family, Firewall, IpNet, conformance, parse_cidr};
use palisade_tests::moto::{Fault, ProxyConfig};

use common::{Emulator, adds, removes, v4_hosts, v6_hosts};

async fn two_sets(emu: &Emulator) -> (String, String) {
    let v4 = emu.create_set("conf-v4", IpAddressVersion::Ipv4).await;
    let v6 = emu.create_set("conf-v6", IpAddressVersion::Ipv6).await;
    (v4, v6)
}

#[tokio::test]
async fn aws_backend_conforms() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let (v4, v6) = two_sets(&emu).await;
    let fw = emu
        .builder(&[v4.clone(), v6.clone()])
        .build()
        .await
        .expect("build");
    conformance::run_all(&fw).await;
    let emu_ref = &emu;
    let v4_ref = &v4;
    conformance::foreign_entries_survive(&fw, |n: IpNet| async move {
        emu_ref.foreign_edit(v4_ref, &[n.to_string()], &[]).await;
    })
    .await;
    assert!(
        emu.proxy.calls("UpdateIPSet") >= 4,
        "writes went through the proxy"
    );
}

#[tokio::test]
async fn family_is_read_from_aws_and_description_preserved() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let (v4, v6) = two_sets(&emu).await;
    // Configured in the "wrong" order: families come from GetIPSet, not from the order.
    let fw = emu
        .builder(&[v6.clone(), v4.clone()])
        .build()
        .await
        .expect("build");
    let status = fw.status().await.expect("status");
    assert_eq!(status[0].id, v6);
    assert_eq!(status[0].family, Family::V6);
    assert_eq!(status[1].family, Family::V4);
    assert_eq!(status[1].capacity, 10_000);
    fw.apply(&adds(&[parse_cidr("192.0.2.1").unwrap()]))
        .await
        .expect("apply");
    let (list, description) = emu.raw(&v4).await;
    assert_eq!(list, vec!["192.0.2.1/32".to_string()]);
    assert_eq!(description.as_deref(), Some("managed by palisade tests"));
}

#[tokio::test]
async fn bad_input_is_refused_before_aws() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let v4 = emu.create_set("only-v4", IpAddressVersion::Ipv4).await;
    let fw = emu
        .builder(std::slice::from_ref(&v4))
        .build()
        .await
        .expect("build");
    let not_normal: IpNet = "192.0.2.7/24".parse().unwrap();
    let all: IpNet = "0.0.0.0/0".parse().unwrap();
    let mapped: IpNet = "::ffff:192.0.2.7/128".parse().unwrap();
    let v6 = parse_cidr("2001:db8::1").unwrap();
    for net in [not_normal, all, mapped, v6] {
        let err = fw.apply(&adds(&[net])).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Invalid {
                    provider: "aws",
                    ..
                }
            ),
            "{net}: {err}"
        );
    }
    assert_eq!(emu.proxy.calls("UpdateIPSet"), 0, "nothing reached AWS");
    // A good diff still goes through afterwards.
    fw.apply(&adds(&[parse_cidr("192.0.2.8").unwrap()]))
        .await
        .expect("good diff");
    assert_eq!(emu.addresses(&v4).await.len(), 1);
}

#[tokio::test]
async fn nonexistent_set_and_bad_arn_are_startup_errors() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let missing = "arn:aws:wafv2:us-east-1:123456789012:regional/ipset/nope/11111111-2222-3333-4444-555555555555";
    let err = emu
        .builder(&[missing.to_string()])
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    let err = emu
        .builder(&["arn:aws:wafv2:us-east-1:123456789012:regional/ipset/x".to_string()])
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ipset_arns[0]"), "{err}");
}

#[tokio::test]
async fn full_sets_refuse_the_whole_diff_and_spill_first() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let a = emu.create_set("small-a", IpAddressVersion::Ipv4).await;
    let b = emu.create_set("small-b", IpAddressVersion::Ipv4).await;
    let c = emu.create_set("small-v6", IpAddressVersion::Ipv6).await;
    let fw = emu
        .builder(&[a.clone(), b.clone(), c.clone()])
        .with_set_capacity(3)
        .build()
        .await
        .expect("build");
    // 5 v4 entries spill from a into b.
    fw.apply(&adds(&v4_hosts(0, 5))).await.expect("fits");
    assert_eq!(emu.addresses(&a).await.len(), 3);
    assert_eq!(emu.addresses(&b).await.len(), 2);
    // 2 more v4 (room for 1) plus a v6: refused whole, nothing changes anywhere.
    let mut over = adds(&v4_hosts(5, 2));
    over.add.extend(v6_hosts(0, 1));
    let err = fw.apply(&over).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::LimitExceeded {
                provider: "aws",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(emu.addresses(&b).await.len(), 2);
    assert!(emu.addresses(&c).await.is_empty());
    // Removing makes room; a swap in one diff fits.
    let swap = Diff {
        add: v4_hosts(5, 2).into_iter().collect(),
        remove: v4_hosts(0, 1).into_iter().collect(),
    };
    fw.apply(&swap).await.expect("swap fits");
    let status = fw.status().await.expect("status");
    let fill: Vec<usize> = status.iter().map(|s| s.entries).collect();
    assert_eq!(fill, vec![3, 3, 0]);
}

#[tokio::test]
async fn aws_limit_and_invalid_errors_are_classified() {
    // The proxy enforces a 4-entry limit while the provider believes in 10,000: AWS's
    // WAFLimitsExceededException must surface as LimitExceeded, not be retried forever.
    let emu = Emulator::start(ProxyConfig {
        max_entries: 4,
        ..ProxyConfig::default()
    })
    .await;
    let v4 = emu.create_set("limited", IpAddressVersion::Ipv4).await;
    let fw = emu
        .builder(std::slice::from_ref(&v4))
        .build()
        .await
        .expect("build");
    let err = fw.apply(&adds(&v4_hosts(0, 5))).await.unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
    assert_eq!(emu.proxy.calls("UpdateIPSet"), 1, "not retried");
    assert!(emu.addresses(&v4).await.is_empty());
}

#[tokio::test]
async fn throttles_conflicts_and_internal_errors_are_retried() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let v4 = emu.create_set("flaky", IpAddressVersion::Ipv4).await;
    let fw = emu
        .builder(std::slice::from_ref(&v4))
        .build()
        .await
        .expect("build");
    emu.proxy.inject(
        "UpdateIPSet",
        [Fault::Throttle, Fault::InternalError, Fault::LockConflict],
    );
    let nets = v4_hosts(0, 10);
    assert_eq!(
        fw.apply(&adds(&nets)).await.expect("retried"),
        palisade_providers::Applied::Done
    );
    assert_eq!(emu.proxy.calls("UpdateIPSet"), 4);
    let got = emu.addresses(&v4).await;
    assert_eq!(got, nets.iter().copied().collect::<BTreeSet<_>>());
}

#[tokio::test]
async fn persistent_failure_returns_a_retriable_error_and_loses_nothing() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let v4 = emu.create_set("down", IpAddressVersion::Ipv4).await;
    let fw = emu
        .builder(std::slice::from_ref(&v4))
        .with_max_attempts(2)
        .build()
        .await
        .expect("build");
    emu.proxy
        .inject("UpdateIPSet", [Fault::InternalError, Fault::InternalError]);
    let nets = v4_hosts(0, 3);
    let err = fw.apply(&adds(&nets)).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    // The caller (the reconciler) applies again once AWS recovers.
    fw.apply(&adds(&nets)).await.expect("recovered");
    assert_eq!(emu.addresses(&v4).await.len(), 3);
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let v4 = emu.create_set("dry", IpAddressVersion::Ipv4).await;
    let fw: AwsFirewall = emu
        .builder(std::slice::from_ref(&v4))
        .with_dry_run(true)
        .build()
        .await
        .expect("build");
    assert!(fw.is_dry_run());
    fw.apply(&adds(&v4_hosts(0, 100))).await.expect("dry apply");
    fw.apply(&removes(&v4_hosts(0, 1)))
        .await
        .expect("dry remove");
    assert_eq!(emu.proxy.calls("UpdateIPSet"), 0);
    assert!(emu.addresses(&v4).await.is_empty());
}
