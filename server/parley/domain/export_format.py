"""The session export file, version 1 (docs/export.md): JSON Lines, one object per line.

Lines, in this order: the header (``{"type": "parley.export", "version": 1, ...}``), the
``session``, the ``agent`` snapshot, every ``branch`` (oldest first), every ``message`` of the
tree (creation order, so a parent always precedes its children), and an ``end`` line with the
counts. Times are RFC 3339 UTC with microseconds; durations are seconds. Tool and MCP headers
(secrets) are never written.

:func:`encode_*` build the lines; :func:`parse_export` reads a whole file back and checks it,
raising ``InvalidArgument`` (reason ``INVALID_EXPORT``) that names the first bad line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from parley.domain.errors import FieldViolation, InvalidArgument, Reason
from parley.domain.models import (
    Agent,
    Branch,
    Citation,
    CitationSource,
    McpServerConfig,
    Message,
    MessageStatus,
    Role,
    Session,
    StopReason,
    ToolCall,
    ToolKind,
    ToolSpec,
)

__all__ = [
    "EXPORT_TYPE",
    "EXPORT_VERSION",
    "ParsedExport",
    "encode_agent",
    "encode_branch",
    "encode_end",
    "encode_header",
    "encode_message",
    "encode_session",
    "line",
    "parse_export",
]

_E = TypeVar("_E")

EXPORT_TYPE = "parley.export"
EXPORT_VERSION = 1


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def line(obj: Mapping[str, Any]) -> bytes:
    """One line of the file: compact JSON, UTF-8 (not ASCII-escaped), ending in ``\\n``."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def encode_header(source_session_id: str, exported_at: datetime) -> dict[str, Any]:
    return {
        "type": EXPORT_TYPE,
        "version": EXPORT_VERSION,
        "exported_at": _time(exported_at),
        "source": f"sessions/{source_session_id}",
    }


def encode_session(s: Session) -> dict[str, Any]:
    return {
        "type": "session",
        "id": s.id,
        "title": s.title,
        "active_branch": s.active_branch_id,
        "create_time": _time(s.create_time),
        "update_time": _time(s.update_time),
    }


def encode_agent(a: Agent) -> dict[str, Any]:
    return {
        "type": "agent",
        "id": a.id,
        "display_name": a.display_name,
        "instructions": a.instructions,
        "model": a.model,
        "temperature": a.temperature,
        "max_output_tokens": a.max_output_tokens,
        "voice": a.voice,
        "language": a.language,
        "tools": [
            {
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
                "kind": t.kind.value,
                "require_approval": t.require_approval,
                "url": t.url,
            }
            for t in a.tools
        ],
        "mcp_servers": [
            {
                "name": m.name,
                "url": m.url,
                "allowed_tools": list(m.allowed_tools),
                "require_approval": m.require_approval,
            }
            for m in a.mcp_servers
        ],
        "create_time": _time(a.create_time),
        "update_time": _time(a.update_time),
    }


def encode_branch(b: Branch) -> dict[str, Any]:
    return {
        "type": "branch",
        "id": b.id,
        "display_name": b.display_name,
        "head": b.head_id,
        "fork_point": b.fork_point_id,
        "message_count": b.message_count,
        "create_time": _time(b.create_time),
        "update_time": _time(b.update_time),
    }


def encode_message(m: Message) -> dict[str, Any]:
    return {
        "type": "message",
        "id": m.id,
        "parent": m.parent_id,
        "depth": m.depth,
        "role": m.role.value,
        "status": m.status.value,
        "stop_reason": m.stop_reason.value,
        "model": m.model,
        "text": m.text,
        "input_tokens": m.input_tokens,
        "output_tokens": m.output_tokens,
        "time_to_first_token_s": m.time_to_first_token_s,
        "transcript_language": m.transcript_language,
        "audio_duration_s": m.audio_duration_s,
        "speech_duration_s": m.speech_duration_s,
        "error_message": m.error_message,
        "request_id": m.request_id,
        "tool_calls": [
            {
                "id": c.id,
                "name": c.name,
                "arguments": c.arguments,
                "kind": c.kind.value,
                "require_approval": c.require_approval,
            }
            for c in m.tool_calls
        ],
        "tool_call_id": m.tool_call_id,
        "is_error": m.is_error,
        "run_id": m.run_id,
        "time_to_first_audio_s": m.time_to_first_audio_s,
        "generation_duration_s": m.generation_duration_s,
        "transcription_duration_s": m.transcription_duration_s,
        "voice_to_voice_latency_s": m.voice_to_voice_latency_s,
        "citations": [
            {
                "text": c.text,
                "start_index": c.start_index,
                "end_index": c.end_index,
                "sources": [
                    {
                        "text": src.text,
                        "location": src.location,
                        "location_type": src.location_type,
                        "metadata": dict(src.metadata),
                    }
                    for src in c.sources
                ],
            }
            for c in m.citations
        ],
        "create_time": _time(m.create_time),
    }


