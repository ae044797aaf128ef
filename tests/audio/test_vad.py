"""Streaming Silero VAD on espeak-ng speech, fed as a live client would: 20 ms at a time."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from parley.audio import vad
from parley.audio.turns import SpeechPaused, SpeechStarted, SpeechStopped, TurnEvent, TurnSettings
from parley.audio.vad import SileroModel, SpeechProbabilities, VoiceActivity, load_silero_model

from tests.audio.audio_samples import SENTENCE, espeak_pcm16k

RATE = 16_000
FRAME = 320  # 20 ms
WINDOW = SpeechProbabilities.WINDOW_SAMPLES


def silence(seconds: float) -> npt.NDArray[np.float32]:
    return np.zeros(round(seconds * RATE), dtype=np.float32)


def trimmed(pcm: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Without espeak-ng's leading and trailing silence."""
    loud = np.flatnonzero(np.abs(pcm) > 0.01)
    return pcm[loud[0] : loud[-1] + 1]


def energy_bounds(pcm: npt.NDArray[np.float32]) -> tuple[float, float]:
    """Where the audio's energy begins and ends (s): the first and last 10 ms block above -40 dBFS."""
    block = RATE // 100
    rms = np.sqrt((pcm[: pcm.shape[0] // block * block].reshape(-1, block) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms > 0.01)
    return loud[0] * block / RATE, (loud[-1] + 1) * block / RATE


def stream(
    pcm: npt.NDArray[np.float32], settings: TurnSettings | None = None
) -> list[tuple[float, TurnEvent]]:
    """Feed ``pcm`` in 20 ms pieces, then end the stream; (stream position when it came, event)."""
    activity = VoiceActivity(settings)
    events: list[tuple[float, TurnEvent]] = []
    for start in range(0, pcm.shape[0], FRAME):
        piece = pcm[start : start + FRAME]
        events += [((start + piece.shape[0]) / RATE, e) for e in activity.feed(piece)]
        assert activity.turns.buffered_samples <= activity.turns.settings.max_turn_s * RATE + FRAME + WINDOW
    events += [(pcm.shape[0] / RATE, e) for e in activity.flush()]
    return events


def stops(events: list[tuple[float, TurnEvent]]) -> list[SpeechStopped]:
    return [e for _, e in events if isinstance(e, SpeechStopped)]


def starts(events: list[tuple[float, TurnEvent]]) -> list[SpeechStarted]:
    return [e for _, e in events if isinstance(e, SpeechStarted)]


def check_turn_audio(pcm: npt.NDArray[np.float32], turn: SpeechStopped) -> None:
    """The turn's audio is the stream's own samples, from its stated start."""
    begin = round(turn.turn_audio_start_s * RATE)
    np.testing.assert_array_equal(turn.turn_audio, pcm[begin : begin + turn.turn_audio.shape[0]])


def energy_in_turns(pcm: npt.NDArray[np.float32], turns: list[SpeechStopped]) -> float:
    covered = sum(float((t.turn_audio.astype(np.float64) ** 2).sum()) for t in turns)
    return covered / float((pcm.astype(np.float64) ** 2).sum())


@pytest.fixture(scope="module")
def sentence() -> npt.NDArray[np.float32]:
    return trimmed(espeak_pcm16k(SENTENCE))


def test_probabilities_fed_in_pieces_equal_faster_whispers_whole_file_scoring() -> None:
    from faster_whisper.vad import get_vad_model

    rng = np.random.default_rng(3)
    pcm = np.concatenate([silence(0.5), trimmed(espeak_pcm16k("Hello world")), silence(0.5)])
    pcm = np.concatenate([pcm, (0.01 * rng.standard_normal(WINDOW)).astype(np.float32)])
    whole = pcm[: pcm.shape[0] // WINDOW * WINDOW].copy()
    # faster-whisper zeroes the last window's final 64 samples in place (its context trick), so
    # its last probability is of other audio: compare all the others.
    expected = np.asarray(get_vad_model()(whole)).reshape(-1)[:-1]
    assert expected.max() > 0.9 and expected.min() < 0.1
    for piece in (7, FRAME, WINDOW, 5000, pcm.shape[0]):
        probabilities = SpeechProbabilities()
        got: list[float] = []
        for start in range(0, pcm.shape[0], piece):
            got += probabilities.feed(pcm[start : start + piece])
        assert len(got) == pcm.shape[0] // WINDOW == probabilities.windows
        np.testing.assert_allclose(got[:-1], expected, atol=1e-6, err_msg=f"pieces of {piece}")


def test_one_sentence_is_one_turn(sentence: npt.NDArray[np.float32]) -> None:
    pcm = np.concatenate([silence(1.0), sentence, silence(1.0)])
    speech_start, speech_end = energy_bounds(pcm)
    events = stream(pcm)
    (started,), (stopped,) = starts(events), stops(events)
    assert abs(started.audio_start_s - speech_start) <= 0.2
    assert abs(stopped.audio_end_s - speech_end) <= 0.2
    assert not stopped.cut and stopped.audio_start_s == started.audio_start_s
    # SpeechStopped came once silence_s of silence followed the speech (to within a frame + window).
    stopped_at = next(at for at, e in events if e is stopped)
    assert stopped.audio_end_s + 0.5 <= stopped_at <= stopped.audio_end_s + 0.5 + (FRAME + WINDOW) / RATE
    check_turn_audio(pcm, stopped)
    assert stopped.turn_audio_start_s == pytest.approx(started.audio_start_s - 0.3)
    assert energy_in_turns(pcm, [stopped]) > 0.99
    # The last pause before the stop held the very same audio.
    last_pause = [e for _, e in events if isinstance(e, SpeechPaused)][-1]
    np.testing.assert_array_equal(last_pause.turn_audio, stopped.turn_audio)


@pytest.mark.parametrize(("gap_s", "turns"), [(1.2, 2), (0.2, 1)])
def test_two_utterances(sentence: npt.NDArray[np.float32], gap_s: float, turns: int) -> None:
    second = trimmed(espeak_pcm16k("Hello there, how are you today?"))
    pcm = np.concatenate([silence(1.0), sentence, silence(gap_s), second, silence(1.0)])
    found = stops(stream(pcm))
    assert len(found) == turns
    for turn in found:
        check_turn_audio(pcm, turn)
    assert energy_in_turns(pcm, found) > 0.99


def test_silence_and_low_noise_start_no_turn() -> None:
    rng = np.random.default_rng(11)
    noise = (0.01 * rng.standard_normal(4 * RATE)).astype(np.float32)  # -40 dBFS white noise
    assert stream(silence(4.0)) == []
    assert stream(noise) == []


def test_a_monologue_is_cut_into_turns_of_at_most_max_turn(sentence: npt.NDArray[np.float32]) -> None:
    monologue = np.concatenate([sentence] * 16)  # about 41 s, no pause longer than espeak-ng's own
    pcm = np.concatenate([silence(1.0), monologue, silence(1.0)])
    found = stops(stream(pcm, TurnSettings(max_turn_s=10.0)))
    assert len(found) >= 4
    assert all(t.cut for t in found[:-1]) and not found[-1].cut
    assert all(t.turn_audio.shape[0] <= 10 * RATE for t in found)
    for turn in found:
        check_turn_audio(pcm, turn)
    for earlier, later in itertools.pairwise(found):  # no sample in two turns
        earlier_end = round(earlier.turn_audio_start_s * RATE) + earlier.turn_audio.shape[0]
        assert round(later.turn_audio_start_s * RATE) >= earlier_end
    assert energy_in_turns(pcm, found) > 0.99


def test_arabic_speech_is_detected() -> None:
    arabic = trimmed(espeak_pcm16k("مرحبا، كيف حالك اليوم؟", voice="ar"))
    pcm = np.concatenate([silence(1.0), arabic, silence(1.0)])
    speech_start, _ = energy_bounds(pcm)
    events = stream(pcm)
    (started,), (stopped,) = starts(events), stops(events)
    assert abs(started.audio_start_s - speech_start) <= 0.2
    assert energy_in_turns(pcm, [stopped]) > 0.99


def test_a_one_word_answer_is_a_turn() -> None:
    """min_speech_s (0.25 s) keeps a short "yes" (espeak-ng: 0.38 s)."""
    pcm = np.concatenate([silence(1.0), trimmed(espeak_pcm16k("yes")), silence(1.0)])
    assert len(stops(stream(pcm))) == 1


def test_streams_sharing_the_model_keep_their_own_state(sentence: npt.NDArray[np.float32]) -> None:
    a = np.concatenate([silence(0.3), sentence])
    b = np.concatenate([sentence[::-1], silence(0.3)]).copy()
    alone_a, alone_b = SpeechProbabilities().feed(a), SpeechProbabilities().feed(b)
    first, second = SpeechProbabilities(), SpeechProbabilities()
    together_a: list[float] = []
    together_b: list[float] = []
    for start in range(0, max(a.shape[0], b.shape[0]), FRAME):
        together_a += first.feed(a[start : start + FRAME])
        together_b += second.feed(b[start : start + FRAME])
    np.testing.assert_allclose(together_a, alone_a, atol=1e-6)
    np.testing.assert_allclose(together_b, alone_b, atol=1e-6)
    # reset() starts a new stream: the same audio scores the same again.
    first.reset()
    np.testing.assert_allclose(first.feed(a), alone_a, atol=1e-6)


def test_the_model_loads_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[SileroModel] = []

    class Counting(SileroModel):
        def __init__(self) -> None:
            super().__init__()
            loads.append(self)

    monkeypatch.setattr(vad, "_shared", {})
    monkeypatch.setattr(vad, "SileroModel", Counting)
    barrier = threading.Barrier(6)
    got: list[SileroModel] = []

    def load() -> None:
        barrier.wait()
        got.append(load_silero_model())

    threads = [threading.Thread(target=load) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1
    assert all(model is loads[0] for model in got) and len(got) == 6


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"mono with shape \(n,\)"):
        SpeechProbabilities().feed(np.zeros((2, 512), dtype=np.float32))
    with pytest.raises(ValueError, match=r"mono with shape \(n,\)"):
        VoiceActivity().feed(np.zeros((512, 1), dtype=np.float32))
    with pytest.raises(RuntimeError, match="does not exist"):
        SileroModel(tmp_path / "missing.onnx")
