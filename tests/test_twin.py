"""The Gemma 4 E2B twin (scripts/make_twin.py) against the real llama.cpp.

Fast tests check the generator (determinism, CLI errors, atomic writes).  The
``slow`` tests load the twin with llama-cpp-python 0.3.36 and run the real
audio path: mtmd (gemma4a preprocessor + conformer) -> gemma4 text model.
Anything that could abort the process (GGML_ASSERT) runs in a subprocess.
"""
from __future__ import annotations

import ctypes
import dataclasses
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from twin_generator import MAKE_TWIN, REPO_ROOT, load_make_twin
from twin import TwinError, full_size, projector, tensors, text_model, tokenizer  # scripts/twin, on the path through twin_generator

SPECIAL = ["<|turn>", "<turn|>", "<|audio>", "<audio|>", "<|channel>", "<channel|>"]
SAMPLE_RATE = 16000
# Set thread counts explicitly on both sides.  mtmd's default is 4 threads and
# llama-cpp-python's is cpu_count // 2: on a 2-core machine that mix (4 mtmd +
# 1 llama thread) made mtmd_helper_eval_chunks ~100x slower (3.8 s instead of
# 30 ms for 3 s of audio on the twin).
N_THREADS = max(1, min(4, os.cpu_count() or 1))


def audio_tokens_expected(seconds: float) -> list[int]:
    """Audio tokens per mtmd chunk, re-derived from llama.cpp's gemma4a code:
    mtmd-audio.cpp splits into 30 s chunks and yields
    pt_frames = (n + 160 - 321) // 160 + 1 mel frames per chunk (semicausal
    left pad 160, 320-sample window, hop 160); clip.cpp then applies two
    3x3 stride-2 convs: n -> (n - 1) // 2 + 1, twice.  That is 25 tokens/s."""
    n = int(seconds * SAMPLE_RATE)
    out = []
    for off in range(0, n, 30 * SAMPLE_RATE):
        m = min(30 * SAMPLE_RATE, n - off)
        frames = (m + 160 - 321) // 160 + 1
        for _ in range(2):
            frames = (frames - 1) // 2 + 1
        out.append(frames)
    return out


# ggml's AMX buffer crashes on K-quant matmuls (llama.cpp #20824). The engine keeps
# weights out of it (llm/loading.py); llama_cpp.Llama, which these tests load the
# twin with, cannot, so here it loads with no extra buffer types on any CPU.
NO_EXTRA_BUFFERS = """
import llama_cpp.llama_cpp as _bindings
_default_model_params = _bindings.llama_model_default_params
def _model_params():
    params = _default_model_params()
    params.use_extra_bufts = False
    return params
_bindings.llama_model_default_params = _model_params
"""


