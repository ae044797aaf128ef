"""``ParleyClient.admin``: AdminService, for the server's operators (every call needs an admin)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from google.protobuf import field_mask_pb2
from parley_proto.v1 import admin_service_pb2, auth_service_pb2

if TYPE_CHECKING:
    from parley_client.client import ParleyClient

__all__ = ["AdminClient"]


class AdminClient:
    """Users' roles, access and quotas; the server's run-time settings.

    Raises:
        PermissionDeniedError: the caller is not an admin (reason ``ADMIN_REQUIRED``).
    """

    def __init__(self, client: ParleyClient) -> None:
        self._client = client

    async def list_users(
        self, *, username_prefix: str = "", page_size: int = 0
    ) -> AsyncIterator[auth_service_pb2.User]:
        """Every user, oldest first (those whose username starts with ``username_prefix``)."""
        request = admin_service_pb2.ListUsersRequest(page_size=page_size, username_prefix=username_prefix)
        async for user in self._client._pages(self._client._s.admin.ListUsers, request, "users"):
            yield user

    async def update_user(
        self,
        name: str,
        *,
        role: auth_service_pb2.User.Role.ValueType | None = None,
        disabled: bool | None = None,
        quota: auth_service_pb2.Quota | None = None,
    ) -> auth_service_pb2.User:
        """Change ``users/{user}``: its role, whether it is disabled (its tokens stop at once), its
        quota (0 fields: the server default). Only the arguments given change.

        Raises:
            FailedPreconditionError: the last enabled admin would be lost (``LAST_ADMIN``).
            InvalidArgumentError: a negative quota.
        """
        user = auth_service_pb2.User(name=name)
        paths: list[str] = []
        if role is not None:
            user.role = role
            paths.append("role")
        if disabled is not None:
            user.disabled = disabled
            paths.append("disabled")
        if quota is not None:
            user.quota.CopyFrom(quota)
            paths.append("quota")
        request = admin_service_pb2.UpdateUserRequest(
            user=user, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        return (await self._client._unary(self._client._s.admin.UpdateUser, request)).user

    async def get_settings(self) -> admin_service_pb2.ServerSettings:
        """The run-time settings (open registration, the default quota)."""
        request = admin_service_pb2.GetSettingsRequest()
        return (await self._client._unary(self._client._s.admin.GetSettings, request)).settings

    async def update_settings(
        self, *, allow_registration: bool | None = None, default_quota: auth_service_pb2.Quota | None = None
    ) -> admin_service_pb2.ServerSettings:
        """Change the run-time settings (only the arguments given); they apply at once."""
        settings = admin_service_pb2.ServerSettings()
        paths: list[str] = []
        if allow_registration is not None:
            settings.allow_registration = allow_registration
            paths.append("allow_registration")
        if default_quota is not None:
            settings.default_quota.CopyFrom(default_quota)
            paths.append("default_quota")
        request = admin_service_pb2.UpdateSettingsRequest(
            settings=settings, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        return (await self._client._unary(self._client._s.admin.UpdateSettings, request)).settings
