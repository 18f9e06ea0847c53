"""Promotion over the API: ``POST /api/v1/flags/{key}/states/{env}/promote/`` with ``{"from_environment": "staging"}``.

The view reads what is promoted (``rollout.plans.promotion.promotion_of``) and submits it as the destination's
``flag_state.promoted`` action: 200 when applied, 202 with the change request where approval applies.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from actions.submit import submit_state
from audit.names import Action
from common.api import requested_version
from common.fields import ReasonField, key_field
from common.inputs import Input
from common.schema import IF_MATCH
from rollout.api.rollouts import STATE_PARAMS, SUBMIT_RESPONSES, VERSION, RolloutView, submitted_response
from rollout.plans.promotion import promotion_of


class PromoteInput(Input):
    from_environment = key_field(help_text="the environment promoted from (e.g. staging)")
    version = serializers.IntegerField(**VERSION)
    reason = ReasonField()


class PromoteView(RolloutView):
    version_required = False

    @extend_schema(operation_id="rollout_promote", summary="Promote plan, guardrails and targeting from another "
                                                           "environment", tags=["rollouts"],
                   parameters=[*STATE_PARAMS, IF_MATCH], request=PromoteInput, responses=SUBMIT_RESPONSES,
                   description="Copies the source environment's plan, guardrails, included and excluded cohorts and "
                               "overrides onto this environment as one change (`flag_state.promoted`) — a change "
                               "request where approval applies, holding the copy as it stood when asked. The "
                               "percentage reached, the stage and whether the flag is on are not promoted.")
    def post(self, request: Request, key: str, env: str) -> Response:
        data = PromoteInput(data=request.data)
        data.is_valid(raise_exception=True)
        version = requested_version(request, data.validated_data.get("version"), required=False)
        return submitted_response(submit_state(
            actor=self.actor(), flag=key, environment=env, action=Action.FLAG_STATE_PROMOTED,
            params=promotion_of(key, data.validated_data["from_environment"]), version=version,
            reason=data.validated_data["reason"]))
