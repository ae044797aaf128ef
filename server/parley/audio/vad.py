"""Streaming voice activity detection: Silero VAD over a live 16 kHz stream.

The model is the Silero VAD v6 ONNX file that ships inside faster-whisper
(``faster_whisper/assets/silero_vad_v6.onnx``, about 1.2 MB), run by onnxruntime, both already
dependencies of the local speech-to-text; nothing is downloaded. faster-whisper itself only runs
it over whole files (``faster_whisper.vad``); this module runs it window by window:

* Silero scores 512-sample windows (32 ms at 16 kHz). Each window is given with the 64 samples
  before it (its *context*; zeros before the stream's start) and the LSTM's state ``(h, c)`` left
  by the previous window, so scoring a stream piece by piece gives the same probabilities as
  faster-whisper scoring it whole.
* :func:`load_silero_model` loads one ONNX session per process (thread-safe, 1 intra-op thread);
  every stream shares it, and each :class:`SpeechProbabilities` keeps its own state and context.
  ``InferenceSession.run`` may be called from several threads at once.

Cost, CPU time measured on the shared 2-core machine this was written on (load average 6):
about 140 µs per window when fed 20 ms pieces (one window at a time), 50 µs per window when a
piece holds many; with the turn detector (:class:`VoiceActivity`) 175 µs per 32 ms window, i.e.
0.55 % of one core per live stream. Loading the model takes about 0.2 s. So the caller may run
:meth:`VoiceActivity.feed` inline on the event loop: a 20 ms frame blocks it for at most one
window's 0.2 ms. A process serving tens of live streams should move it to a worker thread
(onnxruntime releases the GIL while it runs), feeding it whatever frames arrived meanwhile.

:class:`VoiceActivity` puts the model and :class:`parley.audio.turns.TurnDetector` together:
samples in, turn events out.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from parley.audio.turns import TurnDetector, TurnEvent, TurnSettings

__all__ = [
    "SILERO_SAMPLE_RATE_HZ",
    "SileroModel",
    "SpeechProbabilities",
    "VoiceActivity",
    "load_silero_model",
]

#: The rate Silero VAD runs at here (Hz); it also takes 8 kHz, which Parley never feeds it.
SILERO_SAMPLE_RATE_HZ = 16_000

_ASSET = "silero_vad_v6.onnx"
_WINDOW = 512
_CONTEXT = 64
_STATE_SHAPE = (1, 1, 128)


class SileroModel:
    """The Silero VAD v6 ONNX session: ``(windows, h, c) → (probabilities, h, c)``. Stateless itself.

    Args:
        path: the ``.onnx`` file; by default faster-whisper's bundled ``silero_vad_v6.onnx``.

    Raises:
        RuntimeError: the file is missing, or its inputs are not Silero v6's
            (``input [n, 576]``, ``h``, ``c``: another faster-whisper version ships another model).
    """

    def __init__(self, path: Path | None = None) -> None:
        import onnxruntime  # type: ignore[import-untyped]

        model_path = path if path is not None else _bundled_model()
        if not model_path.is_file():
            raise RuntimeError(f"the Silero VAD model {model_path} does not exist")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 4  # errors only: the model's initializers warn harmlessly
        self._session = onnxruntime.InferenceSession(
            str(model_path), providers=["CPUExecutionProvider"], sess_options=options
        )
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        if set(inputs) != {"input", "h", "c"} or inputs["input"][-1] != _WINDOW + _CONTEXT:
            raise RuntimeError(
                f"{model_path.name} is not a Silero VAD v6 model (inputs {inputs}); "
                "this faster-whisper version bundles a model this module does not know"
            )
        self.path = model_path

    def run(
        self,
        windows: npt.NDArray[np.float32],
        h: npt.NDArray[np.float32],
        c: npt.NDArray[np.float32],
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Score consecutive windows of one stream.

        Args:
            windows: float32, shape ``(n, 576)``: each row is 64 context samples then a 512-sample
                window, in stream order (the model runs its LSTM down the rows).
            h, c: float32, shape ``(1, 1, 128)``: the state after the previous window (zeros at
                the start of a stream).

        Returns:
            ``(probabilities, h, c)``: float32 shape ``(n,)`` in [0, 1], and the state after the
            last window.
        """
        probabilities, h_out, c_out = self._session.run(None, {"input": windows, "h": h, "c": c})
        return (
            np.asarray(probabilities, dtype=np.float32).reshape(-1),
            np.asarray(h_out, dtype=np.float32),
            np.asarray(c_out, dtype=np.float32),
        )


