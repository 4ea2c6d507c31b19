//! The eBPF capture: load the kernel programs, configure their maps, attach them ([`Hook`]:
//! the TC pair on interfaces, or the cgroup socket-buffer program at the cgroup v2 root), and
//! read captured segments from the ring buffer into reassembly.
//!
//! Reading follows the low-overhead recipe measured on this machine kind (DESIGN.md): the
//! kernel submits without waking the reader (`BPF_RB_NO_WAKEUP`) unless more than
//! `wakeup_bytes` wait, and the reader drains the ring every `poll_ms` anyway.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::{
    CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, SchedClassifier, TcAttachType,
    tc,
};
use aya::{Ebpf, EbpfLoader};
use chrono::Utc;
use palisade_sensor_common::{
    CONFIG_ANY_PORT, CONFIG_CAPTURE_BYTES, CONFIG_WAKEUP_BYTES, COUNTER_CAPTURED, COUNTER_ERRORS,
    COUNTER_HANDSHAKES, COUNTER_NOT_HTTP, COUNTER_RING_FULL, COUNTER_SHED, COUNTER_SKIPPED,
    COUNTER_SYNACKS, COUNTER_UNPROVEN, FAMILY_V4, FAMILY_V6, FLAG_ESTABLISHED, FLAG_FIN, FLAG_IPV6,
    FLAG_RST, FlowTuple, SegmentHeader,
};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, instrument, warn};

use crate::Error;
use crate::config::EbpfConfig;
use crate::context::CgroupRef;
use crate::metrics::Metrics;
use crate::pipeline::{Origin, Pipeline};
use crate::reassembly::{FlowKey, Reassembler, Segment};

/// The compiled kernel object, built by `build.rs`.
#[cfg(not(palisade_no_ebpf))]
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/palisade-sensor-ebpf"));
#[cfg(palisade_no_ebpf)]
static EBPF_OBJECT: &[u8] = &[];

const INGRESS: &str = "palisade_ingress";
const EGRESS: &str = "palisade_egress";
const CGROUP_INGRESS: &str = "palisade_cgroup_ingress";
/// Flow-tracking maps of the TC pair (handshakes), sized by `ebpf.max_tracked_flows`.
const TC_MAPS: [&str; 2] = ["PENDING", "ESTABLISHED"];
/// Flow-tracking maps of the cgroup program (`--port any` verdicts).
const CGROUP_MAPS: [&str; 1] = ["NOT_HTTP"];
/// Most interface names remembered for the cgroup source's records (it sees every interface).
const MAX_IFNAMES: usize = 4096;

/// Where the kernel programs attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    /// TC ingress (capture) and egress (handshake tracking) on `ebpf.interfaces`.
    Tc,
    /// `cgroup_skb/ingress` at this cgroup v2 directory (the hierarchy's root for a whole
    /// node): every segment delivered to a local socket in it or below, on any interface.
    Cgroup {
        /// The cgroup2 directory to attach at.
        root: std::path::PathBuf,
    },
}

/// Attempts at loading one program while the verifier keeps answering `EAGAIN` (libbpf's count).
const LOAD_ATTEMPTS: u32 = 5;

const PERMISSION_HINT: &str = " (hint: loading and attaching eBPF needs root, or the capabilities CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON; or use --source log)";

/// Loaded and attached programs. Dropping it detaches them.
pub struct Capture {
    _ebpf: Ebpf,
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    skip: SkipMap,
    ifnames: IfNames,
    attached: Vec<String>,
}

/// Interface names of records' `ifindex`: the attached interfaces (TC), or learnt as records
/// arrive (cgroup source, which sees every interface), bounded.
#[derive(Debug, Default)]
struct IfNames {
    known: HashMap<u32, Option<String>>,
    /// Look unknown indexes up in the kernel (cgroup source).
    learn: bool,
}

impl IfNames {
    fn name(&mut self, index: u32) -> Option<String> {
        if let Some(name) = self.known.get(&index) {
            return name.clone();
        }
        if !self.learn || index == 0 {
            return None;
        }
        let name = ifname(index);
        if self.known.len() >= MAX_IFNAMES {
            // interfaces come and go (veths of pods): start over rather than grow
            self.known.clear();
        }
        self.known.insert(index, name.clone());
        name
    }
}

