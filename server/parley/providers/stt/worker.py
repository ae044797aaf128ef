"""Whisper's worker: faster-whisper in a process of its own, below the server's priority.

:class:`WhisperWorker` starts it with :func:`~parley.providers.priority.start_background` (its
priority lowered before NumPy starts threads) in a session of its own (its own scheduling group,
priority.py). They talk over the worker's standard input and output in frames: a 4-byte
big-endian length, then a MessagePack map (msgspec). The server sends::

    {"op": "load", "id": 0, "model_dir": str, "cpu_threads": int, "beam_size": int,
     "compute_type": str, "vad_filter": bool, "detect_languages": [str]}       (first, once)
    {"op": "transcribe", "id": int, "samples": bytes, "language": str | None}
    {"op": "cancel", "id": int}                                                  (no answer)

``samples`` is 16 kHz mono float32 PCM in native byte order. Each ``load`` and ``transcribe``
gets one answer with its ``id``: ``{"supported": [str]}`` (the languages Whisper knows), or
``{"text": str, "language": str}``, or ``{"error": str, "kind": "unavailable" | "value"}``. A
cancel stops its transcription after the current 30 s window. The worker runs one job at a time,
in order, and exits when its standard input closes (the server closed it, or exited however it
did: the worker never outlives it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import queue
import signal
import struct
import sys
import threading
import time
from typing import IO, Any

import msgspec

from parley.audio.decode import WHISPER_SAMPLE_RATE_HZ
from parley.providers.priority import start_background, stop_background

__all__ = ["WhisperWorker", "WorkerFailed", "main"]

_log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
#: The longest frame either side accepts (bytes): 10 minutes of 16 kHz float32 PCM, with room.
MAX_FRAME_BYTES = 64 * 1024 * 1024
#: The longest wait for the worker to load Whisper base (s): 0.6-2.5 s on a busy 2-core machine.
LOAD_TIMEOUT_S = 120.0
#: The longest wait for the worker to exit after its standard input closes (s), before SIGKILL.
STOP_TIMEOUT_S = 5.0

#: Cap on tokens decoded per 30 s window: ``_TOKENS_BASE + _TOKENS_PER_SECOND * duration``, at most
#: Whisper's own 224. Fast speech is ~3 words/s, i.e. under 10 tokens/s even in Arabic, so the cap
#: never cuts real speech, but it bounds a hallucination loop (a 1 s clip decoded as a foreign
#: language can otherwise run 6 temperature fallbacks x 224 tokens: 40 s on 2 cores).
_TOKENS_BASE = 16
_TOKENS_PER_SECOND = 15
_MAX_TOKENS_PER_WINDOW = 224

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class WorkerFailed(Exception):
    """The worker answered ``{"error"}`` (``kind``: ``unavailable`` or ``value``), or exited."""

    def __init__(self, message: str, kind: str = "unavailable") -> None:
        super().__init__(message)
        self.kind = kind


class WhisperWorker:
    """The server's handle on a running worker process (see the module docstring)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read_answers())
        self.supported: frozenset[str] = frozenset()

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.returncode is None and not self._reader.done()

    @classmethod
    async def start(cls, config: dict[str, Any]) -> WhisperWorker:
        """Start a worker and load the model with ``config`` (the ``load`` frame's fields).

        Raises:
            WorkerFailed: the model could not be loaded (``kind`` ``value``: a bad
                ``detect_languages``), or the worker exited or took over ``LOAD_TIMEOUT_S``.
        """
        process = await start_background(__name__)
        worker = cls(process)
        try:
            answer = await asyncio.wait_for(worker._ask({"op": "load", "id": 0, **config}, 0), LOAD_TIMEOUT_S)
        except BaseException as exc:
            await worker.stop()
            if isinstance(exc, TimeoutError):
                raise WorkerFailed(
                    f"Whisper's worker did not load the model in {LOAD_TIMEOUT_S:g} s"
                ) from exc
            raise
        worker.supported = frozenset(answer["supported"])
        return worker

    async def transcribe(self, samples: bytes, language: str | None) -> tuple[str, str]:
        """(text, language used or detected) of ``samples`` (the module docstring's PCM).
        Cancelled, it tells the worker to stop after the current 30 s window.

        Raises:
            WorkerFailed: the worker failed the job or exited.
        """
        job = next(self._ids)
        try:
            answer = await self._ask(
                {"op": "transcribe", "id": job, "samples": samples, "language": language}, job
            )
        except asyncio.CancelledError:
            with contextlib.suppress(OSError, RuntimeError):
                self._send({"op": "cancel", "id": job})
            raise
        return str(answer["text"]), str(answer["language"])

    async def _ask(self, message: dict[str, Any], job: int) -> dict[str, Any]:
        if not self.alive:
            raise WorkerFailed("Whisper's worker has exited")
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[job] = answer
        try:
            self._send(message)
            reply = await answer
        finally:
            self._waiting.pop(job, None)
        if "error" in reply:
            raise WorkerFailed(str(reply["error"]), str(reply.get("kind", "unavailable")))
        return reply

    def _send(self, message: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        body = _encode(message)
        self._process.stdin.write(_HEADER.pack(len(body)) + body)

    async def _read_answers(self) -> None:
        """Hand each answer to its waiter, until the worker's output ends; then fail the rest."""
        stdout = self._process.stdout
        assert stdout is not None
        try:
            while True:
                (size,) = _HEADER.unpack(await stdout.readexactly(_HEADER.size))
                if size > MAX_FRAME_BYTES:
                    raise ValueError(f"a frame of {size} bytes")
                reply = _decode(await stdout.readexactly(size))
                waiter = self._waiting.get(reply.get("id"))
                if waiter is not None and not waiter.done():
                    waiter.set_result(reply)
        except (asyncio.IncompleteReadError, ValueError, msgspec.DecodeError) as exc:
            failure = WorkerFailed(f"Whisper's worker exited ({exc.__class__.__name__})")
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(failure)

    async def stop(self) -> None:
        """Close the worker's standard input (it exits), wait ``STOP_TIMEOUT_S``, then kill it."""
        await stop_background(self._process, STOP_TIMEOUT_S)
        await self._reader


# --- the worker process -----------------------------------------------------------------------


def _read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size) if size <= MAX_FRAME_BYTES else b""
    if len(body) < size or size > MAX_FRAME_BYTES:
        return None
    message: dict[str, Any] = _decode(body)
    return message


