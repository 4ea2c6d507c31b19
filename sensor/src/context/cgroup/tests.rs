use super::*;

const UID: &str = "0f5e7c3a-1b2c-4d5e-8f90-123456789abc";
const ID: &str = "4f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

fn us(uid: &str) -> String {
    uid.replace('-', "_")
}

fn parsed(path: &str) -> CgroupContainer {
    parse_cgroup_path(path).unwrap_or_else(|| panic!("{path} should parse"))
}

#[test]
fn systemd_driver_layouts_of_the_three_runtimes() {
    let u = us(UID);
    for (qos_path, qos) in [
        (
            format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice"),
            QosClass::BestEffort,
        ),
        (
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"),
            QosClass::Burstable,
        ),
        (
            format!("kubepods.slice/kubepods-pod{u}.slice"),
            QosClass::Guaranteed,
        ),
    ] {
        for (scope, runtime, scheme) in [
            (
                format!("cri-containerd-{ID}.scope"),
                Runtime::Containerd,
                "containerd",
            ),
            (format!("crio-{ID}.scope"), Runtime::CriO, "cri-o"),
            (format!("docker-{ID}.scope"), Runtime::Docker, "docker"),
        ] {
            let path = format!("/{qos_path}/{scope}");
            let c = parsed(&path);
            assert_eq!(c.pod_uid, UID, "{path}: canonical UID, dashes");
            assert_eq!(c.qos, qos, "{path}");
            assert_eq!(c.runtime, Some(runtime), "{path}");
            assert_eq!(c.container_id.as_deref(), Some(ID), "{path}");
            assert_eq!(
                c.kubernetes_container_id(None),
                Some(format!("{scheme}://{ID}"))
            );
        }
    }
}

#[test]
fn cgroupfs_driver_layouts() {
    for (path, qos, runtime) in [
        (
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            QosClass::BestEffort,
            None,
        ),
        (
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            QosClass::Burstable,
            None,
        ),
        (
            format!("/kubepods/pod{UID}/{ID}"),
            QosClass::Guaranteed,
            None,
        ),
        (
            format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
            QosClass::Burstable,
            Some(Runtime::CriO),
        ),
    ] {
        let c = parsed(&path);
        assert_eq!(c.pod_uid, UID, "{path}");
        assert_eq!(c.qos, qos, "{path}");
        assert_eq!(c.runtime, runtime, "{path}");
        assert_eq!(c.container_id.as_deref(), Some(ID), "{path}");
    }
    // the bare id says no runtime: the caller's fallback (the node's runtime) names it
    let c = parsed(&format!("kubepods/pod{UID}/{ID}"));
    assert_eq!(c.kubernetes_container_id(None), Some(ID.to_owned()));
    assert_eq!(
        c.kubernetes_container_id(Some(Runtime::Containerd)),
        Some(format!("containerd://{ID}"))
    );
}

#[test]
fn prefixes_suffixes_and_pod_level_cgroups() {
    let u = us(UID);
    // kind and other nested kubelets: a prefix before `kubepods`; a mount-absolute path
    for path in [
        format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
             kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
        ),
        format!("/sys/fs/cgroup/kubepods/besteffort/pod{UID}/{ID}"),
        format!("palisade-test-1/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope"),
        // a sub-cgroup inside the container (crun's `container`, an app's own)
        format!("/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope/container"),
    ] {
        let c = parsed(&path);
        assert_eq!(
            (c.pod_uid.as_str(), c.container_id.as_deref()),
            (UID, Some(ID)),
            "{path}"
        );
    }
    // the pod's own cgroup: the pod is known, the container is not
    let c = parsed(&format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"
    ));
    assert_eq!(c.pod_uid, UID);
    assert_eq!((c.container_id, c.runtime), (None, None));
    // upper-case hex is lowercased
    let c = parsed(&format!(
        "/kubepods/pod{}/{}",
        UID.to_uppercase(),
        ID.to_uppercase()
    ));
    assert_eq!(
        (c.pod_uid.as_str(), c.container_id.as_deref()),
        (UID, Some(ID))
    );
}

#[test]
fn not_kubernetes_containers() {
    let u = us(UID);
    for path in [
        "",
        "/",
        "/system.slice/containerd.service",
        "/system.slice/docker-0123456789abcdef0123.scope",
        "/user.slice/user-1000.slice/session-2.scope",
        "/init.scope",
        "/kubepods.slice",
        "/kubepods.slice/kubepods-besteffort.slice",
        "/kubepods/besteffort",
        // CRI-O's monitor, not the container
        &format!("/kubepods.slice/kubepods-pod{u}.slice/crio-conmon-{ID}.scope"),
        &format!("/kubepods/pod{UID}/crio-conmon-{ID}"),
        // an unknown scope name, a non-hex id, a too-short id
        &format!("/kubepods.slice/kubepods-pod{u}.slice/podman-{ID}.scope"),
        &format!("/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-xyz.scope"),
        &format!("/kubepods/pod{UID}/abc"),
        // pod-shaped names outside kubepods, and a non-UID
        &format!("/system.slice/other-pod{u}.slice/cri-containerd-{ID}.scope"),
        &format!("/other/pod{UID}/{ID}"),
        "/kubepods.slice/kubepods-podnot_a_uid.slice",
        "/kubepods/podzzzzzzzz-zzzz/abc",
        "/kubepods/pod--------/0123456789abcdef",
    ] {
        assert_eq!(parse_cgroup_path(path), None, "{path}");
    }
}