/// Handle on the kernel's `SKIP` map: flows whose payload userspace does not need before a
/// sequence number. The kernel then sends header-only records (`captured = 0`, flag
/// `FLAG_SKIPPED`) for segments that end at or before it, and removes the entry once the flow
/// passes it.
pub struct SkipMap {
    map: BpfHashMap<MapData, FlowTuple, u32>,
}

impl std::fmt::Debug for SkipMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkipMap").finish_non_exhaustive()
    }
}

impl SkipMap {
    /// Copy no payload of `key`'s client-to-server stream that ends at or before sequence
    /// number `until`. A segment straddling `until` is copied whole. An entry for a flow whose
    /// addresses mix families (which no captured segment has) is refused.
    pub fn skip_until(&mut self, key: &FlowKey, until: u32) -> Result<(), Error> {
        let tuple = flow_tuple(key).ok_or_else(|| Error::Ebpf {
            message: format!("skip map: flow {key:?} mixes IPv4 and IPv6 addresses"),
            hint: "",
        })?;
        self.map
            .insert(tuple, until, 0)
            .map_err(|e| ebpf_err("writing the SKIP map", &e))
    }

    /// Copy `key`'s payload again (no-op when it has no entry).
    pub fn clear(&mut self, key: &FlowKey) -> Result<(), Error> {
        let Some(tuple) = flow_tuple(key) else {
            return Ok(());
        };
        match self.map.remove(&tuple) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(ebpf_err("removing from the SKIP map", &e)),
        }
    }

    /// The entry for `key`, if any (the kernel removes it once the flow passes `until`).
    pub fn get(&self, key: &FlowKey) -> Option<u32> {
        self.map.get(&flow_tuple(key)?, 0).ok()
    }
}

/// Kernel counters summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Records that did not fit the ring buffer (dropped).
    pub ring_full: u64,
    /// Records written to the ring buffer.
    pub captured: u64,
    /// Packets on watched ports whose headers could not be read (passed, not inspected).
    pub errors: u64,
    /// SYN-ACKs from watched ports recorded (egress).
    pub synacks: u64,
    /// Handshakes seen complete (flows marked established).
    pub handshakes: u64,
    /// Segments sent without payload because of the skip map.
    pub skipped: u64,
    /// Segments of which only the first record was copied because the ring was over half full.
    pub shed: u64,
    /// Flows forgotten under `any_port` because their first bytes are not an HTTP request.
    pub not_http: u64,
    /// Segments with payload from connections not proven (inspected, never attributed).
    pub unproven: u64,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("attached", &self.attached)
            .finish_non_exhaustive()
    }
}

fn missing(what: &str) -> Error {
    Error::Ebpf {
        message: format!("{what} missing from the eBPF object (build mismatch)"),
        hint: "",
    }
}

fn ebpf_err(message: impl Into<String>, err: &dyn std::error::Error) -> Error {
    // The whole chain: aya's errors keep the OS error (EPERM, ...) as their source.
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let denied =
        !root || text.contains("Operation not permitted") || text.contains("Permission denied");
    Error::Ebpf {
        message: format!("{}: {text}", message.into()),
        hint: if denied { PERMISSION_HINT } else { "" },
    }
}

/// Every signal blocked on the calling thread while alive; the previous mask is restored on drop.
///
/// The verifier gives up with `EAGAIN` whenever a signal is pending for the loading thread
/// (it checks between instructions), and aya passes that on after one retry. Signals do
/// arrive: the sensor handles SIGTERM and SIGINT, and a child's SIGCHLD, otherwise discarded,
/// is queued for the process when it comes while the spawning thread blocks signals (glibc's
/// `posix_spawn` blocks them all while it spawns), then handed to any thread that does not.
/// Blocked here, a signal goes to another thread, or waits until the load is over: none is
/// lost, and none interrupts the verifier. The signals a fault raises in this very thread
/// (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) are left unblocked, so that a crash still reports
/// itself as one (a stack overflow, say).
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> Option<SignalsBlocked> {
        let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigfillset initialises `all`; pthread_sigmask reads it and, on success,
        // initialises `old`, which is only read then.
        unsafe {
            libc::sigfillset(all.as_mut_ptr());
            for fault in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGILL,
                libc::SIGFPE,
                libc::SIGABRT,
            ] {
                libc::sigdelset(all.as_mut_ptr(), fault);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, all.as_ptr(), old.as_mut_ptr()) != 0 {
                return None;
            }
            Some(SignalsBlocked(old.assume_init()))
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask pthread_sigmask returned; a null old-set pointer is allowed.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

/// Load a program, again while the verifier answers `EAGAIN` (a signal arrived while it ran:
/// [`SignalsBlocked`] keeps the thread's own out, and this covers what it cannot).
fn load_program(
    name: &str,
    mut load: impl FnMut() -> Result<(), ProgramError>,
) -> Result<(), Error> {
    let mut attempt = 1;
    loop {
        match load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < LOAD_ATTEMPTS =>
            {
                debug!(
                    program = name,
                    attempt, "the verifier was interrupted; loading again"
                );
                attempt += 1;
            }
            result => {
                return result.map_err(|e| ebpf_err(format!("loading {name} (verifier)"), &e));
            }
        }
    }
}

