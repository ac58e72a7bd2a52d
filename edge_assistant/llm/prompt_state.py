"""The system prompt's KV state on disk, so a start does not evaluate it again.

The system prompt with its tool declarations is hundreds of tokens; on a Pi 5
each costs about 35 ms at every start. After the first evaluation the
sequence's KV state (``llama_state_seq_get_data``) is written to the state
directory; the next start restores it (``llama_state_seq_set_data``) instead.

The file is keyed on everything that changes that state: the model and
projector files (size, modification time, and a hash of their first and last
4 MiB: a whole-file hash would cost longer than the evaluation it saves), the
prompt's tokens, n_ctx, the KV cache type, the batch sizes, and the llama.cpp
build (version and CPU features). A file for another key, a short or corrupt
file (its payload carries a SHA-256), or a state llama.cpp refuses, is ignored
and rewritten, never trusted.

Each prompt has its own file, named by its key, and the last few used are
kept: a start while an MCP server is down declares fewer tools than the run
after it comes up, and both prompts then restore at every start.

A history reset does not need it: the engine keeps the system prompt's KV in
memory (``swa_full``) and only cuts the conversation after it.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import llama_cpp

from ..atomic import atomic_path

if TYPE_CHECKING:
    from .engine import GemmaEngine

log = logging.getLogger(__name__)

FILE_GLOB = "system-prompt*.kv"  # the files it writes (and the one earlier versions wrote)
MAX_SAVED_PROMPTS = 3
MAGIC = b"EDGE-ASSISTANT-PROMPT-STATE-1\n"
SAMPLE_BYTES = 4 * 1024 * 1024
_HEADER = struct.Struct("<32sQQ32s")  # key digest, tokens, payload length, payload sha256


def file_fingerprint(path: Path) -> bytes:
    """Size, mtime and the hash of the first and last 4 MiB of a file."""
    stat = path.stat()
    digest = hashlib.sha256(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        if stat.st_size > SAMPLE_BYTES:
            handle.seek(max(SAMPLE_BYTES, stat.st_size - SAMPLE_BYTES))
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.digest()


def files_fingerprint(files: Iterable[Path]) -> bytes:
    """The model files as loaded: taken once, at load (a file replaced on disk
    later must not key a state computed with the old one)."""
    return b"".join(file_fingerprint(path) for path in files)


def state_key(files: bytes, tokens: list[int], settings: dict[str, object], build: str) -> bytes:
    """The key a saved state must match: model files (:func:`files_fingerprint`),
    prompt tokens, context settings, llama.cpp build."""
    digest = hashlib.sha256(MAGIC)
    digest.update(files)
    digest.update(struct.pack(f"<{len(tokens)}i", *tokens))
    digest.update(repr(sorted(settings.items())).encode())
    digest.update(build.encode())
    return digest.digest()


class PromptStateFile:
    """``system-prompt-KEY.kv`` in ``directory``: one saved state, for one key."""

    def __init__(self, directory: Path, key: bytes, n_tokens: int) -> None:
        self.path = directory / f"system-prompt-{key.hex()[:16]}.kv"
        self.key = key
        self.n_tokens = n_tokens

    def load(self) -> bytes | None:
        """The saved state for this key, or None (missing, stale or corrupt)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("cannot read the saved system prompt state %s: %s", self.path, error)
            return None
        why = self._problem(data)
        if why:
            log.info("saved system prompt state %s not used: %s", self.path, why)
            return None
        try:
            os.utime(self.path)  # used now: the last to be pruned
        except OSError:
            pass
        return data[len(MAGIC) + _HEADER.size :]

    def _problem(self, data: bytes) -> str:
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _HEADER.size:
            return "not a prompt state file"
        key, n_tokens, length, checksum = _HEADER.unpack_from(data, len(MAGIC))
        payload = data[len(MAGIC) + _HEADER.size :]
        if key != self.key or n_tokens != self.n_tokens:
            return "made for another model, prompt, context or llama.cpp build"
        if len(payload) != length or hashlib.sha256(payload).digest() != checksum:
            return "corrupt"
        return ""

    def save(self, payload: bytes) -> None:
        """Write it atomically; a failure only costs the next start the evaluation."""
        header = MAGIC + _HEADER.pack(self.key, self.n_tokens, len(payload), hashlib.sha256(payload).digest())
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path) as temp:
                temp.write_bytes(header + payload)
        except OSError as error:
            log.warning("cannot save the system prompt state to %s: %s", self.path, error)
            return
        log.info("system prompt state saved: %s (%.1f MB)", self.path, len(payload) / 1e6)
        self._prune()

    def _prune(self) -> None:
        """Keep the states of the prompts used last."""
        def last_used(path: Path) -> float:
            try:
                return path.stat().st_mtime
            except OSError:
                return 0.0

        saved = sorted(self.path.parent.glob(FILE_GLOB), key=last_used, reverse=True)
        for path in saved[MAX_SAVED_PROMPTS:]:
            path.unlink(missing_ok=True)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def prompt_state_file(engine: GemmaEngine, tokens: list[int]) -> PromptStateFile:
    """The saved state for ``engine``'s system prompt ``tokens``, in its
    ``prompt_state_dir``, keyed on everything that changes it."""
    settings = engine.settings
    key = state_key(
        engine.files_fingerprint, tokens,
        {"n_ctx": settings.n_ctx * engine.conversations, "kv": settings.kv_cache_type, "n_batch": settings.n_batch,
         "n_ubatch": settings.n_ubatch, "swa_full": True, "flash_attn": True, "kv_unified": True},
        f"{llama_cpp.__version__}|{llama_cpp.llama_print_system_info().decode(errors='replace')}",
    )
    return PromptStateFile(engine.prompt_state_dir, key, len(tokens))


def sequence_state(ctx: llama_cpp.llama_context_p, seq_id: int) -> bytes:
    """One sequence's KV state, as llama.cpp serializes it."""
    size = llama_cpp.llama_state_seq_get_size(ctx, seq_id)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, seq_id)
    return bytes(buffer)[:written]


def restore_sequence_state(
    ctx: llama_cpp.llama_context_p, memory: llama_cpp.llama_memory_t, saved: PromptStateFile, n_tokens: int
) -> bool:
    """Load the saved state into sequence 0; False (sequence cleared) if there
    is none for this key or llama.cpp refuses it."""
    payload = saved.load()
    if payload is None:
        return False
    buffer = (ctypes.c_uint8 * len(payload)).from_buffer_copy(payload)
    read = llama_cpp.llama_state_seq_set_data(ctx, buffer, len(payload), 0)
    if read == len(payload) and llama_cpp.llama_memory_seq_pos_max(memory, 0) == n_tokens - 1:
        return True
    log.warning("saved system prompt state %s was refused by llama.cpp: evaluating the prompt again", saved.path)
    llama_cpp.llama_memory_seq_rm(memory, 0, -1, -1)
    saved.discard()
    return False