_shared: dict[str, SileroModel] = {}  # "model": the process's one model, once loaded
_shared_lock = threading.Lock()


def load_silero_model() -> SileroModel:
    """The process's one :class:`SileroModel` (faster-whisper's bundled file), loaded on first use.

    Thread-safe: concurrent first calls load it once. Loading takes about 0.2 s (blocking).

    Raises:
        RuntimeError: as :class:`SileroModel`.
    """
    with _shared_lock:
        model = _shared.get("model")
        if model is None:
            model = _shared["model"] = SileroModel()
        return model


def _bundled_model() -> Path:
    from faster_whisper.utils import get_assets_path

    return Path(get_assets_path()) / _ASSET


class SpeechProbabilities:
    """Per-window speech probability of a 16 kHz mono stream fed in arbitrary-sized pieces.

    Window ``k`` is samples ``[512 k, 512 (k + 1))`` of the stream. Not thread-safe: one per
    stream (the model it uses is shared).

    Args:
        model: the model to run; by default :func:`load_silero_model`'s.
    """

    WINDOW_SAMPLES = _WINDOW

    def __init__(self, model: SileroModel | None = None) -> None:
        self._model = model if model is not None else load_silero_model()
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next sample fed is the start of a new one (state and context zero)."""
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._pending = np.zeros(_CONTEXT, dtype=np.float32)  # context, then samples not yet scored
        self._windows = 0

    @property
    def windows(self) -> int:
        """Windows scored since the start (or the last :meth:`reset`)."""
        return self._windows

    def feed(self, samples: npt.NDArray[np.floating]) -> list[float]:
        """Buffer samples; return the probabilities of every complete window now available, in order.

        Args:
            samples: mono 16 kHz, shape ``(n,)``, floats in [-1, 1] (any float dtype); may be empty.

        Returns:
            One probability (0-1) per window completed by these samples: ``(buffered + n) // 512``
            of them, possibly none. The rest stays buffered for the next call.

        Raises:
            ValueError: ``samples`` is not one-dimensional.
        """
        if samples.ndim != 1:
            raise ValueError(f"samples must be mono with shape (n,), got shape {samples.shape}")
        buffer = np.concatenate((self._pending, samples.astype(np.float32, copy=False)))
        count = (buffer.shape[0] - _CONTEXT) // _WINDOW
        if count == 0:
            self._pending = buffer
            return []
        # Row k: the 64 samples before window k, then window k (a strided view, copied once).
        rows = np.lib.stride_tricks.sliding_window_view(buffer, _WINDOW + _CONTEXT)[::_WINDOW][:count]
        probabilities, self._h, self._c = self._model.run(np.ascontiguousarray(rows), self._h, self._c)
        self._pending = buffer[count * _WINDOW :].copy()
        self._windows += count
        return [float(p) for p in probabilities]


class VoiceActivity:
    """Turn events of one live 16 kHz stream: :class:`SpeechProbabilities` into a
    :class:`~parley.audio.turns.TurnDetector`.

    Not thread-safe: one per stream, fed from one thread at a time.

    Args:
        settings: the turn detection settings (defaults: :class:`~parley.audio.turns.TurnSettings`).
        model: the model to run; by default :func:`load_silero_model`'s.
    """

    def __init__(self, settings: TurnSettings | None = None, model: SileroModel | None = None) -> None:
        self.probabilities = SpeechProbabilities(model)
        self.turns = TurnDetector(
            settings, sample_rate_hz=SILERO_SAMPLE_RATE_HZ, window_samples=SpeechProbabilities.WINDOW_SAMPLES
        )

    def feed(self, samples: npt.NDArray[np.floating]) -> list[TurnEvent]:
        """Score ``samples`` (mono 16 kHz, shape ``(n,)``) and return the turn events they cause.

        Raises:
            ValueError: ``samples`` is not one-dimensional.
        """
        if samples.ndim != 1:
            raise ValueError(f"samples must be mono with shape (n,), got shape {samples.shape}")
        return self.turns.push(samples, self.probabilities.feed(samples))

    def flush(self) -> list[TurnEvent]:
        """End of stream: ``[SpeechStopped]`` for a turn in progress, else ``[]``.

        See :meth:`parley.audio.turns.TurnDetector.flush`.
        """
        return self.turns.flush()
