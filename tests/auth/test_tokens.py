"""AuthService over a real channel: registration, login, refresh rotation, revocation, bad tokens."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import jwt
import pytest
from parley_proto.v1 import agent_service_pb2
from parley_proto.v1 import auth_service_pb2 as pb

from tests.conftest import TEST_JWT_SECRET
from tests.support.client import Stubs, UserClient, expect_error, new_user
from tests.support.server import ServerProcess


def _forge(alice: UserClient, **overrides: object) -> str:
    """A token like alice's access token with some claims (or the key/alg) changed."""
    claims = jwt.decode(alice.access_token, options={"verify_signature": False})
    key = str(overrides.pop("key", TEST_JWT_SECRET))
    alg = str(overrides.pop("alg", "HS256"))
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm=alg)


def _as(channel: grpc.Channel, token: str) -> Stubs:
    client = UserClient(channel, "x", "x", access_token=token)
    return client.stubs


def test_register_login_and_whoami(alice: UserClient) -> None:
    me = alice.stubs.auth.GetCurrentUser(pb.GetCurrentUserRequest()).user
    assert me.name == alice.user_name and me.username == alice.username
    assert me.display_name == alice.username
    current = alice.stubs.auth.GetCurrentToken(pb.GetCurrentTokenRequest())
    assert current.subject == alice.user_name
    assert current.expire_time.seconds - current.issue_time.seconds == 900
    assert current.issuer == "parley" and current.audience == "parley-api"


def test_token_response_shape(channel: grpc.Channel) -> None:
    user = new_user(channel)
    tokens = Stubs.over(channel).auth.CreateToken(
        pb.CreateTokenRequest(username=user.username.upper(), password=user.password)
    )
    assert tokens.token_type == "Bearer"
    assert tokens.expires_in == 900 and tokens.refresh_expires_in == 30 * 24 * 3600
    header = jwt.get_unverified_header(tokens.access_token)
    assert header["alg"] == "HS256"


def test_duplicate_username_ignoring_case(channel: grpc.Channel, alice: UserClient) -> None:
    stubs = Stubs.over(channel)
    with expect_error(grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN"):
        stubs.auth.CreateUser(
            pb.CreateUserRequest(username=alice.username.upper(), password="another password")
        )
    # The original account is untouched: its password still works, the new one does not.
    stubs.auth.CreateToken(pb.CreateTokenRequest(username=alice.username, password=alice.password))
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"):
        stubs.auth.CreateToken(pb.CreateTokenRequest(username=alice.username, password="another password"))


@pytest.mark.parametrize(
    ("username", "password", "reason"),
    [
        ("ok-name-1", "short", "WEAK_PASSWORD"),
        ("ok-name-2", "        ", "WEAK_PASSWORD"),
        ("ok-name-3", "OK-NAME-3", "WEAK_PASSWORD"),
        ("ok-name-4", "x" * 257, "INVALID_FIELD"),
        ("ab", "long enough password", "INVALID_FIELD"),
        ("has space", "long enough password", "INVALID_FIELD"),
        ("-leading", "long enough password", "INVALID_FIELD"),
        ("x" * 33, "long enough password", "INVALID_FIELD"),
        ("عربي", "long enough password", "INVALID_FIELD"),
        ("", "long enough password", "INVALID_FIELD"),
    ],
)
def test_bad_registration_is_refused_and_stores_nothing(
    channel: grpc.Channel, username: str, password: str, reason: str
) -> None:
    stubs = Stubs.over(channel)
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, reason):
        stubs.auth.CreateUser(pb.CreateUserRequest(username=username, password=password))
    if username:
        with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"):
            stubs.auth.CreateToken(pb.CreateTokenRequest(username=username, password=password))


def test_wrong_password_and_unknown_user(channel: grpc.Channel, alice: UserClient) -> None:
    stubs = Stubs.over(channel)
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"):
        stubs.auth.CreateToken(pb.CreateTokenRequest(username=alice.username, password="not the password"))
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"):
        stubs.auth.CreateToken(pb.CreateTokenRequest(username="nobody-here", password="not the password"))


def test_missing_and_malformed_authorization(channel: grpc.Channel) -> None:
    stubs = Stubs.over(channel)
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN"):
        stubs.auth.GetCurrentUser(pb.GetCurrentUserRequest())
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN"):
        stubs.auth.GetCurrentUser(pb.GetCurrentUserRequest(), metadata=[("authorization", "Token abc")])
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN"):
        stubs.auth.GetCurrentUser(
            pb.GetCurrentUserRequest(), metadata=[("authorization", "Bearer not.a.jwt")]
        )


