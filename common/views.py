from __future__ import annotations

import math
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView, redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from common.errors import json_error
from common.throttling import AuthThrottle, CacheUnavailable, FailedSignInThrottle
from common.ui import SESSION_ENV


@require_POST
@login_required
def switch_environment(request: HttpRequest) -> HttpResponse:
    """The environment switcher: remembered in the session, then back to the page it was used on."""
    from rollout.models import Environment

    key = request.POST.get("environment", "")
    if Environment.objects.filter(key=key).exists():
        request.session[SESSION_ENV] = key
    target = request.POST.get("next", "/")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        target = "/"
    return HttpResponseRedirect(target)


@require_GET
def admin_login(request: HttpRequest) -> HttpResponse:
    """``/admin/login/``: the admin signs people in through the app's login page (one form, one
    throttle). Its own form is never served, so a password posted here is never checked (405)."""
    return redirect_to_login(request.GET.get("next") or "/admin/")


class ThrottledLoginView(LoginView):
    """The sign-in page (also where ``/admin/login/`` sends people), with two limits on posting it:
    attempts per client address (the ``auth`` rate) and failed sign-ins per attempted username from
    any address (the ``auth_username`` rate). A refused attempt never reaches the password check.
    With the cache down or hung both limits fail closed: JSON 503 ``redis_unavailable``.
    """

    template_name = "registration/login.html"

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = str(request.POST.get("username", ""))
        self.failures = FailedSignInThrottle(username)
        try:
            for throttle in (AuthThrottle(), self.failures):
                if not throttle.allow_request(request, self):
                    retry_after = max(1, math.ceil(throttle.wait() or 1))
                    response = json_error(429, "throttled", "Too many sign-in attempts; try again later.",
                                          retry_after=retry_after)
                    response["Retry-After"] = str(retry_after)
                    return response
        except CacheUnavailable as exc:
            return json_error(exc.status_code, exc.code, exc.message)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        self.failures.failed()
        return super().form_invalid(form)
