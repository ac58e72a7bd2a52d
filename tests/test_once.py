"""``edge-assistant --once``: the real pipeline on the Gemma 4 twin and the real
Piper voice, its playback on a (fake) sound card, and every bad input a user can
hand it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from edge_assistant.audio import files as audio_files, playback as playback_module
from edge_assistant.llm import engine
from edge_assistant.audio.files import write_wav_atomic
from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.cli import main
from edge_assistant.llm.audio_turn import TurnReply, TurnStats

from fake_sounddevice import fake_output
from speech import VOICE_PATH, concat, dbfs, noise, silence, speak, television, voiced_db

QUESTION = "What is the tallest mountain in Europe?"


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "question.wav"
    clip = concat(silence(0.8), speak(QUESTION).samples + noise(speak(QUESTION).seconds, 0.002), silence(1.0))
    write_wav_atomic(path, clip.samples, MODEL_SAMPLE_RATE)
    return path


@pytest.fixture
def model_args(twin) -> list[str]:
    return ["--model", str(twin.model), "--mmproj", str(twin.mmproj), "--voice", str(VOICE_PATH), "--seed", "7"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The command exactly as a user runs it, in its own process."""
    env = {**os.environ, "XDG_CONFIG_HOME": "/nonexistent"}
    return subprocess.run(
        [sys.executable, "-m", "edge_assistant", *args], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.mark.slow
def test_a_scripted_reply_comes_out_whole_and_spoken(
    tmp_path: Path, question_wav: Path, model_args: list[str], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The twin's own words are noise that differs per CPU; with the reply
    scripted, --once must return exactly it, end the turn on the model's own
    end-of-turn token, and speak all of it."""
    from edge_assistant.tts import PiperSpeech

    from scripted import scripted_engine_class

    reply = "Mount Elbrus is the tallest mountain in Europe. It stands in the Caucasus."
    monkeypatch.setattr(engine, "GemmaEngine", scripted_engine_class(reply))
    out = tmp_path / "reply.wav"
    assert main(["--once", str(question_wav), *model_args, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["reply"] == reply
    assert report["stopped_by"] == "end_of_turn"
    voice = PiperSpeech(VOICE_PATH)
    alone = len(voice.synthesize(reply)) / voice.sample_rate
    assert abs(report["spoken_seconds"] - alone) < 0.2 * alone  # both sentences, once
    assert abs(soundfile.info(out).duration - report["spoken_seconds"]) < 0.01


@pytest.mark.slow
def test_question_answered_and_spoken_to_wav(tmp_path: Path, question_wav: Path, model_args: list[str]) -> None:
    out = tmp_path / "reply.wav"
    result = run_cli("--once", str(question_wav), *model_args, "--out", str(out), "--json", "--max-tokens", "48")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # llama.cpp's load chatter stays out of the user's terminal
    report = json.loads(result.stdout)

    assert report["reply"].strip()
    speech_seconds = speak(QUESTION).seconds
    assert speech_seconds <= report["audio_seconds"] <= speech_seconds + 0.6  # trimmed, with padding
    tokens = report["tokens"]
    assert abs(tokens["audio"] - 25 * report["audio_seconds"]) <= 3
    assert 1 <= tokens["generated"] <= 48
    assert tokens["prompt"] > 5
    # prompt text + audio + generated + the closing "<turn|>\n" kept for the next turn
    assert tokens["evaluated_this_turn"] == tokens["prompt"] + tokens["audio"] + tokens["generated"] + 2
    timings = report["timings_ms"]
    for key in ("load", "audio_prep", "encode", "prefill", "first_token", "decode", "tts_first_audio", "total"):
        assert isinstance(timings[key], float) and timings[key] >= 0, key
    assert timings["first_token"] >= timings["prefill"]
    assert timings["total"] >= timings["load"] + timings["first_token"]
    assert report["kv_cache_type"] == "q8_0"
    assert report["model"] == model_args[1]

    info = soundfile.info(out)
    assert info.samplerate == 22050 and info.channels == 1
    assert abs(info.duration - report["spoken_seconds"]) < 0.01
    samples, _ = soundfile.read(out)
    assert np.abs(samples).max() > 0.05  # speech, not silence


@pytest.mark.slow
def test_a_television_under_the_question_is_trimmed_away(tmp_path: Path, model_args: list[str]) -> None:
    """A news reader 15 dB under the question, for 2 s before it and 3 s after:
    webrtcvad hears a voice in all of it, the speaker's level keeps only the
    question (with its padding) for the model."""
    spoken = speak(QUESTION).samples
    spoken = spoken * dbfs(-20.0 - voiced_db(spoken))
    length = int((2.0 + 3.0) * MODEL_SAMPLE_RATE) + len(spoken)
    clip = television(length / MODEL_SAMPLE_RATE, -35.0, seed=2)[:length]
    clip[2 * MODEL_SAMPLE_RATE : 2 * MODEL_SAMPLE_RATE + len(spoken)] += spoken
    path = tmp_path / "television.wav"
    write_wav_atomic(path, clip, MODEL_SAMPLE_RATE)
    result = run_cli("--once", str(path), *model_args, "--no-speak", "--json", "--max-tokens", "4")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    speech_seconds = speak(QUESTION).seconds
    assert speech_seconds - 0.15 <= report["audio_seconds"] <= speech_seconds + 0.8  # not the 5 s of television
    assert abs(report["tokens"]["audio"] - 25 * report["audio_seconds"]) <= 3


@pytest.mark.slow
def test_plain_output_is_the_reply_only(question_wav: Path, model_args: list[str]) -> None:
    result = run_cli("--once", str(question_wav), *model_args, "--no-speak", "--max-tokens", "16", "--kv-cache-type", "q4_0")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.strip().splitlines()) <= 1
    assert not result.stdout.lstrip().startswith("{")


class ScriptedGemma:
    """Stands in for GemmaEngine: a fixed three-sentence reply, streamed in pieces."""

    REPLY = "Mount Elbrus is the tallest. It stands in the Caucasus. Its summit is almost six kilometres high."
    threads = 1

    def __init__(self, model_path: Path, mmproj_path: Path, settings: object, tools: object = (),
                 prompt_state_dir: object = None) -> None:
        pass

    def __enter__(self) -> ScriptedGemma:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass

    def respond(self, samples: np.ndarray, on_text=None, tools=None, interruption=None) -> TurnReply:  # noqa: ANN001
        for start in range(0, len(self.REPLY), 4):
            on_text(self.REPLY[start : start + 4])
        return TurnReply(self.REPLY, TurnStats(generated_tokens=24, stopped_by="end_of_turn"))


def test_spoken_reply_plays_through_one_stream_to_its_end(
    tmp_path: Path, question_wav: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = fake_output()  # takes the voice's 22,050 Hz mono: what is written is played untouched
    monkeypatch.setattr(playback_module, "import_sounddevice", lambda: fake)
    monkeypatch.setattr(engine, "GemmaEngine", ScriptedGemma)
    written: list[np.ndarray] = []
    queue_write = playback_module.DevicePlayback.write

    def record_write(self: playback_module.DevicePlayback, samples: np.ndarray, sample_rate: int) -> None:
        written.append(samples)
        queue_write(self, samples, sample_rate)

    monkeypatch.setattr(playback_module.DevicePlayback, "write", record_write)
    unused = tmp_path / "unused.gguf"  # ScriptedGemma never opens the model files
    unused.touch()
    config = tmp_path / "config.toml"
    config.write_text("")
    argv = ["--once", str(question_wav), "--config", str(config), "--json"]
    code = main([*argv, "--model", str(unused), "--mmproj", str(unused), "--voice", str(VOICE_PATH)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)

    [stream] = fake.streams  # one output stream for all three sentences
    assert len(written) == 3 and stream.closed
    sent = np.concatenate(written)
    assert abs(len(sent) / 22050 - report["spoken_seconds"]) < 0.01
    played = stream.output()[:, 0]
    # Every sample written, in order, reached the device before it was closed
    # (silence between sentences aside: synthesis may trail the playback).
    np.testing.assert_array_equal(played[played != 0], sent[sent != 0])


def bad_audio_files(directory: Path) -> dict[str, Path]:
    files = {}
    files["missing"] = directory / "missing.wav"
    files["directory"] = directory
    files["empty"] = directory / "empty.wav"
    files["empty"].touch()
    files["corrupt"] = directory / "corrupt.wav"
    files["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    files["zero-length"] = directory / "zero.wav"
    soundfile.write(files["zero-length"], np.zeros(0, dtype=np.float32), 16000)
    whole = directory / "whole.wav"
    soundfile.write(whole, speak(QUESTION).samples, 16000)
    files["truncated"] = directory / "truncated.wav"
    files["truncated"].write_bytes(whole.read_bytes()[:3000])
    files["unreadable"] = directory / "unreadable.wav"
    files["unreadable"].write_bytes(whole.read_bytes())
    files["unreadable"].chmod(0)
    return files


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "corrupt", "zero-length", "truncated", "unreadable"])
def test_bad_audio_exit_2_one_line_and_out_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    path = bad_audio_files(tmp_path)[kind]
    if kind == "unreadable" and os.geteuid() == 0:
        # Root reads files whatever their mode: answer the permission check as a user's would.
        real_access = os.access
        monkeypatch.setattr(audio_files.os, "access", lambda p, mode: False if Path(p) == path else real_access(p, mode))
    out = tmp_path / "keep.wav"
    out.write_bytes(b"the user's earlier reply")
    # Deliberately bogus model paths: bad audio must be refused before models load.
    code = main(["--once", str(path), "--model", "/nonexistent.gguf", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("edge-assistant: ")
    assert "Traceback" not in captured.err
    assert out.read_bytes() == b"the user's earlier reply"


@pytest.mark.parametrize("clip", [silence(3.0), noise(3.0, 0.003)], ids=["silence", "faint-noise"])
def test_no_speech_exit_4_without_calling_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], clip: np.ndarray
) -> None:
    path = tmp_path / "quiet.wav"
    write_wav_atomic(path, clip, 16000)
    code = main(["--once", str(path), "--model", "/nonexistent.gguf", "--out", str(tmp_path / "r.wav")])
    err = capsys.readouterr().err
    assert code == 4
    assert "no speech" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.wav").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--once", "x.wav", "--max-tokens", "0"],
        ["--once", "x.wav", "--out", "a.wav", "--no-speak"],
        ["--once", "x.wav", "--kv-cache-type", "q3"],
        ["--once", "x.wav", "--bogus"],
        ["--once", "x.wav", "--config", "/nonexistent/config.toml"],
        ["--once", "x.wav", "--out", "/nonexistent-dir/reply.wav"],
        [],
    ],
    ids=["max-tokens", "out-and-no-speak", "kv-type", "unknown-flag", "missing-config", "out-dir", "nothing-to-do"],
)
def test_bad_options_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    wav = tmp_path / "x.wav"
    write_wav_atomic(wav, speak(QUESTION).samples, 16000)
    argv = [str(wav) if arg == "x.wav" else arg for arg in argv]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as raised:
        raise SystemExit(main(argv))
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_config_value_names_key_and_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[engine]\nn_ctx = 'large'\n")
    assert main(["--once", "x.wav", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "engine.n_ctx" in err and str(config) in err


def test_missing_model_exit_3_names_file_and_fetch_command(
    tmp_path: Path, question_wav: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--once", str(question_wav), "--models-dir", str(tmp_path), "--no-speak"])
    err = capsys.readouterr().err
    assert code == 3
    assert str(tmp_path) in err and "edge-assistant models download" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["not-gguf", "truncated"])
def test_invalid_model_exit_3(tmp_path: Path, question_wav: Path, twin, damage: str) -> None:
    bad = tmp_path / "model.gguf"
    if damage == "not-gguf":
        bad.write_text("<html>404 Not Found</html>")
    else:
        with twin.model.open("rb") as source:
            bad.write_bytes(source.read(2_000_000))
    result = run_cli("--once", str(question_wav), "--model", str(bad), "--mmproj", str(twin.mmproj), "--no-speak")
    assert result.returncode == 3, result.stderr
    assert str(bad) in result.stderr and "edge-assistant models download" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_projector_that_is_not_gguf_exit_3(tmp_path: Path, question_wav: Path, twin) -> None:
    bad = tmp_path / "mmproj.gguf"
    bad.write_bytes(b"\x00" * 1000)
    result = run_cli("--once", str(question_wav), "--model", str(twin.model), "--mmproj", str(bad), "--no-speak")
    assert result.returncode == 3 and str(bad) in result.stderr


def test_config_show_prints_effective_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[engine]\nmax_tokens = 99\n")
    assert main(["config", "show", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "max_tokens = 99" in out and str(config) in out
