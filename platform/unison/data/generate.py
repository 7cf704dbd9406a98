"""Deterministic demo data for support-ticket triage: customers, their activity history, and tickets.

Why it exists: the batch, online and streaming paths must be exercised on the same realistic data, at a
scale large enough to measure throughput, without shipping a data set. Everything is vectorized (no Python
loop per row) so a million tickets take seconds, and every table comes from its own random stream derived
from one seed, so the same arguments always give the same tables and the labelled evaluation set does not
change when the size of the scoring table does.

Tables (Parquet, snappy), written atomically under the output directory:

- ``customer_profile``: one row per customer, static attributes (Feast feature view source).
- ``customer_activity``: 1-6 snapshots per customer inside the time window, values drifting between
  snapshots, so a point-in-time join gives a different answer than "latest value" (Feast feature view source).
  A dataset directory (``customer_activity.parquet/``, these rows its first part): feature pushes append parts.
- ``tickets``: the unlabelled table production scores.
- ``train`` / ``eval``: labelled tickets (``category`` and ``priority``) for fine-tuning and evaluation.

The tickets' text (the templates and their vocabulary, which ones a ticket uses, rendering) is
``unison.data.templates``; this module draws everything else and writes the tables.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from unison.data.dataset import write_dataset, write_file
from unison.data.templates import TextDraws, draw_text, render_text
from unison.domain import (
    CATEGORIES,
    CHANNELS,
    CREATED_TIMESTAMP,
    CUSTOMER_ACTIVITY,
    CUSTOMER_PROFILE,
    ENTITY_KEY,
    EVENT_TIMESTAMP,
    PLANS,
    REGIONS,
    URGENCY_WORDS,
    FeatureViewSpec,
)

# The vocabulary (CATEGORIES, PLANS, CHANNELS, REGIONS, URGENCY_WORDS) and the feature views' columns are
# unison.domain's; this module only draws values for them.

TS = pa.timestamp("us", tz="UTC")
_ARROW_TYPES = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64()}


def _view_schema(view: FeatureViewSpec, *extra: tuple[str, pa.DataType]) -> pa.Schema:
    """A feature view's source table: the entity key, the view's columns, `extra` ones, then the two times."""
    return pa.schema([(ENTITY_KEY, pa.int64()), *((c.name, _ARROW_TYPES[c.dtype]) for c in view.columns), *extra,
                      (EVENT_TIMESTAMP, TS), (CREATED_TIMESTAMP, TS)])


CUSTOMER_PROFILE_SCHEMA = _view_schema(CUSTOMER_PROFILE, ("region", pa.string()))
CUSTOMER_ACTIVITY_SCHEMA = _view_schema(CUSTOMER_ACTIVITY)
TICKETS_SCHEMA = pa.schema(
    [
        ("ticket_id", pa.string()),
        ("customer_id", pa.int64()),
        ("channel", pa.string()),
        ("subject", pa.string()),
        ("body", pa.string()),
        ("created_at", TS),
    ]
)
LABELLED_TICKETS_SCHEMA = TICKETS_SCHEMA.append(pa.field("category", pa.string())).append(
    pa.field("priority", pa.float64())
)

FILE_NAMES: dict[str, str] = {
    "customer_profile": "customer_profile.parquet",
    "customer_activity": "customer_activity.parquet",
    "tickets": "tickets.parquet",
    "train": "train.parquet",
    "eval": "eval.parquet",
}

_US_PER_SECOND = 1_000_000
_US_PER_DAY = 86_400 * _US_PER_SECOND
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Rows rendered (and written as one Parquet row group) at a time: bounds memory for large tables.
_CHUNK_ROWS = 250_000

# Order of the spawned seed streams. Append new streams at the end: reordering changes every table.
_STREAM_PROFILE, _STREAM_ACTIVITY, _STREAM_CUSTOMER_WEIGHTS, _STREAM_TICKETS, _STREAM_TRAIN, _STREAM_EVAL = (
    range(6)
)
_N_STREAMS = 6

_PLAN_P = np.array([0.40, 0.30, 0.20, 0.10])
_REGION_P = np.array([0.40, 0.30, 0.20, 0.10])
_CHANNEL_P = np.array([0.45, 0.25, 0.15, 0.15])
_CATEGORY_P = np.array([0.22, 0.30, 0.16, 0.14, 0.08, 0.10])  # order of CATEGORIES

# Priority model. Index order follows CATEGORIES and PLANS.
_PRIORITY_INTERCEPT = -1.6
_CATEGORY_URGENCY = np.array([0.5, 0.9, 0.3, 0.4, 1.1, -0.9])
_PLAN_WEIGHT = np.array([-0.5, 0.0, 0.4, 0.9])

_URGENCY_PATTERN = r"\b(" + "|".join(URGENCY_WORDS) + r")\b"

@dataclass(frozen=True)
class GenerationReport:
    """What `generate` wrote, so the CLI can print it without reopening the files."""

    out_dir: Path
    files: dict[str, Path]
    rows: dict[str, int]
    seconds: float
    tickets_per_second: float


# ---------------------------------------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------------------------------------


def priority_score(
    category: npt.ArrayLike,
    plan: npt.ArrayLike,
    lifetime_value: npt.ArrayLike,
    open_tickets: npt.ArrayLike,
    last_csat: npt.ArrayLike,
    urgency_hits: npt.ArrayLike,
    noise: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """Priority label in [0, 1]: the ground truth the model learns, public so it can be documented and tested.

    Customer features must be the values as of the ticket time (point-in-time), not the latest ones.
    `category` and `plan` are names (or integer indexes into CATEGORIES / PLANS); `last_csat` may be NaN
    (never answered a survey: neutral); `urgency_hits` is `urgency_hits(text)`; `noise` is added to the
    logit (the generator uses N(0, 0.35)). Higher for cancellation/technical tickets, bigger plans, valuable
    customers, many open tickets, low satisfaction and urgent wording.
    """
    cat = _codes(category, CATEGORIES, "category")
    plan_idx = _codes(plan, PLANS, "plan")
    ltv = np.maximum(np.asarray(lifetime_value, dtype=np.float64), 0.0)
    open_t = np.clip(np.asarray(open_tickets, dtype=np.float64), 0.0, 8.0)
    csat = np.asarray(last_csat, dtype=np.float64)
    hits = np.clip(np.asarray(urgency_hits, dtype=np.float64), 0.0, 3.0)
    logit = (
        _PRIORITY_INTERCEPT
        + _CATEGORY_URGENCY[cat]
        + _PLAN_WEIGHT[plan_idx]
        + 0.3 * np.log1p(ltv / 1_000.0)
        + 0.25 * open_t
        + np.where(np.isnan(csat), 0.0, 0.45 * (3.0 - np.nan_to_num(csat, nan=3.0)))
        + 0.7 * hits
    )
    if noise is not None:
        logit = logit + np.asarray(noise, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-logit))


def urgency_hits(text: pa.Array | pa.ChunkedArray | npt.ArrayLike) -> npt.NDArray[np.int64]:
    """How many urgency words (URGENCY_WORDS, whole words, any case) each text contains; input to priority."""
    arr = text if isinstance(text, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(text, dtype=object))
    counts = pc.count_substring_regex(arr, _URGENCY_PATTERN, ignore_case=True)
    return np.asarray(counts.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)


def generate(
    out_dir: Path,
    customers: int = 1_000,
    tickets: int = 10_000,
    seed: int = 7,
    eval_tickets: int = 2_000,
    train_tickets: int = 4_000,
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    days: int = 90,
) -> GenerationReport:
    """Write the five demo tables under `out_dir`; same arguments, same tables.

    Train and eval depend only on (seed, customers, their own size, start, days), never on `tickets`,
    so the evaluation set stays fixed when the scoring table is resized. Timestamps cover
    [start, start + days). `start` must be timezone-aware.
    """
    _validate(
        customers=customers,
        tickets=tickets,
        seed=seed,
        eval_tickets=eval_tickets,
        train_tickets=train_tickets,
        days=days,
        start=start,
    )
    began = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start_us = (start - _EPOCH) // timedelta(microseconds=1)
    window_us = days * _US_PER_DAY
    streams = np.random.SeedSequence(seed).spawn(_N_STREAMS)

    def rng(stream: int) -> np.random.Generator:
        return np.random.default_rng(streams[stream])

    profile = _customer_profile(rng(_STREAM_PROFILE), customers, start_us)
    activity = _customer_activity(rng(_STREAM_ACTIVITY), profile, start_us, window_us)
    # Ticket volume per customer is skewed: a few customers file many tickets.
    weights = rng(_STREAM_CUSTOMER_WEIGHTS).lognormal(0.0, 1.3, customers)
    customer_p = weights / weights.sum()
    world = _World(
        profile=profile, activity=activity, customer_p=customer_p, start_us=start_us, window_us=window_us
    )

    files = {name: out_dir / file_name for name, file_name in FILE_NAMES.items()}
    write_file(files["customer_profile"], CUSTOMER_PROFILE_SCHEMA, iter([profile]))
    write_dataset(files["customer_activity"], CUSTOMER_ACTIVITY_SCHEMA, iter([activity]))
    write_file(
        files["tickets"],
        TICKETS_SCHEMA,
        _ticket_chunks(rng(_STREAM_TICKETS), world, tickets, "T", labelled=False),
    )
    write_file(
        files["train"],
        LABELLED_TICKETS_SCHEMA,
        _ticket_chunks(rng(_STREAM_TRAIN), world, train_tickets, "R", labelled=True),
    )
    write_file(
        files["eval"],
        LABELLED_TICKETS_SCHEMA,
        _ticket_chunks(rng(_STREAM_EVAL), world, eval_tickets, "E", labelled=True),
    )

    seconds = time.perf_counter() - began
    rows = {
        "customer_profile": profile.num_rows,
        "customer_activity": activity.num_rows,
        "tickets": tickets,
        "train": train_tickets,
        "eval": eval_tickets,
    }
    all_tickets = tickets + train_tickets + eval_tickets
    return GenerationReport(
        out_dir=out_dir,
        files=files,
        rows=rows,
        seconds=seconds,
        tickets_per_second=all_tickets / seconds if seconds > 0 else 0.0,
    )


# ---------------------------------------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------------------------------------


def _validate(
    *,
    customers: int,
    tickets: int,
    seed: int,
    eval_tickets: int,
    train_tickets: int,
    days: int,
    start: datetime,
) -> None:
    minimums = {
        "customers": (customers, 1),
        "tickets": (tickets, 0),
        "seed": (seed, 0),
        "eval_tickets": (eval_tickets, 0),
        "train_tickets": (train_tickets, 0),
        "days": (days, 1),
    }
    for name, (value, minimum) in minimums.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if not isinstance(start, datetime) or start.tzinfo is None or start.utcoffset() is None:
        raise ValueError(f"start must be a timezone-aware datetime, got {start!r}")


def _codes(values: npt.ArrayLike, vocabulary: tuple[str, ...], name: str) -> npt.NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        codes = arr.astype(np.int64)
    else:
        codes = np.asarray(pd.Categorical(arr.ravel(), categories=list(vocabulary)).codes, dtype=np.int64)
        codes = codes.reshape(arr.shape)
    if codes.size and (codes.min() < 0 or codes.max() >= len(vocabulary)):
        raise ValueError(f"{name} has values outside {vocabulary}")
    return codes


def _timestamps(us: npt.NDArray[np.int64]) -> pa.Array:
    return pa.array(us, pa.int64()).cast(TS)


def _vocab(words: tuple[str, ...]) -> pa.Array:
    return pa.array(list(words), pa.string())


def _group_cumsum(increments: npt.NDArray[np.float64], starts: npt.NDArray[np.int64],
                  counts: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Cumulative sum restarting at each group start (groups are contiguous): a per-customer random walk."""
    total = np.cumsum(increments)
    before_group = total[starts] - increments[starts]
    return total - np.repeat(before_group, counts)


