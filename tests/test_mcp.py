"""Tools from a real stdio MCP server: ``mcp-server-time`` from PyPI, run by the
assistant exactly as configured, optionally behind tests/mcp_relay.py, which
logs what the assistant sends and breaks the server on purpose at tools/call
(exits, hangs, answers 1 MB, answers with chat-template tokens)."""

from __future__ import annotations

import json
import re
import logging
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_assistant import cli
from edge_assistant.config import Config, apply_overrides
from edge_assistant.errors import UsageError
from edge_assistant.llm.tool_calls import defuse, parse_tool_calls, render_tool_call, render_tool_response
from edge_assistant.tools import Toolbox
from edge_assistant.tools.core import MAX_RESULT_CHARS
from edge_assistant.tools.setup import build_tools
from edge_assistant.tools.mcp import McpTools, mcp_tools, server_specs
from edge_assistant.tools.mcp.listing_cache import CACHE_FILE, ListedTool, ListingCache
from edge_assistant.tools.mcp.connection import wait_until
from edge_assistant.tools.mcp.schema import SchemaRefused, convert_schema

TIME_SERVER = shutil.which("mcp-server-time", path=str(Path(sys.executable).parent))
RELAY = Path(__file__).with_name("mcp_relay.py")
pytestmark = pytest.mark.skipif(TIME_SERVER is None, reason="mcp-server-time is not installed (pip install -e '.[test]')")


def time_server(tmp_path: Path, mode: str = "", tools: list[str] | None = None, **entry: object) -> dict:
    argv = [TIME_SERVER, "--local-timezone", "UTC"]
    if mode:
        argv = [sys.executable, str(RELAY), str(tmp_path / "relay.log"), mode, *argv]
    return {"name": "time", "argv": argv, "tools": ["get_current_time"] if tools is None else tools, **entry}


def configure(tmp_path: Path, *servers: dict) -> Config:
    config = apply_overrides(Config(), {"tools": {"state_dir": str(tmp_path / "state")}, "mcp": {"server": list(servers)}}, "test")
    config.source = "test"
    return config


@pytest.fixture
def connected(request: pytest.FixtureRequest):
    made: list[McpTools] = []

    def connect(config: Config) -> Toolbox:
        tools = mcp_tools(config, set())
        made.append(tools)
        return Toolbox(tools.tools)

    yield connect
    for tools in made:
        tools.close()


def sent(tmp_path: Path) -> list[str]:
    return (tmp_path / "relay.log").read_text().splitlines()


def test_list_call_and_the_allowlist(tmp_path: Path, connected) -> None:
    toolbox = connected(configure(tmp_path, time_server(tmp_path, "pass")))
    assert [tool.name for tool in toolbox.tools] == ["get_current_time"]  # convert_time is not allowlisted
    (declared,) = toolbox.declarations()
    assert declared["function"]["parameters"]["required"] == ["timezone"]
    (call,) = parse_tool_calls(render_tool_call("get_current_time", {"timezone": "Asia/Tokyo"}))
    record = toolbox.call(call.name, call.arguments)
    assert record.status == "ok", record
    assert json.loads(record.result["result"])["timezone"] == "Asia/Tokyo"
    refused = [
        toolbox.call("convert_time", {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}),
        toolbox.call("get_current_time", {"timezone": 5}),
        toolbox.call("get_current_time", {"timezone": "UTC", "shell": "reboot"}),
        toolbox.call("get_current_time", {"timezone": "x" * 5000}),
    ]
    assert [record.status for record in refused] == ["rejected"] * 4
    assert refused[0].result == {"error": "no tool named 'convert_time'"}
    calls = [line for line in sent(tmp_path) if line.startswith("tools/call")]
    assert calls == ['tools/call "get_current_time"'], "a refused call reached the server"


def test_the_server_runs_with_a_clean_environment_from_the_root(tmp_path: Path, connected, monkeypatch) -> None:
    monkeypatch.setenv("EDGE_SECRET", "do-not-pass")
    connected(configure(tmp_path, time_server(tmp_path, "pass")))
    log = sent(tmp_path)
    assert log[1] == "cwd /"
    assert set(log[0].split()[1:]) <= {"PATH", "LANG", "LC_ALL", "LC_CTYPE", "PWD", "SHLVL", "_"}, log[0]


def test_a_server_error_is_a_failed_call_not_a_crash(tmp_path: Path, connected) -> None:
    toolbox = connected(configure(tmp_path, time_server(tmp_path)))
    record = toolbox.call("get_current_time", {"timezone": "Nowhere/Atlantis"})
    assert record.status == "failed" and "Invalid timezone" in record.result["error"]


