"""Single sign-on's pure parts and the password switch (the browser flow: tests/browser/test_sso.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from rollout.access.oidc import parse_role_map, roles_from_claims, username_from_claims


def test_parse_role_map__pairs__group_to_roles() -> None:
    assert parse_role_map("ops=admin, reviewers=approver,reviewers=compliance") == {
        "ops": ["admin"], "reviewers": ["approver", "compliance"]}


@pytest.mark.parametrize("text", ["ops", "ops=owner", "=admin=x"])
def test_parse_role_map__bad_pair__names_it(text: str) -> None:
    with pytest.raises(ValueError, match="TURNOUT_OIDC_ROLE_MAP"):
        parse_role_map(text)


def test_roles_from_claims__mapped_groups_only(settings: Any) -> None:
    settings.TURNOUT_OIDC_ROLE_MAP = "ops=admin,dev=editor"
    assert roles_from_claims({"groups": ["dev", "ops", "lunch-club"]}) == ["admin", "editor"]
    assert roles_from_claims({"groups": "dev"}) == ["editor"]
    assert roles_from_claims({"groups": None}) == []
    assert roles_from_claims({}) == []


def test_username_from_claims__configured_claim_then_sub(settings: Any) -> None:
    assert username_from_claims({"preferred_username": "alice", "sub": "42"}) == "alice"
    assert username_from_claims({"sub": "42"}) == "42"
    settings.TURNOUT_OIDC_USERNAME_CLAIM = "email"
    assert username_from_claims({"email": "a@example.org", "preferred_username": "alice"}) == "a@example.org"


@pytest.mark.django_db
def test_login__password_sign_in_off__403_and_no_form(settings: Any, audit_events: Any) -> None:
    from django.test import Client

    settings.TURNOUT_PASSWORD_LOGIN = False
    client = Client()
    assert 'name="password"' not in client.get("/login/").content.decode()
    response = client.post("/login/", {"username": "root", "password": "whatever-it-is"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "password_login_disabled"
    assert audit_events() == []


# -- discovery and provider sign-out (the real provider: tests/browser/test_sso.py) ----------------------------


class Issuer:
    """A discovery document served on loopback, counting its fetches (stop() makes it unreachable)."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        issuer = self
        self.fetches = 0

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer.fetches += 1
                body = json.dumps(issuer.document).encode()
                self.send_response(200 if self.path == "/realm/.well-known/openid-configuration" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/realm"
        self.document: dict[str, Any] = {
            "issuer": self.url, "authorization_endpoint": f"{self.url}/auth", "token_endpoint": f"{self.url}/token",
            "userinfo_endpoint": f"{self.url}/userinfo", "jwks_uri": f"{self.url}/certs",
            "end_session_endpoint": f"{self.url}/logout"}
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def issuer(settings: Any) -> Any:
    from rollout.access.oidc import discovery

    served = Issuer()
    settings.OIDC_OP_ISSUER = served.url
    settings.OIDC_RP_CLIENT_ID = "turnout"
    for name in ("OIDC_OP_AUTHORIZATION_ENDPOINT", "OIDC_OP_TOKEN_ENDPOINT", "OIDC_OP_USER_ENDPOINT",
                 "OIDC_OP_JWKS_ENDPOINT", "OIDC_OP_LOGOUT_ENDPOINT"):
        setattr(settings, name, "")
    discovery.clear()
    yield served
    served.stop()
    discovery.clear()


def test_discovery__issuer_only__endpoints_from_its_document__fetched_once_while_cached(
        issuer: Issuer, settings: Any) -> None:
    from rollout.access.oidc import provider_endpoint

    assert provider_endpoint("OIDC_OP_AUTHORIZATION_ENDPOINT") == f"{issuer.url}/auth"
    assert provider_endpoint("OIDC_OP_JWKS_ENDPOINT") == f"{issuer.url}/certs"
    assert provider_endpoint("OIDC_OP_LOGOUT_ENDPOINT") == f"{issuer.url}/logout"
    assert issuer.fetches == 1
    settings.OIDC_OP_TOKEN_ENDPOINT = "https://elsewhere.example.org/token"  # set explicitly: it wins
    assert provider_endpoint("OIDC_OP_TOKEN_ENDPOINT") == "https://elsewhere.example.org/token"


def test_discovery__provider_down_and_nothing_cached__sign_in_503_naming_the_document(
        issuer: Issuer, rf: Any) -> None:
    from rollout.access.oidc import TurnoutAuthenticateView

    issuer.stop()
    response = TurnoutAuthenticateView.as_view()(rf.get("/oidc/authenticate/"))
    assert response.status_code == 503
    body = json.loads(response.content)
    assert body["error"]["code"] == "identity_provider_unavailable"
    assert f"{issuer.url}/.well-known/openid-configuration" in body["error"]["message"]


def test_discovery__provider_down_after_a_fetch__the_cached_document_still_used(
        issuer: Issuer, settings: Any) -> None:
    from rollout.access.oidc import provider_endpoint

    settings.TURNOUT_OIDC_DISCOVERY_CACHE_SECONDS = 0  # every call fetches again
    assert provider_endpoint("OIDC_OP_TOKEN_ENDPOINT") == f"{issuer.url}/token"
    issuer.stop()
    assert provider_endpoint("OIDC_OP_TOKEN_ENDPOINT") == f"{issuer.url}/token"


def test_discovery__document_of_another_issuer__refused(issuer: Issuer) -> None:
    from rollout.access.oidc import ProviderUnavailable, provider_endpoint

    issuer.document["issuer"] = "https://evil.example.org"
    with pytest.raises(ProviderUnavailable, match=re.escape("its issuer is 'https://evil.example.org'")):
        provider_endpoint("OIDC_OP_TOKEN_ENDPOINT")


def test_provider_logout_url__end_session_with_id_token_hint_and_the_way_back(issuer: Issuer, rf: Any) -> None:
    from urllib.parse import parse_qs, urlsplit

    from rollout.access.oidc import provider_logout_url

    request = rf.get("/")
    request.session = {"oidc_id_token": "header.payload.signature"}
    url = urlsplit(provider_logout_url(request))
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{issuer.url}/logout"
    assert parse_qs(url.query) == {"id_token_hint": ["header.payload.signature"], "client_id": ["turnout"],
                                   "post_logout_redirect_uri": ["http://testserver/login/"]}
    issuer.document.pop("end_session_endpoint")
    from rollout.access.oidc import discovery

    discovery.clear()
    assert provider_logout_url(request) == "http://testserver/login/"  # no end-session endpoint: ours only
