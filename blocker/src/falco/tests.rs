use super::*;
use crate::config::{FalcoConfig, FalcoMapping};

/// An event exactly as Falcosidekick marshals its `types.FalcoPayload` (field names, priority
/// spelled as Falco does, nanosecond time, output fields of mixed types).
const EVENT: &str = r#"{
  "uuid": "7f3c1d2e-8a4b-4c5d-9e6f-0a1b2c3d4e5f",
  "output": "12:31:56.746609046: Critical Java process class file download (user=root proc=java connection=10.0.0.5:8080->203.0.113.50:44321 k8s.ns=shop k8s.pod=web-7d9f8-x2k4q)",
  "priority": "Critical",
  "rule": "Java Process Class File Download",
  "time": "2026-12-03T12:31:56.746609046Z",
  "output_fields": {
    "evt.time": 1796301116746609046,
    "fd.name": "10.0.0.5:8080->203.0.113.50:44321",
    "fd.rip": "203.0.113.50",
    "fd.cip": "10.0.0.5",
    "proc.cmdline": "java -jar app.jar",
    "user.name": "root",
    "k8s.ns.name": "shop",
    "k8s.pod.name": "web-7d9f8-x2k4q",
    "container.id": "3ad7b26ded6d"
  },
  "source": "syscall",
  "tags": ["host", "container", "mitre_initial_access", "T1190"],
  "hostname": "ip-10-0-1-23"
}"#;

fn config() -> FalcoConfig {
    FalcoConfig {
        enabled: true,
        rules: vec![
            FalcoMapping {
                rule: Some("java process class file download".into()),
                tags: vec![],
                category: "rce".into(),
                severity: None,
                address_field: None,
            },
            FalcoMapping {
                rule: None,
                tags: vec!["T1190".into()],
                category: "scanner".into(),
                severity: Some(Severity::Low),
                address_field: Some("fd.cip".into()),
            },
        ],
        ..FalcoConfig::default()
    }
}

