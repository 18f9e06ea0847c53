"""The cohort pages: rule validation while typing, CSV member upload (all or nothing), subject test."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from cohorts.forms import parse_member_csv
from tests.ui_support import HTMX, changes, signed_in, text

pytestmark = pytest.mark.django_db


@pytest.fixture
def pilot(actor: Any) -> Any:
    from cohorts.services import cohort_create

    return cohort_create(actor=actor, key="pilot-eu", name="EU pilot", match_on="tenant_id",
                         rules={"all": [{"attr": "country", "op": "in", "values": ["DE", "FR"]}]})


def test_parse_member_csv__bad_rows__each_named_by_line() -> None:
    parsed = parse_member_csv(b'subject\nt-1\n\n"t-2",x\n' + b"y" * 256 + b"\nt-1\n")
    assert parsed.subjects == ["t-1"]
    assert parsed.errors == ["line 4: more than one column; put one subject key per line",
                             "line 5: longer than 255 characters"]
    assert parsed.bad_rows == 2


def test_parse_member_csv__not_utf8__one_clear_error() -> None:
    assert parse_member_csv(b"\xff\xfe\x00t").errors == ["the file is not UTF-8 text (byte 0)"]


def test_validate_rules__unknown_operator__names_the_bad_part() -> None:
    client = signed_in("editor")
    bad = text(client.post("/cohorts/validate-rules/",
                           {"rules": '{"all": [{"attr": "a", "op": "within", "values": [1]}]}'}, **HTMX))
    assert "rules.all[0]" in bad and 'class="error"' in bad
    assert "line 1, column 2" in text(client.post("/cohorts/validate-rules/", {"rules": "{oops"}, **HTMX))
    assert "Rules are valid." in text(client.post("/cohorts/validate-rules/", {"rules": '{"all": []}'}, **HTMX))


def test_cohort_create__invalid_rules__422_and_nothing_saved(audit_events: Any) -> None:
    response = signed_in("editor").post("/cohorts/new/", {"key": "c1", "name": "C",
                                                          "rules": '{"any": [{"attr": "x", "op": "lt"}]}'})
    assert response.status_code == 422
    assert "rules" in text(response)
    assert changes(audit_events) == []


def test_member_upload__bad_row__nothing_imported_and_lines_reported(pilot: Any, audit_events: Any) -> None:
    upload = SimpleUploadedFile("m.csv", b"tenant-1\ntenant-2,extra\n", content_type="text/csv")
    response = signed_in("editor").post("/cohorts/pilot-eu/members/", {"file": upload, "kind": "include"}, **HTMX)
    assert response.status_code == 422
    assert "Nothing was imported" in text(response) and "line 2: more than one column" in text(response)
    assert pilot.members.count() == 0
    assert changes(audit_events) == []


def test_member_upload__100k_rows__all_imported_in_one_audited_change(pilot: Any, audit_events: Any) -> None:
    data = "subject\n" + "".join(f"tenant-{n}\n" for n in range(100_000))
    upload = SimpleUploadedFile("m.csv", data.encode(), content_type="text/csv")
    response = signed_in("editor").post("/cohorts/pilot-eu/members/", {"file": upload, "kind": "include"}, **HTMX)
    assert response.status_code == 200
    assert "Imported 100000 rows into include: 100000 added" in text(response)
    assert "membersChanged" in response["HX-Trigger"]
    assert pilot.members.count() == 100_000
    [event] = changes(audit_events)
    assert (event.action, event.after["added"]) == ("cohort.members_added", 100_000)


def test_member_upload__viewer__403(pilot: Any) -> None:
    upload = SimpleUploadedFile("m.csv", b"t-1\n", content_type="text/csv")
    assert signed_in("viewer").post("/cohorts/pilot-eu/members/", {"file": upload}, **HTMX).status_code == 403


@pytest.mark.parametrize(("key", "attributes", "expected"), [
    ("u-1", '{"tenant_id": "t-7", "country": "US"}', "Not in the cohort"),
    ("u-1", '{"tenant_id": "t-7", "country": "US"}', "rule rules.all[0] (country in"),
    ("u-1", '{"tenant_id": "t-7", "country": "DE"}', "In the cohort</strong> — <code>u-1</code>: all of rules.all matched"),
    ("u-1", '{"tenant_id": "t-listed", "country": "US"}', "tenant_id &#x27;t-listed&#x27; is listed in include"),
    ("u-1", '{"tenant_id": "t-out", "country": "DE"}', "excluded: tenant_id &#x27;t-out&#x27; is listed in exclude"),
])
def test_test_subject__attributes__verdict_and_reason(pilot: Any, actor: Any, key: str, attributes: str,
                                                      expected: str) -> None:
    from cohorts.services import cohort_members_add

    cohort_members_add(actor=actor, key="pilot-eu", subjects=["t-listed"], kind="include")
    cohort_members_add(actor=actor, key="pilot-eu", subjects=["t-out"], kind="exclude")
    response = signed_in("viewer").post("/cohorts/pilot-eu/test/", {"key": key, "attributes": attributes}, **HTMX)
    assert response.status_code == 200
    assert expected in text(response)


def test_test_subject__attributes_not_an_object__422(pilot: Any) -> None:
    response = signed_in("viewer").post("/cohorts/pilot-eu/test/", {"key": "u", "attributes": "[1]"}, **HTMX)
    assert response.status_code == 422
    assert "must be a JSON object" in text(response)


def test_cohort_list__search__partial_with_matches_only(pilot: Any) -> None:
    client = signed_in("viewer")
    assert "EU pilot" in text(client.get("/cohorts/?q=pilot", **HTMX))
    assert "No cohort matches" in text(client.get("/cohorts/?q=zzz", **HTMX))
