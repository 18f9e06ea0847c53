"""Drive the ``turnout`` SDK against a running server with realistic legacy / parallel behaviour.

    manage.py simulate_traffic --url http://127.0.0.1:8000 --sdk-key sdk_... --flag invoice-engine \\
        --requests 2000 --rate 100 --parallel-error-rate 0.02 --parallel-latency-ms 12 --mismatch-rate 0.01

Each request prices an invoice for a subject (``user-N`` of tenant ``tenant-M``) through
``Turnout.run()``: legacy and parallel compute the same total, except that the parallel path
fails with ``--parallel-error-rate``, takes ``--parallel-latency-ms`` (legacy ``--legacy-latency-ms``)
and differs with ``--mismatch-rate`` (a rounding difference, or a missing field). The SDK decides,
compares, and reports the metrics; the server's guardrails and readiness report read them.

Bounded: ``--requests`` and / or ``--duration`` (at least one) with hard caps, and loopback
URLs only unless ``--allow-remote``.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import threading
import time
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import urlparse

from django.core.management.base import BaseCommand, CommandError, CommandParser

MAX_REQUESTS = 10_000_000
MAX_DURATION = 24 * 3600


class SimulatedFailure(RuntimeError):
    pass


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def _rate(value: str) -> float:
    number = float(value)
    if not 0 <= number <= 1:
        raise ValueError("a rate is a fraction from 0 to 1")
    return number


class Command(BaseCommand):
    help = "Send simulated legacy / parallel traffic through the turnout SDK to a running server (bounded)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", required=True, help="the Turnout server, e.g. http://127.0.0.1:8000")
        parser.add_argument("--sdk-key", required=True)
        parser.add_argument("--flag", required=True)
        parser.add_argument("--requests", type=int, default=None, help="stop after this many requests")
        parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
        parser.add_argument("--rate", type=float, default=0.0, help="requests per second (0: as fast as possible)")
        parser.add_argument("--subjects", type=int, default=1000)
        parser.add_argument("--tenants", type=int, default=200)
        parser.add_argument("--parallel-error-rate", type=_rate, default=0.0)
        parser.add_argument("--legacy-error-rate", type=_rate, default=0.0)
        parser.add_argument("--mismatch-rate", type=_rate, default=0.0)
        parser.add_argument("--parallel-latency-ms", type=float, default=0.0)
        parser.add_argument("--legacy-latency-ms", type=float, default=0.0)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--flush-interval", type=float, default=1.0, help="seconds between metrics batches")
        parser.add_argument("--code-version", default="simulator")
        parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback server URL")

    def handle(self, *args: Any, **o: Any) -> None:
        import turnout

        if o["requests"] is None and o["duration"] is None:
            raise CommandError("give --requests or --duration (the simulation is always bounded)")
        if o["requests"] is not None and not 1 <= o["requests"] <= MAX_REQUESTS:
            raise CommandError(f"--requests must be 1 to {MAX_REQUESTS}")
        if o["duration"] is not None and not 0 < o["duration"] <= MAX_DURATION:
            raise CommandError(f"--duration must be more than 0 and at most {MAX_DURATION} s")
        if not o["allow_remote"] and not is_loopback(o["url"]):
            raise CommandError("only loopback servers (127.0.0.1, ::1, localhost) unless --allow-remote")
        if o["subjects"] < 1 or o["tenants"] < 1:
            raise CommandError("--subjects and --tenants must be at least 1")
        rng = random.Random(o["seed"])
        client = turnout.Turnout(o["url"], o["sdk_key"], flush_interval=o["flush_interval"], breaker=None,
                                 code_version=o["code_version"], compare_timeout=5.0)
        if not client.wait_until_ready(timeout=15):
            client.close()
            raise CommandError(f"the SDK could not load the ruleset from {o['url']}")
        totals = {"requests": 0, "errors": 0, "legacy": 0, "parallel": 0}
        flag = o["flag"]

        def invoice(subject: int) -> tuple[Decimal, int]:
            lines = 1 + subject % 7
            return Decimal(subject % 997) + Decimal("0.125") * lines, lines

        # One call is one run(): the decision is run()'s own, so every call is counted once, by the SDK
        # and here (calling decide() first would count each call twice in the metrics sent).
        caller = threading.get_ident()
        served: list[str] = []

        def served_by(path: str) -> None:
            if threading.get_ident() == caller:
                served.append(path)

        def legacy(subject: int) -> dict[str, Any]:
            served_by("legacy")
            if o["legacy_latency_ms"]:
                time.sleep(o["legacy_latency_ms"] * rng.uniform(0.5, 1.5) / 1000)
            if rng.random() < o["legacy_error_rate"]:
                raise SimulatedFailure("legacy failed")
            amount, lines = invoice(subject)
            return {"total": str(amount.quantize(Decimal("0.01"))), "currency": "EUR", "lines": lines}

        def parallel(subject: int) -> dict[str, Any]:
            served_by("parallel")
            if o["parallel_latency_ms"]:
                time.sleep(o["parallel_latency_ms"] * rng.uniform(0.5, 1.5) / 1000)
            if rng.random() < o["parallel_error_rate"]:
                raise SimulatedFailure("parallel failed")
            amount, lines = invoice(subject)
            result: dict[str, Any] = {"total": str(amount.quantize(Decimal("0.01"))), "currency": "EUR",
                                      "lines": lines}
            if rng.random() < o["mismatch_rate"]:
                if rng.random() < 0.8:  # the common kind: rounding half-up instead of half-even
                    result["total"] = str((amount + Decimal("0.005")).quantize(Decimal("0.01")))
                else:  # the rare kind: a field the parallel system forgot
                    del result["currency"]
            return result

        started = time.monotonic()
        interval = 1.0 / o["rate"] if o["rate"] > 0 else 0.0
        try:
            while True:
                if o["requests"] is not None and totals["requests"] >= o["requests"]:
                    break
                if o["duration"] is not None and time.monotonic() - started >= o["duration"]:
                    break
                subject = rng.randrange(o["subjects"])
                attributes = {"tenant_id": f"tenant-{subject % o['tenants']}", "country": rng.choice(["DE", "FR"])}
                served.clear()
                try:
                    client.run(flag, f"user-{subject}", attributes, legacy=partial(legacy, subject),
                               parallel=partial(parallel, subject), fallback=True)
                except SimulatedFailure:
                    totals["errors"] += 1
                if served:  # the path run() chose is the first one run on this thread (the shadow runs on another)
                    totals[served[0]] += 1
                totals["requests"] += 1
                if interval:
                    next_at = started + totals["requests"] * interval
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
        finally:
            client.flush()
            client.close()
        self.stdout.write(
            f"simulated {totals['requests']} requests for '{flag}': {totals['parallel']} parallel, "
            f"{totals['legacy']} legacy, {totals['errors']} unrecovered errors")
