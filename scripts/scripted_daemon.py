#!/usr/bin/env python3
"""``edge-assistant`` itself (its CLI, config, daemon, engine, Piper), with only
the model's choice of tokens scripted: every turn replies ``--reply``.

    python scripts/scripted_daemon.py --reply "Some English." run --input-file Q.wav --events ...

A random-weight twin says noise; a benchmark of the daemon with Piper speaking
needs real sentences to synthesize while the model decodes. The engine still
evaluates the prompt, the audio and every reply token through llama.cpp; only
the sampler is tests/scripted.py's. Used by ``bench_real_size.py --limit``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from scripted import scripted_engine_class  # noqa: E402

from edge_assistant import cli  # noqa: E402
from edge_assistant.daemon import service  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--reply", required=True, help="what the model says every turn")
    args, rest = parser.parse_known_args(argv)
    service.GemmaEngine = scripted_engine_class(args.reply)  # the one engine `run` builds (service.serve)
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
