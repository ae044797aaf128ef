"""Split text that arrives in pieces (LLM deltas) into sentences, as soon as each is complete.

This is what makes a voice reply start playing while the model is still writing: every complete
sentence is synthesized and encoded on its own (docs/design.md, "Streams": audio chunks interleaved
with deltas, sentence by sentence).
"""

from __future__ import annotations

import re

__all__ = ["DEFAULT_MAX_SENTENCE_CHARS", "FIRST_CLAUSE_MIN_CHARS", "SentenceSplitter"]

#: A sentence longer than this (characters) is cut at a clause or word boundary anyway, so a
#: run-on reply without punctuation still yields audio every few seconds (~15 s of speech).
DEFAULT_MAX_SENTENCE_CHARS = 240
#: A streamed voice reply's first piece may end at a clause mark once it is at least this long
#: (characters): its audio starts a clause earlier (measured on SmolLM2's replies: first sentences
#: of 40-60 characters, about 0.2 s of generation to the first comma that a sentence would wait).
#: Long enough that the clause is a phrase ("The sky can be described as blue,"), not "Well,".
FIRST_CLAUSE_MIN_CHARS = 16

# A sentence ends at a run of terminators (. ! ? and the ellipsis, the Arabic question mark and
# full stop, the CJK full stop and full-width ! ?) plus any closing quotes or brackets, when
# whitespace follows; or at a line break. Requiring the whitespace is what keeps "3.14", "e.g.x"
# and "file.txt" whole: a decision waits until the next character arrives.
_BOUNDARY = re.compile(
    r"[.!?\u2026\u061f\u06d4\u3002\uff01\uff1f]+"
    r"[\"')\]\u201d\u2019\u00bb]*"
    r"(?=\s)|\n"
)

# Words that end with a period but rarely end a sentence (English; lower-cased, no final period).
# Words that often do end one ("etc.", "no.", "Inc.") are left out: a wrong split only costs a
# pause, a missed one delays the audio.
_ABBREVIATIONS = frozenset(
    ("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "e.g", "i.e", "cf", "approx")
)

# Where an over-long sentence may be cut: after a clause mark (, ; : Arabic ، ؛) plus space, else
# at any space.
_CLAUSE = re.compile(r"[,;:،؛]\s")


class SentenceSplitter:
    """Incremental sentence splitter.

    ``feed`` text as it streams in and get back the sentences it completed; ``flush`` at the end
    for the remainder. Sentences come back stripped; whitespace-only pieces are dropped.

    Args:
        max_chars: cut a sentence with no terminator at a clause or word boundary once it is this
            long (characters); see ``DEFAULT_MAX_SENTENCE_CHARS``.
        first_clause_chars: when positive, the first piece may end at a clause mark (, ; : and
            the Arabic comma and semicolon, followed by whitespace) once it is at least this long
            (characters), before its sentence ends; later pieces are whole sentences. 0 (the
            default): sentences only. Voice replies use ``FIRST_CLAUSE_MIN_CHARS``.
    """

    def __init__(self, *, max_chars: int = DEFAULT_MAX_SENTENCE_CHARS, first_clause_chars: int = 0) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        if first_clause_chars < 0:
            raise ValueError(f"first_clause_chars must not be negative, got {first_clause_chars}")
        self._max_chars = max_chars
        self._first_clause_chars = first_clause_chars
        self._emitted = False
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        """Add ``delta`` and return the sentences completed so far (oldest first, maybe none)."""
        self._buffer += delta
        sentences: list[str] = []
        if self._first_clause_chars and not self._emitted:
            self._buffer = self._first_clause(sentences, self._buffer)
        start = 0
        for match in _BOUNDARY.finditer(self._buffer):
            if match.start() < start or not _ends_sentence(self._buffer, start, match):
                continue
            self._emit(sentences, self._buffer[start : match.end()])
            start = match.end()
        rest = self._buffer[start:]
        while len(rest.strip()) > self._max_chars:
            rest = rest.lstrip()
            cut = _cut_point(rest, self._max_chars)
            self._emit(sentences, rest[:cut])
            rest = rest[cut:]
        self._buffer = rest
        self._emitted = self._emitted or bool(sentences)
        return sentences

    def _first_clause(self, sentences: list[str], text: str) -> str:
        """Emit ``text`` up to its first clause mark that ends a piece of ``first_clause_chars``
        or more, if no sentence ends before it; return what is left. Both marks need the
        whitespace after them, so how the text was chunked does not change where it is cut."""
        first_end = next(
            (m.start() for m in _BOUNDARY.finditer(text) if _ends_sentence(text, 0, m)), len(text)
        )
        for match in _CLAUSE.finditer(text, 0, first_end + 1):
            if len(text[: match.end()].strip()) >= self._first_clause_chars:
                self._emit(sentences, text[: match.end()])
                return text[match.end() :]
        return text

    def flush(self) -> str | None:
        """Return what is left (stripped), or None if nothing but whitespace; then start over."""
        rest = self._buffer.strip()
        self._buffer = ""
        self._emitted = False
        return rest or None

    @staticmethod
    def _emit(sentences: list[str], text: str) -> None:
        text = text.strip()
        if text:
            sentences.append(text)


def _ends_sentence(text: str, start: int, match: re.Match[str]) -> bool:
    """Whether a single-period boundary really ends a sentence (not "Dr." or "J." or "1.")."""
    if match.group() == "\n" or not match.group().startswith(".") or match.group().startswith(".."):
        return True
    word_start = match.start()
    while word_start > start and not text[word_start - 1].isspace():
        word_start -= 1
    word = text[word_start : match.start()]
    if word.lower() in _ABBREVIATIONS:
        return False
    if len(word) == 1 and word.isupper():
        return False  # an initial: "J. R. R. Tolkien"
    if word.isdigit() and text[start:word_start].strip() == "":
        line_start = text.rfind("\n", 0, word_start) + 1
        return text[line_start:word_start].strip() != ""  # "1. " opening a line is a list marker
    return True


def _cut_point(text: str, max_chars: int) -> int:
    """Index (≤ ``max_chars``) to cut an over-long ``text`` at: after a clause mark, else a space."""
    head = text[: max_chars + 1]
    clauses = [m.end() for m in _CLAUSE.finditer(head)]
    if clauses and clauses[-1] > max_chars // 3:
        return clauses[-1]
    space = head.rfind(" ")
    return space + 1 if space > 0 else max_chars
