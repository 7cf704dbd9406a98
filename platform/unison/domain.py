"""The domain's facts, each stated once: its vocabulary, the customer feature views (columns, types, TTLs) and
the push schema, the text limit, and what names a model version (`ModelRef`).

The ground floor: this module imports nothing from `unison`, so every room may import it. The Feast repository
(`features/triage.py`), the feature store access, the training-time join, the generator's Parquet schemas and
the scoring paths all read these definitions instead of keeping their own copies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

# ---------------------------------------------------------------------------------------------- vocabulary

CATEGORIES: tuple[str, ...] = ("billing", "technical", "account", "shipping", "cancellation", "other")
PLANS: tuple[str, ...] = ("free", "basic", "pro", "enterprise")
CHANNELS: tuple[str, ...] = ("email", "chat", "phone", "web")
REGIONS: tuple[str, ...] = ("na", "emea", "apac", "latam")
URGENCY_WORDS: tuple[str, ...] = ("urgent", "immediately", "asap", "down", "again")

# Longest subject + body (in characters) any path scores; longer is refused (HTTP 413, the stream's DLQ, the batch
# job's error rows) and the Predictor's default.
MAX_TEXT_CHARS = 20_000

# ---------------------------------------------------------------------------------------------- feature views

ColumnType = Literal["string", "int32", "int64", "float64"]

ENTITY = "customer"
ENTITY_KEY = "customer_id"  # int64, as the online and offline stores keep it
EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"


@dataclass(frozen=True)
class Column:
    """One feature column: its name, storage type, and whether a push may leave it empty."""

    name: str
    dtype: ColumnType
    nullable: bool = False


@dataclass(frozen=True)
class FeatureViewSpec:
    """A Feast feature view keyed by the customer: its columns, and the age past which a value counts as missing
    (`ttl`; None: never). A value is valid for a time t when its event time lies in [t - ttl, t]."""

    name: str
    columns: tuple[Column, ...]
    ttl: timedelta | None
    description: str

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


CUSTOMER_PROFILE = FeatureViewSpec(
    name="customer_profile",
    columns=(Column("plan", "string"), Column("tenure_days", "int32"), Column("lifetime_value", "float64")),
    ttl=None,  # profiles do not expire
    description="Static customer attributes.",
)
CUSTOMER_ACTIVITY = FeatureViewSpec(
    name="customer_activity",
    columns=(
        Column("open_tickets", "int32"),
        Column("tickets_last_90d", "int32"),
        Column("last_csat", "float64", nullable=True),  # never surveyed
        Column("days_since_last_login", "int32"),
    ),
    ttl=timedelta(days=365),  # older snapshots count as missing
    description="Customer activity snapshots; updated by push from the customer-events stream.",
)
FEATURE_VIEWS: tuple[FeatureViewSpec, ...] = (CUSTOMER_PROFILE, CUSTOMER_ACTIVITY)
VIEWS: dict[str, tuple[str, ...]] = {view.name: view.column_names for view in FEATURE_VIEWS}
# Every customer feature the transform reads, in view order.
CUSTOMER_FEATURES: tuple[str, ...] = tuple(name for view in FEATURE_VIEWS for name in view.column_names)

# The one view the push source (`customer_activity_push`) feeds, and what a push must carry:
# column -> (kind, nullable), kinds "int", "float", "time". A push may also carry `created_timestamp`.
PUSH_VIEW = CUSTOMER_ACTIVITY.name
_KINDS: dict[ColumnType, str] = {"string": "string", "int32": "int", "int64": "int", "float64": "float"}
PUSH_SCHEMA: dict[str, tuple[str, bool]] = {
    ENTITY_KEY: ("int", False),
    **{c.name: (_KINDS[c.dtype], c.nullable) for c in CUSTOMER_ACTIVITY.columns},
    EVENT_TIMESTAMP: ("time", False),
}

# ---------------------------------------------------------------------------------------------- model refs

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
LATEST = "latest"  # a selector (the newest version), never an alias
DEFAULT_ALIAS = "production"  # what a bare model name means, when the alias exists (else: latest)


def is_model_name(name: str) -> bool:
    """Lowercase letters, digits, '-' and '_', starting with a letter or digit (a registry directory's name)."""
    return isinstance(name, str) and _MODEL_NAME.fullmatch(name) is not None


def is_version(tag: str) -> bool:
    """A registered version is a number (the registry's directories `1`, `2`, ...)."""
    return tag.isdigit()


def alias_problem(alias: str) -> str | None:
    """Why `alias` cannot name an alias (None when it can): it must be text, and not read as a version selector."""
    if not isinstance(alias, str) or not alias:
        return f"an alias must be a non-empty string, got {alias!r}"
    if alias == LATEST or is_version(alias):
        return f"{alias!r} cannot be an alias: it reads as a version selector"
    return None


@dataclass(frozen=True)
class ModelRef:
    """A model and optionally which version of it: `name`, `name:<alias>`, `name:latest` or `name:<version>`.

    No tag means the default alias (`production`) when the model has it, else the latest version. `str()` gives
    the text `parse` reads back.
    """

    name: str
    tag: str | None = None

    def __post_init__(self) -> None:
        if not is_model_name(self.name):
            raise ValueError(f"invalid model name {self.name!r}: use lowercase letters, digits, '-' and '_', "
                             "starting with a letter or digit")
        if self.tag is not None and (not isinstance(self.tag, str) or not self.tag):
            raise ValueError(f"model {self.name!r}: the tag after ':' is empty; name an alias or a version "
                             f"(or write just {self.name!r} for the default)")

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        """`"triage"`, `"triage:production"`, `"triage:3"` -> ModelRef; ValueError naming what is wrong."""
        if not isinstance(ref, str):
            raise ValueError(f"a model reference must be a string such as 'triage:production', got "
                             f"{type(ref).__name__}")
        if not ref:
            raise ValueError("empty model reference: expected 'name', 'name:alias' or 'name:version'")
        name, colon, tag = ref.partition(":")
        if colon and not tag:
            raise ValueError(f"model reference {ref!r} ends in ':': name an alias or a version after it "
                             f"(or write just {name!r} for the default)")
        return cls(name, tag if colon else None)

    @property
    def version(self) -> str | None:
        """The exact version the tag names, if it names one."""
        return self.tag if self.tag is not None and is_version(self.tag) else None

    @property
    def alias(self) -> str | None:
        """The alias the tag names (`latest` included), if it names no exact version."""
        return self.tag if self.tag is not None and not is_version(self.tag) else None

    def __str__(self) -> str:
        return self.name if self.tag is None else f"{self.name}:{self.tag}"
