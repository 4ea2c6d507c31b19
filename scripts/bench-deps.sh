#!/usr/bin/env bash
# Installs the packages only the side-by-side benchmarks need (bench/log_mode.sh,
# bench/detector_vs_modsec.sh, the inline-WAF row of bench/sensor_overhead.sh). Idempotent.
# Kept out of scripts/setup.sh so that `make test` never pays for them.
set -euo pipefail

PKGS=(
  fail2ban          # peer of comparison 1 (fail2ban-regex)
  libmodsecurity3   # peer of comparison 2
  libmodsecurity-dev
  modsecurity-crs   # OWASP CRS 3.3.x
  libnginx-mod-http-modsecurity  # nginx + ModSecurity inline, reference of bench/sensor_overhead.sh
  gcc
  pkg-config
  time              # /usr/bin/time -v for CPU seconds and peak RSS
  util-linux        # taskset
  jq
  python3
  python3-venv
  linux-perf        # optional profiling of the peers
  nats-server
)

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO=sudo

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# CrowdSec (peer of comparison 1) is NOT installed as a package: the Debian package's postinst
# registers with the online Central API (api.crowdsec.net), which a benchmark must not contact, and
# leaves dpkg half-configured when that fails offline. The replay mode only needs the binary, the
# offline hub copy and the data files the package ships, so the .deb is unpacked into a prefix.
CROWDSEC_PREFIX=${CROWDSEC_PREFIX:-/opt/palisade-bench/crowdsec}
if [[ ! -x $CROWDSEC_PREFIX/usr/bin/crowdsec ]]; then
  debs=$(mktemp -d)
  (cd "$debs" && { apt-get download crowdsec 2>/dev/null ||
    { $SUDO apt-get update -qq && apt-get download crowdsec; }; })
  $SUDO mkdir -p "$CROWDSEC_PREFIX"
  $SUDO dpkg-deb -x "$debs"/crowdsec_*.deb "$CROWDSEC_PREFIX"
  rm -rf "$debs"
fi

# The packaged services are not needed by the benchmarks: keep them from running in the background.
# shellcheck disable=SC2043 # a list: more services may join
for svc in fail2ban; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done

# Python client used to read the reports back from JetStream (bench/log_mode.sh).
VENV=${VENV:-$(cd "$(dirname "$0")/.." && pwd)/.venv}
if [[ ! -x $VENV/bin/python ]]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import nats' 2>/dev/null || "$VENV/bin/pip" install -q 'nats-py==2.9.0'
echo "bench deps ok"
