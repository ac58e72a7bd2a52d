"""scripts/bench_real_size.py's helpers: reading a process's memory, the sweeps,
the settings every configuration shares, and the table (the benchmark itself
prints numbers and is run by hand)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from twin_generator import REPO_ROOT

import benchlib  # scripts/, on the path through twin_generator
import yardstick_tools

STATUS = """Name:\tpython
VmPeak:\t 6000000 kB
VmHWM:\t 3500000 kB
VmRSS:\t 2400000 kB
RssAnon:\t 1900000 kB
RssFile:\t  480000 kB
RssShmem:\t   20000 kB
Threads:\t5
"""


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_real_size", REPO_ROOT / "scripts" / "bench_real_size.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_real_size"] = module
    spec.loader.exec_module(module)
    return module


def test_status_gives_rss_split_and_the_kernels_peak_in_bytes(bench):
    sample = benchlib.parse_status(STATUS)
    assert sample.rss == 2_400_000 * 1024
    assert sample.anon == 1_900_000 * 1024
    assert sample.file == 500_000 * 1024  # shared memory counts as file-backed
    assert sample.hwm == 3_500_000 * 1024


def test_peaks_are_kept_per_field(bench):
    peak = benchlib.PeakMemory()
    peak.add(benchlib.MemorySample(rss=10, anon=8, file=2, hwm=10))
    peak.add(benchlib.MemorySample(rss=9, anon=3, file=6, hwm=12))
    assert (peak.rss, peak.anon, peak.file, peak.hwm) == (10, 8, 6, 12)


def test_the_watcher_reads_a_live_process(bench):
    watcher = benchlib.MemoryWatcher(os.getpid(), interval=0.001)
    peak = watcher.stop()
    assert peak.rss > 0 and peak.anon > 0 and peak.hwm >= peak.rss


def test_the_threads_sweep_covers_every_core_count_and_one_less_for_decode(bench):
    labels = [(v.label, v.engine) for v in bench.sweep_variants("threads", 4)]
    assert labels == [("threads 1", {"threads": 1}), ("threads 2", {"threads": 2}), ("threads 3", {"threads": 3}),
                      ("threads 4", {"threads": 4}), ("threads 4, decode 3", {"threads": 4, "decode_threads": 3})]
    assert [v.label for v in bench.sweep_variants("threads", 1)] == ["threads 1"]


def test_every_sweep_is_valid_engine_settings(bench):
    from edge_assistant.config import Config, apply_overrides

    for name in bench.SWEEPS:
        for variant in bench.sweep_variants(name, 2):
            apply_overrides(Config(), {"engine": variant.engine}, where=variant.label)
            assert variant.projector in ("F16", "Q8_0")


def test_shared_settings_are_typed_and_checked_by_the_config(bench):
    assert bench.parse_settings(["repack = false", "n_ubatch = 64", "n_batch = 64"]) == {
        "repack": False, "n_ubatch": 64, "n_batch": 64}
    with pytest.raises(benchlib.BenchError, match="unknown key engine.repak"):
        bench.parse_settings(["repak = false"])
    with pytest.raises(benchlib.BenchError, match="bad --set"):
        bench.parse_settings(["repack = maybe"])


def test_the_table_shows_a_failed_configuration_with_its_memory(bench):
    gib = benchlib.GIB
    good = bench.Outcome(bench.Variant("defaults"), {
        "load_ms": 2500.0,
        "questions": {name: {"encode_ms_per_s": 100.0, "prefill_tok_s": 50.0, "decode_tok_s": 10.0,
                             "first_token_ms": 3000.0} for name in bench.QUESTIONS},
    }, benchlib.PeakMemory(rss=2 * gib, anon=gib, file=gib, hwm=2 * gib))
    bad = bench.Outcome(bench.Variant("limit 2.2 GiB"), None, benchlib.PeakMemory(hwm=gib), error="killed (SIGKILL: OOM?)")
    table = bench.format_table([good, bad], "title")
    rows = table.splitlines()
    assert rows[0] == "title"
    assert rows[3].startswith("defaults") and "10.00" in rows[3] and "2.00Gi" in rows[3]
    assert rows[4].startswith("limit 2.2 GiB") and "killed (SIGKILL: OOM?)" in rows[4]


def test_bad_arguments_are_one_line_errors(bench, capsys):
    assert bench.main(["--set", "threads = -1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bench_real_size: error: bad --set") and err.count("\n") == 1


# llama-mtmd-cli's own output (stderr at -lv 4, the sampled token on stdout) on
# the twin, 5 s question, -b 128 -ub 128: the lines after loading.
MTMD_CLI_LOG = """\
0.12.429.870 I main: loading model: /root/.cache/edge-assistant/twin/cf8d2afa86c2f3cb/twin-e2b.gguf
0.12.430.239 W WARN: This is an experimental CLI for testing multimodal capability.
0.12.430.240 W       For normal use cases, please use the standard llama-cli
0.12.800.131 I encoding mtmd batch, n_chunks = 1 (done = 1, total = 3)
0.13.080.209 I mtmd batch encoding done in 280 ms
0.13.080.294 I decoding audio batch 1/2, n_tokens_batch = 128
0.14.374.372 I audio decoded (batch 1/2) in 1294 ms
0.14.386.770 I decoding audio batch 2/2, n_tokens_batch = 40
0.14.832.895 I audio decoded (batch 2/2) in 446 ms
0.15.086.916 I llama_perf_context_print:        load time =    6826.76 ms
0.15.086.920 I llama_perf_context_print: prompt eval time =    2462.13 ms /   183 tokens (   13.45 ms per token,    74.33 tokens per second)
0.15.086.921 I llama_perf_context_print:        eval time =       0.00 ms /     1 runs   (    0.00 ms per token,      inf tokens per second)
0.15.086.923 I llama_perf_context_print:       total time =    2681.36 ms /   184 tokens
0.15.086.923 I llama_perf_context_print:    graphs reused =          0

 ваш
