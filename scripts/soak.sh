#!/usr/bin/env bash
# scripts/soak.sh: the soak (issue 6, item 5). The `mixed` scenario at a fixed arrival rate for
# a long time while the gateway's RSS, open FDs and threads are sampled; it passes when no
# request failed and RSS and FDs stayed flat.
#
#   scripts/soak.sh                          # release build, 10 minutes, writes docs/reliability.md
#   scripts/soak.sh --duration 2h            # longer (s, m or h)
#   scripts/soak.sh --debug --duration 20s --rate 200 --no-doc --no-rss-check   # scripts/test.sh
#
# Flags: --duration D (default 10m), --rate R (requests/s, default 2000), --users N (seeded
# users, one session each, default 10000), --debug (the dev-profile binaries in target/debug,
# built only if missing, instead of a release build), --out DIR (results; default
# docs/reliability, or target/soak with --no-doc), --no-doc (do not rewrite
# docs/reliability.md, no capacity probe), --no-rss-check (report RSS without judging it: for
# runs shorter than the session cache's warm-up).
#
# Steps: release build; PostgreSQL (scripts/lib/postgres.sh: found, started or installed, and
# said); a fresh database gw_soak_<pid>, migrated and seeded; the echo upstream and one gateway
# on plain HTTP, on free loopback ports; for the document, a 10 s closed-loop capacity probe of
# `mixed` against a separate, throw-away gateway, so the soak's rate can be stated as a share
# of what this machine sustains; then `loadtest sample` on the gateway process (every second;
# every 250 ms for runs under a minute) and `loadtest run --scenario mixed --rate R` for the
# duration, open loop, with per-second intervals; then `loadtest soak-report` judges (errors,
# RSS and FD growth and slope; limits in its table) and draws docs/reliability/soak.svg.
# Everything started here is stopped by the exit trap, and the database is dropped.
#
# Exit status: 0 every check passed; 1 a check failed (named) or a step failed; 2 bad usage.
# The EXIT trap's function looks unreachable to shellcheck:
# shellcheck disable=SC2317
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
CMDLINE="scripts/soak.sh${*:+ $*}"

DURATION=10m
RATE=2000
USERS=10000
DEBUG=0
OUT=""
DOC=1
RSS_CHECK=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="${2:?--duration needs a value}"; shift 2 ;;
        --rate) RATE="${2:?--rate needs a value}"; shift 2 ;;
        --users) USERS="${2:?--users needs a value}"; shift 2 ;;
        --debug) DEBUG=1; shift ;;
        --out) OUT="${2:?--out needs a value}"; shift 2 ;;
        --no-doc) DOC=0; shift ;;
        --no-rss-check) RSS_CHECK=0; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

# Seconds of a duration written as N, Ns, Nm or Nh.
seconds_of() {
    case "$1" in
        *[!0-9smh]* | "" | [smh]*) return 1 ;;
        *h) echo $((${1%h} * 3600)) ;;
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}
SECS="$(seconds_of "$DURATION")" || { echo "--duration: $DURATION is not N, Ns, Nm or Nh" >&2; exit 2; }
[ "$SECS" -ge 10 ] || { echo "--duration must be at least 10s" >&2; exit 2; }
[[ "$RATE" =~ ^[0-9]+$ && "$RATE" -ge 10 ]] || { echo "--rate must be a whole number ≥ 10" >&2; exit 2; }
[[ "$USERS" =~ ^[0-9]+$ && "$USERS" -ge 100 ]] || { echo "--users must be a whole number ≥ 100" >&2; exit 2; }
if [ "$SECS" -ge 60 ]; then EVERY=1s; else EVERY=250ms; fi
if [ "$SECS" -gt 3600 ]; then INTERVAL=10s; else INTERVAL=1s; fi
BCRYPT_COST=4  # the seeded hashes' cost and the gateway's: cheap logins (see the document)
CONNECTIONS=16 # the load generator's keep-alive connections at most