def run_py(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, llama.cpp without extra buffers.
    GGML_NO_BACKTRACE stops ggml from attaching gdb on an abort (slow, and it
    dumps this source into stdout: result markers below are therefore built by
    concatenation at run time)."""
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    return subprocess.run([sys.executable, "-c", NO_EXTRA_BUFFERS + textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env)


# --------------------------------------------------------------------------
# Generator (no llama.cpp)
# --------------------------------------------------------------------------
def test_fingerprint_is_stable_and_seed_dependent():
    mt = load_make_twin()
    assert mt.twin_fingerprint(0) == mt.twin_fingerprint(0)
    assert mt.twin_fingerprint(0) != mt.twin_fingerprint(1)
    assert len(mt.twin_fingerprint(0)) == 16


def test_twin_files_are_small(twin):
    total = twin.model.stat().st_size + twin.mmproj.stat().st_size
    assert total < 100 * 2**20, total


def test_same_seed_gives_identical_bytes(twin, tmp_path):
    model, mmproj = load_make_twin().build_twin(tmp_path, seed=0)
    assert model.read_bytes() == twin.model.read_bytes()
    assert mmproj.read_bytes() == twin.mmproj.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([model.name, mmproj.name])


def test_other_seed_gives_other_weights(twin, tmp_path):
    projector.build_mmproj(tmp_path / "p.gguf", seed=1)
    assert (tmp_path / "p.gguf").read_bytes() != twin.mmproj.read_bytes()


@pytest.mark.parametrize("dtype", ["Q4_0", "Q4_K", "Q5_K", "Q6_K"])
def test_random_kquant_blocks_have_the_asked_spread(dtype):
    """K-quant and Q4_0 weights are written as random blocks (gguf cannot
    quantize K-quants, and quantizing E2B's 4.6 G noise weights would take long);
    decoded by gguf's reference dequantizer they must look like the float weights
    they stand in for: mean ~0, standard deviation as asked."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    std = 1536 ** -0.5
    blocks = tensors._kquant_blocks(np.random.default_rng(0), 4096, dtype, std)
    values = dequantize(blocks, GGMLQuantizationType[dtype])
    block = tensors.RANDOM_BLOCK_TYPES[dtype]
    assert blocks.shape == (4096, tensors._type_nbytes((block,), dtype))
    assert values.shape == (4096, block) and np.isfinite(values).all()
    assert abs(values.mean()) < 0.01 * std
    assert values.std() == pytest.approx(std, rel=0.02)


def test_twin_has_amx_eligible_k_quant_matrices():
    """The small twin carries Q4_K and Q6_K matrices that ggml's AMX buffer
    would take (amx.cpp supports_op: rows of whole 256-value blocks, a
    multiple of 32 output rows), laid out by llama.cpp's Q4_K_M rule for
    ffn_down; they run in every test run (issue 14)."""
    specs = {s.name: s for s in text_model.text_tensor_specs()}
    down = [specs[f"blk.{il}.ffn_down.weight"] for il in range(text_model.TEXT.n_layer)]
    assert [s.dtype for s in down] == ["Q6_K", "Q4_K", "Q4_K", "Q6_K", "Q4_K", "Q4_K", "Q6_K", "Q4_K", "Q6_K", "Q6_K"]
    for s in down:
        n_out, n_in = s.shape
        assert n_in % 256 == 0 and n_out % 32 == 0, s
    assert {s.dtype for s in specs.values()} == {"F32", "F16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"}


@pytest.mark.parametrize("args, needle", [
    (["--seed", "1"], "--out"),
    (["--out", "{tmp}/x", "--seed", "minus"], "seed"),
    (["--out", "{tmp}/x", "--seed", "-3"], "seed"),
    (["--out", "{tmp}/file"], "not a directory"),
    (["--out", "{tmp}/x", "--bogus"], "unrecognized"),
    (["--out", "{tmp}/x", "--projector-type", "q8_0"], "need --full-size"),
    (["--out", "{tmp}/x", "--mix", "q4_0"], "need --full-size"),
    (["--out", "{tmp}/x", "--full-size", "--with-vision"], "not available with --full-size"),
    (["--out", "{tmp}/x", "--full-size", "--projector-type", "q4_0"], "invalid choice"),
])
def test_cli_bad_args_one_line_error(tmp_path, args, needle):
    (tmp_path / "file").write_text("I am a file\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run([sys.executable, str(MAKE_TWIN), *args], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert needle in r.stderr
    assert not (tmp_path / "x" / "twin-e2b.gguf").exists()


def test_failed_write_leaves_no_file(tmp_path):
    class Boom:
        def write_header_to_file(self, path):
            Path(path).write_bytes(b"GGUF partial")

        def write_kv_data_to_file(self):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    final = tmp_path / "twin-e2b.gguf"
    with pytest.raises(OSError):
        tensors.write_gguf(Boom(), final)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------
# The cache (make_twin.ensure_twin), with a fake builder: fast
# --------------------------------------------------------------------------
@pytest.fixture
def fake_builds(monkeypatch):
    """Replace the expensive builders by ones that write small marker files
    and count calls (ensure_twin looks them up in the module at call time)."""
    mt = load_make_twin()
    calls = {"twin": 0, "av": 0}

    def build_twin(out_dir, seed=0, with_vision=False):
        calls["twin"] += 1
        Path(out_dir, mt.MODEL_NAME).write_bytes(b"model %d" % seed)
        Path(out_dir, mt.MMPROJ_NAME).write_bytes(b"mmproj %d" % seed)
        return Path(out_dir, mt.MODEL_NAME), Path(out_dir, mt.MMPROJ_NAME)

    def build_mmproj(path, seed, with_vision=False):
        assert with_vision
        calls["av"] += 1
        Path(path).write_bytes(b"av %d" % seed)

    monkeypatch.setattr(mt, "build_twin", build_twin)
    monkeypatch.setattr(mt, "build_mmproj", build_mmproj)
    return mt, calls


def test_ensure_twin_builds_once_into_the_fingerprint_dir(tmp_path, fake_builds):
    mt, calls = fake_builds
    model, mmproj = mt.ensure_twin(0, cache_root=tmp_path)
    assert (model, mmproj) == (tmp_path / mt.twin_fingerprint(0) / mt.MODEL_NAME,
                               tmp_path / mt.twin_fingerprint(0) / mt.MMPROJ_NAME)
    assert model.read_bytes() == b"model 0" and calls["twin"] == 1
    assert mt.ensure_twin(0, cache_root=tmp_path) == (model, mmproj)
    assert calls["twin"] == 1  # cached
    mt.ensure_twin(1, cache_root=tmp_path)
    assert calls["twin"] == 2  # another seed, another entry
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mt.twin_fingerprint(0), mt.twin_fingerprint(1)])


def test_ensure_twin_honours_the_cache_env_variable(tmp_path, monkeypatch, fake_builds):
    mt, _ = fake_builds
    monkeypatch.setenv("EDGE_ASSISTANT_TWIN_CACHE", str(tmp_path / "env-cache"))
    model, _ = mt.ensure_twin(0)
    assert model.parent == tmp_path / "env-cache" / mt.twin_fingerprint(0)
    monkeypatch.delenv("EDGE_ASSISTANT_TWIN_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mt.twin_cache_root() == tmp_path / "home" / ".cache" / "edge-assistant" / "twin"


def test_ensure_twin_replaces_a_damaged_entry_and_leaves_no_temp_dirs(tmp_path, fake_builds):
    mt, calls = fake_builds
    damaged = tmp_path / mt.twin_fingerprint(0)
    damaged.mkdir()
    (damaged / mt.MODEL_NAME).write_bytes(b"half")  # no projector: incomplete
    model, mmproj = mt.ensure_twin(0, cache_root=tmp_path)
    assert calls["twin"] == 1 and model.read_bytes() == b"model 0" and mmproj.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [mt.twin_fingerprint(0)]


def test_ensure_twin_failed_build_leaves_no_entry(tmp_path, monkeypatch, fake_builds):
    mt, _ = fake_builds

    def boom(out_dir, seed=0, with_vision=False):
        Path(out_dir, mt.MODEL_NAME).write_bytes(b"partial")
        raise mt.TwinError("disk full")

    monkeypatch.setattr(mt, "build_twin", boom)
    with pytest.raises(mt.TwinError, match="disk full"):
        mt.ensure_twin(0, cache_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_ensure_twin_with_vision_adds_the_av_projector_to_the_entry(tmp_path, fake_builds):
    mt, calls = fake_builds
    model, mmproj = mt.ensure_twin(0, cache_root=tmp_path)
    model_av, av = mt.ensure_twin(0, cache_root=tmp_path, with_vision=True)
    assert model_av == model and av == model.with_name(mt.MMPROJ_AV_NAME) and av.read_bytes() == b"av 0"
    assert mt.ensure_twin(0, cache_root=tmp_path, with_vision=True) == (model, av)
    assert calls == {"twin": 1, "av": 1}
    assert mt.ensure_twin(0, cache_root=tmp_path) == (model, mmproj)  # the default is unchanged


def test_ensure_twin_unusable_cache_root_is_a_twin_error(tmp_path):
    mt = load_make_twin()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    with pytest.raises(mt.TwinError, match="cannot build the twin cache"):
        mt.ensure_twin(0, cache_root=blocker / "cache")


def test_ensure_full_size_twin_has_its_own_entry_and_adds_a_q8_0_projector(tmp_path, monkeypatch):
    mt = load_make_twin()
    calls = []

    def build_full_size(out_dir, seed=0, projector_type="F16"):
        calls.append(("model", projector_type))
        Path(out_dir, mt.FULL_MODEL_NAME).write_bytes(b"model")
        Path(out_dir, full_size.full_mmproj_name(projector_type)).write_bytes(projector_type.encode())

    def build_full_size_mmproj(path, seed, projector_type):
        calls.append(("mmproj", projector_type))
        Path(path).write_bytes(projector_type.encode())

    monkeypatch.setattr(mt, "build_full_size", build_full_size)
    monkeypatch.setattr(mt, "build_full_size_mmproj", build_full_size_mmproj)
    entry = tmp_path / f"full-size-{mt.twin_fingerprint(0)}"
    assert mt.ensure_full_size_twin(0, cache_root=tmp_path) == (entry / "e2b-full-size.gguf",
                                                                 entry / "e2b-full-size-mmproj-f16.gguf")
    model, q8 = mt.ensure_full_size_twin(0, cache_root=tmp_path, projector_type="Q8_0")
    assert q8 == entry / "e2b-full-size-mmproj-q8_0.gguf" and q8.read_bytes() == b"Q8_0"
    mt.ensure_full_size_twin(0, cache_root=tmp_path, projector_type="Q8_0")
    assert calls == [("model", "F16"), ("mmproj", "Q8_0")]
    with pytest.raises(mt.TwinError, match="projector type"):
        mt.ensure_full_size_twin(0, cache_root=tmp_path, projector_type="Q4_0")


# Published E2B layout (google/gemma-4-E2B-it, as llama.cpp reads it): every 5th
# layer global; layers 15-34 share KV and have the doubled FFN; Q4_K_M gives
# ffn_down Q6_K where llama-quant's use_more_bits(i, 35) holds, attn_v Q6_K where
# use_more_bits(i, 15) holds over the 15 layers that have one.
E2B_GLOBAL_LAYERS = [4, 9, 14, 19, 24, 29, 34]
E2B_Q6_K_FFN_DOWN = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 31, 32, 33, 34]
E2B_Q6_K_ATTN_V = [0, 3, 6, 9, 12, 13, 14]


def test_full_size_plan_is_e2b():
    """The full-size twin's tensor plan (names, shapes, types, bytes) against E2B
    and the published Q4_K_M file, without writing 3 GB."""
    plan = full_size.full_size_plan("F16")
    model = {s.name: s for s in plan["model"]}
    assert len(model) == len(plan["model"])  # no duplicates
    assert (model["token_embd.weight"].shape, model["token_embd.weight"].dtype) == ((262144, 1536), "Q6_K")
    assert (model["per_layer_token_embd.weight"].shape, model["per_layer_token_embd.weight"].dtype) == \
        ((262144, 35 * 256), "Q5_K")
    assert (model["per_layer_model_proj.weight"].shape, model["per_layer_model_proj.weight"].dtype) == \
        ((35 * 256, 1536), "F16")
    assert model["rope_freqs.weight"].shape == (256,)
    assert "output.weight" not in model  # tied
    for il in range(35):
        b = f"blk.{il}."
        hd = 512 if il in E2B_GLOBAL_LAYERS else 256
        ff = 6144 * (2 if il >= 15 else 1)
        assert model[b + "attn_q.weight"].shape == (8 * hd, 1536)
        assert model[b + "attn_output.weight"].shape == (1536, 8 * hd)
        assert model[b + "ffn_gate.weight"].shape == model[b + "ffn_up.weight"].shape == (ff, 1536)
        assert model[b + "ffn_down.weight"].shape == (1536, ff)
        assert model[b + "inp_gate.weight"].shape == (256, 1536) and model[b + "proj.weight"].shape == (1536, 256)
        assert (b + "attn_k.weight" in model) == (b + "attn_v.weight" in model) == (il < 15)
        if il < 15:
            assert model[b + "attn_k.weight"].shape == model[b + "attn_v.weight"].shape == (hd, 1536)
    q6_down = [il for il in range(35) if model[f"blk.{il}.ffn_down.weight"].dtype == "Q6_K"]
    q6_v = [il for il in range(15) if model[f"blk.{il}.attn_v.weight"].dtype == "Q6_K"]
    assert (q6_down, q6_v) == (E2B_Q6_K_FFN_DOWN, E2B_Q6_K_ATTN_V)
    matrices = [s for s in plan["model"] if s.name.startswith("blk.") and len(s.shape) == 2]
    assert {s.dtype for s in matrices} == {"Q4_K", "Q6_K"}
    assert {s.dtype for s in plan["model"] if len(s.shape) == 1} == {"F32"}
    params = sum(s.n_params for s in plan["model"])
    assert 4.6e9 < params < 4.7e9  # 2.75 G of them in the two embedding tables

    sizes = full_size.full_size_layout("F16")
    assert sizes["model"] == pytest.approx(full_size.E2B_Q4_K_M_BYTES, rel=0.01)
    real = projector.e2b_projector_estimate("F16")
    assert sum(s.nbytes for s in plan["mmproj"]) == real["audio"]["bytes"]  # the published file's audio half
    assert sizes["mmproj"] == pytest.approx(real["header_bytes"] + real["audio"]["bytes"], abs=64_000)
    q8 = full_size.full_size_plan("Q8_0")["mmproj"]
    assert sum(s.nbytes for s in q8) == projector.e2b_projector_estimate("Q8_0")["audio"]["bytes"]
    print(f"\nfull-size twin: model {sizes['model']:,} B (published Q4_K_M {full_size.E2B_Q4_K_M_BYTES:,} B), "
          f"audio projector F16 {sizes['mmproj']:,} B, Q8_0 {full_size.full_size_layout('Q8_0')['mmproj']:,} B")


def test_full_size_q4_0_mix_is_the_published_q4_0_file():
    """The Q4_0 variant (issue 27's weight-type question): every layer matrix and
    the per-layer table Q4_0, the tied embedding Q8_0; the same shapes as the
    Q4_K_M plan, and within 0.01 % of ggml-org's published Q4_0 E2B file."""
    q4_0 = {s.name: s for s in full_size.full_size_plan("F16", "Q4_0")["model"]}
    q4_k_m = {s.name: s for s in full_size.full_size_plan("F16")["model"]}
    assert {name: s.shape for name, s in q4_0.items()} == {name: s.shape for name, s in q4_k_m.items()}
    assert q4_0["token_embd.weight"].dtype == "Q8_0" and q4_0["per_layer_token_embd.weight"].dtype == "Q4_0"
    assert {s.dtype for s in q4_0.values() if s.name.startswith("blk.") and len(s.shape) == 2} == {"Q4_0"}
    assert full_size.full_size_layout("F16", "Q4_0")["model"] == pytest.approx(full_size.E2B_Q4_0_BYTES, rel=1e-4)
    with pytest.raises(TwinError, match="type mix"):
        full_size.check_mix("Q5_K")


FULL_SIZE_ENV = "EDGE_ASSISTANT_FULL_SIZE"


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get(FULL_SIZE_ENV) != "1",
                    reason=f"writes ~3.7 GB and loads it; set {FULL_SIZE_ENV}=1 to run")
def test_full_size_twin_loads_and_answers():
    """The full-size twin, built (or taken from the cache), loaded by the real
    engine in a subprocess and answering 2 s of audio."""
    mt = load_make_twin()
    model, mmproj = mt.ensure_full_size_twin(0)
    sizes = full_size.full_size_layout("F16")
    assert (model.stat().st_size, mmproj.stat().st_size) == (sizes["model"], sizes["mmproj"])
    code = """
        import sys
        from pathlib import Path
        import numpy as np
        from edge_assistant.config import EngineConfig
        from edge_assistant.llm.engine import GemmaEngine
        t = np.arange(2 * 16000, dtype=np.float32) / 16000
        with GemmaEngine(Path(sys.argv[1]), Path(sys.argv[2]), EngineConfig(max_tokens=4)) as engine:
            stats = engine.respond((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)).stats
        print("TURN " + "OK", stats.audio_tokens, stats.generated_tokens)
    """
    r = run_py(code, model, mmproj, timeout=900)
    assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    assert "TURN OK 50 4" in r.stdout


def test_bench_once_uses_the_same_cache(twin):
    """scripts/bench_once.py's twin_paths() is ensure_twin(): the files the tests use."""
    spec = importlib.util.spec_from_file_location("bench_once_under_test", REPO_ROOT / "scripts" / "bench_once.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.twin_paths() == (twin.model, twin.mmproj)


def test_cli_with_vision_writes_the_av_projector_too(tmp_path):
    r = subprocess.run([sys.executable, str(MAKE_TWIN), "--out", str(tmp_path), "--with-vision"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    names = ["twin-e2b.gguf", "twin-e2b-mmproj.gguf", "twin-e2b-mmproj-av.gguf"]
    assert [Path(line.split(" (")[0]).name for line in r.stdout.splitlines()] == names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


# --------------------------------------------------------------------------
# Real llama.cpp
# --------------------------------------------------------------------------
CANARY = """
    import ctypes, sys, numpy as np, llama_cpp
    from llama_cpp import mtmd_cpp as M
    n = int(sys.argv[3])
    llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, type_k=8, type_v=8,
                          flash_attn=True, verbose=False, n_threads=n, n_threads_batch=n)
    p = M.mtmd_context_params_default(); p.use_gpu = False; p.n_threads = n
    ctx = M.mtmd_init_from_file(sys.argv[2].encode(), llm.model, p)
    assert ctx, "mtmd_init_from_file returned NULL"
    a = np.zeros(16000, np.float32)
    bm = M.mtmd_bitmap_init_from_audio(a.size, a.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    ch = M.mtmd_input_chunks_init()
    t = M.mtmd_default_marker()
    assert M.mtmd_tokenize(ctx, ch, ctypes.byref(M.mtmd_input_text(t, len(t), True, True)),
                           (M.mtmd_bitmap_p_ctypes * 1)(bm), 1) == 0
    n = llama_cpp.llama_pos(0)
    assert M.mtmd_helper_eval_chunks(ctx, llm.ctx, ch, 0, 0, 256, True, ctypes.byref(n)) == 0
    M.mtmd_input_chunks_free(ch); M.mtmd_bitmap_free(bm); M.mtmd_free(ctx); llm.close()
    print("CANARY " + "OK", n.value)
"""


@pytest.fixture(scope="module")
def loaded(twin):
    """Llama + mtmd context on the twin, shared by the slow tests of this module.

    A subprocess canary runs the same load + a 1 s audio eval first: if the
    twin no longer suits llama.cpp and something aborts, it fails here
    instead of killing the whole pytest process."""
    r = run_py(CANARY, twin.model, twin.mmproj, N_THREADS)
    if r.returncode != 0 or "CANARY OK" not in r.stdout:
        pytest.fail(f"twin canary failed (rc={r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")

    import llama_cpp
    from llama_cpp import mtmd_cpp as M

    namespace: dict = {}
    exec(NO_EXTRA_BUFFERS, namespace)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(llama_cpp.llama_cpp, "llama_model_default_params", namespace["_model_params"])
        llm = llama_cpp.Llama(model_path=str(twin.model), n_ctx=1024, n_batch=512,
                              type_k=llama_cpp.GGML_TYPE_Q8_0, type_v=llama_cpp.GGML_TYPE_Q8_0,
                              flash_attn=True, verbose=False, n_threads=N_THREADS, n_threads_batch=N_THREADS)
    params = M.mtmd_context_params_default()
    params.use_gpu = False
    params.n_threads = N_THREADS
    params.print_timings = False
    mctx = M.mtmd_init_from_file(str(twin.mmproj).encode(), llm.model, params)
    assert mctx, "mtmd_init_from_file returned NULL"
    yield llm, mctx
    M.mtmd_free(mctx)  # before the text model it points to
    llm.close()


def _chunk_text_tokens(M, chunk) -> list[int]:
    n = ctypes.c_size_t(0)
    ptr = M.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
    return [ptr[i] for i in range(n.value)]


def tokenize_audio(M, mctx, seconds: float, prompt: str | None = None):
    """mtmd_tokenize a prompt with one audio clip; returns (chunks, summary).
    Caller frees chunks with mtmd_input_chunks_free."""
    t = np.arange(int(seconds * SAMPLE_RATE), dtype=np.float32) / SAMPLE_RATE
    rng = np.random.default_rng(1)
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    marker = M.mtmd_default_marker().decode()
    if prompt is None:
        prompt = f"<|turn>user\n{marker}Transcribe this.<turn|>\n<|turn>model\n"
    text = prompt.encode()
    bitmap = M.mtmd_bitmap_init_from_audio(audio.size, audio.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
    assert bitmap, "mtmd_bitmap_init_from_audio returned NULL"
    chunks = M.mtmd_input_chunks_init()
    try:
        itext = M.mtmd_input_text(text, len(text), True, True)  # add_special, parse_special
        bitmaps = (M.mtmd_bitmap_p_ctypes * 1)(bitmap)
        rc = M.mtmd_tokenize(mctx, chunks, ctypes.byref(itext), bitmaps, 1)
    finally:
        M.mtmd_bitmap_free(bitmap)  # mtmd_tokenize copied what it needs
    assert rc == 0, f"mtmd_tokenize returned {rc}"
    summary = []
    for i in range(M.mtmd_input_chunks_size(chunks)):
        c = M.mtmd_input_chunks_get(chunks, i)
        kind = M.mtmd_input_chunk_get_type(c)
        toks = _chunk_text_tokens(M, c) if kind == M.MTMD_INPUT_CHUNK_TYPE_TEXT else None
        summary.append((kind, M.mtmd_input_chunk_get_n_tokens(c), toks))
    return chunks, summary


def eval_and_decode(llm, M, mctx, chunks, n_decode: int = 4) -> tuple[int, list[int]]:
    import llama_cpp

    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
    new_n_past = llama_cpp.llama_pos(0)
    rc = M.mtmd_helper_eval_chunks(mctx, llm.ctx, chunks, 0, 0, llm.n_batch, True, ctypes.byref(new_n_past))
    assert rc == 0, f"mtmd_helper_eval_chunks returned {rc}"
    n_past = new_n_past.value
    assert n_past == M.mtmd_helper_get_n_pos(chunks)

    n_vocab = llm.n_vocab()
    sampler = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(sampler, llama_cpp.llama_sampler_init_greedy())
    batch = llama_cpp.llama_batch_init(1, 0, 1)
    out = []
    try:
        for _ in range(n_decode):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            assert np.isfinite(logits).all()
            assert np.abs(logits).max() <= 30.0 + 1e-3  # final_logit_softcapping
            tok = llama_cpp.llama_sampler_sample(sampler, llm.ctx, -1)
            assert 0 <= tok < n_vocab
            out.append(tok)
            batch.n_tokens = 1
            batch.token[0] = tok
            batch.pos[0] = n_past
            batch.n_seq_id[0] = 1
            batch.seq_id[0][0] = 0
            batch.logits[0] = True
            assert llama_cpp.llama_decode(llm.ctx, batch) == 0
            n_past += 1
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_sampler_free(sampler)
    return n_past, out


@pytest.mark.slow
def test_model_loads_with_q8_kv_cache_and_flash_attention(loaded):
    import llama_cpp

    llm, _ = loaded
    assert llm.context_params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    assert llm.context_params.type_k == llm.context_params.type_v == llama_cpp.GGML_TYPE_Q8_0
    assert llm.n_ctx() == 1024
    assert llm.n_vocab() == 262144  # the real, full Gemma 4 vocabulary
    assert llm.n_embd() == 64
    assert llm.metadata["general.architecture"] == "gemma4"
    assert llm.metadata["tokenizer.ggml.model"] == "gemma4"
    assert llm.metadata["gemma4.attention.shared_kv_layers"] == "5"


@pytest.mark.slow
def test_special_tokens_are_single_tokens(loaded):
    llm, _ = loaded
    for s in SPECIAL:
        toks = llm.tokenize(s.encode(), add_bos=False, special=True)
        assert len(toks) == 1, (s, toks)
        assert llm.detokenize(toks, special=True) == s.encode()
        plain = llm.tokenize(s.encode(), add_bos=False, special=False)
        if "channel" in s:
            # USER_DEFINED in the GGUF (the converter's "visible_tokens"): matched
            # even without special parsing, and rendered in the output text
            assert plain == toks
        else:
            # CONTROL tokens: without special parsing the text is split up
            assert len(plain) > 1


@pytest.mark.slow
def test_bos_behaviour(loaded):
    import llama_cpp

    llm, _ = loaded
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    assert llama_cpp.llama_vocab_get_add_bos(vocab)
    bos = llm.token_bos()
    assert bos == 2
    assert llm.tokenize(b"hi", add_bos=True)[0] == bos
    assert bos not in llm.tokenize(b"hi", add_bos=False)
    # The chat template emits "<bos>" itself: tokenizing its output with
    # add_bos=True doubles it, so render with bos_token and tokenize without BOS
    # (or render with bos_token="" and let add_special add it).
    assert llm.tokenize(b"<bos><|turn>user\n", add_bos=True, special=True)[:2] == [bos, bos]
    assert llm.tokenize(b"<bos><|turn>user\n", add_bos=False, special=True).count(bos) == 1


@pytest.mark.slow
def test_embedded_chat_template(loaded):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    llm, _ = loaded
    template = llm.metadata["tokenizer.chat_template"]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hello"}]
    out = env.from_string(template).render(messages=msgs, add_generation_prompt=True, bos_token="<bos>")
    # thinking off (default): the template closes an empty thought block itself
    assert out == ("<bos><|turn>system\nYou are terse.<turn|>\n<|turn>user\nHello<turn|>\n"
                   "<|turn>model\n<|channel>thought\n<channel|>")
    on = env.from_string(template).render(messages=msgs, add_generation_prompt=True, bos_token="<bos>",
                                          enable_thinking=True)
    assert on == "<bos><|turn>system\n<|think|>\nYou are terse.<turn|>\n<|turn>user\nHello<turn|>\n<|turn>model\n"


@pytest.mark.slow
def test_projector_loads_and_reports_audio(loaded):
    from llama_cpp import mtmd_cpp as M

    _, mctx = loaded
    assert M.mtmd_support_audio(mctx)
    assert not M.mtmd_support_vision(mctx)
    assert M.mtmd_get_audio_sample_rate(mctx) == SAMPLE_RATE
    assert M.mtmd_default_marker() == b"<__media__>"
    assert not M.mtmd_decode_use_non_causal(mctx, None)


@pytest.mark.slow
def test_three_seconds_of_audio_eval_and_decode(loaded):
    from llama_cpp import mtmd_cpp as M

    llm, mctx = loaded
    assert audio_tokens_expected(3.0) == [75]
    chunks, summary = tokenize_audio(M, mctx, 3.0)
    try:
        kinds = [k for k, _, _ in summary]
        assert kinds == [M.MTMD_INPUT_CHUNK_TYPE_TEXT, M.MTMD_INPUT_CHUNK_TYPE_AUDIO, M.MTMD_INPUT_CHUNK_TYPE_TEXT]
        n_audio = summary[1][1]
        assert 74 <= n_audio <= 76 and n_audio == 75  # 25 tokens/s, 40 ms each
        # mtmd wraps the audio in <|audio> ... <audio|> and adds BOS (add_special)
        before, after = summary[0][2], summary[2][2]
        audio_beg, audio_end = (llm.tokenize(s.encode(), add_bos=False, special=True)[0] for s in ("<|audio>", "<audio|>"))
        assert before[0] == llm.token_bos() and before[-1] == audio_beg
        assert after[0] == audio_end
        n_past, toks = eval_and_decode(llm, M, mctx, chunks, n_decode=4)
        assert n_past == sum(n for _, n, _ in summary) + 4
        assert len(toks) == 4
    finally:
        M.mtmd_input_chunks_free(chunks)


@pytest.mark.slow
def test_thirty_five_seconds_of_audio_is_split_at_30s(loaded):
    from llama_cpp import mtmd_cpp as M

    llm, mctx = loaded
    assert audio_tokens_expected(35.0) == [750, 125]
    chunks, summary = tokenize_audio(M, mctx, 35.0)
    try:
        audio = [n for k, n, _ in summary if k == M.MTMD_INPUT_CHUNK_TYPE_AUDIO]
        assert audio == [750, 125]  # llama.cpp cuts > 30 s clips into 30 s pieces
        assert sum(audio) == 875
        n_past, _ = eval_and_decode(llm, M, mctx, chunks, n_decode=2)
        assert n_past == sum(n for _, n, _ in summary) + 2 <= llm.n_ctx()
    finally:
        M.mtmd_input_chunks_free(chunks)


# --------------------------------------------------------------------------
# Load failures: in a subprocess, so an abort fails one test only
# --------------------------------------------------------------------------
LOAD_MODEL = """
    import sys, llama_cpp
    try:
        llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)
    except ValueError as e:
        print("RESULT=" + "raised", type(e).__name__, e)
        sys.exit(0)
    print("RESULT=" + "loaded")
    sys.exit(3)
"""

LOAD_MMPROJ = """
    import sys, llama_cpp
    from llama_cpp import mtmd_cpp as M
    llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, verbose=False)
    p = M.mtmd_context_params_default(); p.use_gpu = False
    ctx = M.mtmd_init_from_file(sys.argv[2].encode(), llm.model, p)
    print("RESULT=" + ("null" if not ctx else "ctx"))
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_bad_model_file_raises_naming_the_file(twin, tmp_path, kind):
    bad = tmp_path / f"broken-{kind}.gguf"
    if kind == "truncated":
        bad.write_bytes(twin.model.read_bytes()[: 20 * 2**20])
    else:
        bad.write_text("this is not a model\n")
    r = run_py(LOAD_MODEL, bad)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-3000:])
    assert f"RESULT=raised ValueError Failed to load model from file: {bad}" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_bad_projector_returns_null_not_crash(twin, tmp_path, kind):
    bad = tmp_path / f"broken-{kind}-mmproj.gguf"
    if kind == "truncated":
        bad.write_bytes(twin.mmproj.read_bytes()[: twin.mmproj.stat().st_size // 2])
    else:
        bad.write_text("this is not a projector\n")
    r = run_py(LOAD_MMPROJ, twin.model, bad)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr[-3000:])
    assert "RESULT=null" in r.stdout
    assert str(bad) in r.stderr  # llama.cpp's log names the file


@pytest.mark.slow
def test_shared_kv_without_global_layer_aborts_in_subprocess(tmp_path):
    """The pitfall in scripts/TWIN.md: if no global layer is among the layers
    that own a KV cache, llama.cpp aborts (GGML_ASSERT) while building the
    cache.  This is why the twin keeps 4 sliding + 1 global before the shared
    layers, and why risky loads run in a subprocess."""
    bad = tmp_path / "no-global-kv.gguf"
    hp = dataclasses.replace(text_model.TEXT, n_kv_shared=6)  # owners: layers 0-3, all sliding
    text_model.build_text_model(bad, 0, tokenizer.load_tokenizer_kv(), hp=hp)
    r = run_py(LOAD_MODEL, bad)
    assert r.returncode != 0 and "RESULT=" not in r.stdout
    assert "GGML_ASSERT(map_layer_ids.find(il_reuse) != map_layer_ids.end())" in r.stderr
