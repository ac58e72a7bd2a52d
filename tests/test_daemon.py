"""``edge-assistant run`` driven from files: the same daemon code as with a
microphone and a speaker, on the Gemma 4 twin and the real Piper voice."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edge_assistant.audio.files import write_wav_atomic
from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.audio.playback import RecordingPlayback
from edge_assistant.audio.sources import EchoSource, FileSource
from edge_assistant.config import Config
from edge_assistant.daemon.assistant import EARCON_DELAY_MS, Assistant
from edge_assistant.daemon.events import EventLog
from edge_assistant.tts import PiperSpeech
from edge_assistant.turn import next_step_end, run_turn

from scripted import ScriptedEngine
from speech import VOICE_PATH, audible_extent, concat, dbfs, noise, silence, speak, television, tones, voiced_db

pytestmark = pytest.mark.slow


def write_stream(path: Path, *parts: np.ndarray) -> Path:
    write_wav_atomic(path, concat(*parts).samples, MODEL_SAMPLE_RATE)
    return path


def run_daemon(twin, stream: Path, *extra: str, max_tokens: int = 3) -> tuple[list[dict], subprocess.CompletedProcess[str]]:
    env = {**os.environ, "XDG_CONFIG_HOME": "/nonexistent"}
    result = subprocess.run(
        [
            sys.executable, "-m", "edge_assistant", "run", "--input-file", str(stream), "--events",
            "--model", str(twin.model), "--mmproj", str(twin.mmproj), "--voice", str(VOICE_PATH),
            "--max-tokens", str(max_tokens), "--seed", "1", *extra,
        ],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result


def kinds(events: list[dict]) -> list[str]:
    return [event["event"] for event in events]


def test_one_question_one_turn_and_a_spoken_reply(twin, tmp_path: Path) -> None:
    question = speak("What is the tallest mountain in Europe?")
    stream = write_stream(tmp_path / "in.wav", silence(1.0), question, silence(3.0))
    out = tmp_path / "out.wav"
    events, _ = run_daemon(twin, stream, "--output-file", str(out))
    assert kinds(events) == ["speech_start", "speech_end", "turn", "speak_start", "speak_end"]
    start, end, turn, speak_start, speak_end = events
    assert 0.9 < start["t"] < 1.3
    assert abs(end["t"] - (1.0 + question.seconds)) < 0.4
    assert turn["reply"] and turn["tokens"]["audio"] > 0
    assert speak_start["t"] >= end["t"] + 0.7  # after the end-of-speech silence
    recording, rate = soundfile.read(out)
    assert rate == 22050
    assert len(recording) / rate >= (1.0 + question.seconds + 3.0) - 0.05  # lines up with the input
    spoken = recording[int(speak_start["t"] * rate) : int(speak_end["t"] * rate)]
    assert np.abs(spoken).max() > 0.05
    assert np.abs(recording[: int(end["t"] * rate)]).max() == 0  # nothing played while the user spoke


def question_over_television(tv_db: float, before: float, after: float) -> tuple[np.ndarray, float, float]:
    """A question at -20 dBFS (voiced RMS) over a news reader at ``tv_db`` that
    plays ``before`` s alone and ``after`` s on; returns the stream and where the
    question starts and ends (s)."""
    spoken = speak("What is the weather like today?").samples
    spoken = spoken * dbfs(-20.0 - voiced_db(spoken))
    length = int((before + after) * MODEL_SAMPLE_RATE) + len(spoken)
    stream = television(length / MODEL_SAMPLE_RATE, tv_db, seed=3)[:length]
    at = int(before * MODEL_SAMPLE_RATE)
    stream[at : at + len(spoken)] += spoken
    start, end = audible_extent(spoken)
    return stream, before + start / MODEL_SAMPLE_RATE, before + end / MODEL_SAMPLE_RATE


@pytest.mark.parametrize("gated", [False, True], ids=["no-gate", "min_level_dbfs"])
def test_without_a_wake_word_a_television_starts_turns_unless_gated(twin, tmp_path: Path, gated: bool) -> None:
    """wake.model = "none": a television across the room (-45 dBFS) starts turns
    by itself, as the README warns; with endpoint.min_level_dbfs above it, none,
    and the question said near the microphone over it is one turn that ends with
    the question."""
    stream, start, end = question_over_television(-45.0, before=4.0, after=7.0)
    path = write_stream(tmp_path / "in.wav", stream)
    config = tmp_path / "config.toml"
    config.write_text("[endpoint]\nmin_level_dbfs = -38.0\n" if gated else "")
    events, _ = run_daemon(twin, path, "--config", str(config), "--output-file", str(tmp_path / "out.wav"))
    starts = [event["t"] for event in events if event["event"] == "speech_start"]
    if not gated:
        assert starts and starts[0] < start - 0.5  # the television alone
        return
    assert kinds(events).count("turn") == 1 and len(starts) == 1
    assert start - 0.1 <= starts[0] <= start + 0.4
    speech_end = next(event["t"] for event in events if event["event"] == "speech_end")
    padding = Config().audio.speech_padding_ms / 1000  # kept after the last speech: a quiet "-day?" under the gate
    assert end - 0.15 <= speech_end + padding and speech_end <= end + 0.5


def test_after_the_wake_word_a_question_over_a_television_ends_with_it(scripted, voice, tmp_path: Path) -> None:
    """The wake word, then the question 15 dB over a news reader that goes on:
    webrtcvad hears a voice throughout, the speaker's own level ends the
    utterance within end_silence_ms + 500 ms of the question, and the turn gets
    the question whole, without the television after it."""
    stream, start, end = question_over_television(-35.0, before=2.0, after=8.0)
    path = write_stream(tmp_path / "in.wav", stream)
    heard: list[np.ndarray] = []
    assistant, _, events_file = assistant_for(
        path, scripted, voice, wake=ScriptedWake([start - 0.1]), respond=utterance_recorder(heard)
    )
    assistant.run()
    events_file.close()
    events = read_events(path.with_suffix(".jsonl"))
    assert kinds(events).count("turn") == 1
    speech_end = next(event["t"] for event in events if event["event"] == "speech_end")
    assert end - 0.15 <= speech_end + Config().audio.speech_padding_ms / 1000 and speech_end <= end + 0.5
    (utterance,) = heard
    seconds = len(utterance) / MODEL_SAMPLE_RATE
    assert end - start <= seconds <= end - start + 0.3 + 0.2 + 0.5  # pre-roll, padding, the tolerance


def test_noise_produces_no_turn(twin, tmp_path: Path) -> None:
    stream = write_stream(tmp_path / "in.wav", noise(4.0, 0.003), silence(1.0), noise(4.0, 0.01, seed=3))
    events, _ = run_daemon(twin, stream, "--output-file", str(tmp_path / "out.wav"))
    assert "turn" not in kinds(events)


@pytest.mark.parametrize("stream_audio", [True, False], ids=["streamed", "after-speech"])
def test_two_questions_two_turns_second_evaluates_only_new_tokens(
    scripted, voice, tmp_path: Path, stream_audio: bool
) -> None:
    """A scripted reply of known length: the twin's own would be a different text,
    spoken for a different time, on every CPU type. Streamed, only the last
    unfinished encoder block and the closing text are left when the question ends."""
    first, second = speak("What is the capital of France?"), speak("And of Spain?")
    stream = write_stream(tmp_path / "in.wav", silence(0.5), first, silence(6.0), second, silence(6.0))
    events = run_assistant(stream, scripted, voice, stream_audio=stream_audio)
    turns = [event for event in events if event["event"] == "turn"]
    assert len(turns) == 2
    assert [turn["reply"] for turn in turns] == [SCRIPTED_REPLY] * 2
    one, two = (turn["tokens"] for turn in turns)
    assert two["evaluated_this_turn"] == two["prompt"] + two["audio"] + two["generated"] + 2
    assert two["context"] == one["context"] + two["evaluated_this_turn"]
    closing_text = len(scripted._audio_suffix_tokens)
    for turn, question in zip(turns, (first, second)):
        tokens = turn["tokens"]
        assert abs(tokens["audio"] - 25 * (question.seconds + 0.5)) <= 15  # the question, with pre-roll and padding
        if stream_audio:
            assert tokens["after_speech_end"] == 0  # closed in the pause before the endpoint
            *steps, last = turn["audio_steps"]
            assert steps == [24] * steps_while_spoken(round(turn["audio_seconds"] * MODEL_SAMPLE_RATE))
            assert 0 < last <= 24 + 1 and sum(steps) + last == tokens["audio"]
        else:
            assert tokens["after_speech_end"] == tokens["prompt"] + tokens["audio"]
            assert turn["audio_steps"] == [tokens["audio"]]


def steps_while_spoken(utterance_samples: int) -> int:
    """A file waits for the worker, so a streamed question gets a step of two
    whole encoder blocks (24 tokens) at each boundary of its schedule it reaches,
    then one pass to its end in the pause (no block twice, no silence after it)."""
    steps, taken = 0, 0
    while next_step_end(taken) < utterance_samples:
        steps, taken = steps + 1, next_step_end(taken)
    return steps


def test_a_pause_inside_the_question_drops_the_reply_begun_in_it(
    scripted, voice, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The speaker pauses mid-question for longer than the padding kept after
    speech but less than the end silence: the turn ends its audio early and
    starts answering in the pause, then the speaker goes on. The reply begun
    ahead is rolled back unheard; the question is answered once, as a whole."""
    first, second = speak("What is the capital"), speak("of France and of Spain?")
    stream = write_stream(tmp_path / "in.wav", silence(0.5), first, silence(0.5), second, silence(6.0))
    with caplog.at_level(logging.INFO, logger="edge_assistant.turn"):
        events = run_assistant(stream, scripted, voice)
    assert any("the speaker went on after a pause" in message for message in caplog.messages)
    turns = [event for event in events if event["event"] == "turn"]
    assert len(turns) == 1
    assert turns[0]["reply"] == SCRIPTED_REPLY  # the reply begun in the pause would have come first
    tokens = turns[0]["tokens"]
    assert tokens["generated"] == len(scripted.tokenize(SCRIPTED_REPLY))
    assert abs(tokens["audio"] - 25 * (first.seconds + 0.5 + second.seconds + 0.5)) <= 15  # both parts, once
    assert tokens["evaluated_this_turn"] == tokens["prompt"] + tokens["audio"] + tokens["generated"] + 2
    assert kinds(events).count("speak_start") == 1
    scripted.check_cache()


