//! The systemd units in config/systemd/: a static check of the hardening that must be there (always
//! runs), then `systemd-analyze verify` and `systemd-analyze security --offline=true` (exposure
//! score) where systemd-analyze is installed. The units' ExecStart binaries are pointed at a
//! temporary executable, because `verify` insists that the command exists.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use palisade_tests::workspace_root;

/// One unit file: section name -> directive -> every value in file order (directives may repeat).
#[derive(Debug, Default)]
struct Unit {
    sections: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Unit {
    fn parse(text: &str) -> Result<Unit, String> {
        let mut unit = Unit::default();
        let mut section: Option<String> = None;
        let mut pending = String::new();
        for (n, raw) in text.lines().enumerate() {
            let line = if pending.is_empty() {
                raw.trim().to_owned()
            } else {
                format!("{pending}{}", raw.trim())
            };
            // Backslash at the end continues the directive on the next line.
            if let Some(cont) = line.strip_suffix('\\') {
                pending = format!("{} ", cont.trim_end());
                continue;
            }
            pending.clear();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = Some(name.to_owned());
                unit.sections.entry(name.to_owned()).or_default();
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("line {}: not `Key=value`: {raw:?}", n + 1));
            };
            let Some(section) = &section else {
                return Err(format!("line {}: directive outside a section", n + 1));
            };
            unit.sections
                .entry(section.clone())
                .or_default()
                .entry(key.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
        Ok(unit)
    }

    /// Every value of a directive, in order.
    fn all(&self, section: &str, key: &str) -> &[String] {
        self.sections
            .get(section)
            .and_then(|s| s.get(key))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The effective (last) value of a directive.
    fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.all(section, key).last().map(String::as_str)
    }

    /// Whitespace-separated words of every value of a directive, concatenated.
    fn words(&self, section: &str, key: &str) -> Vec<String> {
        self.all(section, key)
            .iter()
            .flat_map(|v| v.split_whitespace().map(str::to_owned))
            .collect()
    }
}

fn unit_path(name: &str) -> PathBuf {
    workspace_root().join("config/systemd").join(name)
}

fn load(name: &str) -> Unit {
    let path = unit_path(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Unit::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_yes(unit: &Unit, name: &str, key: &str) {
    assert_eq!(
        unit.get("Service", key),
        Some("yes"),
        "{name}: {key}=yes is required"
    );
}

/// What both services must have: readiness and watchdog, restart, config, state, env file, and
/// the common hardening.
fn assert_common(unit: &Unit, name: &str, binary: &str, config: &str) {
    let svc = |k| unit.get("Service", k);
    assert_eq!(svc("Type"), Some("notify"), "{name}: Type=notify");
    let watchdog = svc("WatchdogSec").unwrap_or_else(|| panic!("{name}: WatchdogSec missing"));
    assert!(
        watchdog != "0" && watchdog != "infinity",
        "{name}: WatchdogSec must enable the watchdog, got {watchdog}"
    );
    assert_eq!(
        svc("Restart"),
        Some("on-failure"),
        "{name}: Restart=on-failure"
    );
    assert_eq!(
        svc("NotifyAccess"),
        Some("main"),
        "{name}: NotifyAccess=main"
    );

    let exec = svc("ExecStart").unwrap_or_else(|| panic!("{name}: ExecStart missing"));
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(
        argv.first().copied(),
        Some(binary),
        "{name}: ExecStart binary"
    );
    let config_at = argv.iter().position(|a| *a == "--config");
    assert_eq!(
        config_at.and_then(|i| argv.get(i + 1)).copied(),
        Some(config),
        "{name}: ExecStart must pass --config {config}"
    );
    assert!(
        config.starts_with("/etc/palisade/"),
        "config lives in /etc/palisade"
    );
    assert_eq!(
        unit.get("Unit", "ConditionPathExists"),
        Some(config),
        "{name}: an unconfigured fresh install is skipped, not restarted in a loop"
    );

    let env_files = unit.all("Service", "EnvironmentFile");
    assert!(
        env_files
            .iter()
            .any(|f| f.starts_with("-/etc/palisade/") && f.ends_with(".env")),
        "{name}: an optional EnvironmentFile=-/etc/palisade/*.env for secrets, got {env_files:?}"
    );
    assert!(svc("StateDirectory").is_some(), "{name}: StateDirectory");
    assert_eq!(
        svc("ConfigurationDirectory"),
        Some("palisade"),
        "{name}: ConfigurationDirectory"
    );

    for key in [
        "DynamicUser",
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ] {
        assert_yes(unit, name, key);
    }
    assert_eq!(
        svc("ProtectSystem"),
        Some("strict"),
        "{name}: ProtectSystem=strict"
    );
    assert_eq!(
        svc("SystemCallArchitectures"),
        Some("native"),
        "{name}: SystemCallArchitectures=native"
    );
    let filters = unit.all("Service", "SystemCallFilter");
    assert!(
        filters
            .first()
            .is_some_and(|f| f.split_whitespace().next() == Some("@system-service")),
        "{name}: the first SystemCallFilter must be the @system-service allow list, got {filters:?}"
    );
    assert_eq!(
        unit.get("Install", "WantedBy"),
        Some("multi-user.target"),
        "{name}: WantedBy=multi-user.target"
    );
}

#[test]
fn blocker_unit_is_hardened() {
    let name = "palisade-blocker.service";
    let unit = load(name);
    assert_common(
        &unit,
        name,
        "/usr/bin/palisade-blocker",
        "/etc/palisade/blocker.toml",
    );
    // No capability at all, neither bounding nor ambient.
    assert_eq!(
        unit.get("Service", "CapabilityBoundingSet"),
        Some(""),
        "{name}: empty CapabilityBoundingSet="
    );
    assert!(
        unit.get("Service", "AmbientCapabilities")
            .unwrap_or("")
            .is_empty(),
        "{name}: no ambient capabilities"
    );
    let mut families = unit.words("Service", "RestrictAddressFamilies");
    families.sort();
    assert_eq!(
        families,
        ["AF_INET", "AF_INET6", "AF_UNIX"],
        "{name}: RestrictAddressFamilies"
    );
    assert_yes(&unit, name, "PrivateUsers");
    assert_eq!(
        unit.get("Service", "StateDirectory"),
        Some("palisade-blocker")
    );
    let exec = unit.get("Service", "ExecStart").unwrap_or_default();
    assert!(
        exec.contains("--state-dir /var/lib/palisade-blocker"),
        "{name}: the state dir passed to the blocker must be the StateDirectory, got {exec}"
    );
}

#[test]
fn sensor_unit_has_only_the_ebpf_capabilities() {
    let name = "palisade-sensor.service";
    let unit = load(name);
    assert_common(
        &unit,
        name,
        "/usr/bin/palisade-sensor",
        "/etc/palisade/sensor.toml",
    );
    let wanted = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"];
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let mut caps = unit.words("Service", key);
        caps.sort();
        assert_eq!(caps, wanted, "{name}: {key} must be exactly {wanted:?}");
    }
    let mut families = unit.words("Service", "RestrictAddressFamilies");
    families.sort();
    assert_eq!(
        families,
        ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"],
        "{name}: RestrictAddressFamilies (AF_NETLINK for attaching)"
    );
    // bpf(2) and perf_event_open(2) are outside @system-service: they must be allowed
    // explicitly, and no later deny list may take them away again.
    let filters = unit.all("Service", "SystemCallFilter");
    let allow = filters.first().map(String::as_str).unwrap_or_default();
    for call in ["bpf", "perf_event_open"] {
        assert!(
            allow.split_whitespace().any(|w| w == call),
            "{name}: {call} must be in the allow list"
        );
    }
    for deny in filters.iter().filter(|f| f.starts_with('~')) {
        for group in ["@privileged", "@debug", "@resources"] {
            assert!(
                !deny
                    .split_whitespace()
                    .any(|w| w.trim_start_matches('~') == group),
                "{name}: denying {group} would take bpf, perf_event_open or setrlimit away"
            );
        }
    }
    assert_eq!(unit.get("Service", "LimitMEMLOCK"), Some("infinity"));
}

#[test]
fn unit_parser_handles_continuations_and_rejects_garbage() {
    let unit = Unit::parse("[Service]\nExecStart=/bin/a \\\n  --flag\nX=1\nX=2\n")
        .expect("a valid unit parses");
    assert_eq!(unit.get("Service", "ExecStart"), Some("/bin/a --flag"));
    assert_eq!(unit.all("Service", "X"), ["1", "2"]);
    assert!(Unit::parse("[Service]\nno equals sign\n").is_err());
    assert!(Unit::parse("Key=outside\n").is_err());
}

/// systemd-analyze, if installed and usable here.
fn systemd_analyze() -> Option<PathBuf> {
    let out = Command::new("systemd-analyze").arg("--version").output();
    match out {
        Ok(out) if out.status.success() => Some(PathBuf::from("systemd-analyze")),
        Ok(out) => {
            println!(
                "SKIPPED: systemd-analyze --version failed ({}); the static checks above still ran",
                out.status
            );
            None
        }
        Err(err) => {
            println!(
                "SKIPPED: systemd-analyze is not installed ({err}); install the Debian package \
                 `systemd` (scripts/setup.sh does); the static checks above still ran"
            );
            None
        }
    }
}

/// Copies both units into `dir` with ExecStart pointing at an executable stub in `dir`
/// (`verify` checks that the command exists; the real binaries are not installed here).
fn staged_units(dir: &Path) -> Vec<PathBuf> {
    let mut staged = Vec::new();
    for name in ["palisade-blocker", "palisade-sensor"] {
        let stub = dir.join(name);
        fs::write(&stub, "#!/bin/sh\nexec sleep 1\n").expect("write stub");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).expect("chmod stub");
        }
        let text = fs::read_to_string(unit_path(&format!("{name}.service"))).expect("read unit");
        let original = format!("ExecStart=/usr/bin/{name} ");
        assert!(
            text.contains(&original),
            "{name}: ExecStart=/usr/bin/{name}"
        );
        let text = text.replace(&original, &format!("ExecStart={} ", stub.display()));
        let path = dir.join(format!("{name}.service"));
        fs::write(&path, text).expect("write staged unit");
        staged.push(path);
    }
    staged
}