@pytest.mark.parametrize(
    ("label", "make", "reason"),
    [
        (
            "expired",
            lambda a: _forge(a, exp=int(time.time()) - 60, iat=int(time.time()) - 1000),
            "TOKEN_EXPIRED",
        ),
        (
            "wrong key",
            lambda a: _forge(a, key="another-secret-another-secret-0123456789-another-secret-0123456789"),
            "INVALID_TOKEN",
        ),
        ("HS512 not allowed", lambda a: _forge(a, alg="HS512"), "INVALID_TOKEN"),
        ("wrong issuer", lambda a: _forge(a, iss="someone-else"), "INVALID_TOKEN"),
        ("wrong audience", lambda a: _forge(a, aud="other-api"), "INVALID_TOKEN"),
        (
            "tampered",
            lambda a: a.access_token[:-4] + ("AAAA" if not a.access_token.endswith("AAAA") else "BBBB"),
            "INVALID_TOKEN",
        ),
        ("tampered claims", lambda a: _swap_payload(a.access_token), "INVALID_TOKEN"),
        ("alg none", lambda a: _alg_none(a.access_token), "INVALID_TOKEN"),
        ("refresh as access", lambda a: a.refresh_token, "WRONG_TOKEN_TYPE"),
    ],
)
def test_bad_access_tokens(
    channel: grpc.Channel, alice: UserClient, label: str, make: Callable[[UserClient], str], reason: str
) -> None:
    agent = alice.create_agent(display_name="keep me")
    stubs = _as(channel, make(alice))
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, reason):
        stubs.auth.GetCurrentUser(pb.GetCurrentUserRequest())
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, reason):
        stubs.agents.DeleteAgent(agent_service_pb2.DeleteAgentRequest(name=agent.name))
    # Nothing changed, and the real token still works.
    assert alice.stubs.auth.GetCurrentUser(pb.GetCurrentUserRequest()).user.name == alice.user_name
    assert alice.stubs.agents.GetAgent(agent_service_pb2.GetAgentRequest(name=agent.name)).agent == agent


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _alg_none(token: str) -> str:
    import json

    payload = jwt.decode(token, options={"verify_signature": False})
    return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(payload).encode())}."


def _swap_payload(token: str) -> str:
    import json

    header, _, signature = token.split(".")
    payload = jwt.decode(token, options={"verify_signature": False})
    payload["sub"] = "01900000-0000-7000-8000-000000000000"
    return f"{header}.{_b64(json.dumps(payload).encode())}.{signature}"


def test_access_token_is_not_a_refresh_token(channel: grpc.Channel, alice: UserClient) -> None:
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "WRONG_TOKEN_TYPE"):
        Stubs.over(channel).auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=alice.access_token))
    # alice's real refresh token is unaffected.
    Stubs.over(channel).auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=alice.refresh_token))


def test_refresh_rotates_and_reuse_revokes_the_family(channel: grpc.Channel, alice: UserClient) -> None:
    stubs = Stubs.over(channel)
    first = stubs.auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=alice.refresh_token))
    assert first.refresh_token != alice.refresh_token and first.access_token != alice.access_token
    assert (
        _as(channel, first.access_token).auth.GetCurrentUser(pb.GetCurrentUserRequest()).user.name
        == alice.user_name
    )
    # Presenting the old refresh token again is reuse: the whole family is revoked.
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_REUSED"):
        stubs.auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=alice.refresh_token))
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED"):
        stubs.auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=first.refresh_token))
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED"):
        _as(channel, first.access_token).auth.GetCurrentUser(pb.GetCurrentUserRequest())
    # A new login starts a new family and works.
    fresh = stubs.auth.CreateToken(pb.CreateTokenRequest(username=alice.username, password=alice.password))
    assert (
        _as(channel, fresh.access_token).auth.GetCurrentUser(pb.GetCurrentUserRequest()).user.name
        == alice.user_name
    )


def test_revoke_logs_out(channel: grpc.Channel, alice: UserClient) -> None:
    other_login = Stubs.over(channel).auth.CreateToken(
        pb.CreateTokenRequest(username=alice.username, password=alice.password)
    )
    alice.stubs.auth.RevokeToken(pb.RevokeTokenRequest(refresh_token=alice.refresh_token))
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED"):
        Stubs.over(channel).auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=alice.refresh_token))
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED"):
        alice.stubs.auth.GetCurrentUser(pb.GetCurrentUserRequest())
    # Other logins (other families) are not affected.
    assert (
        _as(channel, other_login.access_token).auth.GetCurrentUser(pb.GetCurrentUserRequest()).user.username
        == alice.username
    )


def test_cannot_revoke_someone_elses_token(channel: grpc.Channel, alice: UserClient, bob: UserClient) -> None:
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TOKEN"):
        alice.stubs.auth.RevokeToken(pb.RevokeTokenRequest(refresh_token=bob.refresh_token))
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TOKEN"):
        alice.stubs.auth.RevokeToken(pb.RevokeTokenRequest(refresh_token="garbage"))
    # Bob is still logged in and can refresh.
    assert bob.stubs.auth.GetCurrentUser(pb.GetCurrentUserRequest()).user.username == bob.username
    Stubs.over(channel).auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=bob.refresh_token))


def test_registration_can_be_switched_off(server_factory: Callable[..., ServerProcess]) -> None:
    closed = server_factory(allow_registration="false")
    with grpc.insecure_channel(closed.target) as ch:
        with expect_error(grpc.StatusCode.PERMISSION_DENIED, "REGISTRATION_DISABLED"):
            Stubs.over(ch).auth.CreateUser(
                pb.CreateUserRequest(username="newcomer", password="long enough pw")
            )
        with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"):
            Stubs.over(ch).auth.CreateToken(
                pb.CreateTokenRequest(username="newcomer", password="long enough pw")
            )
