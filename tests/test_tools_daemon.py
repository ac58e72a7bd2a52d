"""Voice commands in the daemon, driven from files with scripted model output:
a timer's announcement lands in the output two seconds after it was set, a
timer survives a restart, "stop" silences a ringing timer, and a command that
needs confirmation runs only after a spoken yes."""

from __future__ import annotations

import json
import shutil
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edge_assistant.audio.files import write_wav_atomic
from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.audio.playback import RecordingPlayback
from edge_assistant.audio.sources import EchoSource, FileSource
from edge_assistant.config import Config
from edge_assistant.daemon.assistant import Assistant
from edge_assistant.daemon.events import EventLog
from edge_assistant.llm.tool_calls import render_tool_call
from edge_assistant.tools.mcp.connection import wait_until
from edge_assistant.tools.setup import ToolSet, build_tools
from edge_assistant.tts import PiperSpeech

from scripted import ScriptedEngine, ScriptedSampler, reply_tokens
from speech import VOICE_PATH, concat, silence, speak

pytestmark = pytest.mark.slow

WAIT = "<|tool_response>"


class TurnScripts(ScriptedSampler):
    """A different scripted reply for each turn, in order (the last one repeats)."""

    def __init__(self, engine_tokens) -> None:
        super().__init__()
        self.turns: list[list[int]] = []
        self._turn = 0
        self._tokens = engine_tokens

    def reset(self) -> None:
        super().reset()
        if self.turns:
            self._turn = min(self._turn + 1, len(self.turns) - 1)
            self.tokens = self.turns[self._turn]

    def script(self, *replies: str) -> None:
        self.turns = [self._tokens(reply) for reply in replies]
        self._turn = 0
        self.tokens = self.turns[0]
        self._next = 0


def tools_config(tmp_path: Path) -> Config:
    config = Config()
    config.tools.state_dir = str(tmp_path / "state")
    config.tools.alarm_ring_seconds = 0  # announce once unless a test wants ringing
    return config


@pytest.fixture(scope="module")
def tool_model(twin):
    declared = build_tools(tools_config(Path("/nonexistent-never-written"))).toolbox.declarations()
    model = ScriptedEngine(twin.model, twin.mmproj, "Okay.", tools=declared)
    scripts = TurnScripts(partial(reply_tokens, model.engine))
    model.engine._sampler = scripts
    yield model.engine, scripts
    model.close()


@pytest.fixture(scope="module")
def voice() -> PiperSpeech:
    return PiperSpeech(VOICE_PATH)


def run_files(tmp_path: Path, engine, voice, config: Config, *parts, name: str = "run", tools: ToolSet | None = None,
              ) -> tuple[list[dict], np.ndarray]:
    stream = tmp_path / f"{name}.wav"
    write_wav_atomic(stream, concat(*parts).samples, MODEL_SAMPLE_RATE)
    events_path = tmp_path / f"{name}.jsonl"
    engine.reset_history()
    with events_path.open("w") as events_file:
        playback = RecordingPlayback(voice.sample_rate)
        source = EchoSource(FileSource(stream, config.input.frame_ms), playback)
        assistant = Assistant(
            config, engine, voice, source, playback, None, EventLog(events_file),
            wait_for_replies=True, tools=tools or build_tools(config),
        )
        assistant.run()
        if assistant.runner.last_started is not None:
            assistant.runner.last_started.done.wait()  # a job declaring new tools, which the run does not wait for
    out = tmp_path / f"{name}.out.wav"
    playback.save(out)  # what `run --output-file` writes
    recording, _ = soundfile.read(out, dtype="float32")
    return [json.loads(line) for line in events_path.read_text().splitlines()], recording


def loud(recording: np.ndarray, start: float, end: float, rate: int = 22050) -> float:
    return float(np.abs(recording[int(start * rate) : int(end * rate)]).max(initial=0.0))


