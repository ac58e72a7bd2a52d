"""The streamed turn's control flow, with a fake engine: what the worker feeds,
when it closes the audio early in a pause, and how it reopens it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_assistant.llm.audio_turn import CLIP_SAMPLES, TurnReply, TurnStats
from edge_assistant.llm.clip_encoder import samples_for_blocks
from edge_assistant.turn import FIRST_STEP_SAMPLES, SpeechStream, next_step_end, respond_streamed


class RecordingTurn:
    """Stands in for AudioTurn: records the calls the worker makes."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.stats = TurnStats()
        self.fed = 0
        self.step_taken = threading.Event()
        self.reply = ["reply"]
        self.token_gate: threading.Semaphore | None = None
        self.feed_gate = threading.Event()  # cleared: a feed holds the worker, as a long step would
        self.feed_gate.set()
        self.feeding = threading.Event()

    def note_speech_end(self) -> None:
        self.calls.append(("speech_end",))

    def feed(self, samples: np.ndarray, evaluate: bool = True) -> None:
        self.fed += len(samples)
        self.calls.append(("feed", len(samples), evaluate))
        self.step_taken.set()
        self.feeding.set()
        assert self.feed_gate.wait(5.0)

    def end_audio(self, keep_samples: int | None = None, early: bool = False) -> None:
        self.calls.append(("end_audio", keep_samples, early))
        self.step_taken.set()

    def reopen_audio(self) -> None:
        self.calls.append(("reopen",))
        self.stats.generated_tokens = 0

    def generate(self, on_text=None, started=None, between_tokens=None) -> str:  # noqa: ANN001
        """Says ``reply`` one word per token; ``token_gate`` (if set) is waited on
        before each, so a test can act while the reply is generated ahead."""
        self.calls.append(("generate",))
        text = ""
        for word in self.reply:
            if self.token_gate is not None:
                self.token_gate.acquire()
            if between_tokens is not None:
                between_tokens()
            self.stats.generated_tokens += 1
            text += word
            if on_text is not None:
                on_text(word)
            self.calls.append(("token", word))
        self.stats.stopped_by = "end_of_turn"
        return text

    def finish(self, interruption=None) -> None:  # noqa: ANN001
        self.calls.append(("finish", self.stats.stopped_by))


class FakeEngine:
    def __init__(self) -> None:
        self.turn = RecordingTurn()

    def begin_turn(self, expected_seconds: float, interruption=None) -> RecordingTurn:  # noqa: ANN001
        return self.turn


def start_worker(
    stream: SpeechStream, on_text=None, engine: FakeEngine | None = None  # noqa: ANN001
) -> tuple[FakeEngine, threading.Thread, list[TurnReply]]:
    engine, replies = engine or FakeEngine(), []
    worker = threading.Thread(target=lambda: replies.append(respond_streamed(engine, stream, on_text)), daemon=True)
    worker.start()
    return engine, worker, replies


def settle(stream: SpeechStream) -> None:
    assert stream.taken(5.0)


def without_speech_end(calls: list[tuple]) -> list[tuple]:
    return [call for call in calls if call[0] != "speech_end"]


def test_a_step_waits_for_two_more_encoder_blocks_to_be_final() -> None:
    """Steps end where the encoder can finish whole blocks (one sample past them),
    counted in the 30 s clip being heard; a lagging step's partial block counts."""
    assert FIRST_STEP_SAMPLES == next_step_end(0) == samples_for_blocks(2) == 15361
    assert next_step_end(FIRST_STEP_SAMPLES) == samples_for_blocks(4)
    assert next_step_end(FIRST_STEP_SAMPLES + 5000) == samples_for_blocks(4)
    assert next_step_end(samples_for_blocks(4) - 1) == samples_for_blocks(5)  # 3 blocks final there
    assert next_step_end(CLIP_SAMPLES) == CLIP_SAMPLES + samples_for_blocks(2)
    assert next_step_end(CLIP_SAMPLES + 100, blocks=1) == CLIP_SAMPLES + samples_for_blocks(1)


