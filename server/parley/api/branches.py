"""BranchService servicer: not built yet (issue "Branching conversations"); every RPC is UNIMPLEMENTED."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from parley_proto.v1 import branch_service_pb2 as pb
from parley_proto.v1 import branch_service_pb2_grpc

__all__ = ["BranchServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


async def _unimplemented(context: Context, method: str) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"BranchService.{method} is not built yet")
    raise AssertionError("unreachable")


class BranchServicer(branch_service_pb2_grpc.BranchServiceServicer):
    async def CreateBranch(
        self, request: pb.CreateBranchRequest, context: Context
    ) -> pb.CreateBranchResponse:
        await _unimplemented(context, "CreateBranch")

    async def ListBranches(
        self, request: pb.ListBranchesRequest, context: Context
    ) -> pb.ListBranchesResponse:
        await _unimplemented(context, "ListBranches")

    async def GetBranch(self, request: pb.GetBranchRequest, context: Context) -> pb.GetBranchResponse:
        await _unimplemented(context, "GetBranch")

    async def SetActiveBranch(
        self, request: pb.SetActiveBranchRequest, context: Context
    ) -> pb.SetActiveBranchResponse:
        await _unimplemented(context, "SetActiveBranch")

    async def DeleteBranch(
        self, request: pb.DeleteBranchRequest, context: Context
    ) -> pb.DeleteBranchResponse:
        await _unimplemented(context, "DeleteBranch")
