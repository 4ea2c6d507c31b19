//! A small strict parser of the text a `/metrics` endpoint serves, in either format: OpenMetrics
//! 1.0 text (what Prometheus asks for) or the Prometheus text format 0.0.4. It refuses what a
//! Prometheus server would refuse (a sample outside its family, a family declared twice, a
//! counter sample without `_total` in OpenMetrics, a missing or misplaced `# EOF`, a bad label
//! or value, histogram buckets that are not cumulative or whose `+Inf` bucket is not the count)
//! so a test can check the exposition itself, not only grep it.

use std::collections::BTreeMap;

use anyhow::{Context, bail, ensure};

/// Which text format to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: counters' families are named without `_total`, `# EOF` ends it.
    OpenMetrics,
    /// Prometheus text 0.0.4: families named as their samples, no `# EOF`.
    Prometheus,
}

/// One sample: full series name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A metric family.
#[derive(Debug, Clone, Default)]
pub struct MetricFamily {
    /// `counter`, `gauge`, `histogram`, `summary`, `info`, `stateset`, `unknown`, ...
    pub kind: String,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

/// A parsed exposition, families by name.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, MetricFamily>,
}

impl Exposition {
    /// The value of series `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples().find_map(|s| {
            (s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v)))
            .then_some(s.value)
        })
    }

    /// The sum of series `name` over every sample whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Every sample of every family.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.values().flat_map(|f| f.samples.iter())
    }

    /// The family `name`, whose type must be `kind`.
    pub fn family(&self, name: &str, kind: &str) -> anyhow::Result<&MetricFamily> {
        let f = self
            .families
            .get(name)
            .with_context(|| format!("no family {name}"))?;
        ensure!(f.kind == kind, "{name} is a {}, not a {kind}", f.kind);
        Ok(f)
    }
}

/// The suffixes a family's samples may add to its name.
fn suffixes(kind: &str, format: Format) -> &'static [&'static str] {
    match (kind, format) {
        ("counter", Format::OpenMetrics) => &["_total", "_created"],
        ("histogram" | "gaugehistogram", _) => &["_bucket", "_sum", "_count", "_created"],
        ("summary", _) => &["", "_sum", "_count", "_created"],
        ("info", Format::OpenMetrics) => &["_info"],
        _ => &[""],
    }
}

fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn parse_value(s: &str) -> anyhow::Result<f64> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().with_context(|| format!("bad value `{s}`")),
    }
}

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest.
fn parse_labels(s: &str) -> anyhow::Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').context("labels start with {")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').context("label without =")?;
        let key = &rest[..eq];
        ensure!(is_name(key), "bad label name `{key}`");
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .context("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => bail!("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, '\\')) => value.push('\\'),
                    other => bail!("bad escape {other:?} in a label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        ensure!(
            labels.insert(key.to_owned(), value).is_none(),
            "label {key} twice"
        );
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else {
            ensure!(rest.starts_with('}'), "labels not separated by commas");
        }
    }
}

/// Parse `text` strictly as `format`.
pub fn parse(text: &str, format: Format) -> anyhow::Result<Exposition> {
    let mut out = Exposition::default();
    let mut current: Option<String> = None;
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}: `{line}`", n + 1);
        ensure!(!eof, "{}: text after # EOF", at());
        if line == "# EOF" {
            ensure!(
                format == Format::OpenMetrics,
                "{}: # EOF in the 0.0.4 format",
                at()
            );
            eof = true;
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut it = meta.splitn(3, ' ');
            let (Some(what), Some(name)) = (it.next(), it.next()) else {
                if format == Format::Prometheus {
                    continue; // a comment
                }
                bail!("{}: bad metadata", at());
            };
            let arg = it.next().unwrap_or("").to_owned();
            if !matches!(what, "HELP" | "TYPE" | "UNIT") {
                ensure!(format == Format::Prometheus, "{}: unknown metadata", at());
                continue;
            }
            ensure!(is_name(name), "{}: bad family name", at());
            if current.as_deref() != Some(name) {
                ensure!(
                    !out.families.contains_key(name),
                    "{}: family {name} declared twice",
                    at()
                );
                out.families
                    .insert(name.to_owned(), MetricFamily::default());
                current = Some(name.to_owned());
            }
            let fam = out
                .families
                .get_mut(name)
                .context("the family just inserted")?;
            match what {
                "HELP" => fam.help = Some(arg),
                "UNIT" => {
                    ensure!(
                        name.ends_with(&format!("_{arg}")),
                        "{}: a family's name ends with its unit",
                        at()
                    );
                    fam.unit = Some(arg)
                }
                _ => {
                    ensure!(fam.kind.is_empty(), "{}: TYPE twice", at());
                    if format == Format::OpenMetrics && arg == "counter" {
                        ensure!(
                            !name.ends_with("_total"),
                            "{}: an OpenMetrics counter family is named without _total",
                            at()
                        );
                    }
                    fam.kind = arg;
                }
            }
            continue;
        }
        ensure!(!line.starts_with('#'), "{}: bad comment", at());
        if line.is_empty() {
            ensure!(format == Format::Prometheus, "{}: empty line", at());
            continue;
        }
        let name_end = line.find(['{', ' ']).context(at())?;
        let name = &line[..name_end];
        ensure!(is_name(name), "{}: bad series name", at());
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).with_context(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest.strip_prefix(' ').with_context(at)?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).with_context(at)?;
        // An optional timestamp; exemplars are not expected here.
        if let Some(ts) = fields.next() {
            ts.parse::<f64>().with_context(at)?;
        }
        ensure!(fields.next().is_none(), "{}: trailing fields", at());
        let family = match &current {
            Some(f) => f.clone(),
            None => {
                ensure!(
                    format == Format::Prometheus,
                    "{}: sample before any family",
                    at()
                );
                out.families.insert(
                    name.to_owned(),
                    MetricFamily {
                        kind: "untyped".into(),
                        ..Default::default()
                    },
                );
                name.to_owned()
            }
        };
        let fam = out.families.get_mut(&family).context("current family")?;
        if fam.kind.is_empty() {
            fam.kind = "unknown".into();
        }
        ensure!(
            suffixes(&fam.kind, format)
                .iter()
                .any(|s| name == format!("{family}{s}")),
            "{}: series {name} is not of family {family} ({})",
            at(),
            fam.kind
        );
        if fam.kind == "histogram" && name.ends_with("_bucket") {
            ensure!(labels.contains_key("le"), "{}: bucket without le", at());
        }
        fam.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    ensure!(
        eof || format == Format::Prometheus,
        "an OpenMetrics exposition ends with # EOF"
    );
    for (name, fam) in &out.families {
        if fam.kind == "histogram" {
            check_histogram(name, fam)?;
        }
    }
    Ok(out)
}

