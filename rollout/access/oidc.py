"""Single sign-on with OpenID Connect (mozilla-django-oidc): who a signed-in person is, and their roles.

People are matched by a username claim (``TURNOUT_OIDC_USERNAME_CLAIM``, default ``preferred_username``),
created at their first sign-in, and given the roles their groups map to (``TURNOUT_OIDC_ROLE_MAP``,
``group=role`` pairs, read from the ``TURNOUT_OIDC_GROUPS_CLAIM`` claim) — again at every sign-in, so a
change in the identity provider reaches Turnout the next time they sign in. Both go through the user
services, so both are audited (actor ``system:oidc``). A deactivated person is refused: the callback
signs in active users only.

The provider's endpoints come from its discovery document (``OIDC_OP_ISSUER`` +
``/.well-known/openid-configuration``), fetched when first needed and kept for
``TURNOUT_OIDC_DISCOVERY_CACHE_SECONDS``; an endpoint set explicitly (``OIDC_OP_*_ENDPOINT``) wins. A provider
that cannot be reached when nothing is cached gives a JSON 503 ``identity_provider_unavailable`` naming
the document (a stale copy is used, with a warning, rather than refusing sign-ins). Sign-out also ends the
provider's session (RP-initiated logout: its ``end_session_endpoint`` with ``id_token_hint`` and
``post_logout_redirect_uri``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView, OIDCLogoutView

from common.actors import Actor
from common.conf import get_setting
from common.errors import json_error
from rollout.access.users import ROLES, user_create, user_roles, user_update_roles

if TYPE_CHECKING:
    from django.contrib.auth.models import User

ACTOR = Actor.system("oidc")
logger = logging.getLogger("turnout.oidc")

#: Our settings (mozilla-django-oidc's names) -> the discovery document's keys.
ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
    "OIDC_OP_LOGOUT_ENDPOINT": "end_session_endpoint",
}
REQUIRED = ("authorization_endpoint", "token_endpoint", "jwks_uri")


class ProviderUnavailable(Exception):
    """The identity provider's discovery document could not be had (and none is cached)."""


def discovery_url() -> str:
    issuer = str(getattr(settings, "OIDC_OP_ISSUER", "") or "").rstrip("/")
    return f"{issuer}/.well-known/openid-configuration" if issuer else ""


class _Discovery:
    """The provider's discovery document, fetched once and kept for a while (one per process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._document: dict[str, Any] | None = None
        self._fetched = 0.0

    def clear(self) -> None:
        with self._lock:
            self._document, self._fetched = None, 0.0

    def _fetch(self, url: str) -> dict[str, Any]:
        response = requests.get(url, timeout=float(get_setting("OIDC_DISCOVERY_TIMEOUT")),
                                headers={"Accept": "application/json"})
        response.raise_for_status()
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        missing = [key for key in REQUIRED if not isinstance(document.get(key), str)]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        issuer = str(getattr(settings, "OIDC_OP_ISSUER", "")).rstrip("/")
        if str(document.get("issuer", "")).rstrip("/") != issuer:  # OpenID Connect Discovery 1.0, section 4.3
            raise ValueError(f"its issuer is {document.get('issuer')!r}, not {issuer!r}")
        return document

    def document(self) -> dict[str, Any]:
        url = discovery_url()
        if not url:
            return {}
        with self._lock:
            fresh = time.monotonic() - self._fetched < float(get_setting("OIDC_DISCOVERY_CACHE_SECONDS"))
            if self._document is not None and fresh:
                return self._document
            try:
                self._document, self._fetched = self._fetch(url), time.monotonic()
            except (requests.RequestException, ValueError) as exc:
                if self._document is not None:  # keep signing people in with what the provider said last
                    logger.warning("oidc.discovery_stale", extra={"url": url, "error": str(exc)[:300]})
                    return self._document
                logger.error("oidc.discovery_failed", extra={"url": url, "error": str(exc)[:300]})
                raise ProviderUnavailable(f"the identity provider's discovery document at {url} could not be "
                                          f"read: {type(exc).__name__}: {str(exc)[:200]}") from None
            logger.info("oidc.discovered", extra={"url": url})
            return self._document


discovery = _Discovery()


def provider_endpoint(name: str) -> str:
    """One of the provider's endpoints (a ``ENDPOINTS`` setting name): set explicitly, or discovered."""
    explicit = str(getattr(settings, name, "") or "")
    if explicit:
        return explicit
    return str(discovery.document().get(ENDPOINTS[name]) or "")


def unavailable(exc: ProviderUnavailable) -> HttpResponse:
    response = json_error(503, "identity_provider_unavailable", str(exc))
    response["Retry-After"] = "30"
    return response


def parse_role_map(text: str) -> dict[str, list[str]]:
    """``"ops=admin,reviewers=approver,reviewers=compliance"`` → group → roles (unknown roles refused)."""
    mapping: dict[str, list[str]] = {}
    for pair in filter(None, (p.strip() for p in (text or "").split(","))):
        group, sep, role = pair.partition("=")
        if not sep or role.strip() not in ROLES:
            raise ValueError(f"TURNOUT_OIDC_ROLE_MAP: '{pair}' is not group=role with a role among {', '.join(ROLES)}")
        mapping.setdefault(group.strip(), []).append(role.strip())
    return mapping


