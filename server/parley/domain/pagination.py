"""AIP-158 pagination: page sizes and opaque page tokens.

A page token is URL-safe base64 of JSON ``{"after": <last id>, "q": <hash of the request's
other fields>}``. Tokens are not secret (ids are not), but a token from another request shape is
refused so that changing a filter mid-listing cannot silently skip items.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from parley.domain.errors import InvalidArgument, Reason

T = TypeVar("T")

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "PageRequest", "encode_token", "page_of", "page_request"]

DEFAULT_PAGE_SIZE = 50
#: AIP-158: sizes above the maximum are coerced down, not refused.
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class PageRequest:
    """``size`` items after the cursor ``after`` (``None`` on the first page)."""

    size: int
    after: str | None
    query_hash: str


def _hash(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:16]


def page_request(page_size: int, page_token: str, query: str = "") -> PageRequest:
    """Validate ``page_size``/``page_token`` of a List request.

    ``query`` is a canonical string of the request's other fields (filters, parent). Raises
    ``InvalidArgument`` for a negative size, or a token that is malformed or from another query.
    """
    if page_size < 0:
        raise InvalidArgument.field("page_size", "must not be negative")
    size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    qh = _hash(query)
    if not page_token:
        return PageRequest(size, None, qh)
    try:
        data = json.loads(base64.urlsafe_b64decode(page_token.encode() + b"=" * (-len(page_token) % 4)))
        after, token_q = data["after"], data["q"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InvalidArgument.field(
            "page_token", "malformed page token", reason=Reason.INVALID_PAGE_TOKEN
        ) from None
    if not isinstance(after, str) or token_q != qh:
        raise InvalidArgument.field(
            "page_token", "page token does not belong to this request", reason=Reason.INVALID_PAGE_TOKEN
        )
    return PageRequest(size, after, qh)


def encode_token(after: str, request: PageRequest) -> str:
    """The ``next_page_token`` that continues ``request`` after the item ``after``."""
    raw = json.dumps({"after": after, "q": request.query_hash}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page_of(rows: Sequence[T], request: PageRequest, cursor: Callable[[T], str]) -> tuple[Sequence[T], str]:
    """Split ``rows`` (fetched with a limit of ``request.size + 1``) into the page and its
    ``next_page_token``; ``cursor`` gives the value a row continues after."""
    page = rows[: request.size]
    more = len(rows) > request.size and bool(page)
    return page, encode_token(cursor(page[-1]), request) if more else ""
