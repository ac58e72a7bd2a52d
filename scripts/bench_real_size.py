#!/usr/bin/env python3
"""Benchmark every stage at E2B's real size: load, audio encoder, prefill, decode,
first token for a 5 s and a 15 s question, and peak RSS split into anonymous and
file-backed memory, one configuration per fresh process.

    python scripts/bench_real_size.py                          # defaults, on the full-size twin
    python scripts/bench_real_size.py --sweep threads --sweep kv --runs 3
    python scripts/bench_real_size.py --limit 3.3 --limit 2.6  # the daemon inside memory cgroups, cold page cache (root)
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
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))

from benchlib import (  # noqa: E402
    GIB, BenchError, CgroupResult, MemoryCgroup, PeakMemory, default_voice, own_memory, run_measured, spread, underlined,
)
from yardstick_tools import (  # noqa: E402
    llama_bench, llama_tools, mtmd_cli_command, mtmd_cli_first_token, user_turn_template, whisper_transcripts,
)

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

    from edge_assistant.audio.playback import RecordingPlayback
    from edge_assistant.config import EngineConfig
    from edge_assistant.tts import PiperSpeech, StreamingSpeaker
    from edge_assistant.turn import run_turn

    settings = EngineConfig(max_tokens=job["max_tokens"], seed=1, **job["engine"])
    started = time.perf_counter()
    scripted = ScriptedEngine(Path(job["model"]), Path(job["mmproj"]), REPLY, settings)
    load_ms = (time.perf_counter() - started) * 1000
    engine = scripted.engine
    voice = PiperSpeech(Path(job["voice"]))
    # Synthesized, played nowhere; without it (``speak`` false) the decode is timed
    # alone, as llama-bench times it.
    speaker = StreamingSpeaker(voice, RecordingPlayback(voice.sample_rate)) if job.get("speak", True) else None
    result: dict = {"load_ms": load_ms, "threads": engine.threads, "questions": {},
                    "user_turn": [engine.chat_format.user_prefix, engine.chat_format.user_suffix],
                    "system_prompt_tokens": engine.system_prompt_tokens}
    for name, path in job["questions"].items():
        speech = prepared_speech(Path(path))
        turns = []
        for _ in range(job["runs"]):
            engine.reset_history()
            turn = run_turn(engine, speech, speaker, time.perf_counter())
            turns.append(turn)
        result["questions"][name] = question_figures(speech.seconds, turns)
    if job.get("text"):
        result["text_first_token_ms"] = text_first_token_ms(engine, job["text"], job["runs"])
    scripted.close()
    result["vm_hwm"] = own_memory().hwm
    return result


def prepared_speech(path: Path):
    """The question as the engine gets it: trimmed to the speech (turn.prepare_audio)."""
    from edge_assistant.audio.files import read_audio
    from edge_assistant.config import AudioConfig, EndpointConfig
    from edge_assistant.turn import prepare_audio

    return prepare_audio(read_audio(path), AudioConfig(), EndpointConfig().min_speech_ms)


def question_figures(seconds: float, turns: list) -> dict:
    """Medians over the runs of one question, from the engine's own TurnStats
    (through run_turn's timings and token counts)."""

    def median(values) -> float:
        return statistics.median(list(values))

    return {
        "seconds": seconds,
        "audio_tokens": turns[0].tokens["audio"],
        "prompt_tokens": turns[0].tokens["prompt"],
        "encode_ms_per_s": median(t.timings_ms["encode"] / seconds for t in turns),
        "prefill_tok_s": median((t.tokens["prompt"] + t.tokens["audio"]) / t.timings_ms["prefill"] * 1000 for t in turns),
        "first_token_ms": median(t.timings_ms["first_token"] for t in turns),
        "encode_ms": median(t.timings_ms["encode"] for t in turns),
        "prefill_ms": median(t.timings_ms["prefill"] for t in turns),
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



def run_config(variant: Variant, base: dict, cold: bool = False) -> Outcome:
    """``variant`` in a worker process of its own (see run_measured)."""
    job = dict(base, engine=variant.engine, mmproj=str(base["mmprojs"][variant.projector]))
    measured = run_measured([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)], cold=cold)
    outcome = Outcome(variant, None, measured.memory, measured.cgroup, measured.failure())
    if outcome.error:
        return outcome
    outcome.figures = json.loads(measured.stdout.strip().splitlines()[-1])
    outcome.memory.hwm = max(outcome.memory.hwm, outcome.figures["vm_hwm"])
    return outcome


def table_header() -> str:
    names = list(QUESTIONS)
    header = (f"{'configuration':28s} {'load s':>6s} {'enc ms/s':>8s} {'prefill t/s':>11s} {'decode t/s':>10s} "
              + " ".join(f"{'1st tok ' + n:>12s}" for n in names)
              + f" {'peak RSS':>9s} {'anon':>6s} {'file':>6s}")
    return underlined(header)


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


# -- the daemon inside memory limits -------------------------------------------------------
#
# The goal (issue 14) is about the product: `edge-assistant run` answering a 15 s
# question with Piper speaking, limited to 3.3 GiB (a 4 GB Pi's room for the
# service) and to 2.6 GiB. So every limited run is the real daemon, its reply
# scripted by scripts/scripted_daemon.py, one process per run; the unlimited
# baseline is the same command. The page cache is dropped before every run
# (limited or not), as after a boot, so the model file is read from the disk
# in each, and the runs take turns (unlimited, each limit, again) so a change in
# the machine's load falls on all of them alike.

DAEMON_QUESTION = "15 s"
DAEMON_GOALS = {3.3: 0.97, 2.6: 0.9}  # limit GiB: decode speed against unlimited, at least
PEAK_RSS_GOAL = 2.6 * GIB


def daemon_config(engine: dict, max_tokens: int, state_dir: Path) -> str:
    """The TOML the daemon reads: voice activity alone starts a turn (no wake
    word), a fixed seed and max_tokens, the shared [engine] settings, and tool
    state in the benchmark's own directory instead of the user's."""
    lines = ["[wake]", 'model = "none"', "", "[tools]", f"state_dir = {json.dumps(str(state_dir))}", "", "[engine]",
             f"max_tokens = {max_tokens}", "seed = 1"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in engine.items()]  # JSON scalars are TOML scalars
    return "\n".join(lines) + "\n"


def daemon_command(base: dict, config: Path, output: Path) -> list[str]:
    """`edge-assistant run` on the question file, events on stdout, the reply's
    audio to ``output``, through scripted_daemon.py so the model says REPLY."""
    return [sys.executable, str(ROOT / "scripts" / "scripted_daemon.py"), "--reply", REPLY, "run",
            "--input-file", base["questions"][DAEMON_QUESTION], "--output-file", str(output), "--events",
            "--model", base["model"], "--mmproj", base["mmprojs"]["F16"], "--voice", base["voice"],
            "--config", str(config)]


def turn_figures(events: str) -> dict:
    """Decode speed, first token and first audio of the one turn in the daemon's
    event stream (stdout of `run --events`)."""
    records = [json.loads(line) for line in events.splitlines() if line.startswith("{")]
    errors = [record["message"] for record in records if record["event"] == "error"]
    if errors:
        raise BenchError(f"the daemon's turn failed: {errors[0]}")
    turns = [record for record in records if record["event"] == "turn"]
    if len(turns) != 1:
        raise BenchError(f"expected one turn from the daemon, got {len(turns)}")
    tokens, timings = turns[0]["tokens"], turns[0]["timings_ms"]
    if not tokens["generated"] or not timings["decode"]:
        raise BenchError("the daemon's turn generated nothing")
    return {
        "decode_tok_s": tokens["generated"] / timings["decode"] * 1000,
        "first_token_ms": timings["first_token"],
        "first_audio_ms": timings.get("tts_first_audio", float("nan")),
        "generated": tokens["generated"],
        "audio_tokens": tokens["audio"],
    }


@dataclass
class DaemonRun:
    """One daemon run: its turn's figures (None when it failed) and its memory."""

    figures: dict | None
    memory: PeakMemory
    cgroup: CgroupResult | None
    error: str = ""


def run_daemon(base: dict, engine: dict, limit_gib: float | None, workdir: Path) -> DaemonRun:
    """The daemon once, cold page cache, inside a fresh memory cgroup of
    ``limit_gib`` (None: unlimited)."""
    config = workdir / "daemon.toml"
    config.write_text(daemon_config(engine, base["max_tokens"], workdir / "tool-state"))
    command = daemon_command(base, config, workdir / "reply.wav")
    cgroup = MemoryCgroup(int(limit_gib * GIB)) if limit_gib is not None else None
    try:
        measured = run_measured(command, cgroup, cold=True)
    finally:
        if cgroup is not None:
            cgroup.remove()
    run = DaemonRun(None, measured.memory, measured.cgroup, measured.failure())
    if not run.error:
        try:
            run.figures = turn_figures(measured.stdout)
        except BenchError as error:
            run.error = str(error)
    return run



def daemon_label(limit_gib: float | None) -> str:
    return "unlimited" if limit_gib is None else f"limit {limit_gib:g} GiB"


def daemon_report(runs: dict[float | None, list[DaemonRun]]) -> str:
    """A row per configuration (medians and min-max over its runs), then one
    line per limit against the unlimited runs, and the peak RSS goal."""
    header = (f"{'configuration':16s} {'decode tok/s':>20s} {'1st token ms':>22s} {'1st audio ms':>22s} "
              f"{'peak RSS GiB':>19s} {'anon':>5s} {'file':>5s} {'cgroup max':>10s} {'OOM kills':>9s} {'failed':>6s}")
    lines = [underlined(header)]
    decode: dict[float | None, list[float]] = {}
    for limit, group in runs.items():
        done = [run for run in group if run.figures]
        decode[limit] = [run.figures["decode_tok_s"] for run in done]
        hwm = [run.memory.hwm / GIB for run in group]
        usage = [run.cgroup.max_usage / GIB for run in group if run.cgroup]
        lines.append(
            f"{daemon_label(limit):16s} {spread(decode[limit], 2):>20s} "
            f"{spread([run.figures['first_token_ms'] for run in done], 0):>22s} "
            f"{spread([run.figures['first_audio_ms'] for run in done], 0):>22s} {spread(hwm, 2):>19s} "
            f"{statistics.median(run.memory.anon for run in group) / GIB:5.2f} "
            f"{statistics.median(run.memory.file for run in group) / GIB:5.2f} "
            f"{(f'{max(usage):.2f}G' if usage else '-'):>10s} "
            f"{sum(run.cgroup.oom_kills for run in group if run.cgroup):9d} {len(group) - len(done):6d}")
        lines += [f"  {daemon_label(limit)} failed: {run.error}" for run in group if run.error]
    lines.append("")
    base = decode.get(None, [])
    for limit, group in runs.items():
        if limit is None:
            continue
        oom = sum(run.cgroup.oom_kills for run in group if run.cgroup)
        failed = sum(1 for run in group if not run.figures)
        if not base or not decode[limit]:
            lines.append(f"{daemon_label(limit)}: no ratio (a configuration has no successful run): goal not met")
            continue
        ratio = statistics.median(decode[limit]) / statistics.median(base)
        goal = DAEMON_GOALS.get(limit)
        verdict = ("no goal for this limit" if goal is None else
                   f"goal >= {goal:.2f}x with no OOM kill: {'met' if ratio >= goal and not oom and not failed else 'NOT met'}")
        lines.append(f"{daemon_label(limit)}: decode {ratio:.2f}x unlimited (medians), {oom} OOM kills, "
                     f"{failed} failed runs; {verdict}")
    if None in runs:
        peak = statistics.median(run.memory.hwm for run in runs[None])
        lines.append(f"peak RSS unlimited {peak / GIB:.2f} GiB (median of VmHWM): goal <= {PEAK_RSS_GOAL / GIB:.1f} GiB "
                     f"{'met' if peak <= PEAK_RSS_GOAL else 'NOT met'}")
    return "\n".join(lines)


def daemon_limits(base: dict, engine: dict, limits: list[float], runs: int) -> str:
    """The unlimited daemon and each limit, ``runs`` times in turn; a line per run
    as it ends, then the report."""
    order: list[float | None] = [None, *limits]
    results: dict[float | None, list[DaemonRun]] = {limit: [] for limit in order}
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as workdir:
        for number in range(1, runs + 1):
            for limit in order:
                run = run_daemon(base, engine, limit, Path(workdir))
                results[limit].append(run)
                figures = run.figures
                print(f"  run {number}, {daemon_label(limit)}: "
                      + (f"decode {figures['decode_tok_s']:.2f} tok/s, first token {figures['first_token_ms']:.0f} ms, "
                         f"{figures['generated']} tokens" if figures else f"failed: {run.error}")
                      + f", VmHWM {run.memory.hwm / GIB:.2f} GiB", flush=True)
    return daemon_report(results)


# -- yardsticks ----------------------------------------------------------------------------



def yardsticks(base: dict, settings, threads: int, ours: Outcome, runs: int) -> str:
    from edge_assistant.audio.files import write_wav_atomic

    lines = [f"\nyardsticks ({threads} threads, same files and settings):"]
    ours_q = ours.figures["questions"] if ours.figures else {}
    try:
        bin_dir = llama_tools()
        if not ours.figures:
            raise BenchError("not compared: our own run failed")
        # llama-bench decodes alone, after a context of the given depth: so do we here
        # (the configurations above decode while Piper speaks the reply).
        longest_name = list(QUESTIONS)[-1]
        longest = ours_q[longest_name]
        depth = ours.figures["system_prompt_tokens"] + longest["prompt_tokens"] + longest["audio_tokens"]
        alone = run_config(Variant("decode alone"), dict(base, speak=False,
                                                         questions={longest_name: base["questions"][longest_name]}))
        if alone.figures is None:
            raise BenchError(f"our decode without Piper failed: {alone.error}")
        mine = alone.figures["questions"][longest_name]["decode_tok_s"]
        bench = llama_bench(bin_dir, Path(base["model"]), settings, threads, base["max_tokens"], depth)
        lines.append(f"  llama-bench: prefill {bench['prefill']:.1f} tok/s, decode {bench['decode']:.2f} tok/s after "
                     f"{depth} tokens of context; ours, alone after the {longest_name} question, {mine:.2f} tok/s = "
                     f"{mine / bench['decode']:.2f}x (goal >= 0.97x); with Piper speaking "
                     f"{longest['decode_tok_s']:.2f} tok/s")
        template = user_turn_template(*ours.figures["user_turn"])
        with tempfile.TemporaryDirectory(prefix="bench-mtmd-") as workdir:
            for name, wav in base["questions"].items():
                mine = ours_q[name]
                speech = prepared_speech(Path(wav))  # the audio our engine got, silence trimmed
                trimmed = Path(workdir) / Path(wav).name
                write_wav_atomic(trimmed, speech.samples, speech.sample_rate)
                cli = mtmd_cli_first_token(mtmd_cli_command(bin_dir, Path(base["model"]), Path(base["mmprojs"]["F16"]),
                                                            trimmed, settings, threads, template), runs)
                ours_tokens = mine["prompt_tokens"] + mine["audio_tokens"]
                lines.append(
                    f"  llama-mtmd-cli, {name} question: encode {cli.encode_ms:.0f} ms + prompt eval "
                    f"{cli.prompt_eval_ms:.0f} ms ({cli.prompt_tokens} tokens, audio {cli.audio_decode_ms:.0f} ms of it) "
                    f"= {cli.first_token_ms:.0f} ms; ours {mine['first_token_ms']:.0f} ms (encode {mine['encode_ms']:.0f} + "
                    f"prefill {mine['prefill_ms']:.0f} ms + the rest: mel spectrogram, tokenizing, Python; "
                    f"{ours_tokens} tokens after "
                    f"the {ours.figures['system_prompt_tokens']}-token system prompt it keeps cached; theirs: BOS and the same "
                    f"user turn) = "
                    f"{mine['first_token_ms'] / cli.first_token_ms:.2f}x ours/theirs (goal <= 1.05x; same threads "
                    f"{threads}, n_batch {settings.n_batch}, n_ubatch {settings.n_ubatch}, KV {settings.kv_cache_type}, "
                    f"same audio)")
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
    import make_twin

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
    parser.add_argument("--runs", type=int, default=3,
                        help="turns per question per configuration, and daemon runs per --limit configuration (median)")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help="tokens generated per turn")
    parser.add_argument("--sweep", action="append", default=[], choices=SWEEPS)
    parser.add_argument("--limit", type=float, action="append", default=[],
                        help="the daemon inside this memory limit in GiB, against it unlimited (cgroup v1, root)")
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
    from edge_assistant.config import EngineConfig
    from edge_assistant.llm.loading import physical_cores

    if (args.model is None) != (args.mmproj is None):
        parser.error("give both --model and --mmproj, or neither (the full-size twin)")
    if args.runs < 1 or any(gib <= 0 for gib in args.limit):
        parser.error("--runs must be 1 or more and every --limit above 0 GiB")
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
        if args.sweep or args.yardsticks or not args.limit:  # --limit alone measures only the daemon
            print(f"\nconfigurations (each in a fresh process{', cold page cache' if args.cold else ''}):\n{table_header()}")
            outcomes = [run_and_print(variant, base, cold=args.cold) for variant in variants]
        if args.limit:
            print(f"\nthe daemon (`edge-assistant run`, scripted reply, Piper speaking) on the {DAEMON_QUESTION} "
                  f"question, cold page cache before every run, unlimited and inside cgroup v1 memory limits, "
                  f"{args.runs} runs each, medians (min-max){', ' + ' '.join(args.set) if args.set else ''}:", flush=True)
            print(daemon_limits(base, dict(common), args.limit, args.runs))
        if args.yardsticks:
            print(yardsticks(base, settings, EngineConfig(**common).threads or cores, outcomes[0], args.runs))
        print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
