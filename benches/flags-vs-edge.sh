#!/usr/bin/env bash
# Flag evaluation, seawall against Unleash Edge, same client (wrk), same machine, one run.
#
#   benches/flags-vs-edge.sh [seconds per run, default 10] [connections, default 32]
#
# Both serve the same 20 flags (an allowlist strategy and a 30% rollout constrained by plan and
# semantic version (SEMVER_GT: Unleash has no SEMVER_GTE), two weighted variants): Unleash Edge 19.15.1 in offline mode from a bootstrap
# file, seawall with the same file imported through POST /admin/flags/import. First both are asked
# about 500 users and must agree on every answer (seawall buckets like Unleash); then wrk POSTs
# single evaluations (seawall: OFREP /ofrep/v1/evaluate/flags/flag-07; Edge: its frontend API
# /api/frontend/features/flag-07) and bulk evaluations of all 20 (OFREP /ofrep/v1/evaluate/flags;
# /api/frontend/all), three alternating runs each, median reported, and the ratios.
#
# Unleash Edge is built once into target/test-deps/unleash-edge (cargo install, about 15 minutes on
# two cores). Its Swagger UI dependency downloads a zip from GitHub at build time; where GitHub is
# unreachable the same release is assembled from the npm registry's swagger-ui-dist package.
set -euo pipefail

duration=${1:-10}
connections=${2:-32}
. "$(dirname "$0")/common.sh" flags-vs-edge.sh
need wrk wrk

edge_version=19.15.1
edge="$root/target/test-deps/unleash-edge/bin/unleash-edge"
if [ ! -x "$edge" ] || ! grep -q "unleash-edge $edge_version" "$root/target/test-deps/unleash-edge/.crates.toml" 2>/dev/null; then
  echo "building Unleash Edge $edge_version (once)..." >&2
  if ! curl -sf -o /dev/null --max-time 10 https://github.com; then
    python3 - "$work/swagger-ui.zip" <<'PY'
import io, sys, tarfile, urllib.request, zipfile
data = urllib.request.urlopen("https://registry.npmjs.org/swagger-ui-dist/-/swagger-ui-dist-5.17.14.tgz").read()
with tarfile.open(fileobj=io.BytesIO(data)) as tar, zipfile.ZipFile(sys.argv[1], "w") as out:
    out.writestr("swagger-ui-5.17.14/", "")
    for member in tar.getmembers():
        if member.isfile() and member.name.startswith("package/"):
            out.writestr("swagger-ui-5.17.14/dist/" + member.name[len("package/"):], tar.extractfile(member).read())
PY
    export SWAGGER_UI_DOWNLOAD_URL="file://$work/swagger-ui.zip"
  fi
  cargo install unleash-edge --version "$edge_version" --locked --no-default-features \
    --root "$root/target/test-deps/unleash-edge" --quiet
fi
cargo build --release --quiet

python3 - "$work/features.json" <<'PY'
import json, sys
features = []
for i in range(1, 21):
    name = f"flag-{i:02d}"
    features.append({
        "name": name, "type": "release", "enabled": True, "project": "default",
        "strategies": [
            {"name": "userWithId", "parameters": {"userIds": "alice,bob"}, "constraints": []},
            {"name": "flexibleRollout",
             "parameters": {"rollout": "30", "stickiness": "default", "groupId": name},
             "constraints": [{"contextName": "plan", "operator": "IN", "values": ["pro", "team"]},
                             {"contextName": "appVersion", "operator": "SEMVER_GT", "value": "1.9.9"}]}],
        "variants": [
            {"name": "a", "weight": 500, "weightType": "variable", "stickiness": "default",
             "payload": {"type": "string", "value": "A"}},
            {"name": "b", "weight": 500, "weightType": "variable", "stickiness": "default",
             "payload": {"type": "string", "value": "B"}}]})
json.dump({"version": 2, "features": features}, open(sys.argv[1], "w"))
PY

edge_port=$(free_port)
edge_token='*:development.bench-frontend-token'
"$edge" --port "$edge_port" --interface 127.0.0.1 offline --bootstrap-file "$work/features.json" \
  --frontend-tokens "$edge_token" --client-tokens "$edge_token" >"$work/edge.log" 2>&1 &
