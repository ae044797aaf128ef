"""The latency of a turn, in process: what each duration on a message covers (docs/api.md,
"Message"). Scripted provider, real storage, real espeak-ng speech. Only orderings of durations
are asserted, never how long anything took."""

from __future__ import annotations

import shutil

import pytest
from parley.domain.drafts import Spoken
from parley.domain.models import MessageStatus, StopReason, ToolKind, ToolSpec
from parley.domain.voice import SpokenReply
from parley.providers.tts.espeak import EspeakTextToSpeech
from parley.runs.events import Accepted, ActionRequired, AudioReady, Completed, ToolInputs, TranscriptReady
from parley.runs.manager import RunBody

from tests.support.scripted import Domain, Script, collect, first

CLOCK = ToolSpec("get_time", "The current time.", {"type": "object", "properties": {}}, ToolKind.CLIENT)


async def test_a_text_reply_has_its_first_token_and_generation_durations(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["One", " two", " three."], delay_s=0.01))
    events = await collect(await domain.send(session, "Count"))
    completed = events[-1].event
    assert isinstance(completed, Completed)
    reply = completed.message
    assert reply.time_to_first_token_s is not None and reply.generation_duration_s is not None
    # The run started before the model call and ended after its last delta.
    assert reply.generation_duration_s >= reply.time_to_first_token_s > 0
    assert reply.time_to_first_audio_s is None  # not a voice reply
    assert await domain.messages.get(session.id, reply.id) == reply
    accepted = events[0].event
    assert isinstance(accepted, Accepted) and accepted.user_message.transcription_duration_s is None


async def test_a_reply_cut_short_keeps_its_generation_duration(domain: Domain) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["Once", " upon", " a", " time"], hang_at=2))
    subscription = await domain.send(session, "Tell me", background=True)
    head, _ = await first(subscription, 3)
    accepted = head[0].event
    assert isinstance(accepted, Accepted)
    # While it is generated it has no generation duration (checkpoints do not write one).
    live = await domain.messages.get(session.id, accepted.assistant_message_id)
    assert live is not None and live.status is MessageStatus.IN_PROGRESS
    assert live.generation_duration_s is None
    await subscription.aclose()
    assert await domain.runs.cancel(accepted.assistant_message_id)
    stored = await domain.messages.get(session.id, accepted.assistant_message_id)
    assert stored is not None and stored.stop_reason is StopReason.CANCELLED
    assert stored.generation_duration_s is not None and stored.time_to_first_token_s is not None
    assert stored.generation_duration_s >= stored.time_to_first_token_s


async def test_a_tool_turn_measures_the_whole_run_on_its_final_message(domain: Domain) -> None:
    session = await domain.new_session(tools=[CLOCK])
    domain.provider.play(Script(["Let me check."], calls=[("get_time", "{}")]), Script(["It is noon."]))
    paused = await collect(await domain.send(session, "What time is it?"))
    waiting = paused[-1].event
    assert isinstance(waiting, ActionRequired)
    inputs = ToolInputs({waiting.tool_outputs[0].id: ('{"time": "12:00"}', False)}, {})
    rest = await collect(
        await domain.replies.submit(session.owner_id, session.id, waiting.message_id, inputs, deadline=None)
    )
    final = rest[-1].event
    assert isinstance(final, Completed)
    step = await domain.messages.get(session.id, waiting.message_id)
    assert step is not None and step.generation_duration_s is None  # a step, not the run's reply
    assert step.time_to_first_token_s is not None
    reply = final.message
    assert reply.generation_duration_s is not None and reply.time_to_first_token_s is not None
    # From the start of the run: the first step, the wait for the client, the second step.
    assert reply.generation_duration_s >= step.time_to_first_token_s + reply.time_to_first_token_s
    assert await domain.messages.get(session.id, reply.id) == reply


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
async def test_a_spoken_reply_has_its_first_audio_and_the_user_message_its_transcription(
    domain: Domain,
) -> None:
    session = await domain.new_session()
    domain.provider.play(Script(["Paris is the capital.", " It is in France."], delay_s=0.01))
    target = await domain.chat.target(session.owner_id, session.id)
    transcript = TranscriptReady("What is the capital of France?", "en", 1.5)

    def spoken(text: RunBody) -> SpokenReply:
        return SpokenReply(
            text, transcript, EspeakTextToSpeech(), output_format="mp3", language="en", voice=None
        )

    subscription = await domain.chat.send_to(
        domain.principal(session.owner_id),
        target,
        transcript.text,
        spoken=Spoken("en", 1.5, 0.25),
        body=spoken,
    )
    events = await collect(subscription)
    accepted = events[0].event
    assert isinstance(accepted, Accepted)
    assert accepted.user_message.transcription_duration_s == 0.25
    assert any(isinstance(e.event, AudioReady) for e in events)
    completed = events[-1].event
    assert isinstance(completed, Completed)
    reply = completed.message
    assert reply.time_to_first_audio_s is not None and reply.generation_duration_s is not None
    assert reply.time_to_first_token_s is not None
    # The first audio is a sentence synthesized after the first token; the run ends after it.
    assert reply.generation_duration_s >= reply.time_to_first_audio_s > reply.time_to_first_token_s
    assert await domain.messages.get(session.id, reply.id) == reply
    user = await domain.messages.get(session.id, accepted.user_message.id)
    assert user is not None and user.transcription_duration_s == 0.25
