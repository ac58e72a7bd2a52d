"""Run in place of the daemon under edge-assistant.service to see what its sandbox
allows and refuses. Needs a booted systemd, so it is a manual check, not a CI test;
systemd/README.md ("How it was checked") says how to run it.

Every check prints one ``PROBE PASS|FAIL`` line to the journal. If any fails the
probe exits 1 before READY=1, so ``systemctl start`` fails; otherwise it reports
READY=1 and feeds the watchdog until stopped (``PROBE_HANG=1`` in its environment
stops the pings, to watch the watchdog kill and restart it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Callable

from edge_assistant.models.manifest import SYSTEM_MODELS_DIR
from edge_assistant.systemd import Notifier

STATE_DIR = SYSTEM_MODELS_DIR.parent
CONFIG_DIR = Path("/etc/edge-assistant")
results: list[bool] = []


def report(name: str, passed: bool, detail: str) -> None:
    results.append(passed)
    print(f"PROBE {'PASS' if passed else 'FAIL'} {name}: {detail}", file=sys.stderr, flush=True)


def refused(name: str, action: Callable[[], object]) -> None:
    try:
        action()
    except OSError as error:
        report(name, True, f"refused ({error})")
    else:
        report(name, False, "allowed")


def allowed(name: str, action: Callable[[], object]) -> None:
    try:
        detail = action()
    except Exception as error:  # noqa: BLE001 - any failure is the finding
        report(name, False, f"{type(error).__name__}: {error}")
    else:
        report(name, True, str(detail))


def write(directory: Path) -> str:
    path = directory / "sandbox-probe.tmp"
    path.write_text("probe\n")
    path.unlink()
    return f"wrote {path}"


# What DevicePolicy=closed always allows, plus the sound cards.
ALLOWED_DEVICES = {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "console"}


def readable_device_outside_the_allow_list() -> Path | None:
    """A character device whose file mode lets us read it, so that only the device
    policy can refuse it (a refusal by mode would prove nothing)."""
    for directory in (Path("/dev"), Path("/dev/net"), Path("/dev/input")):
        for path in sorted(directory.glob("*")) if directory.is_dir() else []:
            try:
                is_char = stat.S_ISCHR(path.lstat().st_mode)  # not symlinks such as /dev/stdin
            except OSError:
                continue
            if is_char and path.name not in ALLOWED_DEVICES and os.access(path, os.R_OK):
                return path
    return None


def ctypes_callback() -> int:
    """llama-cpp-python's log callback is a ctypes (libffi) closure."""
    return ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)(41)


def cffi_callback() -> str:
    """sounddevice's stream callbacks are cffi closures (microphone and speaker)."""
    import sounddevice

    callback = sounddevice._ffi.callback("int(int)", lambda x: x + 1)
    return f"callback gave {callback(41)}; PortAudio sees {len(sounddevice.query_devices())} devices"


def main() -> int:
    notifier = Notifier()
    print(
        f"PROBE NOTIFY_SOCKET={os.environ.get('NOTIFY_SOCKET')} WATCHDOG_USEC={os.environ.get('WATCHDOG_USEC')} "
        f"uid={os.getuid()} groups={os.getgroups()}",
        file=sys.stderr,
        flush=True,
    )
    refused("no IPv4 socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    refused("no IPv6 socket", lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM))
    refused("no netlink socket", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW))
    refused("models read-only", lambda: write(SYSTEM_MODELS_DIR))
    refused("config read-only", lambda: write(CONFIG_DIR))
    refused("/usr read-only", lambda: write(Path("/usr")))
    refused("home directories hidden", lambda: os.listdir("/root"))
    other_device = readable_device_outside_the_allow_list()
    if other_device is None:
        print("PROBE SKIP other devices closed: no readable device outside the allow list here", file=sys.stderr)
    else:
        refused(f"other devices closed ({other_device})", lambda: open(other_device, "rb").close())
    allowed("state directory writable", lambda: write(STATE_DIR))
    allowed("cache directory writable", lambda: write(Path(os.environ["XDG_CACHE_HOME"])))
    allowed("private /tmp writable", lambda: write(Path("/tmp")))
    allowed("/proc/cpuinfo readable", lambda: f"{len(Path('/proc/cpuinfo').read_text())} bytes")
    allowed("ctypes callback", ctypes_callback)
    allowed("cffi callback", cffi_callback)
    print(f"PROBE SUMMARY {sum(results)} of {len(results)} passed", file=sys.stderr, flush=True)
    if not all(results):
        return 1

    stop = False

    def on_sigterm(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_sigterm)
    notifier.ready("probe passed")
    while not stop:
        if not os.environ.get("PROBE_HANG"):
            notifier.watchdog()
        time.sleep(min(notifier.watchdog_interval or 1.0, 1.0))
    notifier.stopping()
    return 0


if __name__ == "__main__":
    sys.exit(main())
