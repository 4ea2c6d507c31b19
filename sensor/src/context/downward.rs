//! The pod a sidecar sensor runs in, from the Kubernetes Downward API: `POD_NAME`,
//! `POD_NAMESPACE` and `NODE_NAME` set in the container's environment (`fieldRef`
//! `metadata.name`, `metadata.namespace`, `spec.nodeName`), optionally `POD_UID`
//! (`metadata.uid`) and `CONTAINER_NAME` (the app container the sidecar watches; the manifest
//! writes it, the Downward API has no field for it). Sidecar sources (log, mirror, proxy) put
//! them into each report's `context`, so an operator sees which workload was attacked; on a
//! node (eBPF) the node name alone comes from the host name.

use crate::pipeline::Origin;

/// The Downward API context from the environment; unset or empty values, and values the wire
/// contract would refuse (over-long, a malformed UID or container name), are left out.
pub fn downward_api() -> Origin {
    from_lookup(|name| std::env::var(name).ok())
}

pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Origin {
    let field = |name: &str| {
        get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty() && v.len() <= palisade_wire::MAX_CONTEXT_FIELD_LEN)
    };
    let checked = |name: &str, wrap: fn(String) -> palisade_wire::Context| {
        field(name).filter(|v| wrap(v.clone()).validate().is_ok())
    };
    Origin {
        node: field("NODE_NAME"),
        pod: field("POD_NAME"),
        namespace: field("POD_NAMESPACE"),
        pod_uid: checked("POD_UID", |v| palisade_wire::Context {
            pod_uid: Some(v),
            ..Default::default()
        }),
        container: checked("CONTAINER_NAME", |v| palisade_wire::Context {
            container: Some(v),
            ..Default::default()
        }),
        ..Origin::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_fields_and_skips_unusable_values() {
        let long = "x".repeat(palisade_wire::MAX_CONTEXT_FIELD_LEN + 1);
        let o = from_lookup(|name| match name {
            "POD_NAME" => Some("web-7d9f-abcde".to_owned()),
            "POD_NAMESPACE" => Some(" web ".to_owned()),
            "NODE_NAME" => Some(long.clone()),
            _ => None,
        });
        assert_eq!(o.pod.as_deref(), Some("web-7d9f-abcde"));
        assert_eq!(o.namespace.as_deref(), Some("web"));
        assert_eq!(o.node, None, "over the wire contract's bound");
        let o = from_lookup(|_| Some(String::new()));
        assert_eq!((o.pod, o.namespace, o.node), (None, None, None));
    }

    #[test]
    fn reads_the_optional_uid_and_container_when_well_formed() {
        let o = from_lookup(|name| match name {
            "POD_UID" => Some("0f5e7c3a-1b2c-4d5e-8f90-123456789abc".to_owned()),
            "CONTAINER_NAME" => Some("app".to_owned()),
            _ => None,
        });
        assert_eq!(
            o.pod_uid.as_deref(),
            Some("0f5e7c3a-1b2c-4d5e-8f90-123456789abc")
        );
        assert_eq!(o.container.as_deref(), Some("app"));
        let o = from_lookup(|name| match name {
            "POD_UID" => Some("not a uid".to_owned()),
            "CONTAINER_NAME" => Some("app container".to_owned()),
            _ => None,
        });
        assert_eq!((o.pod_uid, o.container), (None, None));
    }
}
