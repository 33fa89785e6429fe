#!/usr/bin/env bash
# scripts/test.sh: the README's test command; CI runs it through .ci/run.
#
#   scripts/test.sh                 everything: PostgreSQL, tools, fmt, clippy, tests
#   scripts/test.sh migrate         extra arguments go to `cargo test` (a filter, `-- --nocapture`)
#
# 1. a PostgreSQL server (scripts/lib/postgres.sh: $DATABASE_URL, else 127.0.0.1:5432, else a
#    Debian cluster, else a project-local cluster in .dev/pg, else apt-get as root), exported as
#    DATABASE_URL (the server's `postgres` database; the tests create their own databases);
# 2. test-time tools (ensure_test_tools below), on CI or as root only;
# 3. the module layers (scripts/check-layers.py: imports run one way, no cycle), cargo fmt
#    --check, cargo clippy -D warnings, cargo test --workspace: one dev profile for all three,
#    so the dependencies are compiled once per mode;
# 4. a 20-second soak (scripts/soak.sh --debug) on the binaries step 3 built;
# 5. the fleet scenarios in their short form (scripts/fleet.sh: three gateways behind HAProxy
#    in network namespaces; about 2 minutes), as root only: on CI a non-root run fails.
#
# Environment: DATABASE_URL and GW_PG_* (see scripts/lib/postgres.sh); CI=true (no colors,
# --locked, no incremental build); GW_SKIP_TOOLS=1 skips step 2.
# fmt, clippy and test all run even when an earlier one fails (one CI run shows every
# problem); the script exits non-zero if any step failed and always prints a timing summary.
# Functions run through step/check and the EXIT trap look unreachable to shellcheck:
# shellcheck disable=SC2317
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh

