"""The audio layer: sniff the type of uploaded bytes, decode them to PCM, encode replies.

Submodules (import them directly; this package imports nothing heavy on its own):

* ``parley.audio.sniff``: what the bytes are (libmagic), refusing anything but audio.
* ``parley.audio.decode``: bytes → mono float32 PCM at 16 kHz (PyAV), with a duration cap.
* ``parley.audio.encode``: PCM → mp3 / Ogg Opus / WAV bytes, incrementally, for streaming.
* ``parley.audio.sentences``: split streamed text into sentences to synthesize one by one.
"""

__all__: list[str] = []
