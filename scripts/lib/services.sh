# Embedded Redis and Postgres for scripts/up and scripts/test. Sourced, not run.
# Postgres refuses to run as root, so as root it runs as the `postgres` user; its data directory
# must then be reachable by that user even when the clone sits under a 0700 home, so it lives
# under /var/tmp when the repository path is not traversable.

PG_BIN=/usr/lib/postgresql/15/bin

pg_user_prefix() {
    if [ "$(id -u)" -eq 0 ]; then echo "runuser -u postgres --"; fi
}

# pg_data_dir WANTED: prints a data directory the server's user can reach, preferring WANTED.
pg_data_dir() {
    local wanted=$1
    if [ "$(id -u)" -ne 0 ]; then echo "$wanted"; return; fi
    mkdir -p "$(dirname "$wanted")"
    if runuser -u postgres -- test -x "$(dirname "$wanted")" 2>/dev/null; then
        echo "$wanted"
    else
        local key
        key=$(printf '%s' "$wanted" | sha256sum | cut -c1-12)
        echo "/var/tmp/tickpool-$key/postgres"
    fi
}

# start_redis DIR PORT [extra args]: runs redis-server with AOF in DIR (daemonized); waits.
# Expired keys are freed off the main thread: a day's idempotency key index (one hash per
# bucket) would otherwise stall every command while it is freed. Hashes past 128 fields become
# hash tables: a listpack is searched linearly, and a bucket's balances (one field per player)
# are read and written for every bet. Sorted sets past 16 members become skiplists: a bucket's
# leaderboard `net` (one member per player) takes a ZINCRBY or ZADD per bet call and per
# settlement page, and as a listpack each scans it with a strtod per member (docs/operations.md
# §4); a player's few WebSocket sockets (`wsock`) stay listpacks. The AOF is rewritten once it
# is 256 MB and has doubled since the last rewrite, not from 64 MB (Redis's default): every
# rewrite stalls the bets for a second or more on a host without a spare core, and it costs the
# same however much was appended before it, so a larger floor means fewer stalls while the
# dataset is small, for at most ~5 s more replay at a restart (~50 MB/s). appendfsync everysec
# and no-appendfsync-on-rewrite no stay Redis's defaults: `yes` would stop fsyncing
# acknowledged bets during a rewrite (docs/operations.md §4 "AOF rewrites"; bench/README.md
# sessions 9, 16, 19 and 23). A rewrite writes its base uncompressed (rdbcompression no): LZF
# was a third of the rewrite child's CPU on find-max's dataset and half with full idempotency
# filters, for 7-16 % of the base's bytes, and a shorter child held find-max's 30,516 bets/s step
# (bench/README.md "Session 28: huge pages and the rewrite policy at find-max"); the price is
# disk, most with an empty filter (its zeros).
#
# REDIS_THP=yes puts Redis's heap on transparent huge pages: its jemalloc asks for them
# (MALLOC_CONF=thp:always; Debian's redis-server links the system jemalloc, which reads that
# name) and Redis leaves them on (`disable-thp no`; its default turns them off for itself when
# the kernel's setting is `always`). Off unless REDIS_THP=yes: docs/operations.md §4 "Huge pages
# for Redis's heap" says what it changes and costs.
start_redis() {
    local dir=$1 port=$2 thp_env=() thp_args=(); shift 2
    case ${REDIS_THP:-no} in
    yes) thp_env=("MALLOC_CONF=thp:always") thp_args=(--disable-thp no) ;;
    no) ;;
    *) die "REDIS_THP: yes or no (got '$REDIS_THP')" ;;
    esac
    mkdir -p "$dir"
    env ${thp_env[@]+"${thp_env[@]}"} redis-server --port "$port" --bind 127.0.0.1 \
        --dir "$dir" --appendonly yes --lazyfree-lazy-expire yes --hash-max-listpack-entries 128 \
        --zset-max-listpack-entries 16 --auto-aof-rewrite-min-size 256mb --rdbcompression no \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        ${thp_args[@]+"${thp_args[@]}"} "$@" ||
        die "redis-server failed to start (log: $dir/redis.log)"
    for _ in $(seq 1 100); do
        redis-cli -p "$port" PING >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "redis-server did not answer on port $port (log: $dir/redis.log)"
}