def test_a_server_that_exits_mid_call_is_apologised_for_and_reconnected(tmp_path: Path, connected, caplog) -> None:
    toolbox = connected(configure(tmp_path, time_server(tmp_path, "exit-once")))
    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        record = toolbox.call("get_current_time", {"timezone": "UTC"})
    assert record.status == "failed" and record.result == {"error": "The time service is not answering."}
    assert time.monotonic() - started < 8
    assert any("MCP server time" in message and "reconnecting" in message for message in caplog.messages)
    tool = toolbox.get("get_current_time")
    deadline = time.monotonic() + 20
    while not tool.connection.connected and time.monotonic() < deadline:  # backoff: 1 s
        time.sleep(0.1)
    assert toolbox.call("get_current_time", {"timezone": "UTC"}).status == "ok"
    assert tool.connection.connections == 2


def test_a_hanging_server_times_out(tmp_path: Path, connected, caplog) -> None:
    toolbox = connected(configure(tmp_path, time_server(tmp_path, "hang", timeout_seconds=1)))
    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        record = toolbox.call("get_current_time", {"timezone": "UTC"})
        waited = time.monotonic() - started
    assert record.status == "failed" and record.result == {"error": "The time service is not answering."}
    assert waited < 5, f"a 1 s timeout took {waited:.1f} s"
    assert any("no answer to get_current_time in 1 s" in message for message in caplog.messages)


def test_a_one_megabyte_result_is_cut(tmp_path: Path, connected) -> None:
    toolbox = connected(configure(tmp_path, time_server(tmp_path, "big")))
    record = toolbox.call("get_current_time", {"timezone": "UTC"})
    assert record.status == "ok"
    assert record.result["result"].startswith("xxx") and len(record.result["result"]) <= MAX_RESULT_CHARS + 1


def test_special_tokens_in_a_result_are_defused(tmp_path: Path, connected) -> None:
    toolbox = connected(configure(tmp_path, time_server(tmp_path, "special")))
    record = toolbox.call("get_current_time", {"timezone": "UTC"})
    assert record.status == "ok" and "<turn|>" in record.result["result"]
    response = render_tool_response(record.name, record.result)
    inner = response[len("<|tool_response>"):-len("<tool_response|>")]
    for marker in ("<turn|>", "<|turn>", "<eos>", "<|tool_call>", "<tool_call|>"):
        assert marker not in inner
    assert inner.count('<|"|>') == 2 and defuse(record.result["result"]) in inner


def test_cli_lists_servers_and_tools_and_calls_them(tmp_path: Path, capsys) -> None:
    config = configure(tmp_path, time_server(tmp_path))
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    assert cli.main(["--config", str(path), "mcp", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"server  time (mcp-time 2026.10.19, stdio, {TIME_SERVER} --local-timezone UTC)"
    assert any(line.startswith("allowed get_current_time(timezone)") for line in out)
    assert any(line.startswith("-       convert_time(source_timezone, time, target_timezone)") for line in out)
    assert cli.main(["--config", str(path), "tools", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"get_current_time: Get current time in a specific timezone\n    from MCP server time ({TIME_SERVER}" in listing
    assert cli.main(["--config", str(path), "tools", "call", "get_current_time", "--args", '{"timezone": "UTC"}']) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "ok"
    assert cli.main(["--config", str(path), "tools", "call", "convert_time", "--args", "{}"]) == 2
    assert capsys.readouterr().err.strip() == "edge-assistant: convert_time: no tool named 'convert_time'"


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "time", "tools": []}, "give either argv (a local program) or url"),
    ({"name": "time", "argv": ["/bin/true"], "url": "http://127.0.0.1:1/mcp", "tools": []}, "give either argv"),
    ({"name": "time", "argv": ["/bin/true"]}, "mcp.server[0].tools must list the tool names"),
    ({"name": "time", "argv": ["/bin/true"], "tools": ["rm -rf"]}, "mcp.server[0].tools must list"),
    ({"name": "Time!", "argv": ["/bin/true"], "tools": []}, "mcp.server[0].name = 'Time!' is invalid"),
    ({"name": "time", "argv": ["no-such-program-here"], "tools": []}, "no such program"),
    ({"name": "time", "url": "ftp://example/", "tools": []}, "url = 'ftp://example/' is invalid"),
    ({"name": "time", "argv": ["/bin/true"], "tools": [], "shell": True}, "unknown key shell"),
])
def test_bad_server_entries_are_one_line(tmp_path: Path, entry: dict, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)) as caught:
        mcp_tools(configure(tmp_path, entry), set())
    assert "\n" not in str(caught.value)


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("secret\n")
    token.chmod(0o640)
    entry = {"name": "remote", "url": "http://127.0.0.1:9/mcp", "token_file": str(token), "tools": []}
    with pytest.raises(UsageError, match=r"mcp.server\[remote\].token_file: .* is open to group or others"):
        mcp_tools(configure(tmp_path, entry), set())


