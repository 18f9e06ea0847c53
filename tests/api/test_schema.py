"""The OpenAPI document: valid, warning-free, and with no untyped holes in the management API."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db

OUT_OF_SCOPE = ("/api/v1/sdk/", "/api/v1/audit/")  # described by their own owners


def _walk(node: Any, path: str = "") -> list[str]:
    """Paths of schema objects that say nothing about their type (drf-spectacular's AnyType)."""
    holes = []
    if isinstance(node, dict):
        if node == {} and path.endswith(("schema", "items", "additionalProperties")):
            holes.append(path)
        for key, value in node.items():
            holes.extend(_walk(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            holes.extend(_walk(value, f"{path}/{index}"))
    return holes


def test_schema__generated__valid_without_warnings(tmp_path):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))


def test_schema__management_paths__no_untyped_holes_and_every_error_described(admin_api):
    document = json.loads(admin_api.get("/api/v1/schema/?format=json").content)
    paths = {p: ops for p, ops in document["paths"].items() if not p.startswith(OUT_OF_SCOPE)}
    assert len(paths) >= 20
    holes = _walk(paths) + _walk(document["components"]["schemas"])
    assert holes == []
    for path, operations in paths.items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert {"401", "403", "429"} <= codes, (method, path)
            if "{" in path:
                assert "404" in codes, (method, path)


def test_docs__swagger_ui__served_from_our_own_static_files(client, settings):
    import re

    from django.contrib.staticfiles import finders

    response = client.get("/api/v1/docs/")
    assert response.status_code == 200 and b"swagger" in response.content.lower()
    # Assets: scripts and stylesheets (the page's own links are navigation, checked below).
    found = re.findall(rb'(?:src="([^"]+)"|<link [^>]*href="([^"]+)")', response.content)
    assets = [(src or href).decode() for src, href in found]
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    for asset in assets:  # nothing from a CDN: every asset is one of our static files
        if asset.startswith("/api/v1/docs/?script"):  # or the page's start-up script, a file for the CSP
            script = client.get(asset)
            assert script.status_code == 200 and script["Content-Type"].startswith("application/javascript")
            continue
        assert asset.startswith(settings.STATIC_URL), asset
        assert finders.find(asset.removeprefix(settings.STATIC_URL)), asset


def test_docs__swagger_ui__has_a_way_back_to_the_web_ui(client):
    """Issue 18: the "API" menu item landed in bare Swagger with no way back."""
    body = client.get("/api/v1/docs/").content.decode()
    assert '<a href="/">← Back to the dashboard</a>' in body and '<a href="/audit/">Audit</a>' in body


def test_schema__stdout__mentions_every_tag():
    out = io.StringIO()
    call_command("spectacular", "--format", "openapi-json", stdout=out)
    tags = {tag for op in json.loads(out.getvalue())["paths"].values() for o in op.values() for tag in o["tags"]}
    assert {"environments", "workloads", "flags", "flag states", "cohorts", "sdk keys", "api tokens", "users"} <= tags
