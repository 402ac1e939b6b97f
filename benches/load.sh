#!/usr/bin/env bash
# Load comparison, side by side in one run, against the same small upstream (nginx answering a
# fixed 200), loopback only, bounded in time:
#
#   direct       the upstream itself
#   nginx        nginx as a plain reverse proxy with upstream keep-alive
#   hyper        the floor of seawall's stack: hyper's server and pooled client with nothing
#                between them (benches/hyper_floor.rs)
#   seawall      seawall as a plain proxy, all four features off
#   all          seawall with all four features on: a flag gating the route, rate limits high
#                enough never to refuse, the breaker closed, auditing at metadata level
#   all-noaudit  the same seawall and features on a route audited at level none
#   all-strict   the same on a route audited with durability blocking-strict (each request's
#                arrival flushed to disk before it is forwarded; concurrent ones share a flush)
#
#   benches/load.sh [seconds per run, default 10] [connections, default 32] [soak seconds, default 120]
#
# Each target runs three times, alternating, and the median run (by requests/s) is reported:
# requests/s and p50, p99, p99.9 latency (wrk's Lua summary), the CPU time the serving processes
# used per request (from /proc; nginx's covers the upstream it also serves), the ratios against nginx, audited
# against unaudited, the CPU the audit writer and sled's IO threads used per request (a steadier
# figure than whole-process CPU), audit events written and dropped, and each seawall's peak
# resident memory;
# then the all-features route alone for the soak time, and the peak memory and store size after it,
# and last the time and memory `GET /admin/audit/verify` takes over everything written.
# wrk, nginx and seawall share the machine's cores, so the ratios are the figures to compare.
set -euo pipefail

duration=${1:-10}
connections=${2:-32}
soak=${3:-120}
. "$(dirname "$0")/common.sh" load.sh
need wrk wrk
need nginx nginx-light

cargo build --release --quiet
# cargo prints where the bench binary is: `Executable benches/hyper_floor.rs (target/...)`.
cargo bench --bench hyper_floor --no-run 2>"$work/hyper_floor.build" || { cat "$work/hyper_floor.build" >&2; exit 1; }
hyper_floor=$(sed -n 's/.*Executable .*(\(.*\))$/\1/p' "$work/hyper_floor.build")

# --- the upstream and nginx as a proxy ---------------------------------------------------
upstream_port=$(free_port)
nginx_port=$(free_port)
mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
error_log stderr warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app {
    server 127.0.0.1:$upstream_port;
    keepalive 256;
  }
  server {
    listen 127.0.0.1:$upstream_port;
    location / { return 200 "hello from the upstream\n"; }
  }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" 2>"$work/nginx.log" &
track
nginx_pid=$!
wait_http "http://127.0.0.1:$upstream_port/"
wait_http "http://127.0.0.1:$nginx_port/"

# --- hyper alone ----------------------------------------------------------------------------
hyper_port=$(free_port)
"$hyper_floor" "127.0.0.1:$hyper_port" "http://127.0.0.1:$upstream_port" &
track
hyper_pid=$!
wait_http "http://127.0.0.1:$hyper_port/"

# --- two seawalls: features off, and all four on ---------------------------------------
# Called in this shell (not a subshell), so the cleanup trap knows every PID.
start_load_seawall plain ""
plain_pid=$seawall_pid plain_port=$proxy plain_admin=$admin
token=bench-admin-token-0123456789
SEAWALL_ADMIN_TOKEN=$token start_load_seawall all "$all_features"
all_pid=$seawall_pid all_port=$proxy all_admin=$admin

declare -A url=(
  [direct]="http://127.0.0.1:$upstream_port/"
  [nginx]="http://127.0.0.1:$nginx_port/"
  [hyper]="http://127.0.0.1:$hyper_port/"
  [seawall]="http://127.0.0.1:$plain_port/gated/"
  [all]="http://127.0.0.1:$all_port/gated/"
  [all-noaudit]="http://127.0.0.1:$all_port/noaudit/"
  [all-strict]="http://127.0.0.1:$all_port/strict/"
)
targets=(direct nginx hyper seawall all all-noaudit all-strict)

# Every target must answer 200 before anything is measured (the gate flag, the quotas).
for target in "${targets[@]}"; do
  status=$(curl -s -o /dev/null -w '%{http_code}' "${url[$target]}")
  [ "$status" = 200 ] || { echo "load.sh: $target answered $status" >&2; exit 1; }
done

cat > "$work/summary.lua" <<'LUA'
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %.0f %.3f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, errors, summary.requests))
end
LUA

# CPU time (clock ticks) used so far by the processes given, all their threads included.
cpu_ticks() {
  local total=0 pid fields
  for pid in "$@"; do
    read -r -a fields <"/proc/$pid/stat"
    total=$((total + fields[13] + fields[14]))
  done
  echo "$total"
}

