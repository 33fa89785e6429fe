# shellcheck shell=bash
# scripts/lib/postgres.sh: make a PostgreSQL server available for the dev and test scripts.
#
#   source scripts/lib/postgres.sh
#   ensure_postgres                  # exports DATABASE_URL (the server's `postgres` database)
#   create_database gateway          # idempotent
#   url="$(database_url_for gateway)"
#
# ensure_postgres tries, in order, and says on stderr what it did:
#   a. $DATABASE_URL, if set (checked with pg_isready and psql; a bad one is an error);
#   b. a server on 127.0.0.1:$GW_PG_PORT (default 5432) that lets `postgres` in without a
#      password: postgres://postgres@127.0.0.1:5432/postgres;
#   -  the project-local cluster (d) if it is already running from an earlier call;
#   c. an existing Debian cluster (pg_lsclusters), started with pg_ctlcluster if it is down
#      (as root or as its owner); used when `postgres` can connect over TCP without a password,
#      otherwise stopped again if this call started it, and the next step is tried;
#   d. a project-local cluster in .dev/pg (initdb, trust auth, 127.0.0.1:$GW_PG_LOCAL_PORT,
#      default 25432, unix socket in the same folder) started with pg_ctl; as root, initdb and
#      pg_ctl run as the `postgres` user (created if missing) because initdb refuses root;
#   e. as root with nothing installed: apt-get install postgresql postgresql-client, then c/d;
#   f. otherwise it fails, saying what to install or set.
#
# Settings (environment):
#   DATABASE_URL        use this server and nothing else (step a)
#   GW_PG_PORT          port probed on 127.0.0.1 in step b (default 5432)
#   GW_PG_LOCAL=1       skip steps b and c: always use the project-local cluster (d)
#   GW_PG_LOCAL_PORT    port of the project-local cluster (default 25432)
#   GW_PG_DIR           folder of the project-local cluster (default <repo>/.dev/pg)
#   GW_PG_NO_INSTALL=1  never apt-get install (step e)
#
# Also: `stop_local_postgres` stops the project-local cluster (its data is kept);
# `GW_PG_SOURCE` is exported as url|tcp|local|cluster, naming the step that was used.
# The library sets no shell options; every function returns non-zero on failure.

_GW_PG_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
_GW_PG_REPO_ROOT="$(cd "$_GW_PG_LIB_DIR/../.." && pwd)"

_pg_say() { printf 'postgres: %s\n' "$*" >&2; }
_pg_is_root() { [ "$(id -u)" = 0 ]; }

# True when $1 (a URL) accepts a `select 1`, with no password prompt and no ~/.pgpass, the
# way the gateway itself connects.
_pg_url_works() {
    PGCONNECT_TIMEOUT=5 PGPASSFILE=/nonexistent/.pgpass PGPASSWORD='' \
        psql "$1" -X -w -q -tA -v ON_ERROR_STOP=1 -c 'select 1' >/dev/null 2>&1
}

# The error psql prints for $1, for messages (never fails).
_pg_url_error() {
    { PGCONNECT_TIMEOUT=5 PGPASSFILE=/nonexistent/.pgpass PGPASSWORD='' \
        psql "$1" -X -w -q -tA -c 'select 1' 2>&1 >/dev/null || true; } | sed -n '1,3p'
}

# Hides the password of a URL for printing.
_pg_redact() {
    printf '%s' "$1" | sed -E 's#^([a-z]+://[^:/@]*):[^@/]*@#\1:***@#'
}

# Installs the client tools (psql, pg_isready) when missing: as root with apt-get, else fail.
_pg_need_client() {
    if command -v psql >/dev/null 2>&1 && command -v pg_isready >/dev/null 2>&1; then
        return 0
    fi
    if _pg_is_root && command -v apt-get >/dev/null 2>&1 && [ "${GW_PG_NO_INSTALL:-0}" != 1 ]; then
        _pg_say "psql/pg_isready missing: installing postgresql-client with apt-get"
        _pg_apt_install postgresql-client || return 1
        return 0
    fi
    _pg_say "error: psql and pg_isready are needed (Debian/Ubuntu: apt-get install postgresql-client;"
    _pg_say "       macOS: brew install libpq && brew link --force libpq)"
    return 1
}

