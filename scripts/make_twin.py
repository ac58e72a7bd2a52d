#!/usr/bin/env python3
"""Build the "Gemma 4 E2B twin": a tiny random-weight gemma4 text model plus a
tiny ``gemma4a`` audio projector that the real llama.cpp (vendored by
llama-cpp-python 0.3.36) loads and runs, so tests exercise the real audio path.

    python scripts/make_twin.py --out DIR [--seed N] [--with-vision]

writes ``DIR/twin-e2b.gguf`` and ``DIR/twin-e2b-mmproj.gguf`` (audio only);
``--with-vision`` adds ``DIR/twin-e2b-mmproj-av.gguf``, a projector with a tiny
``gemma4v`` vision tower as well, laid out like the published E2B mmproj files
(for checking ``edge-assistant models slim``).  ``ensure_twin()`` keeps a
fingerprint-keyed cache of the twin for the tests and scripts/bench_once.py.

    python scripts/make_twin.py --full-size --out DIR [--seed N] [--projector-type f16|q8_0] [--mix q4_k_m|q4_0]

writes the same model at E2B's real size instead (``DIR/e2b-full-size.gguf``,
Q4_K_M mix, ~3.1 GB, and a real-size audio projector; ``ensure_full_size_twin()``
caches it), for measuring time and memory at real size.  Same seed (and
same generator source, data, gguf and numpy) -> byte-identical files.  The
weights are noise: the twin produces gibberish, but with the real Gemma 4
tokenizer, chat template, layer layout (sliding/global pattern, shared KV,
per-layer embeddings, soft-capping, proportional RoPE) and the real conformer
graph.  See scripts/TWIN.md for which hyperparameters are real and which are
shrunk, and where in llama.cpp the tensor names and shapes come from.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the twin package beside this script, however this file was loaded

from twin import TwinError, check_seed, prepare_out_dir  # noqa: E402
from twin.full_size import (  # noqa: E402
    FULL_MODEL_NAME,
    MIXES,
    PROJECTOR_TYPES,
    build_full_size,
    build_full_size_mmproj,
    check_projector_type,
    full_mmproj_name,
)
from twin.projector import build_mmproj  # noqa: E402
from twin.text_model import build_text_model  # noqa: E402
from twin.tokenizer import DATA_DIR, load_tokenizer_kv  # noqa: E402

GENERATOR_DIR = HERE / "twin"
MODEL_NAME = "twin-e2b.gguf"
MMPROJ_NAME = "twin-e2b-mmproj.gguf"
MMPROJ_AV_NAME = "twin-e2b-mmproj-av.gguf"  # vision + audio (--with-vision)


# --------------------------------------------------------------------------
# Fingerprint (cache key)
# --------------------------------------------------------------------------
def _hashed_files() -> list[Path]:
    """This script, the twin package and its data files."""
    sources = [Path(__file__).resolve(), *sorted(GENERATOR_DIR.glob("*.py"))]
    return sources + sorted(p for p in DATA_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def twin_fingerprint(seed: int = 0) -> str:
    """Hash of this generator's source (this script and the twin package), its
    data files, the seed and the versions of the packages that shape the bytes
    (gguf, numpy)."""
    h = hashlib.sha256()
    h.update(b"edge-assistant-twin/1\0")
    for p in _hashed_files():
        h.update(p.relative_to(HERE).as_posix().encode() + b"\0")
        h.update(p.read_bytes())
    for pkg in ("gguf", "numpy"):
        try:
            ver = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            ver = "?"
        h.update(f"{pkg}={ver}\0".encode())
    h.update(f"seed={int(seed)}".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------
def build_twin(out_dir: Path, seed: int = 0, with_vision: bool = False) -> tuple[Path, Path]:
    """Write ``out_dir/twin-e2b.gguf`` and ``out_dir/twin-e2b-mmproj.gguf``
    (audio-only projector); with ``with_vision`` also
    ``out_dir/twin-e2b-mmproj-av.gguf`` (vision + audio, like the published
    E2B projectors).

    Each file is written under a temporary name in ``out_dir`` and renamed into
    place, so a reader never sees a half-written file under the final name.
    Returns (model_path, projector_path): the vision+audio projector if
    ``with_vision``, else the audio-only one."""
    seed = check_seed(seed)
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir)
    tok_kv = load_tokenizer_kv()
    model = out_dir / MODEL_NAME
    mmproj = out_dir / MMPROJ_NAME
    try:
        build_text_model(model, seed, tok_kv)
        build_mmproj(mmproj, seed)
        if with_vision:
            build_mmproj(out_dir / MMPROJ_AV_NAME, seed, with_vision=True)
    except OSError as e:
        raise TwinError(f"cannot write twin into {out_dir}: {e.strerror or e}") from e
    return model, (out_dir / MMPROJ_AV_NAME if with_vision else mmproj)


# --------------------------------------------------------------------------
# Cache (used by the tests' ``twin`` fixture and scripts/bench_once.py)
# --------------------------------------------------------------------------
CACHE_ENV = "EDGE_ASSISTANT_TWIN_CACHE"


def twin_cache_root() -> Path:
    """$EDGE_ASSISTANT_TWIN_CACHE, else ~/.cache/edge-assistant/twin."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edge-assistant" / "twin"


def _cache_root(cache_root: Path | None) -> Path:
    return Path(cache_root).expanduser() if cache_root is not None else twin_cache_root()


