#!/usr/bin/env bash
# scripts/fleet.sh: the fleet harness (issue 17). Three gateway instances, each in its own
# network namespace with its own address, one PostgreSQL, HAProxy (Debian's) in front with
# health checks on /readyz, the echo upstream (`loadtest echo`) and the load generator
# (`loadtest run`), on a private bridge that the run creates and removes (scripts/lib/netns.sh).
# Then the scenarios, each judged pass or fail from what was measured:
#
#   mixed      sessions, logins and revocations from all three at once: the database holds
#              exactly what the load generator recorded
#   skew       gw2's wall clock 5 minutes ahead, gw3's 5 minutes behind (libfaketime):
#              expiry, revocation and one-time codes stay right (the database's clock decides)
#   netem      5% loss and 50 ms delay on every packet to and from the database: revocation
#              bound and p99 measured
#   partition  gw3 cut off from the database by a firewall rule in its namespace: it serves
#              cached sessions, 503s the rest, the balancer takes it out, the fleet serves, and
#              a revocation made meanwhile reaches it after the cut heals
#   kill9      kill -9 of gw2 under load: only its requests in flight fail (counted from
#              HAProxy's log; HAProxy resends those that may be resent, GETs), it is routed
#              around within the check interval, nothing is lost in the database
#   rolling    SIGTERM and restart of all three in turn under an open-loop load: zero failures
#
#   scripts/fleet.sh                    # every scenario, short form (about 2 minutes; CI)
#   scripts/fleet.sh --long             # longer loads (minutes; the figures in the docs)
#   scripts/fleet.sh --scenario kill9   # only these (repeat the flag)
#   scripts/fleet.sh --check            # only say what of netns/veth/bridge/nft/NFQUEUE works
#
# Flags: --long, --scenario NAME (repeatable), --release (release build; default: the dev
# profile's binaries, built when missing), --doc (write the results into docs/reliability.md
# and docs/reliability/fleet.json), --keep (keep the run's folder with the logs), --check.
#
# Needs root (network namespaces), iproute2, nftables, iptables (NFQUEUE: the kernel here has
# no sch_netem, so `loadtest netem` delays and drops), haproxy, libfaketime, curl, jq, socat
# and PostgreSQL's server binaries; scripts/test.sh installs them on CI. Everything started
# runs inside the run's namespaces and is stopped, and the namespaces deleted, by the exit
# trap whatever happens. Exit status: 0 every scenario passed, 1 one failed (named), 2 usage
# or a missing tool.
# The trap's function looks unreachable to shellcheck:
# shellcheck disable=SC2317
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
CMDLINE="scripts/fleet.sh${*:+ $*}"

# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh
# shellcheck source=scripts/lib/netns.sh
source scripts/lib/netns.sh

LONG=0
PROFILE=debug
DOC=0
KEEP=0
ONLY=()
ALL_SCENARIOS=(mixed skew netem partition kill9 rolling)
while [ $# -gt 0 ]; do
    case "$1" in
        --long) LONG=1; shift ;;
        --release) PROFILE=release; shift ;;
        --doc) DOC=1; shift ;;
        --keep) KEEP=1; shift ;;
        --scenario) ONLY+=("${2:?--scenario needs a name}"); shift 2 ;;
        --check)
            [ "$(id -u)" = 0 ] || { echo "fleet: root needed" >&2; exit 2; }
            netns_check; exit $? ;;
        -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ ${#ONLY[@]} -gt 0 ] || ONLY=("${ALL_SCENARIOS[@]}")
for s in "${ONLY[@]}"; do
    case " ${ALL_SCENARIOS[*]} " in *" $s "*) ;; *) echo "unknown scenario: $s (${ALL_SCENARIOS[*]})" >&2; exit 2 ;; esac
done

say() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() { printf 'fleet: error: %s\n' "$*" >&2; exit 2; }

# --- what the run needs ----------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "network namespaces need root (CI runs as root)"
FAKETIME_LIB=""
for f in /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
    [ -f "$f" ] && { FAKETIME_LIB="$f"; break; }
