//! Pod and container names from what the kubelet writes on every node, no API access needed:
//!
//! - `<pods_dir>/<namespace>_<pod>_<uid>/<container>/<restart>.log` (`/var/log/pods`): pod UID
//!   -> namespace and pod name, and the names of the pod's containers;
//! - `<pods_dir>/../containers/<pod>_<namespace>_<container>-<container id>.log`
//!   (`/var/log/containers`, symlinks): container id -> container name, which tells the
//!   containers of a pod with several apart.
//!
//! Namespaces, pod names and UIDs cannot hold `_`, so the names split unambiguously. The
//! listing is cached and read again when a directory's modification time changes (a pod or a
//! container log was added or removed) or on a miss, at most once per [`MIN_RESCAN`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

pub use super::cgroup::MIN_RESCAN;

/// Most pods remembered (a node runs at most a few hundred; this bounds a runaway directory).
const MAX_PODS: usize = 16_384;
/// Most container log links remembered.
const MAX_CONTAINERS: usize = 65_536;

/// Names the kubelet's log directories give a pod's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNames {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container's name, when it could be told: by its id in the containers directory,
    /// or because the pod has a single container.
    pub container: Option<String>,
}

/// Pod UID -> names, over the kubelet's log directories.
#[derive(Debug)]
pub struct PodLogs {
    pods_dir: PathBuf,
    containers_dir: PathBuf,
    state: Mutex<Listing>,
}

#[derive(Debug, Default)]
struct Listing {
    /// Pod UID -> (namespace, pod, container directory names).
    pods: HashMap<String, Pod>,
    /// Container id -> (namespace, pod, container).
    containers: HashMap<String, (String, String, String)>,
    /// Modification times of the two directories when last read.
    stamps: (Option<SystemTime>, Option<SystemTime>),
    last_scan: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Pod {
    namespace: String,
    name: String,
    containers: Vec<String>,
    /// `/var/log/containers` holds a link for one of its containers.
    linked: bool,
}

impl PodLogs {
    /// Over `pods_dir` (`/var/log/pods`) and its sibling `containers` directory
    /// (`/var/log/containers`). Nothing is read until the first lookup.
    pub fn new(pods_dir: impl Into<PathBuf>) -> Self {
        let pods_dir = pods_dir.into();
        let containers_dir = pods_dir
            .parent()
            .map(|p| p.join("containers"))
            .unwrap_or_else(|| PathBuf::from("/var/log/containers"));
        PodLogs {
            pods_dir,
            containers_dir,
            state: Mutex::new(Listing::default()),
        }
    }

    /// The pods directory.
    pub fn pods_dir(&self) -> &Path {
        &self.pods_dir
    }

    /// The namespace, pod and (when it can be told) container name of the pod with this UID;
    /// `container_id` is the runtime's bare id (lowercase hex, no `containerd://`).
    pub fn lookup(&self, pod_uid: &str, container_id: Option<&str>) -> Option<PodNames> {
        self.lookup_at(pod_uid, container_id, Instant::now())
    }

    fn lookup_at(
        &self,
        pod_uid: &str,
        container_id: Option<&str>,
        now: Instant,
    ) -> Option<PodNames> {
        let mut state = self.state.lock().ok()?;
        let stamps = (mtime(&self.pods_dir), mtime(&self.containers_dir));
        let changed = stamps != state.stamps;
        let complete = |s: &Listing| {
            s.pods.contains_key(pod_uid)
                && container_id.is_none_or(|id| s.containers.contains_key(id))
        };
        let may_rescan = state
            .last_scan
            .is_none_or(|at| now.saturating_duration_since(at) >= MIN_RESCAN);
        if state.last_scan.is_none() || ((changed || !complete(&state)) && may_rescan) {
            *state = Listing {
                stamps,
                last_scan: Some(now),
                ..scan(&self.pods_dir, &self.containers_dir)
            };
        }
        let pod = state.pods.get(pod_uid)?;
        let single = || match pod.containers.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        };
        let container = match container_id.and_then(|id| state.containers.get(id)) {
            // an id the links give to another pod: inconsistent, name nothing
            Some((ns, name, c)) => (*ns == pod.namespace && *name == pod.name).then(|| c.clone()),
            // without links for this pod (or no id to look up), a lone container is the one;
            // with links, an id none of them names is a container not seen yet
            None if container_id.is_none() || !pod.linked => single(),
            None => None,
        };
        Some(PodNames {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            container,
        })
    }
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn scan(pods_dir: &Path, containers_dir: &Path) -> Listing {
    let mut out = Listing::default();
    for entry in std::fs::read_dir(pods_dir).into_iter().flatten().flatten() {
        if out.pods.len() >= MAX_PODS {
            break;
        }
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = entry.file_name();
        let Some((namespace, pod, uid)) = name.to_str().and_then(split_pod_dir) else {
            continue;
        };
        let mut containers: Vec<String> = std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|c| name_ok(c))
            .collect();
        containers.sort();
        out.pods.insert(
            uid.to_ascii_lowercase(),
            Pod {
                namespace: namespace.to_owned(),
                name: pod.to_owned(),
                containers,
                linked: false,
            },
        );
    }
    for entry in std::fs::read_dir(containers_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        if out.containers.len() >= MAX_CONTAINERS {
            break;
        }
        let name = entry.file_name();
        let Some((pod, namespace, container, id)) = name.to_str().and_then(split_container_log)
        else {
            continue;
        };
        out.containers.insert(
            id.to_ascii_lowercase(),
            (namespace.to_owned(), pod.to_owned(), container.to_owned()),
        );
    }
    for (ns, pod_name, _) in out.containers.values() {
        if let Some(pod) = out
            .pods
            .values_mut()
            .find(|p| p.namespace == *ns && p.name == *pod_name)
        {
            pod.linked = true;
        }
    }
    out
}

/// Kubernetes object names: DNS labels and subdomains (`[a-z0-9.-]`, upper case tolerated).
fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// `<namespace>_<pod>_<uid>`.
fn split_pod_dir(s: &str) -> Option<(&str, &str, &str)> {
    let mut it = s.split('_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    let uid_ok = !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    (it.next().is_none() && name_ok(ns) && name_ok(pod) && uid_ok).then_some((ns, pod, uid))
}

/// `<pod>_<namespace>_<container>-<id>.log`.
fn split_container_log(s: &str) -> Option<(&str, &str, &str, &str)> {
    let stem = s.strip_suffix(".log")?;
    let mut it = stem.split('_');
    let (pod, ns, rest) = (it.next()?, it.next()?, it.next()?);
    let (container, id) = rest.rsplit_once('-')?;
    let id_ok = (12..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_hexdigit());
    (it.next().is_none() && name_ok(pod) && name_ok(ns) && name_ok(container) && id_ok)
        .then_some((pod, ns, container, id))
}

#[cfg(test)]
mod tests;
