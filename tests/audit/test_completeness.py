"""Completeness: every service and every write endpoint leaves exactly one audit event (none when rolled back).

Services and endpoints are discovered, not listed: a new one without a scenario in
``tests/audit/scenarios.py`` fails here.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings
from django.contrib import admin
from django.db import connection
from django.urls import URLPattern, URLResolver, get_resolver

from audit.models import AuditChainHead, AuditEvent
from common.actors import Actor
from common.request_context import request_id_var
from tests.audit.scenarios import ANY, ENDPOINT_SCENARIOS, SERVICE_SCENARIOS, Api, EndpointExpect, Expect

SERVICE_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# Functions that look like services but are not entry points, with the reason.
NOT_ENTRY_POINTS = {
    "audit_record": "the one audit writer itself, called inside every service below",
    # The ``*_state`` helpers do an entry point's work on a locked FlagState inside the caller's
    # transaction (entry points, change-request approval, the guardrail check and the scheduler);
    # their events are asserted through the entry points that call them.
    **dict.fromkeys(
        ("write_state", "write_state_break_glass", "update_state", "kill_state", "resume_state", "retire_state",
         "advance_state", "rollback_state", "pause_state", "set_plan_state", "set_guardrail_state",
         "mark_known_state", "promote_state", "set_queries_state", "set_feedback_rule_state"),
        "an in-transaction helper taking a locked FlagState, not an entry point (no transaction of its own)"),
}


ROOMS = ("rollout.plans", "rollout.access", "rollout.telemetry", "rollout.delivery")


def _service_modules() -> Iterator[Any]:
    yield importlib.import_module("actions.submit")  # the action layer: submit and change-request decisions
    for room in ROOMS:  # rollout's rooms hold services of their own
        package = importlib.import_module(room)
        for info in pkgutil.iter_modules(package.__path__):
            yield importlib.import_module(f"{room}.{info.name}")
    base = Path(settings.BASE_DIR).resolve()
    for config in apps.get_app_configs():
        if not Path(config.path).resolve().is_relative_to(base):
            continue
        try:
            module = importlib.import_module(f"{config.name}.services")
        except ModuleNotFoundError as exc:
            if exc.name == f"{config.name}.services":
                continue
            raise
        yield module
        if hasattr(module, "__path__"):
            for info in pkgutil.iter_modules(module.__path__):
                yield importlib.import_module(f"{module.__name__}.{info.name}")


def discover_services() -> dict[str, Any]:
    """Every public ``<entity>_<action>`` function taking a keyword-only ``actor``, by name."""
    found: dict[str, Any] = {}
    for module in _service_modules():
        for name, fn in vars(module).items():
            if not inspect.isfunction(fn) or fn.__module__ != module.__name__ or not SERVICE_NAME.match(name):
                continue
            if name in NOT_ENTRY_POINTS:
                continue
            param = inspect.signature(fn).parameters.get("actor")
            if param is not None and param.kind is inspect.Parameter.KEYWORD_ONLY:
                assert name not in found, f"two services named {name}"
                found[name] = fn
    return found


SERVICES = discover_services()


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[tuple[str, Any, str | None]]:
    for p in patterns:
        if isinstance(p, URLResolver):
            if p.namespace == "admin":
                continue  # the admin is checked below: every ModelAdmin is read-only
            yield from _walk(p.url_patterns, prefix + str(p.pattern))
        elif isinstance(p, URLPattern):
            yield prefix + str(p.pattern), p.callback, p.name


def _declared_write_methods(callback: Any) -> set[str] | None:
    """Write methods a class-based view handles; None for a function view (probed instead)."""
    actions = getattr(callback, "actions", None)
    if actions:  # a DRF viewset route
        return {m.upper() for m in actions} & set(WRITE_METHODS)
    cls = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if cls is None:
        return None
    return {m for m in WRITE_METHODS if hasattr(cls, m.lower())}


def _sample_path(route: str) -> str:
    """A concrete path for a route (``<int:x>`` → 1 …), for probing function views."""
    samples = {"int": "1", "uuid": str(uuid.UUID(int=1)), "slug": "x", "str": "x", "path": "x"}
    path = re.sub(r"<(?:(\w+):)?\w+>", lambda m: samples.get(m.group(1) or "str", "x"), route)
    return "/" + path.lstrip("^").rstrip("$").replace("\\", "")


def discover_write_endpoints(client: Any) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route, callback, name in _walk(get_resolver().url_patterns):
        methods = _declared_write_methods(callback)
        if methods is None:
            # A function view: a read-only one answers 405 to every write method.
            methods = {m for m in WRITE_METHODS
                       if client.generic(m, _sample_path(route)).status_code != 405}
        found.update((name or route, m) for m in methods)
    return found


# --- helpers ---------------------------------------------------------------------------------------------


def _fingerprint() -> dict[str, list[dict[str, Any]]]:
    """Every row of every domain table (ours and auth's), to prove a rolled-back change left nothing."""
    ours = {c.label for c in apps.get_app_configs()
            if Path(c.path).resolve().is_relative_to(Path(settings.BASE_DIR).resolve())} | {"auth"}
    rows = {}
    for model in apps.get_models(include_auto_created=True):
        if model._meta.app_label in ours and model not in (AuditEvent, AuditChainHead):
            rows[model._meta.label] = sorted(model.objects.values(), key=repr)
    return rows


def _matches(expected: Any, actual: Any) -> bool:
    if expected is ANY:
        return True
    if expected is None:
        return actual is None
    return isinstance(actual, dict) and all(actual.get(k) == v for k, v in expected.items())


def _last_sequence() -> int:
    return AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first() or 0


class _FailAfterAuditWrite:
    """Raise right after the audit writer moves the chain head: the change and its event are written."""

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("UPDATE") and "audit_auditchainhead" in sql:
            raise RuntimeError("injected failure after the audit event")
        return result


@pytest.fixture(autouse=True)
def _tasks_queued_not_run(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[Any, ...]]]:
    """Celery tasks queued by a call (on commit) are listed here, not run inline as elsewhere in the tests:
    a task is a unit of work of its own, run later by a worker, and the services it calls have their own
    scenarios (a background verification's outcome event is not part of the request that queued it)."""
    from celery.app.task import Task

    queued: list[tuple[str, tuple[Any, ...]]] = []

    def apply_async(self: Task, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        queued.append((self.name, tuple(args or ())))

    monkeypatch.setattr(Task, "apply_async", apply_async)
    return queued


def _actor(expect: Expect, cause: str) -> Actor:
    """A system actor, or the named user's when the service only acts for a person (approvals, …)."""
    if expect.user is None:
        return Actor.system(cause)
    from django.contrib.auth import get_user_model

    return Actor.for_user(get_user_model().objects.get(username=expect.user))


# --- services ---------------------------------------------------------------------------------------------


def test_services__discovered__each_has_a_scenario():
    missing = sorted(set(SERVICES) - set(SERVICE_SCENARIOS))
    assert not missing, f"services without a completeness scenario in tests/audit/scenarios.py: {missing}"
    stale = sorted(set(SERVICE_SCENARIOS) - set(SERVICES))
    assert not stale, f"scenarios for services that no longer exist: {stale}"
    assert {"flag_state_kill", "sdk_key_revoke", "auth_login_failed_recorded", "audit_export_create"} <= set(SERVICES)


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service__called__leaves_exactly_one_event_with_actor_object_and_request_id(
        name, django_capture_on_commit_callbacks):
    expect: Expect = SERVICE_SCENARIOS[name]()
    start = _last_sequence()
    actor = _actor(expect, f"completeness:{name}")
    request_id = f"req-{name}"
    token = request_id_var.set(request_id)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = expect.call(actor)
    finally:
        request_id_var.reset(token)
    events = list(AuditEvent.objects.filter(sequence__gt=start))
    assert len(events) == 1, f"{name} wrote {[e.action for e in events]}"
    [event] = events
    key = expect.object_key(result) if callable(expect.object_key) else expect.object_key
    assert (event.action, event.object_type, event.object_key, event.environment) == (
        expect.action, expect.object_type, key, expect.environment)
    assert (event.actor, event.actor_type, event.request_id) == (actor.label, actor.type, request_id)
    assert _matches(expect.before, event.before), f"before: {event.before}"
    assert _matches(expect.after, event.after), f"after: {event.after}"


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service__fails_after_its_audit_write__rolls_back_change_and_event(name):
    expect: Expect = SERVICE_SCENARIOS[name]()
    start, head = _last_sequence(), AuditChainHead.objects.values_list("sequence", "hash").get()
    before = _fingerprint()
    with connection.execute_wrapper(_FailAfterAuditWrite()), pytest.raises(RuntimeError, match="injected"):
        expect.call(_actor(expect, "completeness"))
    assert not AuditEvent.objects.filter(sequence__gt=start).exists()
    assert AuditChainHead.objects.values_list("sequence", "hash").get() == head
    assert _fingerprint() == before


# --- write endpoints ----------------------------------------------------------------------------------


@pytest.fixture
def api(db: Any, client: Any) -> Api:
    from rollout.access.keys import api_token_create
    from rollout.access.users import user_create

    password = Api.password
    user_create(actor=Actor.system("setup"), username="root", password=password, roles=["admin"])
    token, secret = api_token_create(actor=Actor.system("setup"), username="root", name="completeness")
    return Api(client=client, token=secret, actor=f"root via {token.prefix}")


def test_write_endpoints__discovered__each_has_a_scenario(api):
    found = discover_write_endpoints(api.client)
    missing = sorted(found - set(ENDPOINT_SCENARIOS))
    assert not missing, f"write endpoints without a completeness scenario in tests/audit/scenarios.py: {missing}"
    stale = sorted({route for route in ENDPOINT_SCENARIOS if route[1] in WRITE_METHODS} - found)
    assert not stale, f"scenarios for write endpoints that no longer exist: {stale}"
    assert ("login", "POST") in found and ("logout", "POST") in found


def test_admin__every_model_admin__is_read_only(rf, admin_user):
    request = rf.get("/admin/")
    request.user = admin_user
    for model, model_admin in admin.site._registry.items():
        assert not model_admin.has_add_permission(request), model
        assert not model_admin.has_change_permission(request), model
        assert not model_admin.has_delete_permission(request), model


@pytest.mark.parametrize("route", sorted(ENDPOINT_SCENARIOS), ids=lambda r: f"{r[1]} {r[0]}")
def test_write_endpoint__called__leaves_one_event_with_request_id(route, api, django_capture_on_commit_callbacks):
    expect: EndpointExpect = ENDPOINT_SCENARIOS[route](api)
    start = _last_sequence()
    before = _fingerprint() if expect.action is None else {}
    request_id = f"req-{route[0]}-{route[1]}".replace("_", "-")
    kwargs: dict[str, Any] = {"headers": {**expect.headers, "X-Request-ID": request_id}}
    if expect.data is not None:
        kwargs["data"] = expect.data
        if expect.method not in ("GET", "POST") or not expect.form:
            kwargs["content_type"] = "application/x-www-form-urlencoded" if expect.form else "application/json"
    with django_capture_on_commit_callbacks(execute=True):
        response = getattr(api.client, expect.method.lower())(expect.path, **kwargs)
        if getattr(response, "streaming", False):
            b"".join(response.streaming_content)
    assert response.status_code == expect.status, getattr(response, "content", b"")[:500]
    assert response["X-Request-ID"] == request_id
    events = list(AuditEvent.objects.filter(sequence__gt=start))
    if expect.action is None:  # records nothing, so it must change nothing (bookkeeping it names aside)
        assert expect.reason and events == []
        after = _fingerprint()
        changed = sorted(label for label in after.keys() | before.keys()
                         if label not in expect.touches and after.get(label) != before.get(label))
        assert not changed, f"wrote no audit event but changed {changed}"
        return
    assert len(events) == 1, [e.action for e in events]
    [event] = events
    key = expect.object_key(response) if callable(expect.object_key) else expect.object_key
    assert (event.action, event.object_type, event.object_key) == (expect.action, expect.object_type, key)
    assert (event.actor, event.request_id) == (expect.actor, request_id)
