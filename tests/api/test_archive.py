"""ArchiveSession over a real channel, on the directory archive (the embedded default) and on S3.

No real S3 can be reached from here, so the S3 tests start moto's server mode (``moto[server]``
from PyPI) as a separate process on 127.0.0.1: a real HTTP S3 API that boto3 in the Parley
server talks to through ``AWS_ENDPOINT_URL_S3``, as it would to AWS or MinIO.

Each test checks what is stored, not only what the API says: the content documents of the
session in the content store (SQL table or MongoDB), the archive columns and the archived file.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import grpc
import pytest
from parley_proto.v1 import auth_service_pb2 as aupb
from parley_proto.v1 import branch_service_pb2 as bpb
from parley_proto.v1 import chat_service_pb2 as cpb
from parley_proto.v1 import session_service_pb2 as spb
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.client import UserClient, error_info, new_user
from tests.support.export import build_conversation, export, last_reply, normalized
from tests.support.net import free_port
from tests.support.server import ServerProcess

BUCKET = "parley-archive"


async def _sql(database_url: str, query: str, **params: Any) -> list[Any]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text(query), params)).all())
    finally:
        await engine.dispose()


def sql(database_url: str, query: str, **params: Any) -> list[Any]:
    return asyncio.run(_sql(database_url, query, **params))


def content_count(database_url: str, mongodb_url: str | None, session: str) -> int:
    """Content documents the session has in the content store in use."""
    session_id = session.removeprefix("sessions/")
    if mongodb_url is not None:
        import pymongo

        with pymongo.MongoClient(mongodb_url) as client:
            return int(client["parley"]["message_contents"].count_documents({"session_id": session_id}))
    rows = sql(database_url, "SELECT count(*) FROM message_contents WHERE session_id = :s", s=session_id)
    return int(rows[0][0])


def archive_columns(database_url: str, session: str) -> tuple[Any, ...]:
    rows = sql(
        database_url,
        "SELECT archive_key, archive_size, archive_sha256, archive_time FROM sessions WHERE id = :s",
        s=session.removeprefix("sessions/"),
    )
    return tuple(rows[0])


def every_branch_text(user: UserClient, session: str) -> dict[str, list[str]]:
    """The texts of each branch's path, by branch id (restoring, if archived)."""
    branches = user.stubs.branches.ListBranches(bpb.ListBranchesRequest(parent=session)).branches
    return {
        b.name.rsplit("/", 1)[1]: [m.text for m in user.messages(session, branch=b.name)] for b in branches
    }


def archive(user: UserClient, session: str) -> spb.Session:
    return user.stubs.sessions.ArchiveSession(spb.ArchiveSessionRequest(name=session)).session


def get(user: UserClient, session: str) -> spb.Session:
    return user.stubs.sessions.GetSession(spb.GetSessionRequest(name=session)).session


@pytest.fixture(scope="module")
def owner(channel: grpc.Channel) -> UserClient:
    return new_user(channel, prefix="archiver")


@pytest.fixture
def conversation(owner: UserClient) -> spb.Session:
    return build_conversation(owner)


def test_archive_frees_content_and_a_read_restores_it(
    owner: UserClient,
    conversation: spb.Session,
    server: ServerProcess,
    database_url: str,
    mongodb_url: str | None,
) -> None:
    name = conversation.name
    before_export = export(owner, name)
    before_texts = every_branch_text(owner, name)
    stored = content_count(database_url, mongodb_url, name)
    assert len(before_texts) == 3 and stored > 0

    archived = archive(owner, name)
    assert archived.archived and archived.HasField("archive_time")
    assert get(owner, name).archived
    assert content_count(database_url, mongodb_url, name) == 0
    key, size, sha256, archive_time = archive_columns(database_url, name)
    assert key.startswith(f"sessions/{name.removeprefix('sessions/')}/") and archive_time is not None
    file = server.data_dir / "archive" / key
    data = file.read_bytes()
    assert len(data) == size and hashlib.sha256(data).hexdigest() == sha256
    assert normalized(data) == normalized(before_export)
    # The tree stays: branches still list without a restore; archiving again changes nothing.
    assert len(owner.stubs.branches.ListBranches(bpb.ListBranchesRequest(parent=name)).branches) == 3
    assert archive(owner, name) == archived
    assert get(owner, name).archived

    # Reading the messages restores it, byte for byte.
    assert every_branch_text(owner, name) == before_texts
    assert not get(owner, name).archived
    assert archive_columns(database_url, name) == (None, None, None, None)
    assert content_count(database_url, mongodb_url, name) == stored
    assert not file.exists()
    assert normalized(export(owner, name)) == normalized(before_export)