def test_a_worker_that_lags_takes_all_it_has_heard() -> None:
    stream = SpeechStream(30.0)
    engine, worker, _ = start_worker(stream)
    engine.turn.feed_gate.clear()
    stream.append(np.zeros(FIRST_STEP_SAMPLES, dtype=np.float32))
    assert engine.turn.feeding.wait(5.0)  # the worker is busy with its first step while the speaker goes on
    stream.append(np.zeros(3 * FIRST_STEP_SAMPLES, dtype=np.float32))
    engine.turn.feed_gate.set()
    settle(stream)
    stream.discard()
    worker.join(5.0)
    assert without_speech_end(engine.turn.calls)[:2] == [("feed", FIRST_STEP_SAMPLES, True), ("feed", 3 * FIRST_STEP_SAMPLES, True)]


def test_a_lasting_pause_closes_the_turn_before_the_endpoint() -> None:
    stream = SpeechStream(30.0)
    engine, worker, replies = start_worker(stream)
    stream.append(np.zeros(FIRST_STEP_SAMPLES, dtype=np.float32))
    settle(stream)
    stream.append(np.zeros(3000, dtype=np.float32))
    stream.pause(FIRST_STEP_SAMPLES + 1000)  # the silence started 2000 samples ago
    settle(stream)
    assert ("end_audio", FIRST_STEP_SAMPLES + 1000, True) in engine.turn.calls
    stream.append(np.zeros(5000, dtype=np.float32))  # more silence: nothing to do
    settle(stream)
    stream.end(FIRST_STEP_SAMPLES + 1000)
    worker.join(5.0)
    assert without_speech_end(engine.turn.calls) == [
        ("feed", FIRST_STEP_SAMPLES, True),
        ("feed", 3000, False),  # the pause's step is encoded once, to its end
        ("end_audio", FIRST_STEP_SAMPLES + 1000, True),
        ("generate",),
        ("token", "reply"),
        ("finish", "end_of_turn"),
    ]
    assert ("speech_end",) in engine.turn.calls
    assert len(stream.samples) == FIRST_STEP_SAMPLES + 1000
    assert replies[0].text == "reply"


def test_speech_after_a_pause_reopens_the_audio_and_feeds_on() -> None:
    stream = SpeechStream(30.0)
    engine, worker, _ = start_worker(stream)
    stream.append(np.zeros(FIRST_STEP_SAMPLES, dtype=np.float32))
    stream.pause(FIRST_STEP_SAMPLES - 500)
    settle(stream)
    stream.resume()
    stream.append(np.ones(FIRST_STEP_SAMPLES, dtype=np.float32))
    settle(stream)
    stream.end(2 * FIRST_STEP_SAMPLES)
    worker.join(5.0)
    assert without_speech_end(engine.turn.calls) == [
        ("feed", FIRST_STEP_SAMPLES, False),
        ("end_audio", FIRST_STEP_SAMPLES - 500, True),
        ("generate",),
        ("token", "reply"),
        ("reopen",),
        ("feed", FIRST_STEP_SAMPLES, True),
        ("end_audio", 2 * FIRST_STEP_SAMPLES, False),
        ("generate",),
        ("token", "reply"),
        ("finish", "end_of_turn"),
    ]


def test_an_end_other_than_the_pause_reopens_and_ends_there() -> None:
    """A revoked noise frame moves the end of speech: the early close is undone."""
    stream = SpeechStream(30.0)
    engine, worker, _ = start_worker(stream)
    stream.append(np.zeros(FIRST_STEP_SAMPLES, dtype=np.float32))
    stream.pause(FIRST_STEP_SAMPLES - 500)
    settle(stream)
    stream.end(FIRST_STEP_SAMPLES - 3000)
    worker.join(5.0)
    assert without_speech_end(engine.turn.calls)[1:] == [
        ("end_audio", FIRST_STEP_SAMPLES - 500, True),
        ("generate",),
        ("token", "reply"),
        ("reopen",),
        ("end_audio", FIRST_STEP_SAMPLES - 3000, False),
        ("generate",),
        ("token", "reply"),
        ("finish", "end_of_turn"),
    ]
    assert len(stream.samples) == FIRST_STEP_SAMPLES - 3000


