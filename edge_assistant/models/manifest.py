"""The manifest of model files (which, where from, how big, which sha256) and
where they are found on this device."""

from __future__ import annotations

import os
import re
import shlex
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from ..errors import ModelFileError, UsageError

MANIFEST_PATH = Path(__file__).parent.parent / "manifest.toml"
MODELS_DIR_ENV = "EDGE_ASSISTANT_MODELS"
SYSTEM_MODELS_DIR = Path("/var/lib/edge-assistant/models")
DOWNLOAD_COMMAND = "edge-assistant models download"
ROLES = ("model", "mmproj", "voice", "voice_config", "wake")
AUDIO_PROJECTOR_SUFFIX = ".audio.gguf"

SHA256_RE = re.compile(r"[0-9a-f]{64}")
_MANIFEST_FIELDS: tuple[tuple[str, type], ...] = (
    ("name", str),
    ("role", str),
    ("url", str),
    ("size", int),
    ("sha256", str),
    ("filename", str),
)
# Optional fields: ``language`` marks a voice (and its config) for one language,
# fetched only when asked for (``models download --voice NAME``); ``md5`` is the
# checksum a public listing gives when it gives no sha256 (Piper's voices.json).
_OPTIONAL_FIELDS: tuple[tuple[str, type], ...] = (("language", str), ("md5", str))
_TYPE_NAMES = {str: "a string", int: "an integer"}
MD5_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class ModelFile:
    """One manifest entry; ``sha256`` is "" when no published value is known."""

    name: str
    role: str
    url: str
    size: int
    sha256: str
    filename: str
    language: str = ""  # a voice for this language, not part of a plain `models download`
    md5: str = ""

    def path(self, dest_dir: Path) -> Path:
        return Path(dest_dir) / self.filename


def load_manifest(path: Path | None = None) -> list[ModelFile]:
    """Read and validate the manifest (default: the copy shipped in the package)."""
    source = MANIFEST_PATH if path is None else Path(path)
    try:
        with source.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ModelFileError(f"cannot read model manifest {source}: {e}") from e
    entries = data.get("file")
    if not isinstance(entries, list) or not entries:
        raise ModelFileError(f"model manifest {source} has no [[file]] entries")
    files = [_parse_entry(source, i, entry) for i, entry in enumerate(entries, 1)]
    names = [f.filename for f in files]
    if len(set(names)) != len(names):
        raise ModelFileError(f"model manifest {source} lists a filename twice")
    return files


def _parse_entry(source: Path, number: int, entry: object) -> ModelFile:
    where = f"model manifest {source}, entry {number}"
    if not isinstance(entry, dict):
        raise ModelFileError(f"{where}: not a table")
    for key, kind in _MANIFEST_FIELDS:
        value = entry.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ModelFileError(f"{where}: '{key}' must be {_TYPE_NAMES[kind]}")
    for key, kind in _OPTIONAL_FIELDS:
        if key in entry and not isinstance(entry[key], kind):
            raise ModelFileError(f"{where}: '{key}' must be {_TYPE_NAMES[kind]}")
    fields = _MANIFEST_FIELDS + _OPTIONAL_FIELDS
    file = ModelFile(**{key: entry[key] for key, _ in fields if key in entry})
    problem = _entry_problem(file)
    if problem:
        raise ModelFileError(f"{where} ({file.name}): {problem}")
    return file


def _entry_problem(file: ModelFile) -> str | None:
    if file.role not in ROLES:
        return f"role must be one of {', '.join(ROLES)}"
    if urllib.parse.urlsplit(file.url).scheme not in ("http", "https"):
        return "url must be http or https"
    if file.size <= 0:
        return "size must be positive"
    if file.sha256 and not SHA256_RE.fullmatch(file.sha256):
        return "sha256 must be 64 lowercase hex digits, or empty when unknown"
    if file.md5 and not MD5_RE.fullmatch(file.md5):
        return "md5 must be 32 lowercase hex digits"
    if file.language and file.role not in ("voice", "voice_config"):
        return "only voice and voice_config entries have a language"
    if file.filename in ("", ".", "..") or Path(file.filename).name != file.filename:
        return "filename must be a plain file name"
    return None