def test_own_reply_heard_through_the_microphone_starts_no_turn(storyteller, voice, tmp_path: Path) -> None:
    stream = write_stream(tmp_path / "in.wav", silence(0.5), speak("Tell me a long story please."), silence(15.0))
    events = run_assistant(stream, storyteller, voice, echo_gain=1.0)
    assert kinds(events).count("turn") == 1
    assert "speech_start" not in kinds(events)[2:]
    speak_start, speak_end = (event["t"] for event in events if event["event"] in ("speak_start", "speak_end"))
    assert speak_end - speak_start > 5.0  # the reply really played into the input


@dataclass
class ScriptedWake:
    """Fires at given input times, as a wake model would on a spoken phrase."""

    at_seconds: list[float]
    seen: int = 0

    def process(self, samples: np.ndarray):
        from edge_assistant.wake.detector import WakeDetection

        before = self.seen / MODEL_SAMPLE_RATE
        self.seen += len(samples)
        now = self.seen / MODEL_SAMPLE_RATE
        return [WakeDetection("scripted", 0.99, self.seen) for at in self.at_seconds if before < at <= now]


SCRIPTED_REPLY = "Paris is the capital."
# About nine seconds of speech: long enough to be interrupted.
LONG_REPLY = (
    "Once upon a time a small dragon lived at the edge of a quiet forest. "
    "Every morning it flew over the hills to watch the sun rise above the sea."
)


