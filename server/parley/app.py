"""``serve()``: the one owner of the process's resources.

Builds the database engine, message store, model providers and services once, registers the
servicers with health and reflection, serves until SIGTERM/SIGINT, then shuts down gracefully:
health goes NOT_SERVING, new calls are refused, in-flight calls and runs get
``shutdown_grace_seconds`` to finish, and replies still being generated after that are stored
INCOMPLETE (stop reason SHUTDOWN) before the engine is disposed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from openai import AsyncOpenAI
from parley_proto.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    agent_service_pb2,
    agent_service_pb2_grpc,
    auth_service_pb2,
    auth_service_pb2_grpc,
    branch_service_pb2,
    branch_service_pb2_grpc,
    chat_service_pb2,
    chat_service_pb2_grpc,
    session_service_pb2,
    session_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
)

from parley.api.admin import AdminServicer
from parley.api.agents import AgentServicer
from parley.api.auth import AuthServicer
from parley.api.branches import BranchServicer
from parley.api.chat import ChatServicer
from parley.api.interceptors import RequestHandlers
from parley.api.sessions import SessionServicer
from parley.api.usage import UsageServicer
from parley.audio.turns import TurnSettings
from parley.auth.interceptor import Authenticator
from parley.auth.passwords import Passwords
from parley.auth.secret import install_secret
from parley.auth.tokens import Tokens
from parley.config import Settings
from parley.domain.accounts import Accounts
from parley.domain.admin import Admin
from parley.domain.agents import Agents
from parley.domain.archive import IdleArchiver, SessionArchive
from parley.domain.branches import Branches
from parley.domain.chat import ChatEngine, ChatLimits, ToolSettings
from parley.domain.export import SessionTransfer
from parley.domain.leaving import LeavingUser
from parley.domain.live.listener import ListenerSettings
from parley.domain.live.voice import LiveVoice
from parley.domain.models import Agent, Quota
from parley.domain.replies import Replies
from parley.domain.sessions import Sessions
from parley.domain.settings import RuntimeSettings, ServerSettings
from parley.domain.summary import ContextSummarizer
from parley.domain.toolbox import Toolboxes
from parley.domain.usage import Usage
from parley.domain.voice import Speech
from parley.providers.llm.factory import build_model_registry
from parley.providers.llm.local import LocalLlamaProvider
from parley.providers.stt.base import SpeechToText
from parley.providers.stt.local import WhisperSpeechToText, ensure_whisper_model
from parley.providers.stt.openai import OpenAISpeechToText
from parley.providers.tts.base import TextToSpeech
from parley.providers.tts.espeak import EspeakTextToSpeech
from parley.providers.tts.openai import OpenAITextToSpeech
from parley.runs.manager import RunManager
from parley.runs.redis_admission import RedisAdmission
from parley.runs.shared import RedisWatch, Shared, SharedOptions, build_shared
from parley.runs.sweep import RunSweeper
from parley.storage.archive import archive_from_url
from parley.storage.content.base import ContentStore
from parley.storage.content.sql import SqlContentStore
from parley.storage.messages import MessageStore
from parley.storage.migrate import upgrade_database
from parley.storage.read_cache import ReadCache
from parley.storage.sql.agents import AgentStore
from parley.storage.sql.engine import Database
from parley.storage.sql.replicas import ReplicaStore
from parley.storage.sql.server_settings import ServerSettingsStore
from parley.storage.sql.sessions import SessionStore
from parley.storage.sql.usage import UsageStore
from parley.storage.sql.users import Caller, UserStore
from parley.storage.summaries import SummaryStore
from parley.storage.transfer import TransferStore
from parley.telemetry.setup import Telemetry
from parley.tools.http import HttpToolRunner
from parley.tools.mcp import McpTools
from parley.tools.ssrf import AddressGuard

__all__ = ["Application", "build_application", "serve"]

log = logging.getLogger("parley")

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in [
        (auth_service_pb2, "AuthService"),
        (agent_service_pb2, "AgentService"),
        (session_service_pb2, "SessionService"),
        (chat_service_pb2, "ChatService"),
        (branch_service_pb2, "BranchService"),
        (admin_service_pb2, "AdminService"),
        (usage_service_pb2, "UsageService"),
    ]
)


@dataclass
class Application:
    """A built, started server and what it owns."""

    settings: Settings
    server: grpc.aio.Server
    health: Any  # grpc_health.v1.health.aio.HealthServicer (the stubs lack the aio module)
    runs: RunManager
    port: int
    resources: AsyncExitStack
    telemetry: Telemetry | None = None

    async def stop(self) -> None:
        """Graceful shutdown (see the module docstring)."""
        grace = self.settings.shutdown_grace_seconds
        log.info("shutting down (grace %.1fs)", grace)
        await self.health.enter_graceful_shutdown()
        self.runs.shutting_down = True
        # Calls and runs get the same grace; runs still going then are stopped (SHUTDOWN) and
        # stored before the database goes away.
        await asyncio.gather(self.server.stop(grace), self.runs.shutdown(grace))
        await self.resources.aclose()
        log.info("stopped")


def _toolboxes(settings: Settings) -> Toolboxes:
    """The HTTP and MCP clients of agents' tools, behind one SSRF guard."""
    guard = AddressGuard(settings.tools_allowed_hosts)
    return Toolboxes(
        HttpToolRunner(
            guard,
            timeout_s=settings.tool_timeout_seconds,
            max_response_bytes=settings.tool_max_response_bytes,
        ),
        McpTools(guard, ttl_s=settings.mcp_tools_ttl_seconds, timeout_s=settings.tool_timeout_seconds),
    )


