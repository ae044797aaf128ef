"""The ``parley`` command: accounts and resources in scripts, and ``parley chat`` in a terminal."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest
from parley_client import Agent, Message, ParleyClient, Session, StopReason, Tokens, UnimplementedError
from parley_client.cli.chat import ChatRepl, timings
from parley_client.cli.store import CredentialStore

from tests.audio.audio_samples import espeak_wav
from tests.clients.conftest import PASSWORD, Terminal, parley
from tests.clients.test_python_sdk import expired_copy
from tests.support.server import ServerProcess

NOT_AVAILABLE = "not available on this server yet"


def credentials(env: dict[str, str]) -> Path:
    return Path(env["XDG_CONFIG_HOME"]) / "parley" / "credentials.json"


def test_register_and_login_save_private_credentials(cli_env: dict[str, str], registered: str) -> None:
    path = credentials(cli_env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    saved = json.loads(path.read_text())
    login = saved["servers"][cli_env["PARLEY_SERVER"]]
    assert login["username"] == registered
    assert login["access_token"] and login["refresh_token"]

    done = parley(cli_env, "whoami")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(registered)


def test_wrong_password_is_refused(cli_env: dict[str, str], registered: str) -> None:
    done = parley(cli_env, "login", "-u", registered, "--password-stdin", stdin="wrong password!\n")
    assert done.returncode == 1
    assert "UNAUTHENTICATED" in done.stderr


def test_not_logged_in(cli_env: dict[str, str]) -> None:
    done = parley(cli_env, "agents", "list")
    assert done.returncode == 2
    assert "not logged in" in done.stderr and "parley login" in done.stderr


def test_agents_and_sessions(cli_env: dict[str, str], registered: str) -> None:
    done = parley(
        cli_env, "--json", "agents", "create", "Guide", "-i", "You are terse.", "--temperature", "0.3"
    )
    assert done.returncode == 0, done.stderr
    agent = json.loads(done.stdout)
    assert agent["displayName"] == "Guide" and agent["temperature"] == 0.3
    agent_id = agent["name"].removeprefix("agents/")

    listed = parley(cli_env, "agents", "list")
    assert listed.stdout.split("\t")[:2] == [agent["name"], "Guide"]
    shown = parley(cli_env, "agents", "get", agent_id)  # a bare id works too
    assert "instructions: You are terse." in shown.stdout

    created = parley(cli_env, "sessions", "create", agent["name"], "--title", "From the CLI")
    assert created.returncode == 0, created.stderr
    session = created.stdout.split("\t")[0]
    assert session.startswith("sessions/")
    listed = parley(cli_env, "--json", "sessions", "list", "--agent", agent_id)
    assert [s["title"] for s in json.loads(listed.stdout)] == ["From the CLI"]

    refused = parley(cli_env, "agents", "delete", agent_id)
    assert refused.returncode == 1
    assert "FAILED_PRECONDITION (AGENT_HAS_SESSIONS)" in refused.stderr
    assert parley(cli_env, "sessions", "delete", session).returncode == 0
    assert parley(cli_env, "agents", "delete", agent_id).returncode == 0

    missing = parley(cli_env, "agents", "get", agent_id)
    assert missing.returncode == 1
    assert "NOT_FOUND (RESOURCE_NOT_FOUND)" in missing.stderr


def test_sessions_export_import_and_archive(cli_env: dict[str, str], registered: str, tmp_path: Path) -> None:
    agent = json.loads(parley(cli_env, "--json", "agents", "create", "Exporter").stdout)
    session = parley(cli_env, "sessions", "create", agent["name"], "--title", "Round trip").stdout.split(
        "\t"
    )[0]
    assert parley(cli_env, "chat", session, "-m", "Hello!").returncode == 0
    file = tmp_path / "session.jsonl"
    done = parley(cli_env, "sessions", "export", session, "-o", str(file))
    assert done.returncode == 0, done.stderr
    first = json.loads(file.read_text().split("\n")[0])
    assert first["type"] == "parley.export" and first["version"] == 1
    to_stdout = parley(cli_env, "sessions", "export", session.removeprefix("sessions/"))
    assert len(to_stdout.stdout.splitlines()) == len(file.read_text().splitlines())

    imported = parley(cli_env, "--json", "sessions", "import", str(file), "--agent", agent["name"])
    assert imported.returncode == 0, imported.stderr
    copy = json.loads(imported.stdout)
    assert copy["title"] == "Round trip" and copy["agent"] == agent["name"] and copy["name"] != session

    archived = parley(cli_env, "--json", "sessions", "archive", session)
    assert archived.returncode == 0, archived.stderr
    assert json.loads(archived.stdout)["archived"] is True

    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    refused = parley(cli_env, "sessions", "import", str(bad))
    assert refused.returncode == 1 and "INVALID_EXPORT" in refused.stderr and "line 1" in refused.stderr


def test_expired_tokens_are_refreshed_and_saved(cli_env: dict[str, str], registered: str) -> None:
    path = credentials(cli_env)
    saved = json.loads(path.read_text())
    login = saved["servers"][cli_env["PARLEY_SERVER"]]
    old_refresh = login["refresh_token"]
    login["access_token"] = expired_copy(login["access_token"])
    path.write_text(json.dumps(saved))

    done = parley(cli_env, "whoami")

    assert done.returncode == 0, done.stderr
    rotated = json.loads(path.read_text())["servers"][cli_env["PARLEY_SERVER"]]
    assert rotated["refresh_token"] != old_refresh  # the new single-use refresh token was kept
    assert parley(cli_env, "whoami").returncode == 0


def test_logout(cli_env: dict[str, str], registered: str) -> None:
    done = parley(cli_env, "logout")
    assert done.returncode == 0, done.stderr
    assert cli_env["PARLEY_SERVER"] not in json.loads(credentials(cli_env).read_text())["servers"]
    assert parley(cli_env, "whoami").returncode == 2


def test_one_message(cli_env: dict[str, str], registered: str) -> None:
    done = parley(cli_env, "chat", "--message", "Hello! Name one fruit.")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("new session sessions/")
    assert lines[1].startswith("Assistant> ") and len(lines[1]) > len("Assistant> ")


_SECONDS = r"\d+\.\d\d s"


def test_verbose_prints_the_timings_of_a_text_reply(cli_env: dict[str, str], registered: str) -> None:
    done = parley(cli_env, "chat", "--verbose", "--message", "Hello! Name one fruit.")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"\[ttft {_SECONDS} · total {_SECONDS}\]", done.stdout.splitlines()[-1]), done.stdout
    quiet = parley(cli_env, "chat", "--message", "Hello! Name one fruit.")
    assert "ttft" not in quiet.stdout


def test_verbose_prints_the_timings_of_a_voice_turn(
    cli_env: dict[str, str], registered: str, tmp_path: Path
) -> None:
    recording = tmp_path / "question.wav"
    recording.write_bytes(espeak_wav("What is the capital of France?"))
    done = parley(cli_env, "chat", "-v", "--voice", str(recording))
    assert done.returncode == 0, done.stderr
    timing = rf"\[ttft {_SECONDS} · first audio {_SECONDS} · transcription {_SECONDS} · total {_SECONDS}\]"
    assert any(re.fullmatch(timing, line) for line in done.stdout.splitlines()), done.stdout


def test_timings_leave_out_what_is_unset() -> None:
    reply = Message(name="sessions/s/messages/m")
    assert timings(reply) == ""
    reply.time_to_first_token.FromMilliseconds(310)
    reply.generation_duration.FromSeconds(2)
    user = Message(name="sessions/s/messages/u")
    assert timings(reply, user) == "ttft 0.31 s · total 2.00 s"
    user.transcription_duration.FromMilliseconds(1204)
    reply.time_to_first_audio.FromMilliseconds(900)
    assert timings(reply, user) == "ttft 0.31 s · first audio 0.90 s · transcription 1.20 s · total 2.00 s"


def chat(cli_env: dict[str, str], terminal: Callable[..., Terminal], *args: str) -> Terminal:
    return terminal([sys.executable, "-m", "parley_client", "chat", *args], cli_env)


def test_chat_in_a_terminal(
    cli_env: dict[str, str], registered: str, terminal: Callable[..., Terminal]
) -> None:
    term = chat(cli_env, terminal)
    term.expect("new session sessions/")
    term.expect("/quit to leave.")
    term.expect("you> ")

    term.sendline("Hello! What is a good name for a cat?")
    term.expect("Assistant> ")
    reply = term.expect("you> ")
    assert reply.strip(), term.output

    term.sendline("/history")
    history = term.expect("you> ")
    assert "  you: Hello! What is a good name for a cat?  [" in history
    assert "  Assistant: " in history

    # Branching and regeneration: real results, or a clear note while the server lacks them.
    term.sendline("/branch")
    said = term.expect("you> ")
    assert "created branch" in said or NOT_AVAILABLE in said, said
    term.sendline("/branches")
    said = term.expect("you> ")
    assert "* main" in said or NOT_AVAILABLE in said, said
    term.sendline("/regenerate")
    said = term.expect("you> ")
    assert "Assistant> " in said or NOT_AVAILABLE in said, said
    term.sendline("/switch main")
    said = term.expect("you> ")
    assert "now on branch main" in said or NOT_AVAILABLE in said, said

    term.sendline("/nonsense")
    assert "unknown command /nonsense" in term.expect("you> ")
    # Ctrl-C at the prompt: a fresh prompt, not an exit. (Pressed as a person would, not within
    # microseconds of the prompt appearing: a SIGINT that lands before readline starts waiting is
    # only noticed at the next key.)
    time.sleep(0.5)
    term.send("\x03")
    term.expect("you> ")
    term.sendline("/quit")
    assert term.wait() == 0


def test_ctrl_c_cancels_the_reply_and_keeps_the_repl(
    server_factory: Callable[..., ServerProcess],
    cli_env: dict[str, str],
    terminal: Callable[..., Terminal],
) -> None:
    """A long reply (a server allowing 512 output tokens) is cut short by Ctrl-C; the server keeps
    it as INCOMPLETE/CANCELLED and the REPL goes on."""
    long_server = server_factory(default_max_output_tokens="512")
    env = {**cli_env, "PARLEY_SERVER": long_server.target}
    username = f"cli-{os.urandom(5).hex()}"
    for command in ("register", "login"):
        done = parley(env, command, "-u", username, "--password-stdin", stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr

    term = chat(env, terminal)
    session = term.expect(" with Assistant").strip().removeprefix("new session ")
    term.expect("you> ")
    term.sendline("Write a very long story about a dragon, a knight and a wizard, with many chapters.")
    term.expect("Assistant> ")
    term.expect(" ")  # some of the reply has streamed in
    term.send("\x03")
    term.expect("[reply cancelled]")
    term.expect("you> ")
    term.sendline("/quit")
    assert term.wait() == 0

    async def stored() -> list[Message]:
        saved = CredentialStore(Path(env["XDG_CONFIG_HOME"]) / "parley" / "credentials.json").get(
            env["PARLEY_SERVER"]
        )
        assert saved is not None
        async with ParleyClient(long_server.target, tokens=saved.tokens) as client:
            for _ in range(50):  # the server stores the partial reply as the cancellation lands
                messages = [m async for m in client.list_messages(session)]
                if len(messages) == 2 and messages[1].status != Message.STATUS_UNSPECIFIED:
                    return messages
                await asyncio.sleep(0.2)
            return messages

    messages = asyncio.run(stored())
    assert [m.role for m in messages] == [Message.ROLE_USER, Message.ROLE_ASSISTANT]
    assert messages[1].status == Message.STATUS_INCOMPLETE
    assert messages[1].stop_reason == StopReason.STOP_REASON_CANCELLED


class _Unimplemented:
    """A client whose branching, regeneration and voice methods are UNIMPLEMENTED."""

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise UnimplementedError(grpc.StatusCode.UNIMPLEMENTED, "not built yet")

    async def create_branch(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()

    async def set_active_branch(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()

    async def list_branches(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()
        yield

    async def regenerate_message(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()
        yield

    async def send_voice_message(self, *args: Any, **kwargs: Any) -> Any:
        self._fail()
        yield


@pytest.mark.parametrize(
    ("line", "feature"),
    [
        ("/branch", "Branching"),
        ("/branches", "Branching"),
        ("/switch other", "Branching"),
        ("/regenerate", "Regenerating replies"),
        ("/voice {audio}", "Voice messages"),
    ],
)
def test_unimplemented_features_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, feature: str
) -> None:
    audio = tmp_path / "hello.wav"
    audio.write_bytes(b"RIFF")
    session = Session(name="sessions/s1", agent="agents/a1", active_branch="sessions/s1/branches/main")
    with asyncio.Runner() as runner:
        run: Callable[[Coroutine[Any, Any, Any]], Any] = runner.run
        repl = ChatRepl(_Unimplemented(), session, Agent(name="agents/a1", display_name="Guide"), run)  # type: ignore[arg-type]
        repl.last_message = repl.last_reply = "sessions/s1/messages/m2"
        assert repl.handle(line.format(audio=audio)) is True
    assert f"{feature} is {NOT_AVAILABLE}." in capsys.readouterr().out


def test_tokens_file_round_trip(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "parley" / "credentials.json")
    assert store.get("x:1") is None and store.default_server() is None
    store.update_tokens("x:1", Tokens("a", "r", 900, 60))
    assert store.get("x:1") is not None and store.default_server() == "x:1"
    store.update_tokens("x:1", None)
    assert store.get("x:1") is None and store.default_server() is None


def test_messages_resume_and_cancel(cli_env: dict[str, str], registered: str, server: ServerProcess) -> None:
    async def start() -> tuple[str, str]:
        """A background reply under way (started with the SDK as the CLI's user)."""
        saved = CredentialStore(credentials(cli_env)).get(cli_env["PARLEY_SERVER"])
        assert saved is not None
        async with ParleyClient(server.target, tokens=saved.tokens) as client:
            agent = await client.create_agent(
                "Teller", instructions="Write long stories.", max_output_tokens=300
            )
            session = await client.create_session(agent.name)
            events = client.send_message(session.name, "A long story.", background=True)
            accepted = (await anext(events)).message_accepted
            assert (await anext(events)).WhichOneof("event") == "text_delta"
            await events.aclose()  # type: ignore[attr-defined]
            return session.name, accepted.assistant_message

    session, name = asyncio.run(start())
    cancelled = parley(cli_env, "messages", "cancel", name)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"{name} incomplete: ")
    text = cancelled.stdout.split(": ", 1)[1].rstrip("\n")
    resumed = parley(cli_env, "messages", "resume", name)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.rstrip("\n") == text
    bad = parley(cli_env, "messages", "resume", session)
    assert bad.returncode == 2 and "not a message name" in bad.stderr


def test_usage(cli_env: dict[str, str], registered: str) -> None:
    assert parley(cli_env, "chat", "--message", "Hello!").returncode == 0
    done = parley(cli_env, "usage", "--today")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("users/") and " since " in lines[0]
    assert lines[1].startswith("  tokens: ") and " out" in lines[1]
    assert "replies: " in lines[3]