def _customer_profile(rng: np.random.Generator, n: int, start_us: int) -> pa.Table:
    plan = rng.choice(len(PLANS), size=n, p=_PLAN_P)
    tenure_mean = np.array([180.0, 365.0, 600.0, 1_000.0])[plan]
    tenure = np.minimum(np.floor(rng.exponential(tenure_mean)), 3_650).astype(np.int32)
    monthly_price = np.array([0.0, 15.0, 49.0, 399.0])[plan]
    ltv = monthly_price * (tenure / 30.4) * rng.lognormal(0.0, 0.3, n)
    # Free customers occasionally buy one-off items (hardware, add-ons).
    ltv += np.where(rng.random(n) < 0.2, rng.exponential(40.0, n), 0.0)
    region = rng.choice(len(REGIONS), size=n, p=_REGION_P)
    event_us = start_us - tenure.astype(np.int64) * _US_PER_DAY
    created_us = event_us + rng.integers(1, 3_600, n) * _US_PER_SECOND
    return pa.Table.from_arrays(
        [
            pa.array(np.arange(1, n + 1, dtype=np.int64)),
            _vocab(PLANS).take(plan),
            pa.array(tenure, pa.int32()),
            pa.array(np.round(np.maximum(ltv, 0.0), 2), pa.float64()),
            _vocab(REGIONS).take(region),
            _timestamps(event_us),
            _timestamps(created_us),
        ],
        schema=CUSTOMER_PROFILE_SCHEMA,
    )


