"""Rooms without a model: the engine's turns across rooms in endpoint order,
what a satellite link buffers and sends, the link against our satellite both
ways and its reconnection, our satellite's command against a wyoming
controller and what it drops for one that does not read, STATUS= for every
room, timers that ring in their own room, and the memory check."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe
from wyoming.ping import Ping
from wyoming.pipeline import PipelineStage, RunPipeline
from wyoming.satellite import RunSatellite
from wyoming.wake import Detection

from edge_assistant.audio.files import write_wav_atomic
from edge_assistant.cli import main
from edge_assistant.config import Config, SatelliteConfig
from edge_assistant.daemon.engine_turns import EngineTurns, Room
from edge_assistant.daemon.turn_runner import Turn
from edge_assistant.rooms.house import House, HouseStatus, RoomNotifier, check_memory
from edge_assistant.rooms.link import Links, SatelliteLink, SatellitePlayback, SatelliteSource, _woke_up
from edge_assistant.rooms.satellite import MicrophoneStream
from edge_assistant.tools.setup import build_tools

from rooms_house import OurSatellite, wait_until
from test_tools_builtin import Clock


def turn(ended_at: float | None = None) -> Turn:
    return Turn(done=threading.Event(), wake_sample=None, speech_end_sample=0, started=ended_at, speaker=None)  # type: ignore[arg-type]


def waiter(turns: EngineTurns, which: Turn, order: list[Turn]) -> threading.Thread:
    def run() -> None:
        if turns.acquire(which):
            order.append(which)
            time.sleep(0.05)
            turns.release(which)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_turns_from_several_rooms_take_the_engine_in_the_order_their_questions_ended() -> None:
    turns, order = EngineTurns(), []
    holder = turn(ended_at=1.0)
    assert turns.acquire(holder)
    late, early, still_spoken = turn(ended_at=3.0), turn(ended_at=2.0), turn()
    threads = [waiter(turns, which, order) for which in (still_spoken, late, early)]
    while len(turns._waiting) < 3:  # noqa: SLF001
        time.sleep(0.01)
    assert turns.busy_for(early) and not turns.busy_for(holder)
    turns.release(holder)
    for thread in threads[1:]:
        thread.join(5)
    still_spoken.started = 4.0  # its question ends last
    threads[0].join(5)
    assert order == [early, late, still_spoken]


def test_a_turn_cancelled_while_it_waits_for_another_room_never_opens() -> None:
    turns = EngineTurns()
    holder, waiting = turn(ended_at=1.0), turn(ended_at=2.0)
    assert turns.acquire(holder)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(turns.acquire(waiting)))
    thread.start()
    waiting.interruption.cancel()
    thread.join(5)
    assert result == [False] and not turns.busy_for(holder)


def test_an_idle_engine_is_taken_at_once_by_a_question_still_being_spoken() -> None:
    turns = EngineTurns()
    assert turns.acquire(turn())  # streamed: its turn opens while the user speaks


def test_a_timer_rings_in_the_room_it_was_set_in_and_keeps_its_room_across_a_restart(tmp_path: Path) -> None:
    config = Config()
    config.tools.state_dir = str(tmp_path / "state")
    clock = Clock()
    tools = build_tools(config, clock=clock)
    tools.hooks.room = "bedroom"
    tools.toolbox.call("set_timer", {"seconds": 5})
    tools.hooks.room = "nursery"  # a room no longer configured
    tools.toolbox.call("set_timer", {"seconds": 5})
    tools.scheduler.flush()
    kitchen = Room("kitchen", 0, others=frozenset({"bedroom"}), catch_all=True)
    bedroom = Room("bedroom", 1, others=frozenset({"kitchen"}), catch_all=False)
    clock.now += 6
    restarted = build_tools(config, clock=clock).scheduler
    assert [entry.room for entry in restarted.due(lambda entry: bedroom.rings_here(entry.room))] == ["bedroom"]
    assert [entry.room for entry in restarted.due(lambda entry: kitchen.rings_here(entry.room))] == ["nursery"]


def test_the_satellite_source_drops_the_oldest_audio_and_fills_a_silent_gap(caplog) -> None:
    source = SatelliteSource("kitchen", 30)
    capacity = source._chunks.maxsize  # noqa: SLF001
    with caplog.at_level(logging.WARNING):
        for index in range(capacity + 3):
            source.push(np.full(source.frame_samples, index, dtype=np.float32))
    assert source.dropped_chunks == 3 and "dropped the oldest satellite audio" in caplog.text
    frames = source.frames()
    assert next(frames).samples[0] == 3  # the oldest three went
    source._chunks.queue.clear()  # noqa: SLF001
    frame = next(frames)  # nothing arrives: silence stands in for the time that passed
    assert not frame.samples.any() and frame.end_sample == 2 * source.frame_samples
    source.stop()


def test_speech_is_sent_to_a_satellite_a_little_ahead_of_playing_and_stops_at_once() -> None:
    playback = SatellitePlayback(22050)
    playback.write(np.ones(22050, dtype=np.float32), 22050)
    assert not playback.busy  # not connected: dropped, the room does not stay speaking
    playback.connected = True
    playback.write(np.ones(22050 * 2, dtype=np.float32), 22050)
    first = playback.take_due()
    assert 0 < len(first) <= int(playback.LEAD_SECONDS * 22050) + 1
    assert len(playback.take_due()) < 100  # nothing more until it has played
    assert playback.busy and playback.playhead < len(first)
    playback.stop()
    assert len(playback.take_due()) == 0
    playback.disconnected()
    assert not playback.busy


def test_our_satellite_keeps_the_newest_audio_for_a_controller_that_stops_reading(caplog) -> None:
    async def fill() -> MicrophoneStream:
        stream = MicrophoneStream(asyncio.get_running_loop())
        for index in range(stream._chunks.maxlen + 5):  # noqa: SLF001
            stream.put(index)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        return stream

    with caplog.at_level(logging.WARNING):
        stream = asyncio.run(fill())
    assert stream.dropped == 5 and stream._chunks[0] == 5  # noqa: SLF001
    assert "dropped the oldest microphone audio" in caplog.text


def test_status_lists_the_connected_satellites_and_every_rooms_state() -> None:
    sent: list[str] = []

    class Notifier:
        def status(self, text: str) -> None:
            sent.append(text)

    status = HouseStatus(Notifier(), ["local", "kitchen", "bedroom"])  # type: ignore[arg-type]
    status.link("kitchen", "connected")
    status.room_state("kitchen", "idle")
    status.link("bedroom", "not connected (refused); retrying in 4 s")
    assert sent[-1] == (
        "satellites connected: kitchen; local: starting; kitchen: idle; bedroom: not connected (refused); retrying in 4 s"
    )


class KvEngine:
    def __init__(self, per_token: float) -> None:
        self.per_token = per_token

    def kv_bytes_per_token(self) -> float:
        return self.per_token


def test_the_memory_check_is_one_line_when_the_rooms_do_not_fit_4_gb(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert check_memory(KvEngine(4864), 4, 4096) == ""  # about 19 MiB per room
        message = check_memory(KvEngine(4864), 16, 131072)
    assert "16 rooms x engine.n_ctx 131072" in message and "\n" not in message
    assert message in caplog.text


@pytest.mark.parametrize("uri", ["http://0.0.0.0:10700", "tcp://0.0.0.0", "tcp://0.0.0.0:99999"])
def test_a_bad_satellite_address_is_one_line(uri: str, capsys) -> None:
    assert main(["satellite", "--uri", uri]) == 2
    assert capsys.readouterr().err.strip() == f"edge-assistant: --uri {uri!r} is invalid: must be tcp://HOST:PORT, like tcp://0.0.0.0:10700"


def test_a_satellite_that_heard_its_own_wake_word_starts_a_turn() -> None:
    always_streaming = RunPipeline(start_stage=PipelineStage.WAKE, end_stage=PipelineStage.TTS).event()
    woke = RunPipeline(start_stage=PipelineStage.ASR, end_stage=PipelineStage.TTS).event()  # wyoming-satellite 1.0.0 --wake-uri
    assert not _woke_up(always_streaming) and _woke_up(woke) and _woke_up(Detection(name="ok_nabu").event())


def test_our_satellite_command_serves_a_controller_and_plays_what_it_is_sent(tmp_path: Path) -> None:
    """`edge-assistant satellite` with files for its microphone and speaker, and a
    controller made of the wyoming library: describe, ping, the microphone
    stream, and a reply played into the speaker's file (chunks marked while it plays)."""
    microphone, speaker = tmp_path / "mic.wav", tmp_path / "speaker.wav"
    write_wav_atomic(microphone, np.full(16000 * 20, 0.1, dtype=np.float32), 16000)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    satellite = subprocess.Popen(
        [sys.executable, "-m", "edge_assistant", "satellite", "--uri", f"tcp://127.0.0.1:{port}", "--name", "hall",
         "--input-file", str(microphone), "--realtime", "--output-file", str(speaker)],
        env={**os.environ, "PYTHONPATH": str(root)}, stderr=subprocess.PIPE, text=True,
    )

    async def control() -> tuple[str, str, list[dict]]:
        client = AsyncTcpClient("127.0.0.1", port)
        for _ in range(200):
            try:
                await client.connect()
                break
            except OSError:
                await asyncio.sleep(0.05)
        await client.write_event(Describe().event())
        name = (await client.read_event()).data["satellite"]["name"]
        await client.write_event(Ping(text="are you there").event())
        pong = (await client.read_event()).data["text"]
        await client.write_event(RunSatellite().event())
        await client.write_event(AudioStart(rate=22050, width=2, channels=1).event())
        tone = (np.sin(np.arange(22050) * 0.2) * 0.5 * 32767).astype("<i2").tobytes()
        await client.write_event(AudioChunk(rate=22050, width=2, channels=1, audio=tone).event())
        await client.write_event(AudioStop().event())
        events = [(await client.read_event()) for _ in range(40)]
        await client.disconnect()
        return name, pong, [{"type": event.type, **event.data} for event in events]

    try:
        name, pong, events = asyncio.run(asyncio.wait_for(control(), 60))
    finally:
        satellite.send_signal(signal.SIGTERM)
        code = satellite.wait(20)
    assert code == 0, satellite.stderr.read()
    assert (name, pong) == ("hall", "are you there")
    assert events[0]["type"] == "run-pipeline" and events[0]["start_stage"] == "wake"
    chunks = [event for event in events if event["type"] == "audio-chunk"]
    assert all(chunk["rate"] == 16000 and chunk["width"] == 2 for chunk in chunks)
    assert any(chunk.get("playing") for chunk in chunks)  # marked while the reply played
    played, rate = soundfile.read(speaker, dtype="float32")
    assert rate == 22050 and np.count_nonzero(np.abs(played) > 0.3) > 0.5 * 22050


