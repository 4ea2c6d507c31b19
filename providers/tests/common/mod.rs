//! Shared setup for the AWS scenarios: moto, the fault proxy in front of it, IP sets created
//! in moto by the SDK (test setup: the provider never creates sets), and a "foreign writer"
//! that edits sets directly, as an operator or another tool would.

#![allow(dead_code)]

use std::collections::BTreeSet;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_wafv2::Client;
use aws_sdk_wafv2::types::{IpAddressVersion, Scope};
use palisade_providers::aws::AwsFirewallBuilder;
use palisade_providers::{Diff, IpNet, parse_cidr};
use palisade_tests::moto::{FaultProxy, MotoServer, ProxyConfig};

pub const REGION: &str = "us-east-1";

/// moto, the proxy in front of it, and an SDK client that talks to moto directly.
pub struct Emulator {
    pub proxy: FaultProxy,
    pub moto: MotoServer,
    pub sdk: SdkConfig,
    /// Straight to moto: not counted, not throttled, never faulted.
    pub admin: Client,
}

impl Emulator {
    pub async fn start(config: ProxyConfig) -> Emulator {
        let moto = MotoServer::start().await.expect("start moto_server");
        let proxy = FaultProxy::start(moto.endpoint(), config)
            .await
            .expect("start proxy");
        // Static fake credentials: moto maps unknown keys to account 123456789012.
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .test_credentials()
            .region(Region::new(REGION))
            .load()
            .await;
        let admin = Client::from_conf(
            aws_sdk_wafv2::config::Builder::from(&sdk)
                .endpoint_url(moto.endpoint())
                .build(),
        );
        Emulator {
            proxy,
            moto,
            sdk,
            admin,
        }
    }

    /// Create an IP set in moto; returns its ARN.
    pub async fn create_set(&self, name: &str, version: IpAddressVersion) -> String {
        let out = self
            .admin
            .create_ip_set()
            .name(name)
            .scope(Scope::Regional)
            .ip_address_version(version)
            .description("managed by palisade tests")
            .set_addresses(Some(Vec::new()))
            .send()
            .await
            .expect("CreateIPSet");
        out.summary
            .and_then(|s| s.arn)
            .expect("CreateIPSet returns an ARN")
    }

    /// A firewall over `arns` through the proxy, with the AWS default budgets.
    pub fn builder(&self, arns: &[String]) -> AwsFirewallBuilder {
        AwsFirewallBuilder::new()
            .with_ipset_arns(arns.iter().cloned())
            .with_endpoint_url(Some(self.proxy.endpoint()))
            .with_sdk_config(self.sdk.clone())
    }

    fn ids(arn: &str) -> (String, String) {
        let mut parts = arn.rsplit('/');
        let id = parts.next().expect("id").to_string();
        let name = parts.next().expect("name").to_string();
        (name, id)
    }

    /// Raw addresses of a set, read from moto directly.
    pub async fn raw(&self, arn: &str) -> (Vec<String>, Option<String>) {
        let (name, id) = Self::ids(arn);
        let out = self
            .admin
            .get_ip_set()
            .name(name)
            .id(id)
            .scope(Scope::Regional)
            .send()
            .await
            .expect("GetIPSet");
        let set = out.ip_set.expect("IPSet");
        (
            set.addresses().to_vec(),
            set.description().map(str::to_string),
        )
    }

    /// Parsed addresses of a set, read from moto directly.
    pub async fn addresses(&self, arn: &str) -> BTreeSet<IpNet> {
        self.raw(arn)
            .await
            .0
            .iter()
            .map(|a| parse_cidr(a).expect("moto holds CIDRs"))
            .collect()
    }

    /// Edit a set behind the provider's back (read, modify, write; retried on lock conflicts,
    /// as a careful operator script would). Returns how many conflicts it hit.
    pub async fn foreign_edit(&self, arn: &str, add: &[String], remove: &[String]) -> u32 {
        palisade_tests::demo::foreign_edit(&self.admin, arn, add, remove)
            .await
            .expect("foreign edit")
    }
}

/// `n` distinct public-looking IPv4 host routes starting at index `from`.
pub fn v4_hosts(from: u32, n: u32) -> Vec<IpNet> {
    (from..from + n)
        .map(|i| {
            let a = 11 + (i >> 16) as u8;
            let ip = std::net::Ipv4Addr::new(a, (i >> 8) as u8, i as u8, 1);
            IpNet::from(std::net::IpAddr::V4(ip))
        })
        .collect()
}

/// `n` distinct IPv6 host routes starting at index `from`.
pub fn v6_hosts(from: u32, n: u32) -> Vec<IpNet> {
    (from..from + n)
        .map(|i| {
            let ip =
                std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, (i >> 16) as u16, i as u16);
            IpNet::from(std::net::IpAddr::V6(ip))
        })
        .collect()
}

pub fn adds(nets: &[IpNet]) -> Diff {
    Diff {
        add: nets.iter().copied().collect(),
        remove: BTreeSet::new(),
    }
}

pub fn removes(nets: &[IpNet]) -> Diff {
    Diff {
        add: BTreeSet::new(),
        remove: nets.iter().copied().collect(),
    }
}
