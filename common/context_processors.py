"""What every page's shell shows: the user's role and rights (the environment switcher's part is
``rollout.switcher.shell``)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from common.permissions import Capability, can, primary_role


def shell(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    role = primary_role(user)
    return {
        "role": role,
        # Compliance reviewers get the audit tools only (they may still open what an event links to).
        "audit_only": role == "compliance",
        "may": {cap.value: can(user, cap) for cap in Capability},
    }
