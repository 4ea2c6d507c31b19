//! Network namespaces and veth pairs for the eBPF tests (root only).
//!
//! [`VethNamespace::create`] makes a namespace holding one end of a veth pair, the other end
//! staying in the caller's namespace, each with an address of a private /30 (`10.199.N.1` in the
//! namespace, `10.199.N.2` outside). Traffic sent from inside the namespace to `10.199.N.2`
//! arrives on the outer end's ingress, as a load balancer's traffic arrives at a node. Names
//! are unique per process and call; everything is deleted when the guard drops, also when a
//! test panics. Only addresses of this pair are ever used.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Why the eBPF tests cannot run here, if they cannot (not root, no `ip`, no namespaces).
pub fn skip_reason() -> Option<String> {
    // /proc/self belongs to the effective user.
    let euid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(u32::MAX);
    if euid != 0 {
        return Some("not running as root (eBPF and network namespaces need it)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => {}
        _ => return Some("the `ip` command (iproute2) is missing".into()),
    }
    if !std::path::Path::new("/sys/fs/bpf").exists()
        && !std::path::Path::new("/sys/kernel/btf").exists()
    {
        return Some("no BPF filesystem / BTF: eBPF looks unavailable".into());
    }
    None
}

/// For root-only tests: `true` (after printing why) when `test` cannot run here and should
/// return early. When the environment variable `CI` is `true` (CI runs as root) a test that
/// cannot run is a failure, not a skip: this panics with the reason instead.
pub fn skip_unless_ci(test: &str) -> bool {
    crate::skip_because(test, skip_reason())
}

/// A namespace with one end of a veth pair; the other end is in the caller's namespace.
#[derive(Debug)]
pub struct VethNamespace {
    /// Namespace name.
    pub ns: String,
    /// The veth end outside the namespace (where the sensor attaches).
    pub host_if: String,
    /// The veth end inside the namespace.
    pub ns_if: String,
    /// Address of `host_if`.
    pub host_addr: Ipv4Addr,
    /// Address of `ns_if`.
    pub ns_addr: Ipv4Addr,
    /// IPv6 address of `host_if` (unique local, `fd00:199:N::2/64`).
    pub host_addr6: Ipv6Addr,
    /// IPv6 address of `ns_if` (`fd00:199:N::1/64`).
    pub ns_addr6: Ipv6Addr,
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn subnet_in_use(n: u8) -> bool {
    Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" 10.199.{n}.")))
        .unwrap_or(true)
}

impl VethNamespace {
    /// Create the namespace, the pair, addresses, and bring everything up.
    pub fn create() -> anyhow::Result<VethNamespace> {
        let pid = std::process::id();
        let seq = NEXT.fetch_add(1, Ordering::Relaxed);
        // A /30 in 10.199.0.0/16 that no interface uses yet.
        let start = ((pid.wrapping_mul(7) + seq * 13) % 250) as u8;
        let n = (0..250u16)
            .map(|i| ((start as u16 + i) % 250) as u8 + 1)
            .find(|n| !subnet_in_use(*n))
            .context("no free 10.199.N.0/30 subnet")?;
        let tag = format!("{:x}{}", pid % 0xfffff, seq);
        let ns = format!("palisade-{tag}");
        let host_if = format!("plh{tag}");
        let ns_if = format!("pln{tag}");
        let guard = VethNamespace {
            ns: ns.clone(),
            host_if: host_if.clone(),
            ns_if: ns_if.clone(),
            host_addr: Ipv4Addr::new(10, 199, n, 2),
            ns_addr: Ipv4Addr::new(10, 199, n, 1),
            host_addr6: Ipv6Addr::new(0xfd00, 0x199, u16::from(n), 0, 0, 0, 0, 2),
            ns_addr6: Ipv6Addr::new(0xfd00, 0x199, u16::from(n), 0, 0, 0, 0, 1),
        };
        // From here on, Drop cleans up whatever was created.
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        run(Command::new("ip").args([
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]))?;
        run(Command::new("ip").args(["link", "set", &ns_if, "netns", &ns]))?;
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/30", guard.host_addr),
            "dev",
            &host_if,
        ]))?;
        // IPv6 too, without duplicate address detection (usable at once).
        run(Command::new("ip").args([
            "-6",
            "addr",
            "add",
            &format!("{}/64", guard.host_addr6),
            "dev",
            &host_if,
            "nodad",
        ]))?;
        run(Command::new("ip").args(["link", "set", &host_if, "up"]))?;
        run(&mut guard.exec_cmd(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", guard.ns_addr),
            "dev",
            &ns_if,
        ]))?;
        run(&mut guard.exec_cmd(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{}/64", guard.ns_addr6),
            "dev",
            &ns_if,
            "nodad",
        ]))?;
        run(&mut guard.exec_cmd(&["ip", "link", "set", &ns_if, "up"]))?;
        run(&mut guard.exec_cmd(&["ip", "link", "set", "lo", "up"]))?;
        Ok(guard)
    }

    /// A command that runs `args` inside the namespace.
    pub fn exec_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).args(args);
        cmd
    }

    /// A documentation address (198.51.100.0/24, RFC 5737) unique to this pair, routed out
    /// of `host_if` only: packets forged with it as their source inside the namespace arrive on
    /// `host_if`, and whatever the host answers (a RST) goes back into the namespace, where no
    /// one owns the address, instead of leaving the machine. The route goes away with the link.
    pub fn forged_source(&self) -> anyhow::Result<Ipv4Addr> {
        let n = self.host_addr.octets()[2];
        let forged = Ipv4Addr::new(198, 51, 100, n);
        run(Command::new("ip").args([
            "route",
            "replace",
            &format!("{forged}/32"),
            "dev",
            &self.host_if,
        ]))?;
        Ok(forged)
    }

    /// Run `args` inside the namespace and return its output (error on failure).
    pub fn exec(&self, args: &[&str]) -> anyhow::Result<Output> {
        run(&mut self.exec_cmd(args))
    }
}

impl Drop for VethNamespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, which deletes the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}