fn with(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(EVENT).unwrap();
    f(&mut v);
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_mapped_event_becomes_a_valid_report() {
    let r = to_report(&config(), EVENT.as_bytes()).unwrap();
    assert_eq!(r.id, "falco-7f3c1d2e-8a4b-4c5d-9e6f-0a1b2c3d4e5f");
    assert_eq!(r.sensor, "falco");
    assert_eq!(r.client_ip.to_string(), "203.0.113.50");
    assert_eq!(r.rule, "falco.java_process_class_file_download");
    assert_eq!(r.category.as_str(), "rce");
    assert_eq!(r.severity, Severity::Critical);
    assert_eq!(r.mitre, ["T1190"]);
    assert!(r.evidence.starts_with("12:31:56"));
    assert!(r.evidence.len() <= palisade_wire::MAX_EVIDENCE_BYTES);
    let ctx = r.context.as_ref().unwrap();
    assert_eq!(ctx.namespace.as_deref(), Some("shop"));
    assert_eq!(ctx.pod.as_deref(), Some("web-7d9f8-x2k4q"));
    assert_eq!(ctx.node.as_deref(), Some("ip-10-0-1-23"));
    assert_eq!(
        r.observed_at.to_rfc3339(),
        "2026-12-03T12:31:56.746609046+00:00"
    );
    r.validate().unwrap();
}

#[test]
fn mappings_match_by_rule_glob_or_tag_first_wins() {
    // The second mapping takes the event by its tag, with its own address field.
    let body = with(|v| v["rule"] = "Something Else".into());
    let r = to_report(&config(), &body).unwrap();
    assert_eq!(r.category.as_str(), "scanner");
    assert_eq!(r.severity, Severity::Low);
    assert_eq!(r.client_ip.to_string(), "10.0.0.5");
    let mut c = config();
    c.rules[0].rule = Some("java*download".into());
    assert_eq!(
        to_report(&c, EVENT.as_bytes()).unwrap().category.as_str(),
        "rce"
    );
    c.rules[0].rule = Some("java?process*".into());
    assert_eq!(
        to_report(&c, EVENT.as_bytes()).unwrap().category.as_str(),
        "rce"
    );
}

#[test]
fn every_other_event_is_counted_by_why() {
    let c = config();
    let cases: Vec<(Vec<u8>, Outcome)> = vec![
        (b"not json".to_vec(), Outcome::Malformed),
        (b"{}".to_vec(), Outcome::Malformed),
        (with(|v| v["priority"] = "Loud".into()), Outcome::Malformed),
        (with(|v| v["time"] = "yesterday".into()), Outcome::Malformed),
        (
            with(|v| v["priority"] = "Notice".into()),
            Outcome::BelowPriority,
        ),
        (
            with(|v| {
                v["rule"] = "Terminal shell in container".into();
                v["tags"] = serde_json::json!(["shell"]);
            }),
            Outcome::Unmapped,
        ),
        (
            with(|v| {
                v["output_fields"].as_object_mut().unwrap().remove("fd.rip");
            }),
            Outcome::NoAddress,
        ),
        (
            with(|v| v["output_fields"]["fd.rip"] = "<NA>".into()),
            Outcome::NoAddress,
        ),
        (
            with(|v| v["output_fields"]["fd.rip"] = 42.into()),
            Outcome::NoAddress,
        ),
        // The unspecified address cannot be blocked: the contract refuses the report.
        (
            with(|v| v["output_fields"]["fd.rip"] = "0.0.0.0".into()),
            Outcome::Invalid,
        ),
    ];
    for (body, want) in cases {
        assert_eq!(
            to_report(&c, &body).err(),
            Some(want),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn ids_without_a_uuid_are_a_digest_of_the_event() {
    let a = with(|v| {
        v.as_object_mut().unwrap().remove("uuid");
    });
    let b = with(|v| {
        v.as_object_mut().unwrap().remove("uuid");
        v["output_fields"]["fd.rip"] = "203.0.113.51".into();
    });
    let (ra, ra2, rb) = (
        to_report(&config(), &a).unwrap(),
        to_report(&config(), &a).unwrap(),
        to_report(&config(), &b).unwrap(),
    );
    assert_eq!(
        ra.id, ra2.id,
        "the same event twice: one id (JetStream drops the copy)"
    );
    assert_ne!(ra.id, rb.id);
    assert!(ra.id.starts_with("falco-") && ra.id.len() == 6 + 32);
}

#[test]
fn a_context_the_contract_refuses_is_dropped_not_the_detection() {
    let body = with(|v| v["output_fields"]["k8s.ns.name"] = "x".repeat(400).into());
    let r = to_report(&config(), &body).unwrap();
    assert!(r.context.is_none());
}

#[test]
fn priorities_and_config_checks() {
    assert_eq!(priority_rank("WARNING"), Some(3));
    assert_eq!(priority_rank("Info"), priority_rank("informational"));
    assert_eq!(priority_rank("loud"), None);
    let mut c = config();
    c.min_priority = "loud".into();
    let cfg = crate::Config {
        falco: c,
        ..crate::Config::default()
    };
    assert!(
        cfg.validate()
            .unwrap_err()
            .to_string()
            .contains("falco.min_priority")
    );
    let cfg = crate::Config {
        falco: FalcoConfig {
            enabled: true,
            ..FalcoConfig::default()
        },
        ..crate::Config::default()
    };
    assert!(cfg.validate().is_err(), "enabled without mappings");
    let mut c = config();
    c.rules.push(FalcoMapping {
        rule: None,
        tags: vec![],
        category: "rce".into(),
        severity: None,
        address_field: None,
    });
    let cfg = crate::Config {
        falco: c,
        ..crate::Config::default()
    };
    assert!(
        cfg.validate()
            .unwrap_err()
            .to_string()
            .contains("falco.rules[2]")
    );
}