def _cached_entry(root: Path, entry: str, names: tuple[str, ...], build: Callable[[Path], object]) -> Path:
    """``root/entry``, holding the files ``names``; if any is missing, ``build``
    writes them all into a fresh temporary directory next to it, which is
    renamed into place only when complete, so an aborted or concurrent run
    never leaves a half-built entry (a concurrent loser keeps the winner's)."""
    final = root / entry

    def complete() -> bool:
        return all((final / name).is_file() for name in names)

    if complete():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry}.tmp-", dir=root))
    try:
        build(tmp)
        if final.exists() and not complete():
            shutil.rmtree(final, ignore_errors=True)  # damaged by hand: replace it
        try:
            os.rename(tmp, final)
        except OSError:
            if not complete():  # lost a race only if the winner is complete
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not complete():
        raise TwinError(f"twin cache {final} incomplete after build")
    return final


def ensure_twin(seed: int = 0, cache_root: Path | None = None, with_vision: bool = False) -> tuple[Path, Path]:
    """Return the cached twin for ``seed``, building it first if needed:
    (model, audio-only projector), or (model, vision+audio projector) with
    ``with_vision``.

    The cache entry is ``CACHE_ROOT/<twin_fingerprint(seed)>/`` (CACHE_ROOT:
    ``cache_root``, else $EDGE_ASSISTANT_TWIN_CACHE, else
    ~/.cache/edge-assistant/twin), so a changed generator, data file, gguf
    or numpy gets a fresh entry.  Model and audio projector are built
    together (``_cached_entry``).  The vision+audio projector is added to a
    complete entry on first request (written to a temporary name and renamed)."""
    seed = check_seed(seed)
    root = _cache_root(cache_root)
    try:
        final = _cached_entry(root, twin_fingerprint(seed), (MODEL_NAME, MMPROJ_NAME), lambda tmp: build_twin(tmp, seed))
        if not with_vision:
            return final / MODEL_NAME, final / MMPROJ_NAME
        av = final / MMPROJ_AV_NAME
        if not av.is_file():
            build_mmproj(av, seed, with_vision=True)
        return final / MODEL_NAME, av
    except OSError as e:
        raise TwinError(f"cannot build the twin cache in {root}: {e.strerror or e}") from e


def ensure_full_size_twin(seed: int = 0, cache_root: Path | None = None,
                          projector_type: str = "F16") -> tuple[Path, Path]:
    """Return the cached full-size twin for ``seed`` (model, audio projector of
    ``projector_type``), building it first if needed (~3.4 GB, about a minute).

    Its entry is ``CACHE_ROOT/full-size-<twin_fingerprint(seed)>/``, next to the
    small twin's and built the same way, with the F16 projector; a Q8_0
    projector is added to a complete entry on first request."""
    seed = check_seed(seed)
    check_projector_type(projector_type)
    root = _cache_root(cache_root)
    names = (FULL_MODEL_NAME, full_mmproj_name("F16"))
    try:
        final = _cached_entry(root, f"full-size-{twin_fingerprint(seed)}", names,
                              lambda tmp: build_full_size(tmp, seed, "F16"))
        mmproj = final / full_mmproj_name(projector_type)
        if not mmproj.is_file():
            build_full_size_mmproj(mmproj, seed, projector_type)
        return final / FULL_MODEL_NAME, mmproj
    except OSError as e:
        raise TwinError(f"cannot build the full-size twin cache in {root}: {e.strerror or e}") from e


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message}\n")


def _seed_arg(text: str) -> int:
    try:
        return check_seed(int(text, 10))
    except (ValueError, TwinError):
        raise argparse.ArgumentTypeError(f"invalid seed {text!r} (expected an integer >= 0)") from None


def _build(args: argparse.Namespace) -> list[Path]:
    """The files the command line asks for, built; their paths."""
    if args.full_size:
        return list(build_full_size(args.out, args.seed, args.projector_type.upper(), args.mix.upper()))
    model, _ = build_twin(args.out, args.seed, with_vision=args.with_vision)
    return [model.with_name(n) for n in [MODEL_NAME, MMPROJ_NAME] + ([MMPROJ_AV_NAME] if args.with_vision else [])]


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="make_twin", description="Build the tiny random-weight Gemma 4 E2B twin (model + audio projector).")
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--seed", type=_seed_arg, default=0, help="random seed (default 0)")
    ap.add_argument("--with-vision", action="store_true",
                    help=f"also write {MMPROJ_AV_NAME}: a projector with a gemma4v vision tower as well as the "
                         "audio tower, laid out like the published E2B mmproj files")
    ap.add_argument("--full-size", action="store_true",
                    help=f"instead write {FULL_MODEL_NAME} (E2B's real shapes, Q4_K_M mix, ~2.8 GB) and its real-size "
                         "audio projector (scripts/TWIN.md)")
    ap.add_argument("--projector-type", choices=[t.lower() for t in PROJECTOR_TYPES],
                    help="with --full-size: the projector's type (default f16)")
    ap.add_argument("--mix", choices=[m.lower() for m in MIXES],
                    help="with --full-size: the text model's type mix (default q4_k_m; q4_0 writes "
                         f"{MIXES['Q4_0'][1]})")
    args = ap.parse_args(argv)
    if args.full_size and args.with_vision:
        ap.error("--with-vision is not available with --full-size")
    if (args.projector_type or args.mix) and not args.full_size:
        ap.error("--projector-type and --mix need --full-size")
    args.projector_type = args.projector_type or "f16"
    args.mix = args.mix or "q4_k_m"
    try:
        paths = _build(args)
    except TwinError as e:
        print(f"make_twin: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make_twin: interrupted", file=sys.stderr)
        return 130
    for path in paths:
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