_pg_apt_install() {
    # dpkg's progress goes to stdout: keep only apt's errors.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Replaces the database name of DATABASE_URL (or of $2) with $1, keeping the query string.
database_url_for() {
    local name="$1" url="${2:-${DATABASE_URL:-}}"
    if [ -z "$name" ] || [ -z "$url" ]; then
        _pg_say "error: database_url_for NAME needs DATABASE_URL (run ensure_postgres first)"
        return 1
    fi
    local query="" base="$url"
    case "$url" in *\?*) query="?${url#*\?}"; base="${url%%\?*}" ;; esac
    local scheme="${base%%://*}" rest="${base#*://}"
    local authority="${rest%%/*}"
    printf '%s://%s/%s%s\n' "$scheme" "$authority" "$name" "$query"
}

# Creates database $1 on the DATABASE_URL server unless it exists (safe to repeat and to race).
create_database() {
    local name="$1"
    if [ -z "$name" ] || [ -z "${DATABASE_URL:-}" ]; then
        _pg_say "error: create_database NAME needs DATABASE_URL (run ensure_postgres first)"
        return 1
    fi
    local sql="SELECT format('CREATE DATABASE %I', :'name')
               WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'name') \\gexec"
    if ! printf '%s\n' "$sql" | PGPASSFILE=/nonexistent/.pgpass psql "$DATABASE_URL" -X -w -q -v ON_ERROR_STOP=1 -v name="$name" >/dev/null 2>&1; then
        # A concurrent creator may have won the race: only its absence is an error.
        if [ "$(PGPASSFILE=/nonexistent/.pgpass psql "$DATABASE_URL" -X -w -tA -v name="$name" \
            <<<"SELECT 1 FROM pg_database WHERE datname = :'name'" 2>/dev/null)" != 1 ]; then
            _pg_say "error: cannot create database $name on $(_pg_redact "$DATABASE_URL")"
            return 1
        fi
    fi
    return 0
}

# --- step d: the project-local cluster ---------------------------------------------------

_pg_local_port() { printf '%s' "${GW_PG_LOCAL_PORT:-25432}"; }
_pg_local_url() { printf 'postgres://postgres@127.0.0.1:%s/postgres' "$(_pg_local_port)"; }

# The folder of the local cluster. As root it must be usable by the `postgres` user; when a
# parent folder shuts it out (a checkout under /root), a folder under /var/tmp is used instead.
_pg_local_dir() {
    printf '%s' "${GW_PG_DIR:-$_GW_PG_REPO_ROOT/.dev/pg}"
}

# The newest PostgreSQL bin folder that has initdb and pg_ctl, or nothing.
_pg_bindir() {
    local d
    d="$(for c in /usr/lib/postgresql/*/bin; do
        [ -x "$c/initdb" ] && [ -x "$c/pg_ctl" ] && printf '%s\n' "$c"
    done | sort -V | tail -n 1)"
    if [ -z "$d" ] && [ -x /usr/local/pgsql/bin/initdb ] && [ -x /usr/local/pgsql/bin/pg_ctl ]; then
        d=/usr/local/pgsql/bin
    fi
    if [ -z "$d" ] && command -v initdb >/dev/null 2>&1; then
        d="$(dirname "$(readlink -f "$(command -v initdb)")")"
        [ -x "$d/pg_ctl" ] || d=""
    fi
    [ -n "$d" ] && printf '%s' "$d"
}

# The OS user that owns and runs the local cluster.
_pg_local_owner() {
    if _pg_is_root; then printf 'postgres'; else id -un; fi
}

