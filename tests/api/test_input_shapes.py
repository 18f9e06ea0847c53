"""Input shapes are checked before use: a body that is not an object, a field or query parameter the
endpoint does not know, each gets a 400 naming it, and nothing is changed or recorded."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def _audit_count() -> int:
    from audit.models import AuditEvent

    return AuditEvent.objects.count()


@pytest.mark.parametrize("params", [[1], "abc", 7], ids=["list", "string", "number"])
def test_change_request_submit__params_not_an_object__400_naming_params(world, as_role, params):
    from rollout.models import ChangeRequest

    before = _audit_count()
    response = as_role("editor").post("/api/v1/change-requests/", {
        "flag": "invoice-engine", "environment": "production", "action": "update", "params": params,
        "version": 1, "reason": "widen"}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert list(error["fields"]) == ["params"]
    assert error["message"].startswith("params: must be a JSON object")
    assert ChangeRequest.objects.count() == 0
    assert _audit_count() == before


@pytest.mark.parametrize("misspelled", ["usr", "user"])
def test_api_token_create__misspelled_user_field__400_naming_it_and_no_token(world, as_role, misspelled):
    from rollout.models import ApiToken

    tokens, before = ApiToken.objects.count(), _audit_count()
    response = as_role("admin").post("/api/v1/tokens/", {"name": "for-alice", misspelled: "editor"}, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert list(error["fields"]) == [misspelled]
    assert error["message"].startswith(f"{misspelled}: unknown field")
    assert "username" in error["message"]  # the known fields are named, so the fix is obvious
    assert ApiToken.objects.count() == tokens
    assert _audit_count() == before
