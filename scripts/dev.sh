#!/usr/bin/env bash
# scripts/dev.sh: the README's run command. Runs the gateway locally with config/dev.toml:
#
#   1. PostgreSQL (scripts/lib/postgres.sh: $DATABASE_URL, 127.0.0.1:5432, a Debian cluster,
#      or a project-local cluster in .dev/pg) and a `gateway` database on it;
#   2. cargo build (debug; DEV_RELEASE=1 for an optimized build);
#   3. gateway migrate up, and the demo user demo@example.com / demo-password-123 (role admin);
#   4. a dev secret (.dev/secret), a dev token key (.dev/token_key) and TLS files (.dev/tls,
#      by config/dev-cert.sh);
#   5. the echo upstream (loadtest echo on 127.0.0.1:9000) in the background;
#   6. gateway serve on https://localhost:8443 (admin on 127.0.0.1:9091) in the foreground.
#      Ctrl-C stops both.
#
# Environment: DATABASE_URL / GW_PG_* (see scripts/lib/postgres.sh), DEV_RELEASE=1,
# GATEWAY_AUTH__SECRET (else .dev/secret), GATEWAY_SESSIONS__TOKEN_KEY (else .dev/token_key),
# any GATEWAY_SECTION__KEY override.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"

# shellcheck source=scripts/lib/postgres.sh
source scripts/lib/postgres.sh

say() { printf '\n==> %s\n' "$*" >&2; }

config=config/dev.toml
demo_email=demo@example.com
demo_password=demo-password-123
echo_addr=127.0.0.1:9000

# --- 1. database ---------------------------------------------------------------------------
say "PostgreSQL"
ensure_postgres
create_database gateway
GATEWAY_DATABASE__URL="$(database_url_for gateway)"
export GATEWAY_DATABASE__URL
echo "database: $(_pg_redact "$GATEWAY_DATABASE__URL")" >&2

# --- 2. build ------------------------------------------------------------------------------
if [ "${DEV_RELEASE:-0}" = 1 ]; then
    say "cargo build --release --workspace"
    cargo build --release --workspace
    bin="${CARGO_TARGET_DIR:-$root/target}/release"
else
    say "cargo build --workspace (DEV_RELEASE=1 builds optimized)"
    cargo build --workspace
    bin="${CARGO_TARGET_DIR:-$root/target}/debug"
fi
gateway() { "$bin/gateway" --config "$config" "$@"; }

# --- 3. schema and demo user ---------------------------------------------------------------
say "gateway migrate up"
gateway migrate up

say "demo user"
mkdir -p .dev
if out="$(printf '%s\n' "$demo_password" |
    gateway user create --email "$demo_email" --password-stdin --role admin 2>&1)"; then
    echo "$out"
elif grep -q "already exists" <<<"$out"; then
    echo "$demo_email already exists (kept as it is)"
else
    echo "$out" >&2
    echo "error: could not create the demo user" >&2
    exit 1
fi

# --- 4. secret and TLS ---------------------------------------------------------------------
# dev_secret VAR FILE WHAT: exports VAR as set in the environment, else as kept in FILE
# (made once, 48 random bytes in base64).
dev_secret() {
    local var="$1" file="$2"
    if [ -z "${!var:-}" ]; then
        if [ ! -s "$file" ]; then
            (umask 077 && openssl rand -base64 48 | tr -d '\n' >"$file")
            echo "generated a dev $3 in $file" >&2
        fi
        printf -v "$var" '%s' "$(cat "$file")"
        export "${var?}"
    fi
}
dev_secret GATEWAY_AUTH__SECRET .dev/secret secret
dev_secret GATEWAY_SESSIONS__TOKEN_KEY .dev/token_key "token key"

say "dev TLS certificate"
config/dev-cert.sh

# --- 5. echo upstream ----------------------------------------------------------------------
echo_pid=""
gateway_pid=""
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill -TERM "$gateway_pid" 2>/dev/null || true
        wait "$gateway_pid" 2>/dev/null || true
    fi
    if [ -n "$echo_pid" ] && kill -0 "$echo_pid" 2>/dev/null; then
        kill -TERM "$echo_pid" 2>/dev/null || true
        wait "$echo_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

say "echo upstream on $echo_addr"
if port_open "$echo_addr"; then
    echo "warning: something already listens on $echo_addr; using it as the upstream" >&2
else
    "$bin/loadtest" echo --listen "$echo_addr" &
    echo_pid=$!
    for _ in $(seq 1 50); do
        port_open "$echo_addr" && break
        kill -0 "$echo_pid" 2>/dev/null || break
        sleep 0.1
    done
    if ! port_open "$echo_addr"; then
        echo "warning: loadtest echo is not listening on $echo_addr; proxied requests will get 502" >&2
    fi
fi

# --- 6. the gateway ------------------------------------------------------------------------
cat <<EOF

==> gateway

  open https://localhost:8443/ (CA: .dev/tls/ca.pem)
  demo user: $demo_email / $demo_password (role admin)
  log in from a shell:
    curl --cacert .dev/tls/ca.pem -X POST https://localhost:8443/auth/login -H 'content-type: application/json' -d '{"email":"$demo_email","password":"$demo_password"}'
  metrics and health: http://127.0.0.1:9091/metrics /healthz /readyz
  Ctrl-C stops the gateway and the echo upstream.

EOF

# In the background so that a signal to this script reaches the gateway (forwarded as
# SIGTERM: graceful shutdown) instead of waiting behind it.
"$bin/gateway" --config "$config" serve &
gateway_pid=$!
trap 'kill -TERM "$gateway_pid" 2>/dev/null || true' INT TERM
rc=0
wait "$gateway_pid" || rc=$?
while kill -0 "$gateway_pid" 2>/dev/null; do
    rc=0
    wait "$gateway_pid" || rc=$?
done
gateway_pid=""
exit "$rc"
