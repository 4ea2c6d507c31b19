//! The eBPF capture: load the TC programs (ingress capture, egress handshake tracking),
//! configure their maps, attach them to the interfaces, and read captured segments from the
//! ring buffer into reassembly.
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
use aya::programs::{SchedClassifier, TcAttachType, tc};
use aya::{Ebpf, EbpfLoader};
use chrono::Utc;
use palisade_sensor_common::{
    CONFIG_CAPTURE_BYTES, CONFIG_WAKEUP_BYTES, COUNTER_CAPTURED, COUNTER_ERRORS,
    COUNTER_HANDSHAKES, COUNTER_RING_FULL, COUNTER_SKIPPED, COUNTER_SYNACKS, FAMILY_V4, FAMILY_V6,
    FLAG_ESTABLISHED, FLAG_FIN, FLAG_IPV6, FLAG_RST, FlowTuple, SegmentHeader,
};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, instrument, warn};

use crate::Error;
use crate::config::EbpfConfig;
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
/// The flow-tracking maps, all sized by `ebpf.max_tracked_flows`.
const FLOW_MAPS: [&str; 3] = ["PENDING", "ESTABLISHED", "SKIP"];
const PERMISSION_HINT: &str = " (hint: loading and attaching eBPF needs root, or the capabilities CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON; or use --source log)";

/// Loaded and attached programs. Dropping it detaches them.
pub struct Capture {
    _ebpf: Ebpf,
    ring: RingBuf<MapData>,
    counters: PerCpuArray<MapData, u64>,
    skip: SkipMap,
    ifnames: HashMap<u32, String>,
    attached: Vec<String>,
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

impl Capture {
    /// Load the programs, write the configuration maps and attach to every interface.
    #[instrument(skip(config), fields(interfaces = ?config.interfaces, ports = ?config.ports))]
    pub fn attach(config: &EbpfConfig) -> Result<Capture, Error> {
        if EBPF_OBJECT.is_empty() {
            return Err(Error::Ebpf {
                message: "this binary was built with AYA_BUILD_SKIP: no eBPF programs inside"
                    .into(),
                hint: " (hint: rebuild without AYA_BUILD_SKIP, or use --source log)",
            });
        }
        let present = present_interfaces(&config.interfaces, ifindex)?;
        let mut loader = EbpfLoader::new();
        loader.map_max_entries("EVENTS", config.ring_bytes);
        for map in FLOW_MAPS {
            loader.map_max_entries(map, config.max_tracked_flows);
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|e| ebpf_err("loading the eBPF object", &e))?;

        let mut ports: Array<_, u8> = ebpf
            .map_mut("PORTS")
            .ok_or_else(|| missing("map PORTS"))?
            .try_into()
            .map_err(|e| ebpf_err("map PORTS", &e))?;
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

        let mut ifnames = HashMap::new();
        let mut attached = Vec::new();
        for (iface, index) in &present {
            // Kernels >= 6.6 attach through TCX and need no qdisc; older ones need clsact.
            // It may already exist: that error is expected and harmless.
            if let Err(err) = tc::qdisc_add_clsact(iface) {
                debug!(interface = %iface, cause = %err, "clsact qdisc not added (may exist)");
            }
            ifnames.insert(*index, (*iface).to_owned());
            attached.push((*iface).to_owned());
        }
        // Egress first: a handshake whose SYN-ACK leaves before the ingress program is attached
        // is still tracked. An interface that exists but cannot be attached to is a failure.
        for (name, direction) in [(EGRESS, TcAttachType::Egress), (INGRESS, TcAttachType::Ingress)] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| missing(name))?
                .try_into()
                .map_err(|e| ebpf_err("program type", &e))?;
            program
                .load()
                .map_err(|e| ebpf_err(format!("loading {name} (verifier)"), &e))?;
            for (iface, _) in &present {
                program
                    .attach(iface, direction)
                    .map_err(|e| ebpf_err(format!("attaching to {iface} {direction:?}"), &e))?;
            }
        }
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
            ifnames,
            attached,
        } = self;
        // Kept alive (and its map open) for as long as the programs run; reassembly's skip
        // hints are written through it.
        let _skip = skip;
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
                            drain(g.get_inner_mut(), &mut reassembler, &pipeline, &metrics, &ifnames);
                            g.clear_ready();
                        }
                        Err(err) => {
                            warn!(cause = %err, "ring buffer poll failed");
                            tokio::time::sleep(poll).await;
                        }
                    }
                }
                _ = tick.tick() => {
                    drain(fd.get_mut(), &mut reassembler, &pipeline, &metrics, &ifnames);
                }
                _ = housekeeping.tick() => {
                    reassembler.expire(monotonic_ns());
                    let stats = reassembler.stats();
                    metrics.flows.store(reassembler.flow_count() as u64, Ordering::Relaxed);
                    metrics.reassembly_bytes.store(reassembler.buffered_bytes() as u64, Ordering::Relaxed);
                    metrics.flows_evicted.store(stats.evicted, Ordering::Relaxed);
                    let k = kernel_counters(&counters);
                    metrics.ring_drops.store(k.ring_full, Ordering::Relaxed);
                    metrics.kernel_errors.store(k.errors, Ordering::Relaxed);
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
            &pipeline,
            &metrics,
            &ifnames,
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
    pipeline: &Pipeline,
    metrics: &Metrics,
    ifnames: &HashMap<u32, String>,
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
            let origin = Origin {
                interface: ifnames.get(&h.ifindex).cloned(),
                dst_port: Some(key.dst_port),
            };
            pipeline.handle(key.src, &request, meta, &origin, Utc::now());
        });
    }
    if n > 0 {
        metrics.packets_captured.fetch_add(n, Ordering::Relaxed);
    }
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

    #[test]
    fn ifindex_of_an_unknown_name_is_none() {
        assert_eq!(ifindex("palisade-no0"), None);
        assert_eq!(ifindex("bad\0name"), None);
    }
}
