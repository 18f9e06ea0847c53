"""Input shapes are checked before use: a body that is not an object, a field or query parameter the
endpoint does not know, each gets a 400 naming it, and nothing is changed or recorded."""

from __future__ import annotations

from typing import Any

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
    spelled = as_role("admin").post("/api/v1/tokens/", {"name": "for-alice", "username": "editor"}, format="json")
    assert spelled.status_code == 201 and spelled.json()["user"] == "editor"


# The walk: every management and audit operation the OpenAPI document describes, with real objects in its path.

OUT_OF_SCOPE = ("/api/v1/sdk/", "/ofrep/")  # the SDK hot path parses its own input (rollout/delivery/lean.py)
WRITES = ("post", "put", "patch")
NOT_OBJECTS = [[], [1], "abc", 7, True, None]
UNKNOWN = "zz_unknown"


@pytest.fixture
def scene(world: dict[str, Any], tokens: dict[str, str], actor: Any) -> dict[str, str]:
    """Real objects for every path parameter, so a request is refused for its input and not as a 404."""
    from actions.submit import submit_state
    from audit.services import audit_export_create, audit_verification_start
    from rollout.access.keys import sdk_key_create
    from rollout.models import ApiToken

    key, _ = sdk_key_create(actor=actor, environment="staging", name="svc")
    editor = ApiToken.objects.select_related("user").get(user__username="editor")
    from common.actors import Actor

    pending = submit_state(actor=Actor.for_token(editor), flag="invoice-engine", environment="production",
                                    action="update", params={"percentage": 5}, version=1, reason="widen")
    assert pending.change_request is not None
    return {
        "sdk_prefix": key.prefix, "token_prefix": editor.prefix, "change_request": str(pending.change_request.pk),
        "export": str(audit_export_create(actor=actor, format="jsonl", background=False).pk),
        "verification": str(audit_verification_start(actor=actor).pk),
    }


def _document(client: Any) -> dict[str, Any]:
    import json

    response = client.get("/api/v1/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)  # type: ignore[no-any-return]


def _operations(document: dict[str, Any], methods: tuple[str, ...]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, operation) for path, operations in document["paths"].items()
            if not path.startswith(OUT_OF_SCOPE) for method, operation in operations.items() if method in methods]


def _url(path: str, scene: dict[str, str]) -> str:
    import re

    values = {
        "key": {"/api/v1/environments/": "staging", "/api/v1/workloads/": "billing", "/api/v1/flags/": "invoice-engine",
                "/api/v1/cohorts/": "pilot", "/api/v1/audit/evidence/": "billing"},
        "id": {"/api/v1/change-requests/": scene["change_request"], "/api/v1/review-items/": "1",
               "/api/v1/audit/exports/": scene["export"], "/api/v1/audit/verifications/": scene["verification"]},
        "prefix": {"/api/v1/sdk-keys/": scene["sdk_prefix"], "/api/v1/tokens/": scene["token_prefix"]},
    }
    plain = {"env": "staging", "flag": "invoice-engine", "username": "editor", "group": "1", "sequence": "1",
             "subject_type": "workload", "object_type": "workload", "object_key": "billing"}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in plain:
            return plain[name]
        by_prefix = values[name]  # a new path parameter must be given a real object here
        return next(value for prefix, value in by_prefix.items() if path.startswith(prefix))

    return re.sub(r"\{(\w+)\}", fill, path)


def _fingerprint() -> tuple[int, ...]:
    from audit.models import AuditEvent
    from cohorts.models import Cohort, CohortMember
    from rollout.models import ApiToken, ChangeRequest, FlagState, SdkKey, Workload

    versions = tuple(model.objects.order_by("pk").values_list("version", flat=True)  # type: ignore[attr-defined]
                     for model in (FlagState, Cohort, Workload))
    return (AuditEvent.objects.count(), ApiToken.objects.count(), SdkKey.objects.count(),
            ChangeRequest.objects.count(), Cohort.objects.count(), CohortMember.objects.count(),
            Workload.objects.count(), *(v for vs in versions for v in vs))


