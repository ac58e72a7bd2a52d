"""``edge_assistant.models.slim.slim_projector`` against the real mtmd loader, on a
twin projector laid out like the published Gemma 4 E2B mmproj files (a gemma4v
vision tower and the gemma4a audio tower in one file), and what the vision
tower costs in memory.

The published projectors carry vision and audio; llama.cpp reads every tower a
file declares into RAM (clip.cpp load_tensors: plain reads into a CPU buffer,
no mmap), so an assistant that only listens pays for vision for nothing.  The
measured numbers are printed (``pytest -s``) and recorded in scripts/TWIN.md.
Native loads run in fresh subprocesses: an abort fails one test, and every
RSS figure starts from the same clean process.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import gguf
import numpy as np
import pytest

from edge_assistant.models.manifest import audio_projector_path, load_manifest, resolve
from edge_assistant.models.slim import _is_vision_tensor, slim_projector

from speech import speak

from twin_generator import REPO_ROOT, load_make_twin
from twin import projector  # scripts/twin, on the path through twin_generator
N_THREADS = max(1, min(4, os.cpu_count() or 1))  # both sides set explicitly (see scripts/TWIN.md)
MIB = 2**20


def run_py(code: str, *args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter.  Only lines that start with RESULT= count,
    so an echo of this source (ggml's abort backtrace) cannot fake a result."""
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)


def result(r: subprocess.CompletedProcess) -> dict:
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT=")]
    assert r.returncode == 0 and lines, f"rc={r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return json.loads(lines[-1].split("=", 1)[1])


@pytest.fixture(scope="module")
def twin_av():
    """(text model, vision+audio projector) from the shared twin cache."""
    return load_make_twin().ensure_twin(0, with_vision=True)


@pytest.fixture(scope="module")
def slimmed(twin_av, tmp_path_factory) -> Path:
    _, full = twin_av
    dst = audio_projector_path(tmp_path_factory.mktemp("slim") / full.name)
    assert dst.name == "twin-e2b-mmproj-av.audio.gguf"
    return slim_projector(full, dst)


def tensor_bytes(reader: gguf.GGUFReader, vision: bool) -> int:
    return sum(int(t.n_bytes) for t in reader.tensors if _is_vision_tensor(t.name) == vision)


# --------------------------------------------------------------------------
# The files (no llama.cpp)
# --------------------------------------------------------------------------
def test_av_projector_is_laid_out_like_the_published_ones(twin_av, twin):
    _, full = twin_av
    r = gguf.GGUFReader(full)
    f = {k: v.contents() for k, v in r.fields.items() if not k.startswith("GGUF.")}
    assert f["clip.has_vision_encoder"] is True and f["clip.has_audio_encoder"] is True
    assert f["clip.vision.projector_type"] == "gemma4v" and f["clip.audio.projector_type"] == "gemma4a"
    assert "clip.projector_type" not in f  # a global type would override both towers
    assert f["clip.vision.projection_dim"] == f["clip.audio.projection_dim"] == 64  # = text n_embd
    names = [t.name for t in r.tensors]
    assert "v.patch_embd.weight" in names and "v.position_embd.weight" in names
    assert "mm.input_projection.weight" in names and "mm.a.input_projection.weight" in names
    assert not any(n.startswith("v.std_") for n in names)  # E2B: standardize = false
    # the audio tower is the default twin's, tensor for tensor
    audio_only = {t.name: t for t in gguf.GGUFReader(twin.mmproj).tensors}
    audio = [t for t in r.tensors if not _is_vision_tensor(t.name)]
    assert [t.name for t in audio] == list(audio_only)
    for t in audio:
        assert t.tensor_type == audio_only[t.name].tensor_type
        assert bytes(t.data.tobytes()) == bytes(audio_only[t.name].data.tobytes())


def test_av_projector_is_deterministic(twin_av, tmp_path):
    _, full = twin_av
    projector.build_mmproj(tmp_path / "av.gguf", seed=0, with_vision=True)
    assert (tmp_path / "av.gguf").read_bytes() == full.read_bytes()
    assert list(tmp_path.iterdir()) == [tmp_path / "av.gguf"]


