"""The team's pages: people (users, roles, deactivation), environments, and the break-glass review.

Thin like every view: check the capability, call the service the API calls (same policy, same audit
event), render the page or, for htmx, its named partial. API tokens and SDK keys live on the keys page.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import INTERNAL_RESET_SESSION_TOKEN, PasswordResetConfirmView
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse, reverse_lazy
from django.views.decorators.http import require_GET, require_POST

from actions.submit import outcome_message, review_item_acknowledge, submit
from audit.models import AuditEvent
from audit.names import Action
from common.actors import Actor
from common.conf import get_setting
from common.errors import Forbidden, ServiceError
from common.permissions import Capability, can
from common.ui import INVALID, HtmxHttpRequest, actor, error_status, require
from notifications.services import invitation_accept, invitation_send
from rollout.access import users as user_services
from rollout.models import Environment, ReviewItem
from rollout.services import environments as environment_services
from rollout.stale import stale_flags
from rollout.team_forms import (
    AcknowledgeForm,
    EnvironmentEditForm,
    EnvironmentForm,
    ReasonOnlyForm,
    UserCreateForm,
    UserRolesForm,
)

# -- people -----------------------------------------------------------------------------------------


def _people_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    users = (get_user_model().objects.order_by("-is_active", "username").prefetch_related("groups")
             .annotate(live_tokens=Count("api_tokens", filter=Q(api_tokens__revoked_at__isnull=True))))
    people = [{"user": u, "roles": user_services.user_roles(u), "is_self": u.pk == request.user.pk,
               "form": UserRolesForm(auto_id=f"roles-{u.pk}-%s", initial={"roles": user_services.user_roles(u)})}
              for u in users]
    context: dict[str, Any] = {"people": people, "create_form": UserCreateForm()}
    context.update(extra)
    return context


def _people_response(request: HtmxHttpRequest, extra: dict[str, Any], status: int) -> HttpResponse:
    template = "team/people.html#people-panel" if request.htmx else "team/people.html"
    return render(request, template, _people_context(request, **extra), status=status)


@require_GET
@login_required
def people(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    return _people_response(request, {}, 200)


@require_POST
@login_required
def person_create(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    form = UserCreateForm(request.POST)
    if form.is_valid():
        values = dict(form.cleaned_data)
        invite = values.pop("invite")
        try:
            user = user_services.user_create(actor=actor(request), **values)
        except ServiceError as exc:
            form.add_service_error(exc)
            return _people_response(request, {"create_form": form}, error_status(exc))
        roles = ", ".join(user_services.user_roles(user)) or "no role yet"
        notice = f"{user.get_username()} can sign in now ({roles})."
        if invite:
            try:
                invitation_send(actor=actor(request), username=user.get_username(),
                                base_url=request.build_absolute_uri("/"))
            except ServiceError as exc:  # the person exists: say why no invitation went
                return _people_response(request, {"notice": notice, "error": exc.message}, error_status(exc))
            notice += f" An invitation is on its way to {user.email}."
        return _people_response(request, {"notice": notice}, 200)
    return _people_response(request, {"create_form": form}, INVALID)


@require_POST
@login_required
def person_invite(request: HtmxHttpRequest, username: str) -> HttpResponse:
    """(Again) e-mail a person their invitation: a fresh one-time link; an earlier one keeps working until
    the password is set."""
    require(request, Capability.ADMINISTER)
    try:
        event = invitation_send(actor=actor(request), username=username, base_url=request.build_absolute_uri("/"))
    except ServiceError as exc:
        return _people_response(request, {"error": exc.message}, error_status(exc))
    email = event.after.get("email") if isinstance(event.after, dict) else ""
    return _people_response(request, {"notice": f"An invitation is on its way to {email}."}, 200)


class PasswordSetView(PasswordResetConfirmView):
    """Where an invitation's one-time link leads: choose a password (Django's reset token checks the link;
    the change goes through ``invitation_accept``, audited as ``user.password_set``). Not found while
    password sign-in is off; a deactivated person's link is invalid."""

    template_name = "team/password_set.html"
    success_url = reverse_lazy("login")

    def dispatch(self, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not get_setting("PASSWORD_LOGIN"):
            raise Http404("password sign-in is turned off")
        return super().dispatch(*args, **kwargs)

    def get_user(self, uidb64: str) -> Any:
        user = super().get_user(uidb64)
        return user if user is not None and user.is_active else None

    def form_valid(self, form: Any) -> HttpResponse:
        user = form.user
        try:
            invitation_accept(actor=Actor.for_user(user), username=user.get_username(),
                              password=form.cleaned_data["new_password1"])
        except ServiceError as exc:
            form.add_error(None, exc.message)
            return self.form_invalid(form)
        self.request.session.pop(INTERNAL_RESET_SESSION_TOKEN, None)
        messages.success(self.request, "Your password is set: sign in with it.")
        return HttpResponseRedirect(str(self.success_url))


@require_POST
@login_required
def person_roles(request: HtmxHttpRequest, username: str) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    form = UserRolesForm(request.POST)
    if not form.is_valid():
        return _people_response(request, {"error": "Choose roles from the list."}, INVALID)
    try:
        user = user_services.user_update_roles(actor=actor(request), username=username, **form.cleaned_data)
    except ServiceError as exc:
        return _people_response(request, {"error": exc.message}, error_status(exc))
    roles = ", ".join(user_services.user_roles(user)) or "no role"
    return _people_response(request, {"notice": f"{username} now has: {roles}."}, 200)


@require_POST
@login_required
def person_deactivate(request: HtmxHttpRequest, username: str) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    form = ReasonOnlyForm(request.POST)
    form.is_valid()
    try:
        user_services.user_deactivate(actor=actor(request), username=username,
                                      reason=form.cleaned_data.get("reason", ""))
    except ServiceError as exc:
        return _people_response(request, {"error": exc.message}, error_status(exc))
    return _people_response(request, {"notice": f"{username} is deactivated: signed out of everything, "
                                                "every API token revoked."}, 200)


# -- environments -----------------------------------------------------------------------------------


def _environment_rows() -> list[dict[str, Any]]:
    envs = Environment.objects.annotate(
        live_keys=Count("sdk_keys", filter=Q(sdk_keys__revoked_at__isnull=True))).order_by("order", "key")
    return [{"env": env, "form": EnvironmentEditForm(auto_id=f"env-{env.key}-%s", initial={
        "name": env.name, "order": env.order, "requires_approval": env.requires_approval,
        "description": env.description})} for env in envs]


def _environments_response(request: HtmxHttpRequest, extra: dict[str, Any], status: int) -> HttpResponse:
    context: dict[str, Any] = {"rows": _environment_rows(), "create_form": EnvironmentForm(),
                               "may_administer": can(request.user, Capability.ADMINISTER)}
    context.update(extra)
    template = "team/environments.html#environments-panel" if request.htmx else "team/environments.html"
    return render(request, template, context, status=status)


@require_GET
@login_required
def environments(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    return _environments_response(request, {}, 200)


@require_POST
@login_required
def environment_create(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    form = EnvironmentForm(request.POST)
    if form.is_valid():
        try:
            env = environment_services.environment_create(actor=actor(request), **form.cleaned_data)
        except ServiceError as exc:
            form.add_service_error(exc)
            return _environments_response(request, {"create_form": form}, error_status(exc))
        return _environments_response(request, {
            "notice": f"Environment “{env.name}” created: every flag is off there until started. "
                      "Create an SDK key for its services on the keys page."}, 200)
    return _environments_response(request, {"create_form": form}, INVALID)


@require_POST
@login_required
def environment_update(request: HtmxHttpRequest, key: str) -> HttpResponse:
    require(request, Capability.ADMINISTER)
    form = EnvironmentEditForm(request.POST)
    if not form.is_valid():
        errors = "; ".join(f"{name}: {' '.join(str(e) for e in errs)}" for name, errs in form.errors.items())
        return _environments_response(request, {"error": f"Not saved — {errors}"}, INVALID)
    try:
        env = environment_services.environment_update(actor=actor(request), key=key, **form.cleaned_data)
    except ServiceError as exc:
        return _environments_response(request, {"error": exc.message}, error_status(exc))
    return _environments_response(request, {"notice": f"Environment “{env.name}” saved."}, 200)


# -- break-glass review -----------------------------------------------------------------------------


def diff_rows(before: Any, after: Any) -> list[dict[str, Any]]:
    """The fields an audited change moved, as rows (field, before, after); unchanged fields left out."""
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    return [{"field": name, "before": before.get(name), "after": after.get(name)}
            for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]


def _review_rows(items: list[ReviewItem], user: Any) -> list[dict[str, Any]]:
    events = {e.sequence: e for e in AuditEvent.objects.filter(sequence__in=[i.audit_sequence for i in items])}
    may_approve = can(user, Capability.APPROVE)
    rows = []
    for item in items:
        event = events.get(item.audit_sequence)
        own = item.actor_user_id == user.pk
        rows.append({"item": item, "event": event, "own": own,
                     "diff": diff_rows(event.before, event.after) if event else [],
                     "may_acknowledge": may_approve and not own and item.acknowledged_at is None,
                     "form": AcknowledgeForm(auto_id=f"ack-{item.pk}-%s")})
    return rows


def _reviews_response(request: HtmxHttpRequest, extra: dict[str, Any], status: int) -> HttpResponse:
    items = ReviewItem.objects.select_related("flag_state__flag", "flag_state__environment")
    context: dict[str, Any] = {
        "open": _review_rows(list(items.filter(acknowledged_at__isnull=True).order_by("created_at", "pk")),
                             request.user),
        "done": _review_rows(list(items.filter(acknowledged_at__isnull=False).order_by("-acknowledged_at")[:30]),
                             request.user),
        "may_approve": can(request.user, Capability.APPROVE),
    }
    context.update(extra)
    template = "team/reviews.html#reviews-panel" if request.htmx else "team/reviews.html"
    return render(request, template, context, status=status)


@require_GET
@login_required
def reviews(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Capability.READ)
    return _reviews_response(request, {}, 200)


@require_POST
@login_required
def review_acknowledge(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    require(request, Capability.APPROVE)
    get_object_or_404(ReviewItem, pk=pk)
    form = AcknowledgeForm(request.POST, auto_id=f"ack-{pk}-%s")
    if not form.is_valid():
        return _reviews_response(request, {"error": "Say what you checked: a comment is required.",
                                           "error_item": pk}, INVALID)
    try:
        item = review_item_acknowledge(actor=actor(request), review_item=pk, note=form.cleaned_data["note"])
    except Forbidden as exc:  # four eyes: never the person who broke the glass
        raise PermissionDenied(exc.message) from None
    except ServiceError as exc:
        return _reviews_response(request, {"error": exc.message, "error_item": pk}, error_status(exc))
    if not request.htmx:
        messages.success(request, f"Review #{item.pk} acknowledged.")
        return HttpResponseRedirect(reverse("ui:reviews"))
    return _reviews_response(request, {"notice": f"Review #{item.pk} acknowledged; your comment is in the audit log."},
                             200)


# -- stale flags ------------------------------------------------------------------------------------


def _stale_response(request: HtmxHttpRequest, extra: dict[str, Any], status: int) -> HttpResponse:
    raw = request.GET.get("days") or request.POST.get("days") or ""
    days = int(raw) if raw.isdigit() and int(raw) <= 3650 else get_setting("STALE_FLAG_DAYS")
    context: dict[str, Any] = {"rows": stale_flags(days=days), "days": days,
                               "may_edit": can(request.user, Capability.EDIT)}
    context.update(extra)
    template = "team/stale_flags.html#stale-panel" if request.htmx else "team/stale_flags.html"
    return render(request, template, context, status=status)


@require_GET
@login_required
def stale_flag_report(request: HtmxHttpRequest) -> HttpResponse:
    require(request, Capability.READ)
    return _stale_response(request, {}, 200)


def _flag_action(request: HtmxHttpRequest, key: str, action: Action, done: str) -> HttpResponse:
    require(request, Capability.EDIT)
    form = ReasonOnlyForm(request.POST)
    form.is_valid()
    try:
        outcome = submit(actor=actor(request), action=action, target=key, reason=form.cleaned_data.get("reason", ""))
    except Forbidden as exc:
        raise PermissionDenied(exc.message) from None
    except ServiceError as exc:
        return _stale_response(request, {"error": exc.message}, error_status(exc))
    return _stale_response(request, {"notice": outcome_message(outcome, done)}, 200)


@require_POST
@login_required
def flag_archive(request: HtmxHttpRequest, key: str) -> HttpResponse:
    return _flag_action(request, key, Action.FLAG_ARCHIVED,
                        f"Flag {key} archived: it has left every ruleset. Restore it here if needed.")


@require_POST
@login_required
def flag_restore(request: HtmxHttpRequest, key: str) -> HttpResponse:
    return _flag_action(request, key, Action.FLAG_RESTORED, f"Flag {key} restored to every ruleset.")
