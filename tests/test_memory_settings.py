"""The engine's memory and thread settings reach llama.cpp: lazy loading of the
per-layer table, repacking, mmap, decode threads and the projector's warm-up,
checked in llama.cpp's own load log on the twin (issue 14)."""

from __future__ import annotations

import logging
import mmap

import llama_cpp
import numpy as np
import pytest

from edge_assistant.config import EngineConfig
from edge_assistant.llm.engine import GemmaEngine
from edge_assistant.llm.loading import mapped_ranges, release_mapped_pages

LAZY = "per_layer_token_embd.weight (size"
REPACKED = "CPU_REPACK model buffer size"


def load_log(twin, caplog, **settings) -> tuple[str, GemmaEngine]:
    caplog.clear()
    caplog.set_level(logging.INFO, logger="edge_assistant.llm.loading")
    with caplog.at_level(logging.DEBUG, logger="edge_assistant.llama_cpp"):
        engine = GemmaEngine(twin.model, twin.mmproj, EngineConfig(max_tokens=4, **settings))
    return "\n".join(record.getMessage() for record in caplog.records), engine


@pytest.mark.slow
def test_the_defaults_read_the_per_layer_table_lazily_and_repack_without_mmap(twin, caplog):
    defaults = EngineConfig()
    text, engine = load_log(twin, caplog)
    with engine:
        assert (f"{LAZY}" in text and "lazy read enabled" in text) == defaults.lazy_load
        assert (REPACKED in text) == defaults.repack
        # mmap'd: the weights llama.cpp does not repack are served from the file's
        # pages, and the originals of the repacked ones are released after load.
        assert (" CPU model buffer size" in text) != defaults.use_mmap
        assert ("of the mapped model file released after load" in text) == (defaults.use_mmap and defaults.repack)
        assert ("reserve_compute_meta" in text) == defaults.warm_up_projector


@pytest.mark.slow
def test_each_setting_turned_the_other_way_reaches_llama_cpp(twin, caplog):
    defaults = EngineConfig()
    text, engine = load_log(twin, caplog, lazy_load=not defaults.lazy_load, repack=not defaults.repack,
                            use_mmap=not defaults.use_mmap, warm_up_projector=not defaults.warm_up_projector,
                            threads=2, decode_threads=1)
    with engine:
        assert ("lazy read enabled" in text) != defaults.lazy_load
        assert (REPACKED in text) != defaults.repack
        assert (" CPU model buffer size" in text) == defaults.use_mmap
        assert "released after load" not in text
        assert ("reserve_compute_meta" in text) != defaults.warm_up_projector
        assert llama_cpp.llama_n_threads(engine._ctx) == 1
        assert llama_cpp.llama_n_threads_batch(engine._ctx) == 2
        # and a turn still runs through every stage on those settings
        reply = engine.respond(np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1)
        assert reply.stats.audio_tokens == 25
        assert reply.stats.stopped_by in ("end_of_turn", "max_tokens")


def test_mapped_ranges_are_found_by_the_files_real_path(tmp_path):
    model = tmp_path / "model.gguf"
    maps = (
        f"7f0000000000-7f0000400000 r--s 00000000 fe:01 123   {model}\n"
        "7f0000400000-7f0000800000 r--p 00000000 00:00 0 \n"
        f"7f0000800000-7f0000a00000 r--s 00600000 fe:01 123   {model}\n"
        f"7f0000a00000-7f0000b00000 r--s 00000000 fe:01 124   {model}.other\n"
    )
    assert mapped_ranges(model, maps) == [(0x7F0000000000, 0x7F0000400000), (0x7F0000800000, 0x7F0000A00000)]


def test_released_pages_leave_rss_and_read_back_the_same(tmp_path):
    """What the engine does to the mapped model after load, on a real mapping."""
    path = tmp_path / "weights.bin"
    data = np.random.default_rng(0).integers(0, 256, 32 * 2**20, dtype=np.uint8)
    path.write_bytes(data.tobytes())
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
        view = np.frombuffer(mapping, dtype=np.uint8)
        assert int(view[::4096].sum()) == int(data[::4096].sum())  # every page resident
        released = release_mapped_pages(path)
        assert released >= 30 * 2**20
        assert np.array_equal(view, data)  # faulted back in from the page cache
        del view
