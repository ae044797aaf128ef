"""How fast a client may send audio: about real time, with a burst allowance.

A live client sends audio as it records it. One that sends much faster than real time is not
talking (it is uploading a file: SendVoiceMessage is for that) and would make the server buffer
and transcribe without bound. The check is a token bucket over seconds of audio: after ``t``
seconds of wall time since the first frame, at most ``factor * t + burst_s`` seconds of audio
may have arrived.
"""

from __future__ import annotations

import time

from parley.domain.errors import Reason, ResourceExhausted

__all__ = ["Pacer"]


class Pacer:
    """Raises ``ResourceExhausted`` (AUDIO_TOO_FAST) when a stream's audio outruns real time.

    Args:
        factor: most seconds of audio per second of wall time over the long run
            (``PARLEY_CONVERSE_MAX_SPEED``).
        burst_s: audio that may arrive ahead of that (seconds): network batching, a client's
            small send buffer.
    """

    def __init__(self, factor: float, burst_s: float) -> None:
        self._factor = factor
        self._burst_s = burst_s
        self._started: float | None = None
        self.received_s = 0.0

    def take(self, seconds: float, now: float | None = None) -> None:
        """Count ``seconds`` of audio that just arrived."""
        now = time.monotonic() if now is None else now
        if self._started is None:
            self._started = now
        self.received_s += seconds
        allowed = self._factor * (now - self._started) + self._burst_s
        if self.received_s > allowed:
            raise ResourceExhausted(
                f"audio arrives faster than {self._factor:g}x real time "
                f"({self.received_s:.1f} s of audio in {now - self._started:.1f} s); a live "
                "conversation streams audio as it is recorded (upload recordings with SendVoiceMessage)",
                reason=Reason.AUDIO_TOO_FAST,
                metadata={"max_speed": f"{self._factor:g}", "burst_seconds": f"{self._burst_s:g}"},
            )
