use super::*;
use serde_json::{Value, json};

fn good() -> Value {
    json!({
        "v": 1,
        "id": "r-0001",
        "sensor": "node-a",
        "observed_at": "2026-11-25T02:00:00Z",
        "client_ip": "203.0.113.7",
        "peer_ip": "10.0.0.5",
        "rule": "log4shell.jndi",
        "category": "java",
        "severity": "critical",
        "mitre": ["T1190", "T1059.004"],
        "evidence": "${jndi:ldap://x}",
        "context": {"node": "ip-10-0-0-5", "dst_port": 8080}
    })
}

fn parse(v: &Value) -> Result<Report, WireError> {
    Report::from_slice(serde_json::to_string(v).unwrap().as_bytes())
}

fn with(field: &str, value: Value) -> Value {
    let mut v = good();
    v[field] = value;
    v
}

fn without(field: &str) -> Value {
    let mut v = good();
    v.as_object_mut().unwrap().remove(field);
    v
}

#[test]
fn accepts_a_valid_report() {
    let r = parse(&good()).unwrap();
    assert_eq!(r.client_ip, "203.0.113.7".parse::<IpAddr>().unwrap());
    assert_eq!(r.severity, Severity::Critical);
    assert_eq!(r.category.as_str(), "java");
    assert_eq!(r.mitre, vec!["T1190", "T1059.004"]);
    assert_eq!(r.context.as_ref().unwrap().dst_port, Some(8080));
}

#[test]
fn round_trips_through_to_vec() {
    let r = parse(&good()).unwrap();
    let body = r.to_vec().unwrap();
    assert_eq!(Report::from_slice(&body).unwrap(), r);
}

#[test]
fn accepts_ipv6_and_offsets_and_ignores_unknown_fields() {
    let mut v = with("client_ip", json!("2001:db8::1"));
    v["observed_at"] = json!("2026-11-25T03:00:00.123+01:00");
    v["future_field"] = json!({"anything": [1, 2]});
    v["context"]["unknown"] = json!("x");
    let r = parse(&v).unwrap();
    assert!(r.client_ip.is_ipv6());
    assert_eq!(r.observed_at.to_rfc3339(), "2026-11-25T02:00:00.123+00:00");
}

#[test]
fn optional_fields_may_be_absent() {
    let mut v = without("mitre");
    v.as_object_mut().unwrap().remove("context");
    let r = parse(&v).unwrap();
    assert!(r.mitre.is_empty());
    assert!(r.context.is_none());
    // Empty evidence is allowed (some rules match on shape, not a fragment).
    assert!(parse(&with("evidence", json!(""))).is_ok());
}

#[test]
fn rejects_bad_json() {
    for body in [
        &b"{"[..],
        b"",
        b"[]",
        b"null",
        b"42",
        b"\"str\"",
        b"{\"v\":1,}",
    ] {
        let e = Report::from_slice(body).unwrap_err();
        assert_eq!(e.reason(), "bad_json", "{body:?} -> {e}");
    }
}

#[test]
fn rejects_non_utf8() {
    let e = Report::from_slice(b"{\"v\":1,\"id\":\"\xff\"}").unwrap_err();
    assert_eq!(e.reason(), "not_utf8");
}

#[test]
fn rejects_bodies_over_8_kib() {
    let mut v = good();
    v["padding"] = json!("x".repeat(MAX_REPORT_BYTES));
    let e = parse(&v).unwrap_err();
    assert!(matches!(e, WireError::TooLarge { .. }), "{e}");
    assert_eq!(e.reason(), "too_large");
    // Exactly at the limit is fine.
    let base = serde_json::to_string(&good()).unwrap();
    let pad = MAX_REPORT_BYTES - base.len() - ",\"p\":\"\"".len();
    let mut v = good();
    v["p"] = json!("x".repeat(pad));
    let s = serde_json::to_string(&v).unwrap();
    assert_eq!(s.len(), MAX_REPORT_BYTES);
    assert!(Report::from_slice(s.as_bytes()).is_ok());
}

