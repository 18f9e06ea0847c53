"""SSE fan-out: hold N idle ``/api/v1/sdk/stream`` connections and time each change's arrival on each.

Raw asyncio connections (no HTTP library), spread over one or more client processes: one coroutine
per stream reads lines and stamps the monotonic time at which it sees each ``id: <version>``; the
change is made in the parent process, and ``time.monotonic()`` is one clock for every process of the
machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class Stream:
    def __init__(self) -> None:
        self.seen: dict[int, float] = {}
        self.first = asyncio.Event()
        self.error: str | None = None


async def _hold(port: int, key: str, stream: Stream, stop: asyncio.Event, path: str) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 16)
        writer.write((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                      f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n").encode())
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            stream.error = status.decode(errors="replace").strip() or "no status line"
            stream.first.set()
            return
        while await reader.readline() not in (b"\r\n", b""):
            pass
        while not stop.is_set():
            line = await reader.readline()
            if not line:
                stream.error = stream.error or "closed by the server"
                break
            if line.startswith(b"id:"):
                stream.seen[int(line[3:].strip())] = time.monotonic()
                stream.first.set()
        writer.close()
    except (OSError, asyncio.IncompleteReadError) as exc:
        stream.error = f"{type(exc).__name__}: {exc}"
        stream.first.set()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes (bytes), from /proc."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def _client_main(conn: Any, port: int, key: str, streams: int, path: str) -> None:
    """One client process: hold ``streams`` streams, report to the parent over ``conn``."""
    asyncio.run(_client(conn, port, key, streams, path))


async def _client(conn: Any, port: int, key: str, streams: int, path: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    held = [Stream() for _ in range(streams)]
    tasks = []
    for i, stream in enumerate(held):
        tasks.append(asyncio.create_task(_hold(port, key, stream, stop, path)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)  # connect in waves, as SDKs starting up would
    await asyncio.gather(*(s.first.wait() for s in held))
    conn.send(("connected", [s.error for s in held if s.error]))
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command[0] == "expect":  # report once every stream still open has seen the version
            version, deadline = command[1], time.monotonic() + command[2]
            while time.monotonic() < deadline and any(version not in s.seen for s in held if not s.error):
                await asyncio.sleep(0.02)
            conn.send(("reached", version))
        elif command[0] == "stop":
            break
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    conn.send(("stamps", [s.seen for s in held], [s.error for s in held]))


async def fan_out(*, port: int, key: str, streams: int, changes: int,
                  change: Callable[[int], int], server_pids: Callable[[], list[int]] | None = None,
                  clients: int = 1, sdk_query: bool = True) -> dict[str, Any]:
    """``server_pids``: the web processes whose memory per idle stream is recorded (RSS with the
    streams held minus RSS before any). ``clients``: client processes sharing the streams, each with
    its own event loop and core time, so the client side is not what limits the fan-out (arrival
    times are ``time.monotonic()``, one clock for every process of the machine). ``sdk_query``: open
    each stream as the SDK does (``?patches=1&members=1``: a change arrives as a patch), else bare."""
    from turnout.wire import RULESET_MEMBERS_QUERY, STREAM_PATCHES_QUERY, STREAM_PATH

    path = f"{STREAM_PATH}?{STREAM_PATCHES_QUERY}&{RULESET_MEMBERS_QUERY}" if sdk_query else STREAM_PATH
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    rss_before = rss_bytes(server_pids()) if server_pids else 0
    shares = [streams // clients + (1 if i < streams % clients else 0) for i in range(clients)]
    pipes, procs = [], []
    start = time.monotonic()
    for share in shares:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_client_main, args=(child, port, key, share, path), daemon=True)
        proc.start()
        pipes.append(parent)
        procs.append(proc)

    async def recv(conn: Any, timeout: float) -> Any:
        ready = await asyncio.to_thread(conn.poll, timeout)
        if not ready:
            raise TimeoutError("a client process did not answer")
        return conn.recv()

    connected = await asyncio.gather(*(recv(c, max(120, streams / 20)) for c in pipes))
    connect_s = time.monotonic() - start
    errors = [e for _, errs in connected for e in errs]
    await asyncio.sleep(1)
    rss_held = rss_bytes(server_pids()) if server_pids else 0
    await asyncio.sleep(2)
    t0s: dict[int, float] = {}
    committed: dict[int, float] = {}
    for i in range(changes):
        t0 = time.monotonic()
        version = await asyncio.to_thread(change, i)
        t0s[version] = t0
        committed[version] = time.monotonic()  # the change call returned (committed, announced)
        for conn in pipes:
            conn.send(("expect", version, 15.0))
        await asyncio.gather(*(recv(c, 30) for c in pipes))
        await asyncio.sleep(1)
    for conn in pipes:
        conn.send(("stop",))
    seen: list[dict[int, float]] = []
    for conn in pipes:
        _, stamps, _errs = await recv(conn, 60)
        seen += stamps
    for proc in procs:
        proc.join(timeout=10)
    per_change: list[dict[str, Any]] = []
    all_delays: list[float] = []
    for version, t0 in t0s.items():
        delays = [(s[version] - t0) * 1000 for s in seen if version in s]
        all_delays += delays
        per_change.append({"version": version, "t0": t0, "reached": len(delays), "p50_ms": _pct(delays, 50),
                           "p95_ms": _pct(delays, 95), "max_ms": max(delays) if delays else float("nan"),
                           # how long the change itself took (service call, commit, announcement), and
                           # the first stream's delay: what the fan-out adds is p95 minus these
                           "change_ms": (committed[version] - t0) * 1000,
                           "first_ms": min(delays) if delays else float("nan")})
    complete = sum(1 for s in seen if all(v in s for v in t0s))
    return {"streams": streams, "client_processes": clients, "path": path, "connect_s": connect_s, "connect_errors": len(errors),
            "rss_before_bytes": rss_before, "rss_held_bytes": rss_held,
            # per stream actually held (connections that failed to open hold nothing)
            "bytes_per_stream": (rss_held - rss_before) / max(1, streams - len(errors)) if server_pids else None,
            "error_samples": sorted(set(errors))[:5], "changes": per_change, "complete": complete,
            "p50_ms": _pct(all_delays, 50), "p95_ms": _pct(all_delays, 95),
            "max_ms": max(all_delays) if all_delays else float("nan")}
