"""What the listener heard of a spoken reply, from the client's playback marks.

A reply's audio is sent sentence by sentence: each first ``AudioReady`` of a sentence carries
the sentence and the seconds of speech it takes (``duration_s``), so the position in the audio
where each sentence ends is the running sum of those durations. The client reports how much it
has played (``Playback.played_duration``); a reply interrupted at that point keeps the text of
the sentences that ended within it (sentence granularity, as the live voice issue asks: a half
sentence is not what a person can be said to have heard).

Without any mark, the client is assumed to play in real time from the moment the first audio
chunk was sent (a client that plays faster or buffers should send marks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

__all__ = ["PLAYED_TOLERANCE_S", "Playback", "heard_prefix"]

#: A sentence counts as played when the mark is at most this far before its end (seconds):
#: encoders pad a little (Opus 6.5 ms look-ahead, MP3 one frame of 26 ms), and a client's mark
#: is taken between buffers.
PLAYED_TOLERANCE_S = 0.08


def heard_prefix(text: str, sentences: list[tuple[str, float]], played_s: float) -> str:
    """The part of ``text`` the listener heard.

    Args:
        text: the reply text as generated (the sentences are consecutive pieces of it, possibly
            with whitespace the splitter dropped between them).
        sentences: ``(sentence, seconds of speech)`` in the order they were sent.
        played_s: how much audio was played (seconds from the start of the reply's audio).

    Returns:
        ``text`` up to the end of the last sentence whose audio ended within ``played_s`` (plus
        :data:`PLAYED_TOLERANCE_S`); ``""`` when none did.
    """
    end_s = 0.0
    cut = 0
    position = 0
    for sentence, duration_s in sentences:
        end_s += duration_s
        found = text.find(sentence.strip(), position)
        if found < 0:  # not a piece of the text (cannot happen with the splitter): stop here
            break
        position = found + len(sentence.strip())
        if end_s > played_s + PLAYED_TOLERANCE_S:
            break
        cut = position
    return text[:cut]


@dataclass(slots=True)
class Playback:
    """One reply's audio as sent, and the client's latest playback mark for it.

    Attributes:
        message_id: the reply (its run's first assistant message).
        sentences: ``(sentence, seconds)`` as their audio was sent.
        first_sent: ``time.monotonic()`` of the first audio chunk sent (None before).
        marked_s: the latest ``played_duration`` the client reported (None: no mark yet).
        finished: the run has ended (everything it will send was sent).
    """

    message_id: str
    sentences: list[tuple[str, float]] = field(default_factory=list)
    first_sent: float | None = None
    marked_s: float | None = None
    finished: bool = False

    @property
    def sent_s(self) -> float:
        """Seconds of audio sent so far."""
        return sum(seconds for _, seconds in self.sentences)

    def sent(self, sentence: str, seconds: float, now: float | None = None) -> None:
        """Note a sentence whose audio was just sent (its first chunk)."""
        if self.first_sent is None:
            self.first_sent = time.monotonic() if now is None else now
        if sentence:
            self.sentences.append((sentence, seconds))

    def mark(self, played_s: float) -> None:
        """The client reports ``played_s`` seconds played; marks never move backwards."""
        self.marked_s = played_s if self.marked_s is None else max(self.marked_s, played_s)

    def played_s(self, now: float | None = None) -> float:
        """How much has been played: the latest mark, or (without marks) the time since the
        first chunk was sent; never more than what was sent."""
        if self.marked_s is not None:
            played = self.marked_s
        elif self.first_sent is None:
            played = 0.0
        else:
            played = (time.monotonic() if now is None else now) - self.first_sent
        return min(played, self.sent_s)

    def playing(self, now: float | None = None) -> bool:
        """Whether the listener may still be hearing it: the run goes on, or less than all of
        the audio sent has been played."""
        if not self.finished:
            return True
        return self.played_s(now) + PLAYED_TOLERANCE_S < self.sent_s
