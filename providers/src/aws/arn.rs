//! WAFv2 IP set ARNs: `arn:<partition>:wafv2:<region>:<account>:{regional|global}/ipset/<name>/<id>`.

use std::fmt;
use std::str::FromStr;

/// Where an IP set lives: a region, or CloudFront (`global` in the ARN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    Regional,
    CloudFront,
}

impl Scope {
    pub(crate) fn to_sdk(self) -> aws_sdk_wafv2::types::Scope {
        match self {
            Scope::Regional => aws_sdk_wafv2::types::Scope::Regional,
            Scope::CloudFront => aws_sdk_wafv2::types::Scope::Cloudfront,
        }
    }
}

/// The region every CLOUDFRONT-scope call must go to.
pub(crate) const CLOUDFRONT_REGION: &str = "us-east-1";

/// A parsed IP set ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpSetArn {
    /// The ARN as configured.
    pub(crate) arn: String,
    /// The region named in the ARN.
    pub(crate) region: String,
    /// The twelve-digit account id.
    pub(crate) account: String,
    pub(crate) scope: Scope,
    pub(crate) name: String,
    pub(crate) id: String,
}

impl IpSetArn {
    /// The region API calls for this set go to: us-east-1 for CLOUDFRONT, else the ARN's.
    pub(crate) fn api_region(&self) -> &str {
        match self.scope {
            Scope::CloudFront => CLOUDFRONT_REGION,
            Scope::Regional => &self.region,
        }
    }
}

impl fmt::Display for IpSetArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

/// Why a string is not an IP set ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ArnError(pub(crate) String);

impl fmt::Display for ArnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(reason: impl Into<String>) -> ArnError {
    ArnError(reason.into())
}

impl FromStr for IpSetArn {
    type Err = ArnError;

    fn from_str(s: &str) -> Result<Self, ArnError> {
        let arn = s.trim();
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = parts[..] else {
            return Err(err(
                "expected arn:<partition>:wafv2:<region>:<account>:<scope>/ipset/<name>/<id>",
            ));
        };
        if prefix != "arn" {
            return Err(err("does not start with `arn:`"));
        }
        if partition.is_empty() || !partition.starts_with("aws") {
            return Err(err(format!("unknown partition `{partition}`")));
        }
        if service != "wafv2" {
            return Err(err(format!("service is `{service}`, expected `wafv2`")));
        }
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(err(format!("invalid region `{region}`")));
        }
        if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err(err(format!(
                "invalid account `{account}` (expected 12 digits)"
            )));
        }
        let segs: Vec<&str> = resource.split('/').collect();
        let [scope, kind, name, id] = segs[..] else {
            return Err(err(format!(
                "resource `{resource}` is not <scope>/ipset/<name>/<id>"
            )));
        };
        let scope = match scope {
            "regional" => Scope::Regional,
            "global" => Scope::CloudFront,
            other => {
                return Err(err(format!(
                    "scope `{other}` is neither `regional` nor `global`"
                )));
            }
        };
        if kind != "ipset" {
            return Err(err(format!(
                "resource type is `{kind}`, expected `ipset` (is this a web ACL or rule group ARN?)"
            )));
        }
        let name_ok = (1..=128).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(err(format!("invalid IP set name `{name}`")));
        }
        let id_ok = (1..=36).contains(&id.len())
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !id_ok {
            return Err(err(format!("invalid IP set id `{id}`")));
        }
        Ok(IpSetArn {
            arn: arn.to_string(),
            region: region.to_string(),
            account: account.to_string(),
            scope,
            name: name.to_string(),
            id: id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGIONAL: &str = "arn:aws:wafv2:eu-west-1:123456789012:regional/ipset/palisade-v4-0/a1b2c3d4-5678-90ab-cdef-EXAMPLE11111";

    #[test]
    fn parses_regional() {
        let a: IpSetArn = REGIONAL.parse().unwrap();
        assert_eq!(a.region, "eu-west-1");
        assert_eq!(a.api_region(), "eu-west-1");
        assert_eq!(a.account, "123456789012");
        assert_eq!(a.scope, Scope::Regional);
        assert_eq!(a.name, "palisade-v4-0");
        assert_eq!(a.id, "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111");
        assert_eq!(a.to_string(), REGIONAL);
    }

    #[test]
    fn global_means_cloudfront_in_us_east_1() {
        let a: IpSetArn = "arn:aws:wafv2:us-east-1:123456789012:global/ipset/cf_set/0123abcd"
            .parse()
            .unwrap();
        assert_eq!(a.scope, Scope::CloudFront);
        assert_eq!(a.api_region(), "us-east-1");
        // Whatever region the ARN names, CLOUDFRONT calls go to us-east-1.
        let b: IpSetArn = "arn:aws:wafv2:eu-central-1:123456789012:global/ipset/cf/01"
            .parse()
            .unwrap();
        assert_eq!(b.api_region(), "us-east-1");
    }

    #[test]
    fn other_partitions() {
        let a: IpSetArn = "arn:aws-us-gov:wafv2:us-gov-west-1:123456789012:regional/ipset/s/1"
            .parse()
            .unwrap();
        assert_eq!(a.region, "us-gov-west-1");
    }

    #[test]
    fn rejects_with_a_reason() {
        for (bad, why) in [
            ("", "expected arn:"),
            ("arn:aws:wafv2:eu-west-1:123456789012", "expected arn:"),
            (
                "urn:aws:wafv2:eu-west-1:123456789012:regional/ipset/a/b",
                "arn:",
            ),
            (
                "arn:aws:waf:eu-west-1:123456789012:regional/ipset/a/b",
                "service",
            ),
            ("arn:aws:wafv2::123456789012:regional/ipset/a/b", "region"),
            ("arn:aws:wafv2:eu-west-1:1234:regional/ipset/a/b", "account"),
            (
                "arn:aws:wafv2:eu-west-1:123456789012:local/ipset/a/b",
                "scope",
            ),
            (
                "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/a/b",
                "ipset",
            ),
            (
                "arn:aws:wafv2:eu-west-1:123456789012:regional/ipset/a",
                "resource",
            ),
            (
                "arn:aws:wafv2:eu-west-1:123456789012:regional/ipset/a b/c",
                "name",
            ),
            (
                "arn:aws:wafv2:eu-west-1:123456789012:regional/ipset/a/",
                "id",
            ),
        ] {
            let e = bad.parse::<IpSetArn>().unwrap_err();
            assert!(e.0.contains(why), "{bad}: {e}");
        }
    }
}