# stop_redis DIR: stops the redis-server whose pid file is in DIR and waits (10 s at most) until
# it has exited, so that a caller that returns has nothing left running.
stop_redis() {
    local dir=$1 pid
    [ -f "$dir/redis.pid" ] || return 0
    pid=$(cat "$dir/redis.pid")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$dir/redis.pid"
}

# start_redis_cluster DIR PORT MASTERS [node timeout ms]: a Redis Cluster of MASTERS masters and
# one replica each on ports PORT .. PORT+2*MASTERS-1, one AOF directory per node under DIR/<port>
# (created by redis-cli --cluster create, or restarted as it was when every node has its
# nodes.conf). Waits until every slot is served (cluster_state:ok) and every replica is in sync
# (CLUSTER SLOTS lists a replica only from then on). A small node timeout (2 s by default) makes
# a killed master's replica take over within a few seconds.
start_redis_cluster() {
    local dir=$1 port=$2 masters=$3 timeout=${4:-2000} n p nodes=()
    n=$((masters * 2))
    [ "$masters" -ge 3 ] || die "a Redis Cluster needs at least 3 masters (got $masters)"
    local again=1
    for p in $(seq "$port" $((port + n - 1))); do
        [ -s "$dir/$p/nodes.conf" ] || again=
    done
    for p in $(seq "$port" $((port + n - 1))); do
        # A cluster made earlier with these ports restarts with its data and slot assignment;
        # anything else is made afresh.
        [ -n "$again" ] || rm -rf "$dir/$p/nodes.conf" "$dir/$p/dump.rdb" "$dir/$p/appendonlydir"
        start_redis_cluster_node "$dir" "$p" "$timeout"
        nodes+=("127.0.0.1:$p")
    done
    if [ -z "$again" ]; then
        redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
            >"$dir/create.log" 2>&1 || die "redis-cli --cluster create failed (log: $dir/create.log)"
    fi
    for _ in $(seq 1 300); do
        if redis-cli -p "$port" CLUSTER INFO 2>/dev/null | grep -q '^cluster_state:ok' &&
            [ "$(redis-cli -p "$port" CLUSTER NODES 2>/dev/null | grep -c ' slave ')" -eq "$masters" ] &&
            [ "$(for p in "${nodes[@]}"; do redis-cli -p "${p#*:}" INFO replication; done 2>/dev/null |
                grep -c '^master_link_status:up')" -eq "$masters" ]; then
            return 0
        fi
        sleep 0.1
    done
    die "Redis Cluster on ports $port.. did not become ready (logs: $dir/*/redis.log)"
}

# start_redis_cluster_node DIR PORT TIMEOUT: one node of such a cluster in DIR/PORT (a node that
# was killed rejoins with its nodes.conf: a former master comes back as a replica).
start_redis_cluster_node() {
    start_redis "$1/$2" "$2" --cluster-enabled yes --cluster-config-file nodes.conf \
        --cluster-node-timeout "$3" --cluster-replica-validity-factor 0 \
        --cluster-require-full-coverage no
}

# stop_redis_cluster DIR: stops every node started by start_redis_cluster in DIR.
stop_redis_cluster() {
    local d
    for d in "$1"/*/; do
        [ -f "$d/redis.pid" ] && stop_redis "${d%/}"
    done
    return 0
}

# start_postgres DATA PORT [SERVER-OPTION...]: initialises DATA on first use (trust auth on
# loopback only) and starts the server with the options (e.g. -c name=value); prints nothing,
# dies on failure.
start_postgres() {
    local data=$1 port=$2 pre
    shift 2
    pre=$(pg_user_prefix)
    mkdir -p "$data"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$data" "$(dirname "$data")"
        chmod 0700 "$data"
    fi
    if [ ! -f "$data/PG_VERSION" ]; then
        say "initialising Postgres in $data"
        # From /: the postgres user may not be able to enter the caller's directory (a clone
        # under /root), and initdb complains when it cannot.
        (cd / && $pre "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8) \
            >"$data/../initdb.log" 2>&1 || die "initdb failed (log: $data/../initdb.log)"
    fi
    (cd / && $pre "$PG_BIN/pg_ctl" -D "$data" -l "$data/../postgres.log" -w -t 30 \
        -o "-p $port -k $(dirname "$data") -c listen_addresses=127.0.0.1 $*" start) >/dev/null ||
        die "postgres failed to start (log: $data/../postgres.log)"
}

stop_postgres() {
    local data=$1
    [ -f "$data/postmaster.pid" ] || return 0
    $(pg_user_prefix) "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1
}
