"""The verified-token cache of ``parley.auth.tokens.Tokens``, in process: a remembered token is
still checked for expiry and type on every call, and only the exact string is remembered."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from parley.auth import tokens as tokens_module
from parley.auth.tokens import LEEWAY_S, Tokens
from parley.config import Settings
from parley.domain.errors import Reason, Unauthenticated

KEY = "k" * 64


@pytest.fixture
def tokens() -> Tokens:
    return Tokens(Settings(_env_file=None), KEY)  # type: ignore[call-arg]


def _token(tokens: Tokens) -> tuple[str, float]:
    claims = tokens.issue("user-1", "family-1", "access", datetime.now(UTC))
    return tokens.encode(claims), claims.expire_time.timestamp()


def test_a_remembered_token_still_expires(tokens: Tokens, monkeypatch: pytest.MonkeyPatch) -> None:
    token, expires = _token(tokens)
    assert tokens.verify(token, "access").user_id == "user-1"
    assert tokens.verify(token, "access").user_id == "user-1"  # remembered
    monkeypatch.setattr(tokens_module.time, "time", lambda: expires + LEEWAY_S + 1)
    with pytest.raises(Unauthenticated) as expired:
        tokens.verify(token, "access")
    assert expired.value.reason is Reason.TOKEN_EXPIRED


def test_a_remembered_token_is_still_typed(tokens: Tokens) -> None:
    token, _ = _token(tokens)
    tokens.verify(token, "access")
    with pytest.raises(Unauthenticated) as wrong:
        tokens.verify(token, "refresh")
    assert wrong.value.reason is Reason.WRONG_TOKEN_TYPE


def test_only_the_exact_token_is_remembered(tokens: Tokens) -> None:
    token, _ = _token(tokens)
    tokens.verify(token, "access")
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(Unauthenticated) as invalid:
        tokens.verify(tampered, "access")
    assert invalid.value.reason is Reason.INVALID_TOKEN
    other = Tokens(Settings(_env_file=None), "o" * 64)  # type: ignore[call-arg]
    with pytest.raises(Unauthenticated):
        other.verify(token, "access")  # another key: each Tokens remembers only its own
