"""``edge-assistant run``: everything loaded (sources, wake word, engine, voice,
tools, playback), the assistant run until the input ends or a signal stops it."""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
from pathlib import Path

from ..allocator import map_large_buffers
from ..audio.playback import Playback
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
    from ..audio.devices import parse_device
    from ..audio.files import check_output_path
    from ..audio.playback import DevicePlayback, RecordingPlayback
    from ..audio.sources import EchoSource, FileSource, MicrophoneSource

    faulthandler.enable()  # a watchdog SIGABRT then logs every thread's stack to the journal
    map_large_buffers()  # before anything loads: freed buffers go back to the system (allocator.py)
    notifier = Notifier()
    output_path = check_output_path(output_file, "--output-file") if output_file else None
    if echo_gain and output_path is None:
        raise UsageError("--echo-gain needs --output-file (it simulates the speaker that file stands for)")
    wake_paths = wake_model_paths(config)
    frame_ms = config.input.frame_ms
    source: AudioSource = (
        FileSource(input_file, frame_ms, realtime)
        if input_file
        else MicrophoneSource(
            parse_device(config.input.device), frame_ms, on_idle=notifier.watchdog,
            channel=config.input.channel, on_status=notifier.status,
        )
    )
    notifier.status("loading models")
    wake = None
    if wake_paths:
        from ..wake.detector import WakeWordDetector

        wake = WakeWordDetector(wake_paths, config.wake.threshold or None, config.wake.refractory_seconds)
    voice = load_voices(config, voice_path, config.models.directory)  # a voice per language (languages.py)
    tools = build_tools(config)
    engine = GemmaEngine(model_path, mmproj_path, config.engine, tools=tools.toolbox.declarations(),
                         prompt_state_dir=state_dir(config))
    recording = RecordingPlayback(voice.sample_rate, output_path) if output_path else None
    playback: Playback = recording or DevicePlayback(
        parse_device(config.tts.output_device), voice.sample_rate, on_status=notifier.status
    )
    if recording is not None:
        source = EchoSource(source, recording, echo_gain)
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