@pytest.fixture(scope="module")
def scripted_model(twin):
    model = ScriptedEngine(twin.model, twin.mmproj, SCRIPTED_REPLY)
    yield model
    model.close()


@pytest.fixture
def scripted(scripted_model):
    """The twin with the short scripted reply and a fresh history."""
    scripted_model.say(SCRIPTED_REPLY)
    scripted_model.engine.reset_history()
    return scripted_model.engine


@pytest.fixture
def storyteller(scripted_model):
    """The twin with a long scripted reply and a fresh history."""
    scripted_model.say(LONG_REPLY)
    scripted_model.engine.reset_history()
    return scripted_model.engine


@pytest.fixture(scope="module")
def voice() -> PiperSpeech:
    return PiperSpeech(VOICE_PATH)


def assistant_for(
    stream: Path, engine, voice, wake=None, respond=run_turn, events_path: Path | None = None, echo_gain: float = 0.0,
    stream_audio: bool = True,
):
    """The daemon's state machine on a file, with the shipped configuration
    (listening earcon included)."""
    config = Config()
    config.conversation.stream_audio = stream_audio
    events_file = (events_path or stream.with_suffix(".jsonl")).open("w")
    playback = RecordingPlayback(voice.sample_rate)
    source = EchoSource(FileSource(stream, config.input.frame_ms), playback, echo_gain)
    assistant = Assistant(
        config, engine, voice, source, playback, wake, EventLog(events_file), wait_for_replies=True, respond=respond,
    )
    return assistant, playback, events_file


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_assistant(stream: Path, engine, voice, **options) -> list[dict]:
    assistant, _, events_file = assistant_for(stream, engine, voice, **options)
    assistant.run()
    events_file.close()
    return read_events(stream.with_suffix(".jsonl"))