#[test]
fn rejects_every_missing_required_field() {
    for field in [
        "v",
        "id",
        "sensor",
        "observed_at",
        "client_ip",
        "peer_ip",
        "rule",
        "category",
        "severity",
        "evidence",
    ] {
        let e = parse(&without(field)).unwrap_err();
        assert_eq!(e.reason(), "missing_field", "{field}: {e}");
        assert_eq!(e, WireError::MissingField(field));
        // null counts as missing
        let e = parse(&with(field, Value::Null)).unwrap_err();
        assert_eq!(e, WireError::MissingField(field));
    }
}

#[test]
fn rejects_other_versions() {
    for v in [json!(2), json!(0), json!("1"), json!(1.5), json!(-1)] {
        let e = parse(&with("v", v.clone())).unwrap_err();
        assert_eq!(e.reason(), "unsupported_version", "{v}");
    }
}

#[test]
fn rejects_unknown_severity() {
    for s in [json!("CRITICAL"), json!("severe"), json!(""), json!(3)] {
        let e = parse(&with("severity", s.clone())).unwrap_err();
        assert!(
            matches!(
                e,
                WireError::InvalidField {
                    field: "severity",
                    ..
                }
            ),
            "{s}: {e}"
        );
    }
}

#[test]
fn rejects_invalid_addresses() {
    for (field, value) in [
        ("client_ip", json!("999.1.1.1")),
        ("client_ip", json!("203.0.113.0/24")),
        ("client_ip", json!("example.com")),
        ("client_ip", json!("0.0.0.0")),
        ("client_ip", json!("::")),
        ("client_ip", json!(" 203.0.113.7")),
        ("client_ip", json!(3405803783u32)),
        ("peer_ip", json!("")),
    ] {
        let e = parse(&with(field, value.clone())).unwrap_err();
        assert_eq!(e.reason(), "invalid_field", "{field}={value}: {e}");
    }
}

#[test]
fn rejects_invalid_identifiers() {
    let long = |n| json!("a".repeat(n));
    for (field, value) in [
        ("id", json!("")),
        ("id", json!("has space")),
        ("id", long(MAX_ID_LEN + 1)),
        ("sensor", json!("a.b")),
        ("sensor", json!("a*")),
        ("sensor", json!(">")),
        ("sensor", long(MAX_SENSOR_LEN + 1)),
        ("rule", json!("rule with space")),
        ("rule", long(MAX_RULE_LEN + 1)),
        ("category", json!("SQLi")),
        ("category", json!("")),
        ("category", long(MAX_CATEGORY_LEN + 1)),
        ("observed_at", json!("yesterday")),
        ("observed_at", json!("2026-11-25 02:00:00")),
        ("observed_at", json!(1764036000)),
        ("mitre", json!("T1190")),
        ("mitre", json!(["t1190"])),
        ("mitre", json!(["T119"])),
        ("mitre", json!(["T1190.1"])),
        ("mitre", json!([1190])),
        ("mitre", Value::Array(vec![json!("T1190"); MAX_MITRE + 1])),
        ("evidence", json!("e".repeat(MAX_EVIDENCE_BYTES + 1))),
        ("evidence", json!(["x"])),
        ("context", json!("node-a")),
        ("context", json!({"dst_port": 70000})),
        (
            "context",
            json!({"pod": "p".repeat(MAX_CONTEXT_FIELD_LEN + 1)}),
        ),
    ] {
        let e = parse(&with(field, value.clone())).unwrap_err();
        assert_eq!(e.reason(), "invalid_field", "{field}={value}: {e}");
    }
}

#[test]
fn evidence_truncation_keeps_char_boundaries() {
    let s = "é".repeat(200); // 400 bytes
    let t = truncate_evidence(&s);
    assert!(t.len() <= MAX_EVIDENCE_BYTES);
    assert_eq!(t.len(), 256);
    let s = format!("a{}", "é".repeat(200));
    assert_eq!(truncate_evidence(&s).len(), 255);
    assert_eq!(truncate_evidence("short"), "short");
}

