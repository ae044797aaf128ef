"""SentenceSplitter: sentences come out as soon as they are complete, however the text is chunked."""

from __future__ import annotations

import random

import pytest
from parley.audio.sentences import SentenceSplitter


def split_all(text: str, chunks: list[str] | None = None, **options: int) -> list[str]:
    splitter = SentenceSplitter(**options)
    out: list[str] = []
    for chunk in chunks if chunks is not None else [text]:
        out += splitter.feed(chunk)
    rest = splitter.flush()
    return out + ([rest] if rest else [])


def random_chunks(text: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(text):
        n = rng.randint(1, 7)
        chunks.append(text[i : i + n])
        i += n
    return chunks


CASES = [
    ("Hello world. How are you? I'm fine! Bye", ["Hello world.", "How are you?", "I'm fine!", "Bye"]),
    ("Pi is 3.14 today. Yes.", ["Pi is 3.14 today.", "Yes."]),
    ("It costs $3.50, or 3.5 dollars. Cheap", ["It costs $3.50, or 3.5 dollars.", "Cheap"]),
    ("Wait… what?! Really... ok", ["Wait…", "what?!", "Really...", "ok"]),
    ("مرحبا، كيف حالك اليوم؟ أنا بخير. شكرا", ["مرحبا، كيف حالك اليوم؟", "أنا بخير.", "شكرا"]),
    ("یہ ایک جملہ ہے\u06d4 دوسرا", ["یہ ایک جملہ ہے\u06d4", "دوسرا"]),  # Urdu full stop
    ("First line\nSecond line\n\nThird", ["First line", "Second line", "Third"]),
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("Dr. Smith met Mr. Jones, e.g. at noon. Fine", ["Dr. Smith met Mr. Jones, e.g. at noon.", "Fine"]),
    ("J. R. R. Tolkien wrote it. Yes", ["J. R. R. Tolkien wrote it.", "Yes"]),
    ("Steps:\n1. Open it\n2. Close it\n", ["Steps:", "1. Open it", "2. Close it"]),
    ("See file.txt and example.com now. Done", ["See file.txt and example.com now.", "Done"]),
    ("I counted to 3. Then I stopped.", ["I counted to 3.", "Then I stopped."]),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_whole_text(text: str, expected: list[str]) -> None:
    assert split_all(text) == expected


@pytest.mark.parametrize(("text", "expected"), CASES)
@pytest.mark.parametrize("seed", range(5))
def test_chunking_does_not_matter(text: str, expected: list[str], seed: int) -> None:
    assert split_all(text, random_chunks(text, seed)) == expected
    assert split_all(text, list(text)) == expected


def test_sentences_come_out_as_soon_as_they_are_complete() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("The answer is 3.") == []  # "3." might be "3.14": wait for the next character
    assert splitter.feed("14") == []
    assert splitter.feed(".") == []  # the period needs the space after it
    assert splitter.feed(" Next") == ["The answer is 3.14."]
    assert splitter.feed(" sentence?") == []
    assert splitter.feed("\n") == ["Next sentence?"]
    assert splitter.flush() is None


def test_flush_and_reuse() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("   ") == []
    assert splitter.flush() is None
    assert splitter.feed("No terminator") == []
    assert splitter.flush() == "No terminator"
    assert splitter.flush() is None
    assert splitter.feed("Again. ") == ["Again."]


def test_run_on_text_is_cut_at_clauses_then_words() -> None:
    words = " ".join(f"word{i}" for i in range(200))
    pieces = split_all(words, random_chunks(words, 1), max_chars=60)
    assert all(len(piece) <= 60 for piece in pieces)
    assert " ".join(pieces) == words
    clauses = "one two three, four five six, seven eight nine, ten eleven twelve, " * 5
    pieces = split_all(clauses, max_chars=40)
    assert all(piece.endswith(",") for piece in pieces[:-1])


def test_bad_max_chars() -> None:
    with pytest.raises(ValueError):
        SentenceSplitter(max_chars=0)


FIRST_CLAUSE_CASES = [
    # The first piece ends at the first clause mark that makes it long enough; the rest are sentences.
    (
        "The sky can be described as blue, but it is not. Yes, it is, really. Done",
        ["The sky can be described as blue,", "but it is not.", "Yes, it is, really.", "Done"],
    ),
    ("Well, the sky is blue, mostly. Yes", ["Well, the sky is blue,", "mostly.", "Yes"]),  # "Well," too short
    ("Short. The sky is very blue, always.", ["Short.", "The sky is very blue, always."]),  # a sentence first
    (
        "It costs 1,000 dollars today, I think.",
        ["It costs 1,000 dollars today,", "I think."],
    ),  # no space: no mark
    ("السماء زرقاء جدا اليوم، والبحر أيضا. نعم", ["السماء زرقاء جدا اليوم،", "والبحر أيضا.", "نعم"]),
    ("No clause mark at all here. Fine", ["No clause mark at all here.", "Fine"]),
]


@pytest.mark.parametrize(("text", "expected"), FIRST_CLAUSE_CASES)
@pytest.mark.parametrize("seed", range(5))
def test_the_first_piece_may_end_at_a_clause(text: str, expected: list[str], seed: int) -> None:
    assert split_all(text, first_clause_chars=16) == expected
    assert split_all(text, random_chunks(text, seed), first_clause_chars=16) == expected
    assert split_all(text, list(text), first_clause_chars=16) == expected


def test_the_first_clause_comes_out_as_soon_as_its_mark_is_followed_by_a_space() -> None:
    splitter = SentenceSplitter(first_clause_chars=16)
    assert splitter.feed("The sky can be described as blue,") == []  # "blue,5" would be a number
    assert splitter.feed(" but") == ["The sky can be described as blue,"]
    assert splitter.feed(" it is not, you see, at all.") == []  # later pieces wait for their sentence
    assert splitter.feed(" Next") == ["but it is not, you see, at all."]
    assert splitter.flush() == "Next"
    # After a flush the splitter starts over: the next reply's first piece may end at a clause.
    assert splitter.feed("Another reply begins here, and goes on") == ["Another reply begins here,"]


def test_bad_first_clause_chars() -> None:
    with pytest.raises(ValueError):
        SentenceSplitter(first_clause_chars=-1)
