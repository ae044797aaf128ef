"""AdminService servicer: users' roles, access and quotas; run-time settings."""

from __future__ import annotations

from typing import Any

import grpc
from parley_proto.v1 import admin_service_pb2 as pb
from parley_proto.v1 import admin_service_pb2_grpc

from parley.api.convert import mask_paths, quota_changes, quota_to_proto, timestamp, user_role, user_to_proto
from parley.auth.interceptor import current_principal
from parley.domain.admin import QUOTA_FIELDS, Admin, UserChanges
from parley.domain.errors import NotFound
from parley.domain.names import parse_user
from parley.domain.pagination import page_request
from parley.domain.settings import ServerSettings

__all__ = ["AdminServicer"]

Context = grpc.aio.ServicerContext[Any, Any]

_USER_PATHS = ("role", "disabled", "quota", *(f"quota.{f}" for f in QUOTA_FIELDS))
_SETTINGS_PATHS = ("allow_registration", "default_quota", *(f"default_quota.{f}" for f in QUOTA_FIELDS))


def _settings_to_proto(settings: ServerSettings) -> pb.ServerSettings:
    out = pb.ServerSettings(
        name="settings",
        allow_registration=settings.allow_registration,
        default_quota=quota_to_proto(settings.default_quota),
    )
    if settings.update_time is not None:
        out.update_time.CopyFrom(timestamp(settings.update_time))
    return out


class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    async def ListUsers(self, request: pb.ListUsersRequest, context: Context) -> pb.ListUsersResponse:
        page = page_request(request.page_size, request.page_token, f"users:{request.username_prefix}")
        users, token = await self._admin.list_users(current_principal(), request.username_prefix, page)
        return pb.ListUsersResponse(users=[user_to_proto(u) for u in users], next_page_token=token)

    async def UpdateUser(self, request: pb.UpdateUserRequest, context: Context) -> pb.UpdateUserResponse:
        principal = current_principal()
        principal.require_admin()
        user_id = parse_user(request.user.name, "user.name")
        if user_id == "me":
            user_id = principal.user_id
        paths = mask_paths(request.update_mask, _USER_PATHS)
        current = await self._admin.get_user(principal, user_id) if any("quota" in p for p in paths) else None
        changes = UserChanges(
            role=user_role(request.user.role, "user.role") if "role" in paths else None,
            disabled=request.user.disabled if "disabled" in paths else None,
            quota=quota_changes(request.user.quota, current.quota, paths, "quota") if current else None,
        )
        user = await self._admin.update_user(principal, user_id, changes)
        return pb.UpdateUserResponse(user=user_to_proto(user))

    async def GetSettings(self, request: pb.GetSettingsRequest, context: Context) -> pb.GetSettingsResponse:
        return pb.GetSettingsResponse(
            settings=_settings_to_proto(await self._admin.get_settings(current_principal()))
        )

    async def UpdateSettings(
        self, request: pb.UpdateSettingsRequest, context: Context
    ) -> pb.UpdateSettingsResponse:
        principal = current_principal()
        if request.settings.name not in ("", "settings"):
            raise NotFound.resource(request.settings.name)
        paths = mask_paths(request.update_mask, _SETTINGS_PATHS)
        current = await self._admin.get_settings(principal)
        settings = await self._admin.update_settings(
            principal,
            allow_registration=request.settings.allow_registration if "allow_registration" in paths else None,
            default_quota=quota_changes(
                request.settings.default_quota, current.default_quota, paths, "default_quota"
            ),
        )
        return pb.UpdateSettingsResponse(settings=_settings_to_proto(settings))