def _stores(db: Database, shared: Shared, cache_s: float) -> tuple[UserStore, AgentStore, SessionStore]:
    """The SQL stores; callers and agents behind read caches invalidated across replicas."""
    callers = ReadCache[Caller | None]("user", shared.invalidations, ttl_s=cache_s)
    agents = ReadCache[Agent | None]("agent", shared.invalidations, ttl_s=cache_s)
    return UserStore(db, callers), AgentStore(db, agents), SessionStore(db)


def _shared_options(settings: Settings) -> SharedOptions:
    return SharedOptions(
        settings.redis_url.get_secret_value() if settings.redis_url is not None else None,
        retention_s=settings.run_events_retention_seconds,
        max_bytes=settings.run_events_max_bytes,
        tool_wait_s=settings.tool_wait_seconds,
        lease_s=settings.run_lease_seconds,
        timeout_s=settings.redis_timeout_seconds,
        sqlite=settings.resolved_database_url.startswith("sqlite"),
    )


def _server_settings(settings: Settings) -> ServerSettings:
    """The run-time settings as the environment gives them (an admin's changes win)."""
    return ServerSettings(
        allow_registration=settings.allow_registration,
        default_quota=Quota(
            settings.quota_input_tokens_per_day,
            settings.quota_output_tokens_per_day,
            settings.quota_audio_seconds_per_day,
            settings.max_concurrent_replies_per_user,
        ),
    )


def _content_store(settings: Settings, db: Database, telemetry: Telemetry) -> ContentStore:
    if settings.mongodb_url is not None:
        from parley.storage.content.mongo import MongoContentStore

        return MongoContentStore(
            settings.mongodb_url.get_secret_value(),
            settings.mongodb_database,
            timeout_s=settings.mongodb_timeout_seconds,
            event_listeners=telemetry.mongo_listeners(),
        )
    return SqlContentStore(db)


async def _speech_providers(
    settings: Settings, resources: AsyncExitStack
) -> tuple[SpeechToText, TextToSpeech]:
    """Speech-to-text and text-to-speech per settings. The embedded Whisper model is joined into
    ``{data_dir}/models`` once, and loaded at start-up rather than on the first voice message.
    OpenAI speech in both directions shares one client (one connection pool)."""
    stt: SpeechToText
    tts: TextToSpeech
    client: AsyncOpenAI | None = None
    if "openai" in (settings.stt_provider, settings.tts_provider):
        if settings.openai_api_key is None:
            raise ValueError("PARLEY_STT_PROVIDER/PARLEY_TTS_PROVIDER=openai needs PARLEY_OPENAI_API_KEY")
        client = AsyncOpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            timeout=settings.provider_timeout_seconds,
            max_retries=settings.provider_max_retries,
        )
        resources.push_async_callback(client.close)
    if client is not None and settings.stt_provider == "openai":
        stt = OpenAISpeechToText(client, model=settings.openai_stt_model)
    else:
        model_dir = await asyncio.to_thread(ensure_whisper_model, settings.data_dir / "models")
        stt = WhisperSpeechToText(
            model_dir, cpu_threads=settings.whisper_threads, detect_languages=settings.speech_languages
        )
        # Load before serving: loading holds the GIL for ~0.2 s (measured by bench/: a 171 ms
        # event-loop stall on the first voice message when it was loaded on demand).
        await stt.load()
    if client is not None and settings.tts_provider == "openai":
        tts = OpenAITextToSpeech(
            client, model=settings.openai_tts_model, default_voice=settings.openai_tts_voice
        )
    else:
        tts = EspeakTextToSpeech()
    return stt, tts


