"""Every room, one brain, on 127.0.0.1: the real wyoming-satellite 1.0.0 from
PyPI in the kitchen (file-backed microphone and speaker), our own satellite in
the bedroom, and ``edge-assistant run`` with the twin and a scripted reply as
the brain. Questions are answered on their own room's speaker, each room keeps
its own conversation, turns from two rooms run one after the other, a
satellite killed mid-reply comes back, a timer rings where it was set, and a
restarted brain takes its satellites back."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from wyoming.event import write_event
from wyoming.satellite import RunSatellite

from edge_assistant.audio.files import write_wav_atomic
from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.llm.tool_calls import render_tool_call

from rooms_house import Brain, OurSatellite, RealSatellite, loud_seconds, wait_until
from speech import VOICE_PATH, concat, silence, speak

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def satellite_python() -> str:
    done = subprocess.run([str(ROOT / "scripts" / "wyoming_satellite_venv.sh")], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"scripts/wyoming_satellite_venv.sh failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    """Shared by the module's brains: the system prompt's saved KV state makes every start after the first quick."""
    return tmp_path_factory.mktemp("rooms-state")


@pytest.fixture
def rooms(satellite_python, tmp_path: Path):
    kitchen = RealSatellite(satellite_python, tmp_path, "kitchen").start()
    bedroom = OurSatellite("bedroom").start()
    yield kitchen, bedroom
    kitchen.close()
    bedroom.close()


def config(state: Path, kitchen: RealSatellite, bedroom: OurSatellite) -> str:
    return f"""
