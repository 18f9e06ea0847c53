"""Who did something: a person, an API token (and its owner), or the system itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Actor:
    type: str  # audit.models.ActorType value
    label: str
    user_id: int | None = None
    token_id: int | None = None

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        return cls(type="user", label=user.get_username(), user_id=user.pk)

    @classmethod
    def for_token(cls, token: Any) -> Actor:
        return cls(
            type="token", label=f"{token.user.get_username()} via {token.prefix}", user_id=token.user_id,
            token_id=token.pk,
        )

    @classmethod
    def system(cls, cause: str) -> Actor:
        """The system acting on its own, naming the cause: ``system:schedule``, ``system:guardrail``..."""
        return cls(type="system", label=f"system:{cause}")

    @classmethod
    def anonymous(cls, label: str = "anonymous") -> Actor:
        return cls(type="anonymous", label=label)

    @classmethod
    def from_request(cls, request: Any) -> Actor:
        token = getattr(request, "auth", None)
        if token is not None and getattr(token, "prefix", "").startswith("tok_"):
            return cls.for_token(token)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return cls.for_user(user)
        return cls.anonymous()