say() { printf '\n==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }

# --- timing ------------------------------------------------------------------------------
STEP_NAMES=()
STEP_TIMES=()
STEP_RESULTS=()
START_ALL=$SECONDS
CURRENT_STEP=""
CURRENT_START=0

FAILED=0

# Runs "$@" as the step named $1 and records how long it took; a failure ends the script.
step() {
    local name="$1"
    shift
    CURRENT_STEP="$name"
    CURRENT_START=$SECONDS
    say "$name"
    "$@"
    STEP_NAMES+=("$name")
    STEP_TIMES+=($((SECONDS - CURRENT_START)))
    STEP_RESULTS+=(ok)
    CURRENT_STEP=""
}

# Like step, but a failure is recorded and the script goes on to the next check.
check() {
    local name="$1" rc=0
    shift
    CURRENT_STEP="$name"
    CURRENT_START=$SECONDS
    say "$name"
    "$@" || rc=$?
    STEP_NAMES+=("$name")
    STEP_TIMES+=($((SECONDS - CURRENT_START)))
    if [ "$rc" = 0 ]; then
        STEP_RESULTS+=(ok)
    else
        STEP_RESULTS+=("FAILED (exit $rc)")
        FAILED=1
    fi
    CURRENT_STEP=""
}

summary() {
    local rc=$?
    if [ -n "$CURRENT_STEP" ]; then
        STEP_NAMES+=("$CURRENT_STEP")
        STEP_TIMES+=($((SECONDS - CURRENT_START)))
        STEP_RESULTS+=("FAILED (exit $rc)")
    fi
    printf '\n==> timing summary\n' >&2
    local i
    for i in "${!STEP_NAMES[@]}"; do
        printf '  %-34s %5ss  %s\n' "${STEP_NAMES[$i]}" "${STEP_TIMES[$i]}" "${STEP_RESULTS[$i]}" >&2
    done
    printf '  %-34s %5ss  %s\n' "total" "$((SECONDS - START_ALL))" "$([ "$rc" = 0 ] && echo ok || echo "FAILED (exit $rc)")" >&2
}
trap summary EXIT

# --- test-time tools ---------------------------------------------------------------------
# >>> ensure_test_tools: tools that later test suites need beyond cargo and PostgreSQL.
#   - aiosmtpd: the SMTP sink of the mail / OTP tests (python3 -m aiosmtpd);
#   - chromium + chromium-driver: the browser tests of the login pages (/usr/bin/chromedriver);
#   - nginx: the forward-auth test runs config/nginx-forward-auth.conf in a real nginx;
#   - curl (with HTTP/2): the early-refusal test uploads through the real curl.
#   - haproxy, faketime, iptables, nftables, socat, jq (and curl): scripts/fleet.sh (the balancer,
#     skewed clocks, the firewall rules and NFQUEUE of its scenarios, HAProxy's stats socket).
# Installed only under CI=true or as root; a failed install is a warning, and the tests that
# need a missing tool decide for themselves (skip or fail). Add new tools here.
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || return 1
    [ "$(id -u)" = 0 ] || return 1
    if [ "$APT_UPDATED" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || return 1
        APT_UPDATED=1
    fi
    # dpkg's progress goes to stdout: keep only apt's errors.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_test_tools() {
    if [ "${GW_SKIP_TOOLS:-0}" = 1 ]; then
        echo "GW_SKIP_TOOLS=1: not checking test-time tools" >&2
        return 0
    fi
    if [ "${CI:-}" != true ] && [ "$(id -u)" != 0 ]; then
        echo "not CI and not root: not installing test-time tools (aiosmtpd, chromium, chromedriver, nginx, curl)" >&2
        return 0
    fi
    if python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
        echo "aiosmtpd: present" >&2
    else
        echo "aiosmtpd: installing with pip" >&2
        PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check aiosmtpd >&2 ||
            PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
                --break-system-packages aiosmtpd >&2 ||
            apt_install python3-aiosmtpd >&2 ||
            warn "could not install aiosmtpd; the SMTP tests may be skipped or fail"
    fi
    if [ -x /usr/bin/chromedriver ]; then
        echo "chromedriver: present" >&2
    else
        echo "chromedriver: installing chromium chromium-driver with apt-get" >&2
        apt_install chromium chromium-driver >&2 ||
            warn "could not install chromium/chromium-driver; the browser tests may be skipped or fail"
    fi
    local fleet_missing=()
    command -v haproxy >/dev/null 2>&1 || fleet_missing+=(haproxy)
    compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || fleet_missing+=(faketime libfaketime)
    command -v iptables >/dev/null 2>&1 || fleet_missing+=(iptables)
    command -v nft >/dev/null 2>&1 || fleet_missing+=(nftables)
    command -v socat >/dev/null 2>&1 || fleet_missing+=(socat)
    command -v jq >/dev/null 2>&1 || fleet_missing+=(jq)
    command -v curl >/dev/null 2>&1 || fleet_missing+=(curl)
    if [ ${#fleet_missing[@]} = 0 ]; then
        echo "fleet tools (haproxy, faketime, iptables, nftables, socat, jq, curl): present" >&2
    else
        echo "fleet tools: installing ${fleet_missing[*]} with apt-get" >&2
        apt_install "${fleet_missing[@]}" >&2 ||
            warn "could not install ${fleet_missing[*]}; scripts/fleet.sh will refuse to run"
    fi
    if [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1; then
        echo "nginx: present" >&2
    else
        echo "nginx: installing with apt-get" >&2
        apt_install nginx-light >&2 || apt_install nginx >&2 ||
            warn "could not install nginx; the nginx forward-auth test may be skipped or fail"
    fi
    if command -v curl >/dev/null 2>&1 && curl --version | grep -q HTTP2; then
        echo "curl: present" >&2
    else
        echo "curl: installing with apt-get" >&2
        apt_install curl >&2 ||
            warn "could not install curl; the curl HTTP/2 test may be skipped or fail"
    fi
}
# <<< ensure_test_tools

# --- the run -----------------------------------------------------------------------------
if [ "${CI:-}" = true ]; then
    export CARGO_TERM_COLOR=never CARGO_INCREMENTAL=0 CARGO_TERM_PROGRESS_WHEN=never
    LOCKED=(--locked)
else
    LOCKED=()
fi

step "postgres" ensure_postgres
export DATABASE_URL
step "test-time tools" ensure_test_tools

say "toolchain: $(cargo --version), $(rustc --version)"
say "DATABASE_URL=$(_pg_redact "$DATABASE_URL") (via ${GW_PG_SOURCE:-?})"

check "module layers" scripts/check-layers.py
check "cargo fmt --check" cargo fmt --all -- --check
check "cargo clippy -D warnings" cargo clippy ${LOCKED[@]+"${LOCKED[@]}"} --workspace --all-targets -- -D warnings
check "cargo test --workspace" cargo test ${LOCKED[@]+"${LOCKED[@]}"} --workspace --no-fail-fast "$@"
# The short soak on the debug binaries cargo test just built (scripts/soak.sh): 20 s of `mixed`
# at 200 req/s; fails on any failed request or growing open FDs (RSS is reported, not judged).
check "short soak (20 s)" scripts/soak.sh --debug --duration 20s --rate 200 --users 1000 --no-doc --no-rss-check

# The fleet scenarios (scripts/fleet.sh, short form): network namespaces need root.
fleet_scenarios() {
    if [ "$(id -u)" != 0 ]; then
        if [ "${CI:-}" = true ]; then
            echo "error: CI must run as root: the fleet scenarios need network namespaces" >&2
            return 1
        fi
        warn "NOT RUN: the fleet scenarios need root (network namespaces); run scripts/fleet.sh as root"
        return 0
    fi
    scripts/fleet.sh
}
check "fleet scenarios (short)" fleet_scenarios
exit "$FAILED"
