"""HTTP clients for tools that connect only to addresses the SSRF guard vetted.

``httpx2`` (the client the ``mcp`` SDK and ``openai`` are built on) has no resolver hook and its
``AsyncHTTPTransport`` does not take a network backend, but its connection pool
(``httpcore2.AsyncConnectionPool``) does. :class:`GuardedBackend` is that backend: for every new
TCP connection it calls :meth:`AddressGuard.resolve` on the URL's host and connects to one of the
addresses it returned, never to the name. DNS is thus asked once per connection and the answer
that was checked is the one used, so a rebinding DNS server cannot pass the check with a public
address and then hand the connect a private one. TLS is unchanged: the pool starts TLS on the
connected socket with ``server_hostname`` set to the URL's host, so SNI and certificate
verification (the system trust store, as httpx2 by default) still check the name.

:class:`GuardedTransport` is an ``httpx2.AsyncBaseTransport`` over such a pool (no proxy: a proxy
would do its own resolving, so environment proxy settings are ignored). :func:`guarded_client`
builds an ``httpx2.AsyncClient`` on it that never follows redirects by itself.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping

import anyio
import httpcore2
import httpx2

from parley.tools.ssrf import AddressGuard, ToolRefused

__all__ = ["GuardedBackend", "GuardedTransport", "guarded_client"]

#: httpcore2 errors and the httpx2 errors clients expect, most specific first.
_ERRORS: tuple[tuple[type[Exception], type[httpx2.TransportError]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.TimeoutException, httpx2.TimeoutException),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.NetworkError, httpx2.NetworkError),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc)) from exc
        raise


class GuardedBackend(httpcore2.AsyncNetworkBackend):
    """An httpcore2 network backend that connects to vetted addresses only.

    ``connect_tcp`` raises :class:`ToolRefused` (passed through the pool and the client as it is)
    when the guard refuses the host, ``httpcore2.ConnectError`` when it does not resolve or no
    vetted address accepts, and ``httpcore2.ConnectTimeout`` when resolving takes longer than the
    connect timeout. Unix sockets are refused.
    """

    def __init__(self, guard: AddressGuard) -> None:
        self._guard = guard
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore2's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._guard.resolve(host, port)
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"resolving {host} took longer than {timeout} s") from None
        except socket.gaierror as exc:
            raise httpcore2.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from None
        failure: Exception = httpcore2.ConnectError(f"no address of {host} to connect to")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore2's interface)
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise ToolRefused("tools may not use Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _ResponseStream(httpx2.AsyncByteStream):
    """An httpcore2 response body as httpx2 wants it (errors mapped, closable)."""

    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class GuardedTransport(httpx2.AsyncBaseTransport):
    """An httpx2 transport whose every connection goes through :class:`GuardedBackend`.

    Non-``http(s)`` URLs raise :class:`ToolRefused` before anything is sent. Connection limits are
    httpx2's defaults (100 connections, 20 kept alive for 5 s). ``ssl_context`` replaces the
    default verification (the system trust store, hostname checked), e.g. to trust a private CA;
    whatever it is, the pool hands it the URL's host as ``server_hostname``.
    """

    def __init__(self, guard: AddressGuard, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._guard = guard
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context or httpx2.create_ssl_context(trust_env=False),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=GuardedBackend(guard),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self._guard.check_url(str(request.url))
        assert isinstance(request.stream, httpx2.AsyncByteStream)
        core_request = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        assert isinstance(response.stream, AsyncIterable)
        return httpx2.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def guarded_client(
    guard: AddressGuard,
    *,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` on a :class:`GuardedTransport` of its own.

    ``timeout_s`` is httpx2's per-operation timeout (connect, each read, each write, pool wait);
    callers bound a whole call themselves. Redirects are not followed (callers decide), cookies
    are not kept between requests of different callers (one client per caller), and environment
    settings (proxies, ``SSL_CERT_FILE``) are ignored.
    """
    return httpx2.AsyncClient(
        transport=GuardedTransport(guard, ssl_context=ssl_context),
        timeout=httpx2.Timeout(timeout_s),
        headers=dict(headers or {}),
        follow_redirects=False,
        trust_env=False,
    )
