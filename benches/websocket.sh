#!/usr/bin/env bash
# WebSockets through seawall against the same echo server directly, same client, one run.
#
#   benches/websocket.sh [seconds per phase, default 5] [connections, default 16]
#
# The echo server and the client are Python's `websockets` (17.4, installed once into
# target/test-deps/websockets). Three phases per target, directly and through a seawall route
# with `upgrades = ["websocket"]` (all features off):
#   latency     one connection, 64-byte messages echoed one after another: p50 and p99 per
#               round trip;
#   messages    N connections echoing 1 KiB messages one after another: messages per second;
#   bulk        one connection sending 64 KiB binary messages, echoed: MiB per second each way.
# The client and the server are single-threaded Python and share the two cores with seawall, so
# the figures show what seawall adds per message, not a ceiling of seawall's own.
set -euo pipefail

duration=${1:-5}
connections=${2:-16}
. "$(dirname "$0")/common.sh" websocket.sh

venv="$root/target/test-deps/websockets"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import websockets, sys; sys.exit(websockets.__version__ != "17.4")' 2>/dev/null; then
  echo "installing websockets 17.4 into $venv (once)..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet websockets==17.4
fi
python="$venv/bin/python"
cargo build --release --quiet

cat >"$work/echo.py" <<'PY'
import asyncio, sys, websockets
async def echo(ws):
    async for message in ws:
        await ws.send(message)
async def main():
    async with websockets.serve(echo, "127.0.0.1", int(sys.argv[1]), max_size=None):
        await asyncio.Future()
asyncio.run(main())
PY

cat >"$work/client.py" <<'PY'
import asyncio, json, sys, time, websockets
url, duration, connections = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])

async def latency():
    async with websockets.connect(url) as ws:
        message, times = b"x" * 64, []
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await ws.send(message)
            assert await ws.recv() == message
            times.append(time.perf_counter() - start)
        times.sort()
        return {"p50_us": times[len(times) // 2] * 1e6, "p99_us": times[len(times) * 99 // 100] * 1e6}

async def messages():
    deadline = time.perf_counter() + duration
    async def one():
        count = 0
        async with websockets.connect(url) as ws:
            message = b"m" * 1024
            while time.perf_counter() < deadline:
                await ws.send(message)
                assert await ws.recv() == message
                count += 1
        return count
    start = time.perf_counter()
    counts = await asyncio.gather(*(one() for _ in range(connections)))
    return {"messages_per_s": sum(counts) / (time.perf_counter() - start)}

async def bulk():
    async with websockets.connect(url, max_size=None) as ws:
        message, moved = bytes(range(256)) * 256, 0
        start = time.perf_counter()
        deadline = start + duration
        while time.perf_counter() < deadline:
            await ws.send(message)
            assert await ws.recv() == message
            moved += len(message)
        return {"mib_per_s": moved / (time.perf_counter() - start) / (1 << 20)}

async def main():
    result = {}
    for phase in (latency, messages, bulk):
        result.update(await phase())
    print(json.dumps(result))
asyncio.run(main())
PY

echo_port=$(free_port)
"$python" "$work/echo.py" "$echo_port" >"$work/echo.log" 2>&1 &
track
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$echo_port") 2>/dev/null && break; sleep 0.1; done

start_configured_seawall seawall <<TOML
[upstreams.echo]
url = "http://127.0.0.1:$echo_port"
[[routes]]
name = "live"
match = "/live/*"
upstream = "echo"
strip_prefix = "/live"
upgrades = ["websocket"]
TOML

echo "websocket.sh: ${duration} s per phase, $connections connections, $(nproc) cores"
direct=$("$python" "$work/client.py" "ws://127.0.0.1:$echo_port/" "$duration" "$connections")
through=$("$python" "$work/client.py" "ws://127.0.0.1:$proxy/live/" "$duration" "$connections")
rss=$(awk '/VmHWM/ {print $2}' "/proc/$seawall_pid/status")
python3 - "$direct" "$through" "$rss" <<'PY'
import json, sys
direct, through, rss = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
rows = [("round trip p50 (us)", "p50_us"), ("round trip p99 (us)", "p99_us"),
        ("messages/s (1 KiB)", "messages_per_s"), ("bulk MiB/s (64 KiB)", "mib_per_s")]
print(f"{'':24} {'direct':>10} {'seawall':>10} {'ratio':>7}")
for label, key in rows:
    print(f"{label:24} {direct[key]:10.1f} {through[key]:10.1f} {through[key] / direct[key]:7.2f}")
print(f"seawall peak resident memory: {rss / 1024:.1f} MiB")
PY
