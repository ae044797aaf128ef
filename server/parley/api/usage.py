"""UsageService servicer."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import grpc
from parley_proto.v1 import usage_service_pb2 as pb
from parley_proto.v1 import usage_service_pb2_grpc

from parley.api.convert import duration, timestamp
from parley.auth.interceptor import current_principal
from parley.domain.usage import Usage

__all__ = ["UsageServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class UsageServicer(usage_service_pb2_grpc.UsageServiceServicer):
    def __init__(self, usage: Usage) -> None:
        self._usage = usage

    async def GetUsage(self, request: pb.GetUsageRequest, context: Context) -> pb.GetUsageResponse:
        start = request.start_time.ToDatetime(tzinfo=UTC) if request.HasField("start_time") else None
        end = request.end_time.ToDatetime(tzinfo=UTC) if request.HasField("end_time") else None
        summary = await self._usage.get(current_principal(), request.parent, start, end)
        t = summary.totals
        out = pb.GetUsageResponse(
            parent=summary.parent,
            input_tokens=t.input_tokens,
            output_tokens=t.output_tokens,
            audio_input_duration=duration(t.audio_input_s),
            audio_output_duration=duration(t.audio_output_s),
            message_count=t.message_count,
            completed_replies=t.completed,
            incomplete_replies=t.incomplete,
            failed_replies=t.failed,
            end_time=timestamp(summary.end_time),
        )
        if summary.start_time is not None:
            out.start_time.CopyFrom(timestamp(summary.start_time))
        return out
