"""Deployment on a Raspberry Pi: scripts/provision_pi.sh and systemd/edge-assistant.service.

shellcheck and systemd-analyze must be installed (CI: apt-get install shellcheck
systemd). Without them these tests fail and say so: a skipped check would look
like a passed one.

The ``--prefix`` runs install the real package into a temporary virtual
environment with pip. They take about half a minute when pip already holds the
llama-cpp-python wheel (the test command's own ``pip install`` builds and caches it
for the same Python minor version); otherwise pip compiles it first (about 20
minutes on 2 cores).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "provision_pi.sh"
UNIT = ROOT / "systemd" / "edge-assistant.service"
SATELLITE_UNIT = ROOT / "systemd" / "edge-assistant-satellite.service"
UNIT_README = ROOT / "systemd" / "README.md"
MAX_EXPOSURE = 2.0


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; the deployment checks need it (apt-get install shellcheck systemd)")
    return path


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values in order, with systemd's rule that an empty
    assignment resets the list."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        values = current.setdefault(key.strip(), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return sections


def service_setting(key: str) -> str:
    values = parse_unit(UNIT.read_text())["Service"][key]
    assert len(values) == 1, f"{key} is set {len(values)} times"
    return values[0]


def provision(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=3600, env=os.environ.copy()
    )
    if check:
        assert result.returncode == 0, f"provision_pi.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def plan(output: str) -> dict[str, str]:
    """The paths the script prints before acting ("user", "venv", "config", ...)."""
    lines = re.findall(r"^ {8}(user|source|venv|config|models|unit) +(\S+)", output, re.M)
    return dict(lines)


def change_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("change ", "would "))]


# --- the script ----------------------------------------------------------------------


def test_shellcheck_passes() -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run([shellcheck, "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_script_is_strict_and_executable() -> None:
    text = SCRIPT.read_text()
    assert "\nset -euo pipefail\n" in text
    assert os.access(SCRIPT, os.X_OK)


def test_help_lists_every_option() -> None:
    result = provision("--help")
    for option in ("--dry-run", "--no-models", "--no-service", "--satellite", "--prefix DIR", "--uninstall", "--purge"):
        assert option in result.stdout


def test_unknown_option_is_one_line_and_exit_2() -> None:
    result = provision("--frobnicate", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--frobnicate" in result.stderr


def test_dry_run_changes_nothing() -> None:
    """A full dry run (real paths, service included) succeeds on the CI machine,
    prints what it would do, and creates none of what it names."""
    watched = [
        Path("/opt/edge-assistant"),
        Path("/etc/edge-assistant"),
        Path("/var/lib/edge-assistant"),
        Path("/etc/systemd/system/edge-assistant.service"),
        Path("/usr/local/bin/edge-assistant"),
    ]
    before = {path: path.exists() for path in watched}
    user_before = subprocess.run(["id", "edge-assistant"], capture_output=True).returncode
    result = provision("--dry-run")
    assert {path: path.exists() for path in watched} == before
    assert subprocess.run(["id", "edge-assistant"], capture_output=True).returncode == user_before
    assert "dry run" in result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("change ")]
    if not before[Path("/opt/edge-assistant")]:
        assert any("venv" in line for line in change_lines(result.stdout)), result.stdout


def test_dry_run_models_match_the_manifest(tmp_path: Path) -> None:
    """The script reads the shipped manifest itself (it runs before the venv
    exists); its count, size and projector names agree with edge_assistant.models."""
    from edge_assistant.models.manifest import SYSTEM_MODELS_DIR, audio_projector_path, load_manifest, select

    manifest = select(load_manifest(), [])  # what a plain `models download` fetches: no per-language voices
    result = provision("--dry-run", "--prefix", str(tmp_path))
    total_gb = sum(file.size for file in manifest) / 1e9
    assert f"download {len(manifest)} files, {total_gb:.1f} GB" in result.stdout, result.stdout
    models_dir = Path(plan(result.stdout)["models"])
    assert models_dir == tmp_path / SYSTEM_MODELS_DIR.relative_to("/")
    mmproj = models_dir / next(file.filename for file in manifest if file.role == "mmproj")
    assert f"models slim {mmproj} {audio_projector_path(mmproj)}" in result.stdout, result.stdout
    assert not any(tmp_path.iterdir()), "a dry run wrote into the prefix"


# --- the unit ------------------------------------------------------------------------


@pytest.mark.parametrize("unit", [UNIT, SATELLITE_UNIT], ids=["assistant", "satellite"])
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, unit: Path) -> None:
    """`systemd-analyze verify` insists that ExecStart's program exists and is
    executable, and /opt/edge-assistant does not exist on the CI machine. So verify a
    copy that differs only by a path prefix in front of that program, where a stub
    executable stands in; every other line is checked as installed."""
    analyze = require_tool("systemd-analyze")
    text = unit.read_text()
    (exec_start,) = parse_unit(text)["Service"]["ExecStart"]
    program = exec_start.split()[0]
    stub = tmp_path / program.lstrip("/")
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    copy = tmp_path / unit.name
    copy.write_text(text.replace(f"ExecStart={program}", f"ExecStart={stub}"))
    assert copy.read_text().replace(str(tmp_path), "") == text
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    # verify reports unknown keys and bad values as warnings with exit code 0.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@pytest.mark.parametrize("unit", [UNIT, SATELLITE_UNIT], ids=["assistant", "satellite"])
def test_unit_exposure_is_at_most_2(unit: Path) -> None:
    analyze = require_tool("systemd-analyze")
    # --threshold is in tenths: fail above 2.0.
    result = subprocess.run(
        [analyze, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(unit)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_is_offline_and_sees_only_sound_devices() -> None:
    """Enforced, not promised: three independent layers keep IP away, and the
    device list is the ALSA devices only."""
    service = parse_unit(UNIT.read_text())["Service"]
    assert service["PrivateNetwork"] == ["yes"]
    assert service["IPAddressDeny"] == ["any"]
    assert "IPAddressAllow" not in service
    # AF_UNIX is all that sd_notify and journald need.
    assert service["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert service["DevicePolicy"] == ["closed"]
    assert service["DeviceAllow"] == ["char-alsa rw"]
    assert service["User"] == ["edge-assistant"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["CapabilityBoundingSet"] == []


@pytest.mark.parametrize("unit", [UNIT, SATELLITE_UNIT], ids=["assistant", "satellite"])
def test_every_unit_setting_is_explained(unit: Path) -> None:
    """systemd/README.md gives the reason for each line of the unit."""
    readme = UNIT_README.read_text()
    for section in parse_unit(unit.read_text()).values():
        for key in section:
            assert f"`{key}=" in readme, f"systemd/README.md does not explain {key}="


def test_the_satellite_unit_reaches_the_lan_only_and_sees_only_sound_devices() -> None:
    service = parse_unit(SATELLITE_UNIT.read_text())["Service"]
    assert service["IPAddressDeny"] == ["any"]
    assert service["IPAddressAllow"] == ["localhost link-local 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7"]
    assert service["DevicePolicy"] == ["closed"] and service["DeviceAllow"] == ["char-alsa rw"]
    assert service["CapabilityBoundingSet"] == [] and service["NoNewPrivileges"] == ["yes"]
    assert service["ExecStart"] == [
        "/opt/edge-assistant/venv/bin/edge-assistant satellite --uri tcp://0.0.0.0:10700 --config /etc/edge-assistant/config.toml"
    ]
    from edge_assistant.cli import build_parser

    args = build_parser().parse_args(service["ExecStart"][0].split()[1:])
    assert args.command == "satellite" and args.uri == "tcp://0.0.0.0:10700"


def test_a_satellite_dry_run_installs_no_model_and_builds_nothing(tmp_path: Path) -> None:
    result = provision("--satellite", "--dry-run", "--prefix", str(tmp_path))
    assert "of the satellite" in result.stdout
    assert "download" not in result.stdout and "install_llama_cpp" not in result.stdout, result.stdout
    assert "--no-deps" in result.stdout and "wyoming" in result.stdout, result.stdout
    assert "models " not in plan(result.stdout)
    assert not any(tmp_path.iterdir()), "a dry run wrote into the prefix"


# --- the unit, the daemon and the script agree ---------------------------------------


def test_unit_agrees_with_the_script() -> None:
    paths = plan(provision("--dry-run", "--no-models").stdout)
    service = parse_unit(UNIT.read_text())["Service"]
    assert service["ExecStart"] == [f"{paths['venv']}/bin/edge-assistant run --config {paths['config']}"]
    assert service["User"] == [paths["user"]]
    assert "audio" in service["SupplementaryGroups"][0].split()
    state_dir = Path("/var/lib") / service["StateDirectory"][0]
    assert Path(paths["models"]).parent == state_dir
    assert f"-{paths['models']}" in service["ReadOnlyPaths"]
    assert Path(paths["unit"]).name == UNIT.name


def test_unit_agrees_with_the_daemon() -> None:
    from edge_assistant import errors
    from edge_assistant.models.manifest import SYSTEM_MODELS_DIR
    from edge_assistant.systemd import Notifier

    service = parse_unit(UNIT.read_text())["Service"]
    # The models live in the StateDirectory, where the daemon looks by default.
    assert SYSTEM_MODELS_DIR.parent == Path("/var/lib") / service["StateDirectory"][0]
    assert f"-{SYSTEM_MODELS_DIR}" in service["ReadOnlyPaths"]
    # Type=notify with a watchdog: the daemon pings at half of WatchdogSec.
    assert service["Type"] == ["notify"]
    watchdog_s = int(service["WatchdogSec"][0].removesuffix("s"))
    notifier = Notifier({"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": str(watchdog_s * 1_000_000)})
    try:
        assert notifier.enabled
        assert notifier.watchdog_interval == watchdog_s / 2
    finally:
        notifier.close()
    # Exit codes a restart cannot fix: bad configuration, missing model files.
    assert service["RestartPreventExitStatus"] == [f"{errors.UsageError.exit_code} {errors.ModelFileError.exit_code}"]


def test_cli_has_the_run_command_the_unit_starts() -> None:
    """ExecStart runs `edge-assistant run --config FILE`: the CLI must accept it."""
    from edge_assistant.cli import build_parser

    words = service_setting("ExecStart").split()
    assert words[1] == "run", words
    args = build_parser().parse_args(words[1:])
    assert args.command == "run"
    assert args.config == words[words.index("--config") + 1]


# --- Home Assistant: the network drop-in ----------------------------------------------


def stand_in_venv(prefix: Path) -> None:
    """The venv a --prefix run builds, standing in so these runs take seconds: this
    interpreter runs the package under test, and pip does nothing (the real
    install is the slow tests' below)."""
    bin_dir = prefix / "opt" / "edge-assistant" / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in {
        "python": f'exec {sys.executable} "$@"',
        "pip": "exit 0",
        "edge-assistant": f'exec {sys.executable} -m edge_assistant "$@"',
    }.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)