def encode_end(branches: int, messages: int) -> dict[str, Any]:
    return {"type": "end", "branches": branches, "messages": messages}


# --- reading -------------------------------------------------------------------------------------


@dataclass
class ParsedExport:
    """A checked export file. Ids are the file's; ``session.owner_id`` and ``agent.owner_id``
    are empty. Messages are in file order (parents first)."""

    session: Session
    agent: Agent
    branches: list[Branch] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)


class _Bad(Exception):
    """A problem with a line: the current one, or ``line`` when given."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.line = line


def _bad_line(number: int, problem: str) -> InvalidArgument:
    text = f"line {number}: {problem}"
    return InvalidArgument(
        text,
        reason=Reason.INVALID_EXPORT,
        metadata={"field": "data", "line": str(number)},
        violations=[FieldViolation("data", text)],
    )


class _Obj:
    """Typed access to one line's fields; a wrong or missing field raises ``_Bad``."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    def get(self, key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
        if key not in self.raw:
            if optional:
                return None
            raise _Bad(f"missing field {key!r}")
        value = self.raw[key]
        if value is None and optional:
            return None
        # bool is an int in Python: never accept it for a number.
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise _Bad(f"field {key!r} has the wrong type")
        if not isinstance(value, kind):
            raise _Bad(f"field {key!r} has the wrong type")
        return value

    def text(self, key: str, max_chars: int | None = None) -> str:
        value: str = self.get(key, str)
        if max_chars is not None and len(value) > max_chars:
            raise _Bad(f"field {key!r} is longer than {max_chars} characters")
        return value

    def count(self, key: str) -> int:
        value: int = self.get(key, int)
        if value < 0:
            raise _Bad(f"field {key!r} is negative")
        return value

    def seconds(self, key: str) -> float | None:
        value = self.get(key, (int, float), optional=True)
        if value is not None and value < 0:
            raise _Bad(f"field {key!r} is negative")
        return None if value is None else float(value)

    def time(self, key: str) -> datetime:
        try:
            value = datetime.fromisoformat(self.text(key))
        except ValueError:
            raise _Bad(f"field {key!r} is not an RFC 3339 time") from None
        if value.tzinfo is None:
            raise _Bad(f"field {key!r} has no time zone")
        return value.astimezone(UTC)

    def enum(self, key: str, kind: Callable[[str], _E]) -> _E:
        try:
            return kind(self.text(key))
        except ValueError:
            raise _Bad(f"field {key!r} has an unknown value {self.raw[key]!r}") from None

    def id(self, key: str) -> str:
        value = self.text(key, 36)
        if not value:
            raise _Bad(f"field {key!r} is empty")
        return value

    def ref(self, key: str) -> str | None:
        return None if self.raw.get(key) is None else self.id(key)


def _session(o: _Obj) -> Session:
    return Session(
        o.id("id"),
        "",
        "",
        o.text("title", 200),
        o.id("active_branch"),
        o.time("create_time"),
        o.time("update_time"),
    )


def _agent(o: _Obj) -> Agent:
    tools = tuple(
        ToolSpec(
            t.text("name", 64),
            t.text("description"),
            t.get("parameters", dict),
            t.enum("kind", ToolKind),
            t.get("require_approval", bool),
            t.text("url"),
        )
        for t in (_Obj(x) for x in _objects(o, "tools"))
    )
    servers = tuple(
        McpServerConfig(
            m.text("name", 64),
            m.text("url"),
            {},
            tuple(_strings(m, "allowed_tools")),
            m.get("require_approval", bool),
        )
        for m in (_Obj(x) for x in _objects(o, "mcp_servers"))
    )
    return Agent(
        id=o.id("id"),
        owner_id="",
        display_name=o.text("display_name", 100),
        instructions=o.text("instructions"),
        model=o.text("model", 200),
        temperature=o.seconds("temperature"),
        max_output_tokens=o.count("max_output_tokens"),
        voice=o.text("voice", 100),
        language=o.text("language", 16),
        create_time=o.time("create_time"),
        update_time=o.time("update_time"),
        tools=tools,
        mcp_servers=servers,
    )


