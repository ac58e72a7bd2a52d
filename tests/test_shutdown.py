"""Shutdown (issue 22, defect 4): a stop request only sets flags (it comes from
a signal handler, on the audio thread, between any two bytecodes); the loop then
silences the speaker and the playback at once, cancels the turns, and a stalled
microphone read does not hold it up. No model, no timing: the stop is asked for
at a chosen frame, and limits are only reached when the code is wrong."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_assistant.audio import sources
from edge_assistant.audio.files import write_wav_atomic
from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Frame
from edge_assistant.audio.playback import RecordingPlayback
from edge_assistant.audio.sources import EchoSource, FileSource, MicrophoneSource
from edge_assistant.config import Config
from edge_assistant.daemon.assistant import Assistant, State
from edge_assistant.daemon.events import EventLog
from edge_assistant.systemd import Notifier

from fake_sounddevice import fake_input
from speech import concat, silence, speak
from test_turn_watchdog import FakeEngine, result

WAIT = 30


class LongVoice:
    """Ten seconds of sound for any sentence: the reply is still playing when
    the stop comes."""

    sample_rate = 16000

    def synthesize(self, text: str) -> np.ndarray:
        return np.full(10 * self.sample_rate, 0.1, dtype=np.float32)


class StopAt:
    """A source that asks the assistant to stop, as the SIGTERM handler does,
    at the first frame where ``when()`` holds."""

    def __init__(self, source, when) -> None:  # noqa: ANN001
        self.source, self.when, self.assistant = source, when, None

    def frames(self) -> Iterator[Frame]:
        for frame in self.source.frames():
            if self.when():
                self.assistant.stop()
            yield frame

    def stop(self) -> None:
        self.source.stop()


def question_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.wav"
    write_wav_atomic(path, concat(silence(0.5), speak("What is the time?"), silence(20.0)).samples, MODEL_SAMPLE_RATE)
    return path


def speaking_assistant(tmp_path: Path, events: list[str]) -> tuple[Assistant, RecordingPlayback]:
    def respond(engine, speech, speaker, started, interruption=None):  # noqa: ANN001
        speaker.say("It is noon.")
        speaker.finish()
        return result("end_of_turn")

    config = Config()
    config.conversation.stream_audio = False
    log = EventLog(None)
    emit = log.emit
    log.emit = lambda kind, at, **fields: (events.append(kind), emit(kind, at, **fields))  # type: ignore[method-assign]
    playback = RecordingPlayback(16000)
    source = StopAt(EchoSource(FileSource(question_file(tmp_path), 30), playback), lambda: "speak_start" in events)
    daemon = Assistant(config, FakeEngine(), LongVoice(), source, playback, None, log, Notifier({}), True, respond)
    source.assistant = daemon
    return daemon, playback


def test_a_stop_while_speaking_silences_the_reply_at_once(tmp_path: Path) -> None:
    events: list[str] = []
    daemon, playback = speaking_assistant(tmp_path, events)
    daemon.run()
    assert "speak_start" in events
    assert not playback.busy, "the reply was left playing"


def test_a_stop_request_touches_nothing_but_flags(tmp_path: Path) -> None:
    """What the signal handler does: the stream being heard is left to the loop
    (discarding it from the handler raced the loop's own use of it)."""
    events: list[str] = []
    daemon, _ = speaking_assistant(tmp_path, events)
    touched: list[str] = []
    daemon._drop_stream = lambda: touched.append("stream")  # type: ignore[method-assign]
    daemon.runner.cancel_all = lambda: touched.append("turns")  # type: ignore[method-assign]
    daemon.playback.stop = lambda: touched.append("playback")  # type: ignore[method-assign]
    daemon.stop()
    assert touched == []
    assert daemon.state is State.IDLE


def test_a_stop_ends_a_stalled_microphone_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The device delivers under a second, then nothing: a stop ends the read
    at once, not after the stall timeout."""
    monkeypatch.setattr(sources, "import_sounddevice", lambda: fake_input(["audio"]))
    monkeypatch.setattr(MicrophoneSource, "STALL_SECONDS", 10 * WAIT)
    microphone = MicrophoneSource(None, 30)
    frames = microphone.frames()
    next(frames)
    ended = threading.Event()

    def read_on() -> None:
        for _ in frames:
            pass
        ended.set()

    reader = threading.Thread(target=read_on, daemon=True)
    reader.start()
    microphone.stop()
    assert ended.wait(WAIT), "the stalled read outlived the stop"
