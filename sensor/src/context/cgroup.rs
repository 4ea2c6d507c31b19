//! Which container a cgroup v2 path belongs to, and which path a cgroup id names.
//!
//! The kubelet and the container runtime name a container's cgroup after the pod UID and the
//! runtime's container id, so the path alone says who received a request, no API needed:
//!
//! | driver  | layout (QoS slice absent for Guaranteed pods) |
//! | ---     | --- |
//! | systemd | `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope` (`crio-<id>.scope`, `docker-<id>.scope`) |
//! | cgroupfs| `kubepods/besteffort/pod<uid>/<id>` (CRI-O: `crio-<id>`) |
//!
//! The systemd driver writes the UID with `_` for `-` (a `-` separates slice levels); the
//! parser returns the canonical UID. `crio-conmon-<id>.scope` holds CRI-O's monitor process,
//! not the container: it yields nothing. Components before the `kubepods` level (a test
//! prefix, kind's `kubelet.slice/kubelet-kubepods.slice`) and after the container's (a
//! sub-cgroup inside the container) are allowed.
//!
//! [`CgroupResolver`] turns the id that `bpf_skb_cgroup_id` / `bpf_get_current_cgroup_id`
//! return (the inode number of the cgroup's directory) into that path by walking the cgroup2
//! mount, caching what it found and walking again on a miss, at most once per
//! [`MIN_RESCAN`].

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The container runtime that named a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
pub enum Runtime {
    /// containerd's CRI plugin (`cri-containerd-<id>.scope`).
    #[serde(rename = "containerd")]
    Containerd,
    /// CRI-O (`crio-<id>.scope`, cgroupfs `crio-<id>`).
    #[serde(rename = "cri-o")]
    CriO,
    /// Docker, through dockershim or cri-dockerd (`docker-<id>.scope`).
    #[serde(rename = "docker")]
    Docker,
}

impl std::str::FromStr for Runtime {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "containerd" => Ok(Runtime::Containerd),
            "cri-o" => Ok(Runtime::CriO),
            "docker" => Ok(Runtime::Docker),
            other => Err(format!(
                "unknown container runtime `{other}` (expected containerd, cri-o or docker)"
            )),
        }
    }
}

impl Runtime {
    /// The scheme Kubernetes puts before the id in `containerID` (`containerd://<id>`).
    pub fn scheme(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
        }
    }
}

/// A pod's quality-of-service class, from its cgroup's parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QosClass {
    /// Directly under `kubepods`: no QoS level in the path.
    Guaranteed,
    /// Under `burstable`.
    Burstable,
    /// Under `besteffort`.
    BestEffort,
}

/// What a container's cgroup path says about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupContainer {
    /// Pod UID, canonical (with dashes).
    pub pod_uid: String,
    /// The pod's QoS class.
    pub qos: QosClass,
    /// The container's runtime id (lowercase hex); `None` for the pod's own cgroup.
    pub container_id: Option<String>,
    /// The runtime, when the path says it (the cgroupfs driver's bare `<id>` does not).
    pub runtime: Option<Runtime>,
}

impl CgroupContainer {
    /// `containerd://<id>` as Kubernetes shows it; the bare id when the runtime is unknown and
    /// `fallback` gives none.
    pub fn kubernetes_container_id(&self, fallback: Option<Runtime>) -> Option<String> {
        let id = self.container_id.as_deref()?;
        Some(match self.runtime.or(fallback) {
            Some(rt) => format!("{}://{id}", rt.scheme()),
            None => id.to_owned(),
        })
    }
}

/// Parse a cgroup v2 path (from `/proc/<pid>/cgroup`, relative to the mount, or absolute on
/// the host) into the pod and container it belongs to. `None` for anything that is not a
/// Kubernetes pod's cgroup (`system.slice/...`, `user.slice/...`, CRI-O's conmon scope).
pub fn parse_cgroup_path(path: &str) -> Option<CgroupContainer> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let found = systemd_pod(part).or_else(|| cgroupfs_pod(&parts[..i], part));
        let Some((pod_uid, qos, systemd)) = found else {
            continue;
        };
        let Some(next) = parts.get(i + 1) else {
            return Some(CgroupContainer {
                pod_uid,
                qos,
                container_id: None,
                runtime: None,
            });
        };
        let (runtime, id) = if systemd {
            systemd_container(next)?
        } else {
            cgroupfs_container(next)?
        };
        return Some(CgroupContainer {
            pod_uid,
            qos,
            container_id: Some(id.to_ascii_lowercase()),
            runtime,
        });
    }
    None
}

