"""The demo's traffic: the demo workloads called through the real ``turnout`` SDK, as services would.

Development only (``make run``; ``TURNOUT_DEMO_TRAFFIC=0`` turns it off). Each call goes through
``Turnout.run()`` against the running server, so the SDK decides, runs the chosen path, compares in
the background and reports metrics and mismatch samples exactly as it does in production; the
dashboard, the readiness report and the guardrails read what it sent.

The behaviour is made to tell the demo's story and to stay put while it does:

* ``invoice-engine`` (production, mid-rollout at 25% of tenants and the pilot cohorts): the new invoice
  service is faster than the mainframe, fails one call in 80 (1.25%, under its 1.5% guardrail — close,
  not over) and differs in one comparison in 100 (under its 3% guardrail): mostly by rounding half-up,
  one time in five by leaving out the currency — two mismatch groups;
* ``customer-search`` (pilot: staff and beta testers): OpenSearch orders ties differently now and then;
* ``payment-routing`` (shadow comparison only): the new router picks another acquirer in one
  comparison in 25 (4%, under its 6% guardrail);
* ``report-export`` (legacy retired): every call on the parallel path;
* ``accounts-store`` (a data migration in ``shadow`` in staging), through ``client.migration()``: a third
  of the calls are writes to both stores, the rest reads of both, compared. The store that is not
  authoritative refuses one write in 50 (a divergence, identified by the account: the reconciliation
  trail) and the parallel store answers one compared read in 100 differently (1%, under its 2% guardrail).

Failures and differences come from counters, not coin flips, so a window's rates stay where they
are set and the guardrails do not trip by chance; subjects and latencies are random.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from typing import Any

logger = logging.getLogger("turnout.demo")


class DemoFailure(RuntimeError):
    """A simulated failure of one path (the SDK counts it; with fallback, legacy serves the call)."""


class Every:
    """True on every ``n``-th call (never with ``n == 0``); thread-safe, as shadows run on other threads."""

    def __init__(self, n: int, offset: int = 0) -> None:
        self.n, self.count, self._lock = n, offset, threading.Lock()

    def __call__(self) -> bool:
        if not self.n:
            return False
        with self._lock:
            self.count += 1
            return self.count % self.n == 0


Subject = tuple[str, dict[str, Any]]


@dataclass
class Scenario:
    """One workload's calls: who calls, what each path answers, how fast, how often it goes wrong."""

    flag: str
    environment: str
    weight: float  # share of the calls
    subject: Callable[[random.Random], Subject]
    answer: Callable[[str, Mapping[str, Any], bool], Any]  # (key, attributes, differ) -> result
    # differ: the compared result differs from the served one (whichever path is the shadow: the kind of
    # difference, and so its mismatch group, is the same either way)
    legacy_ms: float = 10.0
    parallel_ms: float = 10.0
    parallel_fails: Every = field(default_factory=lambda: Every(0))
    legacy_fails: Every = field(default_factory=lambda: Every(0))
    differs: Every = field(default_factory=lambda: Every(0))


# -- the workloads ------------------------------------------------------------------------------

COUNTRIES = ["DE", "FR", "DE", "NL", "US", "FR", "GB", "DE"]
PLANS = ["free", "pro", "enterprise", "pro"]
INDUSTRIES = ["retail", "software", "logistics", "banking", "retail", "health"]


def tenant(rng: random.Random) -> Subject:
    """A user of one of 300 tenants, with the tenant's attributes (invoice-engine buckets by tenant)."""
    t = rng.randrange(300)
    user = rng.randrange(5000)
    return f"user-{user}", {"tenant_id": f"tenant-{t}", "country": COUNTRIES[t % len(COUNTRIES)],
                            "plan": PLANS[t % len(PLANS)], "industry": INDUSTRIES[t % len(INDUSTRIES)]}


def support_agent(rng: random.Random) -> Subject:
    """A support-desk user: a few staff (internal-staff), many beta testers (user-100…1099), the rest."""
    n = rng.choice([1, 2, 3, rng.randrange(100, 1100), rng.randrange(2000, 4000), rng.randrange(2000, 4000)])
    email = f"agent{n}@example.com" if n < 10 else f"agent{n}@support.example.net"
    return f"user-{n}", {"email": email}


def merchant(rng: random.Random) -> Subject:
    m = rng.randrange(800)
    return f"merchant-{m}", {"merchant_id": f"merchant-{m}", "country": COUNTRIES[m % len(COUNTRIES)]}


def reporter(rng: random.Random) -> Subject:
    return f"user-{rng.randrange(2000)}", {}


