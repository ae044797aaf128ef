"""Local text-to-speech with the ``espeak-ng`` program (Debian package ``espeak-ng``).

espeak-ng is a formant synthesizer: robotic but tiny, instant (≈20 ms per sentence) and
multilingual, which makes it the embedded default. Each call runs one
``espeak-ng -v VOICE -s WPM -b 1 --stdin --stdout`` child process: the text goes in on stdin
(never on the command line) as UTF-8, a 22.05 kHz 16-bit mono WAV comes out on stdout.
"""

from __future__ import annotations

import asyncio
import io
import re
import subprocess
import wave
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from parley.domain.errors import InvalidArgument, Reason, Unavailable
from parley.providers.priority import lower_process
from parley.providers.tts.base import SynthesizedAudio

__all__ = ["ESPEAK_VOICES", "EspeakTextToSpeech"]

_PROVIDER = "espeak"

#: Language (ISO 639-1) → espeak-ng voice. Other languages are passed through as the voice name
#: (espeak-ng knows ~100, e.g. "fr", "de"); ``espeak-ng --voices`` lists them.
ESPEAK_VOICES: Mapping[str, str] = MappingProxyType({"en": "en-us", "ar": "ar"})

#: A variant name as espeak-ng spells them (``f3``, ``m2``, ``klatt``, ``Annie``; see
#: ``espeak-ng --voices=variant``). espeak-ng silently ignores variants it does not have.
_VARIANT = re.compile(r"[A-Za-z0-9_-]{1,32}")
_LANGUAGE = re.compile(r"[a-z]{2,3}")


