//! Runtime context: which node, pod, namespace and container received a request, for each
//! report's `context`.
//!
//! - [`downward`]: a sidecar's own pod, from the Downward API environment (log, mirror and
//!   proxy sources).
//! - [`cgroup`]: a node-wide capture's receiving socket belongs to a cgroup; its cgroup v2
//!   path names the runtime's container id and the pod UID ([`cgroup::parse_cgroup_path`]),
//!   and [`cgroup::CgroupResolver`] finds that path from the cgroup id the kernel reports.
//! - [`podlogs`]: pod UID and container id -> namespace, pod and container names, from the
//!   kubelet's `/var/log/pods` and `/var/log/containers`.
//!
//! [`ContextResolver`] puts them together: the pipeline owns one and turns each report's
//! [`Origin`] into the wire [`Context`].

pub mod cgroup;
pub mod downward;
pub mod podlogs;

use palisade_wire::Context;

pub use self::cgroup::{CgroupContainer, CgroupResolver, Runtime, parse_cgroup_path};
pub use self::downward::downward_api;
pub use self::podlogs::{PodLogs, PodNames};
use crate::config::ContextConfig;
use crate::pipeline::Origin;

/// The cgroup of the socket a request was delivered to, as a capture source knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupRef {
    /// The cgroup id (`bpf_skb_cgroup_id`, `bpf_get_current_cgroup_id`): the inode number of
    /// the cgroup's directory in the cgroup2 hierarchy.
    Id(u64),
    /// The cgroup v2 path (`/proc/<pid>/cgroup`'s `0::` line, or below the mount).
    Path(String),
}

/// What looking up a receiving socket's cgroup gave (`palisade_sensor_context_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A pod's cgroup, named from the kubelet's log directories.
    Pod,
    /// A pod's cgroup the log directories do not name (yet): UID and container id only.
    PodUid,
    /// A cgroup that is not a pod's (a host service, a host-network process outside pods).
    Host,
    /// A cgroup id not found in the hierarchy (wrong `--cgroup-root`, or already removed).
    UnknownCgroup,
}

impl Outcome {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pod => "pod",
            Outcome::PodUid => "pod_uid",
            Outcome::Host => "host",
            Outcome::UnknownCgroup => "unknown_cgroup",
        }
    }
}

/// Fills a report's [`Context`] from where its request was seen: the source's [`Origin`]
/// (interface, port, Downward API values) and, when the source names the receiving socket's
/// cgroup, the pod and container behind it.
#[derive(Debug, Default)]
pub struct ContextResolver {
    node: Option<String>,
    cgroups: Option<CgroupResolver>,
    pod_logs: Option<PodLogs>,
    /// The runtime of a cgroupfs-driver bare id (the path does not say it).
    runtime: Option<Runtime>,
}

impl ContextResolver {
    /// A resolver that only adds `node` (when the origin has none) to what the origin says.
    pub fn new(node: Option<String>) -> Self {
        ContextResolver {
            node: node.filter(|n| !n.is_empty() && n.len() <= palisade_wire::MAX_CONTEXT_FIELD_LEN),
            cgroups: None,
            pod_logs: None,
            runtime: None,
        }
    }