/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (any prefix ending in `kubepods`, such
/// as kind's `kubelet-kubepods`).
fn systemd_pod(part: &str) -> Option<(String, QosClass, bool)> {
    let name = part.strip_suffix(".slice")?;
    let (prefix, uid) = name.rsplit_once("-pod")?;
    let qos = if let Some(p) = prefix.strip_suffix("-besteffort") {
        (p, QosClass::BestEffort)
    } else if let Some(p) = prefix.strip_suffix("-burstable") {
        (p, QosClass::Burstable)
    } else {
        (prefix, QosClass::Guaranteed)
    };
    if !qos.0.ends_with("kubepods") {
        return None;
    }
    Some((canonical_uid(&uid.replace('_', "-"))?, qos.1, true))
}

/// `pod<uid>` under `kubepods`, `kubepods/besteffort` or `kubepods/burstable`.
fn cgroupfs_pod(parents: &[&str], part: &str) -> Option<(String, QosClass, bool)> {
    let uid = part.strip_prefix("pod")?;
    let qos = match parents {
        [.., "kubepods"] => QosClass::Guaranteed,
        [.., "kubepods", "besteffort"] => QosClass::BestEffort,
        [.., "kubepods", "burstable"] => QosClass::Burstable,
        _ => return None,
    };
    Some((canonical_uid(uid)?, qos, false))
}

/// A pod UID: a UUID, or the 32-digit hash of a static pod. Lowercased.
fn canonical_uid(uid: &str) -> Option<String> {
    let ok = (8..=64).contains(&uid.len())
        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        && uid.bytes().any(|b| b != b'-');
    ok.then(|| uid.to_ascii_lowercase())
}

fn container_id(id: &str) -> Option<&str> {
    ((12..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

fn systemd_container(part: &str) -> Option<(Option<Runtime>, &str)> {
    let name = part.strip_suffix(".scope")?;
    if name.starts_with("crio-conmon-") {
        return None;
    }
    let (runtime, id) = if let Some(id) = name.strip_prefix("cri-containerd-") {
        (Runtime::Containerd, id)
    } else if let Some(id) = name.strip_prefix("crio-") {
        (Runtime::CriO, id)
    } else if let Some(id) = name.strip_prefix("docker-") {
        (Runtime::Docker, id)
    } else {
        return None;
    };
    Some((Some(runtime), container_id(id)?))
}

fn cgroupfs_container(part: &str) -> Option<(Option<Runtime>, &str)> {
    if part.starts_with("crio-conmon-") {
        return None;
    }
    if let Some(id) = part.strip_prefix("crio-") {
        return Some((Some(Runtime::CriO), container_id(id)?));
    }
    Some((None, container_id(part)?))
}

/// Where the cgroup2 hierarchy is mounted, from `/proc/mounts` (the unified hierarchy on a
/// hybrid host is `/sys/fs/cgroup/unified`).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    cgroup2_mount_in(&mounts)
}

fn cgroup2_mount_in(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut f = line.split_ascii_whitespace();
        let (_dev, dir, fstype) = (f.next()?, f.next()?, f.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount(dir)))
    })
}

/// `/proc/mounts` writes space, tab, newline and backslash as `\040`-style octal escapes.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A miss walks the hierarchy again at most this often.
pub const MIN_RESCAN: Duration = Duration::from_secs(1);
/// Deepest directory level walked below the root.
const MAX_DEPTH: usize = 16;
/// Most cgroups remembered (a node runs a few hundred containers; this bounds a runaway).
const MAX_CGROUPS: usize = 65_536;

/// Cgroup id -> path below the cgroup2 root, from walking the hierarchy.
#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    state: Mutex<ScanState>,
}

#[derive(Debug, Default)]
struct ScanState {
    paths: HashMap<u64, String>,
    last_scan: Option<Instant>,
}

impl CgroupResolver {
    /// A resolver over the cgroup2 hierarchy mounted at `root`. Nothing is read until the
    /// first lookup.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupResolver {
            root: root.into(),
            state: Mutex::new(ScanState::default()),
        }
    }

    /// The hierarchy's mount point.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path (relative to the root, `/`-separated, no leading `/`) of the cgroup with this
    /// id. A miss rescans the hierarchy unless it was scanned less than [`MIN_RESCAN`] ago.
    pub fn path_of(&self, cgroup_id: u64) -> Option<String> {
        self.path_at(cgroup_id, Instant::now())
    }

    fn path_at(&self, cgroup_id: u64, now: Instant) -> Option<String> {
        let mut state = self.state.lock().ok()?;
        if let Some(p) = state.paths.get(&cgroup_id) {
            // A removed cgroup's inode number may be reused: confirm it still names the path.
            if inode(&self.root.join(p)) == Some(cgroup_id) {
                return Some(p.clone());
            }
        }
        if state
            .last_scan
            .is_some_and(|at| now.saturating_duration_since(at) < MIN_RESCAN)
        {
            return None;
        }
        state.last_scan = Some(now);
        state.paths = scan(&self.root);
        state.paths.get(&cgroup_id).cloned()
    }

    /// The container the cgroup with this id belongs to.
    pub fn container_of(&self, cgroup_id: u64) -> Option<CgroupContainer> {
        parse_cgroup_path(&self.path_of(cgroup_id)?)
    }
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Every cgroup below `root` (bounded in depth and count), by id. Unreadable directories
/// (a cgroup removed during the walk) are skipped.
fn scan(root: &Path) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_owned(), String::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let child_rel = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            if out.len() >= MAX_CGROUPS {
                return out;
            }
            out.insert(meta.ino(), child_rel.clone());
            if depth + 1 < MAX_DEPTH {
                stack.push((entry.path(), child_rel, depth + 1));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
