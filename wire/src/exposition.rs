//! The metrics text format a scrape gets, the same in the sensor and the blocker: OpenMetrics
//! 1.0 when the scraper asks for it (Prometheus does), the Prometheus text format 0.0.4
//! otherwise (curl, older agents). Both carry the same series under the same names.

/// `Content-Type` of an OpenMetrics 1.0 text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `Content-Type` of a Prometheus text format 0.0.4 exposition.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which text format a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0 text (what Prometheus asks for first).
    OpenMetrics,
    /// The Prometheus text format 0.0.4 (for clients that do not ask for OpenMetrics: curl,
    /// older agents). Same series, same names.
    Prometheus,
}

impl Exposition {
    /// The format a request's `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a weight above zero (Prometheus does, above plain
    /// text), the Prometheus text format otherwise.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        let wants = accept.is_some_and(|a| {
            a.split(',').any(|part| {
                let mut it = part.split(';').map(str::trim);
                let media = it.next().unwrap_or("");
                let refused = it.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                });
                media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
            })
        });
        if wants {
            Exposition::OpenMetrics
        } else {
            Exposition::Prometheus
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Exposition::Prometheus => PROMETHEUS_TEXT_CONTENT_TYPE,
        }
    }
}

/// A registry's metrics page in `format`. Writing into a `String` cannot fail; an encoder
/// error would be a bug in a metric's name, and goes to `on_error` (the caller logs it).
#[cfg(feature = "metrics")]
pub fn encode(
    registry: &prometheus_client::registry::Registry,
    format: Exposition,
    on_error: impl FnOnce(std::fmt::Error),
) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let res = match format {
        Exposition::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, registry),
        Exposition::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
        }
    };
    if let Err(err) = res {
        on_error(err);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_gets_openmetrics_and_others_the_text_format() {
        // What Prometheus 2.x and 3.x send.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Exposition::negotiate(Some(prom)), Exposition::OpenMetrics);
        assert_eq!(Exposition::negotiate(None), Exposition::Prometheus);
        assert_eq!(Exposition::negotiate(Some("*/*")), Exposition::Prometheus);
        assert_eq!(
            Exposition::negotiate(Some("application/openmetrics-text;q=0")),
            Exposition::Prometheus
        );
        assert!(
            Exposition::OpenMetrics
                .content_type()
                .starts_with("application/openmetrics-text; version=1.0.0")
        );
        assert!(
            Exposition::Prometheus
                .content_type()
                .starts_with("text/plain; version=0.0.4")
        );
    }
}
