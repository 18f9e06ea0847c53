"""Stale flags: detection with an injected clock, last evaluation from metrics, archive and restore
through the action layer (archived flags leave the ruleset)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from common import clock
from tests.rollouts.conftest import add_metrics
from tests.ui_support import HTMX, signed_in, text

pytestmark = pytest.mark.django_db


@pytest.fixture
def retired(flag: Any, actor: Any) -> Any:
    """invoice-engine retired in staging (every subject on parallel)."""
    from rollout.services.flags import flag_state_retire, flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=None, enabled=True,
                      percentage_value=100)
    flag_state_retire(actor=actor, flag="invoice-engine", environment="staging")
    return flag


def test_stale_flags__retired_40_days_ago__listed_with_last_evaluation_per_environment(retired: Any) -> None:
    from rollout.stale import stale_flags

    now = clock.now()
    add_metrics("staging", "invoice-engine", now - timedelta(days=3), "parallel", calls=10)
    add_metrics("staging", "invoice-engine", now - timedelta(days=20), "parallel", calls=10)
    assert stale_flags(days=30, now=now + timedelta(days=10)) == []
    [row] = stale_flags(days=30, now=now + timedelta(days=40))
    assert (row.key, row.why, row.archived) == ("invoice-engine", "legacy retired", False)
    assert row.last_evaluated["production"] is None
    assert row.last_evaluated["staging"] == (now - timedelta(days=3)).replace(second=0, microsecond=0)


def test_stale_flags__never_started__unchanged(flag: Any) -> None:
    from rollout.stale import stale_flags

    [row] = stale_flags(days=7, now=clock.now() + timedelta(days=8))
    assert row.why == "unchanged"


def test_flag_archive__still_evaluated__409_names_the_environment(retired: Any, actor: Any,
                                                                 audit_events: Any) -> None:
    from common.errors import Conflict
    from rollout.stale import flag_archive

    add_metrics("staging", "invoice-engine", clock.now() - timedelta(days=2), "parallel", calls=5)
    with pytest.raises(Conflict, match="still evaluated in staging"):
        flag_archive(actor=actor, key="invoice-engine")
    assert audit_events() == []


def test_flag_archive__nobody_evaluates__leaves_the_ruleset__restore_brings_it_back(retired: Any, actor: Any,
                                                                                  audit_events: Any) -> None:
    from rollout.delivery.ruleset import build_document
    from rollout.models import Environment
    from rollout.stale import flag_archive, flag_restore

    add_metrics("staging", "invoice-engine", clock.now() - timedelta(days=90), "parallel", calls=5)
    staging = Environment.objects.get(key="staging")
    version = staging.ruleset_version
    flag_archive(actor=actor, key="invoice-engine", reason="code paths deleted")
    staging.refresh_from_db()
    assert "invoice-engine" not in build_document(staging)["flags"] and staging.ruleset_version == version + 1
    [event] = audit_events()
    assert (event.action, event.before["archived"], event.after["archived"], event.reason) == (
        "flag.archived", False, True, "code paths deleted")
    assert event.after["last_evaluated"]["production"] is None
    flag_restore(actor=actor, key="invoice-engine")
    staging.refresh_from_db()
    assert build_document(staging)["flags"]["invoice-engine"]["retired"] is True
    assert [e.action for e in audit_events()] == ["flag.archived", "flag.restored"]


def test_flag_archive__live_in_approval_environment__editor_gets_a_change_request(flag: Any, actor: Any) -> None:
    from rollout.services.flags import flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="production", version=None, enabled=True,
                      percentage_value=100)
    response = signed_in("editor").post("/stale-flags/invoice-engine/archive/", {"reason": "done"}, **HTMX)
    assert response.status_code == 200
    assert "Waiting for approval" in text(response)
    flag.refresh_from_db()
    assert flag.archived_at is None


def test_stale_page__ui_lists_and_archives(flag: Any, audit_events: Any) -> None:
    client = signed_in("editor", "eve")
    page = text(client.get("/stale-flags/?days=0"))
    assert "invoice-engine" in page and "unchanged" in page and "never" in page
    response = client.post("/stale-flags/invoice-engine/archive/", {"reason": "unused", "days": "0"}, **HTMX)
    assert response.status_code == 200
    assert "archived" in text(response)
    assert [e.action for e in audit_events() if e.actor == "eve"] == ["flag.archived"]
    assert signed_in("viewer").post("/stale-flags/invoice-engine/restore/", **HTMX).status_code == 403


def test_stale_flags_api__days_and_bad_days(flag: Any, tokens: Any = None) -> None:
    client = signed_in("viewer")
    assert client.get("/api/v1/stale-flags/?days=0").json()[0]["key"] == "invoice-engine"
    assert client.get("/api/v1/stale-flags/?days=30").json() == []
    bad = client.get("/api/v1/stale-flags/?days=-1")
    assert bad.status_code == 400 and "days" in bad.json()["error"]["fields"]
