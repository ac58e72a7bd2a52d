"""scripts/bench_real_size.py's helpers: reading a process's memory, the sweeps,
the settings every configuration shares, and the table (the benchmark itself
prints numbers and is run by hand)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from twin_generator import REPO_ROOT

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
    sample = bench.parse_status(STATUS)
    assert sample.rss == 2_400_000 * 1024
    assert sample.anon == 1_900_000 * 1024
    assert sample.file == 500_000 * 1024  # shared memory counts as file-backed
    assert sample.hwm == 3_500_000 * 1024


def test_peaks_are_kept_per_field(bench):
    peak = bench.PeakMemory()
    peak.add(bench.MemorySample(rss=10, anon=8, file=2, hwm=10))
    peak.add(bench.MemorySample(rss=9, anon=3, file=6, hwm=12))
    assert (peak.rss, peak.anon, peak.file, peak.hwm) == (10, 8, 6, 12)


def test_the_watcher_reads_a_live_process(bench):
    watcher = bench.MemoryWatcher(os.getpid(), interval=0.001)
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
    with pytest.raises(bench.BenchError, match="unknown key engine.repak"):
        bench.parse_settings(["repak = false"])
    with pytest.raises(bench.BenchError, match="bad --set"):
        bench.parse_settings(["repack = maybe"])


def test_the_table_shows_a_failed_configuration_with_its_memory(bench):
    gib = bench.GIB
    good = bench.Outcome(bench.Variant("defaults"), {
        "load_ms": 2500.0,
        "questions": {name: {"encode_ms_per_s": 100.0, "prefill_tok_s": 50.0, "decode_tok_s": 10.0,
                             "first_token_ms": 3000.0} for name in bench.QUESTIONS},
    }, bench.PeakMemory(rss=2 * gib, anon=gib, file=gib, hwm=2 * gib))
    bad = bench.Outcome(bench.Variant("limit 2.2 GiB"), None, bench.PeakMemory(hwm=gib), error="killed (SIGKILL: OOM?)")
    table = bench.format_table([good, bad], "title")
    rows = table.splitlines()
    assert rows[0] == "title"
    assert rows[3].startswith("defaults") and "10.00" in rows[3] and "2.00Gi" in rows[3]
    assert rows[4].startswith("limit 2.2 GiB") and "killed (SIGKILL: OOM?)" in rows[4]


def test_bad_arguments_are_one_line_errors(bench, capsys):
    assert bench.main(["--set", "threads = -1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bench_real_size: error: bad --set") and err.count("\n") == 1


def test_the_limit_report_compares_against_the_unlimited_run(bench):
    def outcome(decode, cgroup=None):
        figures = {"questions": {name: {"decode_tok_s": decode, "prefill_tok_s": 50.0, "first_token_ms": 3000.0}
                                 for name in bench.QUESTIONS}}
        return bench.Outcome(bench.Variant("x"), figures, bench.PeakMemory(), cgroup)

    report = bench.limit_report(outcome(10.0), [outcome(9.0, bench.CgroupResult(int(3.3 * bench.GIB), 3 * bench.GIB, 0))])
    assert "   3.30G    0.90x    1.00x    1.00x      3.00G         0" in report
