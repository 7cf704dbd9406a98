"""A per-replica model cache bounded by resident bytes, on top of Serve's model multiplexing.

Serve's `@serve.multiplexed` keeps the loaded models in LRU order and tells the router which replica holds
which model, so requests for a model go to a replica that already has it. It bounds the cache by a count only;
`ModelCache` adds the byte budget: before a load it evicts least-recently-used models (through Serve's own
`unload_model_lru`, so the router learns of it) until the newcomer fits, and it accounts each model by the
resident memory it was measured to add (process RSS before and after load and a warm-up prediction), not by a
guess. A model larger than the whole budget is refused before anything is evicted.
"""

from __future__ import annotations

import ctypes
import gc
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field

from unison.ops import metrics

log = logging.getLogger("unison.serving")


class CacheConfig(BaseModel):
    """Part of the model deployment's `user_config`."""

    model_config = ConfigDict(extra="forbid")

    budget_bytes: int = Field(default=1 << 30, ge=1 << 20,
                              description="Resident memory the loaded models of one replica may use together.")


class ModelTooLarge(RuntimeError):
    """The model alone needs more than the replica's budget (HTTP 507)."""


@dataclass
class CacheStats:
    loads: int = 0
    evictions: int = 0
    hits: int = 0
    misses: int = 0
    refused: int = 0
    load_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {"loads": self.loads, "evictions": self.evictions, "hits": self.hits, "misses": self.misses,
                "refused": self.refused, "hit_rate": self.hits / lookups if lookups else 0.0,
                "last_load_seconds": dict(self.load_seconds)}


def resident_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def release_memory() -> None:
    """Return freed heap to the OS after an eviction (glibc keeps it otherwise, and RSS would not drop)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class ModelCache:
    """Byte accounting and eviction decisions; Serve's multiplex wrapper holds the models themselves."""

    def __init__(self, config: CacheConfig | None = None) -> None:
        self.config = config or CacheConfig()
        self.resident: dict[str, int] = {}  # model id -> measured bytes, for loaded models
        self.measured: dict[str, int] = {}  # model id -> last measurement, kept across evictions
        self.stats = CacheStats()
        self.replica = "-"  # the owning replica's name, for the bytes gauge

    @property
    def total(self) -> int:
        return sum(self.resident.values())

    def expected(self, model_id: str, disk_bytes: int) -> int:
        """What loading `model_id` will add: its last measurement, else the size of its weights on disk."""
        return self.measured.get(model_id, disk_bytes)

    async def make_room(self, model_id: str, needed: int, loaded: MutableMapping[str, Any],
                        unload_lru: Callable[[], Awaitable[None]]) -> None:
        """Evict LRU models until `needed` more bytes fit; refuse (ModelTooLarge) if it can never fit."""
        if needed > self.config.budget_bytes:
            self.stats.refused += 1
            raise ModelTooLarge(f"model {model_id} needs about {needed / 2**20:.0f} MiB, more than this replica's "
                                f"budget of {self.config.budget_bytes / 2**20:.0f} MiB (cache.budget_bytes)")
        await self.shrink(loaded, unload_lru, self.config.budget_bytes - needed)

    async def shrink(self, loaded: MutableMapping[str, Any], unload_lru: Callable[[], Awaitable[None]],
                     limit: int | None = None) -> list[str]:
        """Evict LRU models until the accounted total is at most `limit` (default: the budget)."""
        limit = self.config.budget_bytes if limit is None else limit
        evicted = []
        while loaded and self.total > limit:
            victim = next(iter(loaded))
            await unload_lru()
            self.forget(victim)
            evicted.append(victim)
        if evicted:
            release_memory()
            log.info("evicted %s; %0.f MiB resident in %d model(s), budget %.0f MiB", ", ".join(evicted),
                     self.total / 2**20, len(self.resident), self.config.budget_bytes / 2**20)
        return evicted

    def loaded(self, model_id: str, measured: int, seconds: float) -> None:
        self.resident[model_id] = self.measured[model_id] = max(measured, 0)
        self.stats.loads += 1
        self.stats.load_seconds[model_id] = seconds
        metrics.inc("unison_model_cache_loads_total", model=model_id)
        metrics.set_gauge("unison_model_cache_bytes", self.total, replica=self.replica)

    def forget(self, model_id: str) -> None:
        if self.resident.pop(model_id, None) is not None:
            self.stats.evictions += 1
            metrics.inc("unison_model_cache_evictions_total", model=model_id)
            metrics.set_gauge("unison_model_cache_bytes", self.total, replica=self.replica)

    def lookup(self, hit: bool) -> None:
        if hit:
            self.stats.hits += 1
        else:
            self.stats.misses += 1

    def report(self) -> dict[str, Any]:
        return {"budget_bytes": self.config.budget_bytes, "resident_bytes": self.total,
                "models": {k: {"resident_bytes": v} for k, v in self.resident.items()},
                "process_resident_bytes": resident_bytes(), **self.stats.as_dict()}