def default_models_dir() -> Path:
    """$EDGE_ASSISTANT_MODELS, else the system directory if readable, else per user."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    if SYSTEM_MODELS_DIR.is_dir() and os.access(SYSTEM_MODELS_DIR, os.R_OK | os.X_OK):
        return SYSTEM_MODELS_DIR
    return Path.home() / ".local" / "share" / "edge-assistant" / "models"


def audio_projector_path(mmproj_path: Path) -> Path:
    """Where ``models slim`` puts the audio-only copy of a projector, for resolve()."""
    return mmproj_path.with_name(Path(mmproj_path.name).stem + AUDIO_PROJECTOR_SUFFIX)


def resolve(role: str, dest_dir: Path | None = None, files: Sequence[ModelFile] | None = None) -> Path:
    """Path of the default file for ``role``, or ModelFileError saying how to fetch it.

    For ``mmproj`` an audio-only copy made by :func:`slim_projector` next to the
    downloaded projector wins: it needs about a third less RAM.
    """
    dest = default_models_dir() if dest_dir is None else Path(dest_dir)
    candidates = [f for f in (load_manifest() if files is None else files) if f.role == role and not f.language]
    if not candidates:
        raise ModelFileError(f"the model manifest has no file with role '{role}'")
    file = candidates[0]
    path = file.path(dest)
    if role == "mmproj" and audio_projector_path(path).is_file():
        return audio_projector_path(path)
    if not path.is_file():
        raise ModelFileError(missing_message(file, dest))
    return path


def resolve_wake(item: str, dest_dir: Path | None = None, files: Sequence[ModelFile] | None = None) -> Path:
    """One ``wake.model`` item as a path: a manifest wake model by name ("hey_jarvis")
    or file stem ("hey_jarvis_v0.1"), a bare name as NAME.onnx in the models directory
    (where ``wakeword train`` output is kept), or else a path as given.

    A missing name gets a one-line ModelFileError saying how to get it.
    """
    dest = default_models_dir() if dest_dir is None else Path(dest_dir)
    path = Path(item).expanduser()
    if path.suffix == ".onnx" or len(path.parts) != 1:
        return path  # the loader names a missing or broken file
    pretrained = [f for f in (load_manifest() if files is None else files) if f.role == "wake"]
    for file in pretrained:
        if item in (file.name, Path(file.filename).stem):
            if not file.path(dest).is_file():
                raise ModelFileError(missing_message(file, dest, only=file.name))
            return file.path(dest)
    path = dest / f"{item}.onnx"
    if not path.is_file():
        names = ", ".join(file.name for file in pretrained)
        raise ModelFileError(
            f"wake word model '{item}' not found: no {path}; pretrained names are {names}, "
            f"or train one with `edge-assistant wakeword train`"
        )
    return path


def select(files: Sequence[ModelFile], only: Sequence[str]) -> list[ModelFile]:
    """The entries named by ``only`` (entry names or roles); all when it is empty.
    The per-language voices come only by name (``--voice``), never with a role
    or the whole set: each is 63 MB that only its language needs."""
    if not only:
        return [file for file in files if not file.language]
    known = {file.name for file in files} | {file.role for file in files}
    unknown = [word for word in only if word not in known]
    if unknown:
        raise UsageError(
            f"--only {unknown[0]}: not a file name or role in the manifest "
            f"(roles: {', '.join(sorted({file.role for file in files}))}; names: {', '.join(file.name for file in files)})"
        )
    return [file for file in files if file.name in only or (file.role in only and not file.language)]


def voice_entries(files: Sequence[ModelFile], name: str) -> list[ModelFile]:
    """A voice and its config by the voice's name as Piper writes it
    ("de_DE-thorsten-medium"), its file name, or its manifest entry name."""
    wanted = name.removesuffix(".onnx").lower()
    voices = [file for file in files if file.role == "voice"]
    for voice in voices:
        if wanted in (voice.name.lower(), Path(voice.filename).stem.lower()):
            config = [file for file in files if file.role == "voice_config" and file.filename == voice.filename + ".json"]
            return [voice, *config]
    names = ", ".join(Path(voice.filename).stem for voice in voices)
    raise UsageError(f"voice {name!r} is not in the manifest (voices: {names}); a voice of your own goes in by its path")


def missing_message(file: ModelFile, dest_dir: Path, only: str | None = None) -> str:
    """One line naming the missing file and the exact command that fetches it."""
    command = DOWNLOAD_COMMAND
    if only:
        command += f" --only {only}"
    if Path(dest_dir) != default_models_dir():
        command += f" --dir {shlex.quote(str(dest_dir))}"
    return (
        f"{file.role} file {file.path(dest_dir)} is missing: "
        f"run `{command}` to fetch it ({human_size(file.size)})"
    )

def human_size(size: float) -> str:
    """A human size: MB, or kB for the small config files."""
    return f"{size / 1e6:,.1f} MB" if size >= 1_000_000 else f"{size / 1e3:,.1f} kB"
