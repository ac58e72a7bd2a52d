"""``edge-assistant run``: everything loaded (sources, wake word, engine, voice,
tools, playback), the assistant run until the input ends or a signal stops it."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from ..allocator import map_large_buffers
from ..audio.playback import Playback, RecordingPlayback
from ..audio.sources import AudioSource
from ..config import Config
from ..errors import UsageError
from ..languages import load_voices
from ..llm.engine import GemmaEngine
from ..systemd import Notifier
from ..tools.setup import build_tools, state_dir
from .assistant import Assistant
from .events import EventLog

log = logging.getLogger(__name__)


def install_signal_handlers(assistant: Assistant) -> None:
    """SIGTERM/SIGINT stop, SIGUSR1 is push-to-talk, SIGUSR2 resets the conversation.
    Each handler only sets a flag: the audio loop acts on it at its next frame."""
    signal.signal(signal.SIGTERM, lambda *_: assistant.stop())
    signal.signal(signal.SIGINT, lambda *_: assistant.stop())
    signal.signal(signal.SIGUSR1, lambda *_: assistant.push_to_talk())
    signal.signal(signal.SIGUSR2, lambda *_: assistant.request_reset())


def wake_model_paths(config: Config) -> list[Path]:
    """``wake.model``: "none", or comma-separated names or paths (manifest.resolve_wake)."""
    from ..models.manifest import resolve_wake

    spec = config.wake.model.strip()
    if spec.lower() in ("", "none"):
        return []
    return [resolve_wake(item.strip(), config.models.directory) for item in spec.split(",") if item.strip()]


def load_wake_detector(config: Config, wake_paths: list[Path]):  # type: ignore[no-untyped-def]
    """A wake word detector of its own (each room needs one), or None: any speech starts a turn."""
    if not wake_paths:
        return None
    from ..wake.detector import WakeWordDetector

    return WakeWordDetector(wake_paths, config.wake.threshold or None, config.wake.refractory_seconds)


@dataclass
class LocalAudio:
    """This machine's own microphone and speaker, or the files standing for them."""

    input_file: str | None = None
    output_file: str | None = None
    realtime: bool = False
    echo_gain: float = 0.0
    output_path: Path | None = None

    def check(self) -> None:
        """Bad file options fail before anything loads."""
        from ..audio.files import check_output_path

        self.output_path = check_output_path(self.output_file, "--output-file") if self.output_file else None
        if self.echo_gain and self.output_path is None:
            raise UsageError("--echo-gain needs --output-file (it simulates the speaker that file stands for)")

    def open_source(self, config: Config, notifier: Notifier) -> AudioSource:
        """Before the models load: a wrong input.channel fails at once."""
        from ..audio.devices import parse_device
        from ..audio.sources import FileSource, MicrophoneSource

        if self.input_file:
            return FileSource(self.input_file, config.input.frame_ms, self.realtime)
        return MicrophoneSource(
            parse_device(config.input.device), config.input.frame_ms, on_idle=notifier.watchdog,
            channel=config.input.channel, on_status=notifier.status,
        )

    def open_playback(
        self, config: Config, notifier: Notifier, sample_rate: int, source: AudioSource
    ) -> tuple[AudioSource, Playback, RecordingPlayback | None]:
        """The speaker, and the source as heard beside it when it is a file."""
        from ..audio.devices import parse_device
        from ..audio.playback import DevicePlayback
        from ..audio.sources import EchoSource

        recording = RecordingPlayback(sample_rate, self.output_path) if self.output_path else None
        playback: Playback = recording or DevicePlayback(
            parse_device(config.tts.output_device), sample_rate, on_status=notifier.status
        )
        if recording is not None:
            source = EchoSource(source, recording, self.echo_gain)
        return source, playback, recording


def serve(
    config: Config,
    model_path: Path,
    mmproj_path: Path,
    voice_path: Path,
    input_file: str | None = None,
    output_file: str | None = None,
    realtime: bool = False,
    events: bool = False,
    echo_gain: float = 0.0,
) -> int:
    """Load everything, run until the input ends or a signal stops it."""
    faulthandler.enable()  # a watchdog SIGABRT then logs every thread's stack to the journal
    map_large_buffers()  # before anything loads: freed buffers go back to the system (allocator.py)
    notifier = Notifier()
    local = LocalAudio(input_file, output_file, realtime, echo_gain)
    local.check()
    if config.satellite:
        from ..rooms.house import serve_rooms

        return serve_rooms(config, model_path, mmproj_path, voice_path, notifier, local, events)
    source = local.open_source(config, notifier)
    wake_paths = wake_model_paths(config)
    notifier.status("loading models")
    wake = load_wake_detector(config, wake_paths)
    voice = load_voices(config, voice_path, config.models.directory)  # a voice per language (languages.py)
    tools = build_tools(config)
    engine = GemmaEngine(model_path, mmproj_path, config.engine, tools=tools.toolbox.declarations(),
                         prompt_state_dir=state_dir(config))
    source, playback, recording = local.open_playback(config, notifier, voice.sample_rate, source)
    output_path = local.output_path
    assistant = Assistant(
        config, engine, voice, source, playback, wake, EventLog(sys.stdout if events else None), notifier,
        wait_for_replies=bool(input_file) and not realtime, tools=tools,
    )
    install_signal_handlers(assistant)
    log.info("ready: wake %s, models loaded", ", ".join(path.name for path in wake_paths) or "off (voice activity)")
    try:
        assistant.run()
    except BaseException:
        if recording is not None:
            recording.abandon()
        raise
    finally:
        tools.scheduler.flush(timeout=0.5)  # a timer that fired just now is off the disk too
        playback.close()
        if not assistant.runner.running:
            engine.close()
        notifier.close()
    if recording is not None and output_path is not None:
        recording.save(output_path)
    if assistant.runner.running:
        # Stopped while the worker is inside a native call that cannot be
        # interrupted (the audio encoder): end now, without the interpreter's
        # clean-up running under it; the kernel frees its memory.
        log.info("exiting with a turn still inside llama.cpp")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0