def test_a_link_streams_a_satellite_both_ways_and_reconnects_when_it_comes_back() -> None:
    """The brain's link against our satellite, no model: the microphone's audio
    arrives as the room's frames, the room's speech reaches the satellite's
    speaker, and a satellite that goes away is taken back when it returns."""
    satellite = OurSatellite("hall").start()
    link = SatelliteLink(SatelliteConfig("hall", f"tcp://127.0.0.1:{satellite.port}"), 30, 22050)
    reports: list[str] = []
    link.on_status = lambda name, text: reports.append(text)
    links = Links([link])
    links.start()
    returned = None
    try:
        wait_until(lambda: reports[-1:] == ["connected"], 30, "connected")
        satellite.say(np.full(16000, 0.25, dtype=np.float32))
        frames = link.source.frames()
        wait_until(lambda: next(frames).samples.max() > 0.2, 30, "the satellite's microphone heard in the room")
        link.playback.write(np.full(22050 // 2, 0.5, dtype=np.float32), 22050)
        wait_until(lambda: loud(satellite.heard()) > 0.4 * 22050, 30, "the room's speech played on the satellite")
        satellite.close()
        wait_until(lambda: "reconnecting" in reports[-1] or "not connected" in reports[-1], 30, "the loss noticed")
        assert not link.playback.busy  # nothing left to play: the room does not stay speaking
        returned = OurSatellite("hall", port=satellite.port).start()
        wait_until(lambda: reports[-1:] == ["connected"], 60, "connected again")
    finally:
        links.stop()
        for one in (satellite, returned):
            if one is not None:
                one.close()


def loud(samples: np.ndarray) -> int:
    return int(np.count_nonzero(np.abs(samples) > 0.3))


def test_files_for_the_local_room_need_the_local_room(tmp_path: Path, capfd) -> None:
    config = tmp_path / "rooms.toml"
    config.write_text('[input]\nenabled = false\n\n[[satellite]]\nname = "hall"\nuri = "tcp://127.0.0.1:9"\n')
    code = main(["run", "--config", str(config), "--input-file", str(tmp_path / "in.wav"), "--model", str(tmp_path / "m.gguf"),
                 "--mmproj", str(tmp_path / "p.gguf"), "--voice", str(tmp_path / "v.onnx")])
    assert code == 2
    assert capfd.readouterr().err.strip() == (
        "edge-assistant: --input-file and --output-file stand for the local microphone and speaker: "
        "they need input.enabled = true"
    )


def test_systemd_is_pinged_only_while_every_rooms_loop_pings_its_own() -> None:
    class Systemd:
        watchdog_interval = 0.5
        pings = 0

        def watchdog(self) -> None:
            self.pings += 1

    status = HouseStatus(Systemd(), ["kitchen", "bedroom"])  # type: ignore[arg-type]
    for bedroom_alive, expected in ((True, True), (False, False)):
        systemd = Systemd()
        kitchen, bedroom = RoomNotifier(status, "kitchen", 0.5), RoomNotifier(status, "bedroom", 0.5)
        kitchen.alive_at = time.monotonic() + 3600  # its loop keeps pinging
        bedroom.alive_at = time.monotonic() + (3600 if bedroom_alive else -3600)  # hung, or a turn stuck
        house = House(Config(), None, None, notifiers=[kitchen, bedroom])  # type: ignore[arg-type]
        house.threads = [threading.Thread(target=time.sleep, args=(0.6,))]
        house.threads[0].start()
        house.supervise(systemd)  # type: ignore[arg-type]
        assert (systemd.pings > 0) is expected