def test_a_spoken_timer_is_announced_in_the_output_two_seconds_later(tool_model, voice, tmp_path: Path) -> None:
    engine, scripts = tool_model
    scripts.script(render_tool_call("set_timer", {"seconds": 2}) + WAIT + "Timer set.")
    events, recording = run_files(
        tmp_path, engine, voice, tools_config(tmp_path), silence(0.5), speak("Set a timer for two seconds."), silence(8.0)
    )
    (turn,) = [event for event in events if event["event"] == "turn"]
    (call,) = turn["tool_calls"]
    assert call["name"] == "set_timer" and call["arguments"] == {"seconds": 2} and call["status"] == "ok"
    assert turn["reply"] == "Timer set."
    (announce,) = [event for event in events if event["event"] == "announce"]
    assert announce["text"] == "Your timer is done."
    set_at = turn["t"] + 0.8  # the tool ran when the question ended (the endpoint's silence after the speech)
    assert set_at + 1.9 <= announce["t"] <= set_at + 2.3
    speak_end = next(event["t"] for event in events if event["event"] == "speak_end")
    assert loud(recording, announce["t"], announce["t"] + 1.5) > 0.05  # the earcon and the words are in the output
    assert loud(recording, speak_end + 0.1, announce["t"] - 0.05) == 0  # quiet in between
    assert not (tmp_path / "state" / "timers.json").read_text().count('"id"')  # fired: no longer pending


def test_a_timer_survives_a_restart(tool_model, voice, tmp_path: Path) -> None:
    engine, scripts = tool_model
    config = tools_config(tmp_path)
    scripts.script(render_tool_call("set_timer", {"seconds": 12, "label": "tea"}) + WAIT + "Okay.")
    first, _ = run_files(tmp_path, engine, voice, config, silence(0.5), speak("Tea timer, twelve seconds."), silence(2.0), name="first")
    assert "announce" not in [event["event"] for event in first]
    assert '"tea"' in (tmp_path / "state" / "timers.json").read_text()
    second, recording = run_files(tmp_path, engine, voice, config, silence(16.0), name="second")
    (announce,) = [event for event in second if event["event"] == "announce"]
    assert announce["text"] == "Your tea timer is done." and 5 < announce["t"] < 15.5  # due 12 s after it was set, in the second run
    assert loud(recording, announce["t"], announce["t"] + 1.5) > 0.05


def test_stop_silences_a_ringing_timer(tool_model, voice, tmp_path: Path) -> None:
    engine, scripts = tool_model
    config = tools_config(tmp_path)
    config.tools.alarm_ring_seconds = 60
    scripts.script(render_tool_call("set_timer", {"seconds": 1}) + WAIT + "Okay.", render_tool_call("stop", {}) + WAIT + "Not said.")
    events, _ = run_files(
        tmp_path, engine, voice, config,
        silence(0.5), speak("One second timer."), silence(12.5), speak("Stop!"), silence(20.0),
    )
    kinds = [event["event"] for event in events]
    assert kinds.count("announce") >= 2  # it rang, and rang again after a pause (the stop is said in the next pause)
    stopped = kinds.index("ringing_stopped")
    assert "announce" not in kinds[stopped:]
    turns = [event for event in events if event["event"] == "turn"]
    assert turns[-1]["tool_calls"][0]["name"] == "stop" and turns[-1]["reply"] == ""


@pytest.mark.parametrize(("answer", "runs"), [("yes", True), ("no", False)])
def test_a_command_that_needs_confirmation_runs_only_after_yes(tool_model, voice, tmp_path: Path, answer: str, runs: bool) -> None:
    engine, scripts = tool_model
    marker = tmp_path / "ran"
    config = tools_config(tmp_path)
    config.tools.command = [{
        "name": "make_marker", "description": "Create the marker file.", "argv": ["/usr/bin/touch", str(marker)], "confirm": True,
    }]
    engine_tools = engine.tools
    engine.tools = build_tools(config).toolbox.declarations()  # declared, as `run` would
    try:
        scripts.script(render_tool_call("make_marker", {}) + WAIT, answer)
        events, _ = run_files(
            tmp_path, engine, voice, config,
            silence(0.5), speak("Make the marker."), silence(6.0), speak(answer.capitalize() + "."), silence(4.0),
        )
    finally:
        engine.tools = engine_tools
    (question,) = [event for event in events if event["event"] == "announce"]
    assert question["text"] == "Should I run make marker? Say yes or no."
    (confirmation,) = [event for event in events if event["event"] == "confirmation"]
    assert confirmation["answer"] == answer
    turns = [event for event in events if event["event"] == "turn"]
    assert turns[0]["tool_calls"][0]["status"] == "pending"
    assert turns[1]["tool_calls"][0]["status"] == ("ok" if runs else "declined")
    assert turns[1]["reply"] == ("Done." if runs else "Okay, I won't.")
    assert marker.exists() is runs