# Runs a command as the local cluster's owner.
_pg_as_owner() {
    if _pg_is_root; then
        # From /, which the postgres user can always read (the checkout may be private).
        if command -v runuser >/dev/null 2>&1; then
            (cd / && runuser -u postgres -- "$@")
        else
            (cd / && su -s /bin/sh postgres -c "$(printf '%q ' "$@")")
        fi
    else
        "$@"
    fi
}

_pg_ensure_owner_user() {
    _pg_is_root || return 0
    id -u postgres >/dev/null 2>&1 && return 0
    _pg_say "creating the system user 'postgres' to run the local cluster (initdb refuses root)"
    if command -v useradd >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin postgres
    else
        adduser --system --group --no-create-home --home /nonexistent postgres
    fi
}

# True when the local cluster in $1 answers on its port.
_pg_local_running() {
    local dir="$1"
    [ -f "$dir/data/postmaster.pid" ] &&
        pg_isready -q -h 127.0.0.1 -p "$(_pg_local_port)" -t 2 >/dev/null 2>&1
}

# Prepares the folder for the local cluster and prints it (may move it as root; see above).
_pg_local_prepare_dir() {
    local dir
    dir="$(_pg_local_dir)"
    mkdir -p "$dir" || return 1
    if _pg_is_root; then
        chown postgres: "$dir" || return 1
        chmod 700 "$dir"
        if ! _pg_as_owner test -w "$dir" -a -x "$dir"; then
            local key
            key="$(printf '%s' "$dir" | cksum | cut -d' ' -f1)"
            local alt="/var/tmp/gateway-dev-pg-$key"
            _pg_say "the postgres user cannot reach $dir (a parent folder is private): using $alt"
            printf '%s\n' "$alt" >"$dir/MOVED_TO" 2>/dev/null || true
            dir="$alt"
            if ! { mkdir -p "$dir" && chown postgres: "$dir" && chmod 700 "$dir"; }; then
                return 1
            fi
        fi
    fi
    printf '%s' "$dir"
}

_pg_local_start() {
    local bindir dir port owner
    bindir="$(_pg_bindir)" || return 1
    _pg_ensure_owner_user || return 1
    dir="$(_pg_local_prepare_dir)" || return 1
    port="$(_pg_local_port)"
    owner="$(_pg_local_owner)"
    local data="$dir/data" log="$dir/postgres.log"

    if _pg_local_running "$dir"; then
        _pg_say "reusing the project-local cluster in $data (already running on 127.0.0.1:$port)"
        return 0
    fi

    if [ -f "$data/PG_VERSION" ]; then
        local have want
        have="$(cat "$data/PG_VERSION")"
        want="$("$bindir/pg_ctl" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')"
        if [ "$have" != "$want" ]; then
            _pg_say "error: $data was made by PostgreSQL $have but the binaries found are $want ($bindir);"
            _pg_say "       delete $dir to recreate it (it holds only dev/test data)"
            return 1
        fi
        _pg_say "reusing the project-local cluster in $data (PostgreSQL $have, owner $owner)"
    else
        if [ -d "$data" ] && [ -n "$(ls -A "$data" 2>/dev/null)" ]; then
            _pg_say "error: $data is not empty but holds no cluster (a failed initdb?); delete it and rerun"
            return 1
        fi
        _pg_say "creating a project-local cluster in $data with $bindir/initdb (owner $owner, trust auth)"
        if ! _pg_as_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
            _pg_say "error: initdb failed; its output:"
            sed 's/^/    /' "$dir/initdb.log" >&2
            return 1
        fi
        # The socket lives next to the data unless that path is too long for a unix socket.
        local sockdir="$dir"
        [ "${#sockdir}" -gt 90 ] && sockdir=""
        # A throwaway dev/test cluster: durability is traded for speed (never use these
        # settings for data you want to keep).
        _pg_as_owner tee -a "$data/postgresql.conf" >/dev/null <<EOF

# --- added by scripts/lib/postgres.sh: project-local dev/test cluster ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sockdir'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fi

    if pg_isready -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1; then
        _pg_say "error: another server already listens on 127.0.0.1:$port; set GW_PG_LOCAL_PORT to a free port"
        return 1
    fi
    _pg_say "starting it on 127.0.0.1:$port (log: $log)"
    _pg_as_owner touch "$log" 2>/dev/null || true
    # 25432 lies in Linux's ephemeral port range (32768-60999): an outgoing connection that
    # happened to use it blocks the bind until its TIME_WAIT ends (60 s). Wait that out.
    local attempt size
    for attempt in $(seq 1 36); do
        size="$(wc -c <"$log" 2>/dev/null || echo 0)"
        if _pg_as_owner "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 -o "-p $port" start >/dev/null 2>&1; then
            return 0
        fi
        if [ "$attempt" -lt 36 ] && tail -c +"$((size + 1))" "$log" | grep -q "Address already in use"; then
            [ "$attempt" = 1 ] && _pg_say "127.0.0.1:$port is held by another socket (often a closing outgoing connection); retrying for up to 70 s"
            sleep 2
            continue
        fi
        break
    done
    _pg_say "error: pg_ctl start failed; the end of $log:"
    tail -n 20 "$log" | sed 's/^/    /' >&2
    _pg_say "(if the port is taken, choose another with GW_PG_LOCAL_PORT)"
    return 1
}

