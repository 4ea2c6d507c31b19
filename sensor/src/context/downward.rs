//! The pod a sidecar sensor runs in, from the Kubernetes Downward API: `POD_NAME`,
//! `POD_NAMESPACE` and `NODE_NAME` set in the container's environment (`fieldRef`
//! `metadata.name`, `metadata.namespace`, `spec.nodeName`). Sidecar sources (log, mirror,
//! proxy) put them into each report's `context`, so an operator sees which workload was
//! attacked; on a node (eBPF) the node name alone comes from the host name.

use crate::pipeline::Origin;

/// The Downward API context from the environment; unset, empty or over-long values (the wire
/// contract caps context fields) are left out.
pub fn downward_api() -> Origin {
    from_lookup(|name| std::env::var(name).ok())
}

fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Origin {
    let field = |name: &str| {
        get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty() && v.len() <= palisade_wire::MAX_CONTEXT_FIELD_LEN)
    };
    Origin {
        node: field("NODE_NAME"),
        pod: field("POD_NAME"),
        namespace: field("POD_NAMESPACE"),
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
}