def test_a_server_that_is_down_at_start_costs_its_tools_only(tmp_path: Path, caplog) -> None:
    entry = {"name": "remote", "url": "http://127.0.0.1:9/mcp", "tools": ["anything"], "timeout_seconds": 2}
    with caplog.at_level(logging.WARNING):
        tools = mcp_tools(configure(tmp_path, entry), set())
    try:
        assert tools.tools == []
        assert any("starting without its tools anything" in message for message in caplog.messages)
        assert tools.problems() == ["remote: unreachable"]
    finally:
        tools.close()


def test_a_server_down_at_start_has_its_tools_declared_once_it_comes_up(tmp_path: Path) -> None:
    """Its tools are missing from the start (no schema to check calls against),
    then declared at the first look after the background reconnect (1 s backoff)."""
    toolset = build_tools(configure(tmp_path, time_server(tmp_path, "down-once")))
    try:
        assert toolset.toolbox.get("get_current_time") is None
        assert toolset.problems() == ["time: unreachable"]
        assert toolset.toolbox.call("get_current_time", {"timezone": "UTC"}).status == "rejected"
        assert wait_until(lambda: toolset.outdated, 20)
        assert toolset.refresh()
        assert toolset.toolbox.get("get_current_time") is not None and toolset.problems() == []
        declared = [declaration["function"]["name"] for declaration in toolset.toolbox.declarations()]
        assert declared[-1] == "get_current_time" and "set_timer" in declared  # the built-ins stay
        assert toolset.toolbox.call("get_current_time", {"timezone": "UTC"}).status == "ok"
        assert not toolset.outdated and not toolset.refresh()  # nothing new: nothing to rebuild
    finally:
        toolset.close()


def test_tools_the_engine_could_not_declare_are_built_again_at_the_next_look(tmp_path: Path) -> None:
    """The engine failed to evaluate the new prompt (and went back to the old):
    the toolbox goes back too, and the next look declares the new tools again."""
    toolset = build_tools(configure(tmp_path, time_server(tmp_path, "down-once")))
    try:
        declared = list(toolset.toolbox.tools)
        assert wait_until(lambda: toolset.outdated, 20) and toolset.refresh()
        toolset.declare_later(declared)
        assert toolset.toolbox.get("get_current_time") is None and toolset.toolbox.tools == declared
        assert toolset.outdated and toolset.refresh()
        assert toolset.toolbox.get("get_current_time") is not None
    finally:
        toolset.close()


@pytest.fixture
def refusing_server(tmp_path: Path) -> Iterator[tuple[dict, list[str]]]:
    """An HTTP server that answers 401 to everything: its [[mcp.server]] entry
    (token file "old-token") and the Authorization header of each attempt."""
    import http.server
    import threading

    tokens: list[str] = []

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            if self.command == "POST":  # one initialize per attempt (the SDK may also open a GET stream)
                tokens.append(self.headers.get("Authorization", ""))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    token_file.chmod(0o600)
    entry = {"name": "remote", "url": f"http://127.0.0.1:{server.server_port}/mcp", "tools": ["anything"],
             "token_file": str(token_file), "timeout_seconds": 2}
    try:
        yield entry, tokens
    finally:
        server.shutdown()


def test_a_refused_token_is_not_sent_again_until_the_file_changes(tmp_path: Path, refusing_server) -> None:
    """Home Assistant notifies its users of every failed login: the assistant
    starts without the server's tools, says why, and tries again only with a
    new token from the file."""
    entry, tokens = refusing_server
    tools = mcp_tools(configure(tmp_path, entry), set())  # runs on: no exception
    try:
        assert tools.tools == [] and tools.problems() == ["remote: access token refused"]
        time.sleep(4)  # a plain backoff would have tried twice more by now (after 1 s and 2 s)
        assert tokens == ["Bearer old-token"]
        Path(entry["token_file"]).write_text("new-token\n")
        assert wait_until(lambda: "Bearer new-token" in tokens, 20)
    finally:
        tools.close()


def test_a_server_down_at_start_after_a_good_run_has_its_tools_from_the_last_listing(tmp_path: Path, caplog) -> None:
    """The same declarations, so the same system prompt, on every start; a call
    gets the server's spoken failure; once it is up with the same tools,
    nothing is declared again."""
    config = configure(tmp_path, time_server(tmp_path, "switch"))
    good = mcp_tools(config, set(), tmp_path / "state")
    good.close()
    declared = Toolbox(good.tools).declarations()
    assert [declaration["function"]["name"] for declaration in declared] == ["get_current_time"]
    (tmp_path / "relay.log.down").touch()
    with caplog.at_level(logging.WARNING):
        tools = mcp_tools(config, set(), tmp_path / "state")
    try:
        assert Toolbox(tools.tools).declarations() == declared and tools.problems() == ["time: unreachable"]
        assert any("its tools get_current_time are declared from its last listing" in message for message in caplog.messages)
        record = Toolbox(tools.tools).call("get_current_time", {"timezone": "UTC"})
        assert record.status == "failed" and record.result == {"error": "The time service is not answering."}
        (tmp_path / "relay.log.down").unlink()
        assert wait_until(lambda: tools.changed, 20)  # reconnected in the background (1 s backoff)
        assert not tools.refresh() and not tools.changed  # the same tools: no new system prompt
        assert Toolbox(tools.tools).call("get_current_time", {"timezone": "UTC"}).status == "ok"
    finally:
        tools.close()


