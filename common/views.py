from __future__ import annotations

import math
from typing import Any

from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse

from common.errors import json_error
from common.throttling import AuthThrottle


class ThrottledLoginView(LoginView):
    """The sign-in page, with sign-in attempts limited per client address (the ``auth`` rate)."""

    template_name = "registration/login.html"

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        throttle = AuthThrottle()
        if not throttle.allow_request(request, self):
            retry_after = max(1, math.ceil(throttle.wait() or 1))
            response = json_error(429, "throttled", "Too many sign-in attempts; try again later.",
                                  retry_after=retry_after)
            response["Retry-After"] = str(retry_after)
            return response
        return super().post(request, *args, **kwargs)