def roles_from_claims(claims: Mapping[str, Any]) -> list[str]:
    groups = claims.get(get_setting("OIDC_GROUPS_CLAIM"))
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list):
        groups = []
    mapping = parse_role_map(get_setting("OIDC_ROLE_MAP"))
    return sorted({role for group in groups if isinstance(group, str) for role in mapping.get(group, [])})


def username_from_claims(claims: Mapping[str, Any]) -> str:
    value = claims.get(get_setting("OIDC_USERNAME_CLAIM")) or claims.get("sub") or ""
    return str(value)[:150]


class TurnoutOIDCBackend(OIDCAuthenticationBackend):  # type: ignore[misc]  # the library is untyped
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The client's settings only: Django loads this backend on every signed-in request (``get_user``),
        so the provider's endpoints are resolved at sign-in (``authenticate``), not here."""
        self.OIDC_RP_CLIENT_ID = self.get_settings("OIDC_RP_CLIENT_ID")
        self.OIDC_RP_CLIENT_SECRET = self.get_settings("OIDC_RP_CLIENT_SECRET")
        self.OIDC_RP_SIGN_ALGO = self.get_settings("OIDC_RP_SIGN_ALGO", "RS256")
        self.OIDC_RP_IDP_SIGN_KEY = self.get_settings("OIDC_RP_IDP_SIGN_KEY", None)
        self.OIDC_OP_TOKEN_ENDPOINT = self.OIDC_OP_USER_ENDPOINT = ""
        self.OIDC_OP_JWKS_ENDPOINT: str | None = None
        self.UserModel = get_user_model()

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        if request is None or not request.GET.get("code") or not request.GET.get("state"):
            return None  # a password sign-in (the next backend's), never a reason to ask the provider
        self.OIDC_OP_TOKEN_ENDPOINT = provider_endpoint("OIDC_OP_TOKEN_ENDPOINT")
        self.OIDC_OP_USER_ENDPOINT = provider_endpoint("OIDC_OP_USER_ENDPOINT")
        self.OIDC_OP_JWKS_ENDPOINT = provider_endpoint("OIDC_OP_JWKS_ENDPOINT") or None
        return super().authenticate(request, **kwargs)

    def get_user(self, user_id: Any) -> Any:
        """The session's person — none once deactivated (the library's own answer ignores it)."""
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(username_from_claims(claims))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        return get_user_model().objects.filter(username=username_from_claims(claims))

    def create_user(self, claims: dict[str, Any]) -> User:
        email = str(claims.get("email") or "")[:254]
        return user_create(actor=ACTOR, username=username_from_claims(claims), password=None,
                           roles=roles_from_claims(claims), email=email)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        if not user.is_active:
            return user  # refused by the callback; nothing about them changes
        roles = roles_from_claims(claims)
        if roles != user_roles(user):
            groups = claims.get(get_setting("OIDC_GROUPS_CLAIM"))
            user = user_update_roles(actor=ACTOR, username=user.get_username(), roles=roles,
                                     reason=f"signed in with groups {groups!r} from the identity provider")
        return user


class TurnoutAuthenticateView(OIDCAuthenticationRequestView):  # type: ignore[misc]  # the library is untyped
    """"Sign in with …": to the provider's authorization endpoint (discovered), or a 503 naming it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)
        self.OIDC_RP_CLIENT_ID = self.get_settings("OIDC_RP_CLIENT_ID")
        self.OIDC_OP_AUTH_ENDPOINT = ""

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider_endpoint("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except ProviderUnavailable as exc:
            return unavailable(exc)
        response: HttpResponse = super().get(request)
        return response


class TurnoutCallbackView(OIDCAuthenticationCallbackView):  # type: ignore[misc]  # the library is untyped
    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            response: HttpResponse = super().get(request)
        except ProviderUnavailable as exc:
            return unavailable(exc)
        return response


def provider_logout_url(request: HttpRequest) -> str:
    """Where sign-out sends the browser (``OIDC_OP_LOGOUT_URL_METHOD``): the provider's end-session endpoint,
    which ends its session too and sends the person back to Turnout's sign-in page; Turnout's sign-in page
    itself when the provider has none (or cannot be reached: Turnout's session ends either way)."""
    back = request.build_absolute_uri(reverse(settings.LOGOUT_REDIRECT_URL))
    try:
        endpoint = provider_endpoint("OIDC_OP_LOGOUT_ENDPOINT")
    except ProviderUnavailable:
        return back
    if not endpoint:
        return back
    params = {"post_logout_redirect_uri": back, "client_id": settings.OIDC_RP_CLIENT_ID}
    id_token = request.session.get("oidc_id_token")
    if id_token:
        params["id_token_hint"] = id_token
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"


class TurnoutLogoutView(OIDCLogoutView):  # type: ignore[misc]  # the library is untyped
    """Sign-out with single sign-on on: Turnout's session ends (audited, ``auth.logout``), then the provider's."""

    http_method_names = ["post"]