def _listener_settings(settings: Settings) -> ListenerSettings:
    """Turn detection and input limits of live conversations (``PARLEY_CONVERSE_*``)."""
    return ListenerSettings(
        max_frame_bytes=settings.converse_max_frame_bytes,
        max_speed=settings.converse_max_speed,
        burst_s=settings.converse_burst_seconds,
        turns=TurnSettings(
            threshold=settings.converse_vad_threshold,
            silence_s=settings.converse_silence_seconds,
            max_turn_s=settings.converse_max_turn_seconds,
        ),
    )


async def build_application(settings: Settings) -> Application:
    """Build every part and start serving on ``settings.grpc_listen``."""
    resources = AsyncExitStack()
    try:
        telemetry = Telemetry.start(settings)  # first in, last out: spans of the shutdown are flushed
        resources.push_async_callback(telemetry.aclose)
        db = Database(settings.resolved_database_url, echo=settings.database_echo)  # creates a SQLite dir
        resources.push_async_callback(db.dispose)
        if settings.migrate_on_start:
            await asyncio.to_thread(upgrade_database, settings.resolved_database_url)
        # After the migrations: SQLAlchemy's instrumentation also wraps engines created later.
        telemetry.instrument_database(db.engine)
        runtime = RuntimeSettings(ServerSettingsStore(db), _server_settings(settings))
        await runtime.fresh()
        usage = UsageStore(db)
        shared = await build_shared(
            _shared_options(settings),
            resources,
            totals_since=usage.day_totals,
            default_quota=lambda: runtime.current().default_quota,
        )
        users, agent_store, session_store = _stores(db, shared, settings.read_cache_seconds)
        content = _content_store(settings, db, telemetry)
        resources.push_async_callback(content.close)
        await content.start()
        messages = MessageStore(db, content)
        sweeper = RunSweeper(ReplicaStore(db), messages, lease_s=settings.run_lease_seconds)
        await sweeper.start()
        resources.push_async_callback(sweeper.stop)
        runs = RunManager(
            messages,
            shared.log,
            checkpoint_interval_s=settings.run_checkpoint_seconds,
            signals=shared.signals,
        )
        await shared.signals.start(sweeper.replica_id, runs)
        quotas = shared.quotas
        leaving = LeavingUser(session_store, messages, runs, quotas)

        local = await LocalLlamaProvider.load(settings)
        models = build_model_registry(settings, local, local_model_id=local.model_id)
        resources.push_async_callback(models.close)
        models.resolve(settings.default_model, field="PARLEY_DEFAULT_MODEL")

        stt, tts = await _speech_providers(settings, resources)
        resources.push_async_callback(stt.aclose)
        resources.push_async_callback(tts.aclose)

        accounts = Accounts(
            users,
            Passwords(),
            Tokens(
                settings,
                settings.jwt_secret.get_secret_value()
                if settings.jwt_secret is not None
                else await asyncio.to_thread(install_secret, settings.data_dir),
            ),
            runtime,
            admin_usernames=settings.admin_usernames,
            leaving=leaving,
        )
        toolboxes = _toolboxes(settings)
        resources.push_async_callback(toolboxes.aclose)
        chat = ChatEngine(
            session_store,
            messages,
            models,
            runs,
            shared.admission,
            quotas,
            sweeper,
            tools=ToolSettings(toolboxes, settings.tools_max_steps, settings.tool_wait_seconds),
            limits=ChatLimits(
                max_message_chars=settings.max_message_chars,
                max_request_id_chars=settings.max_request_id_chars,
                default_max_output_tokens=settings.default_max_output_tokens,
            ),
            summarizer=ContextSummarizer(SummaryStore(db)) if settings.context_summary else None,
        )

        server = grpc.aio.server(
            interceptors=telemetry.server_interceptors() or None,
            options=[
                ("grpc.max_receive_message_length", settings.grpc_max_receive_bytes),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        speech = Speech(
            chat,
            stt,
            tts,
            max_audio_bytes=settings.max_audio_bytes,
            max_audio_seconds=settings.max_audio_seconds,
            languages=tuple(settings.speech_languages),
        )
        _add_servicers(
            server,
            RequestHandlers(Authenticator(accounts), metrics=telemetry.grpc_metrics),
            AuthServicer(accounts),
            AgentServicer(Agents(agent_store, messages, runs, models)),
            await _session_servicer(
                settings, resources, db, content, session_store, agent_store, messages, runs, leaving
            ),
            ChatServicer(
                chat,
                Replies(session_store, messages, runs, sweeper, shared.signals),
                speech,
                LiveVoice(chat, speech, runs, messages, _listener_settings(settings)),
            ),
            BranchServicer(Branches(session_store, messages, runs)),
            AdminServicer(Admin(users, runtime)),
            UsageServicer(Usage(usage, agent_store, session_store, messages)),
        )
        health_servicer = _add_health_and_reflection(server)
        port = server.add_insecure_port(settings.grpc_listen)
        await server.start()
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        if shared.redis is not None:
            await _watch_redis(shared, health_servicer, resources)
        log.info(
            "serving gRPC on %s (port %d, %s event loop)",
            settings.grpc_listen,
            port,
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        return Application(settings, server, health_servicer, runs, port, resources, telemetry)
    except BaseException:
        await resources.aclose()
        raise


async def _watch_redis(shared: Shared, health_servicer: Any, resources: AsyncExitStack) -> None:
    """While Redis does not answer, ChatService is NOT_SERVING and sends fail at once."""
    chat_service = chat_service_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name
    assert shared.redis is not None

    async def changed(up: bool) -> None:
        if isinstance(shared.admission, RedisAdmission):
            shared.admission.redis_up = up
        status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
        await health_servicer.set(chat_service, status)

    watch = RedisWatch(shared.redis, changed)
    await watch.start()
    resources.push_async_callback(watch.close)


async def _session_servicer(
    settings: Settings,
    resources: AsyncExitStack,
    db: Database,
    content: ContentStore,
    session_store: SessionStore,
    agent_store: AgentStore,
    messages: MessageStore,
    runs: RunManager,
    leaving: LeavingUser,
) -> SessionServicer:
    """SessionService with export, import and the archive; reads of an archived session's
    content restore it (``MessageStore.restore_with``); idle sessions are archived in the
    background when ``archive_idle_seconds`` is set."""
    transfer = TransferStore(db, content)
    exports = SessionTransfer(
        session_store, agent_store, messages, transfer, import_max_bytes=settings.import_max_bytes
    )
    archive = SessionArchive(
        session_store, messages, transfer, exports, archive_from_url(settings.archive_url, settings.data_dir)
    )
    messages.restore_with(archive.restore)
    leaving.forget_archives_with(archive.forget)
    if settings.archive_idle_seconds > 0:
        idle = IdleArchiver(
            archive, transfer, idle_s=settings.archive_idle_seconds, every_s=settings.archive_sweep_seconds
        )
        await idle.start()
        resources.push_async_callback(idle.stop)
    return SessionServicer(
        Sessions(session_store, agent_store, messages, runs, before_delete=archive.forget), exports, archive
    )


def _add_servicers(
    server: grpc.aio.Server,
    handlers: RequestHandlers,
    auth: AuthServicer,
    agents: AgentServicer,
    sessions: SessionServicer,
    chat: ChatServicer,
    branches: BranchServicer,
    admin: AdminServicer,
    usage: UsageServicer,
) -> None:
    handlers.add(auth_service_pb2_grpc.add_AuthServiceServicer_to_server, auth, server)
    handlers.add(agent_service_pb2_grpc.add_AgentServiceServicer_to_server, agents, server)
    handlers.add(session_service_pb2_grpc.add_SessionServiceServicer_to_server, sessions, server)
    handlers.add(chat_service_pb2_grpc.add_ChatServiceServicer_to_server, chat, server)
    handlers.add(branch_service_pb2_grpc.add_BranchServiceServicer_to_server, branches, server)
    handlers.add(admin_service_pb2_grpc.add_AdminServiceServicer_to_server, admin, server)
    handlers.add(usage_service_pb2_grpc.add_UsageServiceServicer_to_server, usage, server)


def _add_health_and_reflection(server: grpc.aio.Server) -> Any:
    """gRPC health (per service) and server reflection; returns the health servicer."""
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    return health_servicer


def freeze_start_up() -> None:
    """Move what start-up made out of the garbage collector's reach: modules, protobuf
    descriptors, SQLAlchemy metadata, the models' Python objects (about 270,000 objects in the
    embedded default) live as long as the process, and each full collection walked them all,
    45-80 ms with the event loop stopped (bench/, loop phase). Start-up's own garbage is collected
    first; what is frozen is never collected (``gc.freeze``, the Python docs' ``gc`` module)."""
    gc.collect()
    gc.freeze()


async def serve(settings: Settings | None = None) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    settings = settings or Settings()
    app = await build_application(settings)
    freeze_start_up()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await app.stop()
