"""Every RPC over REST, through Envoy's gRPC-JSON transcoder, with the HTTP mapping of the protos."""

from __future__ import annotations

import base64

import httpx

from tests.rest.helpers import RestUser, assert_status, bearer, built, sse_events
from tests.support.client import UserClient
from tests.support.envoy import EnvoyProcess

#: Every operation of the OpenAPI document, by operationId; each is exercised below (the
#: document is generated from the protos, so a new RPC fails test_every_rpc_is_covered until it
#: gets a REST test here).
COVERED = {
    "AuthService_CreateUser": "test_auth_lifecycle",
    "AuthService_CreateToken": "test_auth_lifecycle",
    "AuthService_RefreshToken": "test_auth_lifecycle",
    "AuthService_RevokeToken": "test_auth_lifecycle",
    "AuthService_GetCurrentToken": "test_bearer_header_reaches_the_server",
    "AuthService_GetCurrentUser": "test_bearer_header_reaches_the_server",
    "AgentService_CreateAgent": "test_agent_lifecycle",
    "AgentService_GetAgent": "test_agent_lifecycle",
    "AgentService_ListAgents": "test_agent_lifecycle",
    "AgentService_UpdateAgent": "test_agent_lifecycle",
    "AgentService_DeleteAgent": "test_agent_lifecycle",
    "SessionService_CreateSession": "test_session_lifecycle",
    "SessionService_GetSession": "test_session_lifecycle",
    "SessionService_ListSessions": "test_session_lifecycle",
    "SessionService_UpdateSession": "test_session_lifecycle",
    "SessionService_DeleteSession": "test_session_lifecycle",
    "SessionService_ExportSession": "test_session_export_and_import",
    "SessionService_ImportSession": "test_session_export_and_import",
    "SessionService_ArchiveSession": "test_session_archive",
    "ChatService_SendMessage": "test_rest_streaming.py",
    "ChatService_ListMessages": "test_messages_after_a_send",
    "ChatService_GetMessage": "test_messages_after_a_send",
    "ChatService_SendVoiceMessage": "test_voice_rpcs",
    "ChatService_RegenerateMessage": "test_regenerate_message",
    "ChatService_SynthesizeSpeech": "test_voice_rpcs",
    "ChatService_ResumeStream": "test_rest_runs.py",
    "ChatService_CancelMessage": "test_rest_runs.py",
    "ChatService_SubmitToolOutputs": "tests/api/test_tools.py::test_the_same_round_trip_over_rest_and_sse",
    "BranchService_CreateBranch": "test_branch_rpcs",
    "BranchService_ListBranches": "test_branch_rpcs",
    "BranchService_GetBranch": "test_branch_rpcs",
    "BranchService_SetActiveBranch": "test_branch_rpcs",
    "BranchService_DeleteBranch": "test_branch_rpcs",
    "AuthService_DeleteUser": "test_rest_operators.py",
    "AdminService_ListUsers": "test_rest_operators.py",
    "AdminService_UpdateUser": "test_rest_operators.py",
    "AdminService_GetSettings": "test_rest_operators.py",
    "AdminService_UpdateSettings": "test_rest_operators.py",
    "UsageService_GetUsage": "test_rest_operators.py",
    # additional_bindings: the same RPC under agents/*, sessions/* and sessions/*/branches/*.
    "UsageService_GetUsage2": "test_rest_operators.py",
    "UsageService_GetUsage3": "test_rest_operators.py",
    "UsageService_GetUsage4": "test_rest_operators.py",
}


