"""``edge-assistant run`` with ``[[satellite]]`` rooms: one audio loop per room
(each satellite's, and the local microphone's unless ``input.enabled`` is
false), each with its own wake word detector, endpointer, state machine and
conversation, all sharing the one engine (turns one at a time, in the order
their questions ended) and the one voice. The main thread only supervises:
it feeds systemd's watchdog while no room is stuck, and STATUS= lists the rooms.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import LOCAL_ROOM, Config
from ..daemon.assistant import Assistant
from ..daemon.engine_turns import EngineTurns, Room
from ..daemon.events import EventLog
from ..daemon.service import LocalAudio, load_wake_detector, wake_model_paths
from ..errors import UsageError
from ..languages import load_voices
from ..llm.engine import GemmaEngine
from ..systemd import Notifier
from ..tools.setup import ToolSet, build_tools, state_dir
from .link import Links, SatelliteLink

log = logging.getLogger(__name__)

GIB = 1024**3
MEMORY_BUDGET_BYTES = 4 * GIB  # a Pi 5 with 4 GB
# Peak RSS of the daemon with one room at the defaults (README "Hardware":
# 2.66-2.70 GiB from a cold page cache, full-size twin): what more rooms add to.
ONE_ROOM_PEAK_BYTES = int(2.70 * GIB)
SUPERVISE_SECONDS = 0.25


class HouseStatus:
    """systemd's STATUS= for every room at once: "kitchen: idle; bedroom: not connected ..."."""

    def __init__(self, notifier: Notifier, rooms: list[str]) -> None:
        self.notifier = notifier
        self._lock = threading.Lock()
        self._states = dict.fromkeys(rooms, "starting")
        self._links: dict[str, str] = {}

    def room_state(self, room: str, state: str) -> None:
        with self._lock:
            self._states[room] = state
        self._send()

    def link(self, room: str, text: str) -> None:
        with self._lock:
            self._links[room] = text
        self._send()

    def text(self) -> str:
        with self._lock:
            parts = []
            for room, state in self._states.items():
                link = self._links.get(room)
                parts.append(f"{room}: {state}" if link in (None, "connected") else f"{room}: {link}")
        connected = [room for room, link in self._links.items() if link == "connected"]
        return f"satellites connected: {', '.join(connected) or 'none'}; " + "; ".join(parts)

    def _send(self) -> None:
        self.notifier.status(self.text())


@dataclass
class RoomNotifier:
    """What one room's loop tells systemd, through :class:`HouseStatus`. Its
    watchdog pings (from the room's loop, as the single room's go to systemd)
    only say the room is alive: the supervisor pings systemd while every room is."""

    house: HouseStatus
    room: str
    watchdog_interval: float | None
    link: SatelliteLink | None = None
    alive_at: float = field(default_factory=time.monotonic)

    def ready(self, status: str) -> None:
        self.status(status)

    def status(self, status: str) -> None:
        self.house.room_state(self.room, status)
        if status == "idle" and self.link is not None:
            self.link.turn_over()

    def watchdog(self) -> None:
        self.alive_at = time.monotonic()

    def stopping(self) -> None:
        pass


@dataclass
class House:
    """The rooms, their loops and links, and what they share."""

    config: Config
    engine: GemmaEngine
    tools: ToolSet
    assistants: dict[str, Assistant] = field(default_factory=dict)
    links: list[SatelliteLink] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    notifiers: list[RoomNotifier] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    _stop = False

    def route_tools(self) -> None:
        """"Stop" and "forget" act in the room of the turn that called them;
        the volume is the house's."""
        hooks = self.tools.hooks
        hooks.on_stop = lambda: self.assistants[hooks.room].reminders.silence()
        hooks.on_forget = lambda: self.assistants[hooks.room].request_reset()

        def set_gain(gain: float) -> None:
            for assistant in self.assistants.values():
                assistant.playback.gain = gain

        self.tools.volume.apply = set_gain
        self.tools.volume.restore()

    def start(self) -> None:
        for name, assistant in self.assistants.items():
            thread = threading.Thread(target=self._run_room, args=(assistant,), name=f"room-{name}", daemon=True)
            self.threads.append(thread)
            thread.start()

    def _run_room(self, assistant: Assistant) -> None:
        try:
            assistant.run()
        except BaseException as error:  # one room's failure stops the house (systemd restarts it)
            log.exception("room %s failed", assistant.room.name)
            self.failures.append(error)

    def stop(self) -> None:
        """From a signal handler: only flags."""
        self._stop = True
        for assistant in self.assistants.values():
            assistant.stop()

    def supervise(self, notifier: Notifier, until_input_ends: bool = False) -> None:
        """Feed systemd's watchdog while every room's loop pings its own (a
        stuck turn or a hung loop stops a room's pings, so systemd restarts
        the service), until a stop or a room's failure; ``until_input_ends``:
        the local room reads a file, and the run ends with it (its thread is
        the first)."""
        last_fed = 0.0
        while any(thread.is_alive() for thread in self.threads):
            input_ended = until_input_ends and not self.threads[0].is_alive()
            if (self.failures or input_ended) and not self._stop:
                self.stop()
            interval = notifier.watchdog_interval
            now = time.monotonic()
            alive = interval is not None and all(now - room.alive_at < interval for room in self.notifiers)
            if alive and now - last_fed >= min(interval, 1.0):
                notifier.watchdog()
                last_fed = now
            time.sleep(SUPERVISE_SECONDS)

    @property
    def engine_busy(self) -> bool:
        return any(assistant.runner.running for assistant in self.assistants.values())


