# Shared set-up for the benchmark scripts (sourced, not run): a work directory removed on exit,
# every process started with `track` stopped by its PID on exit, free loopback ports, waiting
# for an endpoint, and tools that must be present.
#
#   . "$(dirname "$0")/common.sh" NAME    # NAME prefixes messages and the work directory
#
# A script that needs more clean-up defines `extra_cleanup` before the exit.

bench=$1
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
work=$(mktemp -d "${TMPDIR:-/tmp}/seawall-$bench.XXXXXX")
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  if declare -F extra_cleanup >/dev/null; then extra_cleanup; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Records the PID of the process just started in the background (`cmd & track`); it is stopped
# on exit. Called in the script's own shell, so the trap sees every PID.
track() { pids+=("$!"); }

# `need COMMAND PACKAGE`: installs the Debian package when running as root, else fails.
need() {
  command -v "$1" >/dev/null && return
  [ "$(id -u)" = 0 ] || { echo "$bench: $1 is missing (Debian package $2)" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# `wait_http URL [SECONDS]`: waits up to SECONDS (30) for URL to answer with a success status.
wait_http() {
  for _ in $(seq 1 $((${2:-30} * 10))); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "$bench: $1 did not come up" >&2; exit 1
}

# Starts the release seawall with its embedded defaults on free loopback ports, data in the
# work directory, and waits until it is ready. Sets `proxy`, `admin` and `token`.
start_default_seawall() {
  proxy=$(free_port)
  admin=$(free_port)
  token=bench-admin-token-0123456789
  SEAWALL_LISTEN="127.0.0.1:$proxy" SEAWALL_ADMIN_LISTEN="127.0.0.1:$admin" SEAWALL_DATA_DIR="$work/data" \
    SEAWALL_ADMIN_TOKEN=$token RUST_LOG=warn target/release/seawall >"$work/seawall.log" 2>&1 &
  track
  wait_http "http://127.0.0.1:$proxy/health/ready"
}

# `start_configured_seawall NAME <<TOML`: starts the release seawall with the sections read from
# stdin after its own `[server]` (free loopback ports) and `[store]` (`$work/NAME-data`), logging
# to `$work/NAME.log`, and waits until it is ready. Sets `proxy`, `admin` and `seawall_pid`.
# Variables set on the call (`FF_X=true start_configured_seawall ...`) reach seawall. A script
# may set `seawall_launcher` (an array) to a command seawall runs under, `seawall_start_s`
# to how long it may take to come up (30 s), and `seawall_data_dir` to put the data elsewhere.
seawall_launcher=()
start_configured_seawall() {
  local name=$1
  proxy=$(free_port)
  admin=$(free_port)
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\n\n' "$proxy" "$admin"
    printf '[store]\ndata_dir = "%s"\n\n' "${seawall_data_dir:-$work/$name-data}"
    cat
  } >"$work/$name.toml"
  RUST_LOG=warn "${seawall_launcher[@]}" target/release/seawall --config "$work/$name.toml" \
    >"$work/$name.log" 2>&1 &
  seawall_pid=$!
  track
  wait_http "http://127.0.0.1:$admin/health/ready" "${seawall_start_s:-30}"
}

# Starts nginx (one worker) answering every request with a fixed 200, on a free loopback port,
# and waits until it answers. Sets `upstream_port`.
start_upstream() {
  upstream_port=$(free_port)
  mkdir -p "$work/nginx/logs"
  cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
error_log stderr warn;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$upstream_port; location / { return 200 "hello from the upstream\n"; } }
}
NGINX
  nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx.log" &
  track
  wait_http "http://127.0.0.1:$upstream_port/"
}

# `resident_mib PID` and `peak_mib PID`: the process's resident memory now, and its peak.
resident_mib() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
peak_mib() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# `verify_trail ADMIN_PORT TOKEN`: `GET /admin/audit/verify` over every stream; prints `intact` or
# `BROKEN` and the number of events checked.
verify_trail() {
  curl -sf --max-time 300 -H "Authorization: Bearer $2" "http://127.0.0.1:$1/admin/audit/verify" |
    python3 -c 'import json, sys; r = json.load(sys.stdin); print("intact" if r["ok"] else "BROKEN", sum(s["events"] for s in r["streams"]))'
}

# The `[features]` lines that turn on all four of seawall's features.
all_features="circuit_breaker = true
enhanced_pooling = true
prioritized_rate_limit = true
audit_trail = true"

# `start_load_seawall NAME FEATURES`: the seawall the load comparisons measure, in front of the
# upstream on `$upstream_port`, with FEATURES as its `[features]` lines. Its routes, each gated
# by the flag `load-gate` (turned on here): `/gated/` audited at metadata level, `/noaudit/` at
# level none and `/strict/` with durability blocking-strict; rate limits too high to refuse.
start_load_seawall() {
  local name=$1 features=$2
  FF_LOAD_GATE=true start_configured_seawall "$name" <<TOML
[features]
$features

[ratelimit.levels.medium]
quota = 10000000
window_s = 1

[upstreams.app]
url = "http://127.0.0.1:$upstream_port"
max_connections = 256

[[routes]]
name = "gated"
match = "/gated/*"
upstream = "app"
strip_prefix = "/gated"
flag = "load-gate"
audit = { level = "metadata" }

[[routes]]
name = "noaudit"
match = "/noaudit/*"
upstream = "app"
strip_prefix = "/noaudit"
flag = "load-gate"
audit = { level = "none" }

[[routes]]
name = "strict"
match = "/strict/*"
upstream = "app"
strip_prefix = "/strict"
flag = "load-gate"
audit = { level = "metadata", durability = "blocking-strict" }
TOML
}
