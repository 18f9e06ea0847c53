from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.contrib.auth.views import LoginView, redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from common.conf import get_setting
from common.errors import json_error
from common.throttling import AuthThrottle, CacheUnavailable, FailedSignInThrottle


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

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context_data(**kwargs)
        context.update(sso=get_setting("SSO"), password_login=get_setting("PASSWORD_LOGIN"),
                       sso_name=getattr(settings, "OIDC_PROVIDER_NAME", "single sign-on"),
                       sso_refused=self.request.GET.get("sso") == "refused")
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not get_setting("PASSWORD_LOGIN"):
            return json_error(403, "password_login_disabled",
                              "Password sign-in is turned off here: sign in with single sign-on.")
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
