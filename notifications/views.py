"""Notification pages: each person's subscriptions, and the delivery log for admins."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from common.errors import ServiceError
from common.permissions import Capability, can
from common.ui import INVALID, HtmxHttpRequest, actor, error_status, require
from notifications import services
from notifications.channels import shown_address
from notifications.forms import KindsForm, SubscriptionForm
from notifications.kinds import LABELS
from notifications.models import Delivery, Subscription


def _context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    subs = Subscription.objects.filter(user=request.user.pk or 0).order_by("channel", "address")
    rows = [{"sub": s, "shown": shown_address(s.channel, s.address),
             "labels": [LABELS.get(k, k) for k in s.kinds],
             "form": KindsForm(auto_id=f"sub-{s.pk}-%s", initial={"kinds": s.kinds})} for s in subs]
    email = getattr(request.user, "email", "")
    context: dict[str, Any] = {"rows": rows, "create_form": SubscriptionForm(initial={"channel": "email",
                                                                                      "address": email}),
                               "may_administer": can(request.user, Capability.ADMINISTER)}
    context.update(extra)
    return context


def _response(request: HtmxHttpRequest, extra: dict[str, Any], status: int) -> HttpResponse:
    template = ("notifications/subscriptions.html#subscriptions-panel" if request.htmx
                else "notifications/subscriptions.html")
    return render(request, template, _context(request, **extra), status=status)


@require_GET
@login_required
def subscriptions(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Capability.READ)
    return _response(request, {}, 200)


@require_POST
@login_required
def subscription_create(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Capability.READ)
    form = SubscriptionForm(request.POST)
    if not form.is_valid():
        return _response(request, {"create_form": form}, INVALID)
    try:
        services.subscription_create(actor=actor(request), **form.cleaned_data)
    except ServiceError as exc:
        form.add_service_error(exc)
        return _response(request, {"create_form": form}, 403 if exc.status_code == 403 else error_status(exc))
    return _response(request, {"notice": "Subscribed."}, 200)


@require_POST
@login_required
def subscription_update(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    require(request, Capability.READ)
    form = KindsForm(request.POST)
    if not form.is_valid():
        return _response(request, {"error": "Choose at least one thing to be told about."}, INVALID)
    try:
        services.subscription_update(actor=actor(request), subscription=pk, **form.cleaned_data)
    except ServiceError as exc:
        return _response(request, {"error": exc.message}, exc.status_code if exc.status_code == 404
                         else error_status(exc))
    return _response(request, {"notice": "Saved."}, 200)


@require_POST
@login_required
def subscription_delete(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    require(request, Capability.READ)
    try:
        services.subscription_delete(actor=actor(request), subscription=pk)
    except ServiceError as exc:
        return _response(request, {"error": exc.message}, exc.status_code if exc.status_code == 404
                         else error_status(exc))
    return _response(request, {"notice": "Unsubscribed."}, 200)


@require_GET
@login_required
def deliveries(request: HtmxHttpRequest) -> HttpResponse:
    """Every notification sent, retrying or given up, newest first (admins)."""
    require(request, Capability.ADMINISTER)
    status = request.GET.get("status", "")
    rows = Delivery.objects.all()
    if status:
        rows = rows.filter(status=status)
    shown = [{"d": d, "shown": shown_address(d.channel, d.address)} for d in rows[:200]]
    template = "notifications/deliveries.html#delivery-table" if request.htmx else "notifications/deliveries.html"
    return render(request, template, {"rows": shown, "status": status})
