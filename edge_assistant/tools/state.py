"""Where tools keep what must survive a restart (timers, alarms, volume).

The systemd unit's ``StateDirectory=`` hands the service ``$STATE_DIRECTORY``
(``/var/lib/edge-assistant``), the only writable place under its sandbox; a user
run keeps the same files in ``$XDG_STATE_HOME/edge-assistant`` (by default
``~/.local/state/edge-assistant``). Files are replaced atomically, and a file
that cannot be read is moved aside, never overwritten.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_path

log = logging.getLogger(__name__)


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` (its first entry), else the XDG state home."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if systemd:
        return Path(systemd)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "edge-assistant"


def read_json(path: Path) -> Any | None:
    """The file's JSON, or None when it does not exist. A corrupt file is
    renamed to ``NAME.corrupt-TIMESTAMP`` (kept for the user) and None returned."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(aside)
        log.warning("%s is not valid JSON (%s): kept as %s, starting afresh", path, error, aside)
        return None


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace ``path`` whole (a crash leaves the old file or the new), synced
    to disk first: a Pi loses power more often than it shuts down."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary, temporary.open("w", encoding="utf-8") as file:
        json.dump(data, file, indent=1, ensure_ascii=False)
        file.flush()
        os.fsync(file.fileno())