def test_sending_and_exporting_restore_an_archived_session(
    owner: UserClient, conversation: spb.Session, database_url: str, mongodb_url: str | None
) -> None:
    name = conversation.name
    before_texts = every_branch_text(owner, name)
    before_export = export(owner, name)
    archive(owner, name)
    assert normalized(export(owner, name)) == normalized(before_export)  # exporting restores
    assert not get(owner, name).archived

    archive(owner, name)
    reply = last_reply(owner.send(name, "One more question, please."))
    assert reply.status == cpb.Message.STATUS_COMPLETE
    assert not get(owner, name).archived
    after = every_branch_text(owner, name)
    active = get(owner, name).active_branch.rsplit("/", 1)[1]
    assert after[active][: len(before_texts[active])] == before_texts[active]
    assert after[active][len(before_texts[active])] == "One more question, please."
    assert {b: t for b, t in after.items() if b != active} == {
        b: t for b, t in before_texts.items() if b != active
    }


def test_a_damaged_archive_is_unavailable_and_loses_nothing(
    owner: UserClient, conversation: spb.Session, server: ServerProcess, database_url: str
) -> None:
    name = conversation.name
    before_texts = every_branch_text(owner, name)
    archive(owner, name)
    key = archive_columns(database_url, name)[0]
    file = server.data_dir / "archive" / key
    good = file.read_bytes()
    file.write_bytes(good.replace(b'"type":"message"', b'"type":"messagE"', 1))
    with pytest.raises(grpc.RpcError) as caught:
        owner.messages(name)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(caught.value)
    assert info is not None and info.reason == "ARCHIVE_UNAVAILABLE"
    assert get(owner, name).archived and archive_columns(database_url, name)[0] == key
    file.unlink()
    with pytest.raises(grpc.RpcError) as caught:
        owner.messages(name)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert get(owner, name).archived
    file.write_bytes(good)  # once the file is back, the session reads as before
    assert every_branch_text(owner, name) == before_texts
    assert not get(owner, name).archived


