"""The web UI's environment switcher: which environment the pages show (kept in the session), the view
that changes it, and the shell context every page's switcher is drawn from."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from rollout.models import Environment

SESSION_ENV = "turnout_environment"


def environments() -> list[Environment]:
    return list(Environment.objects.all())


def current_environment(request: HttpRequest, envs: list[Environment] | None = None) -> Environment | None:
    """The environment picked in the switcher (kept in the session), else the first one."""
    envs = environments() if envs is None else envs
    wanted = request.session.get(SESSION_ENV) if hasattr(request, "session") else None
    return next((e for e in envs if e.key == wanted), envs[0] if envs else None)


def shell(request: HttpRequest) -> dict[str, Any]:
    """Context processor: the environments and the switcher's choice, for signed-in pages."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    envs = environments()
    return {"environments": envs, "current_env": current_environment(request, envs)}


@require_POST
@login_required
def switch_environment(request: HttpRequest) -> HttpResponse:
    """The environment switcher: remembered in the session, then back to the page it was used on."""
    key = request.POST.get("environment", "")
    if Environment.objects.filter(key=key).exists():
        request.session[SESSION_ENV] = key
    target = request.POST.get("next", "/")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = "/"
    return HttpResponseRedirect(target)
