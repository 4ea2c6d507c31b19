use super::*;
use crate::parse_cidr;

fn nets(items: &[&str]) -> BTreeSet<IpNet> {
    items.iter().map(|s| parse_cidr(s).unwrap()).collect()
}

#[tokio::test]
async fn spills_into_the_next_set_and_refuses_overflow_whole() {
    let fw = MemoryFirewall::builder()
        .with_set("a", Family::V4, 2)
        .with_set("b", Family::V4, 1)
        .with_set("c", Family::V6, 1)
        .build();
    let add = nets(&["192.0.2.1", "192.0.2.2", "192.0.2.3"]);
    fw.apply(&Diff {
        add: add.clone(),
        remove: BTreeSet::new(),
    })
    .await
    .unwrap();
    assert_eq!(fw.set_entries("a").unwrap().len(), 2);
    assert_eq!(fw.set_entries("b").unwrap().len(), 1);
    let over = Diff {
        add: nets(&["192.0.2.4"]),
        remove: BTreeSet::new(),
    };
    let err = fw.apply(&over).await.unwrap_err();
    assert_eq!(err.kind(), "limit_exceeded");
    assert_eq!(
        fw.entries().await.unwrap(),
        add,
        "a refused change changes nothing"
    );
    // Removing one makes room in the same call.
    let swap = Diff {
        add: nets(&["192.0.2.4"]),
        remove: nets(&["192.0.2.1"]),
    };
    fw.apply(&swap).await.unwrap();
    assert_eq!(
        fw.entries().await.unwrap(),
        nets(&["192.0.2.2", "192.0.2.3", "192.0.2.4"])
    );
}

#[tokio::test]
async fn foreign_entries_and_faults() {
    let fw = MemoryFirewall::new();
    fw.insert_foreign(parse_cidr("198.51.100.0/24").unwrap());
    fw.inject([Fault::Throttled]);
    let d = Diff {
        add: nets(&["2001:db8::1"]),
        remove: BTreeSet::new(),
    };
    assert!(fw.apply(&d).await.unwrap_err().is_retriable());
    fw.apply(&d).await.unwrap();
    assert_eq!(fw.apply_calls(), 2);
    assert_eq!(
        fw.entries().await.unwrap(),
        nets(&["198.51.100.0/24", "2001:db8::1"])
    );
    let status = fw.status().await.unwrap();
    assert_eq!(status.iter().map(|s| s.entries).sum::<usize>(), 2);
}

#[tokio::test]
async fn rejects_unnormalized_entries() {
    let fw = MemoryFirewall::new();
    let raw: IpNet = "192.0.2.1/24".parse().unwrap();
    let d = Diff {
        add: [raw].into(),
        remove: BTreeSet::new(),
    };
    assert_eq!(fw.apply(&d).await.unwrap_err().kind(), "invalid");
}

#[test]
fn diff_merge_cancels_opposites() {
    let mut d = Diff {
        add: nets(&["192.0.2.1"]),
        remove: nets(&["192.0.2.2"]),
    };
    d.merge(Diff {
        add: nets(&["192.0.2.2"]),
        remove: nets(&["192.0.2.1", "192.0.2.3"]),
    });
    assert_eq!(d.add, nets(&["192.0.2.2"]));
    assert_eq!(d.remove, nets(&["192.0.2.1", "192.0.2.3"]));
}

#[tokio::test]
async fn unparsed_entries_take_room_but_are_not_listed() {
    let fw = MemoryFirewall::builder()
        .with_set("a", Family::V4, 3)
        .build();
    fw.insert_unparsed(Family::V4, "not a cidr");
    fw.insert_unparsed(Family::V4, "10.0.0.1/33");
    assert!(fw.entries().await.unwrap().is_empty());
    assert_eq!(fw.status().await.unwrap()[0].entries, 2);
    let two = Diff {
        add: nets(&["192.0.2.1", "192.0.2.2"]),
        remove: BTreeSet::new(),
    };
    assert_eq!(fw.apply(&two).await.unwrap_err().kind(), "limit_exceeded");
    let one = Diff {
        add: nets(&["192.0.2.1"]),
        remove: BTreeSet::new(),
    };
    fw.apply(&one).await.unwrap();
    assert_eq!(fw.entries().await.unwrap(), nets(&["192.0.2.1"]));
    assert_eq!(fw.status().await.unwrap()[0].entries, 3);
}

#[tokio::test]
async fn dry_run_checks_but_changes_nothing() {
    let fw = MemoryFirewall::builder()
        .with_set("a", Family::V4, 1)
        .with_dry_run(true)
        .build();
    assert!(fw.is_dry_run());
    assert!(!MemoryFirewall::new().is_dry_run());
    let one = Diff {
        add: nets(&["192.0.2.1"]),
        remove: BTreeSet::new(),
    };
    fw.apply(&one).await.unwrap();
    assert!(fw.entries().await.unwrap().is_empty());
    let two = Diff {
        add: nets(&["192.0.2.1", "192.0.2.2"]),
        remove: BTreeSet::new(),
    };
    assert_eq!(fw.apply(&two).await.unwrap_err().kind(), "limit_exceeded");
    assert_eq!(fw.apply_calls(), 2);
}
