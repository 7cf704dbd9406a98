"""Which model version answers a request: registry aliases (re-read every few seconds, so `unison models promote`
moves live traffic without a redeploy) and canary splits (a weight of the alias's traffic sent to another
version, set at run time through the ingress's `user_config`).

A request that names a version gets exactly that version; one that names only the model (or an alias) gets the
alias's version, or the canary version with the canary's weight. Every answer carries the version that served it.

With `warm_first` (the ingress), traffic follows a moved alias, or goes to a canary, only once the new version is
loaded: until `warmed(model_id)` is called the old version keeps answering, and `wanted()` lists the versions to
load. A promote to a version that cannot load takes nothing down; the reason shows in `warming()`.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from unison.domain import DEFAULT_ALIAS, ModelRef
from unison.model.registry import Registry, RegistryError, select

ALIAS_TTL_S = 2.0


class Canary(BaseModel):
    """Send `weight` of the traffic that would go to the alias's version to `version` instead."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^\d+$", description="The canary version (a registered version number).")
    weight: float = Field(ge=0, le=1, description="Fraction of the alias's traffic sent to the canary (0.1 = 10%).")
    alias: str = Field(default=DEFAULT_ALIAS, description="The alias whose traffic is split.")


class RoutingConfig(BaseModel):
    """The ingress's `user_config`: changed at run time without restarting replicas."""

    model_config = ConfigDict(extra="forbid")

    canaries: dict[str, Canary] = Field(default_factory=dict, description="Model name -> its canary split.")


class UnknownModel(LookupError):
    """No such model or version; the message names what exists (HTTP 404)."""


@dataclass(frozen=True)
class Route:
    name: str
    version: str
    canary: bool = False

    @property
    def model_id(self) -> str:
        """The multiplexed model id (`name:version`) Serve routes on."""
        return f"{self.name}:{self.version}"


class Router:
    """Resolves (model, version-or-alias) to a concrete version, applying canary splits."""

    def __init__(self, registry: Registry, default_model: str, default_alias: str = DEFAULT_ALIAS,
                 rng: random.Random | None = None, warm_first: bool = False) -> None:
        self.registry = registry
        self.default_model = default_model
        self.default_alias = default_alias
        self.config = RoutingConfig()
        self._rng = rng or random.Random()
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._warm_first = warm_first
        self._followed: dict[tuple[str, str], str] = {}  # (model, alias) -> the version its traffic goes to
        self._warm: set[str] = set()  # model ids loaded since they were wanted
        self._wanted: dict[str, str] = {}  # model id -> "loading" or why it failed

    def configure(self, config: dict[str, Any] | RoutingConfig | None) -> RoutingConfig:
        parsed = config if isinstance(config, RoutingConfig) else RoutingConfig.model_validate(config or {})
        for name, canary in parsed.canaries.items():
            if canary.version not in self.registry.versions(name):
                raise UnknownModel(f"canary for {name!r}: version {canary.version} is not registered "
                                   f"(versions: {', '.join(self.registry.versions(name)) or 'none'})")
        with self._lock:
            self.config = parsed
            self._warm.clear()  # canaries are loaded again before they take traffic
        return parsed

    def _entry(self, name: str) -> dict[str, Any]:
        """Versions and aliases of `name`, re-read from the registry at most every ALIAS_TTL_S."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and now - cached[0] < ALIAS_TTL_S:
                return cached[1]
        if name not in self.registry.models():
            known = ", ".join(self.registry.models()) or "none"
            raise UnknownModel(f"unknown model {name!r}; models: {known}")
        entry = {"versions": self.registry.versions(name), "aliases": self.registry.aliases(name)}
        with self._lock:
            self._cache[name] = (now, entry)
        return entry

    def describe(self, name: str) -> dict[str, Any]:
        return dict(self._entry(name))

    def models(self) -> list[str]:
        return self.registry.models()

    def resolve(self, name: str | None = None, tag: str | None = None) -> Route:
        """The version that serves a request for `name` (default: the configured model) and `tag` (a version,
        an alias, `latest`, or nothing for the default alias). The registry's rules pick it (`select`, on the
        cached entry); this layer adds the canary split and, with `warm_first`, holds a moved alias back."""
        try:
            ref = ModelRef(name or self.default_model, tag or None)
        except ValueError as exc:
            raise UnknownModel(str(exc)) from None
        name = ref.name
        entry = self._entry(name)
        versions, aliases = entry["versions"], entry["aliases"]
        try:
            chosen = select(ref, versions, aliases, self.default_alias)
        except RegistryError as exc:
            raise UnknownModel(str(exc)) from None
        if chosen.alias is None:  # an exact version: never held back, never split
            return Route(name, chosen.version)
        alias = chosen.alias
        version = self._follow(name, alias, chosen.version, versions)
        canary = self.config.canaries.get(name)
        if canary is not None and canary.alias == alias and canary.version != version and \
                self._ready(f"{name}:{canary.version}") and self._rng.random() < canary.weight:
            return Route(name, canary.version, canary=True)
        return Route(name, version)

    def _follow(self, name: str, alias: str, version: str, versions: list[str]) -> str:
        """The version `alias` routes to now: `version`, or while that one is not loaded yet, the one before."""
        if not self._warm_first:
            return version
        key = (name, alias)
        with self._lock:
            current = self._followed.get(key)
            if current is None or current == version or current not in versions:
                self._followed[key] = version
                return version
            if f"{name}:{version}" in self._warm:  # loaded for this move: follow (a later move loads again,
                self._warm.discard(f"{name}:{version}")  # as the cache may have evicted it meanwhile)
                self._followed[key] = version
                return version
            self._wanted.setdefault(f"{name}:{version}", "loading")
            return current

    def _ready(self, model_id: str) -> bool:
        if not self._warm_first:
            return True
        with self._lock:
            if model_id in self._warm:
                return True
            self._wanted.setdefault(model_id, "loading")
            return False

    def wanted(self) -> list[str]:
        """Model ids to load before traffic may go to them (none that failed: see `warming`)."""
        with self._lock:
            return [m for m, state in self._wanted.items() if state == "loading"]

    def warmed(self, model_id: str) -> None:
        """`model_id` is loaded: the aliases and canaries that point at it follow on the next request."""
        with self._lock:
            self._warm.add(model_id)
            self._wanted.pop(model_id, None)

    def warm_failed(self, model_id: str, reason: str) -> None:
        """`model_id` could not be loaded: its traffic stays where it is; `retry` wants it again."""
        with self._lock:
            self._wanted[model_id] = f"failed: {reason}"

    def retry(self, model_id: str) -> None:
        with self._lock:
            if model_id in self._wanted:
                self._wanted[model_id] = "loading"

    def warming(self) -> dict[str, str]:
        """Versions waiting to take traffic: "loading" or "failed: <why>"."""
        with self._lock:
            return dict(self._wanted)
