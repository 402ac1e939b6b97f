#!/usr/bin/env bash
# SQL-route throughput against pgbench, side by side in one run: a primary-key lookup through
# seawall (wrk, random keys) and `pgbench -S` (the same lookup, direct), with the same number
# of connections, against one throw-away PostgreSQL cluster on loopback. Bounded in time.
#
#   benches/pg.sh [seconds per run, default 10] [connections, default 8]
set -euo pipefail

duration=${1:-10}
connections=${2:-8}
. "$(dirname "$0")/common.sh" pg.sh
chmod 755 "$work"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$pg_bin/pgbench" ] || { echo "pg.sh: PostgreSQL binaries (with pgbench) are missing; run tests/run once" >&2; exit 1; }
need wrk wrk
as_pg() { "$@"; }
[ "$(id -u)" = 0 ] && as_pg() { runuser -u postgres -- "$@"; }
extra_cleanup() {
  [ -f "$work/pg/data/postmaster.pid" ] && as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true
}

cargo build --release --quiet
pg_port=$(free_port)
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
as_pg "$pg_bin/initdb" -D "$work/pg/data" -U postgres -A trust --no-sync >/dev/null
as_pg "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $pg_port -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
"$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres bench
"$pg_bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -i -s 1 -q bench >/dev/null 2>&1

start_configured_seawall seawall <<TOML
[postgres]
url = "postgres://postgres@127.0.0.1:$pg_port/bench"
pool_max = $connections
pool_min = $connections

[[routes]]
name = "account"
match = "/accounts/{aid}"
methods = ["GET"]
postgres = "SELECT abalance FROM pgbench_accounts WHERE aid = \$1::int"
params = ["aid"]
TOML
wait_http "http://127.0.0.1:$proxy/accounts/1"

cat > "$work/lookup.lua" <<'LUA'
request = function()
  return wrk.format("GET", "/accounts/" .. math.random(1, 100000))
end
LUA
wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$work/lookup.lua" "http://127.0.0.1:$proxy" >"$work/wrk.txt"
seawall_rps=$(awk '/Requests\/sec/ { print $2 }' "$work/wrk.txt")
seawall_p99=$(awk '/^ +99%/ { print $2 }' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ { print $NF }' "$work/wrk.txt")
pgbench_tps=$("$pg_bin/pgbench" -h 127.0.0.1 -p "$pg_port" -U postgres -S -n -c "$connections" -j 2 -T "$duration" bench 2>/dev/null \
  | awk '/^tps/ { print $3; exit }')

echo "primary-key lookup, ${duration}s per run, $connections connections, $(nproc) cores shared by client, seawall and PostgreSQL"
printf '%-34s %12s\n' "through seawall (wrk, HTTP + JSON)" "$seawall_rps req/s (p99 $seawall_p99, non-2xx ${non2xx:-0})"
printf '%-34s %12s\n' "pgbench -S (direct, libpq)" "$pgbench_tps tps"
awk -v a="$seawall_rps" -v b="$pgbench_tps" 'BEGIN { printf "seawall/pgbench: %.2fx\n", a / b }'
