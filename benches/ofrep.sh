#!/usr/bin/env bash
# OFREP throughput over loopback: wrk POSTs single and bulk evaluations to a release seawall
# holding 20 flags (allowlists, constrained rollouts, variants). Bounded in time.
#
#   benches/ofrep.sh [seconds per run, default 10] [connections, default 32]
set -euo pipefail

duration=${1:-10}
connections=${2:-32}
. "$(dirname "$0")/common.sh" ofrep.sh
need wrk wrk

cargo build --release --quiet
start_default_seawall

for i in $(seq -w 1 20); do
  curl -sf -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$admin/admin/flags" -d '{
    "name": "flag-'"$i"'", "enabled": true,
    "strategies": [
      {"name": "userWithId", "parameters": {"userIds": "alice,bob"}},
      {"name": "flexibleRollout", "parameters": {"rollout": "30", "stickiness": "default"},
       "constraints": [{"contextName": "plan", "operator": "IN", "values": ["pro", "team"]},
                       {"contextName": "appVersion", "operator": "SEMVER_GTE", "value": "2.0.0"}]}],
    "variants": [{"name": "a", "weight": 500, "payload": {"type": "string", "value": "A"}},
                 {"name": "b", "weight": 500, "payload": {"type": "string", "value": "B"}}]}'
done

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  local body = '{"context":{"targetingKey":"user-' .. (n % 5000) .. '","plan":"pro","appVersion":"2.4.1"}}'
  return wrk.format(nil, nil, nil, body)
end
LUA

run() {
  local name=$1 path=$2
  wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$work/post.lua" "http://127.0.0.1:$proxy$path" >"$work/$name.wrk"
  awk -v name="$name" '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 } /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /Non-2xx/ { bad = $NF }
    END { printf "%-28s %10.0f %10.3f %10.3f %8s\n", name, rps, p50, p99, (bad == "" ? 0 : bad) }' "$work/$name.wrk"
}
echo "OFREP over loopback: ${duration}s per run, $connections connections, wrk -t2, $(nproc) cores shared by wrk and seawall"
printf '%-28s %10s %10s %10s %8s\n' endpoint "requests/s" "p50 ms" "p99 ms" non-2xx
run "single (flag-07)" /ofrep/v1/evaluate/flags/flag-07
run "bulk (20 flags)" /ofrep/v1/evaluate/flags