def test_e2b_estimate_matches_the_published_file_sizes():
    """The tensor shapes behind the extrapolation, checked against two real
    files: recomputing the real E2B projector from its config hyperparameters
    and the converter's type rules lands within 8 kB of both published sizes
    (the remainder is metadata: names, strings, a few tiny tensors)."""
    for ftype, published in (("F16", projector.E2B_MMPROJ_F16_BYTES), ("Q8_0", projector.E2B_MMPROJ_Q8_0_BYTES)):
        est = projector.e2b_projector_estimate(ftype)
        assert abs(est["file_bytes"] - published) < 16_000, (ftype, est["file_bytes"], published)
        print(f"\nE2B mmproj {ftype}: estimated {est['file_bytes']:,} B, published {published:,} B; "
              f"vision {est['vision']['params'] / 1e6:.1f} M params = {est['vision']['bytes'] / MIB:.1f} MiB, "
              f"audio {est['audio']['params'] / 1e6:.1f} M params = {est['audio']['bytes'] / MIB:.1f} MiB")
    f16 = projector.e2b_projector_estimate("F16")
    assert 165e6 < f16["vision"]["params"] < 172e6  # ~150 M in the model card, plus the 15.7 M position table
    assert 300e6 < f16["audio"]["params"] < 312e6   # ~300 M in the model card


def test_twin_vision_to_audio_ratio_is_the_real_one(twin_av):
    """The twin's vision tower is sized so vision bytes : audio bytes is E2B's."""
    r = gguf.GGUFReader(twin_av[1])
    twin_ratio = tensor_bytes(r, vision=True) / tensor_bytes(r, vision=False)
    real = projector.e2b_projector_estimate("F16")
    real_ratio = real["vision"]["bytes"] / real["audio"]["bytes"]
    assert twin_ratio == pytest.approx(real_ratio, rel=0.01), (twin_ratio, real_ratio)


def test_slim_copy_holds_exactly_the_audio_tower(twin_av, slimmed, twin):
    _, full = twin_av
    before, after = gguf.GGUFReader(full), gguf.GGUFReader(slimmed)
    assert [t.name for t in after.tensors] == [t.name for t in before.tensors if not _is_vision_tensor(t.name)]
    assert [t.name for t in after.tensors] == [t.name for t in gguf.GGUFReader(twin.mmproj).tensors]
    assert after.fields["clip.has_vision_encoder"].contents() is False
    assert not [k for k in after.fields if k.startswith("clip.vision.")]
    assert slimmed.stat().st_size < full.stat().st_size


# --------------------------------------------------------------------------
# The real mtmd loader
# --------------------------------------------------------------------------
PROBE = """
    import ctypes, json, sys, numpy as np, llama_cpp
    from llama_cpp import mtmd_cpp as M
    model, mmproj, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    llm = llama_cpp.Llama(model_path=model, n_ctx=512, verbose=False, n_threads=n, n_threads_batch=n)
    p = M.mtmd_context_params_default(); p.use_gpu = False; p.n_threads = n  # warmup on: mtmd's default
    ctx = M.mtmd_init_from_file(mmproj.encode(), llm.model, p)
    assert ctx, "mtmd_init_from_file returned NULL"
    out = {"vision": bool(M.mtmd_support_vision(ctx)), "audio": bool(M.mtmd_support_audio(ctx))}
    if out["vision"]:  # run the vision tower once: an image through the gemma4v graph
        img = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
        bm = M.mtmd_bitmap_init(224, 224, img.ctypes.data_as(ctypes.POINTER(ctypes.c_ubyte)))
        ch = M.mtmd_input_chunks_init()
        t = M.mtmd_default_marker()
        assert M.mtmd_tokenize(ctx, ch, ctypes.byref(M.mtmd_input_text(t, len(t), True, True)),
                               (M.mtmd_bitmap_p_ctypes * 1)(bm), 1) == 0
        for i in range(M.mtmd_input_chunks_size(ch)):
            c = M.mtmd_input_chunks_get(ch, i)
            if M.mtmd_input_chunk_get_type(c) == M.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                k = M.mtmd_input_chunk_get_n_tokens(c)
                assert M.mtmd_encode_chunk(ctx, c) == 0
                e = np.ctypeslib.as_array(M.mtmd_get_output_embd(ctx), shape=(k * llm.n_embd(),))
                out["image_tokens"], out["image_embd_finite"] = int(k), bool(np.isfinite(e).all())
        M.mtmd_input_chunks_free(ch); M.mtmd_bitmap_free(bm)
    M.mtmd_free(ctx); llm.close()
    print("RESULT=" + json.dumps(out))
"""


