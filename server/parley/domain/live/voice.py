"""Opening a live conversation: check its config, read its target, build its parts."""

from __future__ import annotations

from dataclasses import dataclass

from parley.audio.encode import OutputFormat
from parley.audio.frames import InputFormat
from parley.domain.accounts import Principal
from parley.domain.chat import ChatEngine
from parley.domain.live.conversation import Conversation
from parley.domain.live.listener import Listener, ListenerSettings
from parley.domain.voice import Speech
from parley.runs.manager import RunManager
from parley.storage.messages import MessageStore

__all__ = ["LiveConfig", "LiveVoice"]


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """A Converse stream's ``config``: the session (id) and branch (name, ``""``: the active
    one) its turns go to, the encodings in and out, and the language hint (``""``: detect)."""

    session_id: str
    branch: str = ""
    input_format: InputFormat = "pcm16"
    output_format: OutputFormat = "pcm16"
    language: str = ""


class LiveVoice:
    """Live conversations (ChatService.Converse); one per server."""

    def __init__(
        self,
        chat: ChatEngine,
        speech: Speech,
        runs: RunManager,
        messages: MessageStore,
        settings: ListenerSettings,
    ) -> None:
        self._chat = chat
        self._speech = speech
        self._runs = runs
        self._messages = messages
        self._settings = settings

    async def open(self, principal: Principal, config: LiveConfig) -> Conversation:
        """A conversation on ``config``'s session and branch. Raises ``InvalidArgument``
        (UNSUPPORTED_LANGUAGE) for a hint the server does not take, ``NotFound`` for a session
        or branch that is absent or another user's."""
        self._speech.validate_language(config.language)
        target = await self._chat.target(principal.user_id, config.session_id, config.branch)
        return Conversation(
            self._speech,
            self._runs,
            self._messages,
            principal,
            target,
            Listener(config.input_format, self._settings),
            language=config.language,
            output_format=config.output_format,
        )