class _Jobs:
    """What the worker's reader thread hands its main thread: jobs in order, cancels at once."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self.cancel = threading.Event()  # the running job's
        self.running: int | None = None
        self.cancelled: set[int] = set()  # jobs cancelled before they ran
        self.lock = threading.Lock()

    def read(self, stream: IO[bytes]) -> None:
        while (message := _read_frame(stream)) is not None:
            if message.get("op") == "cancel":
                with self.lock:
                    if message.get("id") == self.running:
                        self.cancel.set()
                    else:
                        self.cancelled.add(int(message.get("id", -1)))
            else:
                self.queue.put(message)
        self.cancel.set()
        self.queue.put(None)  # standard input closed: exit

    def begin(self, job: int) -> bool:
        """Mark ``job`` running; False if it was cancelled before it started."""
        with self.lock:
            if job in self.cancelled:
                self.cancelled.discard(job)
                return False
            self.running = job
            self.cancel.clear()
            return True


def main() -> int:
    """The worker process (see the module docstring); its exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C is the server's to handle
    out = sys.stdout.buffer
    jobs = _Jobs()
    threading.Thread(target=jobs.read, args=(sys.stdin.buffer,), name="frames", daemon=True).start()
    transcriber: _Transcriber | None = None
    while (message := jobs.queue.get()) is not None:
        job = int(message.get("id", 0))
        reply: dict[str, Any]
        try:
            if message["op"] == "load":
                transcriber = _Transcriber(message)
                reply = {"supported": sorted(transcriber.supported)}
            elif transcriber is None:
                reply = {"error": "no model loaded", "kind": "unavailable"}
            elif not jobs.begin(job):
                reply = {"error": "cancelled", "kind": "unavailable"}
            else:
                text, language = transcriber.transcribe(
                    message["samples"], message.get("language"), jobs.cancel
                )
                reply = {"text": text, "language": language}
        except ValueError as exc:
            reply = {"error": str(exc), "kind": "value"}
        except Exception as exc:  # reported to the server, which raises Unavailable
            reply = {"error": f"{type(exc).__name__}: {exc}", "kind": "unavailable"}
        body = _encode({"id": job, **reply})
        out.write(_HEADER.pack(len(body)) + body)
        out.flush()
    return 0


