"""Turnout's urls plus the baseline: a bare Django JSON view that reads the same JSON body and
answers a decision-shaped body, through the same middleware, without auth or evaluation."""

import json

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from config.urls import urlpatterns as turnout_urlpatterns

ANSWER = {"flag": "invoice-engine", "path": "legacy", "compare": False, "reason": "DEFAULT", "stage": 0,
          "version": 1}


@csrf_exempt
def bare(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    return JsonResponse({**ANSWER, "flag": data.get("flag", "")})


@csrf_exempt
async def bare_async(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    return JsonResponse({**ANSWER, "flag": data.get("flag", "")})


urlpatterns = [
    path("bench/bare", bare),
    path("bench/bare-async", bare_async),
    *turnout_urlpatterns,
]