[input]
enabled = false
[engine]
max_tokens = 40
[tools]
state_dir = "{state}"
alarm_ring_seconds = 0
[[satellite]]
name = "kitchen"
uri = "tcp://127.0.0.1:{kitchen.port}"
[[satellite]]
name = "bedroom"
uri = "tcp://127.0.0.1:{bedroom.port}"
area = "Bedroom"
"""


def question(text: str) -> np.ndarray:
    return concat(speak(text), silence(1.5)).samples


def start_brain(tmp_path: Path, state: Path, rooms, twin, reply: str) -> Brain:  # noqa: ANN001
    brain = Brain(tmp_path, config(state, *rooms), reply, twin, VOICE_PATH)
    brain.wait_connected("kitchen", "bedroom")
    return brain


def test_each_room_is_answered_on_its_own_speaker_and_keeps_its_own_conversation(twin, state, rooms, tmp_path) -> None:
    kitchen, bedroom = rooms
    brain = start_brain(tmp_path, state, rooms, twin, "Okay, it is done.")
    try:
        kitchen.say(question("Is it going to rain today?"))
        (first,) = brain.wait_for("kitchen", "turn")
        brain.wait_for("kitchen", "speak_end")
        assert loud_seconds(kitchen.heard()) > 0.3
        assert loud_seconds(bedroom.heard()) == 0

        kitchen_before = loud_seconds(kitchen.heard())
        bedroom.say(question("Play some music."))
        (elsewhere,) = brain.wait_for("bedroom", "turn")
        brain.wait_for("bedroom", "speak_end")
        assert loud_seconds(bedroom.heard()) > 0.3
        assert loud_seconds(kitchen.heard()) == kitchen_before

        kitchen.say(question("And tomorrow?"))
        follow_up = brain.wait_for("kitchen", "turn", 2)[1]
    finally:
        assert brain.stop() == 0
    system = first["tokens"]["context"] - first["tokens"]["evaluated_this_turn"]
    assert elsewhere["tokens"]["context"] - elsewhere["tokens"]["evaluated_this_turn"] == system  # the bedroom starts fresh
    # The follow-up evaluated only its own tokens, after the kitchen's first turn and not the bedroom's.
    assert follow_up["tokens"]["context"] == first["tokens"]["context"] + follow_up["tokens"]["evaluated_this_turn"]
    assert follow_up["tokens"]["evaluated_this_turn"] < follow_up["tokens"]["context"] - system


def test_a_question_that_ends_while_another_room_has_the_engine_waits_and_hears_its_earcon_at_once(
    twin, state, rooms, tmp_path,
) -> None:
    """The kitchen's long question is evaluated as it is spoken, so its turn has
    the engine; the bedroom's short one, said a moment later, ends first and
    waits: its earcon plays at once, and it is answered next."""
    kitchen, bedroom = rooms
    brain = start_brain(tmp_path, state, rooms, twin, "Okay, it is done.")
    try:
        kitchen.say(question("My sister is flying in from Lisbon tomorrow evening, so what time should we leave for the airport?"))
        brain.wait_for("kitchen", "speech_start")
        bedroom.say(question("What time is it?"))
        (ended,) = brain.wait_for("bedroom", "speech_end")
        brain.wait_for("kitchen", "turn")
        brain.wait_for("bedroom", "turn")
        brain.wait_for("bedroom", "speak_end")  # its reply played out before the brain stops
    finally:
        assert brain.stop() == 0
    (waiting,) = [event for event in brain.events if event["event"] == "waiting"]
    # At its endpoint (the speech's end plus endpoint.end_silence_ms, in the room's input time), not later.
    assert waiting["room"] == "bedroom" and 0 <= waiting["t"] - ended["t"] <= 0.8 + 0.1
    turns = [event["room"] for event in brain.events if event["event"] == "turn"]
    assert turns == ["kitchen", "bedroom"]
    assert loud_seconds(bedroom.heard()) > 0.3


def test_a_satellite_killed_mid_reply_comes_back_and_the_other_room_goes_on(twin, state, rooms, tmp_path) -> None:
    kitchen, bedroom = rooms
    brain = start_brain(tmp_path, state, rooms, twin, "This answer goes on for a while, so that there is time to pull the plug on it.")
    try:
        kitchen.say(question("Tell me a story."))
        brain.wait_for("kitchen", "speak_start")
        kitchen.kill()
        bedroom.say(question("What time is it?"))
        brain.wait_for("bedroom", "turn")
        brain.wait_for("bedroom", "speak_end")
        assert loud_seconds(bedroom.heard()) > 0.3
        heard_before = len(kitchen.heard())
        kitchen.start()
        brain.wait_connected("kitchen", times=2)
        kitchen.say(question("Tell me another story."))
        brain.wait_for("kitchen", "turn", 2)
        brain.wait_for("kitchen", "speak_end", 2)
        assert loud_seconds(kitchen.heard()[heard_before:]) > 0.3
    finally:
        assert brain.stop() == 0
    assert "Traceback" not in brain.log()


def test_a_timer_rings_in_the_room_it_was_set_in(twin, state, rooms, tmp_path) -> None:
    kitchen, bedroom = rooms
    reply = render_tool_call("set_timer", {"seconds": 3}) + "<|tool_response>" + "Timer set."
    brain = start_brain(tmp_path, state, rooms, twin, reply)
    try:
        bedroom.say(question("Set a timer for three seconds."))
        (turn,) = brain.wait_for("bedroom", "turn")
        assert [call["name"] for call in turn["tool_calls"]] == ["set_timer"]
        brain.wait_for("bedroom", "announce")
        time.sleep(1.0)
    finally:
        assert brain.stop() == 0
    assert brain.of("kitchen", "announce") == []
    assert loud_seconds(kitchen.heard()) == 0


def test_a_restarted_brain_takes_its_satellites_back(twin, state, rooms, tmp_path) -> None:
    kitchen, bedroom = rooms
    first = start_brain(tmp_path, state, rooms, twin, "Okay.")
    assert first.stop() == 0
    (tmp_path / "restarted").mkdir()
    second = start_brain(tmp_path / "restarted", state, rooms, twin, "Okay.")
    try:
        kitchen.say(question("Are you back?"))
        bedroom.say(question("Are you back?"))
        second.wait_for("kitchen", "turn")
        second.wait_for("bedroom", "turn")
    finally:
        assert second.stop() == 0


def test_a_controller_that_stops_reading_never_blocks_our_satellites_microphone(rooms) -> None:
    _, bedroom = rooms
    with socket.create_connection(("127.0.0.1", bedroom.port)) as controller:
        controller.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with controller.makefile("wb") as writer:
            write_event(RunSatellite().event(), writer)
        wait_until(lambda: bedroom.satellite.controller is not None and bedroom.satellite.controller.stream.dropped > 0,
                   120, "the satellite dropping audio the controller does not read")
        read = bedroom.satellite.frames_read
        wait_until(lambda: bedroom.satellite.frames_read >= read + 20, 30, "the microphone read on")
        assert bedroom.satellite.controller.stream.dropped > 0


def test_the_local_room_and_a_satellite_are_answered_each_on_its_own_speaker(twin, state, rooms, tmp_path) -> None:
    """input.enabled (the default) with satellites: this machine's own microphone
    and speaker (here a file and its recording) are one more room; the run ends
    with the file."""
    kitchen, bedroom = rooms
    heard, said = tmp_path / "local-in.wav", tmp_path / "local-out.wav"
    write_wav_atomic(heard, concat(silence(8.0), speak("What time is it?"), silence(12.0)).samples, MODEL_SAMPLE_RATE)
    text = config(state, kitchen, bedroom).replace("[input]\nenabled = false\n", "")
    brain = Brain(tmp_path, text, "Okay, it is done.", twin, VOICE_PATH, "--input-file", str(heard), "--realtime",
                  "--output-file", str(said))
    try:
        brain.wait_connected("kitchen", "bedroom")
        kitchen.say(question("Is the oven on?"))
        brain.wait_for("kitchen", "turn")
        brain.wait_for("local", "turn")
        assert brain.process.wait(120) == 0  # the run ends with its input file
    finally:
        brain.stop()
    recording, _ = soundfile.read(said, dtype="float32")
    assert loud_seconds(recording) > 0.3 and loud_seconds(kitchen.heard()) > 0.3
    assert loud_seconds(bedroom.heard()) == 0
    assert {event["room"] for event in brain.events if event["event"] == "turn"} == {"local", "kitchen"}
