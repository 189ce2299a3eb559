"""Component registry: how optional subsystems (bridge, relay, ...) report their state.

Design:
- A component implements ``Component``: a ``name`` and an async ``status()`` returning a
  frozen ``ComponentStatus`` (healthy flag, a short state word, details). The ops app's
  ``/health/<name>`` endpoints read the registry; nothing is faked: an unregistered
  component answers 503 ``{"status": "disabled"}``.
- The bridge issue registers its real component under ``"bridge"``; ``/health/bridge`` then
  reports what it returns (200 when healthy, 503 otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ComponentStatus:
    healthy: bool
    state: str  # e.g. "ok", "degraded", "syncing", "paused"
    details: Mapping[str, Any] = field(default_factory=dict)


class Component(Protocol):
    @property
    def name(self) -> str: ...

    async def status(self) -> ComponentStatus: ...


class ComponentRegistry:
    def __init__(self) -> None:
        self._components: dict[str, Component] = {}

    def register(self, component: Component) -> None:
        if component.name in self._components:
            raise ValueError(f"component {component.name!r} is already registered")
        self._components[component.name] = component

    def get(self, name: str) -> Component | None:
        return self._components.get(name)

    def names(self) -> list[str]:
        return sorted(self._components)
