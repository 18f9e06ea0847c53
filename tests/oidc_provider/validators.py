from __future__ import annotations

from typing import Any

from oauth2_provider.oauth2_validators import OAuth2Validator


class GroupsValidator(OAuth2Validator):  # type: ignore[misc]
    """Adds the claims Turnout reads: preferred_username, email and groups (the user's Django groups)."""

    oidc_claim_scope = None  # every claim below, whatever the scopes

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        user = request.user
        return {"preferred_username": user.username, "email": user.email,
                "groups": sorted(user.groups.values_list("name", flat=True))}
