from __future__ import annotations

import math
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

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


class ThrottledLoginView(LoginView):
    """The sign-in page, with sign-in attempts limited per client address (the ``auth`` rate)."""

    template_name = "registration/login.html"

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        from common.errors import json_error
        from common.throttling import AuthThrottle

        throttle = AuthThrottle()
        if not throttle.allow_request(request, self):
            retry_after = max(1, math.ceil(throttle.wait() or 1))
            response = json_error(429, "throttled", "Too many sign-in attempts; try again later.",
                                  retry_after=retry_after)
            response["Retry-After"] = str(retry_after)
            return response
        return super().post(request, *args, **kwargs)
