"""Streaming endpointing: where an utterance starts and ends in a live stream."""

from __future__ import annotations

import numpy as np
import pytest

from edge_assistant.audio_io import MODEL_SAMPLE_RATE
from edge_assistant.config import EndpointConfig
from edge_assistant.vad import Endpointer, SpeechStarted, UtteranceDiscarded, UtteranceEnded

from speech import concat, noise, silence, speak


def run(samples: np.ndarray, config: EndpointConfig = EndpointConfig(), frame_ms: int = 30) -> list[object]:
    endpointer = Endpointer(config, aggressiveness=2, frame_ms=frame_ms)
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


def test_silence_and_faint_noise_produce_nothing() -> None:
    assert run(concat(silence(3.0), noise(3.0, 0.003)).samples) == []
