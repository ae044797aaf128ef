"""AgentService over a real channel: AIP standard methods, pagination, update masks, ownership."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2
from parley_proto.v1 import agent_service_pb2 as pb
from parley_proto.v1 import session_service_pb2 as spb

from tests.support.client import UserClient, expect_error


def test_create_get_defaults(alice: UserClient) -> None:
    agent = alice.create_agent(display_name="Helper", instructions="Be brief.", language="ar", voice="f3")
    assert agent.name.startswith("agents/") and agent.display_name == "Helper"
    assert agent.model == "" and not agent.HasField("temperature") and agent.max_output_tokens == 0
    assert agent.language == "ar" and agent.voice == "f3"
    assert agent.create_time == agent.update_time
    assert alice.stubs.agents.GetAgent(pb.GetAgentRequest(name=agent.name)).agent == agent


def test_create_with_all_fields(alice: UserClient) -> None:
    agent = alice.create_agent(
        display_name="Poet", model="local", temperature=0.7, max_output_tokens=64, instructions="Rhyme."
    )
    assert (
        agent.model == "local" and agent.temperature == pytest.approx(0.7) and agent.max_output_tokens == 64
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"display_name": ""}, "MISSING_FIELD"),
        ({"display_name": "   "}, "MISSING_FIELD"),
        ({"display_name": "x" * 101}, "INVALID_FIELD"),
        ({"instructions": "x" * 32_769}, "INVALID_FIELD"),
        ({"model": "nope"}, "UNKNOWN_MODEL"),
        ({"model": "imaginary/model-1"}, "UNKNOWN_MODEL"),
        ({"temperature": 2.5}, "INVALID_FIELD"),
        ({"temperature": -0.1}, "INVALID_FIELD"),
        ({"max_output_tokens": -1}, "INVALID_FIELD"),
        ({"max_output_tokens": 40_000}, "INVALID_FIELD"),
        ({"language": "fr"}, "UNSUPPORTED_LANGUAGE"),
    ],
)
def test_bad_agent_fields_store_nothing(alice: UserClient, fields: dict[str, object], reason: str) -> None:
    fields.setdefault("display_name", "Bad")
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, reason) as err:
        alice.stubs.agents.CreateAgent(pb.CreateAgentRequest(agent=pb.Agent(**fields)))  # type: ignore[arg-type]
    assert err.error is not None
    assert alice.stubs.agents.ListAgents(pb.ListAgentsRequest()).agents == []


def test_unknown_model_names_the_known_ones(alice: UserClient) -> None:
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_MODEL") as err:
        alice.create_agent(model="gpt-17")
    assert err.error is not None and "local" in err.error.details()


def test_list_paginates_oldest_first(alice: UserClient) -> None:
    names = [alice.create_agent(display_name=f"agent {i}").name for i in range(5)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = alice.stubs.agents.ListAgents(pb.ListAgentsRequest(page_size=2, page_token=token))
        pages += 1
        assert len(page.agents) <= 2
        seen += [a.name for a in page.agents]
        token = page.next_page_token
        if not token:
            break
    assert seen == names and pages == 3


def test_page_size_rules(alice: UserClient) -> None:
    alice.create_agent()
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"):
        alice.stubs.agents.ListAgents(pb.ListAgentsRequest(page_size=-1))
    # AIP-158: too large is coerced, not refused.
    assert len(alice.stubs.agents.ListAgents(pb.ListAgentsRequest(page_size=2_000_000_000)).agents) == 1
    for token in ["garbage", "eyJhZnRlciI6IHRydWV9", "!!!"]:
        with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"):
            alice.stubs.agents.ListAgents(pb.ListAgentsRequest(page_token=token))


def test_page_token_of_another_list_is_refused(alice: UserClient) -> None:
    agent = alice.create_agent()
    for _ in range(3):
        alice.create_session(agent.name)
    token = alice.stubs.sessions.ListSessions(spb.ListSessionsRequest(page_size=1)).next_page_token
    assert token
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"):
        alice.stubs.sessions.ListSessions(
            spb.ListSessionsRequest(page_size=1, page_token=token, agent=agent.name)
        )
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN"):
        alice.stubs.agents.ListAgents(pb.ListAgentsRequest(page_token=token))


def test_update_with_mask_changes_only_named_fields(alice: UserClient) -> None:
    agent = alice.create_agent(display_name="Before", instructions="Keep me.")
    updated = alice.stubs.agents.UpdateAgent(
        pb.UpdateAgentRequest(
            agent=pb.Agent(name=agent.name, display_name="After", instructions="ignored"),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
        )
    ).agent
    assert updated.display_name == "After" and updated.instructions == "Keep me."
    assert updated.update_time.ToDatetime() > agent.update_time.ToDatetime()
    assert updated.create_time == agent.create_time
    # An empty mask means every mutable field (a full replacement).
    replaced = alice.stubs.agents.UpdateAgent(
        pb.UpdateAgentRequest(agent=pb.Agent(name=agent.name, display_name="Whole", temperature=1.0))
    ).agent
    assert replaced.instructions == "" and replaced.temperature == 1.0


def test_get_after_an_update_returns_the_new_agent(alice: UserClient) -> None:
    """GetAgent reuses its response while the agent is unchanged (api/agents.py), never after."""
    agent = alice.create_agent(display_name="Before", instructions="Old.")
    get = pb.GetAgentRequest(name=agent.name)
    assert alice.stubs.agents.GetAgent(get).agent == agent
    assert alice.stubs.agents.GetAgent(get).agent == agent  # the reused response
    updated = alice.stubs.agents.UpdateAgent(
        pb.UpdateAgentRequest(
            agent=pb.Agent(name=agent.name, instructions="New."),
            update_mask=field_mask_pb2.FieldMask(paths=["instructions"]),
        )
    ).agent
    got = alice.stubs.agents.GetAgent(get).agent
    assert got == updated and got.instructions == "New." and got.display_name == "Before"


def test_bad_updates_leave_the_agent_intact(alice: UserClient) -> None:
    agent = alice.create_agent(display_name="Stable")
    for mask, reason in [
        (["name"], "INVALID_FIELD"),
        (["owner"], "INVALID_FIELD"),
        (["create_time"], "INVALID_FIELD"),
    ]:
        with expect_error(grpc.StatusCode.INVALID_ARGUMENT, reason):
            alice.stubs.agents.UpdateAgent(
                pb.UpdateAgentRequest(
                    agent=pb.Agent(name=agent.name, display_name="Changed"),
                    update_mask=field_mask_pb2.FieldMask(paths=mask),
                )
            )
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_MODEL"):
        alice.stubs.agents.UpdateAgent(
            pb.UpdateAgentRequest(
                agent=pb.Agent(name=agent.name, display_name="Changed", model="nope"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name", "model"]),
            )
        )
    assert alice.stubs.agents.GetAgent(pb.GetAgentRequest(name=agent.name)).agent == agent


@pytest.mark.parametrize(
    "name",
    [
        "",
        "agents/",
        "agents/not-a-uuid",
        "sessions/01900000-0000-7000-8000-000000000000",
        "agents/01900000-0000-7000-8000-000000000000/extra",
        "AGENTS/x",
    ],
)
def test_malformed_names(alice: UserClient, name: str) -> None:
    reason = "MISSING_FIELD" if not name else "INVALID_RESOURCE_NAME"
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, reason):
        alice.stubs.agents.GetAgent(pb.GetAgentRequest(name=name))
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, reason):
        alice.stubs.agents.DeleteAgent(pb.DeleteAgentRequest(name=name))


def test_other_users_agent_is_not_found(alice: UserClient, bob: UserClient) -> None:
    agent = alice.create_agent(display_name="Alice's")
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.stubs.agents.GetAgent(pb.GetAgentRequest(name=agent.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.stubs.agents.UpdateAgent(
            pb.UpdateAgentRequest(agent=pb.Agent(name=agent.name, display_name="Bob's"))
        )
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.stubs.agents.DeleteAgent(pb.DeleteAgentRequest(name=agent.name, force=True))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.create_session(agent.name)
    assert bob.stubs.agents.ListAgents(pb.ListAgentsRequest()).agents == []
    # The same answer as for an agent that never existed.
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        bob.stubs.agents.GetAgent(pb.GetAgentRequest(name="agents/01900000-0000-7000-8000-000000000000"))
    assert alice.stubs.agents.GetAgent(pb.GetAgentRequest(name=agent.name)).agent == agent


def test_delete_refuses_while_sessions_exist_unless_forced(alice: UserClient) -> None:
    agent = alice.create_agent()
    session = alice.create_session(agent.name)
    with expect_error(grpc.StatusCode.FAILED_PRECONDITION, "AGENT_HAS_SESSIONS"):
        alice.stubs.agents.DeleteAgent(pb.DeleteAgentRequest(name=agent.name))
    assert alice.stubs.sessions.GetSession(spb.GetSessionRequest(name=session.name)).session == session
    alice.stubs.agents.DeleteAgent(pb.DeleteAgentRequest(name=agent.name, force=True))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.stubs.agents.GetAgent(pb.GetAgentRequest(name=agent.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.stubs.sessions.GetSession(spb.GetSessionRequest(name=session.name))


def test_delete_without_sessions(alice: UserClient) -> None:
    agent = alice.create_agent()
    alice.stubs.agents.DeleteAgent(pb.DeleteAgentRequest(name=agent.name))
    with expect_error(grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND"):
        alice.stubs.agents.DeleteAgent(pb.DeleteAgentRequest(name=agent.name))


CLIENT_TOOL = {"name": "get_time", "description": "The time.", "client": {}}


@pytest.mark.parametrize(
    ("tools", "mcp_servers", "reason", "field"),
    [
        ([{**CLIENT_TOOL, "name": "bad name!"}], [], "INVALID_FIELD", "agent.tools[0].name"),
        ([{**CLIENT_TOOL, "name": "x" * 65}], [], "INVALID_FIELD", "agent.tools[0].name"),
        ([CLIENT_TOOL, CLIENT_TOOL], [], "INVALID_FIELD", "agent.tools[1].name"),
        (
            [{"name": "t", "client": {}, "parameters": {"type": "string"}}],
            [],
            "INVALID_FIELD",
            "agent.tools[0].parameters",
        ),
        (
            [{"name": "t", "client": {}, "parameters": {"type": "object", "properties": 3}}],
            [],
            "INVALID_FIELD",
            "agent.tools[0].parameters",
        ),
        (
            [{"name": "t", "http": {"url": "ftp://example.com/x"}}],
            [],
            "INVALID_FIELD",
            "agent.tools[0].http.url",
        ),
        ([{"name": "t"}], [], "INVALID_FIELD", "agent.tools[0]"),
        ([], [{"name": "m", "url": "file:///etc/passwd"}], "INVALID_FIELD", "agent.mcp_servers[0].url"),
        (
            [],
            [{"name": "a__b", "url": "http://127.0.0.1:1/mcp"}],
            "INVALID_FIELD",
            "agent.mcp_servers[0].name",
        ),
        (
            [],
            [{"name": "m", "url": "http://h/mcp"}, {"name": "m", "url": "http://h/mcp"}],
            "INVALID_FIELD",
            "agent.mcp_servers[1].name",
        ),
    ],
)
def test_bad_tools_are_refused_and_nothing_is_stored(
    alice: UserClient,
    tools: list[dict[str, object]],
    mcp_servers: list[dict[str, object]],
    reason: str,
    field: str,
) -> None:
    from google.protobuf import json_format

    before = list(alice.stubs.agents.ListAgents(pb.ListAgentsRequest(page_size=1000)).agents)
    agent = json_format.ParseDict(
        {"displayName": "Tools", "tools": tools, "mcpServers": mcp_servers},  # checked before the model
        pb.Agent(),
    )
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, reason) as err:
        alice.stubs.agents.CreateAgent(pb.CreateAgentRequest(agent=agent))
    assert err.error is not None and field in err.error.details()
    assert list(alice.stubs.agents.ListAgents(pb.ListAgentsRequest(page_size=1000)).agents) == before


def test_a_model_that_cannot_call_tools_is_named(alice: UserClient) -> None:
    from google.protobuf import json_format

    agent = json_format.ParseDict({"displayName": "Local", "tools": [CLIENT_TOOL]}, pb.Agent())
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "MODEL_CANNOT_CALL_TOOLS") as err:
        alice.stubs.agents.CreateAgent(pb.CreateAgentRequest(agent=agent))
    assert err.error is not None and "local/" in err.error.details()
    plain = alice.create_agent()
    with expect_error(grpc.StatusCode.INVALID_ARGUMENT, "MODEL_CANNOT_CALL_TOOLS"):
        alice.stubs.agents.UpdateAgent(
            pb.UpdateAgentRequest(
                agent=json_format.ParseDict({"name": plain.name, "tools": [CLIENT_TOOL]}, pb.Agent()),
                update_mask=field_mask_pb2.FieldMask(paths=["tools"]),
            )
        )
    assert alice.stubs.agents.GetAgent(pb.GetAgentRequest(name=plain.name)).agent == plain
