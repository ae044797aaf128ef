"""Async Python SDK for Parley, a gRPC backend for AI agents.

:class:`ParleyClient` wraps every ``parley.v1`` service with typed methods; streamed replies are
async iterators of ``ChatEvent``; live voice (``ParleyClient.converse``) is a
:class:`Conversation`, with WAV file helpers in :mod:`parley_client.audio`; failures raise
:class:`ParleyError` subclasses carrying the gRPC code and the ``google.rpc.ErrorInfo`` reason
(one of :data:`ErrorReason`'s names, e.g. ``err.reason == ErrorReason.Name(ErrorReason.TOKEN_EXPIRED)``)
and metadata. The ``parley`` command (``parley --help``) is built on it.
"""

from parley_proto.v1.agent_service_pb2 import Agent
from parley_proto.v1.auth_service_pb2 import User
from parley_proto.v1.branch_service_pb2 import Branch
from parley_proto.v1.chat_service_pb2 import ChatEvent, Message, StopReason
from parley_proto.v1.common_pb2 import AudioChunk, AudioFormat, Usage
from parley_proto.v1.errors_pb2 import ErrorReason
from parley_proto.v1.session_service_pb2 import Session

from parley_client.client import DEFAULT_SERVER, ParleyClient, Tokens, channel_for
from parley_client.errors import (
    ERROR_DOMAIN,
    AlreadyExistsError,
    CallCancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    ParleyError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    error_from_rpc,
)
from parley_client.live import Conversation

__all__ = [
    "DEFAULT_SERVER",
    "ERROR_DOMAIN",
    "Agent",
    "AlreadyExistsError",
    "AudioChunk",
    "AudioFormat",
    "Branch",
    "CallCancelledError",
    "ChatEvent",
    "Conversation",
    "DeadlineExceededError",
    "ErrorReason",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "Message",
    "NotFoundError",
    "ParleyClient",
    "ParleyError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "Session",
    "StopReason",
    "Tokens",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "Usage",
    "User",
    "channel_for",
    "error_from_rpc",
]

__version__ = "0.1.0"
