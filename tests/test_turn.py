"""One turn with a scripted engine and the real Piper voice: the reply is spoken
while it is still being generated, and hidden blocks are never spoken."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pytest

from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Audio
from edge_assistant.llm.audio_turn import TurnReply, TurnStats
from edge_assistant.tts import PiperSpeech, StreamingSpeaker
from edge_assistant.turn import run_turn

from speech import VOICE_PATH


class ScriptedEngine:
    """Streams a fixed reply in small pieces, slowly, like a model on a Pi."""

    def __init__(self, reply: str, seconds_per_piece: float = 0.02) -> None:
        self.reply = reply
        self.delay = seconds_per_piece
        self.finished_at = 0.0

    def respond(
        self, samples: np.ndarray, on_text: Callable[[str], None] | None = None, tools: object = None, interruption=None
    ) -> TurnReply:
        for start in range(0, len(self.reply), 3):
            time.sleep(self.delay)
            if on_text:
                on_text(self.reply[start : start + 3])
        self.finished_at = time.perf_counter()
        return TurnReply(self.reply, TurnStats(generated_tokens=len(self.reply) // 3, stopped_by="end_of_turn"))


class RecordingSink:
    def __init__(self) -> None:
        self.writes: list[tuple[float, int]] = []

    def write(self, samples: np.ndarray, sample_rate: int) -> None:
        self.writes.append((time.perf_counter(), len(samples)))

    @property
    def written(self) -> int:
        return sum(count for _, count in self.writes)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def voice() -> PiperSpeech:
    return PiperSpeech(VOICE_PATH)


QUESTION = Audio(np.zeros(MODEL_SAMPLE_RATE, dtype=np.float32), MODEL_SAMPLE_RATE)


def test_first_sentence_is_spoken_while_the_rest_is_generated(voice: PiperSpeech) -> None:
    reply = "It is sunny. " + "Later in the afternoon some clouds will come in from the west. " * 4
    engine = ScriptedEngine(reply)
    sink = RecordingSink()
    result = run_turn(engine, QUESTION, StreamingSpeaker(voice, sink), time.perf_counter())
    assert len(sink.writes) == 5
    assert sink.writes[0][0] < engine.finished_at  # audio before the model finished
    assert result.timings_ms["tts_first_audio"] < result.timings_ms["generate_total"]
    assert result.sentences[0] == "It is sunny."


def test_thought_block_is_never_spoken(voice: PiperSpeech) -> None:
    engine = ScriptedEngine("<|channel>thought\nThe user wants the time. Say it.<channel|>It is five o'clock.")
    sink = RecordingSink()
    result = run_turn(engine, QUESTION, StreamingSpeaker(voice, sink), time.perf_counter())
    assert result.reply == "It is five o'clock."
    assert result.sentences == ["It is five o'clock."]
    assert len(sink.writes) == 1


def test_speaker_errors_reach_the_turn(voice: PiperSpeech) -> None:
    class BrokenSink(RecordingSink):
        def write(self, samples: np.ndarray, sample_rate: int) -> None:
            raise OSError("device vanished")

    with pytest.raises(OSError, match="device vanished"):
        run_turn(ScriptedEngine("Hello there."), QUESTION, StreamingSpeaker(voice, BrokenSink()), time.perf_counter())


def test_without_a_speaker_only_text(voice: PiperSpeech) -> None:
    result = run_turn(ScriptedEngine("One. Two."), QUESTION, None, time.perf_counter())
    assert result.sentences == ["One.", "Two."]
    assert "tts_first_audio" not in result.timings_ms