def test_write_endpoints__unknown_field__400_naming_it_and_nothing_changed(scene, admin_api):
    document = _document(admin_api)
    operations = [op for op in _operations(document, WRITES) if "application/json" in op[2].get("requestBody", {})
                  .get("content", {})]
    assert len(operations) >= 25
    before, wrong = _fingerprint(), []
    for path, method, _ in operations:
        response = getattr(admin_api, method)(_url(path, scene), {UNKNOWN: 1}, format="json")
        error = response.json().get("error", {}) if response.status_code == 400 else {}
        if UNKNOWN not in error.get("fields", {}) or not error["message"].startswith(f"{UNKNOWN}: unknown field"):
            wrong.append((method, path, response.status_code, response.content[:200]))
    assert wrong == []
    assert _fingerprint() == before


def test_write_endpoints__body_not_an_object__400_and_nothing_changed(scene, admin_api):
    import json

    document = _document(admin_api)
    operations = [op for op in _operations(document, WRITES) if "application/json" in op[2].get("requestBody", {})
                  .get("content", {})]
    before, wrong = _fingerprint(), []
    for path, method, _ in operations:
        for body in NOT_OBJECTS:
            response = getattr(admin_api, method)(_url(path, scene), json.dumps(body), content_type="application/json")
            error = response.json().get("error", {}) if response.status_code == 400 else {}
            if error.get("code") != "invalid" or "__all__" not in error.get("fields", {}):
                wrong.append((method, path, body, response.status_code, response.content[:200]))
    assert wrong == []
    assert _fingerprint() == before


def test_write_bodies__every_input_in_the_schema__closed_to_unknown_properties(admin_api):
    document = _document(admin_api)
    schemas = document["components"]["schemas"]
    used: set[str] = set()
    for _, _, operation in _operations(document, WRITES):
        for media in operation.get("requestBody", {}).get("content", {}).values():
            if "$ref" in media["schema"]:
                used.add(media["schema"]["$ref"].rsplit("/", 1)[-1])
    # Nested inputs (StageInput in PlanInput) are components of their own.
    names = used | {name for name in schemas if name.endswith("InputRequest")}
    assert len(names) >= 25
    open_ones = sorted(name for name in names if schemas[name].get("additionalProperties") is not False)
    assert open_ones == []


def test_read_and_delete_endpoints__unknown_query_parameter__400_naming_it_and_nothing_changed(scene, admin_api):
    document = _document(admin_api)
    operations = _operations(document, ("get", "delete"))
    assert len(operations) >= 30
    before, wrong = _fingerprint(), []
    for path, method, _ in operations:
        response = getattr(admin_api, method)(f"{_url(path, scene)}?{UNKNOWN}=1")
        error = response.json().get("error", {}) if response.status_code == 400 else {}
        if UNKNOWN not in error.get("fields", {}) or not error["message"].startswith(f"{UNKNOWN}: unknown query"):
            wrong.append((method, path, response.status_code, response.content[:200]))
    assert wrong == []
    assert _fingerprint() == before


def _sample(parameter: dict[str, Any]) -> str:
    schema = parameter.get("schema", {})
    if schema.get("enum"):
        return str(schema["enum"][0])
    return {"integer": "1", "number": "1", "boolean": "true"}.get(schema.get("type", ""), "x")


def test_read_endpoints__every_documented_query_parameter__accepted(scene, admin_api):
    document = _document(admin_api)
    wrong = []
    for path, _, operation in _operations(document, ("get",)):
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "query" or parameter["name"] in {"cursor", "ordering"}:
                continue  # a cursor and an ordering need real values; their names are checked below
            name = parameter["name"]
            response = admin_api.get(_url(path, scene), {name: _sample(parameter)})
            if response.status_code == 400 and "unknown query parameter" in response.json()["error"]["message"]:
                wrong.append((path, name, response.status_code))
    assert wrong == []
    assert admin_api.get("/api/v1/workloads/", {"ordering": "-key", "limit": 1, "offset": 0}).status_code == 200
    first = admin_api.get("/api/v1/audit/events/", {"limit": 1}).json()
    assert admin_api.get(first["next"]).status_code == 200  # the cursor link the API itself hands out