impl Capture {
    /// Load the programs, write the configuration maps and attach them where `hook` says.
    #[instrument(skip(config), fields(interfaces = ?config.interfaces, ports = ?config.ports))]
    pub fn attach(config: &EbpfConfig, hook: &Hook) -> Result<Capture, Error> {
        if EBPF_OBJECT.is_empty() {
            return Err(Error::Ebpf {
                message: "this binary was built with AYA_BUILD_SKIP: no eBPF programs inside"
                    .into(),
                hint: " (hint: rebuild without AYA_BUILD_SKIP, or use --source log)",
            });
        }
        let present = match hook {
            Hook::Tc => present_interfaces(&config.interfaces, ifindex)?,
            Hook::Cgroup { .. } => Vec::new(),
        };
        // Open the cgroup before loading anything: a wrong path is the likeliest mistake.
        let cgroup_dir = match hook {
            Hook::Tc => None,
            Hook::Cgroup { root } => Some(open_cgroup2(root)?),
        };
        // Loading runs the verifier, which a signal for this thread would interrupt.
        let signals_blocked = SignalsBlocked::new();
        if signals_blocked.is_none() {
            debug!("signals could not be blocked while loading; an interrupted load is retried");
        }
        let mut loader = EbpfLoader::new();
        loader.map_max_entries("EVENTS", config.ring_bytes);
        loader.map_max_entries("SKIP", config.max_tracked_flows);
        // The other hook's maps are never used: one entry each instead of preallocated LRUs.
        let (used, unused): (&[&str], &[&str]) = match hook {
            Hook::Tc => (&TC_MAPS, &CGROUP_MAPS),
            Hook::Cgroup { .. } => (&CGROUP_MAPS, &TC_MAPS),
        };
        for map in used {
            loader.map_max_entries(map, config.max_tracked_flows);
        }
        for map in unused {
            loader.map_max_entries(map, 1);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|e| ebpf_err("loading the eBPF object", &e))?;

        let mut ports: Array<_, u8> = ebpf
            .map_mut("PORTS")
            .ok_or_else(|| missing("map PORTS"))?
            .try_into()
            .map_err(|e| ebpf_err("map PORTS", &e))?;
        if config.any_port {
            info!("watching every port: flows whose first bytes are an HTTP request are inspected");
        }
        for port in &config.ports {
            ports
                .set(u32::from(*port), 1u8, 0)
                .map_err(|e| ebpf_err(format!("watching port {port}"), &e))?;
        }
        let mut settings: Array<_, u32> = ebpf
            .map_mut("CONFIG")
            .ok_or_else(|| missing("map CONFIG"))?
            .try_into()
            .map_err(|e| ebpf_err("map CONFIG", &e))?;
        settings
            .set(CONFIG_CAPTURE_BYTES, config.capture_bytes, 0)
            .map_err(|e| ebpf_err("setting capture_bytes", &e))?;
        settings
            .set(CONFIG_WAKEUP_BYTES, config.wakeup_bytes, 0)
            .map_err(|e| ebpf_err("setting wakeup_bytes", &e))?;
        settings
            .set(CONFIG_ANY_PORT, u32::from(config.any_port), 0)
            .map_err(|e| ebpf_err("setting any_port", &e))?;

        let mut ifnames = IfNames::default();
        let mut attached = Vec::new();
        if let (Hook::Cgroup { root }, Some(dir)) = (hook, &cgroup_dir) {
            let program: &mut CgroupSkb = ebpf
                .program_mut(CGROUP_INGRESS)
                .ok_or_else(|| missing(CGROUP_INGRESS))?
                .try_into()
                .map_err(|e| ebpf_err("program type", &e))?;
            load_program(CGROUP_INGRESS, || program.load())?;
            // Attached through a BPF link (kernels >= 5.7; the ring buffer already needs 5.8),
            // which always runs beside the hook's other programs (a CNI's, systemd's IP
            // accounting) and takes no flags: `Single` is the "no flags" mode here, and the
            // link is gone when the sensor exits, however it exits.
            program
                .attach(dir, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
                .map_err(|e| {
                    ebpf_err(
                        format!("attaching to cgroup {} ingress", root.display()),
                        &e,
                    )
                })?;
            ifnames.learn = true;
            attached.push(format!("cgroup:{}", root.display()));
        }
        for (iface, index) in &present {
            // Kernels >= 6.6 attach through TCX and need no qdisc; older ones need clsact.
            // It may already exist: that error is expected and harmless.
            if let Err(err) = tc::qdisc_add_clsact(iface) {
                debug!(interface = %iface, cause = %err, "clsact qdisc not added (may exist)");
            }
            ifnames.known.insert(*index, Some((*iface).to_owned()));
            attached.push((*iface).to_owned());
        }
        // Egress first: a handshake whose SYN-ACK leaves before the ingress program is attached
        // is still tracked. An interface that exists but cannot be attached to is a failure.
        if *hook == Hook::Tc {
            for (name, direction) in [
                (EGRESS, TcAttachType::Egress),
                (INGRESS, TcAttachType::Ingress),
            ] {
                let program: &mut SchedClassifier = ebpf
                    .program_mut(name)
                    .ok_or_else(|| missing(name))?
                    .try_into()
                    .map_err(|e| ebpf_err("program type", &e))?;
                load_program(name, || program.load())?;
                for (iface, _) in &present {
                    program
                        .attach(iface, direction)
                        .map_err(|e| ebpf_err(format!("attaching to {iface} {direction:?}"), &e))?;
                }
            }
        }
        drop(signals_blocked);
        let ring = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| missing("map EVENTS"))?,
        )
        .map_err(|e| ebpf_err("map EVENTS", &e))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("COUNTERS")
                .ok_or_else(|| missing("map COUNTERS"))?,
        )
        .map_err(|e| ebpf_err("map COUNTERS", &e))?;
        let skip = SkipMap {
            map: BpfHashMap::try_from(ebpf.take_map("SKIP").ok_or_else(|| missing("map SKIP"))?)
                .map_err(|e| ebpf_err("map SKIP", &e))?,
        };
        Ok(Capture {
            _ebpf: ebpf,
            ring,
            counters,
            skip,
            ifnames,
            attached,
        })
    }

    /// Copy no payload of `key`'s stream that ends at or before sequence number `until`
    /// (see [`SkipMap::skip_until`]).
    pub fn skip_until(&mut self, key: FlowKey, until: u32) -> Result<(), Error> {
        self.skip.skip_until(&key, until)
    }

    /// The skip map, for a reader loop that outlives `run`'s borrow of the capture.
    pub fn skip_map(&mut self) -> &mut SkipMap {
        &mut self.skip
    }

    /// Interfaces the program is attached to.
    pub fn interfaces(&self) -> &[String] {
        &self.attached
    }

    /// Kernel counters summed over CPUs.
    pub fn kernel_counters(&self) -> KernelCounters {
        kernel_counters(&self.counters)
    }

    /// Read segments until `shutdown` resolves, feeding `reassembler` and `pipeline`.
    pub async fn run(
        self,
        mut reassembler: Reassembler,
        pipeline: Arc<Pipeline>,
        metrics: Arc<Metrics>,
        poll: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), Error> {
        let Capture {
            _ebpf,
            ring,
            counters,
            skip,
            mut ifnames,
            attached,
        } = self;
        // Reassembly's skip hints (body bytes nobody will inspect) go to the kernel through it.
        let mut skip = skip;
        // SAFETY: the ring buffer map owns its fd and keeps it open, unchanged, for as long as
        // the AsyncFd owns the map.
        let mut fd =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| ebpf_err("ring buffer fd", &e))?;
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                guard = fd.readable_mut() => {
                    match guard {
                        Ok(mut g) => {
                            drain(g.get_inner_mut(), &mut reassembler, &mut skip, &pipeline, &metrics, &mut ifnames);
                            g.clear_ready();
                        }
                        Err(err) => {
                            warn!(cause = %err, "ring buffer poll failed");
                            tokio::time::sleep(poll).await;
                        }
                    }
                }
                _ = tick.tick() => {
                    drain(fd.get_mut(), &mut reassembler, &mut skip, &pipeline, &metrics, &mut ifnames);
                }
                _ = housekeeping.tick() => {
                    reassembler.expire(monotonic_ns());
                    let stats = reassembler.stats();
                    metrics.store_reassembly(&reassembler);
                    let k = kernel_counters(&counters);
                    metrics.ring_drops.store(k.ring_full, Ordering::Relaxed);
                    metrics.kernel_errors.store(k.errors, Ordering::Relaxed);
                    metrics.ring_shed.store(k.shed, Ordering::Relaxed);
                    metrics.flows_not_http.store(k.not_http, Ordering::Relaxed);
                    metrics.segments_unproven.store(k.unproven, Ordering::Relaxed);
                    debug!(
                        captured = k.captured,
                        synacks = k.synacks,
                        handshakes = k.handshakes,
                        skipped = k.skipped,
                        flows = reassembler.flow_count(),
                        gaps = stats.gaps,
                        "capture stats"
                    );
                }
            }
        }
        // Last drain so nothing already captured is lost.
        drain(
            fd.get_mut(),
            &mut reassembler,
            &mut skip,
            &pipeline,
            &metrics,
            &mut ifnames,
        );
        info!(interfaces = ?attached, "detaching");
        Ok(())
    }
}

