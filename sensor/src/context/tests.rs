use super::*;

const UID: &str = "0f5e7c3a-1b2c-4d5e-8f90-123456789abc";
const ID: &str = "4f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

/// A kubelet log layout with one pod of two containers, linked by id.
fn pod_logs() -> (tempfile::TempDir, PodLogs) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pod = dir.path().join(format!("pods/shop_web-7d9f8-x2k4q_{UID}"));
    for c in ["app", "envoy"] {
        std::fs::create_dir_all(pod.join(c)).expect("dirs");
    }
    std::fs::create_dir(dir.path().join("containers")).expect("containers");
    std::os::unix::fs::symlink(
        pod.join("app"),
        dir.path()
            .join(format!("containers/web-7d9f8-x2k4q_shop_app-{ID}.log")),
    )
    .expect("link");
    let logs = PodLogs::new(dir.path().join("pods"));
    (dir, logs)
}

#[test]
fn a_cgroup_path_names_pod_namespace_container_and_id() {
    let (_dir, logs) = pod_logs();
    let r = ContextResolver::new(Some("node-a".into())).with_pod_logs(logs);
    let origin = Origin {
        interface: Some("eth0".into()),
        dst_port: Some(8080),
        cgroup: Some(CgroupRef::Path(format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/\
             cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        ))),
        ..Origin::default()
    };
    let (ctx, outcome) = r.resolve_outcome(&origin);
    assert_eq!(outcome, Some(Outcome::Pod));
    assert_eq!(
        ctx,
        Context {
            node: Some("node-a".into()),
            namespace: Some("shop".into()),
            pod: Some("web-7d9f8-x2k4q".into()),
            pod_uid: Some(UID.into()),
            container: Some("app".into()),
            container_id: Some(format!("containerd://{ID}")),
            workload: None,
            interface: Some("eth0".into()),
            dst_port: Some(8080),
        }
    );
    ctx.validate().expect("valid on the wire");
}

#[test]
fn without_the_logs_the_cgroup_still_gives_uid_and_id() {
    let r = ContextResolver::new(Some("node-a".into()))
        .with_pod_logs(PodLogs::new("/nonexistent/palisade/pods"));
    let (ctx, outcome) = r.resolve_outcome(&Origin {
        cgroup: Some(CgroupRef::Path(format!(
            "/kubepods/besteffort/pod{UID}/crio-{ID}"
        ))),
        ..Origin::default()
    });
    assert_eq!(outcome, Some(Outcome::PodUid));
    assert_eq!(ctx.pod_uid.as_deref(), Some(UID));
    assert_eq!(ctx.container_id, Some(format!("cri-o://{ID}")));
    assert_eq!((ctx.pod, ctx.namespace, ctx.container), (None, None, None));
}

#[test]
fn a_host_cgroup_or_an_unknown_id_adds_nothing() {
    let r = ContextResolver::new(Some("node-a".into()));
    for (cgroup, why) in [
        (
            CgroupRef::Path("/system.slice/nginx.service".into()),
            Outcome::Host,
        ),
        // no cgroup hierarchy configured
        (CgroupRef::Id(12345), Outcome::UnknownCgroup),
    ] {
        let (ctx, outcome) = r.resolve_outcome(&Origin {
            dst_port: Some(80),
            cgroup: Some(cgroup),
            ..Origin::default()
        });
        assert_eq!(outcome, Some(why));
        assert_eq!(
            ctx,
            Context {
                node: Some("node-a".into()),
                dst_port: Some(80),
                ..Context::default()
            }
        );
    }
}

#[test]
fn log_mode_keeps_the_downward_api_values_and_drops_invalid_ones() {
    let r = ContextResolver::new(Some("host-name".into()));
    let origin = Origin {
        node: Some("ip-10-0-0-5".into()),
        pod: Some("web-1".into()),
        namespace: Some("shop".into()),
        pod_uid: Some(UID.into()),
        container: Some("bad name".into()),
        ..Origin::default()
    };
    let (ctx, outcome) = r.resolve_outcome(&origin);
    assert_eq!(outcome, None, "no cgroup to look up");
    assert_eq!(
        ctx.node.as_deref(),
        Some("ip-10-0-0-5"),
        "NODE_NAME wins over the host name"
    );
    assert_eq!(ctx.pod.as_deref(), Some("web-1"));
    assert_eq!(ctx.namespace.as_deref(), Some("shop"));
    assert_eq!(ctx.pod_uid.as_deref(), Some(UID));
    assert_eq!(
        ctx.container, None,
        "refused by the wire contract, so left out"
    );
    ctx.validate().expect("valid");
}

#[test]
fn a_bare_cgroupfs_id_takes_the_configured_runtime() {
    let path = CgroupRef::Path(format!("/kubepods/pod{UID}/{ID}"));
    let origin = Origin {
        cgroup: Some(path),
        ..Origin::default()
    };
    let bare = ContextResolver::new(None).resolve(&origin);
    assert_eq!(bare.container_id.as_deref(), Some(ID));
    let named = ContextResolver::new(None)
        .with_runtime(Runtime::Containerd)
        .resolve(&origin);
    assert_eq!(named.container_id, Some(format!("containerd://{ID}")));
    // a path that names its runtime keeps it
    let crio = ContextResolver::new(None)
        .with_runtime(Runtime::Containerd)
        .resolve(&Origin {
            cgroup: Some(CgroupRef::Path(format!("/kubepods/pod{UID}/crio-{ID}"))),
            ..Origin::default()
        });
    assert_eq!(crio.container_id, Some(format!("cri-o://{ID}")));
}
