"""The audio layer: sniff uploaded bytes, decode them (or live frames) to PCM, detect speech, encode replies.

Submodules (import them directly; this package imports nothing heavy on its own):

* ``parley.audio.sniff``: what the bytes are (libmagic), refusing anything but audio.
* ``parley.audio.decode``: bytes → mono float32 PCM at 16 kHz (PyAV), with a duration cap.
* ``parley.audio.encode``: PCM → mp3 / Ogg Opus / WAV bytes, incrementally, for streaming.
* ``parley.audio.sentences``: split streamed text into sentences to synthesize one by one.
* ``parley.audio.frames``: live input frames (PCM16 or raw Opus packets) → 16 kHz mono float32.
* ``parley.audio.vad``: streaming Silero VAD (faster-whisper's bundled model): speech probabilities.
* ``parley.audio.turns``: turn detection from those probabilities (start, pause, stop, cut).
"""

__all__: list[str] = []