#[test]
fn to_vec_refuses_what_the_contract_rejects() {
    let mut r = parse(&good()).unwrap();
    r.evidence = "x".repeat(MAX_EVIDENCE_BYTES + 1);
    assert_eq!(r.to_vec().unwrap_err().reason(), "invalid_field");
    r.evidence.clear();
    r.sensor = "bad.sensor".into();
    assert!(r.validate().is_err());
}

#[test]
fn subjects() {
    assert_eq!(subject_for("node-a"), "palisade.reports.node-a");
    assert_eq!(
        sensor_from_subject("palisade.reports.node-a"),
        Some("node-a")
    );
    assert_eq!(sensor_from_subject("palisade.reports."), None);
    assert_eq!(sensor_from_subject("palisade.reports.a.b"), None);
    assert_eq!(sensor_from_subject("palisade.reportsx"), None);
    assert_eq!(sensor_from_subject("other.a"), None);
}

#[test]
fn never_panics_on_arbitrary_bytes() {
    // A cheap deterministic fuzz: mutate a valid body byte by byte.
    let base = serde_json::to_vec(&good()).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut body = base.clone();
        let pos = (seed as usize) % body.len();
        body[pos] = (seed >> 32) as u8;
        if seed.is_multiple_of(3) {
            body.truncate(pos);
        }
        let _ = Report::from_slice(&body);
    }
}

#[test]
fn context_carries_the_kubernetes_fields_and_bounds_them() {
    let ctx = json!({
        "node": "ip-10-0-0-5",
        "namespace": "shop",
        "pod": "web-7d9f8-abcde",
        "pod_uid": "0f5e7c3a-1b2c-4d5e-8f90-123456789abc",
        "container": "app",
        "container_id": "containerd://4f1a2b",
        "workload": "Deployment/web",
        "interface": "eth0",
        "dst_port": 8080
    });
    let r = parse(&with("context", ctx)).expect("valid context");
    let c = r.context.expect("context kept");
    assert_eq!(
        c.pod_uid.as_deref(),
        Some("0f5e7c3a-1b2c-4d5e-8f90-123456789abc")
    );
    assert_eq!(c.container.as_deref(), Some("app"));
    assert_eq!(c.workload.as_deref(), Some("Deployment/web"));
    // serialized back, the new fields round-trip and absent ones stay absent
    let text = serde_json::to_string(&c).expect("serializes");
    assert!(text.contains("\"workload\":\"Deployment/web\""), "{text}");
    let bare = serde_json::to_string(&Context {
        node: Some("n".into()),
        ..Context::default()
    })
    .expect("serializes");
    assert_eq!(bare, r#"{"node":"n"}"#);

    for bad in [
        json!({"pod_uid": "not a uid"}),
        json!({"pod_uid": ""}),
        json!({"pod_uid": "a".repeat(MAX_POD_UID_LEN + 1)}),
        json!({"container": "app\nx"}),
        json!({"container": "c".repeat(MAX_CONTAINER_NAME_LEN + 1)}),
        json!({"container_id": "containerd://a b"}),
        json!({"container_id": ""}),
        json!({"workload": "web"}),
        json!({"workload": "Deployment/"}),
        json!({"workload": "Deploy ment/web"}),
        json!({"node": "n".repeat(MAX_CONTEXT_FIELD_LEN + 1)}),
    ] {
        let e = parse(&with("context", bad.clone())).unwrap_err();
        assert_eq!(e.reason(), "invalid_field", "{bad}: {e}");
    }
    // a bare container id from a publisher that predates the documented form still passes
    parse(&with("context", json!({"container_id": "4f1a2b"}))).expect("bare id accepted");
}

#[test]
fn the_fuzz_seeds_are_valid_reports() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/report");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("seed directory") {
        let path = entry.expect("entry").path();
        let body = std::fs::read(&path).expect("seed");
        Report::from_slice(body.trim_ascii_end())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 3, "full, minimal and the Kubernetes context");
}