fn kernel_counters(counters: &PerCpuArray<MapData, u64>) -> KernelCounters {
    let sum = |slot: u32| {
        counters
            .get(&slot, 0)
            .map(|v| v.iter().copied().sum::<u64>())
            .unwrap_or(0)
    };
    KernelCounters {
        ring_full: sum(COUNTER_RING_FULL),
        captured: sum(COUNTER_CAPTURED),
        errors: sum(COUNTER_ERRORS),
        synacks: sum(COUNTER_SYNACKS),
        handshakes: sum(COUNTER_HANDSHAKES),
        skipped: sum(COUNTER_SKIPPED),
        shed: sum(COUNTER_SHED),
        not_http: sum(COUNTER_NOT_HTTP),
        unproven: sum(COUNTER_UNPROVEN),
    }
}

/// The kernel's map key for `key`: IPv4 in the first 4 address bytes (rest 0), IPv6 in all 16.
/// `None` when the addresses mix families (an IPv4-mapped IPv6 flow is canonicalised to IPv4
/// by [`drain`], so such a key cannot be told apart from a real IPv4 one).
pub fn flow_tuple(key: &FlowKey) -> Option<FlowTuple> {
    let enc = |ip: &IpAddr| -> [u8; 16] {
        let mut out = [0u8; 16];
        match ip {
            IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => out = a.octets(),
        }
        out
    };
    let family = match (key.src, key.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => FAMILY_V4,
        (IpAddr::V6(_), IpAddr::V6(_)) => FAMILY_V6,
        _ => return None,
    };
    Some(FlowTuple {
        client_addr: enc(&key.src),
        server_addr: enc(&key.dst),
        client_port: key.src_port,
        server_port: key.dst_port,
        family,
    })
}