done
missing=()
for tool in ip nft iptables haproxy curl jq socat psql; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ -n "$FAKETIME_LIB" ] || missing+=("libfaketime")
PGBIN="$(_pg_bindir)" || missing+=("PostgreSQL server binaries (initdb, pg_ctl)")
[ ${#missing[@]} = 0 ] || die "missing: ${missing[*]} (Debian: apt-get install iproute2 nftables iptables haproxy faketime curl jq socat postgresql; scripts/test.sh does it on CI)"

if [ "$LONG" = 1 ]; then
    RATE=400; USERS=5000
    MIXED_SECS=300; KILL_SECS=60; CUT_SECS=30; NETEM_SECS=60
else
    RATE=150; USERS=1000
    MIXED_SECS=12; KILL_SECS=8; CUT_SECS=5; NETEM_SECS=8
fi
REVOCATION_POLL_MS=1000
ACCEPT_GRACE=1500ms     # above HAProxy's fall x inter (2 x 500 ms)

BIN="$ROOT/target/$PROFILE"
if [ "$PROFILE" = release ]; then
    say "cargo build --release (gateway, loadtest)"
    cargo build --release -p gateway -p loadtest --bins >&2
elif [ ! -x "$BIN/gateway" ] || [ ! -x "$BIN/loadtest" ]; then
    say "cargo build (gateway, loadtest)"
    cargo build -p gateway -p loadtest --bins >&2
fi

# --- the network ----------------------------------------------------------------------
DB=198.18.0.10
GW=(unused 198.18.0.11 198.18.0.12 198.18.0.13)
LB=198.18.0.20
UP=198.18.0.30
CLIENT=198.18.0.40
NETNS_PREFIX="gwf$(printf '%04x' $((RANDOM)))"
RUN="$(mktemp -d /tmp/gwfleet.XXXXXX)"
chmod 755 "$RUN"
RESULTS="$RUN/results.tsv"
: >"$RESULTS"
GW_PID=(0 0 0 0)
PIDS=()
FAILED_SCENARIOS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local p
    for p in "${GW_PID[@]}" "${PIDS[@]}"; do
        [ "$p" != 0 ] && kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${GW_PID[@]}" "${PIDS[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    done
    wait 2>/dev/null || true
    if [ -f "$RUN/pg/data/postmaster.pid" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$RUN/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    netns_down
    if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
        local keep="$ROOT/target/fleet"
        rm -rf "$keep" && mkdir -p "$keep" && cp -r "$RUN"/. "$keep"/ 2>/dev/null || true
        note "logs of the run: $keep"
    fi
    rm -rf "$RUN"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "network namespaces $NETNS_PREFIX-* on a private bridge"
netns_up db:$DB gw1:${GW[1]} gw2:${GW[2]} gw3:${GW[3]} lb:$LB up:$UP client:$CLIENT ||
    die "could not build the network (scripts/fleet.sh --check says what works here)"

# --- PostgreSQL, in the db namespace ---------------------------------------------------
say "PostgreSQL ($PGBIN) on $DB:5432, a throw-away cluster"
_pg_ensure_owner_user
mkdir -p "$RUN/pg" && chown postgres: "$RUN/pg"
runuser -u postgres -- "$PGBIN/initdb" -D "$RUN/pg/data" -U postgres --auth=trust -E UTF8 --locale=C >"$RUN/pg/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n 3 "$RUN/pg/initdb.log")"
cat >>"$RUN/pg/data/postgresql.conf" <<EOF
listen_addresses = '$DB'
port = 5432
unix_socket_directories = '$RUN/pg'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
echo "host all all 198.18.0.0/24 trust" >>"$RUN/pg/data/pg_hba.conf"
netns_exec db runuser -u postgres -- "$PGBIN/pg_ctl" -D "$RUN/pg/data" -l "$RUN/pg/postgres.log" -w start >/dev/null ||
    die "PostgreSQL did not start: $(tail -n 5 "$RUN/pg/postgres.log")"
# psql from here reaches it through its unix socket (a file: the same in every namespace).
sql() { psql -h "$RUN/pg" -U postgres -d gateway -X -q -tA -v ON_ERROR_STOP=1 -c "$1"; }
psql -h "$RUN/pg" -U postgres -d postgres -X -q -c "CREATE DATABASE gateway" >/dev/null
DBURL="postgres://postgres@$DB:5432/gateway"

in_client() { netns_exec client "$@"; }

in_client env GATEWAY_DATABASE__URL="$DBURL" "$BIN/gateway" migrate up >"$RUN/migrate.log" 2>&1 ||
    die "migrate up failed: $(tail -n 3 "$RUN/migrate.log")"
# The session tokens' tag key (sessions.token_key), shared by the three instances.
TOKEN_KEY="fleet-token-key-$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
SEEDED_MS=$(date +%s%3N)
in_client "$BIN/loadtest" seed --database-url "$DBURL" --users "$USERS" --token-key "$TOKEN_KEY" --out "$RUN/tokens.txt" >"$RUN/seed.log" 2>&1 ||
    die "seed failed: $(tail -n 3 "$RUN/seed.log")"
# The load uses the first tokens; the probes of the scenarios take theirs from the end.
LOAD_TOKENS=$((USERS - 100))
probe_token() { sed -n "$((USERS - $1))p" "$RUN/tokens.txt"; }

# --- the echo upstream, the gateways, HAProxy -------------------------------------------
ip netns exec "$(netns_name up)" "$BIN/loadtest" echo --listen "$UP:9000" >"$RUN/echo.log" 2>&1 &
PIDS+=($!)

SECRET="fleet-secret-$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
cat >"$RUN/gateway.toml" <<EOF
[server]
public_url = "https://gw.fleet.test"
shutdown_grace = "5s"
accept_grace = "$ACCEPT_GRACE"
workers = 1

[database]
url = "$DBURL"
max_connections = 16
pool_wait_timeout = "2s"
connect_timeout = "2s"
statement_timeout = "2s"

[sessions]
cookie_name = "gw_session"
revocation_poll = "${REVOCATION_POLL_MS}ms"

[auth]
bcrypt_cost = 4

[mail]
transport = "smtp"
smtp_url = "smtp://$CLIENT:2525"

[codes]
# Shorter than the 5-minute skew, so a code judged by a skewed clock would fail.
ttl = "4m"

[rate_limits]
login_per_ip = "1000000/1s"
login_per_email = "1000000/1s"
otp_request_per_ip = "1000000/1s"
otp_request_per_email = "1000000/1s"
otp_verify_per_ip = "1000000/1s"
otp_verify_per_email = "1000000/1s"
register_per_ip = "1000000/1s"
register_per_email = "1000000/1s"
magic_request_per_ip = "1000000/1s"
magic_request_per_email = "1000000/1s"
session_miss_per_ip = "1000000/1s"

[log]
level = "info,access=off"

[[routes]]
path_prefix = "/public"
upstream = "http://$UP:9000"
auth = "public"

[[routes]]
path_prefix = "/"
upstream = "http://$UP:9000"
auth = "required"
EOF

# Background processes are started with `ip netns exec` itself (not a shell function), so that
# $! is the process: ip execs the command in the namespace.
# Starts instance $1 (1..3); further arguments are environment settings (e.g. libfaketime's).
gw_start() {
    local i="$1"
    shift
    ip netns exec "$(netns_name "gw$i")" env GATEWAY_AUTH__SECRET="$SECRET" GATEWAY_SESSIONS__TOKEN_KEY="$TOKEN_KEY" \
        GATEWAY_SERVER__LISTEN="${GW[$i]}:8080" GATEWAY_SERVER__ADMIN_LISTEN="${GW[$i]}:9091" \
        "$@" "$BIN/gateway" serve --config "$RUN/gateway.toml" >>"$RUN/gw$i.log" 2>&1 &
    GW_PID[i]=$!
}

# The HTTP status of `curl ARGS...` from the client namespace (000: no answer).
status_of() { in_client curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" || true; }

# Now in milliseconds since the epoch (the machine's clock: every namespace shares it).
now_ms() { date +%s%3N; }

# Waits up to $2 seconds for instance $1's /readyz to answer 200.
gw_wait_ready() {
    local deadline=$(($(now_ms) + $2 * 1000))
    until [ "$(status_of "http://${GW[$1]}:9091/readyz")" = 200 ]; do
        [ "$(now_ms)" -lt "$deadline" ] || { note "gw$1 not ready after $2 s: $(tail -n 3 "$RUN/gw$1.log")"; return 1; }
        sleep 0.1
    done
}

cat >"$RUN/haproxy.cfg" <<EOF
global
    log stdout format raw local0 info
    stats socket $RUN/haproxy.sock mode 600 level admin
    maxconn 4096

defaults
    mode http
    log global
    # accept time (s.ms), server (the last one tried), status, termination state, total time
    # (ms), retries ("+" in front: resent to another server)
    log-format "%Ts.%ms %s %ST %tsc %Ta %rc"
    option redispatch 1
    retries 2
    # A request that dies with its server (connection refused or reset, nothing answered) is
    # sent to another one, except a POST (see the backend): it may have done its work (a
    # login) before dying.
    retry-on conn-failure empty-response
    timeout connect 1s
    timeout client 30s
    timeout server 15s
    timeout check 1s
    timeout http-keep-alive 10s

frontend fleet
    bind $LB:8080
    default_backend gateways

backend gateways
    balance roundrobin
    http-request disable-l7-retry if METH_POST
    option httpchk GET /readyz
    http-check expect status 200
    default-server check port 9091 inter 500ms fall 2 rise 2
    server gw1 ${GW[1]}:8080
    server gw2 ${GW[2]}:8080
    server gw3 ${GW[3]}:8080
EOF

# A field (scur, stot, status, ...) of server $1 in HAProxy's `show stat`.
lb_field() {
    echo "show stat" | socat - "UNIX-CONNECT:$RUN/haproxy.sock" 2>/dev/null |
        awk -F, -v srv="$1" -v want="$2" '
            NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) col[$i] = i; next }
            $1 == "gateways" && $2 == srv { print $(col[want]); exit }'
}

# Waits up to $3 seconds for HAProxy to report server $1 as $2 (UP or DOWN); prints the ms taken.
lb_wait() {
    local start deadline
    start=$(now_ms)
    deadline=$((start + $3 * 1000))
    until lb_field "$1" status | grep -q "^$2"; do
        [ "$(now_ms)" -lt "$deadline" ] || { note "HAProxy never saw $1 $2 within $3 s"; return 1; }
        sleep 0.02
    done
    echo $(($(now_ms) - start))
}

say "three gateways, the echo upstream and HAProxy"
for i in 1 2 3; do gw_start "$i"; done
for i in 1 2 3; do gw_wait_ready "$i" 30 || die "gw$i did not start"; done
ip netns exec "$(netns_name lb)" haproxy -db -f "$RUN/haproxy.cfg" >"$RUN/haproxy.log" 2>"$RUN/haproxy.err" &
PIDS+=($!)
for i in 1 2 3; do lb_wait "gw$i" UP 15 >/dev/null || die "HAProxy did not see gw$i up"; done
# The revocation poll looks back revocation_overlap (5 s) for changed users: until the seeded
# users are older than that, every poll drops their sessions from the caches again.
while [ "$(now_ms)" -lt $((SEEDED_MS + 6000)) ]; do sleep 0.2; done

# --- measuring --------------------------------------------------------------------------
# Starts `loadtest run` from the client namespace in the background: name, then its flags.
LOAD_PID=0
load_start() {
    local name="$1"
    shift
    ip netns exec "$(netns_name client)" "$BIN/loadtest" run --json "$RUN/$name.json" "$@" >"$RUN/$name.out" 2>&1 &
    LOAD_PID=$!
}
load_wait() {
    wait "$LOAD_PID" || { note "the load generator failed: $(tail -n 5 "$RUN/$1.out")"; return 1; }
}
# A jq query on the summary of run $1.
summary() { jq -r "$2" "$RUN/$1.json"; }
# The mixed blend through the balancer: rate, seconds, name, extra flags.
mixed_through_lb() {
    local rate="$1" secs="$2" name="$3"
    shift 3
    load_start "$name" --scenario mixed --target "http://$LB:8080" --tokens "$RUN/tokens.txt" \
        --token-count "$LOAD_TOKENS" --zipf 1 --users "$USERS" --rate "$rate" \
        --duration "${secs}s" --interval 1s --connections 32 --timeout 10s "$@"
}

# HAProxy's log lines (accept_s.ms server status termination total_ms) accepted from $1 ms on.
lb_log_since() { awk -v from="$1" '{ if ($1 * 1000 >= from) print }' "$RUN/haproxy.log"; }

# Sessions made and sessions revoked by logout since $1 (a database timestamp).
db_counts() {
    sql "SELECT (SELECT count(*) FROM sessions WHERE created_at >= '$1'),
                (SELECT count(*) FROM sessions WHERE revoked_at >= '$1' AND revoked_reason = 'logout')" | tr '|' ' '
}

# A fresh session of a seeded user, made in the database: its token. $1: lifetime in seconds.
session_in_db() {
    local token rnd="$RUN/token.random"
    # A token as the gateway issues it (gateway/sessions/token.rs): 32 random bytes and the
    # first 16 bytes of HMAC-SHA-256(sessions.token_key, label || random), base64url.
    head -c 32 /dev/urandom >"$rnd"
    token="gw_$({
        cat "$rnd"
        { printf 'gateway session token v1\0'; cat "$rnd"; } |
            openssl dgst -sha256 -mac HMAC -macopt "key:$TOKEN_KEY" -binary | head -c 16
    } | base64 -w0 | tr '+/' '-_' | tr -d '=')"
    sql "INSERT INTO sessions (user_id, token_hash, expires_at)
         SELECT id, sha256(convert_to('$token', 'UTF8')), now() + ($1 * INTERVAL '1 second')
         FROM users ORDER BY email LIMIT 1" >/dev/null
    echo "$token"
}

# Waits up to $3 s for `GET /probe` with token $2 on instance $1 to answer $4; prints the ms.
until_status() {
    local start deadline got
    start=$(now_ms)
    deadline=$((start + $3 * 1000))
    while true; do
        got="$(status_of -H "authorization: Bearer $2" "http://${GW[$1]}:8080/probe")"
        [ "$got" = "$4" ] && { echo $(($(now_ms) - start)); return 0; }
        [ "$(now_ms)" -lt "$deadline" ] || { echo "never (last $got)"; return 1; }
        sleep 0.05
    done
}

# --- verdicts ---------------------------------------------------------------------------
SCENARIO=""
PROBLEMS=()
FIGURES=()
begin() { SCENARIO="$1"; PROBLEMS=(); FIGURES=(); say "scenario $1: $2"; }
figure() { FIGURES+=("$1"); note "$1"; }
# expect DESCRIPTION TEST...: records a failed check unless TEST succeeds.
expect() {
    local what="$1"
    shift
    if "$@"; then note "ok: $what"; else PROBLEMS+=("$what"); note "FAILED: $what"; fi
}
finish() {
    local verdict=pass
    [ ${#PROBLEMS[@]} = 0 ] || { verdict=fail; FAILED_SCENARIOS+=("$SCENARIO"); }
    local figures problems
    figures="$(printf '%s; ' "${FIGURES[@]+"${FIGURES[@]}"}")"
    problems="$(printf '%s; ' "${PROBLEMS[@]+"${PROBLEMS[@]}"}")"
    printf '%s\t%s\t%s\t%s\n' "$SCENARIO" "$verdict" "${figures%; }" "${problems%; }" >>"$RESULTS"
    say "scenario $SCENARIO: $verdict"
}
le() { [[ "$1" =~ ^-?[0-9]+$ ]] && [ "$1" -le "$2" ]; }
eq() { [ "$1" = "$2" ]; }
# within VALUE LOW HIGH: a whole number between LOW and HIGH.
within() { [[ "$1" =~ ^-?[0-9]+$ ]] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }

# --- the scenarios ----------------------------------------------------------------------
scenario_mixed() {
    begin mixed "sessions, logins and revocations through all three for ${MIXED_SECS}s at $RATE req/s"
    local t0 i
    local -a before_stot after_stot
    t0="$(sql "SELECT now()")"
    for i in 1 2 3; do before_stot[i]=$(lb_field "gw$i" stot); done
    mixed_through_lb "$RATE" "$MIXED_SECS" mixed --mix proxy=60,session=10,login=15,relogin=10,public=5
    load_wait mixed || true
    local requests ok failed logins relogins made revoked
    requests=$(summary mixed .requests); ok=$(summary mixed .ok); failed=$((requests - ok))
    logins=$(summary mixed '.operations.login.ok'); relogins=$(summary mixed '.operations.relogin.ok')
    read -r made revoked <<<"$(db_counts "$t0")"
    figure "$requests requests, $failed failed, p99 $(summary mixed '.latency_us.p99') µs"
    figure "load generator: $logins logins + $relogins login-logout pairs; database: $made sessions made, $revoked revoked by logout"
    for i in 1 2 3; do after_stot[i]=$(lb_field "gw$i" stot); done
    figure "requests per instance: gw1 $((after_stot[1] - before_stot[1])), gw2 $((after_stot[2] - before_stot[2])), gw3 $((after_stot[3] - before_stot[3]))"
    expect "no request failed" eq "$failed" 0
    expect "sessions in the database = logins + relogins recorded ($made = $((logins + relogins)))" eq "$made" $((logins + relogins))
    expect "revocations in the database = logouts recorded ($revoked = $relogins)" eq "$revoked" "$relogins"
    for i in 1 2 3; do
        expect "gw$i served part of it" [ $((after_stot[i] - before_stot[i])) -gt 0 ]
    done
    finish
}

scenario_skew() {
    begin skew "gw2's clock 5 minutes ahead, gw3's 5 minutes behind (libfaketime)"
    local i fake
    for i in 2 3; do
        kill -TERM "${GW_PID[i]}"; wait "${GW_PID[i]}" 2>/dev/null || true
        if [ "$i" = 2 ]; then fake="+5m"; else fake="-5m"; fi
        gw_start "$i" LD_PRELOAD="$FAKETIME_LIB" FAKETIME="$fake" FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_NO_CACHE=1
    done
    for i in 2 3; do gw_wait_ready "$i" 30; lb_wait "gw$i" UP 15 >/dev/null; done
    local own date2 date3 off2 off3
    own=$(date +%s)
    # /auth/session answers 401 itself (a proxied answer would carry the upstream's Date).
    date2="$(in_client curl -s -o /dev/null -D - "http://${GW[2]}:8080/auth/session" | sed -n 's/^[Dd]ate: //p' | tr -d '\r')"
    date3="$(in_client curl -s -o /dev/null -D - "http://${GW[3]}:8080/auth/session" | sed -n 's/^[Dd]ate: //p' | tr -d '\r')"
    off2=$(($(date -d "$date2" +%s) - own)); off3=$(($(date -d "$date3" +%s) - own))
    figure "clocks by their Date headers: gw2 ${off2} s, gw3 ${off3} s off"
    expect "gw2's clock is about 5 minutes ahead" within "$off2" 290 310
    expect "gw3's clock is about 5 minutes behind" within "$off3" -310 -290

    # Expiry: a session that the database says ends in 4 s, watched on all three.
    local token expires_ms
    token="$(session_in_db 4)"
    expires_ms=$(($(now_ms) + 4000))
    for i in 1 2 3; do
        expect "gw$i accepts the session before it expires" eq "$(status_of -H "authorization: Bearer $token" "http://${GW[$i]}:8080/probe")" 200
    done
    local -a refused_at=()
    for i in 1 2 3; do refused_at[i]=never; done
    local deadline=$((expires_ms + 5000)) done=0 got
    while [ "$(now_ms)" -lt "$deadline" ] && [ "$done" -lt 3 ]; do
        done=0
        for i in 1 2 3; do
            if [ "${refused_at[i]}" = never ]; then
                got="$(status_of -H "authorization: Bearer $token" "http://${GW[$i]}:8080/probe")"
                [ "$got" = 401 ] && refused_at[i]=$(($(now_ms) - expires_ms))
            fi
            [ "${refused_at[i]}" = never ] || done=$((done + 1))
        done
        sleep 0.05
    done
    figure "expiry: refused ${refused_at[1]} / ${refused_at[2]} / ${refused_at[3]} ms after the database's expiry (gw1 / gw2 / gw3)"
    for i in 1 2 3; do
        expect "gw$i refuses the session within 1.5 s of its expiry, not before it" \
            within "${refused_at[i]}" -300 1500
    done

    # Revocation: logouts on gw1 seen by each skewed instance.
    for i in 2 3; do
        in_client "$BIN/loadtest" run --scenario revoke --target "http://${GW[1]}:8080" \
            --target2 "http://${GW[$i]}:8080" --users "$USERS" --concurrency 1 --iterations 4 \
            --duration 60s --revoke-jitter 1s --json "$RUN/skew-revoke$i.json" >"$RUN/skew-revoke$i.out" 2>&1 || true
        local failed max
        failed=$(( $(summary "skew-revoke$i" .requests) - $(summary "skew-revoke$i" .ok) ))
        max=$(summary "skew-revoke$i" '.latency_us.max / 1000 | floor')
        figure "revocation to gw$i: $(summary "skew-revoke$i" .ok) logouts, slowest seen after $max ms"
        expect "no revocation measurement failed ($failed)" eq "$failed" 0
        expect "every logout on gw1 reached gw$i within revocation_poll + 500 ms ($max ms)" within "$max" 0 $((REVOCATION_POLL_MS + 500))
    done

    # One-time codes (TTL 4 minutes by the database's clock) on each skewed instance.
    for i in 2 3; do
        in_client "$BIN/loadtest" run --scenario otp --target "http://${GW[$i]}:8080" \
            --smtp-listen "$CLIENT:2525" --users "$USERS" --concurrency 2 --iterations 6 \
            --duration 60s --json "$RUN/skew-otp$i.json" >"$RUN/skew-otp$i.out" 2>&1 || true
        local ok
        ok=$(summary "skew-otp$i" .ok)
        figure "codes on gw$i: $ok of $(summary "skew-otp$i" .requests) requested and redeemed"
        expect "codes issued and redeemed on gw$i" eq "$ok/$ok" "$(summary "skew-otp$i" .requests)/6"
    done

    for i in 2 3; do
        kill -TERM "${GW_PID[i]}"; wait "${GW_PID[i]}" 2>/dev/null || true
        gw_start "$i"
    done
    for i in 2 3; do gw_wait_ready "$i" 30; lb_wait "gw$i" UP 15 >/dev/null; done
    finish
}

scenario_netem() {
    begin netem "5% loss and 50 ms delay on every packet to and from the database, ${NETEM_SECS}s"
    netns_exec db iptables -A INPUT -p tcp --dport 5432 -j NFQUEUE --queue-num 7 --queue-bypass
    netns_exec db iptables -A OUTPUT -p tcp --sport 5432 -j NFQUEUE --queue-num 7 --queue-bypass
    ip netns exec "$(netns_name db)" "$BIN/loadtest" netem --queue 7 --delay 50ms --loss 5 >"$RUN/netem.log" 2>&1 &
    local netem=$!
    PIDS+=("$netem")
    sleep 0.5
    local rtt
    rtt=$(in_client bash -c "s=\$(date +%s%3N); psql 'postgres://postgres@$DB:5432/gateway' -X -tAq -c 'SELECT 1' >/dev/null; echo \$((\$(date +%s%3N) - s))")
    figure "one psql connection and query over the link: $rtt ms"
    # A rate the lossy link can carry: each cache miss or login waits 100 ms per round trip.
    mixed_through_lb $((RATE / 4)) "$NETEM_SECS" netem-mixed --mix proxy=85,session=5,login=5,relogin=5
    local mixed=$LOAD_PID
    in_client "$BIN/loadtest" run --scenario revoke --target "http://${GW[1]}:8080" \
        --target2 "http://${GW[3]}:8080" --users "$USERS" --concurrency 2 \
        --duration "${NETEM_SECS}s" --revoke-jitter 1s --json "$RUN/netem-revoke.json" >"$RUN/netem-revoke.out" 2>&1 || true
    LOAD_PID=$mixed
    load_wait netem-mixed || true
    kill -TERM "$netem"; wait "$netem" 2>/dev/null || true
    netns_exec db iptables -F INPUT
    netns_exec db iptables -F OUTPUT
    local failed rfailed rmax
    failed=$(( $(summary netem-mixed .requests) - $(summary netem-mixed .ok) ))
    rfailed=$(( $(summary netem-revoke .requests) - $(summary netem-revoke .ok) ))
    rmax=$(summary netem-revoke '.latency_us.max / 1000 | floor')
    figure "$(tail -n 1 "$RUN/netem.log" | sed 's/^netem: //')"
    figure "mixed through the balancer: $(summary netem-mixed .requests) requests, $failed failed, p50 $(summary netem-mixed '.latency_us.p50 / 1000 | floor') ms, p99 $(summary netem-mixed '.latency_us.p99 / 1000 | floor') ms, login p99 $(summary netem-mixed '.operations.login.latency_us.p99 / 1000 | floor') ms"
    figure "revocation gw1 → gw3: $(summary netem-revoke .ok) logouts, p50 $(summary netem-revoke '.latency_us.p50 / 1000 | floor') ms, p99 $(summary netem-revoke '.latency_us.p99 / 1000 | floor') ms, max $rmax ms"
    expect "no request through the balancer failed" eq "$failed" 0
    expect "every revocation measured ($rfailed failed)" eq "$rfailed" 0
    # The bound on such a link: a poll that stalls on lost packets is cut off by the watchdog
    # at statement_timeout + 500 ms (2.5 s), and the logout is seen by the poll after it.
    expect "revocation bound: every logout seen within 2 x revocation_poll + statement_timeout + 500 ms ($rmax ms ≤ $((2 * REVOCATION_POLL_MS + 2500)))" \
        le "$rmax" $((2 * REVOCATION_POLL_MS + 2500))
    finish
}

scenario_partition() {
    begin partition "gw3 cut off from the database for ${CUT_SECS}s (nftables rule in its namespace)"
    local cached cold t_start
    cached="$(probe_token 1)"; cold="$(probe_token 2)"
    expect "gw3 serves the session it will keep cached" eq "$(status_of -H "authorization: Bearer $cached" "http://${GW[3]}:8080/probe")" 200
    t_start=$(now_ms)
    mixed_through_lb "$RATE" $((CUT_SECS + 8)) partition
    sleep 2
    expect "gw3 still serves it just before the cut" eq "$(status_of -H "authorization: Bearer $cached" "http://${GW[3]}:8080/probe")" 200
    netns_exec gw3 nft add table inet fleet
    netns_exec gw3 nft add chain inet fleet out '{ type filter hook output priority 0; }'
    netns_exec gw3 nft add rule inet fleet out ip daddr "$DB" tcp dport 5432 drop
    local t_cut down_ms
    t_cut=$(now_ms)
    down_ms=$(lb_wait gw3 DOWN 10) || down_ms=never
    figure "HAProxy took gw3 out ${down_ms} ms after the cut (its /readyz fails, or does not answer within HAProxy's 1 s check timeout)"
    local hit miss
    hit="$(status_of -H "authorization: Bearer $cached" "http://${GW[3]}:8080/probe")"
    miss="$(status_of -H "authorization: Bearer $cold" "http://${GW[3]}:8080/probe")"
    figure "during the cut, on gw3: cached session $hit, uncached session $miss"
    expect "gw3 serves its cached session during the cut (serve_cached_when_db_down)" eq "$hit" 200
    expect "gw3 answers 503, never 401, for a session it cannot check" eq "$miss" 503
    # Revoked meanwhile, through gw1: gw3 cannot know until the cut heals.
    expect "the cached session is logged out through gw1" eq "$(in_client curl -s -o /dev/null -w '%{http_code}' -X POST -H "authorization: Bearer $cached" "http://${GW[1]}:8080/auth/logout")" 200
    sleep $((CUT_SECS > 2 ? CUT_SECS - 2 : 1))
    netns_exec gw3 nft delete table inet fleet
    local seen up_ms
    seen=$(until_status 3 "$cached" 15 401) || true
    up_ms=$(lb_wait gw3 UP 15) || up_ms=never
    figure "after the cut healed: gw3 refused the session revoked meanwhile after $seen ms, HAProxy had it back after ${up_ms} ms more"
    load_wait partition || true
    local requests failed
    requests=$(summary partition .requests); failed=$((requests - $(summary partition .ok)))
    local bad_elsewhere bad_late
    bad_elsewhere=$(lb_log_since "$t_start" | awk '$3 !~ /^2/ && $2 != "gw3"' | wc -l)
    bad_late=$(lb_log_since "$t_start" | awk -v cut="$t_cut" -v d="${down_ms/never/0}" '$3 !~ /^2/ && $1 * 1000 > cut + d + 1000' | wc -l)
    figure "through the balancer: $requests requests, $failed failed, all on gw3 before HAProxy took it out"
    expect "the revocation made during the cut reached gw3 within revocation_poll + the reply timeout ($seen ms ≤ $((REVOCATION_POLL_MS + 2500)))" \
        within "$seen" 0 $((REVOCATION_POLL_MS + 2500))
    expect "no failure on gw1 or gw2" eq "$bad_elsewhere" 0
    expect "no failure once HAProxy had taken gw3 out" eq "$bad_late" 0
    expect "HAProxy took gw3 out" [ "$down_ms" != never ]
    expect "gw3 came back" [ "$up_ms" != never ]
    finish
}

scenario_kill9() {
    begin kill9 "kill -9 of gw2 under ${RATE} req/s"
    local t0 t_start
    t0="$(sql "SELECT now()")"
    t_start=$(now_ms)
    # Proxied requests take 100 ms upstream, so that some are in flight on gw2 when it dies.
    mixed_through_lb "$RATE" "$KILL_SECS" kill9 --path /__echo/sleep/100
    sleep $((KILL_SECS / 3))
    local t_kill down_ms
    t_kill=$(now_ms)
    kill -KILL "${GW_PID[2]}"
    down_ms=$(lb_wait gw2 DOWN 10) || down_ms=never
    load_wait kill9 || true
    wait "${GW_PID[2]}" 2>/dev/null || true
    local requests ok failed spanning on_others after_down logins relogins lfail rfail made revoked
    requests=$(summary kill9 .requests); ok=$(summary kill9 .ok); failed=$((requests - ok))
    # In flight on gw2 at the kill (accepted before it, ended after it), and what HAProxy sent
    # it until it took it out (over kept-alive connections that died with it).
    local exposed resent
    # A request on gw2 is one logged with gw2, or resent ("+" retries) from it to another.
    spanning=$(lb_log_since "$t_start" | awk -v k="$t_kill" '($2 == "gw2" || $6 ~ /^\+/) && $1 * 1000 <= k && $1 * 1000 + $5 >= k' | wc -l)
    exposed=$(lb_log_since "$t_start" | awk -v k="$t_kill" -v d="${down_ms/never/0}" '($2 == "gw2" || $6 ~ /^\+/) && $1 * 1000 <= k + d && $1 * 1000 + $5 >= k' | wc -l)
    resent=$(lb_log_since "$t_start" | awk '$6 ~ /^\+/ && $3 ~ /^2/' | wc -l)
    local lb_failed
    lb_failed=$(lb_log_since "$t_start" | awk '$3 !~ /^2/' | wc -l)
    on_others=$(lb_log_since "$t_start" | awk '$3 !~ /^2/ && $2 != "gw2" && $6 !~ /^\+/' | wc -l)
    after_down=$(lb_log_since "$t_start" | awk -v k="$t_kill" -v d="${down_ms/never/0}" '$3 !~ /^2/ && $1 * 1000 > k + d' | wc -l)
    logins=$(summary kill9 .operations.login.ok); relogins=$(summary kill9 .operations.relogin.ok)
    lfail=$(( $(summary kill9 .operations.login.requests) - logins ))
    rfail=$(( $(summary kill9 .operations.relogin.requests) - relogins ))
    read -r made revoked <<<"$(db_counts "$t0")"
    figure "$requests requests, $failed failed ($(summary kill9 '[.operations | to_entries[] | select(.value.requests > .value.ok) | "\(.key) \(.value.requests - .value.ok)"] | join(", ")')); on gw2 (HAProxy's log): $spanning in flight at the kill, $exposed in flight or sent to it before it was taken out; HAProxy resent $resent requests from gw2 to another instance, all answered"
    figure "HAProxy took gw2 out $down_ms ms after the kill (checks every 500 ms, 2 failures)"
    figure "database: $made sessions made for $logins + $relogins successful logins ($lfail + $rfail failed), $revoked revoked by logout"
    expect "only requests in flight on gw2 failed ($failed failed ≤ $exposed)" within "$failed" 0 "$exposed"
    expect "the load generator's failures are the balancer's ($failed = $lb_failed)" eq "$failed" "$lb_failed"
    expect "no failure on gw1 or gw3" eq "$on_others" 0
    expect "no failure after HAProxy took gw2 out" eq "$after_down" 0
    expect "routed around within fall x inter + a check timeout (${down_ms} ms ≤ 2000)" within "$down_ms" 0 2000
    expect "every successful login is in the database" [ "$made" -ge $((logins + relogins)) -a "$made" -le $((logins + relogins + lfail + rfail)) ]
    expect "every successful logout is in the database" [ "$revoked" -ge "$relogins" -a "$revoked" -le $((relogins + rfail)) ]
    gw_start 2
    gw_wait_ready 2 30 && lb_wait gw2 UP 15 >/dev/null
    finish
}

scenario_rolling() {
    begin rolling "SIGTERM and restart of gw1, gw2, gw3 in turn under ${RATE} req/s"
    local secs=$((LONG == 1 ? 60 : 16)) t_start i
    t_start=$(now_ms)
    mixed_through_lb "$RATE" "$secs" rolling
    local load=$LOAD_PID
    sleep 2
    local restarted=0
    for i in 1 2 3; do
        local old=${GW_PID[i]} t_term down_ms exit_ms up_ms
        t_term=$(now_ms)
        kill -TERM "$old"
        down_ms=$(lb_wait "gw$i" DOWN 10) || down_ms=never
        wait "$old" 2>/dev/null || true
        exit_ms=$(($(now_ms) - t_term))
        gw_start "$i"
        gw_wait_ready "$i" 30 || true
        up_ms=$(lb_wait "gw$i" UP 15) || up_ms=never
        figure "gw$i: out of HAProxy ${down_ms} ms after SIGTERM, exited after $exit_ms ms, back in $up_ms ms after its restart"
        [ "$up_ms" != never ] && restarted=$((restarted + 1))
    done
    local t_done=$(($(now_ms) - t_start))
    LOAD_PID=$load
    load_wait rolling || true
    local requests failed
    requests=$(summary rolling .requests); failed=$((requests - $(summary rolling .ok)))
    figure "$requests requests at $RATE req/s, $failed failed, p99 $(summary rolling '.latency_us.p99 / 1000 | floor') ms, max $(summary rolling '.latency_us.max / 1000 | floor') ms"
    expect "all three restarted and back in the balancer" eq "$restarted" 3
    expect "the restarts ended within the load ($t_done ms < $((secs * 1000)) ms)" [ "$t_done" -lt $((secs * 1000)) ]
    expect "zero failed requests" eq "$failed" 0
    expect "no failure in HAProxy's log" eq "$(lb_log_since "$t_start" | awk '$3 !~ /^2/' | wc -l)" 0
    finish
}

for s in "${ONLY[@]}"; do "scenario_$s"; done

# --- the report ---------------------------------------------------------------------------
say "verdicts"
while IFS=$'\t' read -r name verdict figures problems; do
    printf '  %-10s %s%s\n' "$name" "$verdict" "${problems:+ ($problems)}" >&2
done <"$RESULTS"

if [ "$DOC" = 1 ]; then
    mkdir -p "$ROOT/docs/reliability"
    jq -R -s --arg cmd "$CMDLINE" --arg commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        --arg kernel "$(uname -r)" --arg haproxy "$(haproxy -v | head -n 1)" '
        { command: $cmd, commit: $commit, kernel: $kernel, haproxy: $haproxy,
          scenarios: [split("\n")[] | select(length > 0) | split("\t")
                      | {name: .[0], verdict: .[1], figures: (.[2] | split("; ")),
                         failed_checks: (.[3] | split("; ") | map(select(length > 0)))}] }' \
        "$RESULTS" >"$ROOT/docs/reliability/fleet.json"
    scripts/lib/fleet-doc.sh "$ROOT/docs/reliability/fleet.json" >"$ROOT/docs/reliability/fleet.md"
    scripts/lib/fleet-doc.sh --splice "$ROOT/docs/reliability/fleet.md" "$ROOT/docs/reliability.md"
    say "wrote docs/reliability/fleet.json and the fleet section of docs/reliability.md"
fi

if [ ${#FAILED_SCENARIOS[@]} -gt 0 ]; then
    echo "fleet: failed: ${FAILED_SCENARIOS[*]}" >&2
    exit 1
fi
echo "fleet: every scenario passed (${ONLY[*]})" >&2
