"""Bytes on the wire per change: N streaming SDKs × a ruleset of F flags, one flag changed.

    .venv/bin/python bench/edge/bytes_per_change.py            # 1,000 SDKs × 1,000 flags, 3 changes per mode

One web process (gunicorn, 1 uvicorn worker, production settings, PostgreSQL, Redis). N clients hold
``/api/v1/sdk/stream`` open over raw asyncio connections and behave as an SDK does when a change is
announced, in three modes:

- ``before``: the SDK as it was — ``ruleset`` events only; on each, a conditional ``GET`` of the
  ruleset (``If-None-Match``), uncompressed: the whole document comes back;
- ``gzip``: the same, accepting gzip (the document comes compressed once per version);
- ``patches``: the stream asked with ``?patches=1``: the change comes as one ``patch`` event and
  nothing is fetched (a client that got a ``ruleset`` event instead fetches, gzip, as above).

Every byte each client sends and receives after the change (HTTP requests, headers, bodies, stream
events; not TCP/IP framing) is counted until it holds the new version. Results: a Markdown table and
``bench/edge/results-bytes.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from bench.load.run import Layout, production_env  # noqa: E402
from bench.machine import machine  # noqa: E402

MODES = ("before", "gzip", "patches")


class Client:
    def __init__(self, port: int, key: str, mode: str) -> None:
        self.port, self.key, self.mode = port, key, mode
        self.counting = False
        self.bytes = 0
        self.version = 0
        self.etag = ""
        self.seen = asyncio.Event()
        self.fetches = 0
        self.patches = 0
        self.error: str | None = None

    def _count(self, n: int) -> None:
        if self.counting:
            self.bytes += n

    async def fetch(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        headers = f"Authorization: Bearer {self.key}\r\nAccept: application/json\r\nConnection: close\r\n"
        if self.etag:
            headers += f"If-None-Match: {self.etag}\r\n"
        if self.mode != "before":
            headers += "Accept-Encoding: gzip\r\n"
        request = f"GET /api/v1/sdk/ruleset HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
        writer.write(request)
        self._count(len(request))
        response = await reader.read()  # the whole response, as sent (chunked or not), up to the close
        self._count(len(response))
        head = response.split(b"\r\n\r\n", 1)[0]
        etag = re.search(rb"(?i)etag:\s*(\S+)", head)
        version = re.search(rb"(?i)x-turnout-ruleset-version:\s*(\d+)", head)
        if etag:
            self.etag = etag.group(1).decode()
        if version:
            self.version = int(version.group(1))
        self.fetches += 1
        writer.close()

    async def hold(self) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
            query = "?patches=1" if self.mode == "patches" else ""
            request = (f"GET /api/v1/sdk/stream{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"Authorization: Bearer {self.key}\r\nAccept: text/event-stream\r\n\r\n").encode()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                self.error = head.split(b"\r\n", 1)[0].decode()
                self.seen.set()
                return
            event, data = "", ""
            while True:
                line = await reader.readline()
                if not line:
                    self.error = self.error or "closed"
                    return
                self._count(len(line))
                text = line.decode().rstrip("\r\n")
                if text.startswith("event:"):
                    event = text[6:].strip()
                elif text.startswith("data:"):
                    data = text[5:].strip()
                elif text == "" and event:
                    if event == "patch":
                        patch = json.loads(data)
                        if patch["base"] == self.version:
                            self.version, self.etag = patch["version"], patch["etag"]
                            self.patches += 1
                        else:
                            await self.fetch()
                    elif event == "ruleset" and json.loads(data)["version"] > self.version:
                        await self.fetch()
                    self.seen.set()
                    event, data = "", ""
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.seen.set()


async def run_mode(port: int, key: str, mode: str, sdks: int, changes: int, change: Any) -> dict[str, Any]:
    clients = [Client(port, key, mode) for _ in range(sdks)]
    tasks = []
    for i, c in enumerate(clients):
        tasks.append(asyncio.create_task(c.hold()))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(c.seen.wait() for c in clients)), timeout=300)
    per_change: list[dict[str, Any]] = []
    for i in range(changes):
        for c in clients:
            c.counting, c.bytes = True, 0
            c.fetches = c.patches = 0
        version = await asyncio.to_thread(change, i)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and any(c.version < version for c in clients if not c.error):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # anything still in flight is counted too
        for c in clients:
            c.counting = False
        sizes = [c.bytes for c in clients if not c.error]
        per_change.append({"version": version, "sdks": len(sizes), "total_bytes": sum(sizes),
                           "per_sdk_median": statistics.median(sizes) if sizes else 0,
                           "fetches": sum(c.fetches for c in clients), "patches": sum(c.patches for c in clients),
                           "reached": sum(1 for c in clients if c.version >= version)})
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    errors = sorted({c.error for c in clients if c.error})
    return {"mode": mode, "changes": per_change, "errors": errors[:5],
            "total_bytes_per_change": statistics.median(c["total_bytes"] for c in per_change)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sdks", type=int, default=1000)
    parser.add_argument("--flags", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=3)
    parser.add_argument("--port", type=int, default=8740)
    parser.add_argument("--out", default=str(HERE / "results-bytes.json"))
    args = parser.parse_args()
    database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/turnout_bench_edge")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
    var_dir = Path(tempfile.mkdtemp(prefix="turnout-bench-bytes-"))
    env = production_env(database_url=database_url, redis_url=redis_url, var_dir=var_dir)
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "TURNOUT_VAR_DIR", "SECRET_KEY",
                                           "ALLOWED_HOSTS", "TURNOUT_ENV", "SECURE_SSL_REDIRECT")})
    os.environ["LOG_LEVEL"] = "WARNING"
    import redis

    from bench import seed

    seed.setup_django("turnout_bench_edge")
    redis.Redis.from_url(redis_url).flushdb()
    seeded = seed.seed(flags=args.flags, members=1000)
    key = seed.sdk_key()
    started = machine()

    made = [0]

    def change(_: int) -> int:
        made[0] += 1
        i = made[0]
        from common.actors import Actor
        from rollout.models import Environment
        from rollout.services.flags import flag_state_update

        flag_state_update(actor=Actor.system("bench"), flag=seeded.flags[i % len(seeded.flags)],
                          environment="production", version=None, percentage_value=(31 + 7 * i) % 100)
        return int(Environment.objects.values_list("ruleset_version", flat=True).get(pk=seeded.environment_id))

    layout = Layout(env, var_dir, port=args.port, workers=1, celery=False).start()
    results: dict[str, Any] = {}
    try:
        import urllib.request

        request = urllib.request.Request(f"{layout.url}/api/v1/sdk/ruleset", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            body_bytes = len(response.read())
        for mode in MODES:
            results[mode] = asyncio.run(run_mode(layout.port, key, mode, args.sdks, args.changes, change))
            print(mode, json.dumps(results[mode]["changes"]), flush=True)
    finally:
        layout.stop()
        seed.reset()
    out = {"command": " ".join(["bench/edge/bytes_per_change.py", *sys.argv[1:]]), "machine": started,
           "machine_after": machine(), "sdks": args.sdks, "flags": args.flags, "ruleset_bytes": body_bytes,
           "modes": results}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n{args.sdks:,} SDKs × {args.flags:,} flags (a {body_bytes:,} B ruleset); load average "
          f"{started['loadavg'][0]} → {out['machine_after']['loadavg'][0]}\n")
    print("| SDK behaviour | bytes per change, all SDKs | per SDK | fetches | patches applied |")
    print("|---|---:|---:|---:|---:|")
    for mode, r in results.items():
        c = r["changes"][len(r["changes"]) // 2]
        print(f"| {mode} | {r['total_bytes_per_change']:,.0f} B | {c['per_sdk_median']:,.0f} B | {c['fetches']:,} "
              f"| {c['patches']:,} |")


if __name__ == "__main__":
    main()