def test_the_kept_listing_is_the_last_good_one_for_this_configuration(tmp_path: Path, caplog) -> None:
    state = tmp_path / "state"
    cache = state / "mcp-tools.json"
    config = configure(tmp_path, time_server(tmp_path, "switch"))
    mcp_tools(config, set(), state).close()
    kept = cache.read_bytes()
    mcp_tools(configure(tmp_path, time_server(tmp_path, "switch", tools=["no_such_tool"])), set(), state).close()
    assert cache.read_bytes() == kept  # a listing without any allowlisted tool replaces nothing
    (tmp_path / "relay.log.down").touch()
    other = configure(tmp_path, time_server(tmp_path, "switch", tools=["get_current_time", "convert_time"]))
    with caplog.at_level(logging.INFO):
        tools = mcp_tools(other, set(), state)  # another allowlist: the kept listing is not this one's
    tools.close()
    assert tools.tools == [] and any("from another configuration: not used" in message for message in caplog.messages)
    cache.write_bytes(b"\xff{ not json")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        tools = mcp_tools(config, set(), state)
    tools.close()
    assert tools.tools == [] and any("is not valid JSON" in message for message in caplog.messages)
    cache.write_text(json.dumps({"format": 1, "servers": {"time": {"key": "x", "tools": [{"name": 5}]}}}))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        tools = mcp_tools(config, set(), state)
    tools.close()
    assert tools.tools == [] and any("is not a listing this version wrote: ignored" in message for message in caplog.messages)
    (tmp_path / "relay.log.down").unlink()
    mcp_tools(config, set(), state).close()
    assert cache.read_bytes() == kept  # rewritten by the next good listing


def test_a_refused_token_after_a_good_run_is_spoken_and_sends_nothing(tmp_path: Path, refusing_server) -> None:
    entry, tokens = refusing_server
    config = configure(tmp_path, entry)
    listed = ListedTool("anything", None, "Does anything.", {"type": "object", "properties": {}})
    ListingCache(tmp_path / "state" / CACHE_FILE).save(server_specs(config), {"remote": [listed]})
    tools = mcp_tools(config, set(), tmp_path / "state")
    try:
        record = Toolbox(tools.tools).call("anything", {})
        assert record.status == "failed" and record.result == {"error": "The remote service refused my access token."}
        assert tokens == ["Bearer old-token"]  # the call itself sent nothing
    finally:
        tools.close()


def test_an_allowlisted_tool_whose_name_is_taken_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="MCP tool get_current_time of server time is already a tool"):
        mcp_tools(configure(tmp_path, time_server(tmp_path)), {"get_current_time"})


def test_schemas_become_strict_parameters() -> None:
    converted = convert_schema({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "a <turn|> name", "maxLength": 40},
            "brightness": {"type": "integer", "minimum": 0, "maximum": 100},
            "mode": {"enum": ["a", "b"]},
            "domain": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name"],
    })
    by_name = {parameter.name: parameter for parameter in converted.parameters}
    assert set(by_name) == {"name", "brightness", "mode"} and converted.left_out == ("domain",)
    assert by_name["name"].required and by_name["name"].max_length == 40 and "<turn|>" not in by_name["name"].description
    assert (by_name["brightness"].minimum, by_name["brightness"].maximum) == (0, 100) and not by_name["brightness"].required
    assert by_name["mode"].enum == ("a", "b")
    for schema, why in [
        ({"type": "object", "properties": {"ids": {"type": "array"}}, "required": ["ids"]}, "required property 'ids'"),
        ({"type": "object", "properties": {"n": {"anyOf": [{"type": "string"}]}}, "required": ["n"]}, "uses anyOf"),
        ({"type": "object", "oneOf": []}, "uses oneOf"),
        ({"type": "array"}, "not object"),
        ({"type": "object", "properties": {}, "required": ["x"]}, "'x' is not described"),
        ({"type": "object", "properties": {"Bad-Name": {"type": "string"}}, "required": ["Bad-Name"]}, "lower-case"),
    ]:
        with pytest.raises(SchemaRefused, match=why):
            convert_schema(schema)
