"""openWakeWord's pretrained wake models: listed in the manifest, fetched by
``models download``, selected by name, and run by our wake stage.

The files are the real ones (the ``openwakeword_models`` fixture takes them from
the openwakeword 0.5.1 wheel on PyPI). A pretrained model that fires on Piper's
speech of its phrase and sleeps through everything else is the strongest check
that our streaming features are openWakeWord's: those models were trained on
openWakeWord's own feature pipeline, never on ours.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge_assistant import cli
from edge_assistant.audio.files import write_wav_atomic
from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.errors import ModelFileError, UsageError
from edge_assistant.models.download import BASE_URL_ENV
from edge_assistant.models.manifest import ModelFile, load_manifest, resolve_wake, select
from edge_assistant.wake.detector import DEFAULT_THRESHOLD, WakeWordDetector

from speech import everyday_audio, noise, phrase_at, tones

PRETRAINED = {"hey_jarvis": "hey jarvis", "alexa": "alexa", "hey_mycroft": "hey mycroft", "hey_rhasspy": "hey rhasspy"}


def wake_entries() -> list[ModelFile]:
    return [file for file in load_manifest() if file.role == "wake"]


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(openwakeword_models: Path) -> Iterator[str]:
    """A flat download mirror (EDGE_ASSISTANT_MODELS_BASE_URL) of the release files."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(openwakeword_models)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_manifest_lists_openwakewords_release_models() -> None:
    entries = wake_entries()
    assert {file.name for file in entries} == set(PRETRAINED)
    for file in entries:
        assert file.url == f"https://github.com/dscripka/openWakeWord/releases/download/v0.5.1/{file.filename}"
        assert file.filename == f"{file.name}_v0.1.onnx" and file.sha256