def check_memory(engine: GemmaEngine, rooms: int, n_ctx: int) -> str:
    """The KV cache per room, and one line when the rooms do not fit the 4 GB budget."""
    per_room = engine.kv_bytes_per_token() * n_ctx
    log.info("rooms: %d; KV cache per room %.1f MiB (engine.n_ctx = %d)", rooms, per_room / 2**20, n_ctx)
    total = ONE_ROOM_PEAK_BYTES + (rooms - 1) * per_room
    if total > MEMORY_BUDGET_BYTES:
        message = (
            f"{rooms} rooms x engine.n_ctx {n_ctx} need about {total / GIB:.2f} GiB with the model, over the 4 GiB "
            f"budget of a 4 GB Pi: lower engine.n_ctx or the number of [[satellite]] rooms"
        )
        log.warning(message)
        return message
    return ""


def serve_rooms(
    config: Config, model_path: Path, mmproj_path: Path, voice_path: Path, notifier: Notifier, local: LocalAudio,
    events: bool,
) -> int:
    """Load everything once, run a loop per room until a signal stops them."""
    if not config.input.enabled and (local.input_file or local.output_file):
        raise UsageError("--input-file and --output-file stand for the local microphone and speaker: they need input.enabled = true")
    names = ([LOCAL_ROOM] if config.input.enabled else []) + [satellite.name for satellite in config.satellite]
    status = HouseStatus(notifier, names)
    # The local devices report into the local room's part of STATUS=; the watchdog is the supervisor's.
    local_notifier = RoomNotifier(status, LOCAL_ROOM, notifier.watchdog_interval)
    source = local.open_source(config, local_notifier) if config.input.enabled else None  # type: ignore[arg-type]
    notifier.status("loading models")
    wake_paths = wake_model_paths(config)
    voice = load_voices(config, voice_path, config.models.directory)
    tools = build_tools(config)
    engine = GemmaEngine(model_path, mmproj_path, config.engine, tools=tools.toolbox.declarations(),
                         prompt_state_dir=state_dir(config), conversations=len(names))
    check_memory(engine, len(names), config.engine.n_ctx)
    house = House(config, engine, tools)
    event_log = EventLog(sys.stdout if events else None)
    engine_turns = EngineTurns()
    recording = None
    links = {satellite.name: SatelliteLink(satellite, config.input.frame_ms, voice.sample_rate) for satellite in config.satellite}
    areas = {satellite.name: satellite.area for satellite in config.satellite}
    wake = load_wake_detector(config, wake_paths)  # one set of models; each room streams through its own sibling
    for index, name in enumerate(names):
        room = Room(name, index, areas.get(name, ""), engine_turns, frozenset(names) - {name}, catch_all=index == 0)
        link = links.get(name)
        room_notifier = local_notifier if link is None else RoomNotifier(status, name, notifier.watchdog_interval, link)
        house.notifiers.append(room_notifier)
        if link is None:
            source, playback, recording = local.open_playback(config, local_notifier, voice.sample_rate, source)  # type: ignore[arg-type]
            room_source = source
        else:
            room_source, playback = link.source, link.playback
            link.on_status = status.link
        from_file = link is None and bool(local.input_file) and not local.realtime
        assistant = Assistant(
            config, engine, voice, room_source, playback, wake.sibling() if wake is not None else None,
            event_log.for_room(name), room_notifier, wait_for_replies=from_file, tools=tools, room=room,  # type: ignore[arg-type]
        )
        if link is not None:
            link.on_wake = assistant.push_to_talk
        house.assistants[name] = assistant
    house.route_tools()
    house.links = list(links.values())
    satellite_links = Links(house.links)
    _install_signal_handlers(house)
    log.info("ready: %d rooms (%s); wake %s", len(names), ", ".join(names),
             ", ".join(path.name for path in wake_paths) or "off (voice activity)")
    satellite_links.start()
    notifier.ready(status.text())
    house.start()
    try:
        house.supervise(notifier, until_input_ends=config.input.enabled and bool(local.input_file))
    finally:
        notifier.stopping()
        satellite_links.stop()
        tools.scheduler.flush(timeout=0.5)
        for assistant in house.assistants.values():
            assistant.playback.close()
        if not house.engine_busy:
            engine.close()
        notifier.close()
    if recording is not None and local.output_path is not None:
        recording.save(local.output_path)
    if house.failures:
        raise house.failures[0]
    if house.engine_busy:
        log.info("exiting with a turn still inside llama.cpp")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


def _install_signal_handlers(house: House) -> None:
    """SIGTERM/SIGINT stop every room; SIGUSR1 is push-to-talk in the first
    room; SIGUSR2 resets every room's conversation. Flags only."""
    first = next(iter(house.assistants.values()))
    signal.signal(signal.SIGTERM, lambda *_: house.stop())
    signal.signal(signal.SIGINT, lambda *_: house.stop())
    signal.signal(signal.SIGUSR1, lambda *_: first.push_to_talk())
    signal.signal(signal.SIGUSR2, lambda *_: [assistant.request_reset() for assistant in house.assistants.values()])