def exposure(unit_dir: Path, drop_in: Path | None) -> float:
    """`systemd-analyze security` of the unit as installed, with the drop-in beside it."""
    analyze = require_tool("systemd-analyze")
    installed = unit_dir / "etc" / "systemd" / "system"
    installed.mkdir(parents=True)
    shutil.copy(UNIT, installed)
    if drop_in is not None:
        (installed / f"{UNIT.name}.d").mkdir()
        shutil.copy(drop_in, installed / f"{UNIT.name}.d")
    result = subprocess.run(
        [analyze, "security", "--offline=true", f"--root={unit_dir}", UNIT.name], capture_output=True, text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


def test_home_assistant_opens_the_network_to_its_address_only(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    stand_in_venv(prefix)
    first = provision("--prefix", str(prefix), "--no-models")
    assert re.search(r"^ok +network: offline \(no Home Assistant", first.stdout, re.M), first.stdout
    config = Path(plan(first.stdout)["config"])
    drop_in = prefix / "etc/systemd/system/edge-assistant.service.d/network.conf"
    assert not drop_in.exists()

    offline_config = config.read_text()
    config.write_text(offline_config + '\n[home_assistant]\nurl = "http://127.0.0.1:8123"\ntoken_file = "/etc/edge-assistant/ha-token"\n')
    opened = provision("--prefix", str(prefix), "--no-models")
    assert "network: open to Home Assistant and the satellites only: 127.0.0.1" in "\n".join(change_lines(opened.stdout)), opened.stdout
    service = parse_unit(UNIT.read_text() + "\n" + drop_in.read_text())["Service"]
    assert service["PrivateNetwork"][-1] == "no"  # a boolean: the last assignment wins
    assert service["IPAddressDeny"] == ["any"]  # still: everything else stays shut
    assert service["IPAddressAllow"] == ["127.0.0.1"]
    assert service["RestrictAddressFamilies"] == ["AF_UNIX AF_INET"]
    assert "by address, not by port" in drop_in.read_text()
    assert "nothing to change" in provision("--prefix", str(prefix), "--no-models").stdout

    offline, with_home_assistant = exposure(tmp_path / "offline", None), exposure(tmp_path / "open", drop_in)
    assert offline < with_home_assistant <= MAX_EXPOSURE, (offline, with_home_assistant)

    config.write_text(offline_config)
    closed = provision("--prefix", str(prefix), "--no-models")
    assert "offline again" in "\n".join(change_lines(closed.stdout)), closed.stdout
    assert not drop_in.exists()
    provision("--prefix", str(prefix), "--uninstall")


def test_satellites_open_the_network_to_their_addresses_too(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    stand_in_venv(prefix)
    config = Path(plan(provision("--prefix", str(prefix), "--no-models").stdout)["config"])
    drop_ins = prefix / "etc/systemd/system/edge-assistant.service.d"
    (drop_ins).mkdir(parents=True)
    (drop_ins / "home-assistant.conf").write_text("[Service]\nPrivateNetwork=no\n")  # an older version's
    config.write_text(config.read_text() + (
        '\n[home_assistant]\nurl = "http://127.0.0.1:8123"\ntoken_file = "/etc/edge-assistant/ha-token"\n'
        '\n[[satellite]]\nname = "kitchen"\nuri = "tcp://127.0.0.2:10700"\n'
        '\n[[satellite]]\nname = "bedroom"\nuri = "tcp://[::1]:10700"\n'
    ))
    opened = provision("--prefix", str(prefix), "--no-models")
    assert not (drop_ins / "home-assistant.conf").exists(), opened.stdout
    text = (drop_ins / "network.conf").read_text()
    service = parse_unit(UNIT.read_text() + "\n" + text)["Service"]
    assert service["IPAddressAllow"] == ["127.0.0.1 127.0.0.2 ::1"]
    assert service["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert "tcp://127.0.0.2:10700" in text and "http://127.0.0.1:8123" in text
    assert "nothing to change" in provision("--prefix", str(prefix), "--no-models").stdout
    provision("--prefix", str(prefix), "--uninstall")


# --- real runs into a temporary prefix -----------------------------------------------


@pytest.mark.slow
def test_prefix_install_is_idempotent(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    first = provision("--prefix", str(prefix), "--no-models", "--no-service")
    assert change_lines(first.stdout), first.stdout
    paths = plan(first.stdout)
    assert paths["venv"] == f"{prefix}/opt/edge-assistant/venv"
    cli = Path(paths["venv"]) / "bin" / "edge-assistant"
    config = Path(paths["config"])

    # The config it wrote is valid for the installed daemon and points at the models.
    shown = subprocess.run([str(cli), "--config", str(config), "config", "show"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert f'dir = "{prefix}/var/lib/edge-assistant/models"' in shown.stdout

    second = provision("--prefix", str(prefix), "--no-models", "--no-service")
    assert not change_lines(second.stdout), second.stdout
    assert "nothing to change" in second.stdout
    dry = provision("--prefix", str(prefix), "--no-models", "--no-service", "--dry-run")
    assert "nothing to change" in dry.stdout, dry.stdout

    # Models present (sparse files of the manifest's sizes, the audio-only projector
    # named as manifest.audio_projector_path names it): nothing to download.
    from edge_assistant.models.manifest import audio_projector_path, load_manifest, select

    models_dir = Path(paths["models"])
    for file in select(load_manifest(), []):
        with open(file.path(models_dir), "wb") as f:
            f.truncate(file.size)
        if file.role == "mmproj":
            audio_projector_path(file.path(models_dir)).write_bytes(b"")
    with_models = provision("--prefix", str(prefix), "--no-service")
    assert "nothing to change" in with_models.stdout, with_models.stdout
    assert re.search(r"^ok +models: all files", with_models.stdout, re.M), with_models.stdout

    # An edited config is kept; the template goes beside it, once.
    edited = config.read_text() + "\n[engine]\nthreads = 3\n"
    config.write_text(edited)
    third = provision("--prefix", str(prefix), "--no-models", "--no-service")
    assert config.read_text() == edited
    assert (config.parent / "config.toml.new").is_file()
    assert "config.toml.new" in "\n".join(change_lines(third.stdout))
    fourth = provision("--prefix", str(prefix), "--no-models", "--no-service")
    assert "nothing to change" in fourth.stdout, fourth.stdout


@pytest.mark.slow
def test_prefix_uninstall_keeps_models_and_config_unless_purged(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    paths = plan(provision("--prefix", str(prefix), "--no-models", "--no-service").stdout)
    opt_dir = Path(paths["venv"]).parent
    config = Path(paths["config"])
    models_dir = Path(paths["models"])

    provision("--prefix", str(prefix), "--uninstall")
    assert not opt_dir.exists()
    assert config.is_file() and models_dir.is_dir()
    again = provision("--prefix", str(prefix), "--uninstall")
    assert "nothing to change" in again.stdout, again.stdout

    provision("--prefix", str(prefix), "--uninstall", "--purge")
    assert not config.parent.exists() and not models_dir.parent.exists()
    assert prefix.is_dir(), "the prefix itself is not the script's to remove"


@pytest.mark.slow
def test_a_satellite_prefix_install_has_no_llama_cpp_and_runs(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    first = provision("--satellite", "--prefix", str(prefix), "--no-service")
    venv = Path(plan(first.stdout)["venv"])
    assert subprocess.run([str(venv / "bin" / "python"), "-c", "import llama_cpp"], capture_output=True).returncode != 0
    shown = subprocess.run([str(venv / "bin" / "edge-assistant"), "satellite", "--uri", "tcp://0.0.0.0"],
                           capture_output=True, text=True)
    assert shown.returncode == 2 and "must be tcp://HOST:PORT" in shown.stderr, shown.stderr
    assert "nothing to change" in provision("--satellite", "--prefix", str(prefix), "--no-service").stdout