def test_models_download_only_wake_fetches_and_verifies_them(
    mirror: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped sizes and sha256s against the real bytes, through the CLI."""
    monkeypatch.setenv(BASE_URL_ENV, mirror)
    assert cli.main(["models", "download", "--only", "wake", "--dir", str(tmp_path)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [file.filename for file in wake_entries()] + [file.filename + ".sha256" for file in wake_entries()]
    )
    capsys.readouterr()
    assert cli.main(["models", "verify", "--only", "hey_jarvis,alexa", "--only", "hey_mycroft", "--dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["hey_jarvis_v0.1.onnx", "alexa_v0.1.onnx", "hey_mycroft_v0.1.onnx"]
    assert all(": ok: " in line for line in lines), lines


def test_download_only_an_unknown_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "download", "--only", "hey_siri"]) == 2
    error = capsys.readouterr().err
    assert "--only hey_siri: not a file name or role" in error and "hey_jarvis" in error and error.count("\n") == 1


def test_a_name_resolves_to_the_manifest_file(openwakeword_models: Path) -> None:
    for item in ("hey_jarvis", "hey_jarvis_v0.1"):
        assert resolve_wake(item, openwakeword_models) == openwakeword_models / "hey_jarvis_v0.1.onnx"


def test_a_missing_pretrained_model_says_how_to_fetch_just_it(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"models download --only alexa --dir .*\(854.2 kB\)"):
        resolve_wake("alexa", tmp_path)


def test_an_unknown_name_lists_the_pretrained_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="pretrained names are hey_jarvis, alexa, hey_mycroft, hey_rhasspy"):
        resolve_wake("hey_siri", tmp_path)


def test_own_models_and_paths_resolve_as_before(tmp_path: Path) -> None:
    (tmp_path / "hey_tessa.onnx").write_bytes(b"")
    assert resolve_wake("hey_tessa", tmp_path) == tmp_path / "hey_tessa.onnx"
    assert resolve_wake("~/elsewhere/x.onnx", tmp_path) == Path.home() / "elsewhere" / "x.onnx"


def test_select_keeps_manifest_order() -> None:
    chosen = select(load_manifest(), ["hey_rhasspy", "voice"])
    assert [file.name for file in chosen] == ["piper-en_us-joe-medium", "hey_rhasspy"]
    with pytest.raises(UsageError):
        select(load_manifest(), ["weights"])


CONDITIONS = [  # length scale, level, background: as for the trained model's tests
    (0.85, 0.5, lambda: noise(10.0, 0.002, seed=1)),
    (0.85, 0.3, lambda: noise(10.0, 0.02, seed=2)),
    (1.0, 0.5, lambda: tones(10.0, seed=3) * 0.05),
    (1.0, 0.05, lambda: noise(10.0, 0.0005, seed=4)),
    (1.2, 0.3, lambda: noise(10.0, 0.02, seed=7)),
    (1.2, 0.5, lambda: noise(10.0, 0.002, seed=8)),
]


@pytest.mark.parametrize(("length_scale", "level", "background"), CONDITIONS)
def test_hey_jarvis_hears_piper_say_it_once_at_its_default_threshold(
    openwakeword_models: Path, length_scale: float, level: float, background
) -> None:
    audio, end = phrase_at("hey jarvis", length_scale, level, background())
    detector = WakeWordDetector([resolve_wake("hey_jarvis", openwakeword_models)])
    assert detector.thresholds == [DEFAULT_THRESHOLD]  # release models carry no threshold
    detections = [d for i in range(0, len(audio), 480) for d in detector.process(audio[i : i + 480])]
    assert len(detections) == 1, (detections, detector.highest)
    assert -0.2 <= detections[0].end_sample / MODEL_SAMPLE_RATE - end <= 1.0


def test_each_model_wants_its_own_phrase(openwakeword_models: Path) -> None:
    """All four in one detector: each phrase wakes the model it belongs to."""
    detector = WakeWordDetector([resolve_wake(name, openwakeword_models) for name in PRETRAINED])
    heard = []
    for name, phrase in PRETRAINED.items():
        if name == "hey_rhasspy":  # the weakest of the four on this voice: see its own test
            continue
        audio, _ = phrase_at(phrase, 1.0, 0.5, noise(10.0, 0.002, seed=9))
        detector.reset()
        heard.append([d.name for d in detector.process(audio)])
    assert heard == [["hey_jarvis_v0.1"], ["alexa_v0.1"], ["hey_mycroft_v0.1"]]


def test_hey_rhasspy_hears_a_clear_take(openwakeword_models: Path) -> None:
    audio, _ = phrase_at("hey rhasspy", 1.0, 0.5, noise(10.0, 0.002, seed=9))
    detector = WakeWordDetector([resolve_wake("hey_rhasspy", openwakeword_models)])
    assert [d.name for d in detector.process(audio)] == ["hey_rhasspy_v0.1"]


def test_all_four_sleep_through_a_minute_of_other_speech_noise_and_music(openwakeword_models: Path) -> None:
    detector = WakeWordDetector([resolve_wake(name, openwakeword_models) for name in PRETRAINED])
    assert detector.process(everyday_audio()) == [], detector.highest


def test_wakeword_test_takes_a_name(openwakeword_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio, end = phrase_at("hey jarvis", 1.0, 0.5, noise(10.0, 0.003))
    wav = tmp_path / "call.wav"
    write_wav_atomic(wav, audio, MODEL_SAMPLE_RATE)
    code = cli.main(["wakeword", "test", "hey_jarvis", "--models-dir", str(openwakeword_models), "--input-file", str(wav)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "hey_jarvis_v0.1: threshold 0.50 (default)"
    assert lines[1].split()[2] == "hey_jarvis_v0.1" and abs(float(lines[1].split()[0]) - end) <= 1.0
    assert lines[-1].startswith("1 detection in ")


def test_a_configured_models_dir_with_a_tilde_is_the_home_directory(
    mirror: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(BASE_URL_ENV, mirror)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text('[models]\ndir = "~/models"\n')
    assert cli.main(["models", "download", "--only", "alexa", "--config", str(config)]) == 0
    assert (tmp_path / "home" / "models" / "alexa_v0.1.onnx").is_file()
    assert not (tmp_path / "~").exists()
