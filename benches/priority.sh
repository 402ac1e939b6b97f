#!/usr/bin/env bash
# Priority protection under overload (research/ratelimit.md §4 scenarios 21 and 22), loopback only,
# bounded in time: does a `high` route keep its service while `strict` traffic floods a backend
# that cannot keep up?
#
#   benches/priority.sh [seconds per overload phase, default 20]
#
# The backend serves 20 requests at a time, 200 ms each: about 100 requests/s. An open-loop
# client (new connection per request, so a slow answer does not slow the offered rate) offers:
#
#   unloaded        50 requests/s on the high route alone, through the shedding seawall
#   shedding on     50/s high plus 300/s strict (3.5x the backend), seawall with
#                   `seawall.prioritized-rate-limit` on and `ratelimit.max_in_flight = 40`
#   shedding off    the same load through a seawall with all features off
#   slow, shed on   scenario 22: the backend takes 2 s (10x longer) for the strict route's
#                   requests; 50/s high plus 50/s of those, through the shedding seawall
#   slow, shed off  the same through the seawall with all features off
#
# Both seawalls cap the upstream at the backend's 20 concurrent requests and wait at most 10 s
# for a slot. Quotas are far above the offered rates, so every refusal is the shedder's. For each
# phase and route it prints the share answered 200, the share shed (503 SERVICE_OVERLOADED), the
# rest (timeouts, other statuses), and p50/p99 latency of the 200s. The bar from the research:
# with shedding, high keeps >= 99% success and a p99 within 2x of its unloaded p99.
set -euo pipefail

duration=${1:-20}
. "$(dirname "$0")/common.sh" priority.sh
# The client holds one socket per waiting request: thousands when nothing sheds.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet

cat >"$work/backend.py" <<'PY'
# An HTTP/1.1 backend with keep-alive that serves `workers` requests at a time, `seconds` each
# (paths under /slow/ 2 s each). A request whose client hangs up while it waits for a worker
# leaves the queue, so one phase's abandoned requests do not load the next; GET /_busy answers
# how many requests are waiting or being served.
import asyncio, sys

port, workers, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
slots = asyncio.Semaphore(workers)
busy = 0

async def worker_unless_hangup(reader):
    acquire = asyncio.ensure_future(slots.acquire())
    hangup = asyncio.ensure_future(reader.read(1))
    await asyncio.wait({acquire, hangup}, return_when=asyncio.FIRST_COMPLETED)
    hangup.cancel()
    await asyncio.gather(hangup, return_exceptions=True)
    if hangup.cancelled():
        return True
    if acquire.done():
        slots.release()
    else:
        acquire.cancel()
    return False

def answer(writer, body):
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

async def serve(reader, writer):
    global busy
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"content-length:" in head.lower():
                raise ValueError("this backend takes no request bodies")
            path = head.split(b" ", 2)[1]
            if path == b"/_busy":
                answer(writer, str(busy).encode())
                await writer.drain()
                continue
            busy += 1
            try:
                if not await worker_unless_hangup(reader):
                    return
                try:
                    await asyncio.sleep(2.0 if path.startswith(b"/slow/") else seconds)
                finally:
                    slots.release()
            finally:
                busy -= 1
            answer(writer, b"ok\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
        pass
    finally:
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()

asyncio.run(main())
PY

cat >"$work/client.py" <<'PY'
# Open-loop load: each class sends at its own fixed rate for `duration` seconds, one connection
# per request, and the outcome of every request is kept. Prints one table row per class.
import asyncio, sys, time

phase, port, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
classes = [(path, float(rate)) for path, rate in (c.split("=") for c in sys.argv[4:])]
TIMEOUT = 30.0

async def one(path, results):
    started = time.perf_counter()
    try:
        async def exchange():
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n".encode())
            answer = await reader.read()
            writer.close()
            return answer
        answer = await asyncio.wait_for(exchange(), TIMEOUT)
        status = int(answer.split(b" ", 2)[1])
        if status == 200:
            outcome = "ok"
        elif status == 503 and b"SERVICE_OVERLOADED" in answer:
            outcome = "shed"
        else:
            outcome = f"status {status}"
    except (asyncio.TimeoutError, OSError, IndexError, ValueError) as error:
        outcome = type(error).__name__
    results.append((outcome, time.perf_counter() - started))

async def offer(path, rate, start, tasks, results):
    for i in range(int(duration * rate)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(path, results)))

