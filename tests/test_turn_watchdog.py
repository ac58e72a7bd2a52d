"""The daemon's turn deadline and the systemd watchdog: a turn that overruns is
cancelled; one that then never returns stops the watchdog (systemd restarts the
service) or, without systemd, ends the run with an error. No model: the turn is
a function the test controls."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_assistant.audio.files import write_wav_atomic
from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.audio.playback import RecordingPlayback
from edge_assistant.audio.sources import EchoSource, FileSource
from edge_assistant.config import Config
from edge_assistant.daemon.assistant import Assistant
from edge_assistant.daemon.events import EventLog
from edge_assistant.errors import TurnStuckError
from edge_assistant.systemd import Notifier
from edge_assistant.turn import TurnResult

from speech import concat, silence, speak


class FakeEngine:
    """What the state machine asks of the engine itself (turns go to ``respond``)."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()

    def reset_history(self) -> None:
        pass

    def trim_last_reply(self, interruption) -> None:  # noqa: ANN001
        pass

    def use_conversation(self, index: int) -> None:
        pass


class SilentVoice:
    sample_rate = 16000

    def synthesize(self, text: str) -> np.ndarray:
        return np.zeros(160, dtype=np.float32)


def result(stopped_by: str) -> TurnResult:
    return TurnResult("", 1.0, {}, {}, stopped_by)


def two_questions(tmp_path: Path) -> Path:
    stream = concat(silence(0.5), speak("First question?"), silence(2.0), speak("Second question?"), silence(2.0))
    path = tmp_path / "in.wav"
    write_wav_atomic(path, stream.samples, MODEL_SAMPLE_RATE)
    return path


def assistant(stream: Path, engine: FakeEngine, respond, notifier: Notifier, events: list[str]) -> Assistant:
    config = Config()
    config.conversation.turn_timeout_seconds = 0.3
    config.conversation.stream_audio = False  # the turn gets the whole question: these turns never read a stream
    log = EventLog(None)
    emit = log.emit
    log.emit = lambda kind, at, **fields: (events.append(kind), emit(kind, at, **fields))  # type: ignore[method-assign]
    playback = RecordingPlayback(16000)
    daemon = Assistant(
        config, engine, SilentVoice(), EchoSource(FileSource(stream, 30), playback), playback, None, log, notifier,
        wait_for_replies=True, respond=respond,
    )
    daemon.runner.cancel_grace_seconds = 0.3
    return daemon


@pytest.fixture
def systemd(tmp_path: Path):
    """A notify socket standing in for systemd, with a 0.2 s watchdog; yields the
    notifier and a function returning the messages received so far."""
    path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(0.05)
    messages: list[tuple[float, str]] = []

    def received() -> list[tuple[float, str]]:
        while True:
            try:
                messages.append((time.monotonic(), server.recv(4096).decode()))
            except (socket.timeout, BlockingIOError):
                return messages

    notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    yield notifier, received
    notifier.close()
    server.close()


def test_overrunning_turn_is_cancelled_and_the_next_turn_runs(tmp_path: Path) -> None:
    engine, events, calls = FakeEngine(), [], []

    def respond(engine_, speech, speaker, started, interruption=None):
        calls.append(1)
        if len(calls) == 1:
            assert interruption.cancelled.wait(10), "the overrunning turn was never cancelled"
            return result("cancelled")
        return result("end_of_turn")

    assistant(two_questions(tmp_path), engine, respond, Notifier({}), events).run()
    assert len(calls) == 2
    assert events.count("turn_timeout") == 1 and events.count("turn") == 1
    assert events.index("turn_timeout") < events.index("turn")


def test_turn_that_never_returns_starves_the_systemd_watchdog(tmp_path: Path, systemd) -> None:
    notifier, received = systemd
    engine, events, release, cancels = FakeEngine(), [], threading.Event(), []

    def respond(engine_, speech, speaker, started, interruption=None):
        cancels.append(interruption.cancelled)
        release.wait(30)  # ignores the cancel, as a hung native call would
        return result("end_of_turn")

    daemon = assistant(two_questions(tmp_path), engine, respond, notifier, events)
    loop = threading.Thread(target=daemon.run)
    loop.start()
    deadline = time.monotonic() + 20
    while not any("STATUS=stuck" in text for _, text in received()) and time.monotonic() < deadline:
        time.sleep(0.05)
    stuck_at = next((at for at, text in received() if "STATUS=stuck" in text), None)
    time.sleep(1.0)  # more than two watchdog intervals
    messages = received()
    release.set()
    loop.join(20)
    assert stuck_at is not None, messages
    assert cancels[0].is_set() and "turn_timeout" in events
    assert any("WATCHDOG=1" in text for at, text in messages if at < stuck_at)  # it was fed before
    assert not any("WATCHDOG=1" in text for at, text in messages if at > stuck_at)  # and never after


def test_turn_that_never_returns_without_systemd_ends_the_run_with_an_error(tmp_path: Path) -> None:
    engine, release = FakeEngine(), threading.Event()

    def respond(engine_, speech, speaker, started, interruption=None):
        release.wait(30)
        return result("end_of_turn")

    daemon = assistant(two_questions(tmp_path), engine, respond, Notifier({}), [])
    try:
        with pytest.raises(TurnStuckError, match="did not return"):
            daemon.run()
    finally:
        release.set()
