# shellcheck shell=bash
# scripts/lib/netns.sh: a private network of network namespaces for scripts/fleet.sh. Needs
# root. Nothing is added to the machine's own namespace: the switch (a bridge) lives in a hub
# namespace of its own, every node in its own namespace with one veth into the hub, and the
# addresses (198.18.0.0/24, the range RFC 2544 sets aside for benchmarks) exist only there,
# so no packet of the run can leave it.
#
#   source scripts/lib/netns.sh
#   NETNS_PREFIX=gwf1a2b                 # names of this run's namespaces: gwf1a2b-hub, -db, ...
#   netns_up db:198.18.0.10 gw1:198.18.0.11 ...
#   netns_exec gw1 some-command args     # runs it in the namespace of node gw1
#   netns_down                           # KILLs what still runs in them, deletes them all
#
# netns_check says what of ip netns, veth, bridges, nftables, iptables' NFQUEUE and tc works
# here, naming what does not.

NETNS_PREFIX="${NETNS_PREFIX:-gwf$$}"
NETNS_NODES=()

_netns_say() { printf 'netns: %s\n' "$*" >&2; }

# The namespace of node $1.
netns_name() { printf '%s-%s' "$NETNS_PREFIX" "$1"; }

# Runs "$@" in node $1's namespace.
netns_exec() {
    local node="$1"
    shift
    ip netns exec "$(netns_name "$node")" "$@"
}

# Creates the hub with its bridge, then for each NODE:ADDRESS a namespace with eth0 at
# ADDRESS/24 on the bridge, and loopback up. Returns non-zero at the first failure (the caller's
# trap runs netns_down).
netns_up() {
    local hub i=0 spec node addr outer inner
    hub="$(netns_name hub)"
    ip netns add "$hub" || return 1
    NETNS_NODES+=(hub)
    ip -n "$hub" link set lo up
    ip -n "$hub" link add br0 type bridge || return 1
    ip -n "$hub" link set br0 up
    for spec in "$@"; do
        node="${spec%%:*}"
        addr="${spec#*:}"
        ip netns add "$(netns_name "$node")" || return 1
        NETNS_NODES+=("$node")
        # Both ends are made here and moved at once: no address is ever set outside the run's
        # namespaces.
        outer="${NETNS_PREFIX}v${i}h"
        inner="${NETNS_PREFIX}v${i}n"
        ip link add "$outer" type veth peer name "$inner" || return 1
        ip link set "$outer" netns "$hub" || return 1
        ip link set "$inner" netns "$(netns_name "$node")" || return 1
        ip -n "$hub" link set "$outer" master br0 up
        netns_exec "$node" ip link set "$inner" name eth0
        netns_exec "$node" ip addr add "$addr/24" dev eth0
        netns_exec "$node" ip link set eth0 up
        netns_exec "$node" ip link set lo up
        i=$((i + 1))
    done
}

# Kills whatever still runs in the run's namespaces (each by its pid) and deletes them; their
# veths and the bridge go with them. Safe to call twice and after a partial netns_up.
netns_down() {
    local node ns pid
    for node in "${NETNS_NODES[@]}"; do
        ns="$(netns_name "$node")"
        ip netns list 2>/dev/null | grep -qw "$ns" || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
    for node in "${NETNS_NODES[@]}"; do
        ns="$(netns_name "$node")"
        ip netns del "$ns" 2>/dev/null || true
    done
    NETNS_NODES=()
}

# Checks every facility the fleet harness uses in a throwaway pair of namespaces; prints one
# line per facility and returns non-zero when a required one is missing. sch_netem is not
# required: `loadtest netem` does its job through iptables' NFQUEUE.
netns_check() {
    local saved_prefix="$NETNS_PREFIX" saved_nodes=("${NETNS_NODES[@]}") ok=0
    NETNS_PREFIX="gwc$$"
    NETNS_NODES=()
    if netns_up a:198.18.0.1 b:198.18.0.2 2>/dev/null; then
        echo "ip netns, veth pairs, bridge: ok" >&2
        if netns_exec a nft add table inet gwcheck 2>/dev/null &&
            netns_exec a nft add chain inet gwcheck out '{ type filter hook output priority 0; }' 2>/dev/null &&
            netns_exec a nft add rule inet gwcheck out ip daddr 198.18.0.2 tcp dport 5432 drop 2>/dev/null; then
            echo "nftables filter rules: ok" >&2
        else
            echo "nftables filter rules: MISSING (nft from Debian's nftables; CONFIG_NF_TABLES)" >&2
            ok=1
        fi
        if netns_exec b iptables -A INPUT -p tcp --dport 5432 -j NFQUEUE --queue-num 1 --queue-bypass 2>/dev/null; then
            echo "iptables NFQUEUE target: ok" >&2
        else
            echo "iptables NFQUEUE target: MISSING (iptables from Debian; CONFIG_NETFILTER_NETLINK_QUEUE)" >&2
            ok=1
        fi
        if netns_exec a tc qdisc add dev eth0 root netem delay 50ms loss 5% 2>/dev/null; then
            echo "tc netem: ok (not needed: loadtest netem is used either way, the same on every kernel)" >&2
        else
            echo "tc netem: not in this kernel (CONFIG_NET_SCH_NETEM unset): loadtest netem does delay and loss through NFQUEUE instead" >&2
        fi
    else
        echo "ip netns / veth / bridge: MISSING (root and iproute2 needed)" >&2
        ok=1
    fi
    netns_down
    NETNS_PREFIX="$saved_prefix"
    NETNS_NODES=("${saved_nodes[@]}")
    return "$ok"
}
