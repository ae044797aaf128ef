"""BranchService servicer."""

from __future__ import annotations

from typing import Any

import grpc
from parley_proto.v1 import branch_service_pb2 as pb
from parley_proto.v1 import branch_service_pb2_grpc

from parley.api.convert import branch_to_proto, session_to_proto
from parley.auth.interceptor import current_principal
from parley.domain.branches import Branches
from parley.domain.names import parse_session
from parley.domain.pagination import page_request

__all__ = ["BranchServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class BranchServicer(branch_service_pb2_grpc.BranchServiceServicer):
    def __init__(self, branches: Branches) -> None:
        self._branches = branches

    async def CreateBranch(
        self, request: pb.CreateBranchRequest, context: Context
    ) -> pb.CreateBranchResponse:
        session_id = parse_session(request.parent, "parent")
        branch = await self._branches.create(
            current_principal().user_id, session_id, request.from_message, request.display_name
        )
        return pb.CreateBranchResponse(branch=branch_to_proto(branch, ""))

    async def ListBranches(
        self, request: pb.ListBranchesRequest, context: Context
    ) -> pb.ListBranchesResponse:
        session_id = parse_session(request.parent, "parent")
        page = page_request(request.page_size, request.page_token, f"branches:{request.parent}")
        branches, session, token = await self._branches.list(current_principal().user_id, session_id, page)
        return pb.ListBranchesResponse(
            branches=[branch_to_proto(b, session.active_branch_id) for b in branches], next_page_token=token
        )

    async def GetBranch(self, request: pb.GetBranchRequest, context: Context) -> pb.GetBranchResponse:
        branch, session = await self._branches.get(current_principal().user_id, request.name)
        return pb.GetBranchResponse(branch=branch_to_proto(branch, session.active_branch_id))

    async def SetActiveBranch(
        self, request: pb.SetActiveBranchRequest, context: Context
    ) -> pb.SetActiveBranchResponse:
        session_id = parse_session(request.session, "session")
        session = await self._branches.set_active(current_principal().user_id, session_id, request.branch)
        return pb.SetActiveBranchResponse(session=session_to_proto(session))

    async def DeleteBranch(
        self, request: pb.DeleteBranchRequest, context: Context
    ) -> pb.DeleteBranchResponse:
        await self._branches.delete(current_principal().user_id, request.name)
        return pb.DeleteBranchResponse()
