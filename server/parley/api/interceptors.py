"""The request handlers: request ids, access logs, request parsing, and the one error mapping.

Domain exceptions (``parley.domain.errors``) become gRPC statuses carrying
``google.rpc.ErrorInfo`` (reason, domain ``parley.dev``, metadata), ``google.rpc.RequestInfo``
(the request id) and, for field errors, ``google.rpc.BadRequest`` (AIP-193). Requests that do not
parse are INVALID_ARGUMENT. Anything unexpected is logged with the request id and returned as
INTERNAL without a stack trace.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from parley.auth.interceptor import Authenticator, principal_var
from parley.domain.errors import InvalidArgument, ParleyError, Reason
from parley.domain.names import new_id
from parley.telemetry.grpc_metrics import GrpcServerMetrics, MethodMetrics

__all__ = ["ERROR_DOMAIN", "RequestHandlers", "request_id_var", "status_for", "status_proto"]

ERROR_DOMAIN = "parley.dev"
log = logging.getLogger("parley.access")
errlog = logging.getLogger("parley.errors")


#: The request id of the current RPC (set by :class:`RequestHandlers`).
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def status_for(error: ParleyError, request_id: str) -> grpc.Status:
    """The rich gRPC status for a domain error (``grpc-status-details-bin`` trailer)."""
    return rpc_status.to_status(status_proto(error, request_id))


def status_proto(error: ParleyError, request_id: str) -> status_pb2.Status:
    """``google.rpc.Status`` for a domain error: code, message, and the details ``ErrorInfo``
    (reason, domain ``parley.dev``, metadata), ``BadRequest`` (field errors) and ``RequestInfo``."""
    details = []
    info = any_pb2.Any()
    info.Pack(
        error_details_pb2.ErrorInfo(reason=error.reason.value, domain=ERROR_DOMAIN, metadata=error.metadata)
    )
    details.append(info)
    if error.violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in error.violations
                ]
            )
        )
        details.append(bad)
    if error.quota_violations:
        quota = any_pb2.Any()
        quota.Pack(
            error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(subject=v.subject, description=v.description)
                    for v in error.quota_violations
                ]
            )
        )
        details.append(quota)
    if error.retry_after_s is not None:
        retry = any_pb2.Any()
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(0, round(error.retry_after_s * 1e9)))
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(retry)
    req = any_pb2.Any()
    req.Pack(error_details_pb2.RequestInfo(request_id=request_id))
    details.append(req)
    code = getattr(code_pb2, error.code_name)
    return status_pb2.Status(code=code, message=error.message, details=details)


async def _abort(context: Any, exc: BaseException, request_id: str, method: str) -> NoReturn:
    if not isinstance(exc, ParleyError) or type(exc) is ParleyError:
        errlog.error("internal error in %s (request id %s)", method, request_id, exc_info=exc)
        exc = ParleyError(f"internal error (request id {request_id})", reason=Reason.INTERNAL)
    status = status_for(exc, request_id)
    trailers = (*status.trailing_metadata, ("x-request-id", request_id))
    await context.abort(status.code, status.details, trailing_metadata=trailers)
    raise AssertionError("unreachable")  # pragma: no cover


def _parse(deserializer: Callable[[bytes], Any] | None, raw: Any) -> Any:
    if deserializer is None:
        return raw
    try:
        return deserializer(raw)
    except (DecodeError, ValueError, TypeError) as exc:
        raise InvalidArgument(f"malformed request message: {exc}", reason=Reason.MALFORMED_REQUEST) from None


def _request_id(metadata: Any) -> str:
    """The caller's ``x-request-id`` (at most 128 characters), or a new id."""
    for key, value in metadata or ():
        if key == "x-request-id" and value:
            return str(value)[:128]
    return new_id()


@dataclass(frozen=True, slots=True)
class _Method:
    """What the wrapper of one method needs, built once when the method is registered."""

    name: str
    deserialize: Callable[[bytes], Any] | None
    auth: Authenticator | None
    metrics: MethodMetrics | None = None

    async def prepare(self, raw: Any, context: Any) -> tuple[Any, str]:
        """The parsed request and the call's request id, once the caller is authenticated."""
        metadata = context.invocation_metadata()
        request_id = _request_id(metadata)
        request_id_var.set(request_id)
        request = _parse(self.deserialize, raw)
        if self.auth is not None:
            await self.auth.authenticate(metadata)
        return request, request_id

    def log(self, started: float, code: str, request_id: str) -> None:
        principal = principal_var.get()
        log.info(
            "%s %s %.1fms request_id=%s user=%s",
            self.name,
            code,
            (time.perf_counter() - started) * 1e3,
            request_id,
            principal.user_id if principal else "-",
        )


