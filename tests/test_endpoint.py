"""Streaming endpointing: where an utterance starts and ends in a live stream."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pytest

from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Audio
from edge_assistant.config import AudioConfig, EndpointConfig
from edge_assistant.endpoint import Endpointer, SpeechStarted, UtteranceDiscarded, UtteranceEnded
from edge_assistant.vad import find_speech

from speech import BLOCK, NOISE_KINDS, audible_extent, band_music, block_db, concat, dbfs, noise, silence, speak, television, voiced_db


def run(samples: np.ndarray, config: EndpointConfig = EndpointConfig(), frame_ms: int = 30) -> list[object]:
    endpointer = Endpointer(config, aggressiveness=2, frame_ms=frame_ms, padding_ms=AudioConfig().speech_padding_ms)
    size = endpointer.frame_samples
    events = []
    for start in range(0, len(samples) - size + 1, size):
        event = endpointer.push(samples[start : start + size], start + size)
        if event is not None:
            events.append(event)
    return events


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_one_question_one_utterance_with_pre_roll(frame_ms: int) -> None:
    question = speak("Set a timer for ten minutes.")
    stream = concat(silence(1.0), question.samples + noise(question.seconds, 0.002), silence(2.0))
    events = run(stream.samples, frame_ms=frame_ms)
    assert [type(event) for event in events] == [SpeechStarted, UtteranceEnded]
    started, ended = events
    assert 0.9 * MODEL_SAMPLE_RATE < started.at_sample < 1.4 * MODEL_SAMPLE_RATE
    assert ended.start_sample <= started.at_sample - 0.2 * MODEL_SAMPLE_RATE  # pre-roll kept
    assert abs(ended.speech_end_sample / MODEL_SAMPLE_RATE - (1.0 + question.seconds)) < 0.4
    assert not ended.forced
    assert question.seconds - 0.3 < len(ended.samples) / MODEL_SAMPLE_RATE < question.seconds + 0.8


def test_pause_shorter_than_end_silence_stays_one_utterance() -> None:
    first, second = speak("Remind me tomorrow"), speak("to call my mother.")
    stream = concat(silence(0.5), first, silence(0.4), second, silence(1.5))
    ended = [event for event in run(stream.samples) if isinstance(event, UtteranceEnded)]
    assert len(ended) == 1


def test_two_questions_two_utterances() -> None:
    stream = concat(silence(0.5), speak("What time is it?"), silence(2.0), speak("And the date?"), silence(1.5))
    assert sum(isinstance(event, UtteranceEnded) for event in run(stream.samples)) == 2


def test_long_speech_is_cut_at_the_maximum() -> None:
    sentence = speak("This goes on and on without any pause at all")
    stream = concat(*([sentence] * 6), silence(1.0))
    config = EndpointConfig(max_speech_seconds=4.0)
    ended = [event for event in run(stream.samples, config) if isinstance(event, UtteranceEnded)]
    assert ended[0].forced
    assert len(ended[0].samples) <= (4.0 + 0.3 + 0.2) * MODEL_SAMPLE_RATE  # + pre-roll and padding


def test_too_little_speech_is_discarded() -> None:
    grunt = speak("Hm").samples[: int(0.25 * MODEL_SAMPLE_RATE)]
    events = run(concat(silence(0.5), grunt, silence(1.5)).samples, EndpointConfig(min_speech_ms=400))
    assert [type(event) for event in events] == [SpeechStarted, UtteranceDiscarded]


# -- one-word answers ------------------------------------------------------------
# "Yes." to a confirmation: its loud part is about 200 ms and its "s" is 14 dB
# softer. It must be one utterance, whether the speaker's level is new or carried
# over from the question before it (a confirmation, a follow-up), and the
# one-shot trimming must find it whole.

ANSWERS = ("Yes.", "No.")
NOISE_FLOOR = 0.002  # -54 dBFS white noise under everything


def with_floor(*parts) -> np.ndarray:
    stream = concat(*parts).samples
    return stream + noise(len(stream) / MODEL_SAMPLE_RATE, NOISE_FLOOR)


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
@pytest.mark.parametrize("answer", ANSWERS)
def test_a_one_word_answer_is_an_utterance(answer: str, frame_ms: int) -> None:
    events = run(with_floor(silence(0.5), speak(answer), silence(1.5)), frame_ms=frame_ms)
    assert [type(event) for event in events] == [SpeechStarted, UtteranceEnded]


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
@pytest.mark.parametrize("answer", ANSWERS)
def test_a_one_word_answer_after_a_question_is_an_utterance_from_its_onset(answer: str, frame_ms: int) -> None:
    """The question's level is carried over (a follow-up must reach it); the
    answer, said as loud, is heard from its first syllable."""
    question, spoken = speak("Make the marker."), speak(answer)
    answer_at = 0.5 + question.seconds + 3.0
    events = run(with_floor(silence(0.5), question, silence(3.0), spoken, silence(1.5)), frame_ms=frame_ms)
    assert [type(event) for event in events] == [SpeechStarted, UtteranceEnded] * 2
    onset = (answer_at * MODEL_SAMPLE_RATE + audible_extent(spoken.samples)[0])
    assert events[2].at_sample <= onset + 0.06 * MODEL_SAMPLE_RATE
    assert events[3].start_sample <= onset - 0.2 * MODEL_SAMPLE_RATE  # the pre-roll before it


@pytest.mark.parametrize("text", [*ANSWERS, "What time is it?"])
def test_find_speech_keeps_a_short_clip_whole(text: str) -> None:
    """--once: a one-word clip is speech, and the span (its padding included, as
    --once trims) keeps the first word's onset and the last word's end."""
    spoken = speak(text).samples
    start, end = audible_extent(spoken)
    lead = int(0.5 * MODEL_SAMPLE_RATE)
    clip = Audio(with_floor(silence(0.5), spoken, silence(1.0)), MODEL_SAMPLE_RATE)
    span = find_speech(clip, 2, EndpointConfig().min_speech_ms, AudioConfig().speech_padding_ms)
    assert span.start <= lead + start and span.end >= lead + end


def test_silence_and_faint_noise_produce_nothing() -> None:
    assert run(concat(silence(3.0), noise(3.0, 0.003)).samples) == []


# -- background noise -----------------------------------------------------------
# The end of an utterance must be found within end_silence_ms + 300 ms in steady
# noise up to -35 dBFS, and when noise starts or rises during or right after the
# question, whenever the speech is 15 dB or more above it; noise alone must not
# make a turn. Speech is Piper's, its voiced part at SPEECH_DB (RMS).

SPEECH_DB = -18.0
QUIET_SPEECH_DB = -30.0
END_TOLERANCE_MS = 300
LEAD_SECONDS, TAIL_SECONDS = 1.0, 2.5
QUESTIONS = ("Set a timer for ten minutes.", "What is the tallest mountain in Europe?")
QUESTION_AT_ONCE_SAMPLES = 10 * BLOCK  # the stream begins 100 ms before the speech
AUDIBLE_BELOW_VOICED_DB = 30.0  # softer blocks do not count to the speech's extent


@dataclass(frozen=True)
class Scene:
    """The speech alone, placed in a stream, and its 10 ms block levels."""

    speech: np.ndarray
    levels_db: np.ndarray
    voiced_db: float

    def with_background(self, background: np.ndarray) -> np.ndarray:
        return self.speech + background[: len(self.speech)]

    def extent(self, noise_db: float = -np.inf) -> tuple[int, int]:
        """Where the speech is (input samples): blocks within AUDIBLE_BELOW_VOICED_DB
        of its voiced level and louder than the noise at the end (a last "s"
        drowned in noise cannot be found, nor heard)."""
        audible = np.flatnonzero(self.levels_db > max(self.voiced_db - AUDIBLE_BELOW_VOICED_DB, noise_db))
        return int(audible[0]) * BLOCK, (int(audible[-1]) + 1) * BLOCK


@lru_cache(maxsize=None)
def scene(text: str, level_db: float = SPEECH_DB) -> Scene:
    """``text`` with its voiced part at ``level_db`` RMS, after LEAD_SECONDS and
    before TAIL_SECONDS of nothing."""
    spoken = speak(text).samples.astype(np.float64)
    spoken *= dbfs(level_db - voiced_db(spoken))
    stream = concat(silence(LEAD_SECONDS), spoken.astype(np.float32), silence(TAIL_SECONDS)).samples
    stream.flags.writeable = False
    return Scene(stream, block_db(stream), level_db)


def background(kind: str, level_db: float, length: int, seed: int = 1) -> np.ndarray:
    return noise(length / MODEL_SAMPLE_RATE + 0.01, dbfs(level_db), seed=seed, kind=kind)[:length]


def from_sample(length: int, at: int) -> np.ndarray:
    """A gain of 0 before ``at`` and 1 from it: noise that starts there."""
    return (np.arange(length) >= at).astype(np.float32)


def ramp_db(length: int, start: int, end: int, from_db: float, to_db: float) -> np.ndarray:
    """A gain rising in dB from ``from_db`` at ``start`` to ``to_db`` at ``end``, flat outside."""
    position = np.clip((np.arange(length) - start) / (end - start), 0.0, 1.0)
    return dbfs(from_db + (to_db - from_db) * position).astype(np.float32)


@dataclass(frozen=True)
class Case:
    where: Scene
    stream: np.ndarray
    noise_db: float  # the background's level when the speech ends


def steady(kind: str, level_db: float, text: str = QUESTIONS[0], speech_db: float = SPEECH_DB) -> Case:
    where = scene(text, speech_db)
    return Case(where, where.with_background(background(kind, level_db, len(where.speech))), level_db)


def gated_then_noise(kind: str) -> Case:
    """A noise gate or suppressor: digital silence under the speech, then noise at
    -54 dBFS from the moment it ends (webrtcvad alone took all of it for speech)."""
    where = scene(QUESTIONS[0])
    length = len(where.speech)
    after = background(kind, -54.0, length) * from_sample(length, where.extent()[1])
    return Case(where, where.with_background(after), -54.0)


def room_then_appliance(kind: str) -> Case:
    """A -66 dBFS room; a fan or a kettle at -46 dBFS starts right after the question."""
    where = scene(QUESTIONS[0])
    length = len(where.speech)
    room = background("pink", -66.0, length, seed=2)
    appliance = background(kind, -46.0, length) * from_sample(length, where.extent()[1])
    return Case(where, where.with_background(room + appliance), -46.0)


def rising_during(kind: str) -> Case:
    """Noise rising from -60 to -38 dBFS over the question, then steady."""
    where = scene(QUESTIONS[1])
    length = len(where.speech)
    start, end = where.extent()
    rising = background(kind, 0.0, length) * ramp_db(length, start, end, -60.0, -38.0)
    return Case(where, where.with_background(rising), -38.0)


def run_timed(samples: np.ndarray, frame_ms: int = 30) -> list[tuple[object, int]]:
    """Each event and the end_sample of the frame that produced it."""
    endpointer = Endpointer(EndpointConfig(), aggressiveness=2, frame_ms=frame_ms, padding_ms=AudioConfig().speech_padding_ms)
    size = endpointer.frame_samples
    events = []
    for start in range(0, len(samples) - size + 1, size):
        event = endpointer.push(samples[start : start + size], start + size)
        if event is not None:
            events.append((event, start + size))
    return events


def end_delays_ms(case: Case, frame_ms: int = 30, background_talks: bool = False) -> tuple[float, float]:
    """(reported speech end − true end, utterance-ended event − true end) in ms,
    after checking the stream gave one utterance that keeps all of the speech
    (``background_talks``: the first; the background alone makes more later)."""
    start, end = case.where.extent(case.noise_db)
    ended = [(event, at) for event, at in run_timed(case.stream, frame_ms) if isinstance(event, UtteranceEnded)]
    assert len(ended) == 1 or (background_talks and ended), f"{len(ended)} utterances"
    utterance, at = ended[0]
    assert not utterance.forced
    assert utterance.start_sample <= start, "the first word was clipped"
    assert utterance.start_sample + len(utterance.samples) >= end, "the last word was clipped"
    to_ms = 1000 / MODEL_SAMPLE_RATE
    return (utterance.speech_end_sample - end) * to_ms, (at - end) * to_ms


def assert_ends_in_time(case: Case, frame_ms: int = 30) -> None:
    speech_end_ms, event_ms = end_delays_ms(case, frame_ms)
    assert speech_end_ms <= END_TOLERANCE_MS
    assert event_ms <= EndpointConfig().end_silence_ms + END_TOLERANCE_MS


@pytest.mark.parametrize("text", QUESTIONS)
@pytest.mark.parametrize("level_db", [-45.0, -40.0, -35.0])
@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_end_found_in_steady_noise(kind: str, level_db: float, text: str) -> None:
    assert_ends_in_time(steady(kind, level_db, text))


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_quiet_speech_ends_in_noise_15_db_below(kind: str) -> None:
    assert_ends_in_time(steady(kind, QUIET_SPEECH_DB - 15, speech_db=QUIET_SPEECH_DB))


def test_quiet_speech_in_silence() -> None:
    where = scene(QUESTIONS[0], QUIET_SPEECH_DB)
    assert_ends_in_time(Case(where, where.speech, -np.inf))


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_question_at_once_in_noise(kind: str) -> None:
    """After a wake word the endpointer starts afresh (reset) with the question
    already under way: no noise heard alone before it."""
    where = scene(QUESTIONS[0])
    start = where.extent()[0] - QUESTION_AT_ONCE_SAMPLES
    at_once = Scene(where.speech[start:], where.levels_db[start // BLOCK :], where.voiced_db)
    under = background(kind, -35.0, len(at_once.speech))
    assert_ends_in_time(Case(at_once, at_once.with_background(under), -35.0))


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_gated_speech_then_noise_ends(kind: str, frame_ms: int) -> None:
    assert_ends_in_time(gated_then_noise(kind), frame_ms)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_starting_after_the_question_in_a_quiet_room(kind: str) -> None:
    assert_ends_in_time(room_then_appliance(kind))


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_rising_during_the_question(kind: str) -> None:
    assert_ends_in_time(rising_during(kind))


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_find_speech_ends_where_the_speech_ends_when_noise_follows(kind: str) -> None:
    """The one-shot trimming (--once) makes the same decision per frame."""
    case = gated_then_noise(kind)
    start, end = case.where.extent(case.noise_db)
    padding = 200 * MODEL_SAMPLE_RATE // 1000
    span = find_speech(Audio(case.stream, MODEL_SAMPLE_RATE), 2, EndpointConfig().min_speech_ms, padding_ms=200)
    assert span.start <= start and end <= span.end <= end + END_TOLERANCE_MS * MODEL_SAMPLE_RATE // 1000 + padding


# -- a talking room ---------------------------------------------------------------
# A television, music or both 15 dB under the speaker (voiced levels): webrtcvad
# hears a voice in them and the noise floor cannot follow them, so only the
# speaker's own level tells the end (issue 26). The end must come within
# end_silence_ms + 500 ms and keep all of the question; scripts/bench_endpoint.py
# measures the whole grid of levels, speeds and backgrounds.

TALKING_TOLERANCE_MS = 500
TALKING_KINDS = ("television", "music", "television+music")


def talking(kind: str, level_db: float, length: int, seed: int = 1) -> np.ndarray:
    seconds = length / MODEL_SAMPLE_RATE + 0.1
    parts = []
    if "television" in kind:
        parts.append(television(seconds, level_db, seed)[:length])
    if "music" in kind:
        parts.append(band_music(seconds, level_db - (6.0 if parts else 0.0), seed)[:length])
    return sum(parts)


def over_talking(kind: str, text: str, under_db: float = 15.0, speech_db: float = SPEECH_DB, at_once: bool = False) -> Case:
    """The question over ``kind`` ``under_db`` under it, the background alone for
    a second before it (a pause after the wake word, or no wake word), or only
    100 ms (``at_once``: the question in the wake word's breath)."""
    where = scene(text, speech_db)
    if at_once:
        start = where.extent()[0] - QUESTION_AT_ONCE_SAMPLES
        where = Scene(where.speech[start:], where.levels_db[start // BLOCK :], where.voiced_db)
    level = speech_db - under_db
    return Case(where, where.with_background(talking(kind, level, len(where.speech))), level)


def assert_ends_in_a_talking_room(case: Case) -> None:
    speech_end_ms, event_ms = end_delays_ms(case, background_talks=True)
    assert speech_end_ms <= TALKING_TOLERANCE_MS
    assert event_ms <= EndpointConfig().end_silence_ms + TALKING_TOLERANCE_MS


@pytest.mark.parametrize("at_once", [False, True], ids=["background-first", "at-once"])
@pytest.mark.parametrize("text", QUESTIONS)
@pytest.mark.parametrize("kind", TALKING_KINDS)
def test_end_found_over_a_talking_background(kind: str, text: str, at_once: bool) -> None:
    assert_ends_in_a_talking_room(over_talking(kind, text, at_once=at_once))


def test_quiet_speaker_over_a_television_15_db_below() -> None:
    assert_ends_in_a_talking_room(over_talking("television", QUESTIONS[1], speech_db=QUIET_SPEECH_DB))


def test_television_alone_starts_utterances_unless_below_the_gate() -> None:
    """With wake.model = "none" a television makes turns: webrtcvad hears a voice
    and nothing nearer sets a level. endpoint.min_level_dbfs above its level
    keeps it out, while a question near the microphone is still heard whole."""
    length = int(NOISE_ONLY_SECONDS * MODEL_SAMPLE_RATE)
    tv = talking("television", -45.0, length)
    started = [event for event, _ in run_timed(tv) if isinstance(event, SpeechStarted)]
    assert started, "the television alone started no utterance: the README's warning would be wrong"
    gated = EndpointConfig(min_level_dbfs=-38.0)
    assert run(tv, gated) == []
    where = scene(QUESTIONS[1])
    stream = where.with_background(talking("television", -45.0, len(where.speech)))
    ended = [event for event in run(stream, gated) if isinstance(event, UtteranceEnded)]
    start, end = where.extent(-45.0)
    assert len(ended) == 1
    assert ended[0].start_sample <= start and ended[0].start_sample + len(ended[0].samples) >= end
    assert ended[0].start_sample >= start - 0.5 * MODEL_SAMPLE_RATE  # the television before it is not in it


def test_find_speech_keeps_only_the_question_from_a_television_around_it() -> None:
    """--once: a television before and after the question, 15 dB under it, is
    not speech; the span is the question with its padding."""
    case = over_talking("television", QUESTIONS[1])
    start, end = case.where.extent(case.noise_db)
    padding = AudioConfig().speech_padding_ms * MODEL_SAMPLE_RATE // 1000
    span = find_speech(Audio(case.stream, MODEL_SAMPLE_RATE), 2, EndpointConfig().min_speech_ms, AudioConfig().speech_padding_ms)
    tolerance = END_TOLERANCE_MS * MODEL_SAMPLE_RATE // 1000
    assert start - padding - tolerance <= span.start <= start
    assert end <= span.end <= end + padding + tolerance


NOISE_ONLY_SECONDS = 10.0
STEP_SECONDS = 2.5


def noise_alone(kind: str, shape: str) -> np.ndarray:
    length = int(NOISE_ONLY_SECONDS * MODEL_SAMPLE_RATE)
    if shape == "steady":
        return background(kind, -35.0, length)
    if shape == "onset":  # digital silence, then noise
        return background(kind, -35.0, length) * from_sample(length, 2 * MODEL_SAMPLE_RATE)
    steps = np.repeat(np.array([-60.0, -50.0, -42.0, -35.0]), int(STEP_SECONDS * MODEL_SAMPLE_RATE))[:length]
    return background(kind, 0.0, length) * dbfs(steps).astype(np.float32)


@pytest.mark.parametrize("shape", ["steady", "onset", "steps"])
@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_noise_alone_makes_no_utterance(kind: str, shape: str) -> None:
    """At most a start that is then discarded; never a turn."""
    events = [type(event) for event, _ in run_timed(noise_alone(kind, shape))]
    assert UtteranceEnded not in events


def delay_table() -> str:
    """The measured end delays, for tuning: ``python tests/test_endpoint.py``."""
    rows = [f"{'kind':6s} {'case':22s} {'speech end ms':>13s} {'event ms':>9s}"]
    for kind in NOISE_KINDS:
        cases = {
            **{f"steady {level:.0f} {text.split()[0]}": steady(kind, level, text) for text in QUESTIONS for level in (-45.0, -40.0, -35.0)},
            f"quiet speech, {QUIET_SPEECH_DB - 15:.0f}": steady(kind, QUIET_SPEECH_DB - 15, speech_db=QUIET_SPEECH_DB),
            "gated, then -54": gated_then_noise(kind),
            "room -66, then -46": room_then_appliance(kind),
            "rising -60 to -38": rising_during(kind),
        }
        for name, case in cases.items():
            try:
                speech_end, event = end_delays_ms(case)
                rows.append(f"{kind:6s} {name:22s} {speech_end:13.0f} {event:9.0f}")
            except AssertionError as error:
                rows.append(f"{kind:6s} {name:22s} failed: {error}")
    return "\n".join(rows)


if __name__ == "__main__":
    print(delay_table())