def _objects(o: _Obj, key: str, *, optional: bool = False) -> list[Mapping[str, Any]]:
    items: list[Any] = o.get(key, list, optional=optional) or []
    if not all(isinstance(x, dict) for x in items):
        raise _Bad(f"field {key!r} must be a list of objects")
    return items


def _strings(o: _Obj, key: str) -> list[str]:
    items: list[Any] = o.get(key, list)
    if not all(isinstance(x, str) for x in items):
        raise _Bad(f"field {key!r} must be a list of strings")
    return items


def _branch(o: _Obj) -> Branch:
    return Branch(
        session_id="",
        id=o.id("id"),
        display_name=o.text("display_name", 100),
        head_id=o.ref("head"),
        fork_point_id=o.ref("fork_point"),
        message_count=o.count("message_count"),
        create_time=o.time("create_time"),
        update_time=o.time("update_time"),
    )


def _message(o: _Obj, seen: Mapping[str, Message]) -> Message:
    message_id = o.id("id")
    if message_id in seen:
        raise _Bad(f"message {message_id} appears twice")
    parent_id = o.ref("parent")
    depth = o.count("depth")
    if parent_id is None:
        if depth != 0:
            raise _Bad("a message without a parent must have depth 0")
    elif parent_id not in seen:
        raise _Bad(f"parent {parent_id} is not an earlier message of the file")
    elif depth != seen[parent_id].depth + 1:
        raise _Bad("depth must be the parent's depth + 1")
    run_id = o.text("run_id", 36)
    if run_id and run_id != message_id and run_id not in seen:
        raise _Bad(f"run_id {run_id} is not a message of the file")
    calls = tuple(
        ToolCall(
            c.text("id", 64),
            c.text("name"),
            c.text("arguments"),
            c.enum("kind", ToolKind),
            c.get("require_approval", bool),
        )
        for c in (_Obj(x) for x in _objects(o, "tool_calls"))
    )
    return Message(
        id=message_id,
        session_id="",
        parent_id=parent_id,
        depth=depth,
        role=o.enum("role", Role),
        text=o.text("text"),
        status=o.enum("status", MessageStatus),
        stop_reason=o.enum("stop_reason", StopReason),
        model=o.text("model", 200),
        input_tokens=o.count("input_tokens"),
        output_tokens=o.count("output_tokens"),
        create_time=o.time("create_time"),
        transcript_language=o.text("transcript_language", 16),
        audio_duration_s=o.seconds("audio_duration_s"),
        request_id=o.text("request_id", 128),
        time_to_first_token_s=o.seconds("time_to_first_token_s"),
        error_message=o.text("error_message"),
        speech_duration_s=o.seconds("speech_duration_s"),
        tool_calls=calls,
        tool_call_id=o.text("tool_call_id", 64),
        is_error=o.get("is_error", bool),
        run_id=run_id,
        time_to_first_audio_s=o.seconds("time_to_first_audio_s"),
        generation_duration_s=o.seconds("generation_duration_s"),
        transcription_duration_s=o.seconds("transcription_duration_s"),
        voice_to_voice_latency_s=o.seconds("voice_to_voice_latency_s"),
        citations=tuple(_citation(_Obj(c)) for c in _objects(o, "citations", optional=True)),
    )


def _citation(o: _Obj) -> Citation:
    """One cited span; ``start_index``/``end_index`` are kept as the provider gave them."""
    sources = tuple(
        CitationSource(s.text("text"), s.text("location"), s.text("location_type"), _metadata(s))
        for s in (_Obj(x) for x in _objects(o, "sources"))
    )
    return Citation(o.text("text"), o.count("start_index"), o.count("end_index"), sources)


def _metadata(o: _Obj) -> dict[str, str]:
    value: dict[str, Any] = o.get("metadata", dict)
    if not all(isinstance(v, str) for v in value.values()):
        raise _Bad("field 'metadata' must map strings to strings")
    return dict(value)


