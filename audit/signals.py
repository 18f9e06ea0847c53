"""Sign-ins, sign-outs and failed sign-ins, from Django's own auth signals, into the audit log.

Signals are the one place Django reports these; each receiver calls an audit service, which writes
its event through ``audit_record`` in a transaction like every other change. Passwords are never
recorded: a failed sign-in keeps only the attempted username (truncated), the client address and the
request id. Failed sign-ins beyond a few per window are counted into one ``auth.login_failed_burst``
event (``auth_login_failed_recorded``); every sign-in event first closes the windows that have ended.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from audit.services import (
    auth_login_failed_burst_recorded,
    auth_login_failed_recorded,
    auth_login_recorded,
    auth_logout_recorded,
)
from common.actors import Actor
from common.middleware import client_address


def _remote_addr(request: Any) -> str:
    return client_address(request) if request is not None else ""


def _close_bursts() -> None:
    auth_login_failed_burst_recorded(actor=Actor.anonymous())


def _real_request(request: Any) -> bool:
    # ``Client.force_login`` in tests calls login() with a blank HttpRequest (no method): not a sign-in.
    return request is not None and bool(getattr(request, "method", None))


@receiver(user_logged_in, dispatch_uid="audit.user_logged_in")
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if not _real_request(request):
        return
    _close_bursts()
    auth_login_recorded(actor=Actor.for_user(user), username=user.get_username(), remote_addr=_remote_addr(request))


@receiver(user_logged_out, dispatch_uid="audit.user_logged_out")
def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is None or not _real_request(request):
        return
    auth_logout_recorded(actor=Actor.for_user(user), username=user.get_username(), remote_addr=_remote_addr(request))


@receiver(user_login_failed, dispatch_uid="audit.user_login_failed")
def _login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    field = get_user_model().USERNAME_FIELD
    attempted = str(credentials.get(field) or credentials.get("username") or "")
    _close_bursts()
    auth_login_failed_recorded(actor=Actor.anonymous(), username=attempted, remote_addr=_remote_addr(request))