def test_list__misspelled_filter__400_naming_it_not_the_whole_list(scene, admin_api):
    response = admin_api.get("/api/v1/workloads/", {"rsk": "high"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == ["rsk"]
    assert "risk" in error["message"]  # the parameters it does take are named
    assert admin_api.get("/api/v1/workloads/", {"risk": "high"}).status_code == 200


def test_audit_export__misspelled_filter__400_naming_it_and_nothing_exported(scene, as_role):
    from audit.models import AuditExport

    exports, before = AuditExport.objects.count(), _audit_count()
    response = as_role("compliance").get("/api/v1/audit/export", {"format": "csv", "acton": "flag_state.killed"})
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["acton"]
    assert AuditExport.objects.count() == exports
    assert _audit_count() == before


def test_audit_export_service__unknown_filter_name__refused_naming_it(db, actor):
    from audit.services import audit_export_create
    from common.errors import ValidationFailed

    before = _audit_count()
    with pytest.raises(ValidationFailed) as caught:
        audit_export_create(actor=actor, format="jsonl", filters={"acton": "flag_state.killed"})
    assert list(caught.value.fields) == ["acton"]
    assert _audit_count() == before


def test_rollout_plan__unknown_field_in_a_stage__400_naming_its_path(scene, admin_api):
    before = _fingerprint()
    response = admin_api.put("/api/v1/flags/invoice-engine/states/staging/stages/", {
        "version": 1, "stages": [{"name": "pilot", "percantage": 5}]}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert list(error["fields"]) == ["stages.0.percantage"]
    assert error["message"].startswith("stages.0.percantage: unknown field")
    response = admin_api.put("/api/v1/flags/invoice-engine/states/staging/stages/", {
        "version": 1, "stages": [{"name": "pilot", "percentage": 5}, 7]}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"stages.1": ["must be a JSON object, not a number"]}
    assert _fingerprint() == before


def test_cohort_members__csv_body_with_unknown_query_parameter__400_naming_it_and_nothing_saved(scene, admin_api):
    before = _fingerprint()
    response = admin_api.generic("POST", "/api/v1/cohorts/pilot/members/?kindd=exclude&reason=r", b"subject\nt9\n",
                                 content_type="text/csv")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["kindd"]
    assert _fingerprint() == before
    response = admin_api.generic("POST", "/api/v1/cohorts/pilot/members/?kind=exclude&reason=r&version=2",
                                 b"subject\nt9\n", content_type="text/csv")
    assert response.status_code == 200, response.content  # the query's version is one of its fields


def test_cohort_members__multipart_with_unknown_field__400_naming_it_and_nothing_saved(scene, admin_api):
    from django.core.files.uploadedfile import SimpleUploadedFile

    before = _fingerprint()
    upload = SimpleUploadedFile("members.csv", b"t9\n", content_type="text/csv")
    response = admin_api.post("/api/v1/cohorts/pilot/members/", {"file": upload, "actoin": "remove"},
                              format="multipart")
    assert response.status_code == 400
    assert list(response.json()["error"]["fields"]) == ["actoin"]
    assert _fingerprint() == before


@pytest.mark.parametrize(("method", "path", "field", "value"), [
    ("patch", "/api/v1/cohorts/pilot/", "rules", [1]),
    ("patch", "/api/v1/cohorts/pilot/", "rules", "abc"),
    ("patch", "/api/v1/cohorts/pilot/", "rules", 7),
    ("patch", "/api/v1/flags/invoice-engine/states/staging/", "overrides", [1]),
    ("patch", "/api/v1/flags/invoice-engine/states/staging/", "overrides", "abc"),
    ("patch", "/api/v1/flags/invoice-engine/states/staging/", "include_cohorts", "pilot"),
    ("put", "/api/v1/flags/invoice-engine/states/staging/stages/", "stages", {"name": "pilot"}),
    ("post", "/api/v1/cohorts/pilot/members/", "add", "t9"),
    ("post", "/api/v1/users/", "roles", "editor"),
], ids=lambda value: str(value))
def test_nested_field__wrong_shape__400_naming_it_and_nothing_changed(scene, admin_api, method, path, field, value):
    before = _fingerprint()
    body = {"version": 1, "reason": "r", field: value} if method != "post" or "members" in path else {
        "username": "zed", field: value}
    response = getattr(admin_api, method)(path, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["fields"]
    assert _fingerprint() == before
