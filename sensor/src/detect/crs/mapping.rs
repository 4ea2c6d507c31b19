//! From a CRS verdict to what a report says: the rule that leads, the category, a severity for
//! the blocker's policy, ATT&CK techniques and the evidence.
//!
//! Severity comes from the attack-family score (protocol-enforcement rules never count) and
//! is capped at `high`: with the blocker's default thresholds (critical 1, high 2, medium 3
//! reports) one request CRS alone flags, false positive or not, never blocks anyone; a client
//! has to be flagged again within the window. A request the built-in rules flag as well keeps
//! the built-in severity.

use palisade_wire::{CrsDetail, MAX_CRS_RULES, MAX_CRS_TAG_LEN, MAX_CRS_TAGS, Severity};

use super::{MatchedRule, Verdict, is_attack_family};

/// The category and ATT&CK techniques of a CRS rule family.
pub fn family(id: u64) -> (&'static str, &'static [&'static str]) {
    match id / 1000 {
        913 => ("scanner", &["T1595.002"]),
        921 => ("protocol", &["T1190"]),
        930 => ("lfi", &["T1190", "T1083"]),
        931 => ("rfi", &["T1190", "T1105"]),
        932 => ("rce", &["T1190", "T1059"]),
        933 => ("php", &["T1190", "T1059"]),
        934 => ("rce", &["T1190", "T1059.007"]),
        941 => ("xss", &["T1190", "T1059.007"]),
        942 => ("sqli", &["T1190"]),
        943 => ("session-fixation", &["T1190", "T1539"]),
        944 => ("java", &["T1190", "T1059"]),
        _ => ("protocol", &["T1190"]),
    }
}

/// Category from the rule's `attack-*` tag when it has one CRS 4 uses for families spread over
/// several files (`attack-ssrf` in 934), else from the file family.
fn category(m: &MatchedRule) -> &'static str {
    if m.tags.iter().any(|t| t == "attack-ssrf") {
        return "ssrf";
    }
    family(m.id).0
}

/// Severity of a CRS-only detection (see the module docs).
pub fn severity(attack_score: i64, threshold: i64) -> Severity {
    if attack_score >= 2 * threshold {
        Severity::High
    } else {
        Severity::Medium
    }
}

/// What the report carries about the verdict.
pub fn detail(v: &Verdict) -> CrsDetail {
    let mut tags: Vec<String> = Vec::new();
    for m in &v.matched {
        for t in m.tags.iter() {
            let keep = t.starts_with("attack-")
                || t.starts_with("paranoia-level/")
                || t.starts_with("capec/");
            if keep && t.len() <= MAX_CRS_TAG_LEN && !tags.contains(t) && tags.len() < MAX_CRS_TAGS
            {
                tags.push(t.clone());
            }
        }
    }
    CrsDetail {
        rules: v
            .matched
            .iter()
            .filter_map(|m| u32::try_from(m.id).ok())
            .take(MAX_CRS_RULES)
            .collect(),
        score: u32::try_from(v.inbound_score.max(0)).unwrap_or(u32::MAX),
        attack_score: u32::try_from(v.attack_score.max(0)).unwrap_or(u32::MAX),
        tags,
    }
}

/// The attack-family rule that leads the report: most points, then the lowest id.
pub fn lead(v: &Verdict) -> Option<&MatchedRule> {
    v.matched
        .iter()
        .filter(|m| is_attack_family(m.id) && m.points > 0)
        .max_by(|a, b| a.points.cmp(&b.points).then(b.id.cmp(&a.id)))
}

/// Rule id, category, techniques, evidence and location for the lead rule.
pub struct Summary {
    pub rule_id: String,
    pub category: &'static str,
    pub mitre: Vec<String>,
    pub evidence: String,
    pub location: String,
}

/// The summary of an attack verdict (None when no attack-family rule scored).
pub fn summary(v: &Verdict) -> Option<Summary> {
    let m = lead(v)?;
    let (_, techniques) = family(m.id);
    let mut mitre: Vec<String> = Vec::new();
    for r in v.matched.iter().filter(|r| is_attack_family(r.id)) {
        for t in family(r.id).1 {
            if !mitre.iter().any(|x| x == t) {
                mitre.push((*t).to_string());
            }
        }
    }
    if mitre.is_empty() {
        mitre = techniques.iter().map(|t| t.to_string()).collect();
    }
    let (evidence, location) = match m.evidence.first() {
        Some(e) => (
            String::from_utf8_lossy(&e.value).into_owned(),
            e.variable.clone(),
        ),
        None => (m.msg.clone().unwrap_or_default(), String::new()),
    };
    Some(Summary {
        rule_id: format!("crs-{}", m.id),
        category: category(m),
        mitre,
        evidence,
        location,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: u64, points: i64, tags: &[&str]) -> MatchedRule {
        MatchedRule {
            id,
            phase: 2,
            msg: Some("m".into()),
            severity: Some(2),
            tags: tags
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .into(),
            points,
            evidence: Vec::new(),
        }
    }

    #[test]
    fn lead_rule_is_the_attack_rule_with_most_points() {
        let v = Verdict {
            matched: vec![
                rule(920350, 3, &["attack-protocol"]),
                rule(
                    942100,
                    5,
                    &["attack-sqli", "paranoia-level/1", "capec/1000/152/248/66"],
                ),
                rule(942190, 10, &["attack-sqli"]),
            ],
            inbound_score: 18,
            attack_score: 15,
            is_attack: true,
        };
        let s = summary(&v).unwrap();
        assert_eq!(s.rule_id, "crs-942190");
        assert_eq!(s.category, "sqli");
        assert_eq!(s.mitre, vec!["T1190".to_string()]);
        let d = detail(&v);
        assert_eq!(d.rules, vec![920350, 942100, 942190]);
        assert_eq!((d.score, d.attack_score), (18, 15));
        assert!(d.tags.contains(&"capec/1000/152/248/66".to_string()));
        assert!(d.validate().is_ok());
    }

    #[test]
    fn severity_never_reaches_critical() {
        assert_eq!(severity(5, 5), Severity::Medium);
        assert_eq!(severity(10, 5), Severity::High);
        assert_eq!(severity(100, 5), Severity::High);
    }
}
