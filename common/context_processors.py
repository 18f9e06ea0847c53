"""What every page's shell shows: environments, the switcher's choice, the user's role and rights."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from common.permissions import Capability, can, primary_role
from common.ui import current_environment, environments


def shell(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    envs = environments()
    role = primary_role(user)
    return {
        "environments": envs,
        "current_env": current_environment(request, envs),
        "role": role,
        # Compliance reviewers get the audit tools only (they may still open what an event links to).
        "audit_only": role == "compliance",
        "may": {cap.value: can(user, cap) for cap in Capability},
    }
