"""Reading the audit log: cursor-paginated events, per-object history with diffs, roles."""

from __future__ import annotations

import base64
import hashlib

import pytest
from rest_framework.test import APIClient

from audit.models import AuditEvent
from audit.serializers import diff

pytestmark = pytest.mark.django_db


def test_events__cursor_pages__every_event_once_in_sequence_order(history, api_as):
    client = api_as("viewer")
    total = AuditEvent.objects.count()
    url, seen = "/api/v1/audit/events/?limit=4", []
    while url:
        body = client.get(url).json()
        seen += [e["sequence"] for e in body["results"]]
        url = body["next"]
    assert seen == list(range(1, total + 1))


def test_events__filters__same_as_exports(history, api_as):
    client = api_as("viewer")
    body = client.get("/api/v1/audit/events/?object_type=flag_state&environment=staging").json()
    assert [e["action"] for e in body["results"]] == ["flag_state.updated", "flag_state.updated",
                                                      "flag_state.killed"]
    killed = body["results"][-1]
    assert (killed["actor"], killed["reason"]) == ("system:guardrail", "error rate 7.2% > 5%")
    assert killed["occurred_at"].endswith("Z") and len(killed["hash"]) == 64


def test_events__bad_filter__400_naming_it(api_as):
    response = api_as("viewer").get("/api/v1/audit/events/?since=soon")
    assert response.status_code == 400 and "since" in response.json()["error"]["fields"]


def test_object_history__flag_state__in_order_with_diffs(history, api_as):
    body = api_as("viewer").get("/api/v1/audit/objects/flag_state/invoice-engine@staging/").json()
    changes = [(e["action"], e["changes"]) for e in body["results"]]
    assert changes[0][0] == "flag_state.updated"
    assert changes[0][1]["enabled"] == {"before": False, "after": True}
    assert changes[0][1]["include_cohorts"] == {"before": [], "after": ["pilot"]}
    assert changes[1][1]["percentage"] == {"before": 10.0, "after": 50.0}
    assert changes[1][1]["version"] == {"before": 2, "after": 3}
    assert changes[2][0] == "flag_state.killed"
    assert changes[2][1]["enabled"] == {"before": True, "after": False}
    assert changes[2][1]["version"] == {"before": 3, "after": 4}


def test_event_detail__by_sequence__with_changes(history, api_as):
    body = api_as("viewer").get("/api/v1/audit/events/3/").json()
    assert body["sequence"] == 3 and body["changes"]["key"] == {"before": None, "after": "billing"}


@pytest.mark.parametrize(("before", "after", "expected"), [
    (None, {"a": 1}, {"a": {"before": None, "after": 1}}),
    ({"a": 1, "b": 2}, None, {"a": {"before": 1, "after": None}, "b": {"before": 2, "after": None}}),
    ({"a": 1, "b": [1]}, {"a": 1, "b": [1, 2]}, {"b": {"before": [1], "after": [1, 2]}}),
    ({"a": None}, {}, {"a": {"before": None, "after": None}}),
    ("x", "y", {"value": {"before": "x", "after": "y"}}),
    ({"a": 1}, {"a": 1}, {}),
])
def test_diff__shapes__changed_keys_only(before, after, expected):
    assert diff(before, after) == expected


@pytest.mark.parametrize(("role", "read", "audit"), [
    (None, 403, 403), ("viewer", 200, 403), ("editor", 200, 403), ("approver", 200, 403),
    ("compliance", 200, 200), ("admin", 200, 200),
])
def test_roles__read_events_vs_export_and_verify(history, api_as, role, read, audit):
    client = api_as(role)
    assert client.get("/api/v1/audit/events/").status_code == read
    assert client.get("/api/v1/audit/objects/workload/billing/").status_code == read
    assert client.get("/api/v1/audit/verify").status_code == audit
    assert client.get("/api/v1/audit/export?format=csv").status_code == audit
    assert client.get("/api/v1/audit/evidence/workload/billing").status_code == audit
    assert client.get("/api/v1/audit/exports/").status_code == audit


def test_roles__anonymous__nothing_but_the_public_key():
    client = APIClient()
    for url in ("/api/v1/audit/events/", "/api/v1/audit/verify", "/api/v1/audit/export?format=csv"):
        assert client.get(url).status_code in (401, 403)
    assert client.get("/api/v1/audit/public-key").status_code == 200


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_events__admin_writes__refused_nobody_can_change_or_delete_events(history, api_as, method):
    client = api_as("admin")
    count = AuditEvent.objects.count()
    for url in ("/api/v1/audit/events/", "/api/v1/audit/events/1/", "/api/v1/audit/objects/workload/billing/"):
        assert getattr(client, method)(url, {}, format="json").status_code == 405
    assert AuditEvent.objects.count() == count


def test_public_key__listed__key_id_is_sha256_of_raw_key(api_as):
    body = APIClient().get("/api/v1/audit/public-key").json()
    [key] = body["keys"]
    assert key["current"] is True and key["algorithm"] == "Ed25519"
    assert key["key_id"] == hashlib.sha256(base64.b64decode(key["public_key"])).hexdigest()
    assert key["pem"].startswith("-----BEGIN PUBLIC KEY-----")


def test_exports_list__compliance__sees_jobs_with_progress(history, api_as):
    client = api_as("compliance")
    b"".join(client.get("/api/v1/audit/export?format=csv&object_type=flag").streaming_content)
    [job] = client.get("/api/v1/audit/exports/").json()["results"]
    assert (job["kind"], job["format"], job["filters"], job["status"], job["total"], job["progress"]) == (
        "events", "csv", {"object_type": "flag"}, "ready", 2, 1.0)


@pytest.mark.parametrize("url", [
    "/api/v1/audit/events/-1/", "/api/v1/audit/events/abc/", "/api/v1/audit/exports/0/",
    "/api/v1/audit/exports/0/manifest", "/api/v1/audit/exports/0/download", "/api/v1/audit/objects/flag/a%00b/",
    "/api/v1/audit/evidence/workload/a%00b", "/api/v1/audit/events/?cursor=bogus",
])
def test_audit_api__no_such_thing__404_with_the_error_body(history, api_as, url):
    response = api_as("compliance").get(url)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
