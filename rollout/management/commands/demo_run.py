"""`make run`'s last process: once the server answers, print the sign-in block; then drive the demo traffic
(``TURNOUT_DEMO_TRAFFIC=0``: only wait). It never exits on its own, as honcho stops every process when one does."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import turnout
from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.conf import get_setting
from config.env import VAR_DIR
from rollout.demo_traffic import drive
from rollout.devsetup import SDK_KEYS, WELCOME
from rollout.management.commands.simulate_traffic import is_loopback

logger = logging.getLogger("turnout.demo")


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def _all_up(url: str, timeout: float = 2.0) -> bool:
    """The web process answers /readyz and sees the worker's and beat's heartbeats (so their start-up lines
    are printed before the block)."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return False
    background = body.get("background") if isinstance(body, dict) else None
    return isinstance(background, dict) and all(background.get(name) == "ok" for name in ("worker", "beat"))


class Command(BaseCommand):
    help = "Wait for the server, print the sign-ins, then drive the demo workloads through the SDK (development)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default=None, help="the server (default: TURNOUT_DEV_URL, set by make run)")
        parser.add_argument("--rate", type=float, default=None, help="calls a second (default: "
                                                                      "TURNOUT_DEMO_TRAFFIC_RATE, 12)")
        parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (tests)")
        parser.add_argument("--wait", type=float, default=180.0, help="seconds to wait for /readyz")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--var", type=Path, default=VAR_DIR, help="where dev_setup kept the keys (default: var/)")

    def handle(self, *args: Any, **o: Any) -> None:
        url = (o["url"] or str(get_setting("DEV_URL"))).rstrip("/")
        if not is_loopback(url):
            raise CommandError("the demo traffic only calls a server on this machine (127.0.0.1, ::1, localhost)")
        rate = o["rate"] if o["rate"] is not None else float(get_setting("DEMO_TRAFFIC_RATE"))
        if not 0 < rate <= 1000:
            raise CommandError("--rate must be more than 0 and at most 1000 calls a second")
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.run_demo(url, rate=rate, stop=stop, o=o)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def run_demo(self, url: str, *, rate: float, stop: threading.Event, o: dict[str, Any]) -> None:
        deadline = time.monotonic() + o["wait"]
        while not stop.is_set() and not _all_up(url) and time.monotonic() < deadline:
            stop.wait(1.0)
        if stop.is_set():
            return
        block = o["var"] / WELCOME
        if block.exists():
            self.stdout.write(block.read_text())
        self.stdout.flush()
        if not get_setting("DEMO_TRAFFIC"):
            stop.wait(o["duration"])
            return
        self.traffic(url, o["var"], rate=rate, stop=stop, duration=o["duration"], seed=o["seed"])

    def traffic(self, url: str, var: Path, *, rate: float, stop: threading.Event, duration: float | None,
                seed: int | None) -> None:
        # The SDK logs on ``turnout`` itself: keep its warnings (a slow compare, say) out of the demo's
        # output. A logger's filter sees only records logged on it, so ``turnout.*`` (the server) is untouched.
        sdk_log = logging.getLogger("turnout")
        sdk_log.addFilter(_errors_only)
        try:
            self._traffic(url, var, rate=rate, stop=stop, duration=duration, seed=seed)
        finally:
            sdk_log.removeFilter(_errors_only)

    def _traffic(self, url: str, var: Path, *, rate: float, stop: threading.Event, duration: float | None,
                 seed: int | None) -> None:
        clients: dict[str, Any] = {}
        for environment, name in SDK_KEYS.items():
            path = var / name
            if path.exists():
                clients[environment] = turnout.Turnout(url, path.read_text().strip(), flush_interval=5.0,
                                                       code_version="demo-traffic", compare_timeout=2.0)
        if not clients:
            raise CommandError("no demo SDK keys in var/: run `manage.py dev_setup` first")
        try:
            for client in clients.values():
                client.wait_until_ready(timeout=30)
            totals = drive(clients, rate=rate, stop=stop, seed=seed, duration=duration)
        finally:
            for client in clients.values():
                client.flush()
                client.close()
        logger.info("demo traffic stopped", extra={"calls": totals.calls, "problems": totals.problems})