/// Per series (labels but `le`): buckets cumulative in `le` order, `+Inf` present and equal to
/// `_count`.
fn check_histogram(name: &str, fam: &MetricFamily) -> anyhow::Result<()> {
    // Per series: its buckets (le, cumulative count) and its `_count`.
    type Buckets = (Vec<(f64, f64)>, Option<f64>);
    let mut series: BTreeMap<Vec<(String, String)>, Buckets> = BTreeMap::new();
    for s in &fam.samples {
        let key: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let entry = series.entry(key).or_default();
        if s.name.ends_with("_bucket") {
            let le = parse_value(s.labels.get("le").map(String::as_str).unwrap_or(""))?;
            entry.0.push((le, s.value));
        } else if s.name.ends_with("_count") {
            entry.1 = Some(s.value);
        }
    }
    for (labels, (buckets, count)) in series {
        ensure!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{name}{labels:?}: buckets not cumulative in le order"
        );
        let last = buckets.last().context("a histogram without buckets")?;
        ensure!(last.0 == f64::INFINITY, "{name}{labels:?}: no +Inf bucket");
        ensure!(
            Some(last.1) == count,
            "{name}{labels:?}: +Inf bucket {} is not the count {count:?}",
            last.1
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "# HELP a_seconds A.\n# TYPE a_seconds histogram\n# UNIT a_seconds seconds\n\
a_seconds_sum 1.5\na_seconds_count 2\na_seconds_bucket{le=\"1.0\"} 1\na_seconds_bucket{le=\"+Inf\"} 2\n\
# HELP c C.\n# TYPE c counter\nc_total{k=\"x\\\"y\"} 3\n# EOF\n";

    #[test]
    fn parses_and_checks_openmetrics() {
        let e = parse(OM, Format::OpenMetrics).unwrap();
        assert_eq!(e.value("c_total", &[("k", "x\"y")]), Some(3.0));
        assert_eq!(e.value("a_seconds_count", &[]), Some(2.0));
        assert_eq!(e.family("a_seconds", "histogram").unwrap().samples.len(), 4);
    }

    #[test]
    fn refuses_what_prometheus_refuses() {
        let bad = [
            OM.replace("# EOF\n", ""),
            OM.replace("c_total{", "c{"),
            OM.replace("# TYPE c counter", "# TYPE c_total counter"),
            OM.replace("bucket{le=\"+Inf\"} 2", "bucket{le=\"+Inf\"} 3"),
            OM.replace("bucket{le=\"1.0\"} 1", "bucket{le=\"1.0\"} 5"),
            OM.replace("k=\"x", "k=x"),
            format!("{OM}c_total 1\n"),
        ];
        for text in bad {
            assert!(parse(&text, Format::OpenMetrics).is_err(), "{text}");
        }
        let prom = "# HELP c_total C.\n# TYPE c_total counter\nc_total 1\n";
        assert!(parse(prom, Format::Prometheus).is_ok());
        assert!(parse(prom, Format::OpenMetrics).is_err());
    }
}
