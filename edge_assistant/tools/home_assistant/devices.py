"""Which devices the model may touch, found by name, and the one guarded way to
call a service on them.

The model only ever says a name. Our code resolves it among the exposed entities
(never the model: an entity id or a service it makes up has no path to Home
Assistant) and checks every service call against a fixed allowlist of
(domain, service) pairs and data keys, so ``homeassistant.restart``,
``shell_command.*`` or a lock's ``unlock`` cannot be called whatever is asked.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...config import HOME_ASSISTANT_DOMAINS, HomeAssistantConfig
from ...phrases import Phrase, say
from .client import EntityNotFound, HomeAssistantClient, HomeAssistantError, TokenRejected

log = logging.getLogger(__name__)

# Every service edge-assistant can call, with the data keys each may carry.
# Locks, sensors and binary sensors are read only: unlocking a door is not a
# thing to do on the word of whoever speaks near the microphone.
ALLOWED_SERVICES: dict[tuple[str, str], frozenset[str]] = {
    **{(domain, service): frozenset() for domain in ("light", "switch", "fan", "input_boolean")
       for service in ("turn_on", "turn_off", "toggle")},
    ("light", "turn_on"): frozenset({"brightness_pct"}),
    **{("cover", service): frozenset() for service in ("open_cover", "close_cover", "stop_cover")},
    ("climate", "set_temperature"): frozenset({"temperature"}),
    **{("media_player", service): frozenset() for service in ("media_play", "media_pause", "media_stop")},
    ("media_player", "volume_set"): frozenset({"volume_level"}),
    ("scene", "turn_on"): frozenset(),
    ("script", "turn_on"): frozenset(),
}


MAX_NAME_CHARS = 60


class ServiceRefused(HomeAssistantError):
    """A call outside the allowlist: never sent."""

    exit_code = 2
    spoken = Phrase("not_allowed")


class DeviceNotFound(HomeAssistantError):
    spoken = Phrase("device_not_found")


class AmbiguousDevice(HomeAssistantError):
    """Several exposed devices fit the name; ``spoken`` asks which one."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(f"several devices fit: {', '.join(names)}")
        self.spoken = say("which_one", names=", ".join(names[:-1]), last=names[-1])


class DeviceUnavailable(HomeAssistantError):
    spoken = Phrase("device_unavailable")


@dataclass(frozen=True)
class Entity:
    entity_id: str
    name: str  # the friendly name: what the user says and the model repeats

    @property
    def domain(self) -> str:
        return self.entity_id.partition(".")[0]


@dataclass(frozen=True)
class Discovery:
    """What the allowlist found on the server (with each one's state then), and
    what it named that is not there."""

    entities: tuple[Entity, ...]
    states: dict[str, str]
    problems: tuple[str, ...]


def discover(client: HomeAssistantClient, config: HomeAssistantConfig) -> Discovery:
    """The exposed entities: those listed in ``entities``, plus those matching both
    ``domains`` and ``areas`` (an empty one of the two does not narrow; both empty
    expose nothing this way). One ``GET /api/states``, one template per area."""
    states = {state["entity_id"]: state for state in client.states()}
    problems = [f"home_assistant.entities: {entity_id} is not in Home Assistant"
                for entity_id in config.entities if entity_id not in states]
    chosen = [entity_id for entity_id in config.entities if entity_id in states]
    if config.domains or config.areas:
        in_areas = _area_members(client, config.areas, problems) if config.areas else None
        for entity_id in states:
            domain = entity_id.partition(".")[0]
            if domain not in HOME_ASSISTANT_DOMAINS or (config.domains and domain not in config.domains):
                continue
            if in_areas is None or entity_id in in_areas:
                chosen.append(entity_id)
    entities = tuple(_entity(states[entity_id]) for entity_id in dict.fromkeys(chosen))
    problems += _duplicate_names(entities)
    found_states = {entity.entity_id: str(states[entity.entity_id].get("state")) for entity in entities}
    return Discovery(entities, found_states, tuple(problems))


def _area_members(client: HomeAssistantClient, areas: list[str], problems: list[str]) -> set[str]:
    members: set[str] = set()
    for area in areas:
        try:
            found = client.area_entities(area)
        except TokenRejected:
            raise TokenRejected(
                "home_assistant.areas needs a token of a Home Assistant administrator (areas come from its "
                "admin-only template API); list the entities instead, or use an administrator's token"
            ) from None
        if found is None:
            problems.append(f"home_assistant.areas: no area named {area!r} in Home Assistant")
        else:
            members.update(found)
    return members