def test_a_pause_beyond_what_was_fed_waits_for_that_audio() -> None:
    """The worker closes early only on audio it has fed: a pause reported before
    its samples were taken makes them due at once, whatever the step size."""
    stream = SpeechStream(30.0)
    engine, worker, _ = start_worker(stream)
    stream.append(np.zeros(FIRST_STEP_SAMPLES, dtype=np.float32))
    settle(stream)
    stream.append(np.zeros(800, dtype=np.float32))  # far less than a step
    stream.pause(FIRST_STEP_SAMPLES + 400)
    settle(stream)
    assert without_speech_end(engine.turn.calls)[-4:-2] == [("feed", 800, False), ("end_audio", FIRST_STEP_SAMPLES + 400, True)]
    stream.discard()
    worker.join(5.0)
    assert engine.turn.calls[-1] == ("finish", "cancelled")


@pytest.mark.parametrize("when", ["before", "after"])
def test_the_end_is_noted_the_moment_it_happens(when: str) -> None:
    stream = SpeechStream(30.0)
    noted = []
    if when == "after":
        stream.when_ended(lambda: noted.append("ended"))
        assert noted == []
    stream.end(100)
    if when == "before":
        stream.when_ended(lambda: noted.append("ended"))
    assert noted == ["ended"]


def wait_for(condition, timeout: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def first_token_ahead_in_a_pause():  # noqa: ANN201
    """A worker that closed the audio early in a pause and has generated the first
    of its two tokens ahead; the next waits for ``engine.turn.token_gate``.
    Returns (stream, engine, worker, replies, text received by the speaker)."""
    stream, received = SpeechStream(30.0), []
    engine = FakeEngine()
    engine.turn.reply, engine.turn.token_gate = ["Hello", " there"], threading.Semaphore(0)
    engine, worker, replies = start_worker(stream, received.append, engine)
    stream.append(np.zeros(FIRST_STEP_SAMPLES, dtype=np.float32))
    stream.pause(FIRST_STEP_SAMPLES - 500)
    settle(stream)
    engine.turn.token_gate.release()
    wait_for(lambda: ("token", "Hello") in engine.turn.calls)
    return stream, engine, worker, replies, received


def test_a_reply_generated_in_the_pause_is_held_until_the_endpoint_confirms() -> None:
    stream, engine, worker, replies, received = first_token_ahead_in_a_pause()
    assert received == []  # nothing is spoken before the endpoint
    stream.end(FIRST_STEP_SAMPLES - 500)
    engine.turn.token_gate.release()
    worker.join(5.0)
    assert received == ["Hello", " there"]
    assert replies[0].text == "Hello there"
    assert "reopen" not in [call[0] for call in engine.turn.calls]


def test_speech_after_the_pause_drops_the_reply_generated_in_it() -> None:
    stream, engine, worker, replies, received = first_token_ahead_in_a_pause()
    stream.resume()  # the speaker goes on
    stream.append(np.ones(FIRST_STEP_SAMPLES, dtype=np.float32))
    gate, engine.turn.token_gate = engine.turn.token_gate, None  # from now on tokens come at once
    gate.release()
    wait_for(lambda: ("reopen",) in engine.turn.calls)
    settle(stream)
    stream.end(2 * FIRST_STEP_SAMPLES)
    worker.join(5.0)
    calls = without_speech_end(engine.turn.calls)
    assert calls[calls.index(("reopen",)) - 2 : calls.index(("reopen",)) + 1] == [
        ("generate",), ("token", "Hello"), ("reopen",)
    ]
    assert calls[-6:] == [
        ("feed", FIRST_STEP_SAMPLES, True),
        ("end_audio", 2 * FIRST_STEP_SAMPLES, False),
        ("generate",),
        ("token", "Hello"),
        ("token", " there"),
        ("finish", "end_of_turn"),
    ]
    assert received == ["Hello", " there"]  # only the answer to the whole question
    assert replies[0].text == "Hello there"


def test_a_stream_discarded_while_the_reply_is_generated_ahead_cancels_the_turn() -> None:
    stream, engine, worker, _, received = first_token_ahead_in_a_pause()
    stream.discard()
    engine.turn.token_gate.release()
    worker.join(5.0)
    assert engine.turn.calls[-1] == ("finish", "cancelled")
    assert received == []
