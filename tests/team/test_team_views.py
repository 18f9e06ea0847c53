"""The team pages (people, environments, break-glass review): the API's roles, services and audit events."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui_support import HTMX, changes, signed_in, text

pytestmark = pytest.mark.django_db

ROLES = ("viewer", "editor", "approver", "admin", "compliance")


def admin_only(ok: int) -> dict[str, int]:
    return {"viewer": 403, "editor": 403, "approver": 403, "admin": ok, "compliance": 403}


def approvers(ok: int) -> dict[str, int]:
    return {"viewer": 403, "editor": 403, "approver": ok, "admin": ok, "compliance": 403}


def editors(ok: int) -> dict[str, int]:
    return {"viewer": 403, "editor": ok, "approver": ok, "admin": ok, "compliance": 403}


def readers(ok: int) -> dict[str, int]:
    return dict.fromkeys(ROLES, ok)


# Every team page × role → status, like the API's role matrix (tests/api/test_role_matrix.py).
MATRIX = [
    ("GET", "/people/", {}, admin_only(200)),
    ("POST", "/people/new/", {"username": "newbie", "roles": ["viewer"]}, admin_only(200)),
    ("POST", "/people/dana/roles/", {"roles": ["editor", "approver"]}, admin_only(200)),
    ("POST", "/people/dana/deactivate/", {"reason": "left"}, admin_only(200)),
    ("POST", "/people/dana/invite/", {}, admin_only(200)),
    ("GET", "/environments/", {}, admin_only(200)),
    ("POST", "/environments/new/", {"key": "qa", "name": "QA", "order": 3}, admin_only(200)),
    ("POST", "/environments/staging/edit/", {"name": "Stage", "order": 0, "description": "pre-production"},
     admin_only(200)),
    ("GET", "/reviews/", {}, readers(200)),
    ("POST", "/reviews/{review}/acknowledge/", {"note": "checked the error graphs"}, approvers(200)),
    ("GET", "/stale-flags/", {}, readers(200)),
    # Off everywhere (killed), so nothing gates it: editors archive directly.
    ("POST", "/stale-flags/invoice-engine/archive/", {"reason": "code deleted"}, editors(200)),
    ("POST", "/stale-flags/invoice-engine/restore/", {}, editors(409)),  # not archived
]

CASES = [pytest.param(method, path, data, role, statuses[role], id=f"{role}-{method}-{path}")
         for method, path, data, statuses in MATRIX for role in ROLES]


@pytest.fixture
def break_glass(flag: Any, actor: Any) -> Any:
    """A kill in production (which requires approval) by an editor: a review item."""
    from rollout.access.users import user_create
    from rollout.models import ReviewItem
    from rollout.services.flags import flag_state_kill, flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="production", version=None, enabled=True,
                      percentage_value=20)
    ed = user_create(actor=actor, username="ed", password=None, roles=["editor"])
    from common.actors import Actor

    flag_state_kill(actor=Actor.for_user(ed), flag="invoice-engine", environment="production", reason="5xx spike")
    return ReviewItem.objects.get()


@pytest.mark.parametrize(("method", "path", "data", "role", "expected"), CASES)
def test_team_pages__role_matrix__status(break_glass: Any, actor: Any, audit_events: Any, method: str, path: str,
                                         data: dict[str, Any], role: str, expected: int) -> None:
    from rollout.access.users import user_create

    user_create(actor=actor, username="dana", password=None, roles=["viewer"], email="dana@example.org")
    client = signed_in(role, username=f"{role}-1")
    url = path.format(review=break_glass.pk)
    response = client.get(url) if method == "GET" else client.post(url, data, **HTMX)
    assert response.status_code == expected, text(response)[:500]
    written = [e for e in audit_events() if e.actor == f"{role}-1"]
    if method == "POST":
        assert len(written) == (1 if expected == 200 else 0)


def test_team_routes__every_one_in_the_matrix() -> None:
    from django.urls import get_resolver

    from config import ui_urls

    team = {p.name for p in ui_urls.urlpatterns
            if getattr(p.callback, "__module__", "") == "rollout.team_views"}
    team.discard("password-set")  # an invitation's link: no role decides, its one-time token does (test_invitations)
    covered = {get_resolver().resolve(path.format(review=1)).url_name for _, path, _, _ in MATRIX}
    assert team == covered


def test_nav__admin_sees_people_and_environments__viewer_does_not(envs: Any) -> None:
    admin_page = text(signed_in("admin").get("/reviews/"))
    assert 'href="/people/"' in admin_page and 'href="/environments/"' in admin_page
    viewer_page = text(signed_in("viewer").get("/reviews/"))
    assert 'href="/people/"' not in viewer_page and 'href="/reviews/"' not in viewer_page


# -- people ------------------------------------------------------------------------------------------


def test_person_create__admin__listed_with_roles_and_audited(envs: Any, audit_events: Any) -> None:
    client = signed_in("admin", username="root")
    response = client.post("/people/new/", {"username": "vera", "email": "vera@example.org",
                                            "roles": ["approver"]}, **HTMX)
    assert response.status_code == 200
    body = text(response)
    assert "vera can sign in now (approver)" in body and "vera@example.org" in body
    [event] = [e for e in audit_events() if e.actor == "root"]
    assert (event.action, event.object_key, event.actor) == ("user.created", "vera", "root")
    assert event.after["roles"] == ["approver"]


def test_person_create__existing_username__422_names_the_field_and_nothing_saved(envs: Any,
                                                                                  audit_events: Any) -> None:
    client = signed_in("admin", username="root")
    response = client.post("/people/new/", {"username": "root", "roles": ["viewer"]}, **HTMX)
    assert response.status_code == 422
    assert "a user &#x27;root&#x27; already exists" in text(response)
    assert changes(audit_events) == []


def test_person_create__weak_password__422_and_nothing_saved(envs: Any, audit_events: Any) -> None:
    from django.contrib.auth import get_user_model

    response = signed_in("admin").post("/people/new/", {"username": "weak", "password": "123"}, **HTMX)
    assert response.status_code == 422
    assert not get_user_model().objects.filter(username="weak").exists()
    assert changes(audit_events) == []


def test_person_create__unknown_role__422_and_nothing_saved(envs: Any, audit_events: Any) -> None:
    response = signed_in("admin").post("/people/new/", {"username": "x", "roles": ["owner"]}, **HTMX)
    assert response.status_code == 422
    assert changes(audit_events) == []


def test_person_roles__changed__audited_before_and_after(envs: Any, actor: Any, audit_events: Any) -> None:
    from rollout.access.users import user_create

    user_create(actor=actor, username="dana", password=None, roles=["viewer"])
    response = signed_in("admin", username="root").post("/people/dana/roles/",
                                                         {"roles": ["editor"], "reason": "joined the team"}, **HTMX)
    assert response.status_code == 200
    assert "dana now has: editor." in text(response)
    [event] = changes(audit_events)
    assert (event.action, event.before, event.after, event.reason) == (
        "user.roles_changed", {"roles": ["viewer"]}, {"roles": ["editor"]}, "joined the team")


def test_person_roles__own_admin_role_removed__422_and_unchanged(envs: Any, audit_events: Any) -> None:
    response = signed_in("admin", username="root").post("/people/root/roles/", {"roles": ["viewer"]}, **HTMX)
    assert response.status_code == 422
    assert "you cannot remove your own admin role" in text(response)
    assert changes(audit_events) == []


def test_person_deactivate__tokens_revoked_and_row_shows_it(envs: Any, actor: Any, audit_events: Any) -> None:
    from rollout.access.keys import api_token_create
    from rollout.access.users import user_create
    from rollout.models import ApiToken

    user_create(actor=actor, username="dana", password=None, roles=["editor"])
    api_token_create(actor=actor, username="dana", name="ci")
    response = signed_in("admin").post("/people/dana/deactivate/", {"reason": "left"}, **HTMX)
    assert response.status_code == 200
    assert "deactivated" in text(response)
    assert ApiToken.objects.get().revoked_at is not None
    [event] = [e for e in changes(audit_events) if e.object_type == "user"]
    assert (event.action, event.after) == ("user.deactivated", {"is_active": False, "tokens_revoked": 1})


def test_person_deactivate__self__409_and_still_active(envs: Any, audit_events: Any) -> None:
    response = signed_in("admin", username="root").post("/people/root/deactivate/", {}, **HTMX)
    assert response.status_code == 409
    assert "you cannot deactivate yourself" in text(response)
    assert changes(audit_events) == []


def test_person_deactivate__unknown_user__422_names_it(envs: Any, audit_events: Any) -> None:
    response = signed_in("admin").post("/people/ghost/deactivate/", {}, **HTMX)
    assert response.status_code == 422
    assert "user &#x27;ghost&#x27; does not exist" in text(response)


def test_people_page__without_htmx__full_page(envs: Any) -> None:
    response = signed_in("admin").post("/people/new/", {"username": "vera", "roles": ["viewer"]})
    assert response.status_code == 200
    assert "<h1>People</h1>" in text(response)


# -- environments --------------------------------------------------------------------------------------


def test_environment_create__admin__approval_and_description_audited(envs: Any, flag: Any,
                                                                      audit_events: Any) -> None:
    from rollout.models import FlagState

    response = signed_in("admin", username="root").post("/environments/new/", {
        "key": "eu-prod", "name": "EU production", "order": 5, "requires_approval": "on",
        "description": "customers in the EU; change window Tue/Thu"}, **HTMX)
    assert response.status_code == 200
    assert "Environment “EU production” created" in text(response)
    [event] = changes(audit_events)
    assert event.action == "environment.created"
    assert event.after == {"key": "eu-prod", "name": "EU production", "order": 5, "requires_approval": True,
                           "description": "customers in the EU; change window Tue/Thu"}
    assert FlagState.objects.filter(environment__key="eu-prod", enabled=False).count() == 1


def test_environment_create__duplicate_key__422_names_the_key(envs: Any, audit_events: Any) -> None:
    response = signed_in("admin").post("/environments/new/", {"key": "staging", "name": "Again", "order": 0},
                                       **HTMX)
    assert response.status_code == 422
    assert "already exists" in text(response)
    assert changes(audit_events) == []


def test_environment_update__require_approval__audited_and_policy_follows(envs: Any, flag: Any,
                                                                          audit_events: Any) -> None:
    from rollout.models import Environment

    response = signed_in("admin").post("/environments/staging/edit/", {
        "name": "Staging", "order": 0, "requires_approval": "on", "reason": "customers demo here"}, **HTMX)
    assert response.status_code == 200
    [event] = changes(audit_events)
    assert (event.before["requires_approval"], event.after["requires_approval"]) == (False, True)
    assert Environment.objects.get(key="staging").requires_approval
    # An editor's change in staging now waits for a second person.
    editor = signed_in("editor")
    state = editor.post("/flags/invoice-engine/staging/percentage/", {"percentage": "10", "version": 1}, **HTMX)
    assert "Waiting for approval" in text(state)


def test_environment_update__nothing_changed__no_event(envs: Any, audit_events: Any) -> None:
    response = signed_in("admin").post("/environments/staging/edit/", {"name": "Staging", "order": 0}, **HTMX)
    assert response.status_code == 200
    assert changes(audit_events) == []


def test_environment_update__bad_order__422_and_unchanged(envs: Any, audit_events: Any) -> None:
    response = signed_in("admin").post("/environments/staging/edit/", {"name": "Staging", "order": "-1"}, **HTMX)
    assert response.status_code == 422
    assert "order" in text(response)
    assert changes(audit_events) == []


# -- break-glass review ------------------------------------------------------------------------------------


def test_reviews_page__break_glass_kill__shows_who_the_diff_and_the_reason(break_glass: Any) -> None:
    body = text(signed_in("approver").get("/reviews/"))
    assert "kill of" in body and "invoice-engine" in body and "Production" in body
    assert "ed" in body and "5xx spike" in body
    assert '<th scope="row">enabled</th><td class="before">true</td><td class="after">false</td>' in body
    assert "Acknowledge" in body


def test_review_acknowledge__other_approver_with_comment__audited_and_moved(break_glass: Any,
                                                                            audit_events: Any) -> None:
    response = signed_in("approver", username="ann").post(f"/reviews/{break_glass.pk}/acknowledge/",
                                                           {"note": "errors confirmed; fix deployed"}, **HTMX)
    assert response.status_code == 200
    body = text(response)
    assert "acknowledged" in body and "Nothing to review." in body and "errors confirmed; fix deployed" in body
    [event] = changes(audit_events)
    assert (event.action, event.actor, event.reason) == ("review_item.acknowledged", "ann",
                                                         "errors confirmed; fix deployed")
    assert event.after["broken_by"] == "ed"


def test_review_acknowledge__without_comment__422_and_still_open(break_glass: Any, audit_events: Any) -> None:
    response = signed_in("approver").post(f"/reviews/{break_glass.pk}/acknowledge/", {"note": ""}, **HTMX)
    assert response.status_code == 422
    assert "a comment is required" in text(response)
    break_glass.refresh_from_db()
    assert break_glass.acknowledged_at is None
    assert changes(audit_events) == []


def test_review_acknowledge__by_who_broke_the_glass__403(flag: Any, actor: Any, audit_events: Any) -> None:
    from django.test import Client

    from common.actors import Actor
    from rollout.access.users import user_create
    from rollout.models import ReviewItem
    from rollout.services.flags import flag_state_kill, flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="production", version=None, enabled=True,
                      percentage_value=20)
    amy = user_create(actor=actor, username="amy", password=None, roles=["approver"])
    flag_state_kill(actor=Actor.for_user(amy), flag="invoice-engine", environment="production")
    item = ReviewItem.objects.get()
    client = Client()
    client.force_login(amy)
    page = text(client.get("/reviews/"))
    assert "another approver acknowledges it" in page and 'action="/reviews/' not in page
    response = client.post(f"/reviews/{item.pk}/acknowledge/", {"note": "fine by me"}, **HTMX)
    assert response.status_code == 403
    item.refresh_from_db()
    assert item.acknowledged_at is None


def test_review_acknowledge__twice__409_names_who_did(break_glass: Any) -> None:
    signed_in("approver", username="ann").post(f"/reviews/{break_glass.pk}/acknowledge/", {"note": "ok"}, **HTMX)
    response = signed_in("admin", username="root").post(f"/reviews/{break_glass.pk}/acknowledge/",
                                                        {"note": "ok too"}, **HTMX)
    assert response.status_code == 409
    assert "already acknowledged by ann" in text(response)


def test_review_acknowledge__unknown_item__404(envs: Any) -> None:
    assert signed_in("approver").post("/reviews/999/acknowledge/", {"note": "x"}, **HTMX).status_code == 404
