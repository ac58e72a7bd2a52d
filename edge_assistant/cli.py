"""The ``edge-assistant`` command.

Exit codes: 0 success; 1 unexpected error; 2 bad input or usage; 3 model files
missing or invalid; 4 no speech in the input; 5 audio device error; 6 Home
Assistant unreachable or failing; 130 Ctrl-C.
Every error is one line on stderr; ``--verbose`` adds details and native logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import NoReturn, Sequence

from . import __version__
from .config import KV_CACHE_TYPES, Config, load_config, validate
from .errors import EdgeAssistantError

log = logging.getLogger("edge_assistant")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


def add_common_options(parser: argparse.ArgumentParser, default: object) -> None:
    """--config, --verbose and --quiet, accepted before or after a command."""
    parser.add_argument("--config", metavar="TOML", default=default, help="configuration file (default: search order in README)")
    parser.add_argument("--verbose", "-v", action="store_true", default=default, help="debug logs, including llama.cpp's")
    parser.add_argument("--quiet", "-q", action="store_true", default=default, help="warnings and errors only")


def add_engine_options(parser: argparse.ArgumentParser, default: object) -> None:
    """Model files and engine overrides, shared by --once and run."""
    parser.add_argument("--model", metavar="GGUF", default=default, help="Gemma 4 E2B model file")
    parser.add_argument("--mmproj", metavar="GGUF", default=default, help="Gemma 4 audio projector file")
    parser.add_argument("--voice", metavar="ONNX", default=default, help="Piper voice (.onnx, with its .onnx.json beside it)")
    parser.add_argument("--models-dir", metavar="DIR", default=default, help="directory with the manifest's model files")
    parser.add_argument("--system-prompt", default=default, help="override engine.system_prompt")
    parser.add_argument("--max-tokens", type=int, default=default, help="override engine.max_tokens")
    parser.add_argument("--kv-cache-type", choices=KV_CACHE_TYPES, default=default, help="override engine.kv_cache_type")
    parser.add_argument("--n-ctx", type=int, default=default, help="override engine.n_ctx")
    parser.add_argument("--threads", type=int, default=default, help="override engine.threads (0 = physical cores)")
    parser.add_argument("--temperature", type=float, default=default, help="override engine.temperature (0 = greedy)")
    parser.add_argument("--seed", type=int, default=default, help="override engine.seed (-1 = random)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="edge-assistant",
        description="Offline voice assistant: Gemma 4 E2B hears the audio directly, Piper answers.",
    )
    parser.add_argument("--version", action="version", version=f"edge-assistant {__version__}")
    add_common_options(parser, argparse.SUPPRESS)
    parser.add_argument("--once", metavar="AUDIO", help="answer one spoken question from an audio file and exit")
    add_engine_options(parser, None)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--out", metavar="WAV", help="write the spoken reply to this WAV instead of playing it")
    output.add_argument("--no-speak", action="store_true", help="print the reply only")
    parser.add_argument("--json", action="store_true", help="print one JSON object with reply, tokens, timings and tool calls")

    common = _Parser(add_help=False)
    add_common_options(common, argparse.SUPPRESS)
    engine_options = _Parser(add_help=False)
    add_engine_options(engine_options, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    run = commands.add_parser("run", help="the always-listening assistant (what the systemd service runs)", parents=[common, engine_options])
    run.add_argument("--input-file", metavar="WAV", help="feed this recording instead of the microphone")
    run.add_argument("--output-file", metavar="WAV", help="write what the speaker would play, silences included")
    run.add_argument("--realtime", action="store_true", help="pace --input-file in real time")
    run.add_argument("--events", action="store_true", help="print one JSON object per event on stdout")
    run.add_argument(
        "--echo-gain", type=float, default=0.0, metavar="G",
        help="with --output-file: mix what the speaker plays back into the input at gain G, like a speaker next to the microphone",
    )
    commands.add_parser("devices", help="list audio input and output devices", parents=[common])
    from .wake.cli import add_commands as add_wakeword_commands

    add_wakeword_commands(commands, common)
    from .tools.cli import add_commands as add_tools_commands

    add_tools_commands(commands, common)

    from .tools.home_assistant.check import add_commands as add_home_assistant_commands

    add_home_assistant_commands(commands, common)
    from .tools.mcp.cli import add_commands as add_mcp_commands

    add_mcp_commands(commands, common)
    from .rooms.satellite import add_command as add_satellite_command

    add_satellite_command(commands, common)
    models = commands.add_parser("models", help="download, verify or slim the model files")
    model_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True, parser_class=_Parser)
    for name, text in (("download", "fetch the manifest's files (resumes, verifies)"), ("verify", "check the files")):
        action = model_commands.add_parser(name, help=text, parents=[common])
        action.add_argument("--dir", metavar="DIR", help="models directory")
        action.add_argument(
            "--only", metavar="NAME", action="append", default=[],
            help="just these manifest entries, by name or role (repeatable or comma-separated), e.g. --only wake",
        )
        action.add_argument(
            "--voice", metavar="NAME", action="append", default=[],
            help="a voice of the manifest for [tts.voices] and its .onnx.json, e.g. de_DE-thorsten-medium (repeatable)",
        )
    slim = model_commands.add_parser("slim", help="write an audio-only projector from a vision+audio one", parents=[common])
    slim.add_argument("source", metavar="SRC")
    slim.add_argument("destination", metavar="DST", nargs="?", help="default: SRC with .audio.gguf, which is used automatically")
    config = commands.add_parser("config", help="show the effective configuration")
    config.add_subparsers(dest="config_command", metavar="ACTION", required=True, parser_class=_Parser).add_parser(
        "show", help="print the effective configuration as TOML", parents=[common]
    )
    parser.set_defaults(config=None, verbose=False, quiet=False)
    return parser


def log_level(command: str | None, verbose: bool, quiet: bool) -> int:
    """``run`` is a daemon: INFO by default (each wake, turn with its timings and
    tool call reaches the journal); one-shot commands WARNING. ``--verbose``
    adds debug and llama.cpp's own logs, ``--quiet`` keeps warnings only."""
    if verbose:
        return logging.DEBUG
    if quiet:
        return logging.WARNING
    return logging.INFO if command == "run" else logging.WARNING