def test_archive_errors(
    owner: UserClient, conversation: spb.Session, channel: grpc.Channel, database_url: str
) -> None:
    stranger = new_user(channel, prefix="stranger")
    for who, session, code in [
        (stranger, conversation.name, grpc.StatusCode.NOT_FOUND),
        (owner, "sessions/not-a-session", grpc.StatusCode.INVALID_ARGUMENT),
        (owner, "sessions/01890a5d-ac96-774b-bcce-b302099a8057", grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            archive(who, session)
        assert caught.value.code() == code
    assert not get(owner, conversation.name).archived
    assert archive_columns(database_url, conversation.name) == (None, None, None, None)


def test_deleting_an_archived_session_deletes_its_file(
    owner: UserClient, conversation: spb.Session, server: ServerProcess, database_url: str
) -> None:
    archive(owner, conversation.name)
    file = server.data_dir / "archive" / archive_columns(database_url, conversation.name)[0]
    assert file.exists()
    owner.stubs.sessions.DeleteSession(spb.DeleteSessionRequest(name=conversation.name))
    assert not file.exists()


# --- S3 (moto's server mode) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on a free loopback port, with the bucket created."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = _s3(endpoint)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _s3(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture(scope="module")
def s3_server(s3_endpoint: str, server_factory: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    aws = {
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with pytest.MonkeyPatch.context() as mp:  # the server process inherits the environment
        for key, value in aws.items():
            mp.setenv(key, value)
        yield server_factory(archive_url=f"s3://{BUCKET}/parley/prod")


def test_s3_archive_round_trip(
    s3_server: ServerProcess, s3_endpoint: str, database_url: str, mongodb_url: str | None
) -> None:
    with grpc.insecure_channel(s3_server.target) as channel:
        user = new_user(channel, prefix="s3")
        session = build_conversation(user)
        before_texts = every_branch_text(user, session.name)
        before_export = export(user, session.name)
        stored = content_count(database_url, mongodb_url, session.name)

        assert archive(user, session.name).archived
        key, size, sha256, _ = archive_columns(database_url, session.name)
        assert key.startswith(f"parley/prod/sessions/{session.name.removeprefix('sessions/')}/")
        s3 = _s3(s3_endpoint)
        data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha256
        assert content_count(database_url, mongodb_url, session.name) == 0

        assert every_branch_text(user, session.name) == before_texts
        assert not get(user, session.name).archived
        assert content_count(database_url, mongodb_url, session.name) == stored
        assert s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount") == 0
        assert normalized(export(user, session.name)) == normalized(before_export)


def test_s3_down_is_unavailable_and_keeps_the_content(
    server_factory: Callable[..., ServerProcess], database_url: str, mongodb_url: str | None
) -> None:
    """An S3 endpoint nobody listens on: archiving fails UNAVAILABLE and frees nothing."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_MAX_ATTEMPTS", "1")
        down = server_factory(archive_url=f"s3://{BUCKET}")
    with grpc.insecure_channel(down.target) as channel:
        user = new_user(channel, prefix="s3down")
        session = user.create_session()
        user.send(session.name, "Hello there.")
        stored = content_count(database_url, mongodb_url, session.name)
        with pytest.raises(grpc.RpcError) as caught:
            archive(user, session.name)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info(caught.value)
        assert info is not None and info.reason == "ARCHIVE_UNAVAILABLE"
        assert not get(user, session.name).archived
        assert content_count(database_url, mongodb_url, session.name) == stored
        assert archive_columns(database_url, session.name) == (None, None, None, None)


def test_deleting_the_account_deletes_its_archived_files(
    channel: grpc.Channel, server: ServerProcess, database_url: str
) -> None:
    leaver = new_user(channel, prefix="leaver")
    session = leaver.create_session()
    leaver.send(session.name, "Remember this.")
    archive(leaver, session.name)
    file = server.data_dir / "archive" / archive_columns(database_url, session.name)[0]
    assert file.exists()
    leaver.stubs.auth.DeleteUser(aupb.DeleteUserRequest(name="users/me", password=leaver.password))
    assert not file.exists()


def test_idle_sessions_are_archived_by_themselves(
    server_factory: Callable[..., ServerProcess], fresh_database: Callable[[], str], mongodb_url: str | None
) -> None:
    """PARLEY_ARCHIVE_IDLE_SECONDS: a session nobody touched is archived by the server; reading
    it restores it, and a session without messages is left alone.

    On a database of its own, and stopped at the end: an idle archiver archives every idle
    session of its database into its own archive directory, so on the suite's shared database it
    would archive other tests' sessions where their servers cannot read them back."""
    database = fresh_database()
    idle = server_factory(database=database, archive_idle_seconds="5", archive_sweep_seconds="0.5")
    try:
        with grpc.insecure_channel(idle.target) as channel:
            user = new_user(channel, prefix="idle")
            session = user.create_session()
            user.send(session.name, "Hello there.")
            empty = user.create_session()
            texts = [m.text for m in user.messages(session.name)]
            deadline = time.monotonic() + 60
            while not get(user, session.name).archived:
                assert time.monotonic() < deadline, "the idle session was not archived"
                time.sleep(0.2)
            assert content_count(database, mongodb_url, session.name) == 0
            assert [m.text for m in user.messages(session.name)] == texts
            assert not get(user, session.name).archived  # just restored: not idle
            assert not get(user, empty.name).archived
    finally:
        idle.stop()