# CPU time (clock ticks) used so far by the threads of process $1 that do the audit trail's
# writing: the writer and sled's IO threads. Whole-process CPU per request moves by 10-20%
# between runs on shared cores; these threads' share moves far less.
audit_ticks() {
  local total=0 task name fields
  for task in /proc/"$1"/task/*; do
    read -r name <"$task/comm" || continue
    case $name in audit-writer | sled-io-*) ;; *) continue ;; esac
    # The name may hold spaces, so count the fields after it from the end: utime and stime
    # are the 14th and 15th of 52.
    read -r -a fields <"$task/stat" || continue
    total=$((total + fields[${#fields[@]} - 39] + fields[${#fields[@]} - 38]))
  done
  echo "$total"
}

# The processes that serve a target: nginx (master and workers; for `direct` and `nginx` it also
# serves the upstream), or the seawall behind it.
serving() {
  case $1 in
    direct | nginx) echo "$nginx_pid" $(pgrep -P "$nginx_pid") ;;
    hyper) echo "$hyper_pid" ;;
    seawall) echo "$plain_pid" ;;
    *) echo "$all_pid" ;;
  esac
}

# One line per run: target rps p50 p99 p99.9 errors (latencies in ms), then the CPU time the
# serving processes used per request and the part of it their audit-writing threads used, in
# microseconds.
measure() {
  local target=$1 before after audit_before audit_after
  local pids=($(serving "$target"))
  before=$(cpu_ticks "${pids[@]}")
  audit_before=$(audit_ticks "${pids[0]}")
  wrk -t2 -c"$connections" -d"${duration}s" -s "$work/summary.lua" "${url[$target]}" \
    | awk '/^RESULT/ { print $2, $3, $4, $5, $6, $7 }' | {
      read -r rps p50 p99 p999 errors requests
      after=$(cpu_ticks "${pids[@]}")
      audit_after=$(audit_ticks "${pids[0]}")
      awk -v t="$target" -v r="$rps" -v a="$p50" -v b="$p99" -v c="$p999" -v e="$errors" \
        -v n="$requests" -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" \
        -v audit=$((audit_after - audit_before)) \
        'BEGIN { printf "%s %s %s %s %s %s %.1f %.1f\n", t, r, a, b, c, e, ticks / hz * 1e6 / n, audit / hz * 1e6 / n }'
    }
}

for target in "${targets[@]}"; do
  wrk -t1 -c4 -d1s "${url[$target]}" >/dev/null
done
declare -A runs=()
for round in 1 2 3; do
  for target in "${targets[@]}"; do
    runs[$target]+="$(measure "$target")"$'\n'
  done
done
declare -A row=()
for target in "${targets[@]}"; do
  row[$target]=$(printf '%s' "${runs[$target]}" | sort -k2 -n | sed -n 2p)
done

echo "load: ${duration}s per run, median of 3 alternating runs per target, $connections connections, wrk -t2; $(nproc) cores shared by wrk, nginx and seawall"
printf '%-12s %12s %9s %9s %9s %8s %12s\n' target "requests/s" "p50 ms" "p99 ms" "p99.9 ms" errors "cpu us/req"
for target in "${targets[@]}"; do
  set -- ${row[$target]}
  printf '%-12s %12s %9s %9s %9s %8s %12s\n' "$1" "$2" "$3" "$4" "$5" "$6" "$7"
done
for target in hyper seawall all; do
  set -- ${row[$target]}; t_rps=$2 t_p99=$4
  set -- ${row[nginx]}
  awk -v t="$target" -v a="$t_rps" -v b="$2" -v c="$t_p99" -v d="$4" \
    'BEGIN { printf "%-11s vs nginx: requests/s %.2fx, p99 %.2fx\n", t, a / b, c / d }'
done
# What seawall adds to its own stack: the same proxying through hyper with nothing between.
set -- ${row[seawall]}; s_rps=$2 s_p99=$4 s_cpu=$7
set -- ${row[hyper]}
awk -v a="$s_rps" -v b="$2" -v c="$s_p99" -v d="$4" -v e="$s_cpu" -v f="$7" \
  'BEGIN { printf "seawall     vs hyper: requests/s %.2fx, p99 %.2fx, CPU per request %+.1f us\n", a / b, c / d, e - f }'
set -- ${row[all]}; a_rps=$2 a_p99=$4
set -- ${row[all-noaudit]}
awk -v a="$a_rps" -v b="$2" -v c="$a_p99" -v d="$4" \
  'BEGIN { printf "audited vs unaudited (all features on): requests/s %.2fx, p99 %.2fx\n", a / b, c / d }'
set -- ${row[all]}; a_audit=$8
set -- ${row[all-noaudit]}
echo "audit writer and sled IO threads, CPU per request (all features on): audited ${a_audit} us, unaudited $8 us"
set -- ${row[all-strict]}
awk -v a="$2" -v b="$a_rps" -v c="$4" -v d="$a_p99" \
  'BEGIN { printf "blocking-strict vs batch auditing: requests/s %.2fx, p99 %.2fx\n", a / b, c / d }'
metrics=$(curl -sf "http://127.0.0.1:$all_admin/metrics")
echo "audit events written: $(awk '/^seawall_audit_events_written_total/ { print $2 }' <<<"$metrics"), dropped: $(awk '/^seawall_audit_events_dropped_total/ { print $2 }' <<<"$metrics")"
echo "peak resident memory: seawall (features off) $(peak_mib "$plain_pid") MiB, seawall (all features) $(peak_mib "$all_pid") MiB"

# Memory under sustained audited load: sled's caches and write buffers keep growing for a
# minute or more, longer than the runs above.
if [ "$soak" -gt 0 ]; then
  wrk -t2 -c"$connections" -d"${soak}s" -s "$work/summary.lua" "${url[all]}" >/dev/null
  events=$(curl -sf "http://127.0.0.1:$all_admin/metrics" | awk '/^seawall_audit_events_written_total/ { print $2 }')
  store_bytes=$(du -sb "$work/all-data/store" | cut -f1)
  echo "after ${soak}s more of audited load: seawall (all features) peak $(peak_mib "$all_pid") MiB, store $((store_bytes / 1000000)) MB on disk for $events audit events ($((store_bytes / events)) bytes each)"
fi

# Reading the whole trail back, as the scheduled verification does: its time and the memory it
# takes on top of the serving footprint.
before=$(resident_mib "$all_pid")
started=$(date +%s.%N)
verified=$(verify_trail "$all_admin" "$token")
seconds=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "verifying the trail (${verified} events) took ${seconds} s: seawall (all features) resident ${before} MiB before, peak $(peak_mib "$all_pid") MiB"
