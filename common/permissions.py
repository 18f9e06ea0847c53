"""The one permission layer, used by the API and the UI alike.

Roles are Django groups (made by a migration). A superuser counts as ``admin``.

| capability            | viewer | editor | approver | admin | compliance |
|-----------------------|:------:|:------:|:--------:|:-----:|:----------:|
| read                  |   ✓    |   ✓    |    ✓     |   ✓   |     ✓      |
| edit (global objects) |        |   ✓    |    ✓     |   ✓   |            |
| change an environment |        |  (1)   |   (1)    |   ✓   |            |
| kill / rollback       |        |   ✓    |    ✓     |   ✓   |            |
| approve others        |        |        |    ✓     |   ✓   |            |
| keys, tokens, users   |        |        |          |   ✓   |            |
| audit export / verify |        |        |          |   ✓   |     ✓      |

(1) directly in environments that do not require approval and for workloads below ``high`` risk;
otherwise by a change request that another approver (or admin) approves. Advancing an
``irreversible`` workload always goes through a change request, for admins too
(``rollout/policy.py``). Approving needs APPROVE and a different user than the requester
(``can_decide``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission

from common.errors import Forbidden


class Role(StrEnum):
    VIEWER = "viewer"
    EDITOR = "editor"
    APPROVER = "approver"
    ADMIN = "admin"
    COMPLIANCE = "compliance"


class Capability(StrEnum):
    READ = "read"
    EDIT = "edit"
    CHANGE_ENV = "change_env"
    EMERGENCY = "emergency"  # kill, rollback: never wait for approval
    APPROVE = "approve"
    ADMINISTER = "administer"  # keys, tokens, users, roles
    AUDIT = "audit"  # export and verify the audit log


GRANTS: dict[Role, frozenset[Capability]] = {
    Role.VIEWER: frozenset({Capability.READ}),
    Role.EDITOR: frozenset({Capability.READ, Capability.EDIT, Capability.CHANGE_ENV, Capability.EMERGENCY}),
    Role.APPROVER: frozenset({Capability.READ, Capability.EDIT, Capability.CHANGE_ENV, Capability.EMERGENCY,
                              Capability.APPROVE}),
    Role.ADMIN: frozenset(Capability),
    Role.COMPLIANCE: frozenset({Capability.READ, Capability.AUDIT}),
}


def roles_of(user: Any) -> frozenset[Role]:
    if user is None or not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", True):
        return frozenset()
    cached = getattr(user, "_turnout_roles", None)
    if isinstance(cached, frozenset):
        return cached
    names = set(user.groups.values_list("name", flat=True)) if getattr(user, "pk", None) else set()
    roles = {Role(n) for n in names if n in Role.__members__.values()}
    if getattr(user, "is_superuser", False):
        roles.add(Role.ADMIN)
    result = frozenset(roles)
    user._turnout_roles = result
    return result


def capabilities_of(user: Any) -> frozenset[Capability]:
    caps: set[Capability] = set()
    for role in roles_of(user):
        caps |= GRANTS[role]
    return frozenset(caps)


HIGH_RISK = frozenset({"high", "critical"})


def can(user: Any, capability: Capability, *, environment: Any = None, workload: Any = None) -> bool:
    """May ``user`` do this? For CHANGE_ENV, an environment that requires approval, or a high /
    critical workload, is admin-only directly (others go through a change request)."""
    caps = capabilities_of(user)
    if capability not in caps:
        return False
    if capability is Capability.CHANGE_ENV:
        gated = bool(getattr(environment, "requires_approval", False)) or getattr(workload, "risk", "") in HIGH_RISK
        if gated:
            return Capability.ADMINISTER in caps
    return True


_CAPABILITY_WORDS = {
    Capability.READ: "read",
    Capability.EDIT: "make changes",
    Capability.CHANGE_ENV: "change environments",
    Capability.EMERGENCY: "kill or roll back",
    Capability.APPROVE: "approve changes",
    Capability.ADMINISTER: "manage keys, tokens and users",
    Capability.AUDIT: "export or verify the audit log",
}


def denial(user: Any, capability: Capability, *, environment: Any = None, workload: Any = None) -> str | None:
    """Why ``user`` may not do this (``None`` when they may), in words an API caller can act on."""
    if can(user, capability, environment=environment, workload=workload):
        return None
    if capability is Capability.CHANGE_ENV and capability in capabilities_of(user):
        if environment is not None and getattr(environment, "requires_approval", False):
            return (f"environment '{environment.key}' requires approval: only an admin can change it directly "
                    "(other roles propose changes there)")
        if workload is not None:
            return (f"workload '{workload.key}' is {workload.risk} risk: only an admin can change it directly "
                    "(other roles propose changes)")
    role = primary_role(user)
    return f"your role ({role}) may not {_CAPABILITY_WORDS[capability]}"


def require(user: Any, capability: Capability, *, environment: Any = None, workload: Any = None) -> None:
    """Raise ``Forbidden`` (403, with the reason) unless ``user`` may do this."""
    message = denial(user, capability, environment=environment, workload=workload)
    if message is not None:
        raise Forbidden(message)
def can_decide(user: Any, change_request: Any) -> bool:
    """May ``user`` approve or reject this change request? Four eyes: never their own."""
    if not can(user, Capability.APPROVE):
        return False
    return getattr(user, "pk", None) is not None and user.pk != change_request.requested_by_id


def primary_role(user: Any) -> str:
    order = [Role.ADMIN, Role.APPROVER, Role.EDITOR, Role.COMPLIANCE, Role.VIEWER]
    roles = roles_of(user)
    return next((r.value for r in order if r in roles), "none")


class HasCapability(BasePermission):
    """DRF: reads need READ; writes need the view's ``write_capability`` (default EDIT).

    A view may name a capability per method in ``capabilities`` (``{"DELETE": Capability.ADMINISTER}``).
    Environment-level rules (approval) are checked by the view with ``require(..., environment=env)``.
    """

    message = "Not allowed for your role."

    def has_permission(self, request: Any, view: Any) -> bool:
        per_method = getattr(view, "capabilities", {})
        if request.method in per_method:
            needed = per_method[request.method]
        elif request.method in SAFE_METHODS:
            needed = getattr(view, "read_capability", Capability.READ)
        else:
            needed = getattr(view, "write_capability", Capability.EDIT)
        reason = denial(request.user, needed)
        if reason is not None:
            self.message = reason[:1].upper() + reason[1:] + "."
            return False
        return True
