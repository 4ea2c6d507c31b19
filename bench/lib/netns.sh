# shellcheck shell=bash
# Shared by the eBPF benchmarks (sensor_overhead.sh, sensor_flows.sh): a network namespace (the
# client side) joined to the host by a veth pair on a free private 10.199.N.0/30, the processes
# started for the run, and their removal on exit. Source it after defining log() and die().
#
#   netns_up        creates the namespace; sets NS, HOST_IF, NS_IF, HOST_ADDR, NS_ADDR
#   stop_pid PID    kill and reap PID if set (for the script's own cleanup_procs)
#   cleanup_procs   defined by the script: stops its processes; called first on exit
#   WORK            a fresh temporary directory, removed on exit

WORK="$(mktemp -d /tmp/palisade-bench.XXXXXX)"
chmod 755 "$WORK" # nginx workers run as nobody
TAG="$(printf '%x' $(( $$ % 0xfffff )))"
NS="palisade-bench-$TAG"
HOST_IF="pbh$TAG"
NS_IF="pbn$TAG"
HOST_ADDR=""
NS_ADDR=""

stop_pid() { [ -n "${1:-}" ] && kill "$1" 2>/dev/null && wait "$1" 2>/dev/null; return 0; }

netns_cleanup() {
    trap - ERR
    set +e
    declare -F cleanup_procs >/dev/null && cleanup_procs
    ip netns del "$NS" 2>/dev/null
    ip link del "$HOST_IF" 2>/dev/null
    rm -rf "$WORK"
}
trap netns_cleanup EXIT

netns_up() {
    local i n=""
    for i in $(seq 200 250); do
        if ! ip -o -4 addr show | grep -q " 10.199.$i\."; then n=$i; break; fi
    done
    [ -n "$n" ] || die "no free 10.199.N.0/30"
    HOST_ADDR="10.199.$n.2"
    NS_ADDR="10.199.$n.1"
    log "namespace $NS, veth $HOST_IF ($HOST_ADDR) <-> $NS_IF ($NS_ADDR)"
    ip netns add "$NS"
    ip link add "$HOST_IF" type veth peer name "$NS_IF"
    ip link set "$NS_IF" netns "$NS"
    ip addr add "$HOST_ADDR/30" dev "$HOST_IF"
    ip link set "$HOST_IF" up
    ip netns exec "$NS" ip addr add "$NS_ADDR/30" dev "$NS_IF"
    ip netns exec "$NS" ip link set "$NS_IF" up
    ip netns exec "$NS" ip link set lo up
}