#[test]
fn finds_the_cgroup2_mount() {
    let hybrid = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                  cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                  cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
    assert_eq!(
        cgroup2_mount_in(hybrid),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    let unified = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
    assert_eq!(
        cgroup2_mount_in(unified),
        Some(PathBuf::from("/sys/fs/cgroup"))
    );
    let escaped = "cgroup2 /host\\040root/cgroup cgroup2 rw 0 0\n";
    assert_eq!(
        cgroup2_mount_in(escaped),
        Some(PathBuf::from("/host root/cgroup"))
    );
    assert_eq!(cgroup2_mount_in("proc /proc proc rw 0 0\n"), None);
    assert_eq!(cgroup2_mount_in(""), None);
}

/// Cgroups made for a test under the machine's cgroup2 mount, removed (deepest first) on drop.
struct TestCgroups {
    top: PathBuf,
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        palisade_tests::cgroup::remove_tree(&self.top);
    }
}

/// The machine's cgroup2 mount, when this process may create cgroups in it. Without root the
/// test is skipped locally and fails under CI (`CI=true`), so it never passes by not running.
fn writable_cgroup2() -> Option<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let root = cgroup2_mount();
    let is_root = unsafe { libc::geteuid() } == 0;
    match root {
        Some(root) if is_root => Some(root),
        _ if ci => panic!("CI=true: this test needs root and a cgroup2 mount (found {root:?})"),
        _ => {
            eprintln!("skipped: needs root and a cgroup2 mount");
            None
        }
    }
}

#[test]
fn resolves_ids_of_real_cgroups_and_rescans_at_most_once_a_second() {
    let Some(mount) = writable_cgroup2() else {
        return;
    };
    let name = format!("palisade-test-{}-{}", std::process::id(), rand_suffix());
    let guard = TestCgroups {
        top: mount.join(&name),
    };
    let u = us(UID);
    let rel = format!(
        "{name}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/\
         cri-containerd-{ID}.scope"
    );
    std::fs::create_dir_all(mount.join(&rel)).expect("create the test cgroups");
    let id = inode(&mount.join(&rel)).expect("stat the scope");

    let resolver = CgroupResolver::new(&mount);
    let t0 = Instant::now();
    assert_eq!(resolver.path_at(id, t0).as_deref(), Some(rel.as_str()));
    let c = resolver.container_of(id).expect("a container");
    assert_eq!(c.pod_uid, UID);
    assert_eq!(
        c.kubernetes_container_id(None),
        Some(format!("containerd://{ID}"))
    );

    // a cgroup made after the scan: a miss within MIN_RESCAN does not walk again
    let crio = format!("{name}/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope");
    std::fs::create_dir_all(mount.join(&crio)).expect("create the CRI-O cgroup");
    let id2 = inode(&mount.join(&crio)).expect("stat");
    assert_eq!(resolver.path_at(id2, t0 + Duration::from_millis(100)), None);
    let later = t0 + MIN_RESCAN + Duration::from_millis(1);
    assert_eq!(resolver.path_at(id2, later).as_deref(), Some(crio.as_str()));
    // the cached entry is still served, without a rescan
    assert_eq!(resolver.path_at(id, later).as_deref(), Some(rel.as_str()));

    // what the capture source will call with the id bpf_skb_cgroup_id gives
    let ctx = crate::context::ContextResolver::new(Some("node-a".into()))
        .with_cgroups(CgroupResolver::new(&mount))
        .resolve_socket(Some(id), Some("eth0".into()), Some(8080));
    assert_eq!(ctx.pod_uid.as_deref(), Some(UID));
    assert_eq!(ctx.container_id, Some(format!("containerd://{ID}")));
    assert_eq!(
        (ctx.interface.as_deref(), ctx.dst_port),
        (Some("eth0"), Some(8080))
    );

    // the id is the one the kernel gives BPF programs: the cgroup's file handle (what
    // bpf_get_current_cgroup_id and bpf_skb_cgroup_id return) is its inode number
    assert_eq!(kernel_cgroup_id(&mount.join(&rel)), Some(id));

    // a process placed in the scope: its /proc/<pid>/cgroup path parses to the same container
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    std::fs::write(
        mount.join(&rel).join("cgroup.procs"),
        child.id().to_string(),
    )
    .expect("move the process into the scope");
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).expect("read");
    let _ = child.kill();
    let _ = child.wait();
    let v2 = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    assert_eq!(parse_cgroup_path(v2), Some(c.clone()), "{v2}");

    // a removed cgroup is not reported from the cache
    std::fs::remove_dir(mount.join(&crio)).expect("remove");
    assert_eq!(
        resolver.path_at(id2, later + Duration::from_millis(1)),
        None
    );
    drop(guard);
    assert!(!mount.join(&name).exists(), "cleaned up");
}

/// The kernel's id of the cgroup at `path`, from its file handle (how systemd and bpftool
/// read it): an 8-byte handle holding the kernfs node id.
fn kernel_cgroup_id(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // struct file_handle (two 4-byte fields) followed by up to 120 bytes of handle, 8-aligned
    let mut buf = [0u64; 16];
    let handle = buf.as_mut_ptr().cast::<libc::file_handle>();
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `handle` points at 128 writable, aligned bytes; handle_bytes says 120 follow
    // the header, which is what the kernel may write.
    let rc = unsafe {
        (*handle).handle_bytes = 120;
        libc::name_to_handle_at(libc::AT_FDCWD, c_path.as_ptr(), handle, &mut mount_id, 0)
    };
    // SAFETY: the header was initialized above and by the kernel.
    let len = unsafe { (*handle).handle_bytes };
    if rc != 0 || len != 8 {
        return None;
    }
    Some(buf[1])
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}