fn monotonic_ns() -> u64 {
    // Same clock as bpf_ktime_get_ns (CLOCK_MONOTONIC).
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// The configured interfaces that exist on this host, with their index. One that does not
/// exist is skipped with a warning: a DaemonSet lists candidates (`ens5`, `eth0`) and nodes
/// differ. None existing is an error naming every interface tried.
fn present_interfaces(
    names: &[String],
    index_of: impl Fn(&str) -> Option<u32>,
) -> Result<Vec<(&str, u32)>, Error> {
    let mut present = Vec::with_capacity(names.len());
    for name in names {
        match index_of(name) {
            Some(index) => present.push((name.as_str(), index)),
            None => warn!(interface = %name, "interface does not exist on this host; skipped"),
        }
    }
    if present.is_empty() {
        return Err(Error::Ebpf {
            message: format!(
                "none of the configured interfaces exists on this host (tried: {})",
                names.join(", ")
            ),
            hint: " (hint: `ip -br link` lists this host's interfaces; set --interface or \
                   ebpf.interfaces accordingly)",
        });
    }
    Ok(present)
}

fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// The name of interface `index`, if it exists.
fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes the call may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// `CGROUP2_SUPER_MAGIC`: the `f_type` of a cgroup v2 filesystem.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Open `dir` to attach at, checking that it is a cgroup v2 directory (a v1 controller
/// hierarchy or a plain directory would accept nothing, or fail obscurely).
fn open_cgroup2(dir: &std::path::Path) -> Result<std::fs::File, Error> {
    let bad = |why: String| Error::Ebpf {
        message: format!("cgroup root {}: {why}", dir.display()),
        hint: " (hint: the cgroup2 mount is in /proc/mounts, usually /sys/fs/cgroup or \
               /sys/fs/cgroup/unified; set --cgroup-root, or capture with TC: --source ebpf \
               --interface ...)",
    };
    let file = std::fs::File::open(dir).map_err(|e| bad(e.to_string()))?;
    // SAFETY: an all-zero statfs is a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out-pointer.
    let rc = unsafe { libc::fstatfs(std::os::fd::AsRawFd::as_raw_fd(&file), &mut st) };
    if rc != 0 {
        return Err(bad(std::io::Error::last_os_error().to_string()));
    }
    #[allow(clippy::unnecessary_cast)]
    if st.f_type as i64 != CGROUP2_SUPER_MAGIC {
        return Err(bad("not a cgroup v2 directory".to_owned()));
    }
    Ok(file)
}

/// Decode one ring-buffer record into its header and captured payload.
pub fn decode(record: &[u8]) -> Option<(SegmentHeader, &[u8])> {
    let hl = std::mem::size_of::<SegmentHeader>();
    if record.len() < hl {
        return None;
    }
    // SAFETY: SegmentHeader is plain old data and `record` holds at least its size.
    let header: SegmentHeader =
        unsafe { std::ptr::read_unaligned(record.as_ptr().cast::<SegmentHeader>()) };
    let payload = &record[hl..];
    let n = (header.captured as usize).min(payload.len());
    Some((header, &payload[..n]))
}

fn addr(bytes: &[u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(*bytes)).to_canonical()
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

/// The reassembler's view of one record: handshake facts come from the kernel's flags.
fn segment<'a>(h: &SegmentHeader, payload: &'a [u8]) -> Segment<'a> {
    let established = h.flags & FLAG_ESTABLISHED != 0;
    Segment {
        seq: h.seq,
        len: h.payload_len,
        data: payload,
        end: h.flags & (FLAG_FIN | FLAG_RST) != 0,
        now_ns: h.timestamp_ns,
        established,
        stream_start: established.then_some(h.stream_start),
    }
}

