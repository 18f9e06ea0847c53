from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok"})


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    from rollout.models import Environment, Workload

    return render(request, "home.html", {
        "workloads": Workload.objects.prefetch_related("flags"),
        "environments": Environment.objects.all(),
    })
