"""Weights stay out of ggml's AMX buffer (issue 14, llama.cpp #20824).

A llama.cpp built with -march=native on an x86 CPU with AMX places Q4_K/Q6_K
weights in its AMX buffer and crashes with SIGSEGV at the first K-quant matmul.
The engine turns the extra buffer types off when ggml offers AMX, and sends the
matrices the x86 CPU_REPACK buffer takes there by override, so decode keeps the
repacked kernels. The decision is tested with fake /proc/cpuinfo text and fake
buffer lists; the loads run in subprocesses, so a crash fails one test only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import llama_cpp
import pytest

from edge_assistant.llm import loading
from twin_generator import REPO_ROOT

SAPPHIRE_RAPIDS = (
    "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    "flags\t\t: fpu vme avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8\n\n"
)
EPYC = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu vme avx2 avx512f avx512_vnni avx512_bf16\n\n"
Q4_K, Q6_K, Q4_0, Q8_0, F16 = (llama_cpp.GGML_TYPE_Q4_K, llama_cpp.GGML_TYPE_Q6_K, llama_cpp.GGML_TYPE_Q4_0,
                               llama_cpp.GGML_TYPE_Q8_0, llama_cpp.GGML_TYPE_F16)
MATRICES = [
    ("token_embd.weight", Q4_K, 262144),        # get_rows: never repacked
    ("per_layer_token_embd.weight", Q4_0, 262144),
    ("blk.0.attn_q.weight", Q4_K, 2048),
    ("blk.0.attn_v.weight", Q6_K, 256),          # no x86 repack for Q6_K
    ("blk.0.ffn_down.weight", Q6_K, 1536),
    ("blk.1.ffn_down.weight", Q4_K, 1536),
    ("blk.2.ffn_down.weight", Q4_K, 1536),
    ("blk.12.ffn_up.weight", Q4_0, 6144),
    ("blk.3.inp_gate.weight", Q4_K, 252),       # rows not a multiple of 8
    ("blk.3.proj.weight", Q8_0, 1536),
    ("per_layer_model_proj.weight", F16, 8960),
]


def test_amx_flags_come_from_the_cpuinfo_flags_lines():
    assert loading.cpu_amx_flags(SAPPHIRE_RAPIDS) == {"amx_tile", "amx_int8"}
    assert loading.cpu_amx_flags(SAPPHIRE_RAPIDS * 4) == {"amx_tile", "amx_int8"}
    assert loading.cpu_amx_flags(EPYC) == frozenset()
    assert loading.cpu_amx_flags("model name\t: amx_tile amx_int8 lookalike\n") == frozenset()
    assert loading.cpu_amx_flags("") == frozenset()


def test_without_an_amx_buffer_the_defaults_stay():
    def never():
        raise AssertionError("the tensor list is read only when AMX must be avoided")

    for cpuinfo in (EPYC, SAPPHIRE_RAPIDS):  # an AMX CPU with a build that has no AMX buffer
        placement = loading.plan_weight_placement(loading.cpu_amx_flags(cpuinfo), ["CPU_REPACK"], never)
        assert placement.use_extra_bufts and placement.repacked == ()
    assert loading.plan_weight_placement(frozenset(), [], never).note == ""
    assert "no AMX buffer" in loading.plan_weight_placement(loading.cpu_amx_flags(SAPPHIRE_RAPIDS), [], never).note


def test_with_an_amx_buffer_only_repackable_matmul_weights_are_overridden():
    import re

    placement = loading.plan_weight_placement(
        loading.cpu_amx_flags(SAPPHIRE_RAPIDS), ["AMX", "CPU_REPACK"], lambda: MATRICES
    )
    assert not placement.use_extra_bufts
    repacked = sorted(name for name, _, _ in MATRICES if any(re.search(p, name) for p in placement.repacked))
    assert repacked == ["blk.0.attn_q.weight", "blk.1.ffn_down.weight", "blk.12.ffn_up.weight", "blk.2.ffn_down.weight"]
    assert placement.n_repacked == 4
    assert "#20824" in placement.note and "amx_int8" in placement.note
    # without CPU_REPACK in the build, nothing can be sent there
    bare = loading.plan_weight_placement(loading.cpu_amx_flags(SAPPHIRE_RAPIDS), ["AMX"], lambda: MATRICES)
    assert not bare.use_extra_bufts and bare.repacked == ()


def test_the_twin_file_lists_its_k_quant_matrices(twin):
    matrices = {name: (kind, rows) for name, kind, rows in loading.gguf_matrices(twin.model)}
    assert matrices["blk.1.ffn_down.weight"] == (Q4_K, 64)
    assert matrices["blk.0.ffn_down.weight"] == (Q6_K, 64)
    assert matrices["token_embd.weight"] == (Q8_0, 262144)
    assert "output_norm.weight" not in matrices  # 1-D


TURN = """
    import logging, sys
    from pathlib import Path
    import numpy as np
    from edge_assistant.llm import engine, loading
    from edge_assistant.config import EngineConfig

    lines = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("edge_assistant")
    logger.addHandler(Keep())
    logger.setLevel(logging.DEBUG)
    if sys.argv[3] == "as-if-amx":  # this ggml offering AMX on an AMX CPU; CPU_REPACK stays real
        real = loading.cpu_extra_buffer_types
        loading.cpu_extra_buffer_types = lambda: {"AMX": 0, **real()}
        loading._read_cpuinfo = lambda: "flags\\t\\t: fpu avx2 amx_tile amx_int8\\n"
    t = np.arange(2 * 16000, dtype=np.float32) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with engine.GemmaEngine(Path(sys.argv[1]), Path(sys.argv[2]), EngineConfig(max_tokens=4, threads=2)) as e:
        reply = e.respond(audio)  # a multi-token prefill (AMX's tile kernels) and single-token decodes
    print("\\n".join(lines))
    print("TURN " + "OK", reply.stats.audio_tokens, reply.stats.generated_tokens)
"""


def run_turn(twin, mode: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GGML_NO_BACKTRACE": "1"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(TURN), str(twin.model), str(twin.mmproj), mode],
                          capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)


@pytest.mark.slow
def test_a_turn_on_the_twins_k_quant_matrices_never_uses_the_amx_buffer(twin):
    """On a CPU with AMX and a -march=native build this is the load and turn that
    crashed (SIGSEGV in ggml_backend_amx_mul_mat); here it checks the same path."""
    r = run_turn(twin, "real")
    assert r.returncode == 0, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    assert "TURN OK 50 " in r.stdout
    assert "AMX model buffer size" not in r.stdout
    if "AMX" in loading.cpu_extra_buffer_types():
        assert "weights: ggml offers its AMX buffer" in r.stdout


@pytest.mark.slow
def test_the_amx_placement_loads_repacks_and_answers(twin):
    """The placement an AMX machine gets, applied here: extra buffer types off and
    the twin's Q4_K ffn_down matrices sent to CPU_REPACK by override; the Q6_K ones
    stay in plain CPU memory. A wrong override (a type CPU_REPACK cannot take)
    would crash the load."""
    r = run_turn(twin, "as-if-amx")
    assert r.returncode == 0, (r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    assert "TURN OK 50 " in r.stdout
    assert "weights: ggml offers its AMX buffer (CPU flags amx_int8, amx_tile)" in r.stdout
    overridden = sorted(line.split()[1] for line in r.stdout.splitlines()
                        if "buffer type overridden to CPU_REPACK" in line)
    assert overridden == [f"blk.{il}.ffn_down.weight" for il in (1, 2, 4, 5, 7)]
    assert "CPU_REPACK model buffer size" in r.stdout
