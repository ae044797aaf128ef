"""SessionService servicer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from parley_proto.v1 import session_service_pb2 as pb
from parley_proto.v1 import session_service_pb2_grpc

from parley.api.convert import session_title_change, session_to_proto
from parley.auth.interceptor import current_principal
from parley.domain.archive import SessionArchive
from parley.domain.export import SessionTransfer
from parley.domain.names import parse_agent, parse_session
from parley.domain.pagination import page_request
from parley.domain.sessions import Sessions

__all__ = ["SessionServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class SessionServicer(session_service_pb2_grpc.SessionServiceServicer):
    def __init__(self, sessions: Sessions, transfer: SessionTransfer, archive: SessionArchive) -> None:
        self._sessions = sessions
        self._transfer = transfer
        self._archive = archive

    async def CreateSession(
        self, request: pb.CreateSessionRequest, context: Context
    ) -> pb.CreateSessionResponse:
        agent_id = parse_agent(request.session.agent, "session.agent")
        session = await self._sessions.create(current_principal().user_id, agent_id, request.session.title)
        return pb.CreateSessionResponse(session=session_to_proto(session))

    async def GetSession(self, request: pb.GetSessionRequest, context: Context) -> pb.GetSessionResponse:
        session = await self._sessions.get(current_principal().user_id, parse_session(request.name))
        return pb.GetSessionResponse(session=session_to_proto(session))

    async def ListSessions(
        self, request: pb.ListSessionsRequest, context: Context
    ) -> pb.ListSessionsResponse:
        agent_id = parse_agent(request.agent, "agent") if request.agent else None
        page = page_request(request.page_size, request.page_token, f"sessions:{request.agent}")
        sessions, token = await self._sessions.list(current_principal().user_id, agent_id, page)
        return pb.ListSessionsResponse(
            sessions=[session_to_proto(s) for s in sessions], next_page_token=token
        )

    async def UpdateSession(
        self, request: pb.UpdateSessionRequest, context: Context
    ) -> pb.UpdateSessionResponse:
        session_id = parse_session(request.session.name, "session.name")
        title = session_title_change(request.session, request.update_mask)
        session = await self._sessions.update_title(current_principal().user_id, session_id, title)
        return pb.UpdateSessionResponse(session=session_to_proto(session))

    async def DeleteSession(
        self, request: pb.DeleteSessionRequest, context: Context
    ) -> pb.DeleteSessionResponse:
        await self._sessions.delete(current_principal().user_id, parse_session(request.name))
        return pb.DeleteSessionResponse()

    async def ExportSession(
        self, request: pb.ExportSessionRequest, context: Context
    ) -> AsyncIterator[pb.ExportSessionResponse]:
        chunks = self._transfer.export(current_principal().user_id, parse_session(request.name))
        async for chunk in chunks:
            yield pb.ExportSessionResponse(data=chunk)

    async def ImportSession(
        self, request: pb.ImportSessionRequest, context: Context
    ) -> pb.ImportSessionResponse:
        agent_id = parse_agent(request.agent, "agent") if request.agent else None
        session = await self._transfer.import_(current_principal().user_id, request.data, agent_id)
        return pb.ImportSessionResponse(session=session_to_proto(session))

    async def ArchiveSession(
        self, request: pb.ArchiveSessionRequest, context: Context
    ) -> pb.ArchiveSessionResponse:
        session = await self._archive.archive(current_principal().user_id, parse_session(request.name))
        return pb.ArchiveSessionResponse(session=session_to_proto(session))
