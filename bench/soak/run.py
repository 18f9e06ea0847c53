"""Soak with faults: steady SDK traffic while Redis restarts once and a web process is killed.

    bench/soak/run.sh --minutes 10          # the recorded run
    bench/soak/run.sh --minutes 2           # a short check

Everything on loopback, in its own PostgreSQL database (``turnout_bench_soak``) and its own Redis
server (started here on ``--redis-port``, append-only file on, so that restarting it never touches
the Redis other people use). The production layout: two web processes (gunicorn, 1 uvicorn worker
each, ports ``--port`` and ``--port``+1), a Celery worker and the beat (metrics roll-up).

Traffic, for the whole run:
- ``manage.py simulate_traffic`` (the simulator) against each web process, at ``--rate`` requests/s;
- an *accounting client* (a ``turnout.Turnout`` with streaming on and polling effectively off) that
  calls ``run()`` at ``--rate`` and tallies every metrics batch it posts, delivered or not;
- a *changer*: a flag change through the services every 15 s (one audit event each), whose arrival
  at the accounting client (through its stream on web A) is timed.

Faults: at 30 % of the run Redis is shut down (``SHUTDOWN``, as a restart does) and started again
after 3 s; at 60 % web A is killed (``SIGKILL``, master and worker) and started again after 3 s.

Checks at the end (after a final roll-up): no exception reached the host from the SDK (simulators
exited 0 and the accounting client never raised); every change committed has its audit event and the
chain verifies; metric counts stored = counts the SDK delivered (and what the SDK dropped, if anything,
is reported with the retry window that explains it); the stream reconnected after each fault (changes
after the faults reached the client through the stream). Results: ``bench/soak/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from bench.load.run import Layout, production_env  # noqa: E402
from bench.machine import machine  # noqa: E402


class RedisServer:
    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction"],
            stdout=open(self.directory / "redis.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip() == b"PONG":
                return
            time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def shutdown(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True)
        if self.proc:
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.shutdown()


class AccountingClient:
    """A Turnout SDK client whose metrics batches are tallied as they are posted."""

    def __init__(self, url: str, key: str, flag: str, rate: float) -> None:
        import turnout

        self.flag = flag
        self.rate = rate
        # SDK defaults except polling (hourly, so a change can only arrive through the stream).
        self.client = turnout.Turnout(url, key, poll_interval=3600, breaker=None)
        self.attempted: dict[str, int] = {}  # batch window -> calls in it
        self.delivered: dict[str, int] = {}
        self.exceptions: list[str] = []
        self.calls = 0
        self.versions: list[tuple[float, int]] = []  # (monotonic time, version) as the client sees it
        original = self.client._post_metrics

        def tallying_post(body: bytes) -> None:
            doc = json.loads(body)
            window = f"{doc['window']['start']}/{doc['window']['end']}"
            calls = sum(row["calls"] for row in doc["flags"] if row["flag"] == flag)
            self.attempted[window] = calls
            original(body)  # raises on failure: the SDK keeps the batch and retries it
            self.delivered[window] = calls

        self.client._post_metrics = tallying_post  # type: ignore[method-assign]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._traffic, daemon=True),
                        threading.Thread(target=self._watch, daemon=True)]

    def start(self) -> None:
        if not self.client.wait_until_ready(timeout=30):
            raise RuntimeError("the accounting client could not load the ruleset")
        for t in self.threads:
            t.start()

    def _traffic(self) -> None:
        started = time.monotonic()
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                self.client.run(self.flag, f"user-{i % 5000}", {"tenant_id": f"tenant-{i % 300}"},
                                legacy=lambda: 1, parallel=lambda: 1, compare=lambda a, b: a == b)
                self.calls += 1
            except Exception as exc:  # the SDK must never raise into its host
                self.exceptions.append(repr(exc))
            delay = started + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def _watch(self) -> None:
        last = None
        while not self.stop.is_set():
            version = self.client.version
            if version != last and version is not None:
                self.versions.append((time.monotonic(), version))
                last = version
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)
        self.client.close()  # final flush


def _requests(sim: dict[str, Any]) -> int:
    match = re.search(r"simulated (\d+) requests", " ".join(sim["summary"]))
    return int(match.group(1)) if match else 0


def _verify_chain(call_command: Any) -> dict[str, Any]:
    """``manage.py audit_verify`` when the installation has it, else the chain walked here."""
    from io import StringIO

    from django.core.management import get_commands

    if "audit_verify" in get_commands():
        out = StringIO()
        try:
            call_command("audit_verify", stdout=out)
        except Exception as exc:
            return {"ok": False, "how": "manage.py audit_verify", "output": repr(exc)[:300]}
        return {"ok": True, "how": "manage.py audit_verify", "output": out.getvalue().strip()[-300:]}
    from audit.chain import CHAINED_FIELDS, GENESIS_HASH, event_hash
    from audit.models import AuditEvent

    prev = GENESIS_HASH
    count = 0
    for row in AuditEvent.objects.order_by("sequence").values(*CHAINED_FIELDS, "prev_hash", "hash").iterator():
        if row["prev_hash"] != prev or event_hash(prev, row) != row["hash"]:
            return {"ok": False, "how": "chain walked by the soak", "output": f"break at sequence {row['sequence']}"}
        prev = row["hash"]
        count += 1
    return {"ok": True, "how": "chain walked by the soak", "output": f"{count} events verified"}


def report(r: dict[str, Any]) -> str:
    m = r["machine"]
    acc = r["accounting_client"]
    lines = [
        f"Soak: {r['minutes']:g} min on {m['nproc']} × {m['cpu']}, load average {m['loadavg']} → "
        f"{r['machine_after']['loadavg']}",
        "", "| check | result |", "|---|---|",
        *(f"| fault: {f['fault']} at {f['at']:.0f} s | down {f['down_s']:.1f} s |" for f in r["faults"]),
        f"| SDK exceptions in the host | {r['sdk_exceptions']} |",
        f"| changes committed / audit events / chain verified | {r['changes']['committed']} / "
        f"{r['changes']['audit_events']} / {r['audit_verify']['ok']} |",
        *(f"| first change after \"{k}\" reached the stream client in | "
          f"{'never' if v is None or v['reached_client_s'] is None else str(v['reached_client_s']) + ' s'} |"
          for k, v in r["first_change_after_fault"].items()),
        f"| accounting client (SDK defaults): calls / delivered / stored | {acc['calls']:,} / "
        f"{acc['calls_delivered']:,} / {acc['calls_stored']:,} (dropped by the SDK: {acc['calls_dropped_by_sdk']}) |",
        *(f"| simulator {f} (1 s flushes): expected / stored / lost | {c['expected']:,} / {c['stored']:,} / "
          f"{c['lost']:,} |" for f, c in r["simulators_calls"].items()),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="turnout-soak-"))
    redis_server = RedisServer(args.redis_port, work)
    redis_server.start()
    redis_url = f"redis://127.0.0.1:{args.redis_port}/0"
    database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/turnout_bench_soak")
    env = production_env(database_url=database_url, redis_url=redis_url, var_dir=work)
    env["LOG_REQUESTS"] = "0"
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "REDIS_URL", "TURNOUT_VAR_DIR", "SECRET_KEY",
                                           "ALLOWED_HOSTS", "TURNOUT_ENV", "SECURE_SSL_REDIRECT")})
    os.environ["LOG_LEVEL"] = "WARNING"
    from bench import seed

    seed.setup_django("turnout_bench_soak")
    seed.reset()
    seeded = seed.seed(flags=4, members=1000)
    key = seed.sdk_key()
    from audit.models import AuditEvent

    audit_start = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0
    started_layouts: list[Layout] = []
    try:
        web_a = Layout(env, work, port=args.port, workers=1, celery=True)
        started_layouts.append(web_a)
        web_a.start()
        web_b = Layout(env, work, port=args.port + 1, workers=1, celery=False)
        started_layouts.append(web_b)
        web_b.start()
        return _soak(args, env, work, redis_server, seeded, key, audit_start, web_a, web_b)
    finally:
        for layout in started_layouts:
            layout.stop()
        redis_server.stop()


def _soak(args: argparse.Namespace, env: dict[str, str], work: Path, redis_server: RedisServer, seeded: Any,
          key: str, audit_start: int, web_a: Layout, web_b: Layout) -> dict[str, Any]:
    from audit.models import AuditEvent
    from common.actors import Actor
    from rollout.models import Environment
    from rollout.services.flags import flag_state_update

    total = args.minutes * 60
    print(f"soak: {args.minutes} min; logs in {work}", flush=True)

    simulators = []
    for flag, layout in ((seeded.flags[0], web_a), (seeded.flags[1], web_b)):
        simulators.append(subprocess.Popen(
            [sys.executable, "manage.py", "simulate_traffic", "--url", layout.url, "--sdk-key", key, "--flag", flag,
             "--duration", str(total), "--rate", str(args.rate), "--flush-interval", "1", "--mismatch-rate", "0.01",
             "--seed", "7"],
            cwd=ROOT, env={**env, "LOG_LEVEL": "WARNING"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    accounting = AccountingClient(web_a.url, key, seeded.flags[2], args.rate)
    accounting.start()

    changes: list[dict[str, Any]] = []
    change_errors: list[str] = []
    events: list[dict[str, Any]] = []
    started = time.monotonic()
    next_change = started + 5
    redis_at, kill_at = started + 0.3 * total, started + 0.6 * total
    redis_done = kill_done = False
    i = 0
    while time.monotonic() - started < total:
        now = time.monotonic()
        if now >= next_change:
            i += 1
            try:
                t = time.monotonic()
                flag_state_update(actor=Actor.system("soak"), flag=seeded.flags[3], environment="production",
                                  version=None, percentage_value=(i * 13) % 100, reason=f"soak change {i}")
                version = Environment.objects.values_list("ruleset_version", flat=True).get(pk=seeded.environment_id)
                changes.append({"at": t - started, "t": t, "version": version})
            except Exception as exc:
                change_errors.append(f"{time.monotonic() - started:.1f}s {exc!r}")
            next_change += 15
        if not redis_done and now >= redis_at:
            t0 = time.monotonic()
            redis_server.shutdown()
            time.sleep(3)
            redis_server.start()
            events.append({"fault": "redis restarted", "at": t0 - started, "down_s": time.monotonic() - t0})
            redis_done = True
        if not kill_done and now >= kill_at:
            t0 = time.monotonic()
            os.killpg(web_a.procs[0].pid, signal.SIGKILL)
            web_a.procs[0].wait()
            time.sleep(3)
            web_a.procs = web_a.procs[1:]  # worker and beat keep running
            restarted = Layout(env, work, port=args.port, workers=1, celery=False).start()
            events.append({"fault": "web A killed (SIGKILL) and restarted", "at": t0 - started,
                           "down_s": time.monotonic() - t0})
            web_a.procs.extend(restarted.procs)
            kill_done = True
        time.sleep(0.2)

    sim_results = []
    for proc in simulators:
        out, err = proc.communicate(timeout=120)
        sim_results.append({"exit": proc.returncode, "summary": out.strip().splitlines()[-1:] if out else [],
                            "traceback": "Traceback" in err, "stderr_tail": err.strip().splitlines()[-3:]})
    accounting.close()
    time.sleep(2)

    # Arrival of each change at the accounting client (via its stream: polling is hourly).
    for change in changes:
        seen = next((t for t, v in accounting.versions if v >= change["version"]), None)
        change["reached_client_s"] = None if seen is None else round(seen - change["t"], 3)
        del change["t"]

    from django.core.management import call_command
    from django.db.models import Sum

    from rollout.models import MetricMinute
    from rollout.telemetry import ingest as metric_services

    metric_services.metrics_rollup(include_open=True)
    stored = MetricMinute.objects.filter(environment_id=seeded.environment_id)
    stored_acc = stored.filter(flag_key=seeded.flags[2]).aggregate(n=Sum("calls"))["n"] or 0
    stored_sim = {f: stored.filter(flag_key=f).aggregate(n=Sum("calls"))["n"] or 0 for f in seeded.flags[:2]}
    delivered = sum(accounting.delivered.values())
    attempted = sum(accounting.attempted.values())
    audit_new = AuditEvent.objects.filter(sequence__gt=audit_start, actor="system:soak").count()
    verify = _verify_chain(call_command)

    reconnect = {}
    for event in events:
        after = [c for c in changes if c["at"] > event["at"] + event["down_s"]]
        reconnect[event["fault"]] = after[0] if after else None
    result = {
        "minutes": args.minutes, "rate_per_client": args.rate, "faults": events,
        "simulators": sim_results,
        "sdk_exceptions": len(accounting.exceptions) + sum(1 for s in sim_results if s["traceback"] or s["exit"]),
        "accounting_client": {"calls": accounting.calls, "batches": len(accounting.attempted),
                              "calls_in_batches": attempted, "calls_delivered": delivered, "calls_stored": stored_acc,
                              "calls_dropped_by_sdk": attempted - delivered,
                              "server_loss": delivered - stored_acc,
                              "dropped_batches": accounting.client._sender.dropped_batches},
        # Each simulated request calls decide() and then run(): both are counted calls.
        "simulators_calls": {f: {"expected": 2 * _requests(sim), "stored": stored_sim[f],
                                 "lost": 2 * _requests(sim) - stored_sim[f]}
                             for f, sim in zip(seeded.flags[:2], sim_results, strict=True)},
        "changes": {"committed": len(changes), "errors": change_errors, "audit_events": audit_new,
                    "reach_s": [c["reached_client_s"] for c in changes]},
        "first_change_after_fault": reconnect,
        "audit_verify": verify,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=50, help="requests/s of each simulator and the accounting client")
    parser.add_argument("--port", type=int, default=8810)
    parser.add_argument("--redis-port", type=int, default=6399)
    parser.add_argument("--out", default=str(HERE / "results.json"))
    args = parser.parse_args()
    before = machine()
    result = run(args)
    result = {"machine": before, "machine_after": machine(), **result}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))


if __name__ == "__main__":
    main()
