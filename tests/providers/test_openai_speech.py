"""The OpenAI speech providers with the real SDK over real HTTP.

No hosted endpoint is reachable from the test machines, so the peer is a small local stand-in
that speaks the two endpoints' wire format (multipart upload in, JSON out; JSON in, raw PCM out)
and answers with the status codes the error mapping must handle.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import numpy as np
import pytest
from openai import AsyncOpenAI
from parley.audio.decode import DecodedAudio
from parley.domain.errors import InvalidArgument, ParleyError, ResourceExhausted, Unavailable
from parley.providers.stt.base import SpeechToText, Transcription
from parley.providers.stt.openai import OpenAISpeechToText
from parley.providers.tts.base import SynthesizedAudio, TextToSpeech
from parley.providers.tts.openai import OpenAITextToSpeech

#: The model name picks the stand-in's answer: "status-429" → HTTP 429, and so on.
STATUS_MODEL = re.compile(r"status-(\d{3})")


class StandIn(BaseHTTPRequestHandler):
    requests: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.requests.append((self.path, body))
        if self.path.endswith("/audio/speech"):
            model = json.loads(body)["model"]
        else:
            found = re.search(rb'name="model"\r\n\r\n([^\r]*)', body)
            model = found.group(1).decode() if found else ""
        if status := STATUS_MODEL.fullmatch(model):
            self._send(
                int(status.group(1)), b'{"error": {"message": "no", "type": "test"}}', "application/json"
            )
        elif self.path.endswith("/audio/speech"):
            pcm = (np.sin(np.arange(24000) / 5) * 8000).astype("<i2").tobytes()
            self._send(200, pcm, "audio/pcm")
        elif b'name="response_format"\r\n\r\nverbose_json' in body:
            answer = {"text": " Marhaba. ", "language": "arabic", "duration": 1.0, "task": "transcribe"}
            self._send(200, json.dumps(answer).encode(), "application/json")
        else:
            self._send(200, b'{"text": " Hello there. "}', "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


AUDIO = DecodedAudio(samples=(np.sin(np.arange(16000) / 3) * 0.3).astype(np.float32), sample_rate_hz=16000)


async def transcribe(base_url: str, model: str, language: str | None) -> Transcription:
    client = AsyncOpenAI(api_key="test-key", base_url=base_url, max_retries=0)
    stt: SpeechToText = OpenAISpeechToText(client, model=model, owns_client=True)
    try:
        return await stt.transcribe(AUDIO, language=language)
    finally:
        await stt.aclose()


async def synthesize(base_url: str, model: str) -> SynthesizedAudio:
    client = AsyncOpenAI(api_key="test-key", base_url=base_url, max_retries=0)
    tts: TextToSpeech = OpenAITextToSpeech(client, model=model, owns_client=True)
    try:
        return await tts.synthesize("Hello.", language="en", voice=None)
    finally:
        await tts.aclose()


async def test_transcription_sends_wav_and_reads_the_text(base_url: str) -> None:
    StandIn.requests.clear()
    result = await transcribe(base_url, "gpt-4o-mini-transcribe", "en-GB")
    assert (result.text, result.language, result.duration_s) == ("Hello there.", "en", 1.0)
    path, body = StandIn.requests[-1]
    assert path == "/v1/audio/transcriptions"
    assert b"RIFF" in body and b"WAVE" in body
    assert b'name="language"\r\n\r\nen\r\n' in body


async def test_whisper_1_reports_the_detected_language(base_url: str) -> None:
    result = await transcribe(base_url, "whisper-1", None)
    assert (result.text, result.language) == ("Marhaba.", "ar")


async def test_speech_is_24k_pcm(base_url: str) -> None:
    audio = await synthesize(base_url, "gpt-4o-mini-tts")
    assert audio.sample_rate_hz == 24000
    assert audio.samples.shape == (24000,)
    assert 0.2 < float(np.max(np.abs(audio.samples))) <= 1.0


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (429, ResourceExhausted, "PROVIDER_RATE_LIMITED"),
        (503, Unavailable, "PROVIDER_UNAVAILABLE"),
        (500, Unavailable, "PROVIDER_UNAVAILABLE"),
        (400, InvalidArgument, "PROVIDER_REJECTED_INPUT"),
        (401, Unavailable, "PROVIDER_ERROR"),
    ],
)
@pytest.mark.parametrize("call", ["stt", "tts"])
async def test_http_errors_are_mapped(
    base_url: str, call: str, status: int, error: type[ParleyError], reason: str
) -> None:
    with pytest.raises(error) as caught:
        if call == "stt":
            await transcribe(base_url, f"status-{status}", None)
        else:
            await synthesize(base_url, f"status-{status}")
    assert caught.value.reason == reason
    assert caught.value.metadata == {"provider": "openai", "status": str(status)}


@pytest.mark.parametrize("call", ["stt", "tts"])
async def test_unreachable_provider_is_unavailable(closed_port_url: str, call: str) -> None:
    with pytest.raises(Unavailable) as caught:
        if call == "stt":
            await transcribe(closed_port_url, "whisper-1", None)
        else:
            await synthesize(closed_port_url, "tts-1")
    assert caught.value.reason == "PROVIDER_UNAVAILABLE"
    assert caught.value.metadata == {"provider": "openai"}
