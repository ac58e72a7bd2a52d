"""Configuration: defaults, search order, overrides and the errors users see."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_assistant.config import Config, load_config, parse_config_file
from edge_assistant.errors import UsageError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_fit_a_4gb_pi() -> None:
    config = Config()
    assert config.engine.kv_cache_type == "q8_0"
    assert config.engine.n_ubatch <= config.engine.n_batch
    assert config.engine.use_mmap


def test_file_values_override_defaults(tmp_path: Path) -> None:
    config = parse_config_file(
        write(tmp_path, '[engine]\nkv_cache_type = "q4_0"\nmax_tokens = 64\ntemperature = 0\n[audio]\nlong_audio = "keep_last"\n')
    )
    assert config.engine.kv_cache_type == "q4_0"
    assert config.engine.max_tokens == 64
    assert config.engine.temperature == 0.0 and isinstance(config.engine.temperature, float)
    assert config.audio.long_audio == "keep_last"
    assert config.source == str(tmp_path / "config.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[engine]\nkv_cache = 'q8_0'\n", "unknown key engine.kv_cache"),
        ("[enigne]\nn_ctx = 1\n", "unknown section [enigne]"),
        ("[engine]\nn_ctx = 'big'\n", "engine.n_ctx = 'big' is invalid: expected int"),
        ("[engine]\nuse_mmap = 1\n", "engine.use_mmap = 1 is invalid: expected bool"),
        ("[engine]\nkv_cache_type = 'q5_1'\n", "engine.kv_cache_type = 'q5_1' is invalid"),
        ("[audio]\nvad_aggressiveness = 7\n", "audio.vad_aggressiveness = 7 is invalid"),
        ("[endpoint]\nmin_level_dbfs = 3.0\n", "endpoint.min_level_dbfs = 3.0 is invalid: must be between -100 (no gate) and 0"),
        ("[endpoint]\nmin_level_dbfs = 'loud'\n", "endpoint.min_level_dbfs = 'loud' is invalid: expected float"),
        ("[engine\n", "invalid TOML"),
        ("engine = 3\n", "[engine] must be a table"),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as raised:
        parse_config_file(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_config().source in ("", "/etc/edge-assistant/config.toml")
    user_file = tmp_path / "edge-assistant" / "config.toml"
    user_file.parent.mkdir()
    user_file.write_text("[engine]\nmax_tokens = 12\n")
    assert load_config().engine.max_tokens == 12
    explicit = write(tmp_path, "[engine]\nmax_tokens = 34\n")
    assert load_config(explicit).engine.max_tokens == 34


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_shown_configuration_reads_back_identically(tmp_path: Path) -> None:
    config = Config()
    config.engine.system_prompt = 'Say "hi"\nthen stop.'
    shown = config.to_toml()
    again = parse_config_file(write(tmp_path, shown))
    again.source = ""
    assert again == config


# -- [[satellite]] (rooms) ----------------------------------------------------


def _config_text(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rooms.toml"
    path.write_text(text)
    return path


def test_satellites_are_read_with_their_rooms_and_areas(tmp_path: Path) -> None:
    path = _config_text(tmp_path, """
[input]
enabled = false

[[satellite]]
name = "kitchen"
uri = "tcp://192.168.1.31:10700"
area = "Kitchen"

[[satellite]]
name = "bedroom"
uri = "tcp://bedroom.lan:10700"
""")
    config = parse_config_file(path)
    assert [(item.name, item.address, item.area) for item in config.satellite] == [
        ("kitchen", ("192.168.1.31", 10700), "Kitchen"), ("bedroom", ("bedroom.lan", 10700), ""),
    ]
    assert not config.input.enabled
    assert parse_config_file(_config_text(tmp_path, config.to_toml().split("\n", 1)[1])).satellite == config.satellite


def test_without_satellites_nothing_changes(tmp_path: Path) -> None:
    assert parse_config_file(_config_text(tmp_path, "[input]\ndevice = \"\"\n")).satellite == []
    assert "[[satellite]]" not in Config().to_toml()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('name = "kitchen"', "uri is required"),
        ('uri = "tcp://10.0.0.2:10700"', "name is required"),
        ('name = "kitchen"\nuri = "http://10.0.0.2:10700"', "must be tcp://HOST:PORT"),
        ('name = "kitchen"\nuri = "tcp://10.0.0.2"', "must be tcp://HOST:PORT"),
        ('name = "kitchen"\nuri = "tcp://10.0.0.2:99999"', "must be tcp://HOST:PORT"),
        ('name = "the kitchen"\nuri = "tcp://10.0.0.2:10700"', "name must be letters"),
        ('name = "local"\nuri = "tcp://10.0.0.2:10700"', "taken (by the local room)"),
        ('name = "kitchen"\nuri = "tcp://10.0.0.2:10700"\nwake = "x"', "unknown key wake"),
        ('name = "kitchen"\nuri = "tcp://10.0.0.2:10700"\narea = "K;"', "area = 'K;' is invalid"),
    ],
)
def test_a_bad_satellite_is_one_line_naming_it(tmp_path: Path, table: str, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as caught:
        parse_config_file(_config_text(tmp_path, f"[[satellite]]\n{table}\n"))
    assert "\n" not in str(caught.value) and "[[satellite]] #1" in str(caught.value)


def test_two_satellites_cannot_share_a_room(tmp_path: Path) -> None:
    table = '[[satellite]]\nname = "kitchen"\nuri = "tcp://10.0.0.2:10700"\n'
    with pytest.raises(UsageError, match="#2 .*taken \\(by another satellite\\)"):
        parse_config_file(_config_text(tmp_path, table * 2))


def test_local_audio_off_needs_a_satellite(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="input.enabled = False is invalid: must be true unless at least one"):
        parse_config_file(_config_text(tmp_path, "[input]\nenabled = false\n"))