class EspeakTextToSpeech:
    """Synthesize speech with espeak-ng child processes.

    Args:
        executable: program name or path.
        words_per_minute: speaking rate (espeak-ng's ``-s``; its default is 175, a little fast).
        timeout_s: longest a single synthesis may take, seconds.
        max_concurrency: most child processes at once (one per core is plenty).
    """

    name = "local"

    def __init__(
        self,
        *,
        executable: str = "espeak-ng",
        words_per_minute: int = 160,
        timeout_s: float = 30.0,
        max_concurrency: int = 2,
    ) -> None:
        if not 80 <= words_per_minute <= 450:  # espeak-ng's accepted range
            raise ValueError(f"words_per_minute must be within 80..450, got {words_per_minute}")
        self._executable = executable
        self._words_per_minute = words_per_minute
        self._timeout_s = timeout_s
        self._slots = asyncio.Semaphore(max_concurrency)

    async def synthesize(self, text: str, *, language: str, voice: str | None) -> SynthesizedAudio:
        """Speak ``text`` and return 22.05 kHz mono float32 samples.

        Args:
            text: what to say (UTF-8; any length, but one sentence at a time streams best). Empty or
                whitespace-only text gives zero samples without running espeak-ng.
            language: ISO 639-1 (region suffixes dropped): ``en`` → voice ``en-us``, ``ar`` → ``ar``.
            voice: an espeak-ng variant (``"f3"``, ``"m2"``, ``"klatt"``) or a full voice such as
                ``"en-us+f3"`` (only the part after ``+`` counts); None keeps the default voice.
                espeak-ng ignores names it has no variant for, so an OpenAI voice name such as
                ``"alloy"`` also falls back to the default.

        Raises:
            Unavailable: espeak-ng is not installed, fails, or exceeds ``timeout_s`` (reason
                ``PROVIDER_UNAVAILABLE``, metadata ``provider="espeak"``).
            InvalidArgument: espeak-ng has no voice for ``language`` (reason ``UNSUPPORTED_LANGUAGE``).
        """
        if not text.strip():
            return SynthesizedAudio(samples=np.zeros(0, dtype=np.float32), sample_rate_hz=22050)
        code = language.replace("_", "-").split("-", 1)[0].strip().lower()
        if not _LANGUAGE.fullmatch(code):
            raise self._unsupported_language(language)
        voice_name = ESPEAK_VOICES.get(code, code)
        variant = (voice or "").rsplit("+", 1)[-1]
        if variant and _VARIANT.fullmatch(variant):
            voice_name = f"{voice_name}+{variant}"
        command = [
            self._executable,
            "-v", voice_name,
            "-s", str(self._words_per_minute),
            "-b", "1",  # input is UTF-8
            "--stdin",
            "--stdout",
        ]  # fmt: skip
        async with self._slots:
            stdout, stderr, returncode = await self._run(command, text.encode("utf-8"))
        if returncode != 0:
            message = stderr.decode("utf-8", "replace").strip()
            if "voice does not exist" in message:
                raise self._unsupported_language(language)
            raise Unavailable(
                f"espeak-ng failed (exit {returncode}): {message[:200]}",
                reason=Reason.PROVIDER_UNAVAILABLE,
                metadata={"provider": _PROVIDER},
            )
        return _parse_wav(stdout)

    async def aclose(self) -> None:
        """Nothing to release: each call's child process is reaped by the call."""

    async def _run(self, command: list[str], stdin: bytes) -> tuple[bytes, bytes, int]:
        """Run one child in a worker thread with the standard ``subprocess`` module: the fork
        happens off the event loop (2.3 ms on the loop under uvloop with this process's size), and
        uvloop's subprocess pipes are not used (they can fail a write with "the handler is
        closed", uvloop issue 506). A cancelled caller kills the child at once."""
        started: list[subprocess.Popen[bytes]] = []
        try:
            return await asyncio.to_thread(self._run_sync, command, stdin, started)
        except BaseException:  # cancelled: do not leave the child running
            if started and started[0].poll() is None:
                started[0].kill()
            raise

    def _run_sync(
        self, command: list[str], stdin: bytes, started: list[subprocess.Popen[bytes]]
    ) -> tuple[bytes, bytes, int]:
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a scheduling group of its own (priority.py)
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise Unavailable(
                f"text-to-speech is unavailable: cannot run {self._executable!r} (install espeak-ng)",
                reason=Reason.PROVIDER_UNAVAILABLE,
                metadata={"provider": _PROVIDER},
            ) from exc
        started.append(process)
        lower_process(process.pid)  # below the event loop's priority (priority.py)
        try:
            stdout, stderr = process.communicate(stdin, timeout=self._timeout_s)
        except subprocess.TimeoutExpired as exc:
            process.kill()
            process.communicate()
            raise Unavailable(
                f"espeak-ng took longer than {self._timeout_s:g} s",
                reason=Reason.PROVIDER_UNAVAILABLE,
                metadata={"provider": _PROVIDER},
            ) from exc
        except BaseException:
            process.kill()
            process.communicate()
            raise
        return stdout, stderr, process.returncode

    @staticmethod
    def _unsupported_language(language: str) -> InvalidArgument:
        return InvalidArgument(
            f"text-to-speech has no voice for the language {language!r}",
            reason=Reason.UNSUPPORTED_LANGUAGE,
            metadata={"language": language, "provider": _PROVIDER},
        )


def _parse_wav(data: bytes) -> SynthesizedAudio:
    """espeak-ng's stdout WAV (its header carries placeholder sizes; ``wave`` reads to the end)."""
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            if reader.getsampwidth() != 2:
                raise wave.Error(f"expected 16-bit samples, got {8 * reader.getsampwidth()}-bit")
            rate = reader.getframerate()
            channels = reader.getnchannels()
            frames = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError) as exc:
        raise Unavailable(
            f"espeak-ng produced unreadable audio: {exc}",
            reason=Reason.PROVIDER_UNAVAILABLE,
            metadata={"provider": _PROVIDER},
        ) from exc
    pcm = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        pcm = pcm[: len(pcm) - len(pcm) % channels].reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return SynthesizedAudio(samples=pcm, sample_rate_hz=rate)
