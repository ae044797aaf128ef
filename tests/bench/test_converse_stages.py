"""The converse phase's arithmetic (``bench/converse.py``): the stages of a turn from the arrival
times of its events, and the voice target's row. In process, no server: the phase itself runs in
``make bench`` (``python bench/run.py --only converse``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from parley_proto.v1 import chat_service_pb2 as pb
from parley_proto.v1 import common_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import converse
import targets


def _delta(text: str) -> pb.ConverseEvent:
    return pb.ConverseEvent(chat_event=pb.ChatEvent(text_delta=pb.TextDelta(text=text)))


def _audio(text: str) -> pb.ConverseEvent:
    return pb.ConverseEvent(
        chat_event=pb.ChatEvent(audio_chunk=common_pb2.AudioChunk(data=b"\0\0", text=text))
    )


def test_the_stages_follow_the_events_of_a_turn() -> None:
    arrivals = [
        (10.0, pb.ConverseEvent(speech_started=pb.SpeechStarted())),
        (10.6, pb.ConverseEvent(speech_stopped=pb.SpeechStopped())),
        (10.7, pb.ConverseEvent(transcript=pb.Transcript(text="Hi?"))),
        (11.0, _delta("Hello")),
        (11.1, _delta(" there.")),  # the first sentence is whole here
        (11.2, _delta(" How")),
        (11.25, _audio("Hello there.")),
        (11.5, _audio(" How are you?")),
    ]
    stages = converse._stages(10.1, arrivals)
    expected = {"vad_tail_ms": 500.0, "transcription_ms": 100.0, "first_token_ms": 300.0,
                "first_sentence_ms": 100.0, "speech_ms": 150.0, "total_ms": 1150.0}  # fmt: skip
    assert stages == pytest.approx(expected)


def test_a_turn_without_audio_has_no_total() -> None:
    arrivals = [(1.0, pb.ConverseEvent(speech_stopped=pb.SpeechStopped())), (1.2, _delta("Hi"))]
    stages = converse._stages(0.5, arrivals)
    assert stages["total_ms"] is None and stages["speech_ms"] is None
    assert stages["vad_tail_ms"] == pytest.approx(500.0)


def test_the_voice_target_is_the_median_of_the_english_turns() -> None:
    turns = [{"turn": t, "language": "en"} for t in ("warm-up", "1", "2")]
    median = {"vad_tail_ms": 600.0, "transcription_ms": 100.0, "total_ms": 1800.0, "server_ms": 1700.0}
    results = {"converse": {"turns": turns, "target_s": 1.5, "median_en": median}}
    row = next(r for r in targets.evaluate(results) if r["id"] == "voice")
    assert row["pass"] is False and row["ratio"] == pytest.approx(1.2)
    assert "over 2 turns" in row["measured"]
    missing = next(r for r in targets.evaluate({}) if r["id"] == "voice")
    assert missing["pass"] is None