# Stops the project-local cluster if it runs (its data stays in .dev/pg).
stop_local_postgres() {
    local bindir dir
    bindir="$(_pg_bindir)" || { _pg_say "no PostgreSQL binaries found"; return 1; }
    dir="$(_pg_local_dir)"
    [ -f "$dir/MOVED_TO" ] && dir="$(cat "$dir/MOVED_TO")"
    if [ ! -f "$dir/data/postmaster.pid" ]; then
        _pg_say "the project-local cluster in $dir/data is not running"
        return 0
    fi
    _pg_say "stopping the project-local cluster in $dir/data"
    _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
}

# --- step c: Debian clusters -------------------------------------------------------------

# Tries each Debian cluster, newest version first; prints the URL of the one that works.
_pg_try_debian_clusters() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 1
    local ver name port status owner rest url started
    while read -r ver name port status owner rest; do
        [ -n "$ver" ] || continue
        url="postgres://postgres@127.0.0.1:$port/postgres"
        started=0
        case "$status" in
            online*) ;;
            *)
                if ! _pg_is_root && [ "$owner" != "$(id -un)" ]; then
                    _pg_say "Debian cluster $ver/$name is down and belongs to $owner: cannot start it as $(id -un)"
                    continue
                fi
                _pg_say "starting Debian cluster $ver/$name on port $port: pg_ctlcluster --skip-systemctl-redirect $ver $name start"
                if ! pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >&2; then
                    _pg_say "could not start cluster $ver/$name"
                    continue
                fi
                started=1
                local tries=0
                until pg_isready -q -h 127.0.0.1 -p "$port" -t 2 >/dev/null 2>&1 || [ "$tries" -ge 20 ]; do
                    sleep 0.5
                    tries=$((tries + 1))
                done
                ;;
        esac
        if _pg_url_works "$url"; then
            [ "$started" = 1 ] || _pg_say "Debian cluster $ver/$name is already running on port $port"
            printf '%s' "$url"
            return 0
        fi
        _pg_say "Debian cluster $ver/$name does not let 'postgres' in over TCP without a password ($(_pg_url_error "$url" | sed -n 1p)); not changing its pg_hba.conf"
        if [ "$started" = 1 ]; then
            _pg_say "stopping cluster $ver/$name again"
            pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" stop >&2 || true
        fi
    done < <(pg_lsclusters -h 2>/dev/null | sort -t' ' -k1,1 -V -r)
    return 1
}

# --- the entry point ---------------------------------------------------------------------

_pg_use() {
    export DATABASE_URL="$1"
    export GW_PG_SOURCE="$2"
    _pg_say "using $(_pg_redact "$DATABASE_URL")"
}

