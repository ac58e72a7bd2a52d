"""The phone: scripts/provision_termux.sh on a fake Termux, and shellcheck on it and
on scripts/check_aarch64.sh.

The fake Termux is a temporary $PREFIX and $HOME with stand-ins first on PATH: pkg
(copies the package's commands into $PREFIX/bin), proot-distro (keeps userlands as
plain directories under $PREFIX/var/lib/proot-distro/containers/NAME/rootfs and
acts out the few commands the script runs inside one: apt-get, venv, pip, the
edge-assistant CLI), termux-microphone-record (answers as the Termux:API app does,
or lacks the permission, or never answers), pulseaudio, pactl and the wake lock.
Every stand-in logs its command line, so a test can tell what a run did. Memory
comes from a fake /proc/meminfo (EDGE_ASSISTANT_MEMINFO). No network, no models:
the stand-in "download" writes sparse files of the manifest's sizes.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "provision_termux.sh"
CHECK_AARCH64 = ROOT / "scripts" / "check_aarch64.sh"
MANIFEST = ROOT / "edge_assistant" / "manifest.toml"

GIB_KB = 1024 * 1024
PHONE_8GB_KB = int(7.4 * GIB_KB)  # what an "8 GB" phone reports as MemTotal
PHONE_6GB_KB = int(5.5 * GIB_KB)
PHONE_4GB_KB = int(3.7 * GIB_KB)

GUEST_CLI = "/opt/edge-assistant/venv/bin/edge-assistant"
GUEST_CONFIG = "/etc/edge-assistant/config.toml"
GUEST_MODELS = "/var/lib/edge-assistant/models"

PROOT_DISTRO = textwrap.dedent(
    '''\
    #!{python}
    """proot-distro stand-in: userlands are directories; login acts out a few commands."""
    import os, shutil, sys, tomllib
    from pathlib import Path

    def log(words):
        with open(os.environ["FAKE_LOG"], "a") as f:
            f.write(" ".join(["proot-distro", *words]) + "\\n")

    args = sys.argv[1:]
    log(args)
    base = Path(os.environ["PREFIX"]) / "var/lib/proot-distro/containers"

    def executable(path, text="#!/bin/sh\\nexit 0\\n"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)

    if args[0] == "install":
        name = args[args.index("--override-alias") + 1] if "--override-alias" in args else args[-1]
        root = base / name / "rootfs"
        (root / "etc").mkdir(parents=True)
        (root / "etc/os-release").write_text('ID=debian\\n')
        (root / "var/lib/dpkg").mkdir(parents=True)
        (root / "var/lib/dpkg/status").write_text("Package: base-files\\nStatus: install ok installed\\n\\n")
        executable(root / "usr/bin/python3")
        sys.exit(0)
    if args[0] == "remove":
        shutil.rmtree(base / args[1])
        sys.exit(0)
    assert args[0] == "login", args
    name, options, guest = args[1], args[2:args.index("--")], args[args.index("--") + 1:]
    root = base / name / "rootfs"
    if not root.is_dir():
        print(f"container {{name}} is not installed", file=sys.stderr)
        sys.exit(1)
    binds = {{}}
    for index, option in enumerate(options):
        if option == "--bind":
            source, target = options[index + 1].split(":")
            assert Path(source).is_dir(), f"bind source {{source}} does not exist"
            binds[target] = source

    def host(path):
        for target, source in binds.items():
            if path == target or path.startswith(target + "/"):
                return Path(source + path[len(target):])
        return root / path.lstrip("/")

    if guest[0] == "env":
        guest = guest[1:]
        while "=" in guest[0]:
            guest = guest[1:]
    program = guest[0]
    if program == "apt-get":
        if "install" in guest:
            wanted = [word for word in guest[guest.index("install") + 1:] if not word.startswith("-")]
            with open(root / "var/lib/dpkg/status", "a") as f:
                for package in wanted:
                    f.write(f"Package: {{package}}\\nStatus: install ok installed\\n\\n")
    elif program == "python3" and guest[1:3] == ["-m", "venv"]:
        executable(host(guest[3]) / "bin/python")
        executable(host(guest[3]) / "bin/pip")
    elif program == "bash" and guest[1].endswith("/scripts/install_llama_cpp.sh"):
        assert host(guest[1]).is_file(), "install_llama_cpp.sh was not copied into the userland"
        assert list(host(guest[1]).parent.parent.glob("patches/*.patch")), "the llama.cpp patch was not copied"
        assert host(guest[2]).is_file(), "install_llama_cpp.sh: no such python"
    elif program.endswith("/bin/pip"):
        assert (host(guest[-1]) / "pyproject.toml").is_file(), "pip install: no source"
        executable(Path(str(host(program))[: -len("pip")] + "edge-assistant"))
    elif program.endswith("/bin/python"):
        assert host(guest[1]).is_file(), "no such script"
    elif program.endswith("/bin/edge-assistant"):
        assert host(program).is_file(), "edge-assistant is not installed"
        if "models" in guest and guest[guest.index("models") + 1] == "download":
            folder = host(guest[guest.index("--dir") + 1])
            for file in tomllib.loads(Path(os.environ["FAKE_MANIFEST"]).read_text())["file"]:
                with open(folder / file["filename"], "wb") as f:
                    f.truncate(file["size"])
        elif "models" in guest and guest[guest.index("models") + 1] == "slim":
            host(guest[-1]).write_bytes(b"slim")
        elif guest[-2:] == ["config", "show"] and os.environ.get("FAKE_CONFIG_ERROR"):
            print("edge-assistant: " + os.environ["FAKE_CONFIG_ERROR"], file=sys.stderr)
            sys.exit(2)
    else:
        print(f"proot-distro stand-in: cannot act out {{guest}}", file=sys.stderr)
        sys.exit(127)
    '''
)

PKG = textwrap.dedent(
    """\
    #!/bin/bash
    # pkg stand-in: "pkg install -y NAME..." copies NAME's commands into $PREFIX/bin.
    echo "pkg $*" >>"$FAKE_LOG"
    [[ "$1" == install ]] || exit 1
    shift
    for name in "$@"; do
        [[ "$name" == -* ]] && continue
        cp "$FAKE_PACKAGES/$name"/* "$PREFIX/bin/" || exit 1
    done
    """
)

# Answers as termux-api's MicRecorderAPI and TermuxApiPermissionActivity do.
MICROPHONE = textwrap.dedent(
    """\
    #!/bin/bash
    echo "termux-microphone-record $*" >>"$FAKE_LOG"
    case "${FAKE_API:-ok}" in
        no-app) exec sleep 60 ;;
        no-permission)
            [[ "$1" == -i ]] && { echo '{"isRecording": false}'; exit 0; }
            echo '{"error":"Please grant the following permission to use this command: android.permission.RECORD_AUDIO"}'
            ;;
        ok)
            case "$1" in
                -i) echo '{"isRecording": false}' ;;
                -q) echo "Recording finished" ;;
                -f) echo "Recording started: $2"; : >"$2" ;;
            esac
            ;;
    esac
    """
)

LOGGING_STUB = '#!/bin/bash\necho "{name} $*" >>"$FAKE_LOG"\n{body}'


def write_executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class FakeTermux:
    def __init__(self, tmp_path: Path, mem_kb: int = PHONE_8GB_KB, api: str = "ok") -> None:
        self.root = tmp_path
        self.prefix = tmp_path / "usr"
        self.home = tmp_path / "home"
        self.log = tmp_path / "calls.log"
        self.meminfo = tmp_path / "meminfo"
        for folder in (self.prefix / "bin", self.prefix / "tmp", self.home):
            folder.mkdir(parents=True)
        self.log.touch()
        # Termux's own shells, which the written commands name in their #! lines.
        for shell in ("bash", "sh"):
            (self.prefix / "bin" / shell).symlink_to(shutil.which(shell))
        self.set_memory(mem_kb)
        self.api = api
        stubs = tmp_path / "stubs"
        write_executable(stubs / "pkg", PKG)
        packages = tmp_path / "packages"
        write_executable(packages / "proot-distro" / "proot-distro", PROOT_DISTRO.format(python=sys.executable))
        write_executable(packages / "termux-api" / "termux-microphone-record", MICROPHONE)
        for name in ("termux-wake-lock", "termux-wake-unlock"):
            write_executable(packages / "termux-api" / name, LOGGING_STUB.format(name=name, body=""))
        write_executable(
            packages / "pulseaudio" / "pulseaudio",
            LOGGING_STUB.format(name="pulseaudio", body='[[ "$1" == --check ]] && exit 1\nexit 0\n'),
        )
        write_executable(
            packages / "pulseaudio" / "pactl",
            LOGGING_STUB.format(name="pactl", body='[[ "$1" == list ]] && printf "0\\tmodule-aaudio-sink\\t\\n"\nexit 0\n'),
        )
        self.stubs = stubs
        self.packages = packages

    def set_memory(self, mem_kb: int) -> None:
        self.meminfo.write_text(f"MemTotal:       {mem_kb} kB\nMemFree:        {mem_kb // 2} kB\n")

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("EDGE_ASSISTANT_", "PIP_", "VIRTUAL_ENV", "PYTHON"))
        }
        env.update(
            PREFIX=str(self.prefix),
            HOME=str(self.home),
            TMPDIR=str(self.prefix / "tmp"),
            PATH=f"{self.prefix / 'bin'}:{self.stubs}:{os.environ['PATH']}",
            FAKE_LOG=str(self.log),
            FAKE_PACKAGES=str(self.packages),
            FAKE_MANIFEST=str(MANIFEST),
            FAKE_API=self.api,
            EDGE_ASSISTANT_MEMINFO=str(self.meminfo),
            EDGE_ASSISTANT_API_TIMEOUT="2",
        )
        return env

    def run(self, *args: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
        env = self.env()
        env.update(extra)
        result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)
        if check:
            assert result.returncode == 0, f"provision_termux.sh {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def calls(self) -> list[str]:
        return [line.rstrip() for line in self.log.read_text().splitlines()]

    def calls_since(self, count: int) -> list[str]:
        return self.calls()[count:]

    @property
    def rootfs(self) -> Path:
        return self.prefix / "var/lib/proot-distro/containers/debian/rootfs"

    @property
    def models(self) -> Path:
        return self.home / ".local/share/edge-assistant/models"

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every path under the fake Termux with its size and mode (the log excluded)."""
        return {
            str(path.relative_to(self.root)): (path.lstat().st_size if path.is_file() else 0, path.lstat().st_mode)
            for path in sorted(self.root.rglob("*"))
            if path != self.log
        }


def change_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("change ", "would "))]


def modifying(calls: list[str]) -> list[str]:
    """Calls that change something: everything but the probes and the config check."""
    harmless = ("termux-microphone-record", " config show")
    return [call for call in calls if not call.startswith(harmless) and not call.endswith(" config show")]


@pytest.fixture
def termux(tmp_path: Path) -> FakeTermux:
    return FakeTermux(tmp_path)


def require_shellcheck() -> str:
    path = shutil.which("shellcheck")
    if path is None:
        pytest.skip("shellcheck is not installed (scripts/test.sh installs it)")
    return path


# --- the scripts ---------------------------------------------------------------------


@pytest.mark.parametrize("script", [SCRIPT, CHECK_AARCH64], ids=lambda path: path.name)
def test_shellcheck_passes(script: Path) -> None:
    shellcheck = require_shellcheck()
    result = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", [SCRIPT, CHECK_AARCH64], ids=lambda path: path.name)
def test_script_is_strict_and_executable(script: Path) -> None:
    assert "\nset -euo pipefail\n" in script.read_text()
    assert os.access(script, os.X_OK)


def test_help_lists_every_option(termux: FakeTermux) -> None:
    result = termux.run("--help")
    for option in ("--dry-run", "--no-models", "--distro NAME", "--force", "--uninstall", "--purge"):
        assert option in result.stdout


def test_unknown_option_is_one_line_and_exit_2(termux: FakeTermux) -> None:
    result = termux.run("--frobnicate", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--frobnicate" in result.stderr


def test_outside_termux_says_so_in_one_line(termux: FakeTermux) -> None:
    env = termux.env()
    del env["PREFIX"]
    result = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "Termux" in result.stderr, result.stderr


# --- dry run and a full install on the fake Termux -----------------------------------


def test_dry_run_on_a_fresh_termux_changes_nothing(termux: FakeTermux) -> None:
    before = termux.snapshot()
    result = termux.run("--dry-run")
    assert termux.snapshot() == before
    assert termux.calls() == [], "a dry run ran commands that change things"
    assert "dry run" in result.stdout
    would = "\n".join(change_lines(result.stdout))
    assert not [line for line in result.stdout.splitlines() if line.startswith("change ")]
    for step in ("termux packages: install pulseaudio proot-distro termux-api", "userland: install Debian",
                 "venv: create", "config: write", "models: download", "start command", "boot entry"):
        assert step in would, f"{step!r} missing from:\n{result.stdout}"
    # Every command it would run is printed.
    assert "$ pkg install -y pulseaudio proot-distro termux-api" in result.stdout
    assert "$ proot-distro install debian" in result.stdout
    assert re.search(r"\$ proot-distro login debian --bind \S+:/var/lib/edge-assistant/models -- env "
                     r"CMAKE_ARGS=-DGGML_NATIVE=ON", result.stdout), result.stdout


def test_install_is_idempotent_and_writes_a_pulseaudio_config(termux: FakeTermux) -> None:
    first = termux.run()
    assert change_lines(first.stdout), first.stdout
    calls = termux.calls()
    assert "pkg install -y pulseaudio proot-distro termux-api" in calls
    assert "proot-distro install debian" in calls
    apt = next(call for call in calls if "apt-get install" in call)
    for package in ("python3-venv", "build-essential", "cmake", "libportaudio2", "libasound2-plugins"):
        assert package in apt.split()
    assert any("CMAKE_ARGS=-DGGML_NATIVE=ON" in call and "/bin/pip install" in call for call in calls)
    assert any(f"{GUEST_CLI} --config {GUEST_CONFIG} models download --dir {GUEST_MODELS}" in call for call in calls)
    # The models live on the Termux side (bound into the userland), with the audio-only projector.
    from edge_assistant.models.manifest import audio_projector_path, load_manifest, select

    for file in select(load_manifest(), []):
        assert (termux.models / file.filename).stat().st_size == file.size
        if file.role == "mmproj":
            assert audio_projector_path(termux.models / file.filename).is_file()

    # The configuration is valid for edge-assistant itself and points at PulseAudio.
    from edge_assistant.config import load_config

    config_file = termux.rootfs / GUEST_CONFIG.lstrip("/")
    config = load_config(config_file)
    assert config.input.device == "pulse" and config.tts.output_device == "pulse"
    assert str(config.models.dir) == GUEST_MODELS

    count = len(termux.calls())
    second = termux.run()
    assert not change_lines(second.stdout), second.stdout
    assert "nothing to change" in second.stdout
    assert modifying(termux.calls_since(count)) == [], termux.calls_since(count)
    dry = termux.run("--dry-run")
    assert "nothing to change" in dry.stdout, dry.stdout

    # An edited config is kept; this version's template goes beside it, once.
    edited = config_file.read_text() + "\n[engine]\nthreads = 4\n"
    config_file.write_text(edited)
    third = termux.run()
    assert config_file.read_text() == edited
    assert (config_file.parent / "config.toml.new").is_file()
    assert "config.toml.new" in "\n".join(change_lines(third.stdout))
    assert "nothing to change" in termux.run().stdout


def test_a_source_change_reinstalls_only_the_package(termux: FakeTermux) -> None:
    termux.run()
    stamp = termux.rootfs / "opt/edge-assistant/installed-source.sha256"
    stamp.write_text("an older checkout\n")
    count = len(termux.calls())
    again = termux.run()
    assert [line.split(":")[0] for line in change_lines(again.stdout)] == ["change  venv"], again.stdout
    assert [call for call in modifying(termux.calls_since(count)) if "/bin/pip install" in call]
    assert not [call for call in termux.calls_since(count) if "apt-get" in call or "models download" in call]


def test_no_models_skips_the_download(termux: FakeTermux) -> None:
    result = termux.run("--no-models")
    assert "models: skipped (--no-models)" in result.stdout
    assert not [call for call in termux.calls() if "models download" in call]


def test_the_start_script_runs_the_daemon_on_pulseaudio(termux: FakeTermux) -> None:
    termux.run()
    start = termux.prefix / "bin/edge-assistant-start"
    count = len(termux.calls())
    result = subprocess.run([str(start)], capture_output=True, text=True, env=termux.env(), timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = termux.calls_since(count)
    assert calls[0] == "termux-wake-lock"
    pulse = next(call for call in calls if call.startswith("pulseaudio --start"))
    assert "--exit-idle-time=-1" in pulse and "module-sles-source" in pulse and "module-native-protocol-tcp" in pulse
    assert "pactl set-default-source OpenSL_ES_source" in calls
    assert calls[-1] == (
        f"proot-distro login debian --bind {termux.models}:{GUEST_MODELS} -- "
        f"env PULSE_SERVER=127.0.0.1 {GUEST_CLI} run --config {GUEST_CONFIG}"
    )

    count = len(termux.calls())
    stopped = subprocess.run([str(termux.prefix / "bin/edge-assistant-stop")], capture_output=True, text=True,
                             env=termux.env(), timeout=60)
    assert stopped.returncode == 0 and "not running" in stopped.stdout, stopped.stdout + stopped.stderr
    assert termux.calls_since(count) == ["termux-wake-unlock"]

    boot = termux.home / ".termux/boot/edge-assistant"
    assert os.access(boot, os.X_OK)
    assert f'exec "{start}" --background' in boot.read_text()


def test_the_written_commands_pass_shellcheck(termux: FakeTermux) -> None:
    shellcheck = require_shellcheck()
    termux.run("--no-models")
    written = [termux.prefix / "bin" / name for name in ("edge-assistant-start", "edge-assistant-stop", "edge-assistant")]
    written.append(termux.home / ".termux/boot/edge-assistant")
    result = subprocess.run([shellcheck, "--severity=style", *map(str, written)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_config_the_installed_version_rejects_stops_the_run(termux: FakeTermux) -> None:
    termux.run("--no-models")
    result = termux.run("--no-models", check=False, FAKE_CONFIG_ERROR="unknown key input.devise in config.toml")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "unknown key input.devise" in result.stderr, result.stderr


# --- uninstall -----------------------------------------------------------------------


def test_uninstall_keeps_the_models_unless_purged(termux: FakeTermux) -> None:
    termux.run()
    models = sorted(path.name for path in termux.models.iterdir())
    assert models

    result = termux.run("--uninstall")
    assert "proot-distro remove debian" in termux.calls()
    assert not termux.rootfs.exists()
    for name in ("edge-assistant-start", "edge-assistant-stop", "edge-assistant"):
        assert not (termux.prefix / "bin" / name).exists()
    assert not (termux.home / ".termux/boot/edge-assistant").exists()
    assert sorted(path.name for path in termux.models.iterdir()) == models
    assert "kept: models" in result.stdout
    # The Termux packages stay: other things use PulseAudio and proot-distro.
    assert (termux.prefix / "bin/proot-distro").exists()

    again = termux.run("--uninstall")
    assert "nothing to change" in again.stdout, again.stdout

    termux.run("--uninstall", "--purge")
    assert not termux.models.exists()
    assert termux.home.is_dir()


def test_uninstall_leaves_a_userland_it_did_not_create(termux: FakeTermux) -> None:
    subprocess.run(["pkg", "install", "-y", "proot-distro"], env=termux.env(), check=True)
    subprocess.run(["proot-distro", "install", "debian"], env=termux.env(), check=True)
    (termux.rootfs / "root/notes.txt").parent.mkdir(parents=True)
    (termux.rootfs / "root/notes.txt").write_text("mine")
    install = termux.run("--no-models")
    assert "ok      userland: debian" in install.stdout
    count = len(termux.calls())
    termux.run("--uninstall")
    assert "proot-distro remove debian" not in termux.calls_since(count)
    assert (termux.rootfs / "root/notes.txt").read_text() == "mine"
    assert not (termux.rootfs / "opt/edge-assistant").exists()
    assert not (termux.rootfs / "etc/edge-assistant").exists()


def test_purge_needs_uninstall(termux: FakeTermux) -> None:
    result = termux.run("--purge", check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1


# --- the up-front checks -------------------------------------------------------------


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_under_the_memory_floor_it_stops_with_the_reason(termux: FakeTermux) -> None:
    termux.set_memory(PHONE_4GB_KB)
    line = error_line(termux.run(check=False))
    assert line.startswith("error   memory: 3.7 GiB RAM, under the 6 GB floor")
    assert "3.6 GB" in line and "low-memory killer" in line and "--force" in line
    assert termux.calls() == [], "it installed something before the memory check"
    dry = error_line(termux.run("--dry-run", check=False))
    assert dry.startswith("error   memory:")

    forced = termux.run("--force", "--no-models")
    assert re.search(r"^warn +memory: 3.7 GiB RAM, under the 6 GB floor", forced.stdout, re.M), forced.stdout


def test_a_6_gb_phone_is_warned_not_stopped(termux: FakeTermux) -> None:
    termux.set_memory(PHONE_6GB_KB)
    result = termux.run("--dry-run")
    assert re.search(r"^warn +memory: 5.5 GiB RAM, a 6 GB phone", result.stdout, re.M), result.stdout
    termux.set_memory(PHONE_8GB_KB)
    assert re.search(r"^ok +memory: 7.4 GiB RAM$", termux.run("--dry-run").stdout, re.M)


def test_without_the_microphone_permission_it_says_how_to_grant_it(tmp_path: Path) -> None:
    termux = FakeTermux(tmp_path, api="no-permission")
    line = error_line(termux.run(check=False))
    assert line.startswith("error   microphone: no permission to record")
    assert "Termux:API > Permissions > Microphone" in line
    assert not [call for call in termux.calls() if call.startswith("proot-distro")], "it went on past the check"


def test_without_the_termux_api_app_it_says_so(tmp_path: Path) -> None:
    termux = FakeTermux(tmp_path, api="no-app")
    line = error_line(termux.run(check=False))
    assert line.startswith("error   Termux:API: the Termux:API app does not answer")
    assert "F-Droid" in line


def test_the_checks_come_before_any_download(termux: FakeTermux) -> None:
    output = termux.run("--dry-run").stdout
    order = [output.index(word) for word in ("memory:", "storage:", "userland:", "models:")]
    assert order == sorted(order), output
