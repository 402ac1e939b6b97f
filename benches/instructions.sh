#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a figure that does not move with the
# machine's load, for comparing two builds where wall-clock runs on shared cores vary by 20%.
#
#   benches/instructions.sh [seconds per measurement, default 10]
#
# One seawall with all four features on, the one `benches/load.sh` measures, in front of a small
# upstream (nginx answering a fixed 200): its route `gated` audited at metadata level and
# `noaudit` at level none, each gated by a flag. Each route is measured twice, alternating; for
# each measurement callgrind's counters are zeroed, wrk sends requests for the given time over 8
# connections, and the instructions every seawall thread executed are divided by the requests
# answered.
#
# What the figure leaves out and skews, so compare builds with it, not routes with each other:
# - only user-space instructions count, not the kernel's socket work, nor cache misses;
# - callgrind does not emulate the SHA extensions, so ring hashes with its AVX code, several
#   times the instructions of the real machine's;
# - seawall runs about fifty times slower, so the audit writer's batches are smaller than under
#   real load and its per-batch work weighs more per event.
set -euo pipefail

seconds=${1:-10}
. "$(dirname "$0")/common.sh" instructions.sh
need wrk wrk
need nginx nginx-light
need valgrind valgrind

cargo build --release --quiet

start_upstream

seawall_launcher=(valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p")
seawall_start_s=300
start_load_seawall seawall "$all_features"

# Warm both routes (connections, caches, the first audit batches) before counting.
for route in gated noaudit; do
  wrk -t1 -c4 -d3s "http://127.0.0.1:$proxy/$route/" >/dev/null
done

echo "instructions: callgrind, ${seconds}s per measurement, 8 connections, all features on"
for route in gated noaudit gated noaudit; do
  callgrind_control --zero "$seawall_pid" >/dev/null 2>&1
  requests=$(wrk -t1 -c8 -d"${seconds}s" "http://127.0.0.1:$proxy/$route/" | awk '/requests in/ { print $1 }')
  callgrind_control --dump="$route" "$seawall_pid" >/dev/null 2>&1
  profile=$(ls -t "$work"/callgrind.* | head -1)
  instructions=$(awk '/^(summary|totals):/ { print $2; exit }' "$profile")
  rm -f "$profile"
  awk -v route="$route" -v n="$requests" -v ir="$instructions" \
    'BEGIN { printf "%-10s %7d requests %9.0f instructions per request\n", route, n, ir / n }'
done
