//! The conformance suite every backend passes (feature `conformance`).
//!
//! Each check takes a firewall whose managed sets start empty and leaves it as it found it
//! where it can. A backend's tests call [`run_all`] (or single checks) against a fresh instance.
//! `foreign` adds an entry the way somebody else would (an operator's manual edit): each
//! backend passes a closure that writes behind the firewall's back.

use std::collections::BTreeSet;
use std::future::Future;

use ipnet::IpNet;

use crate::{Diff, Error, Family, Firewall, parse_cidr};

fn nets(items: &[&str]) -> BTreeSet<IpNet> {
    items
        .iter()
        .map(|s| parse_cidr(s).unwrap_or_else(|e| panic!("test CIDR {s}: {e}")))
        .collect()
}

fn add(items: &[&str]) -> Diff {
    Diff {
        add: nets(items),
        remove: BTreeSet::new(),
    }
}

fn remove(items: &[&str]) -> Diff {
    Diff {
        add: BTreeSet::new(),
        remove: nets(items),
    }
}

/// Adds become visible, are idempotent, and removes take out only what is listed.
pub async fn add_read_remove(fw: &dyn Firewall) {
    let v4 = ["192.0.2.10", "198.51.100.0/24"];
    let v6 = ["2001:db8::10", "2001:db8:1::/48"];
    fw.apply(&add(&v4)).await.expect("add v4");
    fw.apply(&add(&v6)).await.expect("add v6");
    fw.apply(&add(&v4)).await.expect("re-adding is a no-op");
    let got = fw.entries().await.expect("entries");
    let all: BTreeSet<IpNet> = nets(&v4).into_iter().chain(nets(&v6)).collect();
    assert!(all.is_subset(&got), "added entries visible: {got:?}");
    fw.apply(&remove(&["192.0.2.10", "2001:db8::10"]))
        .await
        .expect("remove");
    let got = fw.entries().await.expect("entries");
    assert!(
        nets(&["192.0.2.10"]).is_disjoint(&got),
        "removed entry gone: {got:?}"
    );
    assert!(got.is_superset(&nets(&["198.51.100.0/24", "2001:db8:1::/48"])));
    fw.apply(&remove(&["192.0.2.10"]))
        .await
        .expect("removing an absent entry is a no-op");
    fw.apply(&remove(&["198.51.100.0/24", "2001:db8:1::/48"]))
        .await
        .expect("cleanup");
}

/// Families land in sets of their own family, and status reports them.
pub async fn families_are_separate(fw: &dyn Firewall) {
    fw.apply(&add(&["192.0.2.20", "2001:db8::20"]))
        .await
        .expect("add");
    let status = fw.status().await.expect("status");
    assert!(status.iter().any(|s| s.family == Family::V4), "a v4 set");
    assert!(status.iter().any(|s| s.family == Family::V6), "a v6 set");
    for s in &status {
        assert!(s.entries <= s.capacity, "{s:?} within capacity");
    }
    let v4: usize = status
        .iter()
        .filter(|s| s.family == Family::V4)
        .map(|s| s.entries)
        .sum();
    let v6: usize = status
        .iter()
        .filter(|s| s.family == Family::V6)
        .map(|s| s.entries)
        .sum();
    assert!(v4 >= 1 && v6 >= 1, "v4={v4} v6={v6}");
    fw.apply(&remove(&["192.0.2.20", "2001:db8::20"]))
        .await
        .expect("cleanup");
}

/// Entries somebody else added survive our writes.
pub async fn foreign_entries_survive<F, Fut>(fw: &dyn Firewall, foreign: F)
where
    F: Fn(IpNet) -> Fut,
    Fut: Future<Output = ()>,
{
    let theirs = nets(&["203.0.113.99"]);
    for n in &theirs {
        foreign(*n).await;
    }
    fw.apply(&add(&["192.0.2.30"])).await.expect("add ours");
    fw.apply(&remove(&["192.0.2.30"]))
        .await
        .expect("remove ours");
    let got = fw.entries().await.expect("entries");
    assert!(theirs.is_subset(&got), "foreign entry kept: {got:?}");
}

/// A change with nothing in it succeeds and changes nothing.
pub async fn empty_diff_is_a_no_op(fw: &dyn Firewall) {
    let before = fw.entries().await.expect("entries");
    fw.apply(&Diff::default()).await.expect("empty diff");
    assert_eq!(fw.entries().await.expect("entries"), before);
}

/// Entries that are not normalized (host bits set, `/0`) are refused as `Invalid` and change
/// nothing, even next to valid ones in the same diff.
pub async fn unnormalized_entries_are_refused(fw: &dyn Firewall) {
    let before = fw.entries().await.expect("entries");
    for bad in ["192.0.2.7/24", "0.0.0.0/0", "2001:db8::1/32"] {
        let net: IpNet = bad
            .parse()
            .unwrap_or_else(|e| panic!("test CIDR {bad}: {e}"));
        let mut diff = add(&["192.0.2.40"]);
        diff.add.insert(net);
        let err = fw.apply(&diff).await.expect_err(bad);
        assert!(matches!(err, Error::Invalid { .. }), "{bad}: {err}");
    }
    assert_eq!(fw.entries().await.expect("entries"), before);
}

/// Several applies in flight at once all land (a provider may coalesce them).
pub async fn concurrent_applies_all_land(fw: &dyn Firewall) {
    let (a, b, c, d) = (
        add(&["192.0.2.51", "2001:db8::51"]),
        add(&["192.0.2.52"]),
        add(&["192.0.2.53", "198.51.100.53"]),
        add(&["2001:db8::54"]),
    );
    let (ra, rb, rc, rd) = tokio::join!(fw.apply(&a), fw.apply(&b), fw.apply(&c), fw.apply(&d));
    for r in [ra, rb, rc, rd] {
        r.expect("concurrent apply");
    }
    let got = fw.entries().await.expect("entries");
    let mut all = Diff::default();
    for diff in [a, b, c, d] {
        assert!(diff.add.is_subset(&got), "{:?} landed", diff.add);
        all.merge(Diff {
            add: BTreeSet::new(),
            remove: diff.add,
        });
    }
    fw.apply(&all).await.expect("cleanup");
}

/// `status` counts what `entries` lists.
pub async fn status_counts_entries(fw: &dyn Firewall) {
    fw.apply(&add(&["192.0.2.60", "192.0.2.61", "2001:db8::60"]))
        .await
        .expect("add");
    let status = fw.status().await.expect("status");
    let counted: usize = status.iter().map(|s| s.entries).sum();
    let listed = fw.entries().await.expect("entries").len();
    assert!(counted >= listed, "status {counted} < entries {listed}");
    assert!(status.iter().all(|s| s.capacity > 0));
    fw.apply(&remove(&["192.0.2.60", "192.0.2.61", "2001:db8::60"]))
        .await
        .expect("cleanup");
}

/// Every check that needs no backend-specific hook.
pub async fn run_all(fw: &dyn Firewall) {
    empty_diff_is_a_no_op(fw).await;
    add_read_remove(fw).await;
    families_are_separate(fw).await;
    unnormalized_entries_are_refused(fw).await;
    concurrent_applies_all_land(fw).await;
    status_counts_entries(fw).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryFirewall;

    #[tokio::test]
    async fn memory_backend_conforms() {
        let fw = MemoryFirewall::new();
        run_all(&fw).await;
        let handle = fw.clone();
        foreign_entries_survive(&fw, |n| {
            let h = handle.clone();
            async move { h.insert_foreign(n) }
        })
        .await;
    }
}