def test_wake_word_during_the_reply_stops_it_and_starts_a_new_turn(storyteller, voice, tmp_path: Path) -> None:
    first = speak("Tell me about the weather.")
    # The first question comes after a pause (the listening earcon plays); the
    # reply starts about 0.8 s after it ends, and the wake word comes 1 s into the
    # reply with the next question in the same breath.
    wake_at = 1.5 + first.seconds + 0.8 + 1.0
    second = speak("Stop. What time is it?")
    stream = write_stream(tmp_path / "in.wav", silence(1.5), first, silence(1.8), second, silence(20.0))
    assistant, playback, events_file = assistant_for(stream, storyteller, voice, wake=ScriptedWake([0.3, wake_at]))
    assistant.run()
    events_file.close()
    events = read_events(stream.with_suffix(".jsonl"))
    names = kinds(events)
    assert names.count("barge_in") == 1
    barge = next(event for event in events if event["event"] == "barge_in")
    interrupted = next(event for event in events if event["event"] == "speak_end")
    assert interrupted.get("interrupted") is True and interrupted["t"] == barge["t"]
    assert names.count("turn") == 2  # the question after the wake word is answered
    recording = playback.recording()
    rate = playback.sample_rate
    # Audio stops at the barge-in and stays off until the next reply.
    speak_starts = [event["t"] for event in events if event["event"] == "speak_start"]
    gap = recording[int((barge["t"] + 0.05) * rate) : int(speak_starts[1] * rate)]
    assert len(gap) > 0 and np.abs(gap).max() == 0
    # The history keeps the first question and only the part of its reply that
    # played before the barge-in: about a second of the first sentence.
    one, two = (event["tokens"] for event in events if event["event"] == "turn")
    kept = one["generated"] - (one["context"] - (two["context"] - two["evaluated_this_turn"]))
    first_sentence = LONG_REPLY[: LONG_REPLY.index(".") + 1]
    played_share = (barge["t"] - speak_starts[0]) / (len(voice.synthesize(first_sentence)) / voice.sample_rate)
    assert 0.1 < played_share < 0.5
    heard_tokens = len(storyteller.tokenize(first_sentence[: int(played_share * len(first_sentence))]))
    assert 0 < kept < len(storyteller.tokenize(first_sentence)) and abs(kept - heard_tokens) <= 3


def utterance_recorder(heard: list[np.ndarray]):
    """``respond`` for the Assistant that keeps the audio each turn was given."""

    def respond(engine, speech, speaker, started, **options):
        result = run_turn(engine, speech, speaker, started, **options)
        heard.append(speech.samples)  # a streamed question is complete once its turn has run
        return result

    return respond