class _Transcriber:
    """faster-whisper's model and the options of the ``load`` frame."""

    def __init__(self, config: dict[str, Any]) -> None:
        import numpy as np
        from faster_whisper import WhisperModel

        started = time.monotonic()
        try:
            self.model = WhisperModel(
                config["model_dir"],
                device="cpu",
                compute_type=config["compute_type"],
                cpu_threads=config["cpu_threads"],
                num_workers=1,
            )
        except (OSError, RuntimeError) as exc:
            raise RuntimeError(f"cannot load the Whisper model from {config['model_dir']}: {exc}") from exc
        self.supported = frozenset(self.model.supported_languages)
        self.detect_languages = tuple(config["detect_languages"])
        unknown = [code for code in self.detect_languages if code not in self.supported]
        if unknown:
            raise ValueError(f"detect_languages has codes Whisper does not know: {unknown}")
        self.beam_size = int(config["beam_size"])
        self.vad_filter = bool(config["vad_filter"])
        if self.vad_filter:  # faster-whisper loads its Silero VAD (onnxruntime) on first use
            _speech_only(np.zeros(WHISPER_SAMPLE_RATE_HZ, dtype=np.float32))
        _log.info("loaded Whisper base from %s in %.1f s", config["model_dir"], time.monotonic() - started)

    def transcribe(self, pcm: bytes, language: str | None, cancel: threading.Event) -> tuple[str, str]:
        """(text, language used or detected) of ``pcm``; stops between 30 s windows on ``cancel``."""
        import numpy as np

        from parley.providers.stt import short_form

        samples = np.frombuffer(pcm, dtype=np.float32)
        model = self.model
        # Only a clip short as recorded is trimmed here: a longer one goes to the full pass, whose
        # own vad_filter trims it, so the VAD never runs twice over the same audio.
        speech = None
        if short_form.fits(samples):
            speech = _speech_only(samples) if self.vad_filter else samples
        if speech is not None:
            heard = short_form.transcribe_short(
                model,
                speech,
                language=language,
                allowed=self.detect_languages,
                beam_size=self.beam_size,
                max_new_tokens=_token_cap(speech.shape[0] / WHISPER_SAMPLE_RATE_HZ),
            )
            if heard is not None:
                return heard.text, heard.language
            _log.info("short-form transcription looped; transcribing again with the full 30 s window")
        if language is None and self.detect_languages:
            _, _, probabilities = model.detect_language(samples)
            allowed = [(code, p) for code, p in probabilities if code in self.detect_languages]
            language = max(allowed, key=lambda item: item[1])[0]
        segments, info = model.transcribe(
            samples,
            language=language,
            max_new_tokens=_token_cap(samples.shape[0] / WHISPER_SAMPLE_RATE_HZ),
            task="transcribe",
            beam_size=self.beam_size,
            condition_on_previous_text=False,  # fewer repetition loops on short clips
            without_timestamps=True,
            vad_filter=self.vad_filter,
        )
        texts: list[str] = []
        for segment in segments:  # decoding happens lazily, one 30 s window per step
            if cancel.is_set():
                break
            texts.append(segment.text)
        return "".join(texts).strip(), str(info.language)


def _token_cap(duration_s: float) -> int:
    return min(_MAX_TOKENS_PER_WINDOW, _TOKENS_BASE + math.ceil(_TOKENS_PER_SECOND * duration_s))


def _speech_only(samples: Any) -> Any:
    """The voiced parts of ``samples`` (faster-whisper's Silero VAD, as its ``vad_filter``), or
    None when there are none (the full pass then handles the silence as it always has)."""
    import numpy as np
    from faster_whisper.vad import collect_chunks, get_speech_timestamps

    chunks = get_speech_timestamps(samples)
    if not chunks:
        return None
    pieces, _ = collect_chunks(samples, chunks)
    return np.concatenate(pieces).astype(np.float32, copy=False)


if __name__ == "__main__":
    sys.exit(main())
