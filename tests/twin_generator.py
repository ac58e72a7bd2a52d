"""scripts/make_twin.py as an importable module (scripts/ is not a package), for
the fixtures and the twin tests alike; its parts, the scripts/twin package, are
importable once this module is (``from twin import projector``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MAKE_TWIN = REPO_ROOT / "scripts" / "make_twin.py"
if str(MAKE_TWIN.parent) not in sys.path:
    sys.path.insert(0, str(MAKE_TWIN.parent))


def load_make_twin():  # noqa: ANN201 - the module
    name = "edge_assistant_make_twin"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, MAKE_TWIN)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