def test_every_rpc_is_covered(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    operations = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    assert operations == set(COVERED)


def test_auth_lifecycle(http: httpx.Client) -> None:
    username, password = "rest-ada", "correct horse battery"
    created = http.post("/v1/users", json={"username": username, "password": password, "displayName": "Ada"})
    assert created.status_code == 200, created.text
    user = created.json()["user"]
    assert user["username"] == username
    assert user["displayName"] == "Ada"
    assert user["name"].startswith("users/")

    tokens = http.post("/v1/tokens", json={"username": username, "password": password})
    assert tokens.status_code == 200, tokens.text
    pair = tokens.json()
    assert pair["tokenType"] == "Bearer"
    assert pair["expiresIn"] > 0 and pair["refreshExpiresIn"] > pair["expiresIn"]

    refreshed = http.post("/v1/tokens:refresh", json={"refreshToken": pair["refreshToken"]})
    assert refreshed.status_code == 200, refreshed.text
    new_pair = refreshed.json()
    assert new_pair["accessToken"] and new_pair["refreshToken"] != pair["refreshToken"]
    me = http.get("/v1/users/me", headers={"Authorization": f"Bearer {new_pair['accessToken']}"})
    assert me.status_code == 200 and me.json()["user"]["name"] == user["name"]

    # Logging out needs the access token (header) and the refresh token (body).
    revoked = http.post(
        "/v1/tokens:revoke",
        json={"refreshToken": new_pair["refreshToken"]},
        headers={"Authorization": f"Bearer {new_pair['accessToken']}"},
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {}
    again = http.post("/v1/tokens:refresh", json={"refreshToken": new_pair["refreshToken"]})
    assert_status(again, 401, 16)
    # The password still works after a logout.
    assert http.post("/v1/tokens", json={"username": username, "password": password}).status_code == 200


def test_bearer_header_reaches_the_server(http: httpx.Client, alice: UserClient, bob: UserClient) -> None:
    """``Authorization: Bearer ...`` arrives as ``authorization`` metadata: the server knows who
    calls."""
    for user in (alice, bob):
        me = http.get("/v1/users/me", headers=bearer(user))
        assert me.status_code == 200, me.text
        assert me.json()["user"]["name"] == user.user_name
        assert me.json()["user"]["username"] == user.username
        token = http.get("/v1/tokens/current", headers=bearer(user))
        assert token.status_code == 200, token.text
        assert token.json()["subject"] == user.user_name
        assert token.json()["tokenId"]
    # The scheme is case-insensitive (RFC 7235), as over gRPC.
    lower = http.get("/v1/users/me", headers={"Authorization": f"bearer {alice.access_token}"})
    assert lower.status_code == 200 and lower.json()["user"]["name"] == alice.user_name


def test_agent_lifecycle(rest_alice: RestUser) -> None:
    c = rest_alice.client
    agent = rest_alice.create_agent(displayName="Guide", instructions="Be concise.", temperature=0.5)
    assert agent["name"].startswith("agents/")
    assert agent["displayName"] == "Guide" and agent["temperature"] == 0.5
    assert c.get(f"/v1/{agent['name']}").json()["agent"] == agent

    listed = c.get("/v1/agents", params={"pageSize": 50}).json()
    assert agent["name"] in [a["name"] for a in listed["agents"]]

    # PATCH with an update mask in the query string: only the named field changes.
    patched = c.patch(
        f"/v1/{agent['name']}",
        params={"updateMask": "displayName"},
        json={"displayName": "Tour guide", "instructions": "ignored: not in the mask"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["agent"]["displayName"] == "Tour guide"
    assert patched.json()["agent"]["instructions"] == "Be concise."

    # An agent with a session needs force=true to go (FAILED_PRECONDITION -> 400 otherwise).
    rest_alice.create_session(agent["name"])
    refused = c.delete(f"/v1/{agent['name']}")
    assert_status(refused, 400, 9)
    assert c.get(f"/v1/{agent['name']}").status_code == 200
    deleted = c.delete(f"/v1/{agent['name']}", params={"force": "true"})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {}
    assert_status(c.get(f"/v1/{agent['name']}"), 404, 5, "RESOURCE_NOT_FOUND")


def test_session_lifecycle(rest_alice: RestUser) -> None:
    c = rest_alice.client
    agent = rest_alice.create_agent()
    other_agent = rest_alice.create_agent()
    session = rest_alice.create_session(agent["name"], title="First chat")
    rest_alice.create_session(other_agent["name"])
    assert session["agent"] == agent["name"] and session["title"] == "First chat"
    assert session["activeBranch"] == f"{session['name']}/branches/main"
    assert c.get(f"/v1/{session['name']}").json()["session"] == session

    only = c.get("/v1/sessions", params={"agent": agent["name"]}).json()["sessions"]
    assert [s["name"] for s in only] == [session["name"]]

    patched = c.patch(f"/v1/{session['name']}", json={"title": "Renamed"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["session"]["title"] == "Renamed"

    deleted = c.delete(f"/v1/{session['name']}")
    assert deleted.status_code == 200 and deleted.json() == {}
    assert_status(c.get(f"/v1/{session['name']}"), 404, 5, "RESOURCE_NOT_FOUND")


def test_session_export_and_import(rest_alice: RestUser) -> None:
    """Export streams as SSE (one ``{"data": base64}`` event per chunk); import takes the file as
    base64 JSON; a bad file is 400 with the line in the message."""
    c = rest_alice.client
    session = rest_alice.create_session(title="Exported")
    rest_alice.send(session["name"], "Hi! Name a colour.")
    with c.stream("GET", f"/v1/{session['name']}:export") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data = b"".join(base64.b64decode(e["data"]) for e in sse_events(response))
    assert data.startswith(b'{"type":"parley.export","version":1,') and data.endswith(b"\n")

    imported = c.post("/v1/sessions:import", json={"data": base64.b64encode(data).decode()})
    assert imported.status_code == 200, imported.text
    copy = imported.json()["session"]
    assert copy["title"] == "Exported" and copy["name"] != session["name"]
    texts = [m["text"] for m in rest_alice.messages(copy["name"])]
    assert texts == [m["text"] for m in rest_alice.messages(session["name"])]

    bad = c.post("/v1/sessions:import", json={"data": base64.b64encode(b"{}\n").decode()})
    body = assert_status(bad, 400, 3, "INVALID_EXPORT")
    assert body["message"].startswith("line 1: ")


def test_session_archive(rest_alice: RestUser) -> None:
    """Archive over REST: the session shows archived; listing its messages restores it."""
    c = rest_alice.client
    session = rest_alice.create_session()
    rest_alice.send(session["name"], "Hi! Name a tree.")
    texts = [m["text"] for m in rest_alice.messages(session["name"])]
    archived = c.post(f"/v1/{session['name']}:archive", json={})
    assert archived.status_code == 200, archived.text
    assert archived.json()["session"]["archived"] is True and archived.json()["session"]["archiveTime"]
    assert c.get(f"/v1/{session['name']}").json()["session"]["archived"] is True
    assert [m["text"] for m in rest_alice.messages(session["name"])] == texts
    assert c.get(f"/v1/{session['name']}").json()["session"]["archived"] is False
    assert_status(c.post("/v1/sessions/01890a5d-ac96-774b-bcce-b302099a8057:archive", json={}), 404, 5)


def test_messages_after_a_send(rest_alice: RestUser) -> None:
    c = rest_alice.client
    session = rest_alice.create_session()
    events = rest_alice.send(session["name"], "Hello! Name one colour.")
    user_message = events[0]["messageAccepted"]["userMessage"]
    reply = events[-1]["messageCompleted"]["message"]

    listed = c.get(f"/v1/{session['name']}/messages").json()
    assert [m["name"] for m in listed["messages"]] == [user_message["name"], reply["name"]]
    assert listed["messages"][1] == reply

    # Pagination through query parameters.
    first = c.get(f"/v1/{session['name']}/messages", params={"pageSize": 1}).json()
    assert [m["name"] for m in first["messages"]] == [user_message["name"]]
    second = c.get(
        f"/v1/{session['name']}/messages", params={"pageSize": 1, "pageToken": first["nextPageToken"]}
    ).json()
    assert [m["name"] for m in second["messages"]] == [reply["name"]]

    got = c.get(f"/v1/{reply['name']}")
    assert got.status_code == 200, got.text
    message = got.json()["message"]
    assert message == reply
    assert message["role"] == "ROLE_ASSISTANT" and message["status"] == "STATUS_COMPLETE"
    assert message["parent"] == user_message["name"]


def _exchange(user: RestUser) -> tuple[str, str, str]:
    """A session with one exchange: (session, user message, assistant message)."""
    session = user.create_session()["name"]
    events = user.send(session, "Hi! Name a fruit.")
    return (
        session,
        events[0]["messageAccepted"]["userMessage"]["name"],
        events[-1]["messageCompleted"]["message"]["name"],
    )


def test_branch_rpcs(rest_alice: RestUser) -> None:
    c = rest_alice.client
    session, question, answer = _exchange(rest_alice)
    main = f"{session}/branches/main"
    created = c.post(f"/v1/{session}/branches", json={"fromMessage": question, "displayName": "Retry"})
    if not built(created):
        for response in (
            c.get(f"/v1/{session}/branches"),
            c.get(f"/v1/{main}"),
            c.post(f"/v1/{session}:setActiveBranch", json={"branch": main}),
            c.delete(f"/v1/{main}"),
        ):
            assert not built(response)
        assert [m["name"] for m in rest_alice.messages(session)] == [question, answer]
        return

    assert created.status_code == 200, created.text
    branch = created.json()["branch"]
    assert branch["name"].startswith(f"{session}/branches/")
    assert branch["displayName"] == "Retry"
    assert branch["head"] == question and branch["forkPoint"] == question
    assert branch["active"] is False
    assert c.get(f"/v1/{branch['name']}").json()["branch"]["name"] == branch["name"]
    listed = c.get(f"/v1/{session}/branches").json()["branches"]
    assert [(b["name"], b["active"]) for b in listed] == [(main, True), (branch["name"], False)]

    switched = c.post(f"/v1/{session}:setActiveBranch", json={"branch": branch["name"]})
    assert switched.status_code == 200, switched.text
    assert switched.json()["session"]["activeBranch"] == branch["name"]
    assert [m["name"] for m in rest_alice.messages(session)] == [question]
    # The active branch cannot go (FAILED_PRECONDITION -> 400); another one can.
    assert_status(c.delete(f"/v1/{branch['name']}"), 400, 9)
    deleted = c.delete(f"/v1/{main}")
    assert deleted.status_code == 200 and deleted.json() == {}
    assert [b["name"] for b in c.get(f"/v1/{session}/branches").json()["branches"]] == [branch["name"]]


def test_regenerate_message(rest_alice: RestUser) -> None:
    session, question, answer = _exchange(rest_alice)
    with rest_alice.client.stream("POST", f"/v1/{answer}:regenerate", json={}) as response:
        if response.status_code != 200:
            response.read()  # an error status with a JSON body, not a stream
        if not built(response):
            assert [m["name"] for m in rest_alice.messages(session)] == [question, answer]
            return
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response))
    assert [int(e["sequenceNumber"]) for e in events] == list(range(1, len(events) + 1))
    accepted, completed = events[0]["messageAccepted"], events[-1]["messageCompleted"]["message"]
    assert accepted["branch"] != f"{session}/branches/main"
    assert completed["parent"] == question and completed["name"] != answer
    session_now = rest_alice.client.get(f"/v1/{session}").json()["session"]
    assert session_now["activeBranch"] == accepted["branch"]
    assert [m["name"] for m in rest_alice.messages(session)] == [question, completed["name"]]
    # The old reply is still there, on main.
    assert rest_alice.client.get(f"/v1/{answer}").json()["message"]["text"]


def test_voice_rpcs(rest_alice: RestUser) -> None:
    session, question, answer = _exchange(rest_alice)
    # A corrupt recording: 400 once voice is built, 501 until then. Nothing is stored either way.
    voice = rest_alice.client.post(f"/v1/{session}:sendVoiceMessage", json={"audio": "UklGRiQAAABXQVZF"})
    if built(voice):
        assert_status(voice, 400, 3)
    assert [m["name"] for m in rest_alice.messages(session)] == [question, answer]

    with rest_alice.client.stream(
        "POST", f"/v1/{answer}:synthesizeSpeech", json={"format": "AUDIO_FORMAT_WAV"}
    ) as speech:
        if speech.status_code != 200:
            speech.read()
        if built(speech):
            assert speech.status_code == 200
            assert speech.headers["content-type"].startswith("text/event-stream")
            chunks = list(sse_events(speech))
            assert chunks and all(c["format"] == "AUDIO_FORMAT_WAV" for c in chunks)
            assert any(c["data"] for c in chunks)


def test_sse_reader_handles_events(envoy: EnvoyProcess) -> None:
    """The test helper parses SSE framing as browsers do (multi-line data, trailing event)."""

    class _Fake:
        def iter_lines(self) -> list[str]:
            return ['data: {"a":', "data: 1}", "", 'data: {"b": 2}']

    assert list(sse_events(_Fake())) == [{"a": 1}, {"b": 2}]  # type: ignore[arg-type]