def time_server_config(tmp_path: Path, relay_mode: str) -> Config:
    """The real mcp-server-time behind tests/mcp_relay.py in ``relay_mode``."""
    time_server = shutil.which("mcp-server-time", path=str(Path(sys.executable).parent))
    if time_server is None:
        pytest.skip("mcp-server-time is not installed (pip install -e '.[test]')")
    config = tools_config(tmp_path)
    relay = [sys.executable, str(Path(__file__).with_name("mcp_relay.py")), str(tmp_path / "relay.log"), relay_mode]
    config.mcp.server = [{"name": "time", "argv": [*relay, time_server, "--local-timezone", "UTC"], "tools": ["get_current_time"]}]
    return config


def ask_the_time(tool_model, voice, tmp_path: Path, config: Config, toolset: ToolSet, reply: str,
                 ) -> tuple[dict, dict, np.ndarray]:
    """"What time is it?" through the daemon; the model calls get_current_time,
    then says ``reply``. The turn event, its one call, and the output."""
    engine, scripts = tool_model
    scripts.script(render_tool_call("get_current_time", {"timezone": "UTC"}) + WAIT + reply)
    events, recording = run_files(tmp_path, engine, voice, config, silence(0.5), speak("What time is it?"), silence(4.0),
                                  tools=toolset)
    (turn,) = [event for event in events if event["event"] == "turn"]
    (call,) = turn["tool_calls"]
    return turn, call, recording


def test_an_mcp_server_up_after_the_start_has_its_tools_declared_while_idle(tool_model, voice, tmp_path: Path) -> None:
    """A server down at start-up comes up: while the assistant is idle its worker
    evaluates the system prompt with the new tool (not when the next question is
    already waiting), and the next question can call it."""
    engine, _ = tool_model
    config = time_server_config(tmp_path, "down-once")
    engine_tools, toolset = engine.tools, build_tools(config)
    try:
        assert toolset.toolbox.get("get_current_time") is None and toolset.problems() == ["time: unreachable"]
        assert wait_until(lambda: toolset.outdated, 20)  # reconnected in the background (1 s backoff)
        quiet, _ = run_files(tmp_path, engine, voice, config, silence(3.0), name="quiet", tools=toolset)
        assert "turn" not in [event["event"] for event in quiet]
        assert "declaration:get_current_time{" in engine.chat_format.system_block("", engine.tools)
        assert not toolset.outdated
        _, call, _ = ask_the_time(tool_model, voice, tmp_path, config, toolset, "It is noon.")
    finally:
        toolset.close()
        engine.declare_tools(engine_tools)
    assert call["name"] == "get_current_time" and call["status"] == "ok", call


def test_an_mcp_server_down_at_a_restart_keeps_its_tools_and_a_call_says_so(tool_model, voice, tmp_path: Path) -> None:
    """After one good run, a start with the server down declares its tools from
    their last listing (the system prompt is the one every start has), and a
    question that calls one gets the server's spoken failure, not "no such
    tool"; the model, here saying nothing more, is followed by the apology."""
    engine, _ = tool_model
    config = time_server_config(tmp_path, "switch")
    good_run = build_tools(config)
    good_run.close()
    (tmp_path / "relay.log.down").touch()  # the server is down from now on
    engine_tools, toolset = engine.tools, build_tools(config)
    try:
        assert toolset.problems() == ["time: unreachable"]
        assert toolset.toolbox.declarations() == good_run.toolbox.declarations()
        engine.declare_tools(toolset.toolbox.declarations())  # as `run` declares them at start-up
        turn, call, recording = ask_the_time(tool_model, voice, tmp_path, config, toolset, "")
    finally:
        toolset.close()
        engine.declare_tools(engine_tools)
    assert call["name"] == "get_current_time" and call["status"] == "failed", call
    assert call["result"] == {"error": "The time service is not answering."}  # what the model is given to say
    assert turn["reply"] == "Sorry, I couldn't do that."
    assert loud(recording, turn["t"], turn["t"] + 3.0) > 0.05
    assert not [line for line in (tmp_path / "relay.log").read_text().splitlines() if line.startswith("tools/call")]