def _unary(method: _Method, inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def unary(raw: Any, context: Any) -> Any:
        started, code, request_id = time.perf_counter(), "OK", ""
        if method.metrics is not None:
            method.metrics.started()
        try:
            request, request_id = await method.prepare(raw, context)
            # In the trailers, sent with the response and status in one batch (initial metadata
            # of its own would be one more batch, a round through grpc's completion queue).
            context.set_trailing_metadata((("x-request-id", request_id),))
            return await inner(request, context)
        except grpc.aio.AbortError:
            code = str(context.code())
            raise
        except Exception as exc:
            code = getattr(exc, "code_name", "INTERNAL")
            await _abort(context, exc, request_id or request_id_var.get(), method.name)
        except BaseException:  # cancelled by the client or the server's shutdown
            code = "CANCELLED"
            raise
        finally:
            method.log(started, code, request_id or request_id_var.get())
            if method.metrics is not None:
                method.metrics.handled(code, time.perf_counter() - started, int(code == "OK"))

    return unary


def _stream(method: _Method, inner: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def stream(raw: Any, context: Any) -> AsyncIterator[Any]:
        started, code, request_id = time.perf_counter(), "OK", ""
        headers_sent = False
        sent = 0
        if method.metrics is not None:
            method.metrics.started()
        try:
            request, request_id = await method.prepare(raw, context)
            async for response in inner(request, context):
                # Headers go with the first event, not before: an error before it must still be
                # able to become a plain HTTP error status through Envoy.
                if not headers_sent:
                    await context.send_initial_metadata((("x-request-id", request_id),))
                    headers_sent = True
                sent += 1
                yield response
        except grpc.aio.AbortError:
            code = str(context.code())
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception):  # cancelled by the client or the server's shutdown
                code = "CANCELLED"
                raise
            code = getattr(exc, "code_name", "INTERNAL")
            await _abort(context, exc, request_id or request_id_var.get(), method.name)
        finally:
            method.log(started, code, request_id or request_id_var.get())
            if method.metrics is not None:
                method.metrics.handled(code, time.perf_counter() - started, sent)

    return stream


def _bidi(method: _Method, inner: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """A bidirectional stream: the caller is authenticated once, before the first request is
    read; each request is parsed as it arrives (a malformed one fails the call)."""

    async def requests(raw_requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for raw in raw_requests:
            yield _parse(method.deserialize, raw)

    async def opened(raw_requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        async for response in inner(requests(raw_requests), context):
            yield response

    # The stream wrapper authenticates (``prepare``) and passes the request iterator through.
    return _stream(replace(method, deserialize=None), opened)


def _kind(handler: Any) -> str:
    if handler.unary_unary is not None:
        return "unary"
    if handler.unary_stream is not None:
        return "server_stream"
    return "bidi_stream"


class RequestHandlers:
    """What every ``parley.v1`` call goes through: assign a request id (the caller's
    ``x-request-id``, else a new one), parse the request, authenticate (``auth``), map errors,
    log one line per call, and record the call's ``grpc_server_*`` metrics when ``metrics`` is
    given (``parley.telemetry.grpc_metrics``).

    Each method's handler is wrapped once, when its service is registered (:meth:`add`), not on
    every call as a ``grpc.aio.ServerInterceptor`` would: an interceptor builds a new handler per
    call, and without one grpc.aio finds the handler without a coroutine of its own (bench/,
    unary phase). Health and reflection are grpcio's own servicers (some write via
    ``context.write`` rather than yielding) and are registered unwrapped.
    """

    def __init__(self, auth: Authenticator, *, metrics: GrpcServerMetrics | None = None) -> None:
        self._auth = auth
        self._metrics = metrics

    def add(self, add_to_server: Callable[[Any, Any], None], servicer: Any, server: grpc.aio.Server) -> None:
        """Register ``servicer`` with a generated ``add_*Servicer_to_server`` function, its
        methods wrapped."""
        add_to_server(servicer, _Registrar(server, self))

    def wrap(self, method: str, handler: Any) -> Any:
        """``handler`` (a ``grpc.RpcMethodHandler`` of async functions) of ``method``
        (``/parley.v1.Service/Method``), wrapped as described above."""
        wrapped = _Method(
            method,
            handler.request_deserializer,
            self._auth if self._auth.needed(method) else None,
            self._metrics.method(_kind(handler), method) if self._metrics is not None else None,
        )
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(wrapped, handler.unary_unary), None, handler.response_serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream(wrapped, handler.unary_stream), None, handler.response_serializer
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _bidi(wrapped, handler.stream_stream), None, handler.response_serializer
            )
        raise ValueError(f"{method}: client-streaming methods are not wrapped")


class _Registrar:
    """The ``server`` a generated ``add_*Servicer_to_server`` function registers with: it hands
    over the service's method handlers (``add_registered_method_handlers``), which are wrapped
    and then registered with the real server both ways grpcio's generated code does."""

    def __init__(self, server: Any, handlers: RequestHandlers) -> None:
        self._server = server  # grpc.aio.Server; its stubs lack add_registered_method_handlers
        self._handlers = handlers

    def add_generic_rpc_handlers(self, generic_handlers: Any) -> None:
        """Ignored: the same handlers arrive by name through ``add_registered_method_handlers``."""

    def add_registered_method_handlers(self, service: str, method_handlers: dict[str, Any]) -> None:
        wrapped = {name: self._handlers.wrap(f"/{service}/{name}", h) for name, h in method_handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
        self._server.add_registered_method_handlers(service, wrapped)