    /// [`ContextResolver::new`] with this host's name as the node.
    pub fn host() -> Self {
        let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_owned());
        ContextResolver::new(node)
    }

    /// The node's name (`NODE_NAME`, as a DaemonSet sets it from the Downward API, else the
    /// host name), the cgroup2 hierarchy at `cgroup_root` (default: the cgroup2 mount in
    /// `/proc/mounts`; none found = no cgroup attribution) and the kubelet's log directories
    /// under `pod_logs_dir`.
    pub fn from_config(config: &ContextConfig) -> Self {
        let root = config.cgroup_root.clone().or_else(cgroup::cgroup2_mount);
        let base = match downward_api().node {
            Some(node) => ContextResolver::new(Some(node)),
            None => ContextResolver::host(),
        };
        let mut r = base.with_pod_logs(PodLogs::new(&config.pod_logs_dir));
        r.runtime = config.container_runtime;
        if let Some(root) = root {
            r = r.with_cgroups(CgroupResolver::new(root));
        }
        r
    }

    /// Attribute cgroup ids through this hierarchy.
    pub fn with_cgroups(mut self, cgroups: CgroupResolver) -> Self {
        self.cgroups = Some(cgroups);
        self
    }

    /// Name bare container ids (cgroupfs driver) as this runtime's: `containerd://<id>`.
    pub fn with_runtime(mut self, runtime: Runtime) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Name pods and containers from these kubelet log directories.
    pub fn with_pod_logs(mut self, pod_logs: PodLogs) -> Self {
        self.pod_logs = Some(pod_logs);
        self
    }

    /// The cgroup2 root used for cgroup ids, if any.
    pub fn cgroup_root(&self) -> Option<&std::path::Path> {
        self.cgroups.as_ref().map(CgroupResolver::root)
    }

    /// The container a cgroup belongs to, if it is a Kubernetes pod's.
    pub fn container_of(&self, cgroup: &CgroupRef) -> Option<CgroupContainer> {
        self.lookup(cgroup).ok()
    }

    fn lookup(&self, cgroup: &CgroupRef) -> Result<CgroupContainer, Outcome> {
        let path = match cgroup {
            CgroupRef::Id(id) => self
                .cgroups
                .as_ref()
                .and_then(|c| c.path_of(*id))
                .ok_or(Outcome::UnknownCgroup)?,
            CgroupRef::Path(path) => path.clone(),
        };
        parse_cgroup_path(&path).ok_or(Outcome::Host)
    }

    /// The report context for a request seen at `origin`. Values the wire contract would
    /// refuse are left out rather than costing the report.
    pub fn resolve(&self, origin: &Origin) -> Context {
        self.resolve_outcome(origin).0
    }

    /// The context of a request a node-wide capture delivered to a socket in cgroup
    /// `cgroup_id` (when the source knows it), on `interface` and `dst_port`.
    pub fn resolve_socket(
        &self,
        cgroup_id: Option<u64>,
        interface: Option<String>,
        dst_port: Option<u16>,
    ) -> Context {
        self.resolve(&Origin {
            interface,
            dst_port,
            cgroup: cgroup_id.map(CgroupRef::Id),
            ..Origin::default()
        })
    }

    /// [`ContextResolver::resolve`], and what the cgroup lookup gave when the origin names a
    /// cgroup.
    pub fn resolve_outcome(&self, origin: &Origin) -> (Context, Option<Outcome>) {
        let mut ctx = Context {
            node: origin.node.clone().or_else(|| self.node.clone()),
            pod: origin.pod.clone(),
            namespace: origin.namespace.clone(),
            pod_uid: origin.pod_uid.clone(),
            container: origin.container.clone(),
            interface: origin.interface.clone(),
            dst_port: origin.dst_port,
            ..Context::default()
        };
        let mut outcome = None;
        match origin.cgroup.as_ref().map(|r| self.lookup(r)) {
            None => {}
            Some(Err(why)) => outcome = Some(why),
            Some(Ok(c)) => {
                // what the receiving socket's cgroup says replaces the source's own pod
                let names = self
                    .pod_logs
                    .as_ref()
                    .and_then(|p| p.lookup(&c.pod_uid, c.container_id.as_deref()));
                outcome = Some(if names.is_some() {
                    Outcome::Pod
                } else {
                    Outcome::PodUid
                });
                ctx.container_id = c.kubernetes_container_id(self.runtime);
                ctx.namespace = names.as_ref().map(|n| n.namespace.clone());
                ctx.pod = names.as_ref().map(|n| n.pod.clone());
                ctx.container = names.and_then(|n| n.container);
                ctx.pod_uid = Some(c.pod_uid);
            }
        }
        (sanitize(ctx), outcome)
    }
}

/// Drops each value the wire contract would refuse.
fn sanitize(mut ctx: Context) -> Context {
    if ctx.validate().is_ok() {
        return ctx;
    }
    let ok = |c: Context| c.validate().is_ok();
    macro_rules! keep_valid {
        ($($field:ident),*) => {$(
            if let Some(v) = ctx.$field.take() {
                if ok(Context { $field: Some(v.clone()), ..Context::default() }) {
                    ctx.$field = Some(v);
                }
            }
        )*};
    }
    keep_valid!(
        node,
        pod,
        namespace,
        pod_uid,
        container,
        container_id,
        workload,
        interface
    );
    ctx
}

#[cfg(test)]
mod tests;