def percentile(values, p):
    return values[min(len(values) - 1, int(len(values) * p / 100))] * 1000 if values else float("nan")

async def main():
    start = time.perf_counter() + 0.1
    tasks, results = [], {path: [] for path, _ in classes}
    await asyncio.gather(*(offer(path, rate, start, tasks, results[path]) for path, rate in classes))
    await asyncio.gather(*tasks)
    for path, _ in classes:
        outcomes = results[path]
        sent = len(outcomes)
        ok = sorted(seconds for outcome, seconds in outcomes if outcome == "ok")
        shed = sum(1 for outcome, _ in outcomes if outcome == "shed")
        other = {}
        for outcome, _ in outcomes:
            if outcome not in ("ok", "shed"):
                other[outcome] = other.get(outcome, 0) + 1
        row = (f"{phase:<14} {path.strip('/'):<7} {sent:>6} {100 * len(ok) / sent:>7.1f}% "
               f"{100 * shed / sent:>6.1f}% {100 * sum(other.values()) / sent:>6.1f}% "
               f"{percentile(ok, 50):>8.0f} {percentile(ok, 99):>8.0f}")
        if other:
            row += "   (" + ", ".join(f"{k} {v}" for k, v in sorted(other.items())) + ")"
        print(row, flush=True)

asyncio.run(main())
PY

backend_port=$(free_port)
python3 "$work/backend.py" "$backend_port" 20 0.2 &
track
wait_http "http://127.0.0.1:$backend_port/"

start_seawall() {
  local name=$1 features=$2
  start_configured_seawall "$name" <<TOML
[features]
$features

[ratelimit]
max_in_flight = 40

[ratelimit.levels.high]
quota = 1000000
window_s = 1

[ratelimit.levels.strict]
quota = 1000000
window_s = 1

[upstreams.app]
url = "http://127.0.0.1:$backend_port"
max_connections = 20
timeout_ms = 10000

[[routes]]
name = "high"
match = "/high/*"
upstream = "app"
strip_prefix = "/high"
priority = "high"

[[routes]]
name = "strict"
match = "/strict/*"
upstream = "app"
strip_prefix = "/strict"
priority = "strict"

[[routes]]
name = "slow"
match = "/slow/*"
upstream = "app"
priority = "strict"
TOML
}
start_seawall shedding "prioritized_rate_limit = true"
shedding_port=$proxy shedding_admin=$admin
start_seawall plain ""
plain_port=$proxy plain_admin=$admin

# Waits until a seawall and the backend have nothing in flight, so one phase's stragglers do not
# load the next.
settle() {
  for _ in $(seq 1 600); do
    in_flight=$(curl -sf "http://127.0.0.1:$1/metrics" \
      | awk '/^seawall_pool_in_flight\{pool="app"\}/ { print $2 }')
    backend_busy=$(curl -sf "http://127.0.0.1:$backend_port/_busy")
    [ "$in_flight" = 0 ] && [ "$backend_busy" = 0 ] && return 0
    sleep 0.1
  done
  echo "priority.sh: requests still in flight after 60 s" >&2; exit 1
}

# `phase NAME PORT ADMIN SECONDS PATH=RATE...`: one table row per route, then a settled seawall.
phase() {
  local name=$1 port=$2 admin=$3 seconds=$4; shift 4
  python3 "$work/client.py" "$name" "$port" "$seconds" "$@"
  settle "$admin"
}

echo "priority: backend 20 at a time x 200 ms (~100 requests/s); open-loop client; $(nproc) cores shared by the client, the backend and seawall"
printf '%-14s %-7s %6s %8s %7s %7s %8s %8s\n' phase route sent "200" shed other "p50 ms" "p99 ms"
phase "unloaded" "$shedding_port" "$shedding_admin" 10 /high/=50
phase "shedding on" "$shedding_port" "$shedding_admin" "$duration" /high/=50 /strict/=300
phase "shedding off" "$plain_port" "$plain_admin" "$duration" /high/=50 /strict/=300
phase "slow, shed on" "$shedding_port" "$shedding_admin" "$duration" /high/=50 /slow/=50
phase "slow, shed off" "$plain_port" "$plain_admin" "$duration" /high/=50 /slow/=50
shed=$(curl -sf "http://127.0.0.1:$shedding_admin/metrics" | awk '/^seawall_ratelimit_decisions_total\{.*outcome="shed"/ { s += $2 } END { print s + 0 }')
echo "shed by the shedding seawall (seawall_ratelimit_decisions_total, outcome shed): $shed"
