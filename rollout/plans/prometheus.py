"""Guardrail limits read from Prometheus: a PromQL instant query per limit, next to the SDK's own metrics.

A service's own error and latency metrics are often the best guardrail: ``GuardrailQuery`` holds a PromQL
query (``$window`` is replaced by the guardrail's window, e.g. ``300s``) and the largest value it may return.
``query_results`` runs each query as an instant query at the check's time against ``TURNOUT_PROMETHEUS_URL``
(the HTTP API's ``/api/v1/query``) and takes the largest sample of the result; the health judge
(``rollout/plans/health.py``) adds them to its checks, so a breach takes the guardrail's action and its query
and value are in the audit event, ``Guardrail.last_check`` and the readiness report.

Prometheus unreachable, a query it refuses, or an empty result: the check is not judged (value None) and the
reason is kept with it — a guardrail never acts on a figure it could not read.

Writes: ``set_queries_state`` (the action ``flag_state.guardrail_queries_set``), inside the action's transaction.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit.models import AuditEvent
from audit.names import Action
from common.actors import Actor
from common.conf import get_setting
from common.errors import ValidationFailed
from common.services import check_version
from rollout.models import FlagState, Guardrail, GuardrailQuery
from rollout.policy import Approval, require_approval_if_needed
from rollout.services.flags import write_state
from rollout.snapshots import flag_state_snapshot

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
MAX_QUERIES = 10
MAX_QUERY_LENGTH = 2000


@dataclass(frozen=True)
class QueryResult:
    name: str
    query: str  # as sent, ``$window`` replaced
    limit: float
    value: float | None
    error: str = ""


def _largest(data: Any) -> float | None:
    kind, result = data.get("resultType"), data.get("result")
    values: list[Any] = []
    if kind in {"scalar", "string"}:
        values = [result[1]]
    elif kind == "vector":
        values = [sample["value"][1] for sample in result]
    numbers = [float(v) for v in values]
    numbers = [n for n in numbers if not math.isnan(n)]
    return max(numbers) if numbers else None


def run_query(query: str, *, at: datetime, url: str | None = None) -> float | None:
    """The largest sample an instant query returns (None: no sample); raises ``OSError`` / ``ValueError``."""
    base = (url if url is not None else get_setting("PROMETHEUS_URL")).rstrip("/")
    if not base:
        raise ValueError("no Prometheus server configured (TURNOUT_PROMETHEUS_URL)")
    params = urllib.parse.urlencode({"query": query, "time": f"{at.timestamp():.3f}"})
    request = urllib.request.Request(f"{base}/api/v1/query?{params}", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=float(get_setting("PROMETHEUS_TIMEOUT"))) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", "")
        except ValueError:
            message = ""
        raise ValueError(f"Prometheus answered {exc.code}: {message or exc.reason}") from None
    if body.get("status") != "success":
        raise ValueError(f"Prometheus: {body.get('error', 'query failed')}")
    return _largest(body.get("data") or {})


def query_results(guardrail: Guardrail, *, at: datetime) -> list[QueryResult]:
    """Every query of a guardrail, run now (an empty list when it has none: no request is made)."""
    results: list[QueryResult] = []
    for q in guardrail.queries.all():
        text = q.query.replace("$window", f"{guardrail.window_seconds}s")
        try:
            value, error = run_query(text, at=at), ""
        except (OSError, ValueError) as exc:
            value, error = None, str(getattr(exc, "reason", exc))[:300]
        if value is None and not error:
            error = "no sample in the result"
        results.append(QueryResult(name=q.name, query=text, limit=q.max_value, value=value, error=error))
    return results


# --- configuration ---------------------------------------------------------------------------------


def _clean(queries: Any) -> list[GuardrailQuery]:
    if isinstance(queries, str | bytes) or not isinstance(queries, Sequence):
        raise ValidationFailed.field("queries", "must be a list of {name, query, max_value}")
    if len(queries) > MAX_QUERIES:
        raise ValidationFailed.field("queries", f"at most {MAX_QUERIES} queries")
    rows: list[GuardrailQuery] = []
    names: set[str] = set()
    for index, raw in enumerate(queries):
        where = f"queries[{index}]"
        if not isinstance(raw, dict) or set(raw) - {"name", "query", "max_value"}:
            raise ValidationFailed.field(where, "must be an object of name, query and max_value")
        name, query, limit = raw.get("name"), raw.get("query"), raw.get("max_value")
        if not isinstance(name, str) or not NAME.match(name) or name in names:
            raise ValidationFailed.field(f"{where}.name", "a unique key: 1-63 of a-z 0-9 - _ .")
        if not isinstance(query, str) or not query.strip() or len(query) > MAX_QUERY_LENGTH:
            raise ValidationFailed.field(f"{where}.query", f"a PromQL query, 1-{MAX_QUERY_LENGTH} characters")
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not math.isfinite(limit):
            raise ValidationFailed.field(f"{where}.max_value", "must be a number")
        names.add(name)
        rows.append(GuardrailQuery(name=name, query=query.strip(), max_value=float(limit)))
    return rows


def queries_snapshot(guardrail: Guardrail | None) -> list[dict[str, Any]]:
    if guardrail is None:
        return []
    return [{"name": q.name, "query": q.query, "max_value": q.max_value} for q in guardrail.queries.all()]


def set_queries_state(state: FlagState, *, actor: Actor, version: int | None, reason: str = "",
                      approval: Approval | None = None, queries: Any = ()) -> AuditEvent:
    """Inside the caller's transaction: replace a flag state's Prometheus queries (the guardrail is created
    with its defaults when there is none), one audit event."""
    check_version(state, version, what=f"flag state '{state.flag.key}@{state.environment.key}'")
    require_approval_if_needed(state, Action.FLAG_STATE_GUARDRAIL_QUERIES_SET, actor=actor, approval=approval)
    rows = _clean(queries)
    guardrail = Guardrail.objects.filter(flag_state=state).first()
    before = {**flag_state_snapshot(state), "queries": queries_snapshot(guardrail)}
    if guardrail is None:
        guardrail = Guardrail.objects.create(flag_state=state)
    guardrail.queries.all().delete()
    for row in rows:
        row.guardrail = guardrail
        row.save(force_insert=True)
    extra: dict[str, Any] = {"queries": queries_snapshot(guardrail)}
    if approval:
        extra["approval"] = approval.as_audit()
    return write_state(state, actor=actor, action=Action.FLAG_STATE_GUARDRAIL_QUERIES_SET, before=before,
                       reason=reason, extra=extra, ruleset=False)
