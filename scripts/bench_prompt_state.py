#!/usr/bin/env python3
"""Start-up with and without the saved system prompt state (issue 23).

Starts a real Home Assistant 2025.4.4 with its MCP server and 20 exposed
devices (tests/home_assistant_mcp_server.py; Python 3.13 via
scripts/ha_mcp_venv.sh), then times what `edge-assistant run` does before it is
ready: building the tools (built-ins plus Home Assistant over REST or MCP) and
loading the engine, which evaluates the system prompt. Three starts: without a
state directory (before), with an empty one (evaluates and saves), and again
(restores). Each in a fresh process, so the page cache is the only thing shared.

    python scripts/bench_prompt_state.py [--full-size] [--api rest|mcp]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "tests"), str(REPO)]

ONE_START = """
import json, sys, time
started = time.perf_counter()
from pathlib import Path
from edge_assistant.config import load_config
from edge_assistant.llm.engine import GemmaEngine
from edge_assistant.tools.setup import build_tools
config = load_config(sys.argv[1])
tools = build_tools(config)
tools_ready = time.perf_counter()
state = Path(sys.argv[4]) if sys.argv[4] else None
engine = GemmaEngine(Path(sys.argv[2]), Path(sys.argv[3]), config.engine, tools=tools.toolbox.declarations(), prompt_state_dir=state)
ready = time.perf_counter()
print(json.dumps({"tools_s": tools_ready - started, "ready_s": ready - started, "engine_s": ready - tools_ready,
                  "prompt_tokens": engine.system_prompt_tokens, "restored": engine.system_prompt_restored,
                  "n_tools": len(tools.toolbox.tools)}))
engine.close(); tools.close()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-size", action="store_true", help="E2B's real shapes (scripts/make_twin.py --full-size)")
    parser.add_argument("--api", choices=("rest", "mcp"), default="mcp")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import make_twin
    from home_assistant_mcp_server import McpHomeAssistantServer, ensure_mcp_home_assistant

    model, mmproj = make_twin.ensure_full_size_twin(0) if args.full_size else make_twin.ensure_twin(0)
    bin_dir, why = ensure_mcp_home_assistant()
    if bin_dir is None:
        raise SystemExit(f"error: {why}")
    work = Path(tempfile.mkdtemp(prefix="bench-prompt-state-"))
    server = McpHomeAssistantServer(bin_dir, work / "ha", extra_lights=15).start()  # 5 + 15 = 20 devices
    try:
        token = work / "token"
        token.write_text(server.token)
        token.chmod(0o600)
        lamps = [f"light.lamp_{index}" for index in range(1, 16)]
        rest = [f'entities = {json.dumps(["light.kitchen", "light.bedroom", "switch.coffee_maker", "cover.garage_door", "scene.movie_night", *lamps])}']
        config = work / "config.toml"
        config.write_text("\n".join([
            "[engine]", f"threads = {args.threads}",
            "[tools]", f'state_dir = "{work / "tools-state"}"',
            "[home_assistant]", f'url = "{server.url}"', f'token_file = "{token}"', f'api = "{args.api}"',
            *(rest if args.api == "rest" else []),
        ]) + "\n")
        print(f"model {model.name} ({model.stat().st_size / 1e9:.2f} GB), Home Assistant {args.api} with 20 devices")
        for label, state in (("before (no saved state)", ""), ("first start (evaluates, saves)", str(work / "state")),
                             ("next start (restores)", str(work / "state"))):
            done = subprocess.run([sys.executable, "-c", ONE_START, str(config), str(model), str(mmproj), state],
                                  capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                raise SystemExit(f"error: {done.stderr[-2000:]}")
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{label:32} ready {figures['ready_s']:6.2f} s (tools {figures['tools_s']:5.2f} s, engine "
                  f"{figures['engine_s']:6.2f} s), {figures['prompt_tokens']} prompt tokens, {figures['n_tools']} tools, "
                  f"restored={figures['restored']}")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