def invoice(key: str, attributes: Mapping[str, Any], differ: bool, *, kind: Every) -> dict[str, Any]:
    n = int(key.rsplit("-", 1)[-1])
    lines = 1 + n % 7
    amount = Decimal(n % 997) + Decimal("0.125") * lines + Decimal("0.005")
    result: dict[str, Any] = {"tenant": attributes.get("tenant_id"), "lines": lines, "currency": "EUR",
                              "total": str(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))}
    if differ:
        if kind():  # the rare kind: a field the new service forgot
            del result["currency"]
        else:  # the common kind: rounding half-up where the mainframe rounds half-even
            result["total"] = str((amount + Decimal("0.01")).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    return result


def search(key: str, attributes: Mapping[str, Any], differ: bool) -> dict[str, Any]:
    n = int(key.rsplit("-", 1)[-1])
    hits = [f"customer-{(n * 7 + i * 13) % 10_000}" for i in range(5)]
    if differ:  # ties ordered differently
        hits[1], hits[2] = hits[2], hits[1]
    return {"hits": hits, "total": 5 + n % 40}


def route(key: str, attributes: Mapping[str, Any], differ: bool) -> dict[str, Any]:
    acquirers = ["acquirer-a", "acquirer-b", "acquirer-c"]
    n = int(key.rsplit("-", 1)[-1])
    choice = acquirers[n % 3]
    if differ:
        choice = acquirers[(n + 1) % 3]
    return {"acquirer": choice, "currency": "EUR"}


def export(key: str, attributes: Mapping[str, Any], differ: bool) -> dict[str, Any]:
    return {"format": "csv", "rows": int(key.rsplit("-", 1)[-1]) % 500}


def scenarios() -> list[Scenario | MigrationScenario]:
    """The demo workloads' calls (fresh counters each time)."""
    rare = Every(5)  # one difference in five is the missing field: one in 500 comparisons
    return [
        Scenario("invoice-engine", "production", 0.45, tenant,
                 lambda k, a, d: invoice(k, a, d, kind=rare),
                 legacy_ms=30, parallel_ms=18, parallel_fails=Every(80), legacy_fails=Every(500, offset=250),
                 differs=Every(100, offset=37)),
        Scenario("invoice-engine", "staging", 0.10, tenant, lambda k, a, d: invoice(k, a, d, kind=rare),
                 legacy_ms=30, parallel_ms=18, parallel_fails=Every(60), differs=Every(40)),
        Scenario("customer-search", "production", 0.20, support_agent, search, legacy_ms=25, parallel_ms=9,
                 differs=Every(30, offset=11)),
        Scenario("payment-routing", "production", 0.20, merchant, route, legacy_ms=6, parallel_ms=4,
                 differs=Every(25, offset=5)),
        Scenario("report-export", "production", 0.05, reporter, export, legacy_ms=40, parallel_ms=15),
        # the first refused write and the first inconsistent read come early, so a short run shows both
        MigrationScenario("accounts-store", "staging", 0.10, other_write_fails=Every(50, offset=45),
                          inconsistent=Every(100, offset=92)),
    ]


@dataclass
class MigrationScenario:
    """One data migration's calls through ``client.migration()``: reads and writes of a tenant's account in
    two stores. What each store answers is a function of the account (so a refused write does not drift the
    stores apart and the consistency rate stays where it is set); the store that is not authoritative runs on
    the SDK's pool, which is how a call tells the two apart."""

    flag: str
    environment: str
    weight: float
    legacy_ms: float = 8.0
    parallel_ms: float = 5.0
    writes: Every = field(default_factory=lambda: Every(3))  # every third call is a write
    other_write_fails: Every = field(default_factory=lambda: Every(0))  # counted over the other store's writes
    inconsistent: Every = field(default_factory=lambda: Every(0))  # counted over parallel's compared reads
    migrations: dict[int, Any] = field(default_factory=dict)  # per SDK client: its ``client.migration(flag)``

    def migration(self, client: Any) -> Any:
        found = self.migrations.get(id(client))
        if found is None:
            found = self.migrations[id(client)] = client.migration(self.flag, budget=0.5,
                                                                   identify=lambda saved: saved["account"])
        return found


def account_balance(account: str) -> int:
    return sum(map(ord, account)) * 37 % 10_000


def _store(scenario: MigrationScenario, rng: random.Random, side: str, account: str, caller: int, *,
           write: bool) -> Callable[[], Any]:
    """One store's side of a migration call (the other store's runs on the SDK's pool)."""
    def call() -> Any:
        time.sleep((scenario.parallel_ms if side == "parallel" else scenario.legacy_ms) * rng.uniform(0.6, 1.6)
                   / 1000)
        other = threading.get_ident() != caller
        if write:
            if other and scenario.other_write_fails():
                raise DemoFailure(f"{scenario.flag}: the {side} store refused the write of {account}")
            return {"account": account, "balance": account_balance(account)}
        if other and side == "parallel" and scenario.inconsistent():
            return account_balance(account) + 1
        return account_balance(account)
    return call


def migration_call_once(client: Any, scenario: MigrationScenario, rng: random.Random) -> None:
    """One read or write of a tenant's account through ``client.migration()`` (the authoritative store never
    fails here, so nothing reaches the caller)."""
    key, attributes = tenant(rng)
    account = f"acct-{attributes['tenant_id'].rsplit('-', 1)[-1]}"
    accounts, caller = scenario.migration(client), threading.get_ident()
    write = scenario.writes()
    legacy = _store(scenario, rng, "legacy", account, caller, write=write)
    parallel = _store(scenario, rng, "parallel", account, caller, write=write)
    if write:
        accounts.write(key, attributes, legacy=legacy, parallel=parallel)
    else:
        accounts.read(key, attributes, legacy=legacy, parallel=parallel)


# -- user feedback (rollout/feedback): now and then a subject tells how the call felt ---------------

FEEDBACK_EVERY = 25  # one call in 25 leaves feedback
FEEDBACK_COMMENTS = {
    "parallel": ["Much quicker than before.", "Looks the same, loads faster.", "The totals look right to me.",
                 "Had to retry once, then fine."],
    "legacy": ["Slow as usual.", "Works, but takes a while.", "Fine."],
}


def leave_feedback(client: Any, scenario: Scenario, rng: random.Random, key: str,
                   attributes: Mapping[str, Any]) -> None:
    """A score (the faster parallel path scores a little better) and sometimes a comment, through
    ``client.feedback()``; the path is the one the SDK decides for the subject, read without counting a call."""
    ruleset = client.ruleset
    if ruleset is None:
        return
    path = str(ruleset.decide(scenario.flag, key, attributes).path)
    score = rng.choices([5, 4, 3, 2], [5, 4, 1, 0.3] if path == "parallel" else [3, 4, 2, 0.5])[0]
    comment = rng.choice(FEEDBACK_COMMENTS[path]) if rng.random() < 0.3 else None
    client.feedback(scenario.flag, key, score=score, comment=comment, attributes=attributes)


# -- running them -------------------------------------------------------------------------------


@dataclass
class Totals:
    calls: int = 0
    unrecovered: int = 0
    problems: int = 0


def _path(scenario: Scenario, rng: random.Random, parallel: bool, key: str, attributes: Mapping[str, Any],
          caller: int) -> Callable[[], Any]:
    """One path of one call. The served path runs on the caller's thread, the compared one (the shadow) on
    the SDK's pool: failures are counted over served calls and differences over comparisons, so the
    error rate and the mismatch rate the server sees are the ones set, whatever the split."""
    def call() -> Any:
        ms = scenario.parallel_ms if parallel else scenario.legacy_ms
        time.sleep(ms * rng.uniform(0.6, 1.6) / 1000)
        if threading.get_ident() != caller:  # the shadow of a comparison
            return scenario.answer(key, attributes, scenario.differs())
        fails = scenario.parallel_fails if parallel else scenario.legacy_fails
        if fails():
            raise DemoFailure(f"{scenario.flag}: the {'parallel' if parallel else 'legacy'} path failed")
        return scenario.answer(key, attributes, False)
    return call


def call_once(clients: Mapping[str, Any], scenario: Scenario | MigrationScenario, rng: random.Random,
              totals: Totals) -> None:
    """One call of a workload through ``Turnout.run()`` (legacy failures are the host's: counted here), or of
    the data migration through ``client.migration()``."""
    client = clients.get(scenario.environment)
    if client is None:
        return
    if isinstance(scenario, MigrationScenario):
        migration_call_once(client, scenario, rng)
        totals.calls += 1
        return
    key, attributes = scenario.subject(rng)
    caller = threading.get_ident()
    try:
        client.run(scenario.flag, key, attributes, legacy=_path(scenario, rng, False, key, attributes, caller),
                   parallel=_path(scenario, rng, True, key, attributes, caller), fallback=True)
    except DemoFailure:
        totals.unrecovered += 1
    totals.calls += 1
    if totals.calls % FEEDBACK_EVERY == 0 and scenario.flag in ("invoice-engine", "customer-search"):
        leave_feedback(client, scenario, rng, key, attributes)


def drive(clients: Mapping[str, Any], *, rate: float, stop: threading.Event, seed: int | None = None,
          duration: float | None = None, totals: Totals | None = None) -> Totals:
    """Call the demo workloads at about ``rate`` calls a second until ``stop`` is set (or ``duration``
    seconds have passed). Nothing escapes: a problem is logged and the traffic goes on."""
    rng = random.Random(seed)
    totals = totals or Totals()
    plan = scenarios()
    weights = [s.weight for s in plan]
    started = time.monotonic()
    interval = 1.0 / rate
    while not stop.is_set():
        if duration is not None and time.monotonic() - started >= duration:
            break
        scenario = rng.choices(plan, weights)[0]
        try:
            call_once(clients, scenario, rng, totals)
        except Exception:  # the demo must not take `make run` down with it
            totals.problems += 1
            logger.exception("demo traffic: a call failed")
        delay = started + totals.calls * interval - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        elif delay < -5:  # fell behind (a slow machine): do not burst to catch up
            started = time.monotonic() - totals.calls * interval
    return totals