@pytest.mark.slow
def test_full_projector_loads_with_vision_and_audio(twin_av):
    """The tiny gemma4v tower loads, warms up and encodes an image."""
    model, full = twin_av
    out = result(run_py(PROBE, model, full, N_THREADS))
    assert out["vision"] is True and out["audio"] is True
    # 224 x 224 is upscaled to gemma4v's 70-token minimum: 27 x 27 patches, pooled 3 x 3 -> 81
    assert out["image_tokens"] == 81 and out["image_embd_finite"] is True


@pytest.mark.slow
def test_slimmed_projector_loads_audio_only(twin_av, slimmed):
    model, _ = twin_av
    assert result(run_py(PROBE, model, slimmed, N_THREADS)) == {"vision": False, "audio": True}


ENGINE = """
    import json, sys
    from pathlib import Path
    import numpy as np
    from edge_assistant.config import EngineConfig
    from edge_assistant.llm.engine import GemmaEngine
    samples = np.load(sys.argv[3])
    with GemmaEngine(Path(sys.argv[1]), Path(sys.argv[2]), EngineConfig(max_tokens=4, seed=1)) as engine:
        reply = engine.respond(samples)
    s = reply.stats
    print("RESULT=" + json.dumps({"audio_tokens": s.audio_tokens, "generated": s.generated_tokens, "text": reply.text}))
"""


@pytest.mark.slow
def test_engine_answers_speech_with_the_slimmed_projector(twin_av, slimmed, tmp_path):
    """GemmaEngine on the slimmed projector hears the same speech as on the
    full one: same audio tokens, and (same audio weights, same seed) the same
    reply.  The speech is synthesized once: Piper's output length varies a
    little from run to run, so each process must get the same samples."""
    model, full = twin_av
    audio = speak("What is the tallest mountain in Europe?")
    np.save(tmp_path / "speech.npy", audio.samples)
    with_full = result(run_py(ENGINE, model, full, tmp_path / "speech.npy"))
    with_slim = result(run_py(ENGINE, model, slimmed, tmp_path / "speech.npy"))
    assert with_slim["audio_tokens"] == with_full["audio_tokens"] > 0
    assert with_slim["audio_tokens"] == pytest.approx(audio.seconds * 25, abs=2)  # 25 tokens/s
    assert 1 <= with_slim["generated"] <= 4
    assert with_slim["text"] == with_full["text"]


# --------------------------------------------------------------------------
# What vision costs: RSS after mtmd_init_from_file, full vs slimmed
# --------------------------------------------------------------------------
RSS = """
    import json, sys, llama_cpp
    from llama_cpp import mtmd_cpp as M
    def rss_kib():
        with open("/proc/self/status") as f:
            return int(f.read().split("VmRSS:")[1].split()[0])
    model, mmproj, warmup, n = sys.argv[1], sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])
    # the text model and a context as the engine makes them (q8_0 KV, flash attention, n_ubatch 128)
    llm = llama_cpp.Llama(model_path=model, n_ctx=4096, n_batch=128, n_ubatch=128, type_k=8, type_v=8,
                          flash_attn=True, verbose=False, n_threads=n, n_threads_batch=n)
    p = M.mtmd_context_params_default(); p.use_gpu = False; p.n_threads = n
    p.warmup = warmup; p.print_timings = False
    before = rss_kib()
    ctx = M.mtmd_init_from_file(mmproj.encode(), llm.model, p)
    after = rss_kib()
    assert ctx, "mtmd_init_from_file returned NULL"
    print("RESULT=" + json.dumps({"before_kib": before, "after_kib": after, "vision": bool(M.mtmd_support_vision(ctx))}))
"""
RUNS = 3


def rss_delta(model: Path, mmproj: Path, warmup: bool, expect_vision: bool) -> tuple[float, list[int]]:
    """Median RSS growth (bytes) over mtmd_init_from_file, and the runs in KiB."""
    runs = [result(run_py(RSS, model, mmproj, int(warmup), N_THREADS)) for _ in range(RUNS)]
    assert all(r["vision"] == expect_vision for r in runs)
    kib = [r["after_kib"] - r["before_kib"] for r in runs]
    return statistics.median(kib) * 1024, kib


def vision_cost(model: Path, full: Path, slim: Path, warmup: bool, lines: list[str]) -> float:
    """RSS(full) - RSS(slimmed), each a median over fresh processes."""
    d_full, runs_full = rss_delta(model, full, warmup, True)
    d_slim, runs_slim = rss_delta(model, slim, warmup, False)
    lines.append(f"  warmup {'on ' if warmup else 'off'}: +{d_full / MIB:.2f} MiB full, +{d_slim / MIB:.2f} MiB slimmed "
                 f"(runs {runs_full} / {runs_slim} KiB) -> vision costs {(d_full - d_slim) / MIB:.2f} MiB")
    return d_full - d_slim


