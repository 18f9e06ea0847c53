"""SDK keys (admin) and API tokens (your own; an admin's, anyone's). Secrets are shown once, on create."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle

from common.api import ManagementListView, ManagementView
from common.fields import ReasonField, key_field
from common.inputs import Input
from common.permissions import Capability, can, require
from common.schema import errors
from common.throttling import ApiThrottle, AuthThrottle
from rollout import selectors
from rollout.access.keys import api_token_create, api_token_revoke, sdk_key_create, sdk_key_revoke
from rollout.filters import ApiTokenFilter, SdkKeyFilter
from rollout.models import ApiToken, SdkKey

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

SDK_TAGS = ["sdk keys"]
TOKEN_TAGS = ["api tokens"]


class SdkKeyOutput(serializers.Serializer[Any]):
    prefix = serializers.CharField(help_text="The key's first characters: how it is named, never the secret.")
    name = serializers.CharField()
    environment = serializers.CharField(source="environment.key")
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class SdkKeyCreatedOutput(SdkKeyOutput):
    secret = serializers.CharField(help_text="The whole key (`sdk_…`): shown this once, stored only hashed.")


class ApiTokenOutput(serializers.Serializer[Any]):
    prefix = serializers.CharField(help_text="The token's first characters: how it is named, never the secret.")
    name = serializers.CharField()
    user = serializers.CharField(source="user.username")
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class ApiTokenCreatedOutput(ApiTokenOutput):
    secret = serializers.CharField(help_text="The whole token (`tok_…`): shown this once, stored only hashed.")


class _RevokeInput(Input):
    reason = ReasonField()


class SdkKeyListView(ManagementListView):
    read_capability = Capability.ADMINISTER
    write_capability = Capability.ADMINISTER
    serializer_class = SdkKeyOutput
    filterset_class = SdkKeyFilter
    ordering_fields = ["created_at", "name", "last_used_at"]
    ordering = ["-created_at", "prefix"]

    class SdkKeyCreateInput(Input):
        environment = key_field(help_text="The one environment the key reads.")
        name = serializers.CharField(max_length=100, help_text="Which service uses it.")

    def get_queryset(self) -> QuerySet[SdkKey]:
        return selectors.sdk_key_list()

    def get_throttles(self) -> list[BaseThrottle]:
        # Issuing credentials counts against the auth rate; listing them does not.
        return [ApiThrottle(), AuthThrottle()] if self.request.method == "POST" else [ApiThrottle()]

    @extend_schema(operation_id="sdk_keys_list", summary="List SDK keys (admin)", tags=SDK_TAGS,
                   responses={200: SdkKeyOutput(many=True), **errors(400)})
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(operation_id="sdk_keys_create", summary="Create an SDK key (admin); the secret is shown once",
                   tags=SDK_TAGS, request=SdkKeyCreateInput, responses={201: SdkKeyCreatedOutput, **errors(400)})
    def post(self, request: Request) -> Response:
        data = self.SdkKeyCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        key, secret = sdk_key_create(actor=self.actor(), **data.validated_data)
        key = selectors.sdk_key_get(key.prefix)
        key.secret = secret  # type: ignore[attr-defined]  # shown once: carried to the output serializer only
        return Response(SdkKeyCreatedOutput(key).data, status=status.HTTP_201_CREATED)


class SdkKeyDetailView(ManagementView):
    read_capability = Capability.ADMINISTER
    write_capability = Capability.ADMINISTER

    @extend_schema(operation_id="sdk_keys_retrieve", summary="One SDK key (admin)", tags=SDK_TAGS,
                   responses={200: SdkKeyOutput, **errors(404)})
    def get(self, request: Request, prefix: str) -> Response:
        return Response(SdkKeyOutput(selectors.sdk_key_get(prefix)).data)


class SdkKeyRevokeView(ManagementView):
    write_capability = Capability.ADMINISTER

    class SdkKeyRevokeInput(_RevokeInput):
        pass

    @extend_schema(operation_id="sdk_keys_revoke", summary="Revoke an SDK key (admin), at once", tags=SDK_TAGS,
                   request=SdkKeyRevokeInput, responses={200: SdkKeyOutput, **errors(400, 404, 409)})
    def post(self, request: Request, prefix: str) -> Response:
        data = self.SdkKeyRevokeInput(data=request.data)
        data.is_valid(raise_exception=True)
        key = sdk_key_revoke(actor=self.actor(), prefix=prefix, reason=data.validated_data["reason"])
        return Response(SdkKeyOutput(selectors.sdk_key_get(key.prefix)).data)


def _token_owner_scope(request: Request) -> AbstractBaseUser | AnonymousUser | None:
    """Admins see every token; everyone else only their own."""
    return None if can(request.user, Capability.ADMINISTER) else request.user


class ApiTokenListView(ManagementListView):
    # Every role may hold tokens for itself (a token acts with its user's role, never more).
    read_capability = Capability.READ
    write_capability = Capability.READ
    serializer_class = ApiTokenOutput
    filterset_class = ApiTokenFilter
    ordering_fields = ["created_at", "name", "last_used_at"]
    ordering = ["-created_at", "prefix"]

    class ApiTokenCreateInput(Input):
        name = serializers.CharField(max_length=100, help_text="What uses it, e.g. `deploy-pipeline`.")
        username = serializers.CharField(max_length=150, required=False,
                                         help_text="Whose token (admin only); default: yours.")

    def get_queryset(self) -> QuerySet[ApiToken]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no user to scope to
            return selectors.api_token_list().none()
        return selectors.api_token_list(user=_token_owner_scope(self.request))

    def get_throttles(self) -> list[BaseThrottle]:
        return [ApiThrottle(), AuthThrottle()] if self.request.method == "POST" else [ApiThrottle()]

    @extend_schema(operation_id="api_tokens_list", summary="List API tokens (yours; an admin's: all)",
                   tags=TOKEN_TAGS, responses={200: ApiTokenOutput(many=True), **errors(400)})
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(operation_id="api_tokens_create", summary="Create an API token; the secret is shown once",
                   tags=TOKEN_TAGS, request=ApiTokenCreateInput,
                   responses={201: ApiTokenCreatedOutput, **errors(400)})
    def post(self, request: Request) -> Response:
        data = self.ApiTokenCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        username = data.validated_data.get("username", request.user.get_username())
        if username != request.user.get_username():
            require(request.user, Capability.ADMINISTER)
        token, secret = api_token_create(actor=self.actor(), username=username, name=data.validated_data["name"])
        token.secret = secret  # type: ignore[attr-defined]  # shown once: carried to the output serializer only
        return Response(ApiTokenCreatedOutput(token).data, status=status.HTTP_201_CREATED)


class ApiTokenDetailView(ManagementView):
    read_capability = Capability.READ

    @extend_schema(operation_id="api_tokens_retrieve", summary="One API token (yours; an admin's: any)",
                   tags=TOKEN_TAGS, responses={200: ApiTokenOutput, **errors(404)})
    def get(self, request: Request, prefix: str) -> Response:
        return Response(ApiTokenOutput(selectors.api_token_get(prefix, user=_token_owner_scope(request))).data)


class ApiTokenRevokeView(ManagementView):
    write_capability = Capability.READ

    class ApiTokenRevokeInput(_RevokeInput):
        pass

    @extend_schema(operation_id="api_tokens_revoke", summary="Revoke an API token (yours; an admin's: any)",
                   tags=TOKEN_TAGS, request=ApiTokenRevokeInput,
                   responses={200: ApiTokenOutput, **errors(400, 404, 409)})
    def post(self, request: Request, prefix: str) -> Response:
        data = self.ApiTokenRevokeInput(data=request.data)
        data.is_valid(raise_exception=True)
        selectors.api_token_get(prefix, user=_token_owner_scope(request))  # someone else's: 404, not a hint
        token = api_token_revoke(actor=self.actor(), prefix=prefix, reason=data.validated_data["reason"])
        return Response(ApiTokenOutput(selectors.api_token_get(token.prefix)).data)