#[test]
fn systemd_analyze_verify_is_clean() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let units = staged_units(dir.path());
    let out = Command::new(&analyze)
        .arg("verify")
        .args(&units)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Unknown or misspelt directives are only warnings ("Unknown key ..., ignoring"): any
    // output at all is a finding.
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "systemd-analyze verify reported:\n{stdout}\n{stderr}"
    );
}

#[test]
fn systemd_analyze_verify_catches_a_misspelt_directive() {
    // The check above is only worth something if verify really complains about bad units here.
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let units = staged_units(dir.path());
    let blocker = &units[0];
    let text = fs::read_to_string(blocker).expect("read staged unit");
    fs::write(blocker, text.replace("NoNewPrivileges=", "NoNewPrivilege=")).expect("write");
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(blocker)
        .output()
        .expect("run systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NoNewPrivilege"),
        "verify did not report the misspelt key: {stderr}"
    );
}

/// Overall exposure level from `systemd-analyze security --offline=true` (0 safest, 10 worst).
fn exposure(analyze: &Path, unit: &Path) -> f64 {
    let out = Command::new(analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .output()
        .expect("run systemd-analyze security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in the output:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot read the score from {line:?}"));
    println!("{}: {}", unit.display(), line.trim());
    score
}

#[test]
fn systemd_analyze_security_exposure_is_low() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let units = staged_units(dir.path());
    // systemd rates 0-2 "OK"; the sensor pays for its three eBPF capabilities and host networking.
    let blocker = exposure(&analyze, &units[0]);
    let sensor = exposure(&analyze, &units[1]);
    assert!(blocker <= 1.5, "blocker exposure {blocker} > 1.5");
    assert!(sensor <= 2.5, "sensor exposure {sensor} > 2.5");
    assert!(
        blocker < sensor,
        "the unprivileged blocker must score better than the sensor"
    );
}