def _customer_activity(
    rng: np.random.Generator, profile: pa.Table, start_us: int, window_us: int
) -> pa.Table:
    n = profile.num_rows
    plan = _codes(profile.column("plan").to_numpy(), PLANS, "plan")
    counts = rng.integers(1, 7, n)  # 1..6 snapshots per customer
    total = int(counts.sum())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    customer_id = np.repeat(np.arange(1, n + 1, dtype=np.int64), counts)
    offset_us = rng.integers(1, window_us, total)
    offset_us[starts] = 0  # first snapshot at `start`: every ticket in the window has one before it
    order = np.lexsort((offset_us, customer_id))
    offset_us = offset_us[order]  # customer_id is already grouped, sorting only orders time within a customer

    plan_rows = np.repeat(plan, counts)
    is_start = np.zeros(total, dtype=bool)
    is_start[starts] = True

    def walk(initial: npt.ArrayLike, steps: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Per-customer random walk: the initial value at the first snapshot, then the steps."""
        return _group_cumsum(np.where(is_start, initial, steps).astype(np.float64), starts, counts)

    open_init = rng.poisson(np.array([0.3, 0.5, 0.8, 1.5])[plan_rows])
    open_step = rng.choice(np.array([-1.0, 0.0, 1.0]), size=total, p=[0.3, 0.4, 0.3])
    open_tickets = np.maximum(walk(open_init, open_step), 0)

    recent_init = rng.poisson(np.array([1.0, 2.0, 3.0, 5.0])[plan_rows])
    recent_step = rng.integers(-1, 3, total).astype(np.float64)
    recent = np.maximum(walk(recent_init, recent_step), 0)
    recent = np.maximum(recent, open_tickets)

    csat_init = rng.uniform(1.0, 5.0, total)
    csat_step = rng.normal(0.0, 0.6, total)
    csat = np.round(np.clip(walk(csat_init, csat_step), 1.0, 5.0), 1)
    never_answered = np.repeat(rng.random(n) < 0.10, counts)

    login_init = rng.exponential(np.array([20.0, 10.0, 5.0, 3.0])[plan_rows])
    login_step = rng.normal(0.0, 4.0, total)
    login = np.round(np.maximum(walk(login_init, login_step), 0.0))

    event_us = start_us + offset_us
    created_us = event_us + rng.integers(0, 300, total) * _US_PER_SECOND
    return pa.Table.from_arrays(
        [
            pa.array(customer_id),
            pa.array(open_tickets.astype(np.int32)),
            pa.array(recent.astype(np.int32)),
            pa.array(csat, pa.float64(), mask=never_answered),
            pa.array(login.astype(np.int32)),
            _timestamps(event_us),
            _timestamps(created_us),
        ],
        schema=CUSTOMER_ACTIVITY_SCHEMA,
    )


@dataclass(frozen=True)
class _World:
    """The customer side every ticket table draws from."""

    profile: pa.Table
    activity: pa.Table
    customer_p: npt.NDArray[np.float64]
    start_us: int
    window_us: int


@dataclass(frozen=True)
class _TicketDraws:
    """Every random choice of one ticket table, drawn up front so rendering can be chunked freely."""

    created_us: npt.NDArray[np.int64]
    customer_id: npt.NDArray[np.int64]
    channel: npt.NDArray[np.int64]
    category: npt.NDArray[np.int64]
    text: TextDraws  # templates and slot values (`unison.data.templates`)
    noise: npt.NDArray[np.float64]


def _draw_tickets(rng: np.random.Generator, world: _World, n: int) -> _TicketDraws:
    created_us = world.start_us + np.sort(rng.integers(0, world.window_us, n))
    customer_id = rng.choice(len(world.customer_p), size=n, p=world.customer_p).astype(np.int64) + 1
    channel = rng.choice(len(CHANNELS), size=n, p=_CHANNEL_P)
    category = rng.choice(len(CATEGORIES), size=n, p=_CATEGORY_P)
    if n >= len(CATEGORIES):  # every category present, whatever the sample size
        category[rng.choice(n, size=len(CATEGORIES), replace=False)] = np.arange(len(CATEGORIES))

    text = draw_text(rng, category, created_us // _US_PER_DAY)
    noise = rng.normal(0.0, 0.35, n)
    return _TicketDraws(
        created_us=created_us,
        customer_id=customer_id,
        channel=channel,
        category=category,
        text=text,
        noise=noise,
    )


def _ticket_ids(prefix: str, first: int, n: int) -> pa.Array:
    numbers = pc.cast(pa.array(np.arange(first, first + n, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(numbers, 10, "0"), "")


def _as_of_activity(world: _World, customer_id: npt.NDArray[np.int64],
                    created_us: npt.NDArray[np.int64]) -> pd.DataFrame:
    """Activity values as of each ticket (latest snapshot at or before it): a point-in-time join."""
    activity = world.activity
    right = pd.DataFrame(
        {
            "customer_id": activity.column("customer_id").to_numpy(),
            "ts": activity.column("event_timestamp").cast(pa.int64()).to_numpy(),
            "open_tickets": activity.column("open_tickets").to_numpy(),
            "last_csat": activity.column("last_csat").to_numpy(zero_copy_only=False),
        }
    ).sort_values("ts", kind="stable")
    left = pd.DataFrame({"customer_id": customer_id, "ts": created_us})  # created_us is sorted
    joined = pd.merge_asof(left, right, on="ts", by="customer_id", direction="backward")
    if joined["open_tickets"].isna().any():
        raise RuntimeError("a ticket has no activity snapshot before it; snapshots must start at `start`")
    return joined


def _ticket_chunks(
    rng: np.random.Generator, world: _World, n: int, prefix: str, *, labelled: bool
) -> Iterator[pa.Table]:
    draws = _draw_tickets(rng, world, n)
    customer_plans = world.profile.column("plan").combine_chunks()
    schema = LABELLED_TICKETS_SCHEMA if labelled else TICKETS_SCHEMA
    if labelled:
        as_of = _as_of_activity(world, draws.customer_id, draws.created_us)
        open_tickets = as_of["open_tickets"].to_numpy(dtype=np.float64)
        last_csat = as_of["last_csat"].to_numpy(dtype=np.float64, na_value=np.nan)
        ltv = world.profile.column("lifetime_value").to_numpy()[draws.customer_id - 1]
        all_plans = _codes(customer_plans.to_numpy(zero_copy_only=False), PLANS, "plan")
        plan_codes = all_plans[draws.customer_id - 1]
    for begin in range(0, n, _CHUNK_ROWS):
        rows = slice(begin, min(begin + _CHUNK_ROWS, n))
        customer_id = draws.customer_id[rows]
        plans = customer_plans.take(customer_id - 1)
        subject, body = render_text(draws.text, rows, plans)
        columns = [
            _ticket_ids(prefix, begin + 1, len(customer_id)),
            pa.array(customer_id),
            _vocab(CHANNELS).take(draws.channel[rows]),
            subject,
            body,
            _timestamps(draws.created_us[rows]),
        ]
        if labelled:
            hits = urgency_hits(subject) + urgency_hits(body)
            priority = priority_score(
                category=draws.category[rows],
                plan=plan_codes[rows],
                lifetime_value=ltv[rows],
                open_tickets=open_tickets[rows],
                last_csat=last_csat[rows],
                urgency_hits=hits,
                noise=draws.noise[rows],
            )
            columns += [_vocab(CATEGORIES).take(draws.category[rows]), pa.array(priority, pa.float64())]
        yield pa.Table.from_arrays(columns, schema=schema)