track
wait_http "http://127.0.0.1:$edge_port/internal-backstage/health"

start_default_seawall
curl -sf -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$admin/admin/flags/import" \
  --data-binary "@$work/features.json"

# The same answers first: 500 users, flag-07, on or off and the variant.
python3 - "$proxy" "$edge_port" "$edge_token" <<'PY'
import json, sys, urllib.request
proxy, edge, token = sys.argv[1], sys.argv[2], sys.argv[3]
def post(url, body, headers):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})
    return json.load(urllib.request.urlopen(request))
agree = on = 0
for n in range(500):
    user = f"user-{n}"
    ours = post(f"http://127.0.0.1:{proxy}/ofrep/v1/evaluate/flags/flag-07",
                {"context": {"targetingKey": user, "plan": "pro", "appVersion": "2.4.1"}}, {})
    theirs = post(f"http://127.0.0.1:{edge}/api/frontend/features/flag-07",
                  {"userId": user, "properties": {"plan": "pro", "appVersion": "2.4.1"}}, {"Authorization": token})
    ours_on = ours.get("value") is not None
    same = ours_on == theirs["enabled"] and (not ours_on or ours.get("variant") == theirs["variant"]["name"])
    agree += same
    on += ours_on
print(f"agreement: {agree} of 500 users get the same answer from both (flag-07 on for {on})")
if agree != 500:
    sys.exit("seawall and Unleash Edge disagree")
PY

cat > "$work/seawall.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil,
    '{"context":{"targetingKey":"user-' .. (n % 5000) .. '","plan":"pro","appVersion":"2.4.1"}}')
end
LUA
cat > "$work/edge.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "$edge_token"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil,
    '{"userId":"user-' .. (n % 5000) .. '","properties":{"plan":"pro","appVersion":"2.4.1"}}')
end
LUA
cat >> "$work/seawall.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.3f %.3f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout))
end
LUA
sed -n '/^done = /,$p' "$work/seawall.lua" >> "$work/edge.lua"

declare -A url=(
  [seawall-single]="http://127.0.0.1:$proxy/ofrep/v1/evaluate/flags/flag-07"
  [edge-single]="http://127.0.0.1:$edge_port/api/frontend/features/flag-07"
  [seawall-bulk]="http://127.0.0.1:$proxy/ofrep/v1/evaluate/flags"
  [edge-bulk]="http://127.0.0.1:$edge_port/api/frontend/all"
)
targets=(seawall-single edge-single seawall-bulk edge-bulk)
measure() {
  local target=$1 script=$work/${1%%-*}.lua
  wrk -t2 -c"$connections" -d"${duration}s" -s "$script" "${url[$target]}" \
    | awk -v t="$target" '/^RESULT/ { print t, $2, $3, $4, $5 }'
}
for target in "${targets[@]}"; do wrk -t1 -c4 -d1s -s "$work/${target%%-*}.lua" "${url[$target]}" >/dev/null; done
declare -A runs=()
for round in 1 2 3; do
  for target in "${targets[@]}"; do runs[$target]+="$(measure "$target")"$'\n'; done
done
declare -A row=()
for target in "${targets[@]}"; do
  row[$target]=$(printf '%s' "${runs[$target]}" | sort -k2 -n | sed -n 2p)
done

echo "flags: ${duration}s per run, median of 3 alternating runs, $connections connections, wrk -t2; $(nproc) cores shared by wrk and the server; Unleash Edge $edge_version (offline, 2 workers)"
printf '%-16s %12s %9s %9s %8s\n' target "requests/s" "p50 ms" "p99 ms" errors
for target in "${targets[@]}"; do
  set -- ${row[$target]}
  printf '%-16s %12s %9s %9s %8s\n' "$1" "$2" "$3" "$4" "$5"
done
for kind in single bulk; do
  set -- ${row[seawall-$kind]}; s=$2
  set -- ${row[edge-$kind]}
  awk -v k="$kind" -v a="$s" -v b="$2" 'BEGIN { printf "seawall / Unleash Edge, %s evaluation: %.2fx requests/s\n", k, a / b }'
done
