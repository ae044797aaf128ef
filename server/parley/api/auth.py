"""AuthService servicer."""

from __future__ import annotations

from typing import Any

import grpc
from parley_proto.v1 import auth_service_pb2 as pb
from parley_proto.v1 import auth_service_pb2_grpc

from parley.api.convert import timestamp, user_to_proto
from parley.auth.interceptor import current_principal
from parley.domain.accounts import Accounts
from parley.domain.names import parse_user, user_name

__all__ = ["AuthServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class AuthServicer(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    async def CreateUser(self, request: pb.CreateUserRequest, context: Context) -> pb.CreateUserResponse:
        user = await self._accounts.create_user(request.username, request.password, request.display_name)
        return pb.CreateUserResponse(user=user_to_proto(user))

    async def CreateToken(self, request: pb.CreateTokenRequest, context: Context) -> pb.CreateTokenResponse:
        pair = await self._accounts.create_token(request.username, request.password)
        return pb.CreateTokenResponse(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type="Bearer",
            expires_in=pair.expires_in,
            refresh_expires_in=pair.refresh_expires_in,
        )

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: Context
    ) -> pb.RefreshTokenResponse:
        pair = await self._accounts.refresh_token(request.refresh_token)
        return pb.RefreshTokenResponse(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type="Bearer",
            expires_in=pair.expires_in,
            refresh_expires_in=pair.refresh_expires_in,
        )

    async def RevokeToken(self, request: pb.RevokeTokenRequest, context: Context) -> pb.RevokeTokenResponse:
        await self._accounts.revoke_token(current_principal(), request.refresh_token)
        return pb.RevokeTokenResponse()

    async def GetCurrentToken(
        self, request: pb.GetCurrentTokenRequest, context: Context
    ) -> pb.GetCurrentTokenResponse:
        claims = current_principal().token_claims()
        return pb.GetCurrentTokenResponse(
            subject=user_name(claims.user_id),
            token_id=claims.token_id,
            issue_time=timestamp(claims.issue_time),
            expire_time=timestamp(claims.expire_time),
            issuer=claims.issuer,
            audience=claims.audience,
        )

    async def DeleteUser(self, request: pb.DeleteUserRequest, context: Context) -> pb.DeleteUserResponse:
        user = parse_user(request.name)
        await self._accounts.delete_user(current_principal(), user, request.password)
        return pb.DeleteUserResponse()

    async def GetCurrentUser(
        self, request: pb.GetCurrentUserRequest, context: Context
    ) -> pb.GetCurrentUserResponse:
        return pb.GetCurrentUserResponse(
            user=user_to_proto(await self._accounts.current_user(current_principal()))
        )
