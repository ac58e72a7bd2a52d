"""The audio loop never waits on the disk (issue 22, defect 6): the scheduler's
per-frame ``due()`` neither writes ``timers.json`` itself nor waits for a write
in progress on the turn worker (an SD card's fsync takes tens to hundreds of ms)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge_assistant.tools import scheduler as scheduler_module
from edge_assistant.tools.scheduler import Scheduler
from edge_assistant.tools.state import read_json

WAIT = 30  # seconds: only reached when the code under test is wrong


def test_due_neither_writes_nor_waits_for_a_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = scheduler_module.write_json_atomic
    writers: list[str] = []
    writing, disk_free = threading.Event(), threading.Event()

    def slow_disk(path: Path, data: object) -> None:
        writers.append(threading.current_thread().name)
        writing.set()
        assert disk_free.wait(WAIT)
        real_write(path, data)

    monkeypatch.setattr(scheduler_module, "write_json_atomic", slow_disk)
    now = [1000.0]
    scheduler = Scheduler(tmp_path, lambda: now[0])
    worker = threading.Thread(target=lambda: scheduler.add("timer", "tea", 1001.0, 1), name="turn")
    worker.start()
    assert writing.wait(WAIT)  # the turn worker's save is stuck on the disk
    now[0] = 1002.0
    fired: list = []
    loop = threading.Thread(target=lambda: fired.extend(scheduler.due()), name="audio-loop")
    loop.start()
    loop.join(WAIT)
    still_waiting = loop.is_alive()
    disk_free.set()
    worker.join(WAIT)
    loop.join(WAIT)
    assert not still_waiting, "due() waited for the disk"
    assert [entry.label for entry in fired] == ["tea"]
    assert "audio-loop" not in writers
    scheduler.flush()
    assert read_json(tmp_path / scheduler_module.STATE_FILE) == {"entries": []}  # the fired timer is gone on disk too
