"""Home Assistant's REST API through the standard library, with short timeouts.

Each failure is an error class with a sentence the assistant can speak, so a tool
turns any of them into an apology and the turn goes on. The token is read from a
file only its owner can read, is sent only to the configured address (no proxy,
no redirects: a redirect would carry the Authorization header elsewhere) and is
never logged.
"""

from __future__ import annotations

import http.client
import json
import logging
import stat
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ...errors import EdgeAssistantError, UsageError
from ...phrases import Phrase

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 16 * 1024 * 1024  # /api/states of a large home is a few MB


class HomeAssistantError(EdgeAssistantError):
    """A request that went wrong; ``spoken`` is what the user hears."""

    exit_code = 6
    spoken = Phrase("ha_failed")


class HomeAssistantUnreachable(HomeAssistantError):
    spoken = Phrase("ha_unreachable")


class TokenRejected(HomeAssistantError):
    """401/403: a wrong, revoked or expired token. Configuration: no restart fixes it."""

    exit_code = 2
    spoken = Phrase("ha_token_rejected")


class EntityNotFound(HomeAssistantError):
    spoken = Phrase("device_not_found")


def read_token(token_file: str, key: str = "home_assistant.token_file") -> str:
    """The token from ``token_file`` (the setting ``key``), refused when others may read it."""
    path = Path(token_file).expanduser()
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise UsageError(
                f"{key}: {path} is open to group or others (mode {stat.S_IMODE(mode):04o}); "
                f"a token there controls the home: chmod 600 {path}"
            )
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UsageError(f"{key}: {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{key}: cannot read {path}: {error}") from None
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        kind = "long-lived access token" if key.startswith("home_assistant.") else "access token"
        raise UsageError(f"{key}: {path} must hold one {kind} and nothing else")
    return token


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} refused", headers, fp)


class HomeAssistantClient:
    """The four endpoints edge-assistant uses, plus ``/api/template`` for areas."""

    def __init__(self, url: str, token: str, timeout_seconds: float) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_seconds = timeout_seconds
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())

    def __repr__(self) -> str:  # no token in tracebacks or logs
        return f"HomeAssistantClient({self.url!r})"

    def api_status(self) -> dict[str, Any]:
        """``GET /api/``: reachable, and the token accepted."""
        return self._request("GET", "/api/")

    def server_config(self) -> dict[str, Any]:
        """``GET /api/config``: version and location name, for ``ha check``."""
        return self._request("GET", "/api/config")

    def states(self) -> list[dict[str, Any]]:
        return self._request("GET", "/api/states")

    def state(self, entity_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/states/{urllib.parse.quote(entity_id, safe='')}")

    def call_service(self, domain: str, service: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """``POST /api/services/<domain>/<service>``. Unchecked: only
        :class:`~.devices.ExposedDevices` calls it, after its allowlist."""
        path = f"/api/services/{urllib.parse.quote(domain, safe='')}/{urllib.parse.quote(service, safe='')}"
        return self._request("POST", path, data)

    def area_entities(self, area: str) -> list[str] | None:
        """The entity ids in an area (None: no such area). HA 2024.1's REST API has
        no area listing; its template API has, and it is admin-only."""
        name = json.dumps(area)  # area names are letters, digits, spaces, - and _ (config check)
        template = f"{{% if area_id({name}) %}}{{{{ area_entities({name}) | tojson }}}}{{% else %}}null{{% endif %}}"
        text = self._request("POST", "/api/template", {"template": template}, raw=True)
        try:
            found = json.loads(text)
        except ValueError:
            raise HomeAssistantError(f"Home Assistant answered the area query for {area!r} with {text[:80]!r}") from None
        return None if found is None else [str(entity) for entity in found]

    def _request(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        request = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=self.timeout_seconds) as response:
                payload = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as error:
            log.debug("%s %s: HTTP %s", method, path, error.code)
            raise _http_error(error.code, method, path, self.url) from None
        except (OSError, http.client.HTTPException) as error:  # refused, timed out, reset, no route
            reason = getattr(error, "reason", None) or error
            log.debug("%s %s: %s", method, path, reason)
            raise HomeAssistantUnreachable(f"cannot reach Home Assistant at {self.url}: {reason}") from None
        log.debug("%s %s: %d bytes", method, path, len(payload))
        if len(payload) > MAX_RESPONSE_BYTES:
            raise HomeAssistantError(f"{method} {path}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        text = payload.decode("utf-8", errors="replace")
        if raw:
            return text
        try:
            return json.loads(text)
        except ValueError:
            raise HomeAssistantError(f"{method} {path}: Home Assistant answered with something not JSON") from None


def _http_error(code: int, method: str, path: str, url: str) -> HomeAssistantError:
    if code in (401, 403):
        return TokenRejected(f"Home Assistant at {url} refused the token in home_assistant.token_file (HTTP {code})")
    if code == 404:
        return EntityNotFound(f"{method} {path}: not found in Home Assistant")
    return HomeAssistantError(f"{method} {path}: Home Assistant answered HTTP {code}")
