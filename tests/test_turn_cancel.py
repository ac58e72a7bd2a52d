"""Cancels that reach their own turn (issue 22, defects 2, 3, 7): the turn
runner with turns the test controls, no model, no timing: each worker's steps
are released by the test in the order it chooses."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest

from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Audio
from edge_assistant.audio.playback import RecordingPlayback
from edge_assistant.config import Config
from edge_assistant.daemon.confirmation import ConfirmationDialog
from edge_assistant.daemon.events import EventLog
from edge_assistant.daemon.turn_runner import TurnRunner
from edge_assistant.llm.audio_turn import TurnCancelled
from edge_assistant.systemd import Notifier
from edge_assistant.tools import FunctionTool, Toolbox, ToolResult
from edge_assistant.turn import SpeechStream

from test_turn_watchdog import FakeEngine, SilentVoice, result

QUESTION = Audio(np.zeros(MODEL_SAMPLE_RATE, dtype=np.float32), MODEL_SAMPLE_RATE)
WAIT = 30  # seconds: only ever reached when the code under test is wrong


def runner_for(respond, events: list[str]) -> tuple[TurnRunner, RecordingPlayback]:
    log = EventLog(None)
    emit = log.emit
    log.emit = lambda kind, at, **fields: (events.append(kind), emit(kind, at, **fields))  # type: ignore[method-assign]
    playback = RecordingPlayback(16000)
    return TurnRunner(Config(), FakeEngine(), SilentVoice(), playback, log, Notifier({}), respond), playback


def start(runner: TurnRunner, speech=QUESTION):  # noqa: ANN001, ANN201
    turn = runner.start(speech, None, 0, 0.0)
    turn.started = 0.0
    return turn


def test_a_barge_in_while_the_next_turn_waits_cancels_that_turn_not_the_previous() -> None:
    """Turn A was interrupted but has not returned yet; turn B, started after
    it, waits for it. A barge-in now is meant for B: B never answers, and A is
    not cancelled a second time in B's place."""
    events: list[str] = []
    release_a, calls = threading.Event(), []

    def respond(engine, speech, speaker, started, interruption=None):  # noqa: ANN001
        calls.append(interruption)
        if len(calls) == 1:
            assert release_a.wait(WAIT)
        return result("end_of_turn")

    runner, _ = runner_for(respond, events)
    a = start(runner)
    runner.interrupt()  # barge-in on A: its own cancel
    b = start(runner)
    runner.interrupt()  # barge-in on B while its worker waits for A
    release_a.set()
    assert a.done.wait(WAIT) and b.done.wait(WAIT)
    assert len(calls) == 1, "the cancelled turn B still generated a reply"
    assert a.interruption.cancelled.is_set() and b.interruption.cancelled.is_set()
    assert events.count("turn") == 1 and "error" not in events


def test_a_discarded_stream_cancels_its_own_turn() -> None:
    """A cough's stream is discarded while its turn is inside the engine: the
    turn's own cancel is set (the abort callback reads it), so the step in flight
    stops, whichever turn the engine had open before."""
    events: list[str] = []
    inside, seen = threading.Event(), []

    def respond(engine, speech, speaker, started, interruption=None):  # noqa: ANN001
        inside.set()
        seen.append(interruption.cancelled.wait(WAIT))
        return result("cancelled")

    runner, _ = runner_for(respond, events)
    stream = SpeechStream(10.0)
    turn = runner.start(stream, None, 0, 0.0)
    assert inside.wait(WAIT)
    stream.discard()
    assert turn.done.wait(WAIT)
    assert seen == [True]


def test_a_cancel_inside_a_turn_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    """TurnCancelled from anywhere in a turn (hear_yes_or_no's prefill during a
    confirmation) is a cancel: no error event, no error earcon into the capture
    that follows."""
    events: list[str] = []

    def respond(engine, speech, speaker, started, interruption=None):  # noqa: ANN001
        raise TurnCancelled()

    runner, playback = runner_for(respond, events)
    with caplog.at_level(logging.ERROR):
        turn = start(runner)
        assert turn.done.wait(WAIT)
    assert "error" not in events and events.count("turn") == 0
    assert playback.written == 0, "the error earcon played"
    assert not caplog.records


def test_an_interrupted_turns_confirmation_is_never_asked() -> None:
    """Turn A calls a confirm tool after the barge-in that ended it: its
    question must not be asked after the next, unrelated turn."""
    tool = FunctionTool("unlock_door", "Unlock the door.", (), lambda arguments: ToolResult({"door": "unlocked"}), confirm=True)
    events: list[str] = []
    release_a, asked = threading.Event(), threading.Event()

    def respond(engine, speech, speaker, started, interruption=None):  # noqa: ANN001
        assert release_a.wait(WAIT)
        dialog.ask(tool, {})  # the model's call, after the barge-in
        asked.set()
        return result("tool_call")

    runner, _ = runner_for(respond, events)
    dialog = ConfirmationDialog(Toolbox([tool]), EventLog(None), lambda: 0, runner.worker_cancelled)
    start(runner)
    runner.interrupt()
    release_a.set()
    assert asked.wait(WAIT)
    assert dialog.question is None
