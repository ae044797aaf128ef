"""Agents that act, end to end: a real Parley server, a real MCP server (the ``mcp`` SDK's own),
a real local HTTP tool server, over gRPC and REST/SSE through Envoy.

The model is the scripted OpenAI-compatible stand-in (``tests/support/openai_standin.py``): a
test double that streams exactly the tool calls a test needs (a real small model cannot be made
to call tools reliably). Everything else is real: the server's tool loop, its storage, the HTTP
and MCP clients and the SSRF guard.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import json_format
from parley_proto.v1 import agent_service_pb2 as apb
from parley_proto.v1 import branch_service_pb2 as bpb
from parley_proto.v1 import chat_service_pb2 as pb

from tests.rest.helpers import bearer
from tests.support.client import UserClient, expect_error, new_user
from tests.support.envoy import EnvoyProcess
from tests.support.http_tool_server import HttpToolServer, running_http_tool_server
from tests.support.mcp_server import McpTestServer, running_mcp_server
from tests.support.openai_standin import ScriptedCall, StandIn, Step, running_standin
from tests.support.server import ServerProcess

MODEL = "standin/tools-test"


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, HttpToolServer, McpTestServer]]:
    with (
        running_standin() as standin_url,
        running_http_tool_server() as http_tools,
        running_mcp_server(tmp_path_factory.mktemp("mcp")) as mcp,
    ):
        yield standin_url, http_tools, mcp


@pytest.fixture(scope="module")
def tools_server(
    server_factory: Callable[..., ServerProcess], peers: tuple[str, HttpToolServer, McpTestServer]
) -> ServerProcess:
    standin_url, _, _ = peers
    return server_factory(
        openai_compatible=json.dumps({"standin": {"base_url": standin_url}}),
        tools_allowed_hosts='["127.0.0.1"]',
        provider_max_retries="0",
    )


@pytest.fixture(scope="module")
def user(tools_server: ServerProcess) -> Iterator[UserClient]:
    with grpc.insecure_channel(tools_server.target) as channel:
        yield new_user(channel, prefix="tooler")


@pytest.fixture(autouse=True)
def fresh_script() -> Iterator[None]:
    StandIn.steps.clear()
    yield
    StandIn.steps.clear()


def _agent(user: UserClient, **fields: object) -> apb.Agent:
    agent = json_format.ParseDict({"displayName": "Helper", "model": MODEL, **fields}, apb.Agent())
    return user.stubs.agents.CreateAgent(apb.CreateAgentRequest(agent=agent)).agent


def _kind(event: pb.ChatEvent) -> str:
    return str(event.WhichOneof("event"))


def _all_three(peers: tuple[str, HttpToolServer, McpTestServer]) -> dict[str, object]:
    _, http_tools, mcp = peers
    return {
        "tools": [
            {"name": "get_location", "description": "Where the user is.", "client": {}},
            {
                "name": "convert",
                "description": "Convert a temperature.",
                "parameters": {"type": "object", "properties": {"celsius": {"type": "number"}}},
                "http": {
                    "url": f"{http_tools.url}/answer",
                    "headers": {"Authorization": "Bearer tool-secret"},
                },
            },
        ],
        "mcpServers": [{"name": "calc", "url": mcp.url, "allowedTools": ["add"]}],
    }


def test_an_agent_with_a_client_tool_an_http_tool_and_an_mcp_server(
    user: UserClient, peers: tuple[str, HttpToolServer, McpTestServer]
) -> None:
    _, http_tools, mcp = peers
    agent = _agent(user, **_all_three(peers))
    assert [t.name for t in agent.tools] == ["get_location", "convert"]
    assert agent.tools[1].http.url.endswith("/answer") and not agent.tools[1].http.headers  # secret
    session = user.create_session(agent.name).name
    StandIn.steps.extend(
        [
            Step(text=["Let me look."], calls=[ScriptedCall("call_loc", "get_location", ["{}"])]),
            Step(
                calls=[
                    ScriptedCall("call_conv", "convert", ['{"cel', 'sius": 21}']),
                    ScriptedCall("call_add", "calc__add", ['{"a": 2,', ' "b": 3}']),
                ]
            ),
            Step(text=["In Oslo it is 21 °C; ", "2 + 3 = 5."]),
        ]
    )
    first = user.send(session, "Where am I, how warm is it, and what is 2 + 3?")
    assert [_kind(e) for e in first] == ["message_accepted", "text_delta", "tool_call", "requires_action"]
    action = first[-1].requires_action
    assert [c.name for c in action.tool_outputs] == ["get_location"] and not action.approvals
    waiting = user.stubs.chat.GetMessage(pb.GetMessageRequest(name=action.message)).message
    assert waiting.status == pb.Message.STATUS_REQUIRES_ACTION and waiting.tool_calls[0].id == "call_loc"
    # The client runs its tool and answers, on another call: the reply resumes.
    rest = list(
        user.stubs.chat.SubmitToolOutputs(
            pb.SubmitToolOutputsRequest(
                name=action.message,
                tool_outputs=[pb.ToolOutput(tool_call_id="call_loc", output='{"city": "Oslo"}')],
            )
        )
    )
    kinds = [_kind(e) for e in rest]
    assert kinds[:4] == ["tool_result", "tool_call", "tool_call", "tool_result"]
    assert kinds[-2:] == ["usage", "message_completed"]
    results = {e.tool_result.tool_call_id: e.tool_result for e in rest if _kind(e) == "tool_result"}
    assert json.loads(results["call_conv"].output)["received"] == {"celsius": 21}
    assert results["call_add"].output == "5" and not results["call_add"].is_error
    assert http_tools.requests[-1].headers["authorization"] == "Bearer tool-secret"
    assert mcp.count("tools/call") >= 1
    final = rest[-1].message_completed.message
    assert final.text == "In Oslo it is 21 °C; 2 + 3 = 5." and final.status == pb.Message.STATUS_COMPLETE
    # The stored branch shows every step, in order.
    stored = user.messages(session)
    assert [(m.role, m.tool_call_id) for m in stored] == [
        (pb.Message.ROLE_USER, ""),
        (pb.Message.ROLE_ASSISTANT, ""),
        (pb.Message.ROLE_TOOL, "call_loc"),
        (pb.Message.ROLE_ASSISTANT, ""),
        (pb.Message.ROLE_TOOL, "call_conv"),
        (pb.Message.ROLE_TOOL, "call_add"),
        (pb.Message.ROLE_ASSISTANT, ""),
    ]
    assert [c.name for c in stored[3].tool_calls] == ["convert", "calc__add"]
    assert [c.kind for c in stored[3].tool_calls] == [pb.ToolCall.KIND_HTTP, pb.ToolCall.KIND_MCP]
    assert stored[1].stop_reason == pb.STOP_REASON_TOOL_USE and stored[-1] == final
    # The model was shown its calls and their results at each step (OpenAI wire shape).
    third = StandIn.requests[-1]["messages"]
    assert [m["role"] for m in third[-5:]] == ["assistant", "tool", "assistant", "tool", "tool"]
    assert third[-3]["tool_calls"][1]["function"] == {"name": "calc__add", "arguments": '{"a": 2, "b": 3}'}
    assert {t["function"]["name"] for t in StandIn.requests[-1]["tools"]} == {
        "get_location",
        "convert",
        "calc__add",
    }
    # Following the reply from the start gives every event again, same numbers.
    whole = list(
        user.stubs.chat.ResumeStream(pb.ResumeStreamRequest(name=first[0].message_accepted.assistant_message))
    )
    assert whole == first + rest


def test_approvals_and_submission_errors(
    user: UserClient, peers: tuple[str, HttpToolServer, McpTestServer]
) -> None:
    _, http_tools, _ = peers
    tools = [
        {"name": "convert", "requireApproval": True, "http": {"url": f"{http_tools.url}/answer"}},
        {"name": "ask", "client": {}},
    ]
    agent = _agent(user, tools=tools)
    session = user.create_session(agent.name).name
    StandIn.steps.extend(
        [
            Step(
                calls=[ScriptedCall("c1", "convert", ['{"celsius": 1}']), ScriptedCall("c2", "ask", ["{}"])]
            ),
            Step(text=["Fine."]),
        ]
    )
    before = len(http_tools.requests)
    first = user.send(session, "Go")
    action = first[-1].requires_action
    assert [c.id for c in action.approvals] == ["c1"] and [c.id for c in action.tool_outputs] == ["c2"]
    assert len(http_tools.requests) == before  # not run before the approval

    def submit(**fields: object) -> list[pb.ChatEvent]:
        return list(
            user.stubs.chat.SubmitToolOutputs(pb.SubmitToolOutputsRequest(name=action.message, **fields))
        )

    stored = user.messages(session)
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_TOOL_CALL"):
        submit(approvals=[pb.ToolApproval(tool_call_id="c1", approved=True)])  # c2 left out
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_TOOL_CALL"):
        submit(
            approvals=[pb.ToolApproval(tool_call_id="c1", approved=True)],
            tool_outputs=[
                pb.ToolOutput(tool_call_id="c2", output="x"),
                pb.ToolOutput(tool_call_id="c9", output="y"),
            ],
        )
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"):
        submit(tool_outputs=[pb.ToolOutput(tool_call_id="c2"), pb.ToolOutput(tool_call_id="c2")])
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "NOT_AN_ASSISTANT_MESSAGE"):
        list(user.stubs.chat.SubmitToolOutputs(pb.SubmitToolOutputsRequest(name=stored[0].name)))
    stranger = new_user(user.channel, prefix="stranger")
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        list(stranger.stubs.chat.SubmitToolOutputs(pb.SubmitToolOutputsRequest(name=action.message)))
    with expect_error(grpc.StatusCode.FAILED_PRECONDITION, "REPLY_REQUIRES_ACTION"):
        user.send(session, "Are you there?")
    assert user.messages(session) == stored  # nothing changed
    rest = submit(
        approvals=[pb.ToolApproval(tool_call_id="c1", approved=False, reason="too hot")],
        tool_outputs=[pb.ToolOutput(tool_call_id="c2", output="yes")],
    )
    denied = next(
        e.tool_result for e in rest if _kind(e) == "tool_result" and e.tool_result.tool_call_id == "c1"
    )
    assert denied.is_error and denied.output == "the user denied this call: too hot"
    assert len(http_tools.requests) == before
    with expect_error(grpc.StatusCode.FAILED_PRECONDITION, "REPLY_NOT_WAITING"):
        submit(tool_outputs=[pb.ToolOutput(tool_call_id="c2", output="again")])


def test_ssrf_guard_refuses_loopback_without_the_allow_list(
    server_factory: Callable[..., ServerProcess], peers: tuple[str, HttpToolServer, McpTestServer]
) -> None:
    standin_url, http_tools, _ = peers
    strict = server_factory(openai_compatible=json.dumps({"standin": {"base_url": standin_url}}))
    with grpc.insecure_channel(strict.target) as channel:
        user = new_user(channel, prefix="strict")
        agent = _agent(user, tools=[{"name": "convert", "http": {"url": f"{http_tools.url}/answer"}}])
        session = user.create_session(agent.name).name
        StandIn.steps.extend(
            [Step(calls=[ScriptedCall("c1", "convert", ["{}"])]), Step(text=["I could not."])]
        )
        before = len(http_tools.requests)
        events = user.send(session, "Convert")
    result = next(e.tool_result for e in events if _kind(e) == "tool_result")
    assert result.is_error and "127.0.0.1" in result.output
    assert len(http_tools.requests) == before  # no request reached the server
    assert events[-1].message_completed.message.text == "I could not."


def test_regenerate_and_fork_at_a_tool_step(
    user: UserClient, peers: tuple[str, HttpToolServer, McpTestServer]
) -> None:
    _, http_tools, _ = peers
    agent = _agent(user, tools=[{"name": "convert", "http": {"url": f"{http_tools.url}/answer"}}])
    session = user.create_session(agent.name).name
    StandIn.steps.extend(
        [Step(calls=[ScriptedCall("c1", "convert", ['{"celsius": 5}'])]), Step(text=["41 °F."])]
    )
    user.send(session, "5 °C in °F?")
    stored = user.messages(session)
    tool_message = stored[2]
    assert tool_message.role == pb.Message.ROLE_TOOL
    # Fork right after the tool result and continue there: the model sees the call and result.
    fork = user.stubs.branches.CreateBranch(
        bpb.CreateBranchRequest(parent=session, from_message=tool_message.name)
    ).branch.name
    StandIn.steps.append(Step(text=["Forty-one."]))
    user.send(session, "Say it in words.", branch=fork)
    sent = StandIn.requests[-1]["messages"]
    assert [m["role"] for m in sent[-3:]] == ["assistant", "tool", "user"]
    assert sent[-3]["tool_calls"][0]["id"] == "c1"
    # Regenerate the final reply: a new branch from the user message runs the whole turn again.
    StandIn.steps.extend(
        [Step(calls=[ScriptedCall("c2", "convert", ['{"celsius": 5}'])]), Step(text=["41."])]
    )
    events = list(user.stubs.chat.RegenerateMessage(pb.RegenerateMessageRequest(name=stored[-1].name)))
    again = user.messages(session)  # the new branch is active
    assert [m.role for m in again] == [
        pb.Message.ROLE_USER,
        pb.Message.ROLE_ASSISTANT,
        pb.Message.ROLE_TOOL,
        pb.Message.ROLE_ASSISTANT,
    ]
    assert again[0] == stored[0] and again[1].name != stored[1].name
    assert events[-1].message_completed.message.text == "41."


@pytest.fixture(scope="module")
def tools_envoy(
    tools_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EnvoyProcess]:
    proc = EnvoyProcess(tools_server.target, tmp_path_factory.mktemp("envoy-tools"))
    proc.start()
    yield proc
    proc.stop()


def _sse(response: httpx.Response) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


def test_the_same_round_trip_over_rest_and_sse(
    user: UserClient, tools_envoy: EnvoyProcess, peers: tuple[str, HttpToolServer, McpTestServer]
) -> None:
    agent = _agent(user, **_all_three(peers))
    StandIn.steps.extend(
        [
            Step(calls=[ScriptedCall("r1", "get_location", ["{}"])]),
            Step(calls=[ScriptedCall("r2", "calc__add", ['{"a": 1, "b": 1}'])]),
            Step(text=["Oslo; 2."]),
        ]
    )
    with httpx.Client(base_url=tools_envoy.base_url, headers=bearer(user), timeout=60) as client:
        session = client.post("/v1/sessions", json={"agent": agent.name}).json()["session"]["name"]
        with client.stream("POST", f"/v1/{session}:sendMessage", json={"text": "Where and 1+1?"}) as r:
            first = _sse(r)
        action = first[-1]["requiresAction"]
        assert isinstance(action, dict) and action["toolOutputs"][0]["name"] == "get_location"
        body = {"toolOutputs": [{"toolCallId": "r1", "output": "Oslo"}]}
        with client.stream("POST", f"/v1/{action['message']}:submitToolOutputs", json=body) as r:
            rest = _sse(r)
        assert [next(k for k in e if k != "sequenceNumber") for e in rest][-2:] == [
            "usage",
            "messageCompleted",
        ]
        assert rest[-1]["messageCompleted"]["message"]["text"] == "Oslo; 2."  # type: ignore[index]
        stored = client.get(f"/v1/{session}/messages").json()["messages"]
        assert [m["role"] for m in stored] == [
            "ROLE_USER",
            "ROLE_ASSISTANT",
            "ROLE_TOOL",
            "ROLE_ASSISTANT",
            "ROLE_TOOL",
            "ROLE_ASSISTANT",
        ]


def test_the_python_sdk_and_parley_chat_answer_a_waiting_reply(
    tools_server: ServerProcess, peers: tuple[str, HttpToolServer, McpTestServer]
) -> None:
    """The SDK's submit_tool_outputs, and the chat REPL asking the person (``ask``) for an
    approval and a client tool's output, then streaming the rest."""
    import asyncio
    import io
    from collections.abc import Coroutine
    from typing import Any

    from parley_client import ParleyClient
    from parley_client.cli.chat import ChatRepl

    _, http_tools, _ = peers
    tools = [
        {"name": "ask_user", "client": {}},
        {"name": "convert", "requireApproval": True, "http": {"url": f"{http_tools.url}/answer"}},
    ]
    with asyncio.Runner() as runner:
        run: Callable[[Coroutine[Any, Any, Any]], Any] = runner.run
        client = ParleyClient(tools_server.target)

        async def setup() -> tuple[Any, Any]:
            await client.register(f"sdk-tools-{id(client)}", "correct horse battery")
            await client.login(f"sdk-tools-{id(client)}", "correct horse battery")
            agent = await client.create_agent("Tools", model=MODEL)
            agent = await client.update_agent(agent.name, tools=tools)
            return agent, await client.create_session(agent.name)

        agent, session = run(setup())
        # The SDK: a client tool answered with submit_tool_outputs.
        StandIn.steps.extend(
            [Step(calls=[ScriptedCall("s1", "ask_user", ["{}"])]), Step(text=["Thanks, Ada."])]
        )

        async def sdk_round_trip() -> str:
            first = [e async for e in client.send_message(session.name, "Who am I?")]
            action = first[-1].requires_action
            rest = [e async for e in client.submit_tool_outputs(action.message, outputs={"s1": "Ada"})]
            return rest[-1].message_completed.message.text

        assert run(sdk_round_trip()) == "Thanks, Ada."
        # The REPL: asks for the approval and the output, then prints the rest of the reply.
        StandIn.steps.extend(
            [
                Step(
                    calls=[
                        ScriptedCall("r1", "convert", ['{"celsius": 3}']),
                        ScriptedCall("r2", "ask_user", ["{}"]),
                    ]
                ),
                Step(text=["Done: 37.4 °F."]),
            ]
        )
        answers = iter(["y", "blue"])
        asked: list[str] = []

        def ask(prompt: str) -> str:
            asked.append(prompt)
            return next(answers)

        out = io.StringIO()
        repl = ChatRepl(client, session, agent, run, out=out, ask=ask)
        repl.send("Convert 3 °C and ask me my favourite colour.")
        run(client.close())
    assert asked == ['approve convert({"celsius": 3})? [y/N] ', "output of ask_user({})> "]
    printed = out.getvalue()
    assert '[tool call convert({"celsius": 3})]' in printed and "[tool result: blue]" in printed
    assert printed.rstrip().endswith("Done: 37.4 °F.")


def test_the_readme_client_tool_round_trip(
    tools_server: ServerProcess, user: UserClient, tmp_path: Path
) -> None:
    """README.md's walkthrough-tools block, run as written, with the stand-in as the model."""
    import os
    import re
    import subprocess
    import sys

    from tests.support.server import ROOT

    text = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- walkthrough-tools:start -->\s*```bash\n(.*?)```\s*<!-- walkthrough-tools:end -->", text, re.S
    )
    assert block, "README.md lost its walkthrough-tools block"
    StandIn.steps.extend(
        [
            Step(calls=[ScriptedCall("call_w", "get_weather", ['{"city": "Oslo"}'])]),
            Step(text=["Clear, 18 °C."]),
        ]
    )
    env = {
        **os.environ,
        "ADDR": tools_server.target,
        "AUTH": f"authorization: Bearer {user.access_token}",
        "TOOLS_MODEL": "standin/tools-readme",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.group(1)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ['the model called get_weather({"city": "Oslo"})', "Clear, 18 °C."]
    sent = StandIn.requests[-1]["messages"]
    assert sent[-1] == {
        "role": "tool",
        "tool_call_id": "call_w",
        "content": '{"sky": "clear", "celsius": 18}',
    }
