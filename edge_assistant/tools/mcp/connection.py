"""One MCP server kept connected through the official SDK (``mcp`` on PyPI).

The SDK is asynchronous; the assistant's tool loop is not. Each server gets an
event loop on a daemon thread, and a supervisor task on it that connects,
initializes, lists the tools, then holds the session open until a call finds it
broken (the server exited, timed out, or the network failed) or the server is
closed. After a failure it connects again with a backoff (1 s doubling to 60 s),
and calls in the meantime fail at once with a short sentence the assistant can
speak, and a warning in the journal. A token the server refused is not sent
again (Home Assistant notifies its users of every failed login): the token file
is read again every few seconds, and a new token in it is tried at once. The SDK is imported only when a server is
configured: it costs about half a second.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import shutil
import sys
import threading
import time
from typing import Any

from .servers import Endpoint, ServerSpec

log = logging.getLogger(__name__)
# The SDK logs a traceback at ERROR for every server that goes away; our own
# warning says the same in one line, with the server's name.
logging.getLogger("mcp.client").setLevel(logging.CRITICAL)

INITIAL_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
TOKEN_POLL_SECONDS = 5.0  # how often a refused token's file is read for a new one
MAX_LISTED_TOOLS = 256
CONNECT_TIMEOUT_SECONDS = 20.0


class McpUnavailable(Exception):
    """The server cannot be used now; ``spoken`` is what the user hears."""

    def __init__(self, message: str, spoken: str) -> None:
        super().__init__(message)
        self.spoken = spoken


class McpTokenRejected(McpUnavailable):
    """HTTP 401/403: configuration, no reconnect fixes it."""


class McpCallFailed(Exception):
    """The server answered the call with a JSON-RPC error (it is still up)."""


class McpConnection:
    """A server's session on its own loop. :meth:`start` waits for the first
    connection; :meth:`call` and :meth:`list_tools` are for any thread."""

    def __init__(self, spec: ServerSpec, token: str = "") -> None:
        self.spec = spec
        self._token = token
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"mcp-{spec.name}", daemon=True)
        self._session: Any = None
        self._wake: asyncio.Event | None = None
        self._closing = False
        self._first_attempt = threading.Event()
        self._supervisor: concurrent.futures.Future[None] | None = None
        self.tools: list[Any] = []  # mcp.types.Tool, from the last successful listing
        self.server_info = ""
        self.transport = ""
        self.endpoint_url = ""
        self.last_error: Exception | None = None
        self.connections = 0  # successful connections so far: a new one may bring other tools

    def __repr__(self) -> str:  # no token in tracebacks or logs
        return f"McpConnection({self.spec.name!r})"

    @property
    def where(self) -> str:
        """The program, or the address that answered last (else the first tried)."""
        return self.endpoint_url or self.spec.where

    @property
    def connect_timeout(self) -> float:
        """Starting a server (a Python program on a Pi takes seconds) may take
        longer than a call may."""
        return max(self.spec.timeout_seconds, CONNECT_TIMEOUT_SECONDS)

    @property
    def connected(self) -> bool:
        return self._session is not None

    def start(self, wait_seconds: float | None = None) -> bool:
        """Start connecting; True if connected within ``wait_seconds``."""
        self._thread.start()
        self._supervisor = asyncio.run_coroutine_threadsafe(self._supervise(), self._loop)
        self._first_attempt.wait(wait_seconds if wait_seconds is not None else self.connect_timeout + 5)
        return self.connected

    def wait_for_first_attempt(self) -> None:
        """Until the first connection worked or failed (every endpoint tried)."""
        self._first_attempt.wait(self.connect_timeout * len(self.spec.endpoints or (None,)) + 5)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._wake_up)
            if self._supervisor is not None:
                with contextlib.suppress(Exception):
                    self._supervisor.result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """The server's ``CallToolResult``, or :class:`McpUnavailable` /
        :class:`McpCallFailed`. Never waits longer than the server's timeout."""
        session = self._session
        spoken = f"{self.spec.spoken_name[0].upper()}{self.spec.spoken_name[1:]} is not answering."
        if session is None:
            why = f"{self.last_error}" if self.last_error else "not connected"
            raise McpUnavailable(f"MCP server {self.spec.name} is unavailable ({why}); reconnecting", spoken)
        timeout = self.spec.timeout_seconds
        future = asyncio.run_coroutine_threadsafe(self._call(session, name, arguments, timeout), self._loop)
        try:
            return future.result(timeout + 2)
        except (TimeoutError, concurrent.futures.TimeoutError):
            future.cancel()
            self._broken(TimeoutError(f"no answer to {name} in {timeout:g} s"), session)
            raise McpUnavailable(f"MCP server {self.spec.name}: no answer to {name} in {timeout:g} s; reconnecting",
                                 spoken) from None
        except McpCallFailed:
            raise
        except Exception as error:
            self._broken(error, session)
            raise McpUnavailable(f"MCP server {self.spec.name} failed during {name}: {_describe(error)}; reconnecting",
                                 spoken) from None

    async def _call(self, session: Any, name: str, arguments: dict[str, Any], timeout: float) -> Any:
        from mcp.shared.exceptions import MCPError
        from mcp_types import CONNECTION_CLOSED

        try:
            return await asyncio.wait_for(session.call_tool(name, arguments), timeout)
        except MCPError as error:
            if error.code == CONNECTION_CLOSED:
                raise
            raise McpCallFailed(f"{self.spec.name} refused {name}: {error.message[:200]}") from None

    def _broken(self, error: Exception, session: Any) -> None:
        """The session failed: no call uses it again; the supervisor reconnects."""
        if self._session is not session:
            return  # an older session, already replaced
        self._session = None
        log.warning("MCP server %s (%s): %s; reconnecting", self.spec.name, self.where, _describe(error))
        self.last_error = error
        self._loop.call_soon_threadsafe(self._wake_up)

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # -- on the server's loop ---------------------------------------------------

    async def _supervise(self) -> None:
        backoff = INITIAL_BACKOFF_SECONDS
        refused = ""  # the token the server refused: not sent again
        while not self._closing:
            self._wake = asyncio.Event()
            if refused and self._read_token() == refused:
                self._first_attempt.set()
            else:
                refused = ""
                try:
                    await self._serve_once()
                    backoff = INITIAL_BACKOFF_SECONDS
                except McpTokenRejected as error:
                    refused = self._token
                    self.last_error = error
                    log.log(logging.WARNING if self._first_attempt.is_set() else logging.INFO,
                            "%s; it is tried again when the file changes", error)
                except Exception as error:  # the SDK raises anything from OSError to ExceptionGroup
                    self.last_error = error
                    # The first attempt's failure is reported by whoever waits for it.
                    log.log(logging.WARNING if self._first_attempt.is_set() else logging.INFO,
                            "MCP server %s (%s): %s; next attempt in %.0f s",
                            self.spec.name, self.where, _describe(error), backoff)
                finally:
                    self._session = None
                    self._first_attempt.set()
            if self._closing:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TOKEN_POLL_SECONDS if refused else backoff)
            if not refused:
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _read_token(self) -> str:
        """The token file's token now (the one in use if it cannot be read)."""
        from ...errors import UsageError
        from ..home_assistant.client import read_token

        try:
            self._token = read_token(self.spec.token_file, self.spec.token_key)
        except UsageError as error:
            log.debug("%s", error)
        return self._token

    async def _serve_once(self) -> None:
        from mcp import ClientSession

        errors: list[Exception] = []
        for endpoint in self.spec.endpoints or (None,):
            try:
                async with contextlib.AsyncExitStack() as stack:
                    read, write = await stack.enter_async_context(self._transport(endpoint))
                    session = await stack.enter_async_context(ClientSession(read, write))
                    info = await asyncio.wait_for(session.initialize(), self.connect_timeout)
                    self.tools = await asyncio.wait_for(self._list_tools(session), self.connect_timeout)
                    server = getattr(info, "server_info", None)
                    self.server_info = f"{getattr(server, 'name', '?')} {getattr(server, 'version', '')}".strip()
                    self.transport = "stdio" if endpoint is None else endpoint.transport
                    self.endpoint_url = "" if endpoint is None else endpoint.url
                    self.connections += 1
                    log.info("MCP server %s connected (%s over %s): %d tools", self.spec.name, self.server_info,
                             self.transport, len(self.tools))
                    self._session = session
                    self.last_error = None
                    self._first_attempt.set()
                    await self._wake.wait()
                    self._session = None
                    return
            except Exception as error:
                self._session = None
                if _http_status(error) in (401, 403):
                    raise McpTokenRejected(
                        f"MCP server {self.spec.name} at {endpoint.url} refused the token in {self.spec.token_key}",
                        f"{self.spec.spoken_name[0].upper()}{self.spec.spoken_name[1:]} refused my access token.",
                    ) from None
                errors.append(error)
                if self.connections:  # it worked before: a failure now is the server's, not the transport choice
                    raise
        raise errors[-1]

    async def _list_tools(self, session: Any) -> list[Any]:
        tools: list[Any] = []
        cursor = None
        while len(tools) < MAX_LISTED_TOOLS:
            if cursor is None:
                listing = await session.list_tools()
            else:
                from mcp import types

                listing = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
            tools.extend(listing.tools)
            cursor = listing.next_cursor
            if not cursor:
                break
        return tools[:MAX_LISTED_TOOLS]

    def _transport(self, endpoint: Endpoint | None) -> Any:
        if endpoint is None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            # The SDK adds HOME, USER, SHELL, … to any environment; env -i gives
            # the server only the clean one, as [[tools.command]] programs get.
            env = shutil.which("env", path="/usr/bin:/bin") or "/usr/bin/env"
            assignments = [f"{key}={value}" for key, value in self.spec.env.items()]
            parameters = StdioServerParameters(command=env, args=["-i", *assignments, *self.spec.argv], cwd="/")
            return stdio_client(parameters, errlog=sys.__stderr__)
        import httpx2

        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}

        def client(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None) -> Any:
            # No proxy from the environment: the token goes to the configured address only.
            return httpx2.AsyncClient(headers=headers, timeout=timeout or httpx2.Timeout(self.spec.timeout_seconds, read=300),
                                      auth=auth, trust_env=False)

        if endpoint.transport == "sse":
            from mcp.client.sse import sse_client

            return sse_client(endpoint.url, headers=headers, timeout=self.spec.timeout_seconds, httpx_client_factory=client)
        from mcp.client.streamable_http import streamable_http_client

        return _owned(client(headers), lambda http: streamable_http_client(endpoint.url, http_client=http))


@contextlib.asynccontextmanager
async def _owned(http: Any, open_transport: Any) -> Any:
    async with http, open_transport(http) as streams:
        yield streams[0], streams[1]


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def _http_status(error: BaseException) -> int | None:
    for leaf in _leaves(error):
        response = getattr(leaf, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _describe(error: BaseException) -> str:
    """One line for the journal, from the innermost error of an exception group."""
    leaf = _leaves(error)[0]
    text = str(leaf).strip().splitlines()[0] if str(leaf).strip() else ""
    return f"{type(leaf).__name__}: {text[:200]}" if text else type(leaf).__name__


def wait_until(predicate: Any, seconds: float) -> bool:
    """Poll ``predicate`` for up to ``seconds`` (for callers that reconnect)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
