use std::time::Duration;

use super::*;

const UID_A: &str = "0f5e7c3a-1b2c-4d5e-8f90-123456789abc";
const UID_B: &str = "11111111-2222-3333-4444-555555555555";
const ID_APP: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const ID_SIDE: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// `<root>/pods` and `<root>/containers` as the kubelet lays them out.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("pods")).expect("pods");
        std::fs::create_dir(dir.path().join("containers")).expect("containers");
        Node { dir }
    }
    fn pods(&self) -> PathBuf {
        self.dir.path().join("pods")
    }
    /// A pod with one `0.log` per container, and the `/var/log/containers` link of each
    /// container that has an id.
    fn pod(&self, ns: &str, pod: &str, uid: &str, containers: &[(&str, Option<&str>)]) {
        let pod_dir = self.pods().join(format!("{ns}_{pod}_{uid}"));
        for (c, id) in containers {
            std::fs::create_dir_all(pod_dir.join(c)).expect("container dir");
            let log = pod_dir.join(c).join("0.log");
            std::fs::write(&log, b"").expect("log");
            if let Some(id) = id {
                let link = self
                    .dir
                    .path()
                    .join("containers")
                    .join(format!("{pod}_{ns}_{c}-{id}.log"));
                std::os::unix::fs::symlink(&log, link).expect("symlink");
            }
        }
    }
}

fn names(ns: &str, pod: &str, container: Option<&str>) -> Option<PodNames> {
    Some(PodNames {
        namespace: ns.into(),
        pod: pod.into(),
        container: container.map(Into::into),
    })
}

#[test]
fn names_pods_and_their_containers() {
    let node = Node::new();
    node.pod(
        "shop",
        "web-7d9f8-x2k4q",
        UID_A,
        &[("app", Some(ID_APP)), ("envoy", Some(ID_SIDE))],
    );
    node.pod(
        "kube-system",
        "coredns-5d78c-abcde",
        UID_B,
        &[("coredns", None)],
    );
    let logs = PodLogs::new(node.pods());
    assert_eq!(
        logs.lookup(UID_A, Some(ID_APP)),
        names("shop", "web-7d9f8-x2k4q", Some("app"))
    );
    assert_eq!(
        logs.lookup(UID_A, Some(ID_SIDE)),
        names("shop", "web-7d9f8-x2k4q", Some("envoy"))
    );
    // two containers and no id that tells them apart: the container stays unknown
    assert_eq!(
        logs.lookup(UID_A, None),
        names("shop", "web-7d9f8-x2k4q", None)
    );
    assert_eq!(
        logs.lookup(UID_A, Some("cccccccccccccccccccccccc")),
        names("shop", "web-7d9f8-x2k4q", None)
    );
    // one container: that is the one, with or without a link
    assert_eq!(
        logs.lookup(UID_B, Some(ID_APP)).map(|n| n.container),
        Some(None),
        "the links give this id to another pod: inconsistent, no container named"
    );
    assert_eq!(
        logs.lookup(UID_B, Some(ID_SIDE.get(..40).unwrap_or_default())),
        names("kube-system", "coredns-5d78c-abcde", Some("coredns")),
        "no links for this pod: its lone container"
    );
    assert_eq!(
        logs.lookup(UID_B, None),
        names("kube-system", "coredns-5d78c-abcde", Some("coredns"))
    );
    assert_eq!(
        logs.lookup("99999999-0000-0000-0000-000000000000", None),
        None
    );
}

#[test]
fn ignores_what_the_kubelet_does_not_write() {
    let node = Node::new();
    let pods = node.pods();
    std::fs::create_dir(pods.join("not-a-pod")).expect("dir");
    std::fs::create_dir(pods.join("a_b_c_d")).expect("dir");
    std::fs::create_dir(pods.join("ns_pod_not-hex!")).expect("dir");
    std::fs::write(pods.join(format!("ns_pod_{UID_A}")), b"a file").expect("file");
    std::fs::write(node.dir.path().join("containers/garbage.log"), b"").expect("file");
    let logs = PodLogs::new(&pods);
    assert_eq!(logs.lookup(UID_A, None), None);
    assert_eq!(logs.lookup("c", None), None);
    // no directories at all
    let logs = PodLogs::new(node.dir.path().join("missing/pods"));
    assert_eq!(logs.lookup(UID_A, None), None);
}

#[test]
fn picks_up_new_pods_on_change_and_new_containers_on_a_rate_limited_miss() {
    let node = Node::new();
    let logs = PodLogs::new(node.pods());
    let t0 = Instant::now();
    assert_eq!(logs.lookup_at(UID_A, None, t0), None);

    // a new pod: still within the rescan interval, nothing is read
    node.pod("shop", "web-1", UID_A, &[("app", Some(ID_APP))]);
    assert_eq!(
        logs.lookup_at(UID_A, None, t0 + Duration::from_millis(10)),
        None
    );
    let t1 = t0 + MIN_RESCAN;
    assert_eq!(
        logs.lookup_at(UID_A, None, t1),
        names("shop", "web-1", Some("app"))
    );

    // a second container appears in the same pod (the pods directory itself is unchanged)
    let pod_dir = node.pods().join(format!("shop_web-1_{UID_A}"));
    std::fs::create_dir(pod_dir.join("envoy")).expect("dir");
    let link = node
        .dir
        .path()
        .join(format!("containers/web-1_shop_envoy-{ID_SIDE}.log"));
    std::os::unix::fs::symlink(pod_dir.join("envoy"), &link).expect("link");
    // the miss waits for the interval, then reads again
    let soon = t1 + Duration::from_millis(10);
    assert_eq!(
        logs.lookup_at(UID_A, Some(ID_SIDE), soon),
        names("shop", "web-1", None),
        "an id no link names yet is not taken for the pod's lone known container"
    );
    let t2 = t1 + MIN_RESCAN;
    assert_eq!(
        logs.lookup_at(UID_A, Some(ID_SIDE), t2),
        names("shop", "web-1", Some("envoy"))
    );

    // a deleted pod disappears once the directory changes
    std::fs::remove_dir_all(&pod_dir).expect("remove");
    let t3 = t2 + MIN_RESCAN;
    assert_eq!(logs.lookup_at(UID_A, None, t3), None);
}

#[test]
fn splits_the_names() {
    assert_eq!(
        split_pod_dir(&format!("shop_web-7d9f8-x2k4q_{UID_A}")),
        Some(("shop", "web-7d9f8-x2k4q", UID_A))
    );
    assert_eq!(split_pod_dir("a_b"), None);
    assert_eq!(
        split_container_log(&format!("web-1_shop_app-{ID_APP}.log")),
        Some(("web-1", "shop", "app", ID_APP))
    );
    assert_eq!(
        split_container_log(&format!("web-1_shop_my-sidecar-{ID_APP}.log")),
        Some(("web-1", "shop", "my-sidecar", ID_APP))
    );
    assert_eq!(split_container_log("web-1_shop_app.log"), None);
    assert_eq!(
        split_container_log(&format!("web-1_shop_app-{ID_APP}")),
        None
    );
}
