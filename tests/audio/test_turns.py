"""TurnDetector on synthetic probability sequences (no model).

Most tests run the detector at 100 Hz with one sample per window, and each sample's value is its
own index: window k is 10 ms long, positions are k / 100 s, and a turn's audio is the run of
indices it covers, so every boundary can be checked exactly.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from parley.audio.turns import (
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechStopped,
    TurnDetector,
    TurnEvent,
    TurnSettings,
)

RATE = 100  # Hz; one sample per window: window k is [k/100, (k+1)/100) s
HI, MID, LO = 0.9, 0.4, 0.05  # speech; between neg_threshold (0.35) and threshold (0.5); silence


def detector(**settings: float) -> TurnDetector:
    return TurnDetector(TurnSettings(**settings), sample_rate_hz=RATE, window_samples=1)


def run(det: TurnDetector, probabilities: list[float]) -> list[tuple[int, TurnEvent]]:
    """Push one window at a time; return (index of the window that caused it, event)."""
    events: list[tuple[int, TurnEvent]] = []
    start = round(det.position_s * RATE)
    for k, p in enumerate(probabilities, start=start):
        events.extend((k, e) for e in det.push(np.array([k], dtype=np.float32), [p]))
    return events


def indices(start: int, stop: int) -> npt.NDArray[np.float32]:
    return np.arange(start, stop, dtype=np.float32)


def kinds(events: list[tuple[int, TurnEvent]]) -> list[str]:
    return [type(e).__name__ for _, e in events]


def test_a_turn_starts_after_min_speech_and_stops_after_silence() -> None:
    det = detector()
    events = run(det, [LO] * 100 + [HI] * 40 + [LO] * 60)
    assert kinds(events) == ["SpeechStarted", "SpeechPaused", "SpeechStopped"]
    (k_start, started), (k_pause, paused), (k_stop, stopped) = events
    assert started == SpeechStarted(1.0)
    assert k_start == 124  # the 25th speech window completes 0.25 s of speech
    assert isinstance(paused, SpeechPaused) and isinstance(stopped, SpeechStopped)
    assert k_pause == 140 and paused.audio_end_s == 1.4
    assert k_stop == 189  # the 50th silent window completes 0.5 s of silence
    assert (stopped.audio_start_s, stopped.audio_end_s, stopped.cut) == (1.0, 1.4, False)
    # 0.3 s of prefix padding, the speech, and the first silent window as a tail.
    np.testing.assert_array_equal(stopped.turn_audio, indices(70, 141))
    assert stopped.turn_audio_start_s == 0.7
    assert stopped.turn_audio.dtype == np.float32
    # The paused audio is the stopped audio: a speculative transcript of it stands.
    np.testing.assert_array_equal(paused.turn_audio, stopped.turn_audio)
    assert not det.in_turn


def test_a_run_shorter_than_min_speech_starts_nothing() -> None:
    assert run(detector(), [LO] * 50 + [HI] * 24 + [LO] * 100) == []
    # A dip below neg_threshold ends a run: two runs of 20 do not add up.
    assert run(detector(), [HI] * 20 + [LO] + [HI] * 20 + [LO] * 100) == []
    # min_speech_s = 0 starts a turn on the first speech window.
    events = run(detector(min_speech_s=0.0), [LO] * 5 + [HI] + [LO] * 60)
    assert events[0] == (5, SpeechStarted(0.05))


def test_hysteresis_a_dip_above_neg_threshold_does_not_end_speech() -> None:
    det = detector()
    events = run(det, [HI] * 30 + [MID] * 100 + [HI] * 10 + [LO] * 60)
    assert kinds(events) == ["SpeechStarted", "SpeechPaused", "SpeechStopped"]
    stopped = events[-1][1]
    assert isinstance(stopped, SpeechStopped) and stopped.audio_end_s == 1.4
    # A run that starts at the threshold continues above neg_threshold while it is still too short.
    events = run(detector(), [LO] * 10 + [HI] * 5 + [MID] * 20 + [LO] * 60)
    assert events[0] == (34, SpeechStarted(0.1))


def test_hysteresis_a_rise_below_threshold_does_not_end_silence() -> None:
    events = run(detector(), [HI] * 40 + [LO] * 10 + [MID] * 30 + [LO] * 20)
    assert kinds(events) == ["SpeechStarted", "SpeechPaused", "SpeechStopped"]
    k_stop, stopped = events[-1]
    assert k_stop == 89 and isinstance(stopped, SpeechStopped) and stopped.audio_end_s == 0.4


def test_speech_after_a_pause_resumes_the_turn() -> None:
    det = detector()
    events = run(det, [HI] * 40 + [LO] * 20 + [HI] * 40 + [LO] * 60)
    assert kinds(events) == [
        "SpeechStarted",
        "SpeechPaused",
        "SpeechResumed",
        "SpeechPaused",
        "SpeechStopped",
    ]
    assert events[2] == (60, SpeechResumed(0.6))
    first_pause, stopped = events[1][1], events[-1][1]
    assert isinstance(first_pause, SpeechPaused) and isinstance(stopped, SpeechStopped)
    np.testing.assert_array_equal(first_pause.turn_audio, indices(0, 41))
    np.testing.assert_array_equal(stopped.turn_audio, indices(0, 101))


def test_prefix_padding_is_bounded_by_the_stream_start_and_the_previous_turn() -> None:
    det = detector(silence_s=0.1)
    events = run(det, [LO] * 10 + [HI] * 30 + [LO] * 20 + [HI] * 30 + [LO] * 20)
    stops = [e for _, e in events if isinstance(e, SpeechStopped)]
    assert len(stops) == 2
    # Only 0.1 s of stream before the first turn; the first turn's audio ends at 41 (its tail).
    np.testing.assert_array_equal(stops[0].turn_audio, indices(0, 41))
    np.testing.assert_array_equal(stops[1].turn_audio, indices(41, 91))
    assert stops[1].audio_start_s == 0.6 and stops[1].turn_audio_start_s == 0.41


def test_a_long_turn_is_cut_and_the_speech_goes_on_as_the_next_turn() -> None:
    det = detector(max_turn_s=10.0)
    events = run(det, [HI] * 3500 + [LO] * 60)
    stops = [e for _, e in events if isinstance(e, SpeechStopped)]
    starts = [e for _, e in events if isinstance(e, SpeechStarted)]
    assert [s.cut for s in stops] == [True, True, True, False]
    assert [s.audio_start_s for s in starts] == [0.0, 10.0, 20.0, 30.0]
    assert all(s.turn_audio.shape[0] <= 10 * RATE for s in stops)
    # Hard cuts: the turns tile the stream, no sample lost or repeated.
    np.testing.assert_array_equal(np.concatenate([s.turn_audio for s in stops]), indices(0, 3501))
    assert stops[0].audio_end_s == 10.0


def test_a_long_turn_is_cut_at_its_latest_pause() -> None:
    # 3 s of speech then a 0.2 s pause, over and over: the cut falls at the start of the pause
    # that began at 9.4 s, and the next turn starts where that pause ended (9.6 s).
    pattern = [HI] * 300 + [LO] * 20
    det = detector(max_turn_s=10.0, silence_s=0.5)
    events = run(det, pattern * 4 + [LO] * 60)
    stops = [(k, e) for k, e in events if isinstance(e, SpeechStopped)]
    k_cut, cut = stops[0]
    assert cut.cut and cut.audio_end_s == 9.4
    assert k_cut == 999  # the window ending at 10 s: the next one would not fit
    np.testing.assert_array_equal(cut.turn_audio, indices(0, 941))  # the pause's first window is its tail
    paused = [e for _, e in events if isinstance(e, SpeechPaused) and e.audio_end_s == 9.4]
    np.testing.assert_array_equal(paused[0].turn_audio, cut.turn_audio)
    assert events[events.index(stops[0]) + 1] == (999, SpeechStarted(9.6))
    following = stops[1][1]
    assert not following.cut and following.turn_audio_start_s == 9.41  # its prefix starts after the tail


def test_a_pause_too_early_in_the_turn_is_not_where_it_is_cut() -> None:
    # Cutting at the pause at 1 s would leave the next turn 9 s long: cut hard at 10 s instead.
    det = detector(max_turn_s=10.0)
    events = run(det, [HI] * 100 + [LO] * 20 + [HI] * 1000)
    cut = next(e for _, e in events if isinstance(e, SpeechStopped))
    assert cut.cut and cut.audio_end_s == 10.0 and cut.turn_audio.shape[0] == 1000


def test_a_turn_that_reaches_max_turn_in_a_pause_ends_there() -> None:
    det = detector(max_turn_s=5.0, silence_s=2.0)
    events = run(det, [HI] * 400 + [LO] * 300)
    assert kinds(events) == ["SpeechStarted", "SpeechPaused", "SpeechStopped"]
    paused, stopped = events[1][1], events[2][1]
    assert isinstance(paused, SpeechPaused) and isinstance(stopped, SpeechStopped)
    assert stopped.cut and stopped.audio_end_s == 4.0
    np.testing.assert_array_equal(stopped.turn_audio, paused.turn_audio)


def test_memory_is_bounded_between_and_during_turns() -> None:
    det = detector(max_turn_s=10.0)
    most = 0
    for k in range(60 * RATE):
        p = HI if 1000 <= k < 4000 else LO  # silence, 30 s of speech, silence
        det.push(np.array([k], dtype=np.float32), [p])
        most = max(most, det.buffered_samples)
        if k < 1000 or k > 4100:
            assert det.buffered_samples <= 30  # the prefix padding only
    assert most <= 10 * RATE


def test_flush_ends_a_turn_in_progress() -> None:
    det = detector()
    run(det, [HI] * 40)
    (stopped,) = det.flush()
    assert isinstance(stopped, SpeechStopped)
    assert (stopped.audio_end_s, stopped.cut) == (0.4, False)
    np.testing.assert_array_equal(stopped.turn_audio, indices(0, 40))
    assert det.flush() == []

    det = detector()
    run(det, [HI] * 40 + [LO] * 10)
    (stopped,) = det.flush()
    assert isinstance(stopped, SpeechStopped) and stopped.audio_end_s == 0.4
    np.testing.assert_array_equal(stopped.turn_audio, indices(0, 41))

    det = detector()
    run(det, [HI] * 10)  # not yet a turn
    assert det.flush() == []


def test_real_window_sizes_and_samples_pushed_ahead_of_their_probabilities() -> None:
    """16 kHz, 512-sample windows, samples in 20 ms pieces, probabilities pushed later."""
    probabilities = [LO] * 10 + [HI] * 20 + [LO] * 20
    stream = np.arange(len(probabilities) * 512, dtype=np.float32)
    det = TurnDetector(TurnSettings())
    events: list[TurnEvent] = []
    for piece in np.array_split(stream, len(stream) // 320):
        events += det.push(piece, [])
    assert events == []
    events += det.push(np.zeros(0, dtype=np.float32), probabilities)
    assert kinds([(0, e) for e in events]) == ["SpeechStarted", "SpeechPaused", "SpeechStopped"]
    stopped = events[-1]
    assert isinstance(stopped, SpeechStopped)
    assert stopped.audio_start_s == 10 * 512 / 16000 and stopped.audio_end_s == 30 * 512 / 16000
    begin = 10 * 512 - round(0.3 * 16000)
    np.testing.assert_array_equal(stopped.turn_audio, stream[begin : 31 * 512])


def test_bad_input_is_refused() -> None:
    det = TurnDetector()
    with pytest.raises(ValueError, match="2 probabilities need the stream to reach sample 1024"):
        det.push(np.zeros(1000, dtype=np.float32), [0.1, 0.1])
    with pytest.raises(ValueError, match=r"mono with shape \(n,\)"):
        det.push(np.zeros((2, 512), dtype=np.float32), [0.1])
    with pytest.raises(ValueError, match="threshold must be in"):
        TurnSettings(threshold=0.0)
    with pytest.raises(ValueError, match="silence_s must be positive"):
        TurnSettings(silence_s=0.0)
    with pytest.raises(ValueError, match="must not be negative"):
        TurnSettings(prefix_padding_s=-0.1)
    with pytest.raises(ValueError, match="max_turn_s must be finite"):
        TurnSettings(max_turn_s=0.5)
    with pytest.raises(ValueError, match="must leave room"):
        TurnDetector(TurnSettings(max_turn_s=0.58))  # 0.3 + 0.256 + 0.032 > 0.58 in 32 ms windows
    with pytest.raises(ValueError, match="must be positive"):
        TurnDetector(window_samples=0)
    assert TurnSettings(threshold=0.1).neg_threshold == 0.01
