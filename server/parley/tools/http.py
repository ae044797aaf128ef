"""HTTP tools: the model's arguments POSTed as JSON to the tool's URL, the answer its result.

One call is one ``POST <url>`` with ``Content-Type: application/json``, the tool's configured
headers, and the arguments text as the model wrote it (checked to be JSON, sent byte for byte).
Every connection goes through the SSRF guard (``parley.tools.transport``). Limits, all from the
runner's settings: ``timeout_s`` bounds the whole call (connect, send, the wait and the body), and
a body longer than ``max_response_bytes`` is not read further.

Redirects: a ``307``/``308`` to the same origin (scheme, host and port), such as a trailing-slash
fix, is followed, at most :data:`MAX_REDIRECTS` times, with the same method, body and headers.
Any other redirect is not followed (a ``301``/``302``/``303`` would turn the POST into a GET, and
another origin would receive the tool's headers, which may hold credentials): the call fails with
an outcome naming the location.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

import anyio
import httpx2

from parley.tools.base import ToolOutcome
from parley.tools.ssrf import AddressGuard, ToolRefused
from parley.tools.transport import guarded_client

__all__ = ["MAX_REDIRECTS", "HttpToolRunner"]

log = logging.getLogger(__name__)

#: Same-origin 307/308 redirects followed per call.
MAX_REDIRECTS = 3
#: Characters of an error body quoted in a non-2xx outcome.
ERROR_EXCERPT_CHARS = 300


def _origin(url: httpx2.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _shown(url: str) -> str:
    """``url`` as logged: scheme, host, port and path; never its user info or query, which may
    hold credentials (``?api_key=...``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port out of range, a malformed IPv6 address
        return "(a malformed URL)"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class _TooLarge(Exception):
    pass


class HttpToolRunner:
    """Calls HTTP tools; one shared ``httpx2.AsyncClient`` (and connection pool) per runner.

    ``timeout_s`` (seconds) bounds each call as a whole; ``max_response_bytes`` caps the response
    body (after content decoding). Both come from the operator's tool settings. :meth:`call`
    never raises for a tool's failure: it returns an ``is_error`` outcome.
    """

    def __init__(self, guard: AddressGuard, *, timeout_s: float, max_response_bytes: int) -> None:
        self._guard = guard
        self._timeout_s = timeout_s
        self._max_response_bytes = max_response_bytes
        self._client = guarded_client(guard, timeout_s=timeout_s)

    async def call(self, url: str, headers: Mapping[str, str], arguments: str) -> ToolOutcome:
        """POST ``arguments`` (JSON text) to ``url``; the 2xx body (UTF-8, bad bytes replaced) is
        the output.

        Error outcomes: arguments that are not JSON (nothing is sent), a refused URL (SSRF guard:
        scheme, or an address that is not public and not allowed), no answer within
        ``timeout_s``, a body over ``max_response_bytes``, a redirect not followed, a non-2xx
        status (with the start of the body), or any transport failure (refused connection, TLS
        error, reset).
        """
        try:
            json.loads(arguments)
        except ValueError as exc:
            return ToolOutcome.failure(f"the arguments are not valid JSON ({exc}); the tool was not called")
        try:
            self._guard.check_url(url)
            with anyio.fail_after(self._timeout_s):
                return await self._post(url, headers, arguments.encode())
        except ToolRefused as exc:
            return ToolOutcome.failure(f"the tool URL was refused: {exc}")
        except (TimeoutError, httpx2.TimeoutException):
            return ToolOutcome.failure(f"the tool did not answer within {self._timeout_s:g} s")
        except _TooLarge:
            return ToolOutcome.failure(f"the tool's response is larger than {self._max_response_bytes} bytes")
        except (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError, ValueError) as exc:
            log.info("HTTP tool %s failed: %s: %s", _shown(url), type(exc).__name__, exc)
            return ToolOutcome.failure(f"the tool could not be reached: {str(exc) or type(exc).__name__}")

    async def _post(self, url: str, headers: Mapping[str, str], body: bytes) -> ToolOutcome:
        # identity: a compressed body could inflate far past the cap within one chunk.
        sent = httpx2.Headers(headers)
        sent["content-type"] = "application/json"
        sent["accept-encoding"] = "identity"
        request = self._client.build_request("POST", url, content=body, headers=sent)
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._client.send(request, stream=True)
            try:
                next_request = response.next_request
                if next_request is None:
                    return await self._outcome(response)
                same_origin = _origin(next_request.url) == _origin(request.url)
                if response.status_code not in (307, 308) or not same_origin:
                    location = next_request.url.copy_with(query=None, fragment=None, userinfo=b"")
                    return ToolOutcome.failure(
                        f"the tool redirected ({response.status_code}) to {location}, which is not "
                        "followed: only 307/308 redirects to the same origin are"
                    )
            finally:
                await response.aclose()
            request = self._client.build_request("POST", next_request.url, content=body, headers=sent)
        return ToolOutcome.failure(f"the tool redirected more than {MAX_REDIRECTS} times")

    async def _outcome(self, response: httpx2.Response) -> ToolOutcome:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._max_response_bytes:
            raise _TooLarge
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self._max_response_bytes:
                raise _TooLarge
        text = body.decode("utf-8", errors="replace")
        if response.is_success:
            return ToolOutcome(text)
        excerpt = " ".join(text.split())[:ERROR_EXCERPT_CHARS]
        reason = f" {response.reason_phrase}" if response.reason_phrase else ""
        return ToolOutcome.failure(f"the tool answered HTTP {response.status_code}{reason}: {excerpt}")

    async def aclose(self) -> None:
        """Close the connection pool; the runner is unusable afterwards."""
        await self._client.aclose()
