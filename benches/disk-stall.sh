#!/usr/bin/env bash
# The data volume stops answering under audited load: does proxying go on, does the audit queue
# keep to its byte budget, are the lost events counted and noticed, and does the writer catch up
# and leave an intact chain once the disk is back? Loopback only, bounded in time, needs root.
#
#   benches/disk-stall.sh [stall seconds, default 4] [seconds of load before it, default 20]
#
# seawall (all four features, the route audited at metadata level, benches/common.sh) keeps its
# data directory on a small ext4 file system of its own, loop-mounted in the work directory; its
# log stays off it, as on Fly, where logs go to stdout. `fsfreeze` stalls that file system as a
# disk in trouble does: every write and fsync to it blocks until it is thawed. Measured with wrk
# against the same nginx upstream: requests/s and p99 before, during and after the stall, the
# audit queue's peak (sampled every 0.1 s), events dropped and the `sys.audit.events_dropped`
# notice, how long after the thaw the queue emptied, flushes that took over a second, peak
# resident memory, and `GET /admin/audit/verify` afterwards with the memory it took.
set -euo pipefail

stall=${1:-4}
before=${2:-20}
after=10
. "$(dirname "$0")/common.sh" disk-stall.sh
[ "$(id -u)" = 0 ] || { echo "disk-stall.sh: needs root (mount, fsfreeze)" >&2; exit 1; }
need wrk wrk
need nginx nginx-light
need fsfreeze util-linux
need mkfs.ext4 e2fsprogs

volume=$work/volume
frozen=
# A frozen file system must be thawed before anything else: seawall's shutdown flushes to it,
# and a process blocked on it cannot be waited for.
thaw() {
  if [ -n "$frozen" ]; then
    fsfreeze -u "$volume"
    frozen=
  fi
}
extra_cleanup() { umount "$volume" 2>/dev/null || true; }
trap 'thaw; cleanup' EXIT INT TERM

cargo build --release --quiet

# Sparse: about 1 KB per audited request is written at saturation.
truncate -s 8G "$work/volume.img"
mkfs.ext4 -q -F "$work/volume.img"
mkdir -p "$volume"
mount -o loop "$work/volume.img" "$volume"

start_upstream

token=bench-admin-token-0123456789
seawall_data_dir=$volume/data SEAWALL_ADMIN_TOKEN=$token start_load_seawall stalled "$all_features"
url="http://127.0.0.1:$proxy/gated/"
metrics_url="http://127.0.0.1:$admin/metrics"

cat >"$work/summary.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("%.0f %.3f\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(99) / 1000))
end
LUA
# `load SECONDS`: prints requests/s and p99 (ms) of SECONDS of load on the audited route.
load() { wrk -t2 -c32 -d"$1s" -s "$work/summary.lua" "$url" | tail -1; }
metric() { curl -s --max-time 1 "$metrics_url" | awk -v m="$1" '$1 == m { print $2 }'; }

# Samples: time, queue bytes, events dropped, resident KiB. A scrape that takes longer than its
# bound leaves a gap, which the summary reports.
sample() {
  while :; do
    local now scrape
    now=$(date +%s.%N)
    scrape=$(curl -s --max-time 1 "$metrics_url" || true)
    awk -v t="$now" -v rss="$(awk '/VmRSS/ { print $2 }' "/proc/$seawall_pid/status")" '
      $1 == "seawall_audit_queue_bytes" { q = $2 }
      $1 == "seawall_audit_events_dropped_total" { d = $2 }
      END { printf "%s %s %s %s\n", t, (q == "" ? "-" : q), (d == "" ? "-" : d), rss }' <<<"$scrape"
    sleep 0.1
  done
}
sample >"$work/samples" &
track

read -r rps_before p99_before < <(load "$before")
dropped_before=$(metric seawall_audit_events_dropped_total)
fsfreeze -f "$volume"
frozen=1
frozen_at=$(date +%s.%N)
read -r rps_stall p99_stall < <(load "$stall")
thaw
thawed_at=$(date +%s.%N)
read -r rps_after p99_after < <(load "$after")

# The writer catches up: the queue empties (bounded wait).
for _ in $(seq 1 600); do
  [ "$(metric seawall_audit_queue_bytes)" -lt 1048576 ] && break
  sleep 0.1
done
dropped=$(($(metric seawall_audit_events_dropped_total) - dropped_before))
written=$(metric seawall_audit_events_written_total)
slow_flushes=$(curl -s "$metrics_url" | awk '
  /^seawall_audit_flush_seconds_bucket\{le="1"\}/ { le1 = $2 }
  /^seawall_audit_flush_seconds_count/ { n = $2 }
  END { print n - le1 }')
notices=$(curl -s -H "Authorization: Bearer $token" \
  "http://127.0.0.1:$admin/admin/audit/events?stream=system&type=sys.audit.events_dropped&limit=100" |
  python3 -c 'import json, sys; print(len(json.load(sys.stdin)["events"]))')
peak_through_stall=$(peak_mib "$seawall_pid") rss_before_verify=$(resident_mib "$seawall_pid")
verify=$(verify_trail "$admin" "$token" | awk '{ print $1, $2, "events" }')
echo "disk stall: ${stall}s with the data volume frozen, after ${before}s of audited load; $(nproc) cores shared by wrk, nginx and seawall"
printf '%-8s %12s %9s\n' phase "requests/s" "p99 ms"
printf '%-8s %12s %9s\n' before "$rps_before" "$p99_before" stall "$rps_stall" "$p99_stall" after "$rps_after" "$p99_after"
awk -v from="$frozen_at" -v to="$thawed_at" '
  $2 != "-" && $2 > peak { peak = $2 }
  $4 > rss { rss = $4 }
  $1 >= from && $1 <= to { during++; if ($2 == "-") gaps++ }
  $1 > to && $2 != "-" && $2 < 1048576 && !empty { empty = $1 - to }
  END {
    printf "audit queue peak: %.1f MiB (budget: audit.queue_mb)\n", peak / 1048576
    printf "metrics scrapes during the stall: %d, %d of them unanswered within 1 s\n", during, gaps
    printf "queue empty again %.1f s after the thaw\n", empty
    printf "peak resident memory (sampled): %.1f MiB\n", rss / 1024
  }' "$work/samples"
echo "events dropped: $dropped (sys.audit.events_dropped notices: $notices); written in all: $written"
echo "flushes that took over 1 s: $slow_flushes"
echo "peak resident memory (VmHWM) through the stall: $peak_through_stall MiB"
echo "chain after the stall: $verify; resident $rss_before_verify MiB before verifying, peak $(peak_mib "$seawall_pid") MiB after"
