"""Running Parley for other people: roles, AdminService, account deletion, quotas and usage.

Each test module gets a server on a database of its own (the first user of an empty database
is its admin), of the configured kind (SQLite, or PostgreSQL; MongoDB-wire content when the
suite runs with it). Every refusal is checked to have changed nothing.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from parley_proto.v1 import admin_service_pb2 as apb
from parley_proto.v1 import auth_service_pb2 as aupb
from parley_proto.v1 import branch_service_pb2 as bpb
from parley_proto.v1 import chat_service_pb2 as pb
from parley_proto.v1 import usage_service_pb2 as upb

from tests.support.client import Stubs, UserClient, expect_error, new_user
from tests.support.server import ROOT, ServerProcess

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def ops(server_factory: Callable[..., ServerProcess], fresh_database: Callable[[], str]) -> ServerProcess:
    return server_factory(database=fresh_database(), admin_usernames='["root-by-setting"]')


@pytest.fixture(scope="module")
def channel(ops: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(ops.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def admin(channel: grpc.Channel) -> UserClient:
    """The first user of the database: an admin."""
    return new_user(channel, prefix="first")


@pytest.fixture
def user(channel: grpc.Channel, admin: UserClient) -> UserClient:
    return new_user(channel, prefix="member")


def _me(user: UserClient) -> aupb.User:
    return user.stubs.auth.GetCurrentUser(aupb.GetCurrentUserRequest()).user


def _update(admin: UserClient, name: str, paths: list[str], **fields: object) -> aupb.User:
    return admin.stubs.admin.UpdateUser(
        apb.UpdateUserRequest(
            user=aupb.User(name=name, **fields), update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
    ).user


def _usage(user: UserClient, parent: str) -> upb.GetUsageResponse:
    return user.stubs.usage.GetUsage(upb.GetUsageRequest(parent=parent))


def test_the_first_user_and_configured_usernames_are_admins(admin: UserClient, channel: grpc.Channel) -> None:
    assert _me(admin).role == aupb.User.ROLE_ADMIN
    assert _me(new_user(channel, prefix="second")).role == aupb.User.ROLE_USER
    stubs = Stubs.over(channel)
    stubs.auth.CreateUser(aupb.CreateUserRequest(username="root-by-setting", password=PASSWORD))
    assert new_user_role(channel, "root-by-setting") == aupb.User.ROLE_ADMIN


def new_user_role(channel: grpc.Channel, username: str) -> int:
    stubs = Stubs.over(channel)
    token = stubs.auth.CreateToken(aupb.CreateTokenRequest(username=username, password=PASSWORD)).access_token
    me = stubs.auth.GetCurrentUser(
        aupb.GetCurrentUserRequest(), metadata=[("authorization", f"Bearer {token}")]
    )
    return me.user.role


def test_admin_service_refuses_non_admins(user: UserClient) -> None:
    calls = [
        lambda: user.stubs.admin.ListUsers(apb.ListUsersRequest()),
        lambda: _update(user, user.user_name, ["role"], role=aupb.User.ROLE_ADMIN),
        lambda: user.stubs.admin.GetSettings(apb.GetSettingsRequest()),
        lambda: user.stubs.admin.UpdateSettings(
            apb.UpdateSettingsRequest(
                settings=apb.ServerSettings(allow_registration=False),
                update_mask=field_mask_pb2.FieldMask(paths=["allow_registration"]),
            )
        ),
    ]
    for call in calls:
        with expect_error(grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED"):
            call()
    assert _me(user).role == aupb.User.ROLE_USER


def test_list_users_pages_and_filters(admin: UserClient, channel: grpc.Channel) -> None:
    made = [new_user(channel, prefix="pager").username for _ in range(3)]
    seen: list[str] = []
    token = ""
    while True:
        page = admin.stubs.admin.ListUsers(
            apb.ListUsersRequest(page_size=2, page_token=token, username_prefix="PAGER-")
        )
        assert len(page.users) <= 2
        seen += [u.username for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert set(made) <= set(seen) and all(name.startswith("pager-") for name in seen)


def test_disabling_a_user_stops_their_tokens_at_once(admin: UserClient, user: UserClient) -> None:
    session = user.create_session().name
    disabled = _update(admin, user.user_name, ["disabled"], disabled=True)
    assert disabled.disabled
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "USER_DISABLED"):
        user.stubs.sessions.ListSessions(pb_sessions_request())
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "USER_DISABLED"):
        user.stubs.auth.CreateToken(aupb.CreateTokenRequest(username=user.username, password=user.password))
    _update(admin, user.user_name, ["disabled"], disabled=False)
    assert [s.name for s in user.stubs.sessions.ListSessions(pb_sessions_request()).sessions] == [session]


def pb_sessions_request():  # type: ignore[no-untyped-def]
    from parley_proto.v1 import session_service_pb2

    return session_service_pb2.ListSessionsRequest()


def test_the_last_admin_cannot_be_demoted_disabled_or_deleted(
    admin: UserClient, channel: grpc.Channel
) -> None:
    only_admins = [
        u
        for u in admin.stubs.admin.ListUsers(apb.ListUsersRequest(page_size=1000)).users
        if u.role == aupb.User.ROLE_ADMIN and not u.disabled
    ]
    # Demote the other admins (root-by-setting) so that `admin` is the last one.
    for other in only_admins:
        if other.name != admin.user_name:
            _update(admin, other.name, ["role"], role=aupb.User.ROLE_USER)
    before = _me(admin)
    for paths, fields in ((["role"], {"role": aupb.User.ROLE_USER}), (["disabled"], {"disabled": True})):
        with expect_error(grpc.StatusCode.FAILED_PRECONDITION, "LAST_ADMIN"):
            _update(admin, admin.user_name, paths, **fields)
    with expect_error(grpc.StatusCode.FAILED_PRECONDITION, "LAST_ADMIN"):
        admin.stubs.auth.DeleteUser(aupb.DeleteUserRequest(name="users/me", password=admin.password))
    assert _me(admin) == before
    # With a second admin, the first may step down (and is promoted back for the other tests).
    deputy = new_user(channel, prefix="deputy")
    _update(admin, deputy.user_name, ["role"], role=aupb.User.ROLE_ADMIN)
    assert _update(admin, admin.user_name, ["role"], role=aupb.User.ROLE_USER).role == aupb.User.ROLE_USER
    _update(deputy, admin.user_name, ["role"], role=aupb.User.ROLE_ADMIN)


def test_bad_quotas_and_masks_are_refused(admin: UserClient, user: UserClient) -> None:
    before = _me(user)
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD") as err:
        _update(
            admin, user.user_name, ["quota.output_tokens_per_day"], quota=aupb.Quota(output_tokens_per_day=-1)
        )
    assert err.error is not None and "quota.output_tokens_per_day" in err.error.details()
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"):
        _update(admin, user.user_name, ["username"], username="renamed")
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        _update(admin, "users/01890a5d-ac96-774b-bcce-b302099a8057", ["disabled"], disabled=True)
    assert _me(user) == before


def test_registration_can_be_switched_at_run_time(admin: UserClient, channel: grpc.Channel) -> None:
    def switch(on: bool) -> apb.ServerSettings:
        return admin.stubs.admin.UpdateSettings(
            apb.UpdateSettingsRequest(
                settings=apb.ServerSettings(allow_registration=on),
                update_mask=field_mask_pb2.FieldMask(paths=["allow_registration"]),
            )
        ).settings

    assert not switch(False).allow_registration
    with expect_error(grpc.StatusCode.PERMISSION_DENIED, "REGISTRATION_DISABLED"):
        new_user(channel, prefix="late")
    assert admin.stubs.admin.GetSettings(apb.GetSettingsRequest()).settings.HasField("update_time")
    assert switch(True).allow_registration
    new_user(channel, prefix="late")


def test_deleting_my_account_needs_my_password_and_removes_everything(
    channel: grpc.Channel, admin: UserClient
) -> None:
    leaver = new_user(channel, prefix="leaver")
    session = leaver.create_session().name
    events = leaver.send(session, "Remember me?")
    reply = events[-1].message_completed.message.name
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"):
        leaver.stubs.auth.DeleteUser(aupb.DeleteUserRequest(name="users/me", password="not my password"))
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "MISSING_FIELD"):
        leaver.stubs.auth.DeleteUser(aupb.DeleteUserRequest(name="users/me"))
    assert leaver.stubs.chat.GetMessage(pb.GetMessageRequest(name=reply)).message.name == reply
    with expect_error(grpc.StatusCode.PERMISSION_DENIED, "ADMIN_REQUIRED"):  # someone else: admins only
        leaver.stubs.auth.DeleteUser(aupb.DeleteUserRequest(name=admin.user_name, password=leaver.password))
    leaver.stubs.auth.DeleteUser(aupb.DeleteUserRequest(name="users/me", password=leaver.password))
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN"):
        leaver.stubs.chat.GetMessage(pb.GetMessageRequest(name=reply))
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"):
        leaver.stubs.auth.CreateToken(
            aupb.CreateTokenRequest(username=leaver.username, password=leaver.password)
        )
    names = [u.username for u in admin.stubs.admin.ListUsers(apb.ListUsersRequest(page_size=1000)).users]
    assert leaver.username not in names
    # The username is free again.
    Stubs.over(channel).auth.CreateUser(aupb.CreateUserRequest(username=leaver.username, password=PASSWORD))


def test_an_admin_deletes_any_user_without_their_password(admin: UserClient, channel: grpc.Channel) -> None:
    victim = new_user(channel, prefix="victim")
    victim.create_session()
    admin.stubs.auth.DeleteUser(aupb.DeleteUserRequest(name=victim.user_name))
    with expect_error(grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN"):
        _me(victim)
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        admin.stubs.auth.DeleteUser(aupb.DeleteUserRequest(name=victim.user_name))


def _quota_failure(
    error: grpc.RpcError,
) -> tuple[error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo]:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    failure, retry = error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    kinds = {d.type_url.rsplit(".", 1)[-1]: d for d in status.details}
    kinds["QuotaFailure"].Unpack(failure)
    kinds["RetryInfo"].Unpack(retry)
    return failure, retry


def test_output_quota_holds_under_parallel_sends_and_usage_matches_the_messages(
    admin: UserClient, user: UserClient
) -> None:
    limit = 30
    _update(
        admin, user.user_name, ["quota.output_tokens_per_day"], quota=aupb.Quota(output_tokens_per_day=limit)
    )
    agent = user.create_agent(max_output_tokens=24, instructions="Write long, detailed stories.")
    sessions = [user.create_session(agent.name).name for _ in range(3)]
    results: dict[str, list[pb.ChatEvent] | grpc.RpcError] = {}

    def send(session: str) -> None:
        try:
            results[session] = user.send(session, "A long story, please.")
        except grpc.RpcError as exc:
            results[session] = exc

    threads = [threading.Thread(target=send, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    stored = [m for s in sessions for m in user.messages(s) if m.role == pb.Message.ROLE_ASSISTANT]
    total = sum(m.usage.output_tokens for m in stored)
    usage = _usage(user, "users/me")
    assert usage.output_tokens == total  # exactly what the stored messages say
    assert usage.input_tokens == sum(m.usage.input_tokens for m in stored)
    assert usage.message_count == 2 * len(stored)
    assert total <= limit + 3, total  # the local model's count can pass the delta count by a token
    assert any(m.stop_reason == pb.STOP_REASON_QUOTA_EXCEEDED for m in stored) or total >= limit
    # The day is spent: the next send is refused before anything is stored, saying when it resets.
    before = user.messages(sessions[0])
    with expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA_EXCEEDED") as err:
        user.send(sessions[0], "More?")
    assert err.error is not None
    failure, retry = _quota_failure(err.error)
    assert failure.violations[0].subject == user.user_name
    assert 0 < retry.retry_delay.seconds <= 86_400
    assert user.messages(sessions[0]) == before


def test_usage_by_agent_session_and_branch(
    admin: UserClient, user: UserClient, channel: grpc.Channel
) -> None:
    session = user.create_session().name
    first = user.send(session, "Hello")
    second = user.send(session, "Again")
    fork = user.stubs.branches.CreateBranch(
        bpb.CreateBranchRequest(parent=session, from_message=first[-1].message_completed.message.name)
    ).branch.name
    on_fork = user.send(session, "On the fork", branch=fork)
    replies = [events[-1].message_completed.message for events in (first, second, on_fork)]
    whole = _usage(user, session)
    assert whole.output_tokens == sum(r.usage.output_tokens for r in replies)
    assert (whole.message_count, whole.completed_replies) == (6, 3)
    main = _usage(user, f"{session}/branches/main")
    assert main.output_tokens == replies[0].usage.output_tokens + replies[1].usage.output_tokens
    assert main.message_count == 4
    forked = _usage(user, fork)  # the shared first exchange counts for the fork too
    assert forked.output_tokens == replies[0].usage.output_tokens + replies[2].usage.output_tokens
    assert forked.message_count == 4
    agent = user.stubs.sessions.GetSession(session_get(session)).session.agent
    assert _usage(user, agent).output_tokens == whole.output_tokens
    # Another user's usage: NOT_FOUND, unless the caller is an admin.
    stranger = new_user(channel, prefix="stranger")
    for parent in (user.user_name, session, agent, fork):
        with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
            _usage(stranger, parent)
    assert _usage(admin, user.user_name).parent == user.user_name
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_RESOURCE_NAME"):
        _usage(user, "agents/nope")
    # Deleting the fork removes the messages only it reached; the shared prefix stays.
    fork_reply = replies[2].name
    user.stubs.branches.DeleteBranch(bpb.DeleteBranchRequest(name=fork))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        user.stubs.chat.GetMessage(pb.GetMessageRequest(name=fork_reply))
    assert user.stubs.chat.GetMessage(pb.GetMessageRequest(name=replies[0].name)).message == replies[0]
    # The session's usage keeps what the deleted branch spent (quotas are not given back).
    assert _usage(user, session).output_tokens == whole.output_tokens


def session_get(name: str):  # type: ignore[no-untyped-def]
    from parley_proto.v1 import session_service_pb2

    return session_service_pb2.GetSessionRequest(name=name)


def test_parley_server_admin_create(ops: ServerProcess, channel: grpc.Channel) -> None:
    env = {**ops.env, "PARLEY_GRPC_LISTEN": "127.0.0.1:0"}
    created = subprocess.run(
        [sys.executable, "-m", "parley", "admin", "create", "shell-admin", "--password-stdin"],
        input=f"{PASSWORD}\n",
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("created admin shell-admin")
    assert new_user_role(channel, "shell-admin") == aupb.User.ROLE_ADMIN
    plain = new_user(channel, prefix="promoted")
    promoted = subprocess.run(
        [sys.executable, "-m", "parley", "admin", "create", plain.username],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert promoted.returncode == 0, promoted.stderr
    assert promoted.stdout.startswith(f"promoted admin {plain.username}")
    assert _me(plain).role == aupb.User.ROLE_ADMIN