fn drain(
    ring: &mut RingBuf<MapData>,
    reassembler: &mut Reassembler,
    skip: &mut SkipMap,
    pipeline: &Pipeline,
    metrics: &Metrics,
    ifnames: &mut IfNames,
) {
    let mut n = 0u64;
    while let Some(item) = ring.next() {
        n += 1;
        let Some((h, payload)) = decode(&item) else {
            continue;
        };
        let v6 = h.flags & FLAG_IPV6 != 0;
        let key = FlowKey {
            src: addr(&h.src_addr, v6),
            src_port: h.src_port,
            dst: addr(&h.dst_addr, v6),
            dst_port: h.dst_port,
        };
        let seg = segment(&h, payload);
        reassembler.push(key, seg, |key, request, meta| {
            // Built per request, not per segment: most segments complete no request.
            // TC sees no socket, so no cgroup (0); the cgroup source names the receiving
            // socket's, and the pipeline's ContextResolver names its pod and container.
            let origin = Origin {
                interface: ifnames.name(h.ifindex),
                dst_port: Some(key.dst_port),
                cgroup: (h.cgroup_id != 0).then_some(CgroupRef::Id(h.cgroup_id)),
                ..Origin::default()
            };
            pipeline.handle(key.src, &request, meta, &origin, Utc::now());
        });
    }
    if n > 0 {
        metrics.packets_captured.fetch_add(n, Ordering::Relaxed);
    }
    // A failed map write only costs copies the reassembler then skips itself.
    reassembler.take_skip_hints(|key, until| {
        if let Err(err) = skip.skip_until(&key, until) {
            debug!(cause = %err, "skip hint not written to the kernel");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A host with `eth0` (index 2) and `lo` (index 1) only.
    fn host(name: &str) -> Option<u32> {
        match name {
            "lo" => Some(1),
            "eth0" => Some(2),
            _ => None,
        }
    }

    #[test]
    fn missing_interfaces_are_skipped() {
        let configured = names(&["ens5", "eth0", "lo"]);
        let present = present_interfaces(&configured, host).unwrap();
        assert_eq!(present, vec![("eth0", 2), ("lo", 1)]);
    }

    #[test]
    fn no_interface_present_is_an_error_naming_them() {
        let configured = names(&["ens5", "enp0s3"]);
        let err = present_interfaces(&configured, host).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Ebpf { .. }), "{err:?}");
        assert!(text.contains("tried: ens5, enp0s3"), "{text}");
        assert!(present_interfaces(&[], host).is_err());
    }

    /// A header as the kernel writes it for `seq`.
    fn header(seq: u32, payload_len: u32, captured: u32, flags: u32) -> SegmentHeader {
        SegmentHeader {
            timestamp_ns: 1,
            src_addr: [192, 0, 2, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dst_addr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            src_port: 40000,
            dst_port: 8080,
            ifindex: 2,
            seq,
            payload_len,
            captured,
            flags,
            stream_start: 0,
            reserved: 0,
            cgroup_id: 0,
        }
    }

    /// The ring-buffer bytes of one record.
    fn record(h: &SegmentHeader, payload: &[u8]) -> Vec<u8> {
        // SAFETY: SegmentHeader is plain old data without implicit padding.
        let head = unsafe {
            std::slice::from_raw_parts(
                (h as *const SegmentHeader).cast::<u8>(),
                std::mem::size_of::<SegmentHeader>(),
            )
        };
        let mut out = head.to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// The records the kernel writes for one skb: `capture` bytes of `payload` in chunks of at
    /// most MAX_CAPTURE, the last standing for the rest of the segment (same rule as
    /// sensor-ebpf's `try_ingress`).
    fn kernel_records(seq: u32, payload: &[u8], capture: usize, flags: u32) -> Vec<Vec<u8>> {
        use palisade_sensor_common::{FLAG_TRUNCATED, MAX_CAPTURE};
        let total = payload.len().min(capture);
        let chunks = total.div_ceil(MAX_CAPTURE).max(1);
        (0..chunks)
            .map(|i| {
                let off = i * MAX_CAPTURE;
                let n = (total - off).min(MAX_CAPTURE);
                let last = i + 1 == chunks;
                let stands_for = if last { payload.len() - off } else { n };
                // FIN/RST only on the last record: the flow ends after all of them.
                let mut f = flags & !(FLAG_FIN | FLAG_RST);
                if last {
                    f = flags;
                    if n < stands_for {
                        f |= FLAG_TRUNCATED;
                    }
                }
                let mut h = header(seq + off as u32, stands_for as u32, n as u32, f);
                h.stream_start = 1000;
                record(&h, &payload[off..off + n])
            })
            .collect()
    }

    #[test]
    fn flow_tuple_uses_the_kernel_encoding() {
        let v4 = FlowKey {
            src: "192.0.2.7".parse().unwrap(),
            src_port: 40000,
            dst: "10.0.0.1".parse().unwrap(),
            dst_port: 8080,
        };
        let t = flow_tuple(&v4).unwrap();
        let h = header(0, 0, 0, 0);
        // Same bytes as the header's addresses, which the kernel copies into its key.
        assert_eq!(t.client_addr, h.src_addr);
        assert_eq!(t.server_addr, h.dst_addr);
        assert_eq!(
            (t.client_port, t.server_port, t.family),
            (40000, 8080, FAMILY_V4)
        );

        let v6 = FlowKey {
            src: "2001:db8::7".parse().unwrap(),
            src_port: 1,
            dst: "2001:db8::1".parse().unwrap(),
            dst_port: 80,
        };
        let t = flow_tuple(&v6).unwrap();
        assert_eq!(
            t.client_addr,
            "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(t.family, FAMILY_V6);
        let mixed = FlowKey {
            dst: "10.0.0.1".parse().unwrap(),
            ..v6
        };
        assert_eq!(flow_tuple(&mixed), None);
    }

    #[test]
    fn segment_takes_handshake_facts_from_the_record() {
        let mut h = header(1000, 5, 5, FLAG_ESTABLISHED);
        h.stream_start = 1000;
        let seg = segment(&h, b"GET /");
        assert!(seg.established);
        assert_eq!(seg.stream_start, Some(1000));
        // Without the flag, stream_start means nothing and the flow is not attributed.
        let seg = segment(&header(1000, 5, 5, 0), b"GET /");
        assert!(!seg.established);
        assert_eq!(seg.stream_start, None);
        let seg = segment(&header(1000, 0, 0, FLAG_RST), b"");
        assert!(seg.end);
    }

    #[test]
    fn consecutive_records_of_one_skb_reassemble_into_the_whole_request() {
        use crate::config::ReassemblyConfig;
        use crate::detect::Detector;
        use crate::http::ParseLimits;

        // One GRO skb: a JSON body whose attack sits after 9 KB of padding (3 records).
        let attack = r#""q":"<script>alert(1)</script>"}"#;
        let body = format!(r#"{{"pad":"{}",{attack}"#, "a".repeat(9000));
        let raw = format!(
            "POST /api HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let records = kernel_records(1000, raw.as_bytes(), 65536, FLAG_ESTABLISHED | FLAG_FIN);
        assert_eq!(records.len(), 3);

        let config = ReassemblyConfig {
            max_flow_bytes: 64 * 1024,
            ..ReassemblyConfig::default()
        };
        let limits = ParseLimits {
            max_body: 16 * 1024,
            ..ParseLimits::default()
        };
        let mut reassembler = Reassembler::new(config, limits);
        let mut got = Vec::new();
        for rec in &records {
            let (h, payload) = decode(rec).unwrap();
            let key = FlowKey {
                src: addr(&h.src_addr, false),
                src_port: h.src_port,
                dst: addr(&h.dst_addr, false),
                dst_port: h.dst_port,
            };
            reassembler.push(key, segment(&h, payload), |_, request, meta| {
                got.push((request, meta));
            });
        }
        // The request, then later windows of its body (reassembly inspects bodies window by
        // window), all from one established flow followed from its first byte.
        assert!(!got.is_empty(), "the request is emitted");
        assert!(
            got[0].0.body_window.is_none(),
            "the request itself comes first"
        );
        assert!(
            body.as_bytes().starts_with(&got[0].0.body),
            "its first window is the body's start"
        );
        for (_, meta) in &got {
            assert!(meta.established && meta.in_sync, "{meta:?}");
        }
        let detector = Detector::builtin().unwrap();
        assert!(
            got.iter()
                .flat_map(|(request, _)| detector.inspect(request))
                .any(|d| d.category.as_str() == "xss"),
            "the attack after 9 KB of padding is found in some window"
        );
    }

    #[test]
    fn a_limited_capture_ends_in_a_truncated_record() {
        let payload = vec![b'x'; 10_000];
        let records = kernel_records(7, &payload, 5000, 0);
        let parts: Vec<(u32, u32, usize)> = records
            .iter()
            .map(|r| {
                let (h, p) = decode(r).unwrap();
                (h.seq, h.payload_len, p.len())
            })
            .collect();
        // 4096 copied, then 904 copied standing for the remaining 5904 bytes.
        assert_eq!(parts, vec![(7, 4096, 4096), (7 + 4096, 5904, 904)]);
        assert!(
            decode(&records[0][..10]).is_none(),
            "short record is refused"
        );
    }

    #[test]
    fn ifindex_of_an_unknown_name_is_none() {
        assert_eq!(ifindex("palisade-no0"), None);
        assert_eq!(ifindex("bad\0name"), None);
    }
}
