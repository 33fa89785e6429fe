# shellcheck shell=bash
# scripts/lib/processes.sh: the background processes of the load scripts (bench.sh, soak.sh):
# remember them, wait for their ports, stop them all at exit. Loopback only.
#
#   source scripts/lib/processes.sh
#   some_server --listen 127.0.0.1:9000 & PIDS+=($!)
#   wait_port 9000 "echo upstream"    # up to 10 s for 127.0.0.1:9000 to accept, else exit 1
#   port="$(free_port "$other")"      # a loopback port nothing listens on, not one of the args
#   stop_processes                    # TERM every pid in PIDS, KILL what is left after 3 s
#
# PIDS is the caller's array of the processes it started (declared here if it is not yet).

[ -n "${PIDS+set}" ] || PIDS=()

# Waits up to 10 s for 127.0.0.1:$1 to accept a connection; exits 1 naming $2 if it does not.
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "error: $2 did not listen on 127.0.0.1:$1" >&2
    exit 1
}

# Prints a port in 20000..29999 (below the kernel's ephemeral range), not among the arguments,
# on which nothing accepts connections on 127.0.0.1, starting from a random one: two scripts
# running at once get different ports unless they race for the same one in the same instant.
free_port() {
    local start i c
    start=$((RANDOM % 10000))
    for i in $(seq 0 9999); do
        c=$((20000 + (start + i) % 10000))
        case " $* " in *" $c "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$c") 2>/dev/null; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    echo "error: no free port in 20000..29999" >&2
    return 1
}

# Sends TERM to every process in PIDS, waits up to 3 s for each, then KILLs the rest.
stop_processes() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    return 0
}
