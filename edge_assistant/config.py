"""One TOML file configures every stage; each setting has a default.

Search order (first found wins): ``--config PATH``, ``$XDG_CONFIG_HOME`` or
``~/.config/edge-assistant/config.toml``, ``/etc/edge-assistant/config.toml``.
Command-line flags override the file. Unknown keys and bad values are reported
with the key and the file, because a typo silently ignored on a headless Pi is a
mystery later.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

import tomllib

from .errors import UsageError
from .phrases import LANGUAGES

KV_CACHE_TYPES = ("q8_0", "q4_0", "f16")
LONG_AUDIO_POLICIES = ("split", "keep_last")
# What [home_assistant] can expose. Scenes and scripts run whatever their author
# put in them, so they are exposed one by one in ``entities``, never by domain or area.
HOME_ASSISTANT_DOMAINS = (
    "light", "switch", "fan", "input_boolean", "cover", "climate", "media_player",
    "lock", "binary_sensor", "sensor",
)
HOME_ASSISTANT_ONE_BY_ONE = ("scene", "script")
HOME_ASSISTANT_APIS = ("rest", "mcp")

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant running offline on a small device. "
    "The user speaks to you; answer what they said in one to three short, "
    "plain sentences that sound natural when read aloud. No lists, no markdown, "
    "no emoji. Answer in the language the user spoke, unless told otherwise."
)


@dataclass
class ModelsConfig:
    """Where the model, projector and voice live. Empty paths mean: the manifest's
    default file inside ``dir``."""

    dir: str = ""
    model: str = ""
    mmproj: str = ""
    voice: str = ""

    @property
    def directory(self) -> Path | None:
        """``dir`` as a path, or None for the default (models.default_models_dir)."""
        return Path(self.dir).expanduser() if self.dir else None


@dataclass
class EngineConfig:
    """Gemma 4 E2B through llama.cpp, tuned for 4 GB of RAM (see README, "Memory")."""

    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # 4096 tokens hold the system prompt, several 30 s questions (750 audio tokens
    # each) and their answers; E2B's KV is tiny (about 19 MiB at 4096 in q8_0), so
    # a longer context costs little memory but more attention time per token.
    n_ctx: int = 4096
    # The compute buffer grows with n_ubatch (the worst case holds n_ubatch rows of
    # 262,144-entry logits): 128 keeps it near 130 MiB instead of 518 MiB at 512,
    # while CPU prompt throughput is already saturated at this size.
    n_batch: int = 128
    n_ubatch: int = 128
    kv_cache_type: str = "q8_0"
    threads: int = 0  # 0 = the number of physical cores
    # Threads while the reply is generated, when Piper speaks beside it; 0 = threads.
    decode_threads: int = 0
    use_mmap: bool = True
    # Read the per-layer embedding table (1.2 GiB in E2B, a few rows used per
    # token) on demand through mmap instead of whole at load; llama.cpp's own
    # default does this only for tables over 4 GiB.
    lazy_load: bool = True
    # Let llama.cpp repack Q4_0/Q4_K matrices for its faster CPU kernels (a
    # second copy in RAM of those matrices; much faster decode, see README "Memory").
    repack: bool = True
    # Run the audio encoder once at load so the first question does not pay for
    # its buffers' allocation.
    warm_up_projector: bool = False
    max_tokens: int = 256
    # Google's recommended sampling for Gemma 4.
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64
    seed: int = -1  # -1 = a new random seed every run
    keep_history: bool = True


@dataclass
class AudioConfig:
    """Input preparation before the model sees the audio."""

    # webrtcvad aggressiveness 0 (keeps most) .. 3 (drops most non-speech).
    vad_aggressiveness: int = 2
    # Kept around the detected speech so word onsets and endings are not clipped.
    speech_padding_ms: int = 200
    # What happens to input longer than Gemma 4's 30 s per clip: "split" sends it
    # all as consecutive 30 s clips (what llama.cpp does); "keep_last" keeps only
    # the last 30 s (the question usually comes last) and warns.
    long_audio: str = "split"
    max_seconds: float = 120.0  # longer input is refused: it would not fit the context


@dataclass
class TtsConfig:
    """Piper speech output."""

    speaker: int = -1  # -1 = the voice's default speaker
    length_scale: float = 1.0  # >1 speaks slower
    output_device: str = ""  # sounddevice name or index; empty = default output
    # Piper synthesizes while llama.cpp is still generating; one thread keeps it
    # from stalling llama.cpp's threads, and still runs well faster than real time.
    threads: int = 1
    # The default voice's language (README "Languages"): replies in a language
    # without a voice of its own are spoken by the default voice.
    language: str = "en"
    # A voice per language, each a manifest voice name or a path to a .onnx:
    # [tts.voices] de = "de_DE-thorsten-medium". Loaded on first use. One for
    # ``language`` itself (en = "en_GB-alba-medium") replaces the default voice.
    voices: dict[str, str] = field(default_factory=dict)


@dataclass
class InputConfig:
    """The microphone of ``edge-assistant run``."""

    # false: no local microphone or speaker at all, a headless brain that only
    # serves its [[satellite]] rooms.
    enabled: bool = True
    device: str = ""  # sounddevice name (substring) or index; empty = default input
    frame_ms: int = 30  # 10, 20 or 30: what webrtcvad accepts
    # Which channel of a multi-channel device (microphone HATs) is used, from 0;
    # one channel, not a mix: some carry a playback loopback, and mixing spaced
    # microphones comb-filters the voice.
    channel: int = 0


@dataclass
class WakeConfig:
    """openWakeWord-compatible wake models. ``model = "none"``: any speech starts a
    turn (VAD only). Several models: comma-separated. A bare name is a pretrained
    model from the manifest (hey_jarvis, alexa, hey_mycroft, hey_rhasspy), else
    NAME.onnx in the models directory."""

    model: str = "none"
    threshold: float = 0.0  # 0 = the threshold chosen when the model was trained (else 0.5)
    refractory_seconds: float = 2.0


@dataclass
class EndpointConfig:
    """When an utterance starts and ends (webrtcvad, audio.vad_aggressiveness)."""

    pre_roll_ms: int = 300  # kept from before the speech start, so the first word is whole
    start_ms: int = 120  # voiced audio needed to call it speech
    end_silence_ms: int = 800  # silence that ends the utterance
    min_speech_ms: int = 300  # shorter is a cough or a click: ignored
    max_speech_seconds: float = 30.0  # Gemma 4's limit per clip
    no_speech_timeout_seconds: float = 5.0  # after the wake word, give up waiting
    # Quieter frames (speech-band level above 150 Hz, dBFS RMS) are never speech:
    # a gate for far sources, a television across the room. -100 = no gate.
    min_level_dbfs: float = -100.0


@dataclass
class ConversationConfig:
    follow_up_seconds: float = 6.0  # after a reply, speech without the wake word continues
    idle_reset_seconds: float = 300.0  # a turn after this much quiet starts a fresh history
    barge_in: bool = True  # the wake word during a reply stops it and starts a new turn
    # After the speaker stops, ignore speech this long: the room still rings with it.
    echo_tail_ms: int = 300
    # A turn still running after this is cancelled; one that then does not return
    # stops the systemd watchdog, so systemd restarts the service.
    turn_timeout_seconds: float = 120.0
    # Evaluate the question while it is spoken, so only its last half second and
    # the closing text are left when it ends; false: all of it after it ends.
    stream_audio: bool = True


@dataclass
class EarconConfig:
    """Short tones generated in code."""

    listening: bool = True
    done: bool = False
    error: bool = True
    volume: float = 0.3


@dataclass
class ToolsConfig:
    """Voice commands (README, "Voice commands"): built-in tools, and your own
    allowlisted programs as ``[[tools.command]]`` tables."""

    enabled: bool = True
    # Timers, alarms and the volume live here; empty: $STATE_DIRECTORY (systemd's
    # StateDirectory=) or ~/.local/state/edge-assistant.
    state_dir: str = ""
    max_calls_per_turn: int = 4
    # After "should I run X?", how long the assistant waits for a spoken yes or no.
    confirm_timeout_seconds: float = 8.0
    # An alarm repeats until "stop" (or the wake word) or until this has passed.
    alarm_ring_seconds: float = 120.0
    # The ALSA mixer the volume tool sets, as argv up to the control, e.g.
    # ["/usr/bin/amixer", "-c", "1", "sset", "PCM"]; empty: software gain.
    mixer: list = field(default_factory=list)
    command: list = field(default_factory=list)  # [[tools.command]] tables


@dataclass
class HomeAssistantConfig:
    """Devices by voice through Home Assistant's REST API (README, "Home Assistant").
    Empty ``url``: not used. Only what the allowlist names is ever offered or called."""

    url: str = ""  # e.g. "http://192.168.1.20:8123"
    # A long-lived access token, alone in a file only the service user can read.
    token_file: str = ""
    domains: list[str] = field(default_factory=list)  # every entity of these, e.g. ["light", "cover"]
    entities: list[str] = field(default_factory=list)  # entity ids; the only way to expose scenes and scripts
    areas: list[str] = field(default_factory=list)  # area names; their entities in the domains above
    # Applies to connecting and to each read; a turn never waits longer per request.
    timeout_seconds: float = 3.0
    # "rest": our own tools over the REST API (any HA since 2024.1); "mcp": the
    # tools of HA's own MCP server (the mcp_server integration, HA 2025.2 and
    # later), whose Expose screen then decides what the assistant may touch.
    api: str = "rest"
    # With api = "mcp": the MCP tools the model may call; empty = HA's device
    # tools (HassTurnOn, HassTurnOff, HassLightSet, GetLiveContext).
    tools: list[str] = field(default_factory=list)


@dataclass
class McpConfig:
    """Tools from MCP servers (README, "MCP servers"): ``[[mcp.server]]`` tables,
    each with the allowlist of tools the model may call."""

    server: list = field(default_factory=list)  # [[mcp.server]] tables


LOCAL_ROOM = "local"  # the room of the machine's own microphone and speaker
MAX_SATELLITES = 16
SATELLITE_KEYS = ("name", "uri", "area")


@dataclass
class SatelliteConfig:
    """A room's Wyoming satellite (``[[satellite]]``, README "Rooms"): a
    microphone and speaker on the LAN, connected to by address, never discovered."""

    name: str  # the room: in logs, STATUS= and where timers ring
    uri: str  # tcp://HOST:PORT
    area: str = ""  # Home Assistant area for "turn on the light" said in this room

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.uri)
        return parts.hostname or "", parts.port or 0


@dataclass
class Config:
    models: ModelsConfig = field(default_factory=ModelsConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    input: InputConfig = field(default_factory=InputConfig)
    wake: WakeConfig = field(default_factory=WakeConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    conversation: ConversationConfig = field(default_factory=ConversationConfig)
    earcons: EarconConfig = field(default_factory=EarconConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    home_assistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    mcp: McpConfig = field(default_factory=McpConfig)
    satellite: list[SatelliteConfig] = field(default_factory=list)  # [[satellite]] tables
    source: str = ""  # the file it was read from, for messages; "" = defaults

    def to_toml(self) -> str:
        """The effective configuration, as a TOML file a user can start from."""
        lines = [f"# effective configuration (from {self.source or 'built-in defaults'})"]
        for section in _sections(self):
            lines.append(f"\n[{section.name}]")
            for item in dataclasses.fields(getattr(self, section.name)):
                value = getattr(getattr(self, section.name), item.name)
                lines.append(f"{item.name} = {_toml_value(value)}")
        for satellite in self.satellite:
            lines.append("\n[[satellite]]")
            lines.extend(f"{key} = {_toml_value(getattr(satellite, key))}" for key in SATELLITE_KEYS)
        return "\n".join(lines) + "\n"


def default_search_paths() -> list[Path]:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [config_home / "edge-assistant" / "config.toml", Path("/etc/edge-assistant/config.toml")]


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Read the configuration: the explicit file (must exist), else the first file
    in the search order, else defaults."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise UsageError(f"config file not found: {path}")
        return parse_config_file(path)
    for path in default_search_paths():
        if path.is_file():
            return parse_config_file(path)
    return Config()


def parse_config_file(path: Path) -> Config:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read config file {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: invalid TOML: {error}") from None
    config = apply_overrides(Config(), data, where=str(path))
    config.source = str(path)
    return config


def apply_overrides(config: Config, data: dict[str, Any], where: str) -> Config:
    """Copy ``{section: {key: value}}`` into ``config``, checking names and types."""
    sections = {item.name: item for item in _sections(config)}
    for section_name, values in data.items():
        if section_name == "satellite":
            config.satellite = _satellites(values, where)
            continue
        if section_name not in sections:
            raise UsageError(f"{where}: unknown section [{section_name}] (known: {', '.join(sections)}, [[satellite]])")
        if not isinstance(values, dict):
            raise UsageError(f"{where}: [{section_name}] must be a table")
        section = getattr(config, section_name)
        hints = get_type_hints(type(section))
        for key, value in values.items():
            if key not in hints:
                raise UsageError(f"{where}: unknown key {section_name}.{key}")
            setattr(section, key, _coerce(value, hints[key], f"{where}: {section_name}.{key}"))
    validate(config, where)
    return config


def validate(config: Config, where: str) -> None:
    """Range checks that types alone cannot express."""
    engine, audio, tts = config.engine, config.audio, config.tts
    wake, endpoint, conversation = config.wake, config.endpoint, config.conversation
    checks = [
        (engine.kv_cache_type in KV_CACHE_TYPES, "engine.kv_cache_type", f"one of {', '.join(KV_CACHE_TYPES)}"),
        (engine.n_ctx >= 512, "engine.n_ctx", "at least 512"),
        (1 <= engine.n_ubatch <= engine.n_batch, "engine.n_ubatch", "between 1 and engine.n_batch"),
        (engine.threads >= 0, "engine.threads", "0 (auto) or more"),
        (engine.decode_threads >= 0, "engine.decode_threads", "0 (= engine.threads) or more"),
        (engine.max_tokens >= 1, "engine.max_tokens", "at least 1"),
        (engine.temperature >= 0, "engine.temperature", "0 or more"),
        (0 < engine.top_p <= 1, "engine.top_p", "in (0, 1]"),
        (engine.top_k >= 0, "engine.top_k", "0 or more"),
        (0 <= audio.vad_aggressiveness <= 3, "audio.vad_aggressiveness", "0, 1, 2 or 3"),
        (0 <= audio.speech_padding_ms <= 2000, "audio.speech_padding_ms", "between 0 and 2000"),
        (audio.long_audio in LONG_AUDIO_POLICIES, "audio.long_audio", f"one of {', '.join(LONG_AUDIO_POLICIES)}"),
        (audio.max_seconds >= 1, "audio.max_seconds", "at least 1"),
        (0.1 <= tts.length_scale <= 10, "tts.length_scale", "between 0.1 and 10"),
        (1 <= tts.threads <= 64, "tts.threads", "between 1 and 64"),
        (tts.language in LANGUAGES, "tts.language", f"one of {', '.join(LANGUAGES)}"),
        (all(key in LANGUAGES and value.strip() for key, value in tts.voices.items()), "tts.voices",
         f"a table of language = voice name or path, languages from {', '.join(LANGUAGES)}"),
        (config.input.frame_ms in (10, 20, 30), "input.frame_ms", "10, 20 or 30"),
        (config.input.channel >= 0, "input.channel", "0 or more"),
        (0 <= wake.threshold < 1, "wake.threshold", "0 (the model's own) or between 0 and 1"),
        (wake.refractory_seconds >= 0, "wake.refractory_seconds", "0 or more"),
        (0 <= endpoint.pre_roll_ms <= 2000, "endpoint.pre_roll_ms", "between 0 and 2000"),
        (30 <= endpoint.start_ms <= 2000, "endpoint.start_ms", "between 30 and 2000"),
        (90 <= endpoint.end_silence_ms <= 10000, "endpoint.end_silence_ms", "between 90 and 10000"),
        (endpoint.min_speech_ms >= 0, "endpoint.min_speech_ms", "0 or more"),
        (1 <= endpoint.max_speech_seconds <= 30, "endpoint.max_speech_seconds", "between 1 and 30"),
        (endpoint.no_speech_timeout_seconds > 0, "endpoint.no_speech_timeout_seconds", "more than 0"),
        (-100 <= endpoint.min_level_dbfs <= 0, "endpoint.min_level_dbfs", "between -100 (no gate) and 0"),
        (conversation.follow_up_seconds >= 0, "conversation.follow_up_seconds", "0 or more"),
        (conversation.idle_reset_seconds > 0, "conversation.idle_reset_seconds", "more than 0"),
        (0 <= conversation.echo_tail_ms <= 5000, "conversation.echo_tail_ms", "between 0 and 5000"),
        (conversation.turn_timeout_seconds > 0, "conversation.turn_timeout_seconds", "more than 0"),
        (0 <= config.earcons.volume <= 1, "earcons.volume", "between 0 and 1"),
        (1 <= config.tools.max_calls_per_turn <= 16, "tools.max_calls_per_turn", "between 1 and 16"),
        (1 <= config.tools.confirm_timeout_seconds <= 60, "tools.confirm_timeout_seconds", "between 1 and 60"),
        (config.tools.alarm_ring_seconds >= 0, "tools.alarm_ring_seconds", "0 or more"),
        (all(isinstance(item, str) for item in config.tools.mixer), "tools.mixer", "a list of strings (argv)"),
        *_home_assistant_checks(config.home_assistant),
        (config.input.enabled or bool(config.satellite), "input.enabled",
         "true unless at least one [[satellite]] is configured (nothing would listen)"),
    ]
    for ok, key, expected in checks:
        if not ok:
            value = getattr(getattr(config, key.split(".")[0]), key.split(".")[1])
            raise UsageError(f"{where}: {key} = {value!r} is invalid: must be {expected}")


def _home_assistant_checks(ha: HomeAssistantConfig) -> list[tuple[bool, str, str]]:
    url = urlsplit(ha.url)
    ids = [entity.partition(".") for entity in ha.entities]
    return [
        (not ha.url or (url.scheme in ("http", "https") and bool(url.hostname) and url.path in ("", "/")),
         "home_assistant.url", "empty or an http:// or https:// address like http://192.168.1.20:8123"),
        (not ha.url or bool(ha.token_file), "home_assistant.token_file", "set when home_assistant.url is"),
        (all(domain in HOME_ASSISTANT_DOMAINS for domain in ha.domains), "home_assistant.domains",
         f"some of {', '.join(HOME_ASSISTANT_DOMAINS)} (scenes and scripts go one by one into entities)"),
        (all(domain in HOME_ASSISTANT_DOMAINS + HOME_ASSISTANT_ONE_BY_ONE and dot and name.replace("_", "").isalnum()
             for domain, dot, name in ids), "home_assistant.entities",
         f"entity ids like light.kitchen in {', '.join(HOME_ASSISTANT_DOMAINS + HOME_ASSISTANT_ONE_BY_ONE)}"),
        (all(area.strip() and area.replace(" ", "").replace("_", "").replace("-", "").isalnum() for area in ha.areas),
         "home_assistant.areas", "area names of letters, digits, spaces, - and _"),
        (0.2 <= ha.timeout_seconds <= 30, "home_assistant.timeout_seconds", "between 0.2 and 30"),
        (ha.api in HOME_ASSISTANT_APIS, "home_assistant.api", f"one of {', '.join(HOME_ASSISTANT_APIS)}"),
    ]


def _satellites(tables: Any, where: str) -> list[SatelliteConfig]:
    """``[[satellite]]`` tables, each checked: a unique room name, a tcp:// address."""
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise UsageError(f"{where}: satellite must be [[satellite]] tables")
    if len(tables) > MAX_SATELLITES:
        raise UsageError(f"{where}: {len(tables)} [[satellite]] tables; at most {MAX_SATELLITES}")
    satellites: list[SatelliteConfig] = []
    for number, table in enumerate(tables, 1):
        here = f"{where}: [[satellite]] #{number}"
        unknown = sorted(set(table) - set(SATELLITE_KEYS))
        if unknown:
            raise UsageError(f"{here}: unknown key {unknown[0]} (known: {', '.join(SATELLITE_KEYS)})")
        for key in ("name", "uri"):
            if not isinstance(table.get(key), str) or not table[key].strip():
                raise UsageError(f"{here}: {key} is required (a string)")
        if not isinstance(table.get("area", ""), str):
            raise UsageError(f"{here}: area = {table['area']!r} is invalid: expected a string")
        satellite = SatelliteConfig(table["name"].strip(), table["uri"].strip(), table.get("area", "").strip())
        _check_satellite(satellite, f"{here} ({satellite.name})", [other.name for other in satellites])
        satellites.append(satellite)
    return satellites


