#!/usr/bin/env bash
# Load comparison, side by side in one run: the same small upstream (nginx answering a fixed
# 200) reached directly, through seawall as a plain proxy (a route with auditing off), and
# through seawall with every request audited at metadata level. Loopback only, bounded in time.
#
#   benches/load.sh [seconds per run, default 10] [connections, default 32]
#
# Prints requests/s and latency percentiles (wrk --latency) for each, the ratios, the audit
# events written and dropped, and seawall's peak resident memory. wrk, nginx and seawall share the machine's cores, so absolute numbers
# say more about the machine than about seawall; the ratio is the figure to compare.
set -euo pipefail

duration=${1:-10}
connections=${2:-32}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=$(mktemp -d "${TMPDIR:-/tmp}/seawall-load.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

need() {
  command -v "$1" >/dev/null && return
  [ "$(id -u)" = 0 ] || { echo "load.sh: $1 is missing (Debian package $2)" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}
need wrk wrk
need nginx nginx-light
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() {
  for _ in $(seq 1 300); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "load.sh: $1 did not come up" >&2; exit 1
}

cargo build --release --quiet

upstream_port=$(free_port)
mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
error_log stderr warn;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$upstream_port;
    location / { return 200 "hello from the upstream\n"; }
  }
}
NGINX
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx.log" &
pids+=($!)
wait_http "http://127.0.0.1:$upstream_port/"

proxy_port=$(free_port)
admin_port=$(free_port)
cat > "$work/seawall.toml" <<TOML
[server]
listen = "127.0.0.1:$proxy_port"
admin_listen = "127.0.0.1:$admin_port"

[store]
data_dir = "$work/data"

[features]
audit_trail = true

[upstreams.app]
url = "http://127.0.0.1:$upstream_port"
max_connections = 256

[[routes]]
name = "plain"
match = "/plain/*"
upstream = "app"
strip_prefix = "/plain"
audit = { level = "none" }

[[routes]]
name = "audited"
match = "/audited/*"
upstream = "app"
strip_prefix = "/audited"
audit = { level = "metadata" }
TOML
RUST_LOG=warn target/release/seawall --config "$work/seawall.toml" >"$work/seawall.log" 2>&1 &
seawall_pid=$!
pids+=($seawall_pid)
wait_http "http://127.0.0.1:$proxy_port/health/ready"

# One line per run: name rps p50 p90 p99 (latencies in ms).
measure() {
  local name=$1 url=$2
  wrk -t2 -c"$connections" -d"${duration}s" --latency "$url" >"$work/$name.wrk" 2>&1
  awk -v name="$name" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) } /^ +90%/ { p90 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /Non-2xx/ { bad = $NF }
    END { printf "%s %.0f %.3f %.3f %.3f %s\n", name, rps, p50, p90, p99, (bad == "" ? 0 : bad) }
  ' "$work/$name.wrk"
}

# Warm both paths (connection pools, page cache) before measuring.
wrk -t1 -c4 -d1s "http://127.0.0.1:$upstream_port/" >/dev/null
wrk -t1 -c4 -d1s "http://127.0.0.1:$proxy_port/plain/" >/dev/null
wrk -t1 -c4 -d1s "http://127.0.0.1:$proxy_port/audited/" >/dev/null

direct=$(measure direct "http://127.0.0.1:$upstream_port/")
# Plain and audited alternate three times and the median run of each is reported, so a
# noisy neighbour on a shared machine does not decide the comparison.
median() { sort -k2 -n | sed -n 2p; }
plain_runs=() audited_runs=()
for round in 1 2 3; do
  plain_runs+=("$(measure seawall "http://127.0.0.1:$proxy_port/plain/")")
  audited_runs+=("$(measure audited "http://127.0.0.1:$proxy_port/audited/")")
done
through=$(printf '%s\n' "${plain_runs[@]}" | median)
audited=$(printf '%s\n' "${audited_runs[@]}" | median)
peak_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$seawall_pid/status")

echo "load: ${duration}s per run (seawall and audited: median of 3 alternating runs), $connections connections, wrk -t2, $(nproc) cores shared by wrk, nginx and seawall"
printf '%-10s %12s %10s %10s %10s %10s\n' target "requests/s" "p50 ms" "p90 ms" "p99 ms" non-2xx
for row in "$direct" "$through" "$audited"; do
  set -- $row
  printf '%-10s %12s %10s %10s %10s %10s\n' "$1" "$2" "$3" "$4" "$5" "$6"
done
set -- $direct; d_rps=$2; d_p99=$5
set -- $through; s_rps=$2; s_p99=$5
set -- $audited; a_rps=$2; a_p99=$5
awk -v a="$s_rps" -v b="$d_rps" -v c="$s_p99" -v d="$d_p99" \
  'BEGIN { printf "seawall/direct: throughput %.2fx, p99 %.2fx\n", a / b, c / d }'
awk -v a="$a_rps" -v b="$s_rps" -v c="$a_p99" -v d="$s_p99" \
  'BEGIN { printf "audited/unaudited: throughput %.2fx, p99 %.2fx\n", a / b, c / d }'
metrics=$(curl -sf "http://127.0.0.1:$admin_port/metrics")
echo "audit events written: $(awk '/^seawall_audit_events_written_total/ { print $2 }' <<<"$metrics"), dropped: $(awk '/^seawall_audit_events_dropped_total/ { print $2 }' <<<"$metrics")"
echo "seawall peak resident memory: $((peak_kib / 1024)) MiB"
