"""The configuration endpoints: the schema served as published, bad files as one 400 naming file, line and
field, a plan for any role (its rulings are the caller's own), apply needing the plan's versions."""

from __future__ import annotations

import json
from typing import Any

from actions.config.files import SCHEMA_PATH


def test_schema_endpoint__serves_the_published_schema(admin_api: Any) -> None:
    response = admin_api.get("/api/v1/config/schema")

    assert response.status_code == 200
    assert json.loads(response.content) == json.loads(SCHEMA_PATH.read_text())


def test_openapi__links_the_files_schema(admin_api: Any) -> None:
    document = json.loads(admin_api.get("/api/v1/schema/?format=json").content)

    assert "/api/v1/config/schema" in document["info"]["description"]
    assert "/api/v1/config/plan" in document["paths"]


def test_plan_endpoint__bad_file__400_with_file_line_field(demo: None, as_role: Any) -> None:
    body = {"files": {"flags/x.yaml": "turnout: 1\nflags:\n  - key: x\n    workload: invoice-engine\n    sallt: y\n"}}

    response = as_role("viewer").post("/api/v1/config/plan", body, format="json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "config_invalid"
    assert error["problems"][0] == {"file": "flags/x.yaml", "line": 5, "field": "flags[0].sallt",
                                    "message": error["problems"][0]["message"]}
    assert error["problems"][0]["message"].startswith("unknown key; this takes bucket_by, description")


def test_plan_endpoint__viewer__plans_with_refusals(demo: None, as_role: Any, admin_api: Any) -> None:
    files = admin_api.get("/api/v1/config/export").json()["files"]
    files["workloads.yaml"] = files["workloads.yaml"].replace("owner: crm-team", "owner: search-team")

    plan = as_role("viewer").post("/api/v1/config/plan", {"files": files}, format="json").json()

    [change] = [c for c in plan["changes"] if c["op"] != "unchanged"]
    assert (change["key"], change["ruling"]) == ("customer-search", "refuse")
    assert plan["has_changes"] is True


def test_apply_endpoint__without_versions__400_naming_it(demo: None, admin_api: Any) -> None:
    files = admin_api.get("/api/v1/config/export").json()["files"]

    response = admin_api.post("/api/v1/config/apply", {"files": files}, format="json")

    assert response.status_code == 400
    assert "versions" in response.json()["error"]["fields"]


def test_apply_endpoint__path_leaving_the_configuration__400(demo: None, admin_api: Any) -> None:
    response = admin_api.post("/api/v1/config/plan", {"files": {"../etc/x.yaml": "turnout: 1\n"}}, format="json")

    assert response.status_code == 400
    assert "must be a path inside the configuration" in response.json()["error"]["message"]
