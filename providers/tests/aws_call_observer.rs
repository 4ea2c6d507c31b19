//! Every API call the AWS provider makes reaches its `CallObserver`, each retry included: a
//! writer that sends faster than the account's write budget is throttled by the limits proxy,
//! retries inside the provider, and every `ThrottlingException` is counted where it happens.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_wafv2::types::IpAddressVersion;
use palisade_providers::{CallObserver, CallOutcome, Firewall};
use palisade_tests::moto::{Fault, ProxyConfig};

use common::{Emulator, adds, v4_hosts};

/// Calls seen, by (operation, outcome), and their latencies.
#[derive(Debug, Default)]
struct Seen {
    calls: Mutex<HashMap<(&'static str, CallOutcome), u64>>,
    slowest: Mutex<Duration>,
}

impl Seen {
    fn count(&self, op: &str, outcome: CallOutcome) -> u64 {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|((o, out), _)| *o == op && *out == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    fn total(&self, op: &str) -> u64 {
        CallOutcome::ALL.iter().map(|o| self.count(op, *o)).sum()
    }
}

impl CallObserver for Seen {
    fn call(&self, provider: &'static str, op: &'static str, outcome: CallOutcome, t: Duration) {
        assert_eq!(provider, "aws");
        *self.calls.lock().unwrap().entry((op, outcome)).or_default() += 1;
        let mut slowest = self.slowest.lock().unwrap();
        *slowest = (*slowest).max(t);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_and_lock_conflicts_are_counted_per_attempt() {
    // The proxy allows 1 write per second, as AWS does; the provider is told 20.
    let emu = Emulator::start(ProxyConfig::default()).await;
    let v4 = emu.create_set("observed", IpAddressVersion::Ipv4).await;
    let seen = Arc::new(Seen::default());
    let fw = emu
        .builder(std::slice::from_ref(&v4))
        .with_write_rate(20.0)
        .with_call_observer(seen.clone())
        .build()
        .await
        .expect("build");
    // The startup read is reported too (the observer was given to the builder).
    assert_eq!(seen.count("GetIPSet", CallOutcome::Ok), 1);

    // One diff at a time, each its own UpdateIPSet: faster than the proxy's budget.
    let nets = v4_hosts(0, 6);
    for n in &nets {
        fw.apply(&adds(std::slice::from_ref(n)))
            .await
            .expect("retried inside the provider until written");
    }
    // And a lock conflict, retried after a re-read.
    emu.proxy.inject("UpdateIPSet", [Fault::LockConflict]);
    fw.apply(&adds(&v4_hosts(100, 1))).await.expect("retried");

    let throttled = emu.proxy.errors("ThrottlingException");
    eprintln!(
        "{} UpdateIPSet, {throttled} throttled, {} GetIPSet; slowest call {:?}",
        emu.proxy.calls("UpdateIPSet"),
        emu.proxy.calls("GetIPSet"),
        seen.slowest.lock().unwrap()
    );
    assert!(throttled > 0, "the proxy throttled the writer");
    assert_eq!(seen.count("UpdateIPSet", CallOutcome::Throttled), throttled);
    assert_eq!(
        seen.count("UpdateIPSet", CallOutcome::LockConflict),
        emu.proxy.errors("WAFOptimisticLockException")
    );
    assert_eq!(seen.count("UpdateIPSet", CallOutcome::LockConflict), 1);
    assert_eq!(seen.count("UpdateIPSet", CallOutcome::Ok), 7);
    assert_eq!(seen.count("UpdateIPSet", CallOutcome::Error), 0);
    assert_eq!(seen.total("UpdateIPSet"), emu.proxy.calls("UpdateIPSet"));
    // The re-read after the conflict included: every GetIPSet reported.
    assert_eq!(seen.total("GetIPSet"), emu.proxy.calls("GetIPSet"));
    assert!(seen.count("GetIPSet", CallOutcome::Ok) >= 2);
    assert_eq!(fw.entries().await.expect("entries").len(), 7);
}