def setup_logging(level: int) -> None:
    """Plain ``LEVEL logger: message`` lines: journald adds time and unit."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def effective_config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    overrides = {
        ("engine", "system_prompt"): args.system_prompt,
        ("engine", "max_tokens"): args.max_tokens,
        ("engine", "kv_cache_type"): args.kv_cache_type,
        ("engine", "n_ctx"): args.n_ctx,
        ("engine", "threads"): args.threads,
        ("engine", "temperature"): args.temperature,
        ("engine", "seed"): args.seed,
        ("models", "model"): args.model,
        ("models", "mmproj"): args.mmproj,
        ("models", "voice"): args.voice,
        ("models", "dir"): args.models_dir,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            setattr(getattr(config, section), key, value)
    validate(config, "command line")
    return config


def model_paths(config: Config, need_voice: bool) -> tuple[Path, Path, Path | None]:
    """Explicit paths from flags or config, else the manifest's files in the models
    directory (ModelFileError naming the file and the command that fetches it)."""
    from .models.manifest import resolve

    directory = config.models.directory

    def pick(explicit: str, role: str) -> Path:
        return Path(explicit).expanduser() if explicit else resolve(role, directory)

    voice = pick(config.models.voice, "voice") if need_voice else None
    return pick(config.models.model, "model"), pick(config.models.mmproj, "mmproj"), voice


def prompt_state_dir(config: Config) -> Path:
    """Where the system prompt's KV state is kept: the tools' state directory."""
    from .tools.setup import state_dir

    return state_dir(config)


def run_once(args: argparse.Namespace, config: Config) -> int:
    from .audio.devices import parse_device
    from .audio.files import check_output_path, read_audio
    from .audio.playback import DevicePlayback, Playback, RecordingPlayback
    from .llm.engine import GemmaEngine
    from .llm.tool_loop import ToolUse
    from .languages import load_voices
    from .tools.setup import build_tools
    from .tts import StreamingSpeaker
    from .turn import prepare_audio, run_turn

    command_started = time.perf_counter()
    out_path = check_output_path(args.out) if args.out else None
    # Bad audio and silence are found before the model is loaded.
    prep_started = time.perf_counter()
    speech = prepare_audio(read_audio(args.once), config.audio, config.endpoint.min_speech_ms, config.endpoint.min_level_dbfs)
    prep_ms = (time.perf_counter() - prep_started) * 1000
    model_path, mmproj_path, voice_path = model_paths(config, need_voice=not args.no_speak)
    toolbox = build_tools(config).toolbox  # a confirm tool is declined: nobody is asked in a one-shot run

    load_started = time.perf_counter()
    engine = GemmaEngine(model_path, mmproj_path, config.engine, tools=toolbox.declarations(),
                         prompt_state_dir=prompt_state_dir(config))
    speaker = None
    recording: RecordingPlayback | None = None
    playback: Playback | None = None
    if not args.no_speak:
        voice = load_voices(config, voice_path, config.models.directory)
        if out_path:
            playback = recording = RecordingPlayback(voice.sample_rate)
        else:  # one output stream for the whole reply, as the daemon's: no gap or click between sentences
            playback = DevicePlayback(parse_device(config.tts.output_device), voice.sample_rate)
    load_ms = (time.perf_counter() - load_started) * 1000

    with engine:
        turn_started = time.perf_counter()
        if playback is not None:
            speaker = StreamingSpeaker(voice, playback)
        result = run_turn(engine, speech, speaker, turn_started, ToolUse(toolbox))
    if playback is not None:
        if not result.sentences:
            log.warning("the reply had nothing to speak")
        playback.drain()  # a device plays on after the last sentence was handed over
        playback.close()
    if recording is not None and out_path is not None:
        recording.save(out_path)

    timings = result.timings_ms
    report = result.as_dict()
    report["timings_ms"] = {
        "load": round(load_ms, 1),
        "audio_prep": round(prep_ms, 1),
        "encode": round(timings["encode"], 1),
        "prefill": round(timings["prefill"], 1),
        "first_token": round(timings["first_token"], 1),
        "decode": round(timings["decode"], 1),
        "tts_first_audio": round(timings["tts_first_audio"], 1) if "tts_first_audio" in timings else None,
        "total": round((time.perf_counter() - command_started) * 1000, 1),
    }
    report.update(
        model=str(model_path),
        mmproj=str(mmproj_path),
        voice=str(voice_path) if voice_path else None,
        kv_cache_type=config.engine.kv_cache_type,
        threads=engine.threads,
        out=str(out_path) if out_path else None,
    )
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
    else:
        print(result.reply)
    return 0


def run_models(args: argparse.Namespace, config: Config) -> int:
    from .models.download import download
    from .models.manifest import audio_projector_path, default_models_dir, load_manifest, select, voice_entries
    from .models.slim import slim_projector
    from .models.verify import verify

    if args.models_command == "slim":
        source = Path(args.source)
        destination = Path(args.destination) if args.destination else audio_projector_path(source)
        slim_projector(source, destination)
        print(f"wrote audio-only projector {destination}")
        return 0
    directory = Path(args.dir).expanduser() if args.dir else config.models.directory or default_models_dir()
    only = [word.strip() for words in args.only for word in words.split(",") if word.strip()]
    files = load_manifest()
    voices = [file for name in args.voice for file in voice_entries(files, name)]
    manifest = [*select(files, only), *voices] if only or not voices else voices
    if args.models_command == "download":
        download(manifest, directory)
        print(f"{'the chosen' if only or voices else 'all'} model files present and verified in {directory}")
        return 0
    results = verify(manifest, directory)
    for result in results:
        print(result.describe())
    return 0 if all(result.ok for result in results) else 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("--verbose and --quiet exclude each other")
    setup_logging(log_level(args.command, args.verbose, args.quiet))
    try:
        config = effective_config(args)
        if args.command == "models":
            return run_models(args, config)
        if args.command == "config":
            from .languages import describe

            print(config.to_toml(), end="")
            print("\n" + "\n".join(f"# {line}" for line in describe(config, config.models.directory).splitlines()))
            return 0
        if args.command == "wakeword":
            from .wake.cli import run as run_wakeword

            return run_wakeword(args, config)
        if args.command == "tools":
            from .tools.cli import run as run_tools

            return run_tools(args, config)
        if args.command == "mcp":
            from .tools.mcp.cli import run as run_mcp

            return run_mcp(args, config)
        if args.command == "ha":
            from .tools.home_assistant.check import run as run_home_assistant

            return run_home_assistant(args, config)
        if args.command == "satellite":
            from .rooms.satellite import run as run_satellite

            return run_satellite(args, config)
        if args.command == "devices":
            from .audio.devices import list_devices

            print(list_devices())
            return 0
        if args.command == "run":
            from .daemon.service import serve

            model_path, mmproj_path, voice_path = model_paths(config, need_voice=True)
            return serve(
                config, model_path, mmproj_path, voice_path, args.input_file, args.output_file,
                args.realtime, args.events, args.echo_gain,
            )
        if args.once:
            return run_once(args, config)
        parser.error("nothing to do: give --once AUDIO or a command")
    except EdgeAssistantError as error:
        print(f"edge-assistant: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("edge-assistant: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # a bug: one line, the traceback only with --verbose
        log.debug("unexpected error", exc_info=True)
        print(f"edge-assistant: unexpected error: {type(error).__name__}: {error} (run with --verbose for details)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
