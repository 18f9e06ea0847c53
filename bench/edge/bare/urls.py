"""The bare views: a GET answering a small JSON object, and a POST that parses a JSON body and
answers a decision-shaped object (what the SDK endpoints do, without auth, throttling or rules)."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

ANSWER = {"flag": "flag-0000", "path": "legacy", "compare": False, "reason": "DEFAULT", "stage": 0, "version": 1}


def bare_get(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"environment": "production", "version": 1})


@csrf_exempt
def bare_post(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    return JsonResponse({**ANSWER, "flag": str(data.get("flag", ""))})


urlpatterns = [
    path("bare/get", bare_get),
    path("bare/post", bare_post),
]