def _entity(state: dict[str, Any]) -> Entity:
    """Names go into the tool declarations: letters, digits, spaces and plain
    punctuation only, so no name can spell a chat-template token such as ``<|"|>``."""
    name = " ".join(re.sub(r"[^\w '&().,-]", " ", str(state.get("attributes", {}).get("friendly_name") or "")).split())
    return Entity(state["entity_id"], name[:MAX_NAME_CHARS] or state["entity_id"])


def _duplicate_names(entities: tuple[Entity, ...]) -> list[str]:
    by_name: dict[str, list[str]] = {}
    for entity in entities:
        by_name.setdefault(normalized(entity.name), []).append(entity.entity_id)
    return [f"home_assistant: {len(ids)} exposed devices share the name {name!r} ({', '.join(ids)}): "
            "rename one in Home Assistant so a voice can tell them apart"
            for name, ids in by_name.items() if len(ids) > 1]


def normalized(name: str) -> str:
    """Case, punctuation and spacing do not matter, nor a leading "the"."""
    words = re.sub(r"[\W_]+", " ", name.casefold()).split()
    return " ".join(words[1:] if words[:1] == ["the"] and len(words) > 1 else words)


def room_areas(client: HomeAssistantClient, areas: list[str]) -> dict[str, frozenset[str]]:
    """The entity ids in each ``[[satellite]]`` area (README "Rooms"), so "the
    light" said in a room means the one there; an area that cannot be read
    only costs that (logged)."""
    members: dict[str, frozenset[str]] = {}
    for area in dict.fromkeys(areas):
        try:
            found = client.area_entities(area)
        except HomeAssistantError as error:
            log.warning("satellite area %r: cannot read it from Home Assistant (%s): devices are not told apart by room", area, error)
            continue
        if found is None:
            log.warning("satellite area %r: no such area in Home Assistant", area)
        else:
            members[area] = frozenset(found)
    return members


class ExposedDevices:
    """The exposed entities and the only path from a tool to a service call.
    ``areas``: entity ids per room area; ``area``: the area of the room the
    turn was heard in, which decides between devices of the same name."""

    def __init__(
        self, client: HomeAssistantClient, entities: tuple[Entity, ...],
        areas: dict[str, frozenset[str]] | None = None, area: Callable[[], str] = lambda: "",
    ) -> None:
        self.client = client
        self.entities = entities
        self.areas = areas or {}
        self.area = area

    def of(self, domains: tuple[str, ...]) -> list[Entity]:
        return [entity for entity in self.entities if entity.domain in domains]

    def find(self, said: str, domains: tuple[str, ...]) -> Entity:
        """The one exposed entity of these domains the name means: the same name
        (or entity id), else the only one whose name holds all the words said, or
        whose words all occur in what was said. Several: :class:`AmbiguousDevice`."""
        candidates = self.of(domains)
        query = normalized(said)
        if not query:
            raise DeviceNotFound("no device name given")
        for matches in (
            [entity for entity in candidates if query in (normalized(entity.name), entity.entity_id)],
            [entity for entity in candidates if _words_within(query, normalized(entity.name))
             or _words_within(normalized(entity.name), query)],
        ):
            here = [entity for entity in matches if entity.entity_id in self.areas.get(self.area(), ())]
            if len(matches) == 1 or len(here) == 1:
                return matches[0] if len(matches) == 1 else here[0]
            if matches:
                raise AmbiguousDevice(sorted(entity.name for entity in matches))
        raise DeviceNotFound(f"no exposed {'/'.join(domains)} is called {said!r}")

    def state(self, entity: Entity) -> dict[str, Any]:
        """Its current state; a vanished entity is :class:`DeviceNotFound`."""
        try:
            state = self.client.state(entity.entity_id)
        except EntityNotFound:
            raise DeviceNotFound(f"{entity.entity_id} is no longer in Home Assistant") from None
        return state

    def call(self, entity: Entity, service: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Check, call, and return the entity's state afterwards."""
        data = data or {}
        allowed = ALLOWED_SERVICES.get((entity.domain, service))
        if allowed is None or not set(data) <= allowed or entity not in self.entities:
            log.warning("refused %s.%s on %s with %s", entity.domain, service, entity.entity_id, sorted(data))
            raise ServiceRefused(f"{entity.domain}.{service} on {entity.entity_id} is not allowed")
        if self.state(entity).get("state") == "unavailable":
            raise DeviceUnavailable(f"{entity.entity_id} is unavailable")
        log.info("calling %s.%s on %s %s", entity.domain, service, entity.entity_id, data)
        self.client.call_service(entity.domain, service, {"entity_id": entity.entity_id, **data})
        return self.state(entity)


def _words_within(inner: str, outer: str) -> bool:
    return set(inner.split()) <= set(outer.split())