if [ -z "$OUT" ]; then
    if [ "$DOC" = 1 ]; then OUT="$ROOT/docs/reliability"; else OUT="${CARGO_TARGET_DIR:-$ROOT/target}/soak"; fi
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -f "$OUT"/run.json "$OUT"/samples.csv "$OUT"/soak.svg "$OUT"/capacity.json

say() { printf '\n=== %s  [%s]\n' "$*" "$(date +%H:%M:%S)" >&2; }

# shellcheck source=scripts/lib/processes.sh
source scripts/lib/processes.sh
# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh

WORK="$(mktemp -d /tmp/gw-soak.XXXXXX)"
DBNAME="gw_soak_$$"
cleanup() {
    local rc=$?
    set +e
    stop_processes
    if [ -n "${DATABASE_URL:-}" ]; then
        psql "$DATABASE_URL" -X -w -q -c "DROP DATABASE IF EXISTS $DBNAME WITH (FORCE)" >/dev/null 2>&1
    fi
    if [ "${KEEP_WORK:-0}" = 1 ]; then echo "kept $WORK (KEEP_WORK=1)" >&2; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- binaries -----------------------------------------------------------------------------
PROFILE=release
[ "$DEBUG" = 0 ] || PROFILE=debug
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
GW="$BIN/gateway"
LT="$BIN/loadtest"
if [ "$PROFILE" = release ]; then
    say "building release binaries"
    cargo build --release -p gateway -p loadtest
elif [ -x "$GW" ] && [ -x "$LT" ]; then
    say "using the debug binaries in $BIN (as cargo test or cargo build left them)"
else
    say "debug binaries missing: cargo build -p gateway -p loadtest (dev profile)"
    cargo build -p gateway --bin gateway -p loadtest --bin loadtest
fi

# --- database -----------------------------------------------------------------------------
say "database $DBNAME"
ensure_postgres
create_database "$DBNAME"
DB="$(database_url_for "$DBNAME")"
GATEWAY_DATABASE__URL="$DB" "$GW" migrate up >&2
say "seeding $USERS users, one session each (bcrypt cost $BCRYPT_COST)"
# The token key before the seed: the seeded tokens carry its tag, as the gateway's do.
export GATEWAY_SESSIONS__TOKEN_KEY
GATEWAY_SESSIONS__TOKEN_KEY="$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
"$LT" seed --database-url "$DB" --users "$USERS" --sessions-per-user 1 --bcrypt-cost "$BCRYPT_COST" \
    --out "$WORK/tokens.txt" >&2

# --- processes ----------------------------------------------------------------------------
P_ECHO="$(free_port)"
say "starting the echo upstream on 127.0.0.1:$P_ECHO"
"$LT" echo --listen "127.0.0.1:$P_ECHO" >"$WORK/echo.log" 2>&1 &
PIDS+=($!)
wait_port "$P_ECHO" "echo upstream"

export GATEWAY_AUTH__SECRET GATEWAY_DATABASE__URL="$DB"
GATEWAY_AUTH__SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
for k in login_per_ip login_per_email otp_request_per_ip otp_request_per_email otp_verify_per_ip \
    otp_verify_per_email register_per_ip register_per_email magic_request_per_ip magic_request_per_email \
    session_miss_per_ip; do
    export "GATEWAY_RATE_LIMITS__${k^^}=1000000/1s"
done

# start_gateway NAME: a gateway on plain HTTP with the soak's configuration, on free ports;
# sets GW_PID, GW_PORT and GW_ADMIN.
start_gateway() {
    GW_PORT="$(free_port "$P_ECHO")"
    GW_ADMIN="$(free_port "$P_ECHO" "$GW_PORT")"
    cat >"$WORK/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$GW_ADMIN"
public_url = "http://localhost:$GW_PORT"
[auth]
bcrypt_cost = $BCRYPT_COST
[sessions]
cookie_name = "gw_session"
[log]
level = "info,access=off"
[[routes]]
path_prefix = "/public"
upstream = "http://127.0.0.1:$P_ECHO"
auth = "public"
[[routes]]
path_prefix = "/"
upstream = "http://127.0.0.1:$P_ECHO"
auth = "required"
EOF
    "$GW" serve --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_port "$GW_PORT" "gateway $1"
    wait_port "$GW_ADMIN" "gateway $1 (admin)"
}

# The load of the soak and of the capacity probe: `mixed` with its default blend, tokens
# chosen by Zipf(1), logins over all seeded users.
mixed() { # $1 target port, then more `loadtest run` flags
    local port="$1"
    shift
    "$LT" run --scenario mixed --target "http://127.0.0.1:$port/x" --public-path /public/ \
        --tokens "$WORK/tokens.txt" --zipf 1 --users "$USERS" "$@"
}

CAPACITY=""
if [ "$DOC" = 1 ]; then
    say "capacity probe: mixed, closed loop, concurrency 64, 10 s (a separate gateway)"
    GW_PID="" GW_PORT="" GW_ADMIN=""
    start_gateway probe
    mixed "$GW_PORT" --concurrency 64 --warmup 2s --duration 10s --name capacity-probe \
        --json "$OUT/capacity.json" >&2
    kill "$GW_PID"
    wait "$GW_PID" 2>/dev/null || true
    CAPACITY="$(sed -n 's/^  "throughput": \([0-9.]*\),$/\1/p' "$OUT/capacity.json" | head -n 1)"
fi

say "starting the gateway under test"
start_gateway soak
SOAK_PID="$GW_PID"

"$LT" sample --pid "$SOAK_PID" --metrics "http://127.0.0.1:$GW_ADMIN/metrics" --every "$EVERY" \
    --out "$OUT/samples.csv" >"$WORK/sample.log" 2>&1 &
SAMPLER=$!
PIDS+=("$SAMPLER")
sleep 3 # the idle process, before any load

say "soak: mixed at $RATE req/s (open loop) for $DURATION; sampling the gateway (pid $SOAK_PID) every $EVERY"
mixed "$GW_PORT" --rate "$RATE" --connections "$CONNECTIONS" --duration "${SECS}s" \
    --interval "$INTERVAL" --name soak --json "$OUT/run.json" >&2
sleep 2 # the process after the load
ALIVE=1
kill -0 "$SOAK_PID" 2>/dev/null || ALIVE=0
kill "$SAMPLER" 2>/dev/null || true # it stops by itself if the gateway is gone
wait "$SAMPLER" 2>/dev/null || true

say "judging"
REPORT_FLAGS=()
[ "$RSS_CHECK" = 1 ] || REPORT_FLAGS+=(--no-rss-check)
RC=0
"$LT" soak-report --run "$OUT/run.json" --samples "$OUT/samples.csv" --svg "$OUT/soak.svg" \
    --markdown "$WORK/figures.md" ${REPORT_FLAGS[@]+"${REPORT_FLAGS[@]}"} \
    --title "Soak: mixed at $RATE req/s for $DURATION, gateway RSS / FDs / throughput / latency" || RC=$?
if [ "$ALIVE" = 0 ]; then
    echo "soak failed: the gateway exited during the soak" >&2
    RC=1
fi
if [ "$RC" != 0 ]; then
    echo "gateway log (last 20 lines):" >&2
    tail -n 20 "$WORK/soak.log" >&2
fi

# --- the document -------------------------------------------------------------------------
if [ "$DOC" = 1 ]; then
    say "writing docs/reliability.md"
    CPU_MODEL="$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"
    MEM_TOTAL="$(awk '/^MemTotal:/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    PG_V="$(psql "$DB" -X -w -tA -c 'show server_version' 2>/dev/null || echo unknown)"
    COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    git diff --quiet HEAD -- gateway loadtest Cargo.lock 2>/dev/null || COMMIT="$COMMIT (with local changes)"
    SHARE="$(awk -v r="$RATE" -v c="$CAPACITY" 'BEGIN { if (c > 0) printf "%.0f %%", 100 * r / c; else print "an unknown share" }')"
    CAPACITY="$(awk -v c="$CAPACITY" 'BEGIN { printf "%.0f", c }')"
    REL="${OUT#"$ROOT"/docs/}"
    VERDICT="$([ "$RC" = 0 ] && echo "**pass**" || echo "**FAIL**")"
    cat >"$ROOT/docs/reliability.md" <<EOF
# Reliability: the soak

Generated by \`scripts/soak.sh\` from one run of it; every figure below comes from that run.
Verdict: $VERDICT.

Command: \`$CMDLINE\`

The gateway serves the \`mixed\` scenario at a fixed arrival rate of **$RATE requests/s for
$DURATION ($SECS s)** while its resident memory (\`VmRSS\` of \`/proc/PID/status\`), open file descriptors
(entries of \`/proc/PID/fd\`) and threads are sampled every $EVERY, and its \`/metrics\` cache and
connection gauges with them. It passes when no request failed and RSS and FDs stayed flat.

## Result

$(cat "$WORK/figures.md")

![RSS, open FDs and threads, throughput and latency per second over the soak]($REL/soak.svg)

The shaded bands are the second and the last tenth of the soak, whose medians are compared; the
red line is the least-squares fit over the second half. Time 0 is the start of the load; the
samples before it are the idle process, those after it the process once the load stopped. The
machine is shared with other work: the rows on the gateway's CPU and the machine's load average
help tell a stall of the machine from one of the gateway when latency spikes without errors.

## What it has found

The first 10-minute run (before commit 00a1351) failed: 7 of 1.2 million proxied
requests with a valid session got 401, all for one token within 5 s. A session-cache entry that
moka still handed out a moment after \`cache_ttl\` (it counts from its insertion, just after the
database read) was taken for a dead session and cached as unknown for \`negative_ttl\`. Since
00a1351 such an entry is read again (\`gateway/sessions.rs\`, with a unit test).

## What "flat" means here

Over the measured window of length L (here $DURATION):

- **errors**: not one request failed. In \`mixed\` every operation expects success (\`proxy\`,
  \`session\` and \`public\` any 2xx; \`login\` a 200 with a token; \`relogin\` that, then a 200 for
  the logout of the new session), so nothing is an intended 4xx: any other status, a timeout, a
  refused or reset connection, an unreadable answer, or a request the open loop could not send
  because 10000 were already outstanding (\`backlog\`) counts, and one of them fails the soak.
- **RSS**: the median of the last tenth of L is at most the stated percentage above the median of
  the second tenth (the first tenth is warm-up: connection pools, allocator arenas, and the
  session cache filling up to its steady state under \`sessions.cache_ttl\` = 60 s), and the
  least-squares slope of RSS over the second half of L is at most the stated MiB per minute
  (slopes are judged when that half lasts two minutes or more).
- **FDs**: the same two comparisons, with an absolute bound, on the descriptors the gateway holds
  besides its client connections: all of \`/proc/PID/fd\` less the gateway's own
  \`gateway_connections\` gauge. How many keep-alive connections a client holds is the client's
  choice (here at most $CONNECTIONS, which the gateway closes after \`header_read_timeout\` idle and the
  client reopens), while a leaked descriptor, a socket of a finished connection included, stays
  in that count. All descriptors and the gauge are in the table and the chart too. What remains
  moves with the upstream and database pools, so it is not constant either, but bounded.
- The samples must cover the window (a gap means the gateway or the sampler stopped), and the
  gateway must still run after the load.

The limits are those of \`loadtest soak-report\` (its \`--max-*\` flags), shown in the table.
The last line under it turns them into the smallest steady leak that fails the soak at this rate.

## Setup

- Gateway: \`gateway serve\`, $([ "$DEBUG" = 1 ] && echo "debug build" || echo "release build"), plain HTTP on 127.0.0.1 (no TLS: the soak is about the
  request path's resources, and \`docs/benchmarks.md\` covers TLS), default configuration except:
  routes \`/public\` (\`auth = "public"\`) and \`/\` (\`auth = "required"\`), both to the echo
  upstream; \`log.level = "info,access=off"\`; every \`rate_limits.*\` raised to 1000000/1s (every
  login comes from the one client address); \`auth.bcrypt_cost = $BCRYPT_COST\`, the seeded hashes' cost, so
  the logins of the blend stay cheap enough for the rate (the bcrypt bound itself is measured in
  \`docs/benchmarks.md\`); \`sessions.cookie_name = "gw_session"\` (no \`__Host-\` prefix over plain
  HTTP).
- Upstream: \`loadtest echo\`. Database: a fresh one, migrated, $USERS users with one session each
  (\`loadtest seed\`).
- Load: \`loadtest run --scenario mixed --rate $RATE --duration ${SECS}s --interval $INTERVAL\`, open loop
  (request i is due at i/$RATE s whatever happened before, latency counted from that due time,
  so a stall shows up in full), HTTP/1.1 keep-alive over at most $CONNECTIONS connections, the default blend
  \`proxy=90,session=5,login=3,relogin=1,public=1\`, tokens by Zipf(1) over the $USERS seeded
  sessions, logins over all $USERS users. Each login creates a session that stays; each relogin
  creates one and revokes it, which the revocation poll then sees.
- Sampler: \`loadtest sample --pid <gateway> --metrics http://127.0.0.1:<admin>/metrics --every $EVERY\`.

## The rate, and why

$RATE requests/s is **$SHARE of the $CAPACITY requests/s** that this machine sustained on the same
blend just before the soak (\`capacity.json\`: closed loop, concurrency 64, 10 s after a 2 s warm-up,
against a separate gateway process on the same configuration and database). The load
generator, the echo upstream, PostgreSQL and the gateway share the $(nproc) cores, so the rate
leaves the gateway most of its CPU as headroom (what it used is the table's "gateway CPU" row):
a soak at saturation would measure queueing, not leaks, and any hiccup would turn into timeouts. The rate is still high enough to push
$((RATE * SECS)) requests, about $((RATE * SECS * 4 / 100)) logins and $((RATE * SECS / 100)) logouts through the gateway in $DURATION.

## Machine and versions

| | |
|---|---|
| CPU | $CPU_MODEL, $(nproc) logical CPUs (\`nproc\`), shared with the load generator, the upstream and PostgreSQL |
| memory | $MEM_TOTAL |
| kernel | $(uname -sr) |
| rustc | $(rustc --version 2>/dev/null || echo unknown) |
| PostgreSQL | $PG_V |
| gateway commit | $COMMIT |

## Repeating it, and the short soak in CI

- \`scripts/soak.sh\` on a fresh Debian machine: it finds, starts or installs PostgreSQL
  (\`scripts/lib/postgres.sh\`), builds the release binaries, and rewrites this file and
  \`docs/reliability/\`. \`--duration 2h\` (or any \`Ns\`, \`Nm\`, \`Nh\`) for a longer soak, \`--rate\`,
  \`--users\`, \`--out DIR\`, \`--no-doc\`. It exits 1 when a check fails, naming it.
- \`scripts/test.sh\` (what CI runs) ends with a short soak on the debug build:
  \`scripts/soak.sh --debug --duration 20s --rate 200 --users 1000 --no-doc --no-rss-check\`. It fails on any error
  or a growth of open FDs. RSS is reported there but not judged: 20 seconds are shorter than the
  session cache's warm-up, during which RSS legitimately grows.
- Raw data: \`$REL/run.json\` (the run, with one entry per interval), \`$REL/samples.csv\` (one row
  per sample: \`$(head -n 1 "$OUT/samples.csv")\`) and \`$REL/capacity.json\`.
EOF
    # The fleet section (scripts/fleet.sh --doc) follows the soak's; keep it.
    if [ -f "$ROOT/docs/reliability/fleet.md" ]; then
        scripts/lib/fleet-doc.sh --splice "$ROOT/docs/reliability/fleet.md" "$ROOT/docs/reliability.md"
    fi
    echo "wrote docs/reliability.md and $REL/" >&2
fi

if [ "$RC" = 0 ]; then
    say "soak passed"
else
    say "soak FAILED"
fi
exit "$RC"
