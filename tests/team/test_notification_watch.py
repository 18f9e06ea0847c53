"""Notices nobody's action announces: new divergences of a data migration (a burst is one notice) and newly
stale flags — each recorded as one audit event by ``system:notifications`` and delivered like any other;
time moved with the injected clock. And the outbox every notifiable event leaves in its own transaction."""

from __future__ import annotations

from typing import Any

import pytest

from common import clock
from common.actors import Actor
from tests.team.conftest import Mailbox

pytestmark = pytest.mark.django_db

DIVERGENCES, STALE = "migration.divergences", "flags.stale"


def subscriber(actor: Actor, username: str, role: str, kinds: list[str]) -> Any:
    from notifications.services import subscription_create
    from rollout.access.users import user_create

    user = user_create(actor=actor, username=username, password=None, roles=[role])
    subscription_create(actor=Actor.for_user(user), channel="email", address=f"{username}@example.org", kinds=kinds)
    return user


@pytest.fixture
def on(flag: Any, actor: Actor) -> None:
    from rollout.services.flags import flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=None, enabled=True,
                      percentage_value=20)


def diverge(state: Any, n: int, *, origin: str = "legacy", at: Any) -> None:
    from rollout.models import Divergence

    for i in range(n):
        Divergence.objects.create(flag_state=state, key_hash=f"{origin}-{at.timestamp()}-{i}", origin=origin,
                                  operation="write", identifier="", stage="live", count=2, first_seen=at,
                                  last_seen=at)


def test_divergences_watch__burst__one_notice__quiet_for_the_interval__then_the_rest_counted_in_one(
        flag: Any, actor: Actor, mailbox: Mailbox, settings: Any, audit_events: Any,
        django_capture_on_commit_callbacks: Any) -> None:
    from notifications.watch import divergences_watch
    from rollout.models import FlagState

    settings.TURNOUT_NOTIFY_DIVERGENCE_INTERVAL = 900
    subscriber(actor, "vic", "viewer", [DIVERGENCES])
    subscriber(actor, "kim", "viewer", [STALE])  # not told: another kind
    state = FlagState.objects.get(flag__key="invoice-engine", environment__key="staging")
    with clock.frozen() as frozen, django_capture_on_commit_callbacks(execute=True):
        diverge(state, 3, at=frozen.now())
        [event] = divergences_watch()
        diverge(state, 2, origin="parallel", at=frozen.tick(60))
        assert divergences_watch() == []  # within the interval: waits, counted
        frozen.tick(900)
        [second] = divergences_watch()
        assert divergences_watch(now=frozen.tick(3600)) == []  # nothing new
    assert (event.actor, event.action, event.object_type, event.object_key, event.environment) == (
        "system:notifications", "migration.divergences_detected", "flag_state", "invoice-engine@staging", "staging")
    assert {k: v for k, v in event.after.items() if k not in ("through_id", "at")} == {
        "new": 3, "open": 3, "occurrences": 6, "by_origin": {"legacy write": 3}}
    assert {k: second.after[k] for k in ("new", "open", "by_origin")} == {
        "new": 2, "open": 5, "by_origin": {"parallel write": 2}}
    assert [e.action for e in audit_events()].count("migration.divergences_detected") == 2
    assert [(m["To"], m["Subject"]) for m in mailbox.messages] == [
        ("vic@example.org", "[Turnout] New divergences: invoice-engine@staging")] * 2
    assert "3 new unresolved divergence(s)" in mailbox.messages[0].get_payload()
    assert "2 new unresolved divergence(s) in the data migration of invoice-engine@staging (2 parallel write); " \
           "5 unresolved in all" in mailbox.messages[1].get_payload()


def test_divergences_watch__resolved_ones__not_told(flag: Any, actor: Actor) -> None:
    from notifications.watch import divergences_watch
    from rollout.models import Divergence, FlagState

    state = FlagState.objects.get(flag__key="invoice-engine", environment__key="staging")
    diverge(state, 1, at=clock.now())
    Divergence.objects.update(resolved_at=clock.now(), resolved_by="amy", resolution="replayed")
    assert divergences_watch() == []


def test_stale_flags_watch__newly_stale__one_notice_listing_them__not_again(
        flag: Any, actor: Actor, mailbox: Mailbox, audit_events: Any, django_capture_on_commit_callbacks: Any) -> None:
    from notifications.watch import stale_flags_watch

    subscriber(actor, "vic", "viewer", [STALE])
    with clock.frozen() as frozen, django_capture_on_commit_callbacks(execute=True):
        assert stale_flags_watch(days=7) == []  # changed today
        [event] = stale_flags_watch(days=7, now=frozen.tick(days=8))
        assert stale_flags_watch(days=7, now=frozen.tick(days=1)) == []  # told already
    assert (event.actor, event.action, event.object_type, event.object_key) == (
        "system:notifications", "flags.stale_detected", "stale_flags", "report")
    assert {k: v for k, v in event.after.items() if k != "at"} == {
        "new": [{"key": "invoice-engine", "workload": "billing", "why": "unchanged"}], "stale": ["invoice-engine"],
        "days": 7}
    [message] = mailbox.messages
    assert (message["To"], message["Subject"]) == ("vic@example.org", "[Turnout] 1 flag(s) became stale")
    assert "- invoice-engine (billing): unchanged" in message.get_payload()


def test_subscribe__new_kinds__offered_on_the_page(envs: Any) -> None:
    from tests.ui_support import signed_in, text

    page = text(signed_in("viewer").get("/notifications/"))
    assert "A data migration has new divergences" in page and "Flags became stale" in page


# -- the outbox -------------------------------------------------------------------------------------------


def test_outbox__notifiable_change__row_in_its_transaction__handed_over_and_deleted_after_commit(
        on: None, actor: Actor, django_capture_on_commit_callbacks: Any) -> None:
    from audit.models import AuditEvent, NotificationOutbox
    from rollout.services.flags import flag_state_kill

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        flag_state_kill(actor=actor, flag="invoice-engine", environment="staging")
    kill = AuditEvent.objects.get(action="flag_state.killed")
    assert list(NotificationOutbox.objects.values_list("sequence", flat=True)) == [kill.sequence]
    for callback in callbacks:
        callback()
    assert not NotificationOutbox.objects.exists()


class _RolledBack(Exception):
    pass


def test_outbox__rolled_back_change__leaves_no_row(on: None, actor: Actor) -> None:
    from audit.models import NotificationOutbox
    from audit.services import action_atomic
    from rollout.services.flags import flag_state_kill

    with pytest.raises(_RolledBack), action_atomic():
        flag_state_kill(actor=actor, flag="invoice-engine", environment="staging")
        assert NotificationOutbox.objects.count() == 1
        raise _RolledBack
    assert not NotificationOutbox.objects.exists()


def test_outbox_drain__rows_left_by_a_down_broker__handed_over_once(
        on: None, actor: Actor, mailbox: Mailbox, django_capture_on_commit_callbacks: Any) -> None:
    from audit.models import NotificationOutbox
    from notifications.outbox import outbox_drain
    from rollout.services.flags import flag_state_kill

    subscriber(actor, "vic", "viewer", ["kill_switch.pulled"])
    with django_capture_on_commit_callbacks(execute=False):  # the commit's hand-over never ran: the broker was down
        flag_state_kill(actor=actor, flag="invoice-engine", environment="staging")
    assert NotificationOutbox.objects.count() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert outbox_drain() == 1
        assert outbox_drain() == 0
    assert not NotificationOutbox.objects.exists()
    assert [m["Subject"] for m in mailbox.messages] == ["[Turnout] Kill switch pulled: invoice-engine@staging"]