ensure_postgres() {
    _pg_need_client || return 1

    # a. An explicit URL: use it or fail; never start anything else behind the caller's back.
    if [ -n "${DATABASE_URL:-}" ]; then
        local shown
        shown="$(_pg_redact "$DATABASE_URL")"
        _pg_say "DATABASE_URL is set: checking $shown"
        if ! PGCONNECT_TIMEOUT=5 pg_isready -q -d "$DATABASE_URL" -t 5 >/dev/null 2>&1; then
            _pg_say "error: the server of DATABASE_URL ($shown) does not answer (pg_isready); start it or unset DATABASE_URL"
            return 1
        fi
        if ! _pg_url_works "$DATABASE_URL"; then
            _pg_say "error: cannot run a query on DATABASE_URL ($shown):"
            _pg_url_error "$DATABASE_URL" | sed 's/^/    /' >&2 || true
            return 1
        fi
        _pg_use "$DATABASE_URL" url
        return 0
    fi

    local port="${GW_PG_PORT:-5432}" url
    if [ "${GW_PG_LOCAL:-0}" != 1 ]; then
        # b. A server already listening on the usual port.
        url="postgres://postgres@127.0.0.1:$port/postgres"
        if pg_isready -q -h 127.0.0.1 -p "$port" -t 3 >/dev/null 2>&1; then
            if _pg_url_works "$url"; then
                _pg_say "found a server on 127.0.0.1:$port"
                _pg_use "$url" tcp
                return 0
            fi
            _pg_say "a server answers on 127.0.0.1:$port but 'postgres' cannot log in without a password: $(_pg_url_error "$url" | sed -n 1p)"
        else
            _pg_say "nothing answers on 127.0.0.1:$port"
        fi

        # d, early: the project-local cluster from an earlier run, still running.
        local dir
        dir="$(_pg_local_dir)"
        [ -f "$dir/MOVED_TO" ] && dir="$(cat "$dir/MOVED_TO")"
        if _pg_local_running "$dir" && _pg_url_works "$(_pg_local_url)"; then
            _pg_say "reusing the project-local cluster in $dir/data (already running on 127.0.0.1:$(_pg_local_port))"
            _pg_use "$(_pg_local_url)" local
            return 0
        fi

        # c. A Debian cluster.
        if url="$(_pg_try_debian_clusters)"; then
            _pg_use "$url" cluster
            return 0
        fi
    else
        _pg_say "GW_PG_LOCAL=1: using the project-local cluster"
    fi

    # d. Binaries without a usable server: a project-local cluster.
    if ! _pg_bindir >/dev/null; then
        # e. Nothing installed: install it as root.
        if _pg_is_root && command -v apt-get >/dev/null 2>&1 && [ "${GW_PG_NO_INSTALL:-0}" != 1 ]; then
            _pg_say "no PostgreSQL server found: installing postgresql with apt-get (as root)"
            _pg_apt_install postgresql postgresql-client || {
                _pg_say "error: apt-get install postgresql failed"
                return 1
            }
            if [ "${GW_PG_LOCAL:-0}" != 1 ] && url="$(_pg_try_debian_clusters)"; then
                _pg_use "$url" cluster
                return 0
            fi
        fi
    fi
    if _pg_bindir >/dev/null; then
        if _pg_local_start && _pg_url_works "$(_pg_local_url)"; then
            _pg_use "$(_pg_local_url)" local
            return 0
        fi
        _pg_say "error: the project-local cluster did not come up (see the messages above)"
        return 1
    fi

    # f. Nothing worked.
    _pg_say "error: no PostgreSQL server is available and none could be started. Either:"
    _pg_say "  - set DATABASE_URL=postgres://USER[:PASSWORD]@HOST:PORT/postgres (a role that may CREATE DATABASE),"
    _pg_say "  - start a server on 127.0.0.1:$port that lets 'postgres' in without a password, or"
    _pg_say "  - install PostgreSQL (Debian/Ubuntu: sudo apt-get install postgresql; macOS: brew install postgresql@16)"
    _pg_say "    and run this again: it creates a private cluster in .dev/pg."
    return 1
}