def _header(o: _Obj) -> None:
    if o.raw.get("type") != EXPORT_TYPE:
        raise _Bad(f"not a Parley export: the first line's type must be {EXPORT_TYPE!r}")
    if o.raw.get("version") != EXPORT_VERSION:
        raise _Bad(
            f"unsupported version {o.raw.get('version')!r}; this server reads version {EXPORT_VERSION}"
        )


def parse_export(data: bytes) -> ParsedExport:
    """Read and check a whole export file (see the module docstring for the layout).

    Raises ``InvalidArgument`` (``INVALID_EXPORT``; message ``line N: ...``, a BadRequest
    violation on ``data`` and metadata ``line``) at the first problem: bytes that are not UTF-8,
    a line that is not a JSON object, lines out of order, a missing or mistyped field, a parent
    or branch head that is not a message of the file, counts that do not match the ``end`` line.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_line(data.count(b"\n", 0, exc.start) + 1, "not UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise _bad_line(1, "the file is empty")
    state = _Reader()
    for number, raw_line in enumerate(lines, start=1):
        try:
            try:
                raw = json.loads(raw_line)
            except json.JSONDecodeError as exc:
                raise _Bad(f"not JSON ({exc.msg})") from None
            if not isinstance(raw, dict):
                raise _Bad("not a JSON object")
            state.take(number, _Obj(raw))
        except _Bad as exc:
            raise _bad_line(number, str(exc)) from None
    try:
        return state.finish()
    except _Bad as exc:
        raise _bad_line(exc.line or len(lines), str(exc)) from None


class _Reader:
    """The line-order state machine of :func:`parse_export`."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.agent: Agent | None = None
        self.branches: dict[str, Branch] = {}
        self.branch_lines: dict[str, int] = {}
        self.request_ids: set[str] = set()
        self.messages: dict[str, Message] = {}
        self.ended = False

    def take(self, number: int, o: _Obj) -> None:
        kind = o.raw.get("type")
        if number == 1:
            _header(o)
            return
        if self.ended:
            raise _Bad("a line after the end line")
        expected = "session" if self.session is None else "agent" if self.agent is None else None
        if expected is not None and kind != expected:
            raise _Bad(f"expected the {expected} line, got type {kind!r}")
        if kind == "session":
            self.session = _session(o)
        elif kind == "agent":
            self.agent = _agent(o)
        elif kind == "branch":
            if self.messages:
                raise _Bad("branch lines must come before the messages")
            branch = _branch(o)
            if branch.id in self.branches:
                raise _Bad(f"branch {branch.id} appears twice")
            self.branches[branch.id] = branch
            self.branch_lines[branch.id] = number
        elif kind == "message":
            message = _message(o, self.messages)
            if message.request_id:
                if message.request_id in self.request_ids:
                    raise _Bad(f"request_id {message.request_id!r} appears twice")
                self.request_ids.add(message.request_id)
            self.messages[message.id] = message
        elif kind == "end":
            if o.count("branches") != len(self.branches) or o.count("messages") != len(self.messages):
                raise _Bad(
                    f"the end line counts {o.raw.get('branches')} branches and {o.raw.get('messages')} "
                    f"messages; the file has {len(self.branches)} and {len(self.messages)}"
                )
            self.ended = True
        else:
            raise _Bad(f"unknown line type {kind!r}")

    def finish(self) -> ParsedExport:
        if not self.ended:
            raise _Bad("the file ends without its end line (truncated?)")
        assert self.session is not None and self.agent is not None
        if self.session.active_branch_id not in self.branches:
            raise _Bad(f"the active branch {self.session.active_branch_id} is not a branch of the file", 2)
        for branch in self.branches.values():
            at = self.branch_lines[branch.id]
            for ref in (branch.head_id, branch.fork_point_id):
                if ref is not None and ref not in self.messages:
                    raise _Bad(f"branch {branch.id} points at {ref}, which is not a message of the file", at)
            expected = 0 if branch.head_id is None else self.messages[branch.head_id].depth + 1
            if branch.message_count != expected:
                raise _Bad(f"branch {branch.id} has message_count {branch.message_count}, not {expected}", at)
        return ParsedExport(
            self.session, self.agent, list(self.branches.values()), list(self.messages.values())
        )
