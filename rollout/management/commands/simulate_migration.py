"""Drive a data migration through the ``turnout`` SDK against a running server (docs/migrations.md).

    manage.py simulate_migration --url http://127.0.0.1:8000 --sdk-key sdk_... --flag accounts-store \\
        --requests 2000 --write-failure-rate 0.01 --inconsistency-rate 0.02

Each request is a write (``--write-share``, default 0.3) or a read of an account of a tenant (``tenant-M``)
through ``client.migration(flag)``: two in-memory stores stand for legacy and parallel. The
non-authoritative write fails with ``--write-failure-rate`` (a divergence, identified by the account id);
a read that runs both origins gets a different balance from parallel with ``--inconsistency-rate``. The
SDK decides each tenant's stage from the server's ruleset, and reports everything; the server's
guardrails, status and divergence list read it.

Bounded by ``--requests`` (capped), loopback URLs only unless ``--allow-remote``.
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rollout.management.commands.simulate_traffic import SimulatedFailure, _rate, is_loopback

MAX_REQUESTS = 1_000_000


class Command(BaseCommand):
    help = "Send simulated data-migration reads and writes through the turnout SDK to a running server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", required=True)
        parser.add_argument("--sdk-key", required=True)
        parser.add_argument("--flag", required=True)
        parser.add_argument("--requests", type=int, default=1000)
        parser.add_argument("--tenants", type=int, default=50)
        parser.add_argument("--write-share", type=_rate, default=0.3)
        parser.add_argument("--write-failure-rate", type=_rate, default=0.0)
        parser.add_argument("--inconsistency-rate", type=_rate, default=0.0)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--flush-interval", type=float, default=1.0)
        parser.add_argument("--allow-remote", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        # imported here: the SDK is only needed by this command, not when Django loads commands
        from turnout import Turnout

        url = options["url"]
        if not options["allow_remote"] and not is_loopback(url):
            raise CommandError("--url must be a loopback address (or pass --allow-remote)")
        requests = options["requests"]
        if not 1 <= requests <= MAX_REQUESTS:
            raise CommandError(f"--requests must be from 1 to {MAX_REQUESTS}")
        if options["tenants"] < 1:
            raise CommandError("--tenants must be at least 1")
        rng = random.Random(options["seed"])
        legacy: dict[str, int] = {}
        parallel: dict[str, int] = {}
        failure, inconsistency = options["write_failure_rate"], options["inconsistency_rate"]
        client = Turnout(url, options["sdk_key"], flush_interval=options["flush_interval"], stream=False,
                         poll_interval=1.0)
        counts = {"reads": 0, "writes": 0}
        try:
            if not client.wait_until_ready(10):
                raise CommandError("the SDK could not load the ruleset")
            accounts = client.migration(options["flag"], budget=1.0, identify=lambda acct: acct[0])
            stores = {"legacy": legacy, "parallel": parallel}

            def save(side: str, account: str, amount: int, fail_other: bool, authoritative: str) -> tuple[str, int]:
                if fail_other and side != authoritative:
                    raise SimulatedFailure(f"{side} store refused the write")
                stores[side][account] = amount
                return account, amount

            def load(side: str, account: str, skew: int) -> int:
                return stores[side].get(account, 0) + (skew if side == "parallel" else 0)

            for i in range(requests):
                key, attrs = f"user-{i}", {"tenant_id": f"tenant-{rng.randrange(options['tenants'])}"}
                account = f"acct-{rng.randrange(options['tenants'] * 4)}"
                if rng.random() < options["write_share"]:
                    fails = rng.random() < failure
                    auth = accounts.stage(key, attrs).authoritative.value
                    amount = rng.randrange(1, 1000)
                    accounts.write(key, attrs, legacy=partial(save, "legacy", account, amount, fails, auth),
                                   parallel=partial(save, "parallel", account, amount, fails, auth))
                    counts["writes"] += 1
                else:
                    skew = 1 if rng.random() < inconsistency else 0
                    accounts.read(key, attrs, legacy=partial(load, "legacy", account, skew),
                                  parallel=partial(load, "parallel", account, skew))
                    counts["reads"] += 1
        finally:
            client.close()  # flushes the metrics once more
        self.stdout.write(f"simulated {counts['reads']} reads and {counts['writes']} writes of {options['flag']}")
