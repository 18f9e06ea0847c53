"""People and their roles (admin only)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User  # a real import: drf-spectacular reads get_roles' hints
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from common.api import ManagementListView, ManagementView
from common.fields import ReasonField
from common.inputs import Input
from common.permissions import Capability
from common.schema import errors
from notifications.services import invitation_send
from rollout import selectors
from rollout.access.users import ROLES, user_create, user_deactivate, user_update_roles
from rollout.filters import UserFilter

TAGS = ["users"]
ROLE_CHOICES = [(r, r) for r in ROLES]


class UserOutput(serializers.Serializer[Any]):
    username = serializers.CharField()
    email = serializers.CharField()
    roles = serializers.SerializerMethodField()
    is_active = serializers.BooleanField()
    is_superuser = serializers.BooleanField()
    date_joined = serializers.DateTimeField()
    last_login = serializers.DateTimeField(allow_null=True)

    def get_roles(self, user: User) -> list[str]:
        return sorted(g.name for g in user.groups.all() if g.name in ROLES)


def _user_response(username: str, status_code: int = status.HTTP_200_OK) -> Response:
    return Response(UserOutput(selectors.user_get(username)).data, status=status_code)


class UserListView(ManagementListView):
    read_capability = Capability.ADMINISTER
    write_capability = Capability.ADMINISTER
    serializer_class = UserOutput
    filterset_class = UserFilter
    ordering_fields = ["username", "date_joined", "last_login"]
    ordering = ["username"]

    class UserCreateInput(Input):
        username = serializers.RegexField(r"^[\w.@+-]+$", max_length=150)
        email = serializers.EmailField(required=False, allow_blank=True, default="")
        password = serializers.CharField(required=False, allow_blank=True, default="", max_length=128,
                                         write_only=True, help_text="Empty: no password login (tokens only).")
        roles = serializers.ListField(child=serializers.ChoiceField(choices=ROLE_CHOICES), max_length=5,
                                      required=False, default=list)
        invite = serializers.BooleanField(
            required=False, default=False,
            help_text="E-mail them an invitation (user.invited): a one-time link to choose their password, or the "
                      "single sign-on link where password sign-in is off. Needs an e-mail address.")

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            if attrs.get("invite") and not attrs.get("email"):
                raise serializers.ValidationError({"email": "An invitation needs their e-mail address."})
            return attrs

    def get_queryset(self) -> QuerySet[User]:
        return selectors.user_list()

    @extend_schema(operation_id="users_list", summary="List users (admin)", tags=TAGS,
                   responses={200: UserOutput(many=True), **errors(400)})
    def get(self, request: Request, *args: object, **kwargs: object) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(operation_id="users_create", summary="Create a user with roles (admin)", tags=TAGS,
                   request=UserCreateInput, responses={201: UserOutput, **errors(400)})
    def post(self, request: Request) -> Response:
        data = self.UserCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        user = user_create(actor=self.actor(), username=values["username"], email=values["email"],
                           password=values["password"] or None, roles=values["roles"])
        if values["invite"]:
            invitation_send(actor=self.actor(), username=user.username, base_url=request.build_absolute_uri("/"))
        return _user_response(user.username, status.HTTP_201_CREATED)


class UserDetailView(ManagementView):
    read_capability = Capability.ADMINISTER
    write_capability = Capability.ADMINISTER

    class UserRolesInput(Input):
        roles = serializers.ListField(child=serializers.ChoiceField(choices=ROLE_CHOICES), max_length=5,
                                      help_text="The user's roles from now on (replaces the old ones).")
        reason = ReasonField()

    @extend_schema(operation_id="users_retrieve", summary="One user (admin)", tags=TAGS,
                   responses={200: UserOutput, **errors(404)})
    def get(self, request: Request, username: str) -> Response:
        return _user_response(username)

    @extend_schema(operation_id="users_update", summary="Set a user's roles (admin)", tags=TAGS,
                   request=UserRolesInput, responses={200: UserOutput, **errors(400, 404)})
    def patch(self, request: Request, username: str) -> Response:
        data = self.UserRolesInput(data=request.data)
        data.is_valid(raise_exception=True)
        user_update_roles(actor=self.actor(), username=username, roles=data.validated_data["roles"],
                          reason=data.validated_data["reason"])
        return _user_response(username)


class UserDeactivateView(ManagementView):
    write_capability = Capability.ADMINISTER

    class UserDeactivateInput(Input):
        reason = ReasonField()

    @extend_schema(operation_id="users_deactivate", summary="Deactivate a user and revoke their tokens (admin)",
                   tags=TAGS, request=UserDeactivateInput, responses={200: UserOutput, **errors(400, 404, 409)})
    def post(self, request: Request, username: str) -> Response:
        data = self.UserDeactivateInput(data=request.data)
        data.is_valid(raise_exception=True)
        user_deactivate(actor=self.actor(), username=username, reason=data.validated_data["reason"])
        return _user_response(username)



class UserInviteView(ManagementView):
    write_capability = Capability.ADMINISTER

    @extend_schema(operation_id="users_invite", summary="E-mail a user an invitation (admin)", tags=TAGS,
                   description="A one-time link to choose their password (or the single sign-on link where password "
                               "sign-in is off), sent by the notification worker; recorded as user.invited.",
                   request=None, responses={200: UserOutput, **errors(400, 404, 409)})
    def post(self, request: Request, username: str) -> Response:
        invitation_send(actor=self.actor(), username=username, base_url=request.build_absolute_uri("/"))
        return _user_response(username)