"""


def test_llama_mtmd_cli_times_are_its_own_printed_figures(bench):
    times = yardstick_tools.parse_mtmd_cli_log(MTMD_CLI_LOG)
    assert (times.encode_ms, times.audio_decode_ms, times.prompt_eval_ms, times.prompt_tokens) == (280, 1740, 2462.13, 183)
    assert times.first_token_ms == pytest.approx(280 + 2462.13)


def test_llama_mtmd_cli_without_its_timings_is_an_error(bench):
    # What it prints at its default verbosity: the encoder line only (the run of issue 14).
    default_verbosity = "\n".join(line for line in MTMD_CLI_LOG.splitlines() if "llama_perf" not in line and "decod" not in line)
    with pytest.raises(benchlib.BenchError, match="no prompt eval time"):
        yardstick_tools.parse_mtmd_cli_log(default_verbosity)
    # With -n 0 nothing reads the logits, so the last prompt batch is never timed.
    no_token = MTMD_CLI_LOG.replace("2462.13 ms /   183 tokens", "   0.00 ms /     1 tokens")
    with pytest.raises(benchlib.BenchError, match="no prompt eval time"):
        yardstick_tools.parse_mtmd_cli_log(no_token)


def test_llama_mtmd_cli_gets_our_user_turn_and_our_settings(bench):
    import jinja2

    from edge_assistant.config import EngineConfig

    prefix, suffix = "<|turn>user\n", "<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"
    template = yardstick_tools.user_turn_template(prefix, suffix)
    rendered = jinja2.Template(template).render(messages=[{"role": "user", "content": yardstick_tools.MTMD_MARKER}],
                                                add_generation_prompt=True)
    assert rendered == prefix + yardstick_tools.MTMD_MARKER + suffix
    with pytest.raises(benchlib.BenchError, match="template syntax"):
        yardstick_tools.user_turn_template("{{ oops }}", suffix)

    settings = EngineConfig(n_batch=64, n_ubatch=32, kv_cache_type="f16")
    command = yardstick_tools.mtmd_cli_command(Path("/bin"), Path("m.gguf"), Path("p.gguf"), Path("q.wav"), settings, 3, template)

    def value(flag: str) -> str:
        return command[command.index(flag) + 1]

    assert command[0] == "/bin/llama-mtmd-cli"
    assert (value("-t"), value("-b"), value("-ub"), value("-ctk"), value("-ctv"), value("--audio")) == (
        "3", "64", "32", "f16", "f16", "q.wav")
    assert value("-n") == "1" and value("-lv") == "4" and value("-p") == yardstick_tools.MTMD_MARKER
    assert command.index("--jinja") < command.index("--chat-template") and value("--chat-template") == template
    assert "--no-warmup" not in command  # our engine is warm when the audio comes; so is theirs


TURN_EVENT = (
    '{"event": "turn", "t": 13.8, "reply": "Mount Elbrus.", "tokens": {"prompt": 14, "audio": 344, "generated": 22, '
    '"evaluated_this_turn": 382, "after_speech_end": 0, "context": 1050}, "timings_ms": {"endpoint_silence": 800.0, '
    '"audio_prep": 0.0, "encode": 174.6, "prefill": 384.7, "first_token": 0.2, "decode": 458.9, "generate_total": 468.0, '
    '"tts_first_audio": 862.5, "turn_total": 1264.2}, "stopped_by": "end_of_turn", "tool_calls": []}'
)


def test_the_daemons_turn_event_gives_decode_speed_and_first_token(bench):
    events = '{"event": "speech_start", "t": 0.54}\n' + TURN_EVENT + '\n{"event": "speak_end", "t": 20.7}\n'
    figures = bench.turn_figures(events)
    assert figures["decode_tok_s"] == pytest.approx(22 / 458.9 * 1000)
    assert (figures["first_token_ms"], figures["first_audio_ms"], figures["generated"]) == (0.2, 862.5, 22)
    with pytest.raises(benchlib.BenchError, match="expected one turn"):
        bench.turn_figures('{"event": "speech_start", "t": 0.54}\n')
    with pytest.raises(benchlib.BenchError, match="turn failed: RuntimeError: boom"):
        bench.turn_figures('{"event": "error", "t": 1.0, "message": "RuntimeError: boom"}\n')


def test_the_daemon_runs_the_product_with_the_benchmarks_settings(bench, tmp_path):
    from edge_assistant.config import load_config

    config_path = tmp_path / "daemon.toml"
    config_path.write_text(bench.daemon_config({"repack": False, "kv_cache_type": "f16"}, 64, tmp_path / "state"))
    config = load_config(config_path)  # the product's own parser and checks
    assert config.wake.model == "none"
    assert (config.engine.max_tokens, config.engine.seed, config.engine.repack, config.engine.kv_cache_type) == (
        64, 1, False, "f16")
    assert config.tools.state_dir == str(tmp_path / "state")

    base = {"questions": {"5 s": "q5.wav", "15 s": "q15.wav"}, "model": "m.gguf", "mmprojs": {"F16": "p.gguf"},
            "voice": "v.onnx"}
    command = bench.daemon_command(base, config_path, tmp_path / "out.wav")
    assert command[1].endswith("scripts/scripted_daemon.py") and command[2:4] == ["--reply", bench.REPLY]
    run = command[4:]
    assert run[0] == "run" and "--events" in run
    assert run[run.index("--input-file") + 1] == "q15.wav" and run[run.index("--config") + 1] == str(config_path)


def test_the_daemon_report_states_each_limits_ratio_and_goal(bench):
    gib = benchlib.GIB

    def run(decode, hwm=2.4, oom=0, limit=None, error=""):
        figures = None if error else {"decode_tok_s": decode, "first_token_ms": 900.0, "first_audio_ms": 1500.0}
        cgroup = benchlib.CgroupResult(int(limit * gib), int(3 * gib), oom) if limit else None
        return bench.DaemonRun(figures, benchlib.PeakMemory(hwm=int(hwm * gib), anon=gib, file=gib), cgroup, error)

    report = bench.daemon_report({
        None: [run(10.0), run(9.0), run(11.0)],
        3.3: [run(9.8, limit=3.3), run(9.6, limit=3.3), run(10.5, limit=3.3)],
        2.6: [run(8.0, limit=2.6), run(0, limit=2.6, oom=1, error="killed (SIGKILL: OOM?): ")],
        2.2: [run(3.0, limit=2.2)],
    })
    assert "10.00 (9.00-11.00)" in report
    assert "limit 3.3 GiB: decode 0.98x unlimited (medians), 0 OOM kills, 0 failed runs; goal >= 0.97x with no OOM kill: met" in report
    assert "limit 2.6 GiB: decode 0.80x unlimited (medians), 1 OOM kills, 1 failed runs; goal >= 0.90x with no OOM kill: NOT met" in report
    assert "limit 2.6 GiB failed: killed (SIGKILL: OOM?)" in report
    assert "limit 2.2 GiB: decode 0.30x unlimited (medians), 0 OOM kills, 0 failed runs; no goal for this limit" in report
    assert "peak RSS unlimited 2.40 GiB (median of VmHWM): goal <= 2.6 GiB met" in report


def test_bad_runs_or_limits_are_usage_errors(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--runs", "0"])
    assert exit_info.value.code == 2 and "--runs must be 1 or more" in capsys.readouterr().err


@pytest.mark.slow
def test_the_scripted_daemon_answers_a_question_on_the_twin(bench, twin, tmp_path):
    """The product's `run` through scripted_daemon.py, as --limit drives it (no cgroup)."""
    from speech import VOICE_PATH, concat, silence, speak

    from edge_assistant.audio.files import write_wav_atomic
    from edge_assistant.audio.format import MODEL_SAMPLE_RATE

    question = tmp_path / "question.wav"
    write_wav_atomic(question, concat(silence(0.5), speak("What is the tallest mountain in Europe?"), silence(1.2)).samples,
                     MODEL_SAMPLE_RATE)
    config = tmp_path / "daemon.toml"
    config.write_text(bench.daemon_config({}, 64, tmp_path / "state"))
    base = {"questions": {bench.DAEMON_QUESTION: str(question)}, "model": str(twin.model),
            "mmprojs": {"F16": str(twin.mmproj)}, "voice": str(VOICE_PATH)}
    measured = benchlib.run_measured(bench.daemon_command(base, config, tmp_path / "reply.wav"))
    assert measured.failure() == ""
    figures = bench.turn_figures(measured.stdout)
    turn = next(json.loads(line) for line in measured.stdout.splitlines() if '"event": "turn"' in line)
    assert turn["reply"] == bench.REPLY and turn["stopped_by"] == "end_of_turn"  # the script, not twin noise
    assert figures["generated"] == turn["tokens"]["generated"] > 0
    assert figures["decode_tok_s"] > 0 and figures["first_audio_ms"] > 0
    assert measured.memory.hwm > measured.memory.anon > 0
    assert (tmp_path / "reply.wav").stat().st_size > 44  # Piper spoke the reply into the output file