@pytest.mark.slow
def test_vision_memory_cost(twin_av, slimmed, tmp_path):
    """RSS added by mtmd_init_from_file, in fresh processes that first load the
    same text model and context; full (vision + audio) vs slimmed (audio).

    Model: vision costs its tensor bytes (read into RAM, no mmap) times a
    slope near 1, plus a fixed overhead (its clip_ctx: CPU backend, a
    scheduler and graph metadata sized for 8192 nodes).  Measured on the twin
    and on a variant whose vision tower is 110x bigger; the real file's saving
    is then extrapolated from the real vision tensor bytes (shapes checked
    against the published sizes above), as a range: slope 1 and the measured
    slope.  That is with warmup off, as GemmaEngine loads.  With mtmd's
    default warmup on, each tower's compute buffer is also reserved, but it
    stays out of RSS until an encode touches it, and vision never encodes here."""
    model, full = twin_av
    big_hp = dataclasses.replace(projector.VISION, n_embd=384, n_ff=1536, n_layer=6, n_head=6)  # head dim 64 as real
    big = tmp_path / "twin-av-big.gguf"
    projector.build_mmproj(big, 0, with_vision=True, vision=big_hp)
    big_slim = slim_projector(big, tmp_path / "twin-av-big.audio.gguf")
    vbytes = {name: tensor_bytes(gguf.GGUFReader(path), vision=True) for name, path in (("twin", full), ("big", big))}
    real = projector.e2b_projector_estimate("F16")

    lines = [f"twin projector files: vision+audio {full.stat().st_size:,} B, slimmed {slimmed.stat().st_size:,} B "
             f"(vision tensors {vbytes['twin']:,} B); RSS growth over mtmd_init_from_file:"]
    cost = {w: vision_cost(model, full, slimmed, w, lines) for w in (False, True)}
    lines.append(f"variant with a bigger vision tower (width 384, 6 layers: vision tensors {vbytes['big']:,} B):")
    cost_big = vision_cost(model, big, big_slim, False, lines)
    slope = (cost_big - cost[False]) / (vbytes["big"] - vbytes["twin"])
    overhead = cost[False] - vbytes["twin"]  # the twin's tower is too small to fit a slope to
    low = real["vision"]["bytes"] + overhead  # the weights, byte for byte, + the fixed part
    high = slope * real["vision"]["bytes"] + overhead  # if the measured excess grows with the tower
    lines += [
        f"=> RSS per byte of vision tensors {slope:.3f} (twin -> variant); fixed overhead of the vision "
        f"context {overhead / MIB:.2f} MiB",
        f"=> real E2B F16 projector ({projector.E2B_MMPROJ_F16_BYTES:,} B = {projector.E2B_MMPROJ_F16_BYTES / MIB:.0f} MiB): "
        f"vision tensors {real['vision']['bytes'] / MIB:.1f} MiB, audio {real['audio']['bytes'] / MIB:.1f} MiB; "
        f"slimming saves ~{low / MIB:.0f}-{high / MIB:.0f} MiB RSS (warmup off); the audio-only copy is "
        f"~{(real['header_bytes'] + real['audio']['bytes']) / 1e6:.0f} MB",
    ]
    print("\n" + "\n".join(lines))
    assert slope == pytest.approx(1.0, abs=0.1)  # the weights are read into RAM, byte for byte (no mmap)
    assert 0 <= overhead < 32 * MIB                # plus a fixed, model-independent cost
    assert cost[True] >= cost[False] - 256 * 1024  # warmup never makes vision cheaper


def test_cli_slim_writes_beside_the_source_where_resolve_finds_it(twin_av, tmp_path, capsys):
    from edge_assistant.cli import main

    source = tmp_path / "mmproj-F16.gguf"
    shutil.copyfile(twin_av[1], source)
    assert main(["models", "slim", str(source)]) == 0
    slimmed_path = audio_projector_path(source)
    assert slimmed_path.is_file() and str(slimmed_path) in capsys.readouterr().out
    assert resolve("mmproj", tmp_path, [f for f in load_manifest() if f.role == "mmproj"]) == slimmed_path
    assert main(["models", "slim", str(source)]) == 3  # never overwrites
    assert "refusing to overwrite" in capsys.readouterr().err