def voiced_seconds(samples: np.ndarray) -> float:
    """Seconds of 10 ms blocks louder than -50 dBFS: how much of a clip is speech."""
    blocks = samples[: len(samples) // 160 * 160].reshape(-1, 160)
    return float((np.sqrt((blocks**2).mean(axis=1)) > 10 ** (-50 / 20)).sum()) / 100


def test_question_in_one_breath_with_the_wake_word_is_whole_and_gets_no_earcon(
    scripted, voice, openwakeword_models: Path, tmp_path: Path
) -> None:
    """"Hey Jarvis what's the time" without a pause: the utterance starts where
    the wake phrase ended, and no earcon is played (or heard back) over it."""
    from edge_assistant.wake.detector import WakeWordDetector

    sentence = speak("Hey Jarvis what's the time?")
    stream = write_stream(tmp_path / "in.wav", silence(1.0), sentence, silence(4.0))
    wake = WakeWordDetector([openwakeword_models / "hey_jarvis_v0.1.onnx"], 0.5)
    heard: list[np.ndarray] = []
    assistant, playback, events_file = assistant_for(
        stream, scripted, voice, wake=wake, respond=utterance_recorder(heard), echo_gain=1.0
    )
    assistant.run()
    events_file.close()
    events = read_events(stream.with_suffix(".jsonl"))
    assert kinds(events)[:4] == ["wake", "speech_start", "speech_end", "turn"]
    wake_t = events[0]["t"]
    sentence_end = 1.0 + voiced_seconds(np.concatenate([silence(1.0), sentence.samples])) + 0.05
    question_seconds = voiced_seconds(sentence.samples[int((wake_t - 1.0) * MODEL_SAMPLE_RATE) :])
    assert question_seconds > 0.5  # the detector fired before the question, as it should
    (utterance,) = heard
    assert voiced_seconds(utterance) >= question_seconds - 0.03  # "what's" kept
    assert events[1]["t"] <= wake_t + 0.03
    speak_start = next(event["t"] for event in events if event["event"] == "speak_start")
    assert speak_start > sentence_end
    assert np.abs(playback.recording()[: int(speak_start * playback.sample_rate)]).max() == 0  # no earcon


def test_listening_earcon_after_a_pause_never_starts_or_feeds_an_utterance(scripted, voice, tmp_path: Path) -> None:
    """The earcon plays back into the microphone (echo gain 1): it starts nothing
    on its own, and the question after it is captured without it."""
    question = speak("What is the weather like?")
    stream = write_stream(tmp_path / "in.wav", silence(1.5), question, silence(3.0), silence(6.0))
    heard: list[np.ndarray] = []
    # Wake words at 0.5 s (the question follows 1 s later) and at 8 s (nothing follows).
    wake_times = [0.5, 1.5 + question.seconds + 3.0 + 1.0]
    assistant, playback, events_file = assistant_for(
        stream, scripted, voice, wake=ScriptedWake(wake_times), respond=utterance_recorder(heard), echo_gain=1.0
    )
    assistant.run()
    events_file.close()
    events = read_events(stream.with_suffix(".jsonl"))
    assert kinds(events).count("speech_start") == 1 and kinds(events).count("turn") == 1
    start = next(event["t"] for event in events if event["event"] == "speech_start")
    assert 1.4 < start < 1.8
    rate = playback.sample_rate
    recording = playback.recording()
    first_tone = np.flatnonzero(np.abs(recording[: int(1.5 * rate)]) > 0)
    delay = EARCON_DELAY_MS / 1000
    assert len(first_tone) and 0.5 + delay - 0.05 < first_tone[0] / rate < 0.5 + delay + 0.1
    last_tone = np.flatnonzero(np.abs(recording[int(wake_times[1] * rate) :]) > 0)
    assert len(last_tone) and delay - 0.1 < last_tone[0] / rate < delay + 0.1  # played, and started nothing
    (utterance,) = heard
    speech_end = next(event["t"] for event in events if event["event"] == "speech_end")
    utterance_start = speech_end + 0.2 - len(utterance) / MODEL_SAMPLE_RATE  # 0.2 s: padding after speech
    assert utterance_start >= first_tone[0] / rate + 0.16  # begins after the tone (0.16 s) ended


def test_an_utterance_open_when_the_input_ends_becomes_a_turn(twin, tmp_path: Path) -> None:
    stream = write_stream(tmp_path / "in.wav", silence(0.5), speak("What is the capital of Italy?"))
    events, _ = run_daemon(twin, stream, "--output-file", str(tmp_path / "out.wav"))
    assert kinds(events)[:3] == ["speech_start", "speech_end", "turn"]


def test_a_failing_turn_is_logged_and_the_assistant_keeps_listening(scripted, voice, tmp_path: Path) -> None:
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected failure")
        return run_turn(*args, **kwargs)

    stream = write_stream(
        tmp_path / "in.wav", silence(0.5), speak("First question?"), silence(2.5), speak("Second question?"), silence(15.0)
    )
    assistant, _, events_file = assistant_for(stream, scripted, voice, respond=flaky)
    assistant.run()
    events_file.close()
    names = kinds(read_events(stream.with_suffix(".jsonl")))
    assert names.count("error") == 1 and names.count("turn") == 1
    assert names.index("error") < names.index("turn")


def test_sigterm_stops_within_two_seconds_and_systemd_hears_ready(twin, tmp_path: Path) -> None:
    stream = write_stream(tmp_path / "long.wav", silence(2.0), speak("Hello there."), silence(60.0))
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(120)
    env = {**os.environ, "XDG_CONFIG_HOME": "/nonexistent", "NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "2000000"}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "edge_assistant", "run", "--input-file", str(stream), "--realtime",
            "--model", str(twin.model), "--mmproj", str(twin.mmproj), "--voice", str(VOICE_PATH),
            "--output-file", str(tmp_path / "out.wav"), "--max-tokens", "3",
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    messages = []
    try:
        while not any("READY=1" in message for message in messages):
            messages.append(notify.recv(4096).decode())
        watchdog_deadline = time.monotonic() + 5
        while not any("WATCHDOG=1" in message for message in messages) and time.monotonic() < watchdog_deadline:
            messages.append(notify.recv(4096).decode())
        time.sleep(3.0)  # into the question
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(timeout=10)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
        notify.close()
    assert process.returncode == 0, process.stderr.read()
    assert elapsed < 2.0
    assert any("WATCHDOG=1" in message for message in messages)
    assert any("STATUS=" in message for message in messages)


def assistant_turns(engine, voice, stream: Path, configure) -> list[dict]:
    assistant, _, events_file = assistant_for(stream, engine, voice)
    configure(assistant)
    assistant.run()
    events_file.close()
    return [event for event in read_events(stream.with_suffix(".jsonl")) if event["event"] == "turn"]


def test_history_resets_after_idle_time(scripted, voice, tmp_path: Path) -> None:
    stream = write_stream(
        tmp_path / "in.wav", silence(0.5), speak("First question?"), silence(8.0), speak("Second question?"), silence(12.0)
    )

    def short_idle(assistant: Assistant) -> None:
        assistant.config.conversation.idle_reset_seconds = 1.0

    engine = scripted
    first, second = assistant_turns(engine, voice, stream, short_idle)
    system = engine.system_prompt_tokens
    assert second["tokens"]["context"] == system + second["tokens"]["evaluated_this_turn"]
    assert first["tokens"]["context"] == system + first["tokens"]["evaluated_this_turn"]


def test_history_kept_within_idle_time_and_reset_on_request(scripted, voice, tmp_path: Path) -> None:
    stream = write_stream(
        tmp_path / "in.wav", silence(0.5), speak("First question?"), silence(8.0), speak("Second question?"), silence(12.0)
    )
    engine = scripted
    first, second = assistant_turns(engine, voice, stream, lambda assistant: None)
    assert second["tokens"]["context"] == first["tokens"]["context"] + second["tokens"]["evaluated_this_turn"]

    engine.reset_history()
    first, second = assistant_turns(engine, voice, tmp_path / "in.wav", lambda assistant: assistant.request_reset())
    system = engine.system_prompt_tokens
    assert first["tokens"]["context"] == system + first["tokens"]["evaluated_this_turn"]  # reset before turn one
    assert second["tokens"]["context"] == first["tokens"]["context"] + second["tokens"]["evaluated_this_turn"]


# -- with a real wake model (trained on the device by `wakeword train`, cached) --


def wake_config(tmp_path: Path, wake_model: Path | str, threshold: float = 0.0) -> Path:
    """``threshold`` 0: the one chosen at training (strict: a false accept per hour
    costs 5% recall); the pipeline tests use a looser one, as a user tuning with
    `wakeword test` would. Earcons as shipped."""
    config = tmp_path / "config.toml"
    config.write_text(f'[wake]\nmodel = "{wake_model}"\nthreshold = {threshold}\n')
    return config


@pytest.mark.parametrize("pretrained", [False, True], ids=["trained-here", "hey_jarvis-by-name"])
def test_wake_word_then_question_is_exactly_one_turn(twin, tmp_path: Path, request: pytest.FixtureRequest, pretrained: bool) -> None:
    """With the model `wakeword train` made, and with openWakeWord's hey_jarvis
    chosen by its manifest name and found in the models directory."""
    from conftest import WAKE_PHRASE

    if pretrained:
        phrase, config = "hey jarvis", wake_config(tmp_path, "hey_jarvis")
        extra = ("--models-dir", str(request.getfixturevalue("openwakeword_models")))
    else:
        phrase, config, extra = WAKE_PHRASE, wake_config(tmp_path, request.getfixturevalue("wake_model"), 0.5), ()
    question = speak("What is the weather like today?")
    stream = write_stream(tmp_path / "in.wav", silence(1.0), speak(phrase), silence(0.3), question, silence(8.0))
    events, _ = run_daemon(twin, stream, "--config", str(config), *extra, "--output-file", str(tmp_path / "out.wav"))
    names = kinds(events)
    assert names.count("wake") == 1 and names.count("turn") == 1
    assert names.index("wake") < names.index("speech_start") < names.index("turn")
    assert 1.0 < events[0]["t"] < 2.5


def test_with_a_wake_word_speech_noise_and_music_start_nothing(twin, wake_model: Path, tmp_path: Path) -> None:
    stream = write_stream(
        tmp_path / "in.wav", noise(3.0, 0.01), tones(6.0), speak("The kettle is boiling, can you get it?"),
        noise(3.0, 0.03, seed=2), silence(1.0),
    )
    events, _ = run_daemon(
        twin, stream, "--config", str(wake_config(tmp_path, wake_model)), "--output-file", str(tmp_path / "out.wav")
    )
    assert events == []


def test_spoken_wake_word_during_the_reply_is_a_barge_in(storyteller, voice, wake_model: Path, tmp_path: Path) -> None:
    """The wake model hears the phrase during the reply and stops it."""
    from conftest import WAKE_PHRASE
    from edge_assistant.wake.detector import WakeWordDetector

    first = speak("Tell me a long story about dragons.")
    # The reply starts 0.8 s after the question ends (endpointing); speak the wake
    # word 1.5 s into it, then a second question.
    stream = write_stream(
        tmp_path / "in.wav", silence(1.0), speak(WAKE_PHRASE), silence(0.3), first, silence(2.3),
        speak(WAKE_PHRASE), silence(0.3), speak("What time is it?"), silence(25.0),
    )
    wake = WakeWordDetector([wake_model], 0.5)
    assistant, playback, events_file = assistant_for(stream, storyteller, voice, wake=wake)
    assistant.run()
    events_file.close()
    events = read_events(stream.with_suffix(".jsonl"))
    names = kinds(events)
    assert names.count("barge_in") == 1 and names.count("turn") == 2
    barge = events[names.index("barge_in")]
    stopped = events[names.index("barge_in") + 1]
    assert stopped["event"] == "speak_end" and stopped["interrupted"] is True
    recording, rate = playback.recording(), playback.sample_rate
    next_start = [event["t"] for event in events if event["event"] == "speak_start"][1]
    assert np.abs(recording[int((barge["t"] + 0.05) * rate) : int(next_start * rate)]).max() == 0