def _check_satellite(satellite: SatelliteConfig, where: str, taken: list[str]) -> None:
    name = satellite.name
    if not name.replace("-", "").replace("_", "").isalnum() or not name.isascii():
        raise UsageError(f"{where}: name must be letters, digits, - and _ (it names the room)")
    if name == LOCAL_ROOM or name in taken:
        raise UsageError(f"{where}: name {name!r} is taken (by {'the local room' if name == LOCAL_ROOM else 'another satellite'})")
    try:
        parts = urlsplit(satellite.uri)
        valid = parts.scheme == "tcp" and bool(parts.hostname) and bool(parts.port) and parts.path in ("", "/")
    except ValueError:  # a port out of range, a broken IPv6 address
        valid = False
    if not valid:
        raise UsageError(f"{where}: uri = {satellite.uri!r} is invalid: must be tcp://HOST:PORT, like tcp://192.168.1.31:10700")
    if satellite.area and not satellite.area.replace(" ", "").replace("_", "").replace("-", "").isalnum():
        raise UsageError(f"{where}: area = {satellite.area!r} is invalid: letters, digits, spaces, - and _")


def _sections(config: Config) -> list[dataclasses.Field[Any]]:
    return [item for item in dataclasses.fields(config) if dataclasses.is_dataclass(item.default_factory)]


def _coerce(value: Any, expected: type, where: str) -> Any:
    # bool is an int in Python; TOML keeps them apart and so do we.
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is str and isinstance(value, str):
        return value
    if get_origin(expected) is dict:
        if isinstance(value, dict) and all(isinstance(item, str) for item in value.values()):
            return dict(value)
        raise UsageError(f"{where} = {value!r} is invalid: expected a table of strings")
    if get_origin(expected) is list:
        (item_type,) = get_args(expected)
        if isinstance(value, list) and all(isinstance(item, item_type) for item in value):
            return list(value)
        raise UsageError(f"{where} = {value!r} is invalid: expected a list of {item_type.__name__}")
    if isinstance(value, expected) and (expected is bool or not isinstance(value, bool)):
        return value
    raise UsageError(f"{where} = {value!r} is invalid: expected {expected.__name__}")


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items()) + " }"
    return repr(value)
