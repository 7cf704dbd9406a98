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
"""

from __future__ import annotations

import math
import re
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

CATEGORIES: tuple[str, ...] = ("billing", "technical", "account", "shipping", "cancellation", "other")
PLANS: tuple[str, ...] = ("free", "basic", "pro", "enterprise")
CHANNELS: tuple[str, ...] = ("email", "chat", "phone", "web")
REGIONS: tuple[str, ...] = ("na", "emea", "apac", "latam")
URGENCY_WORDS: tuple[str, ...] = ("urgent", "immediately", "asap", "down", "again")

TS = pa.timestamp("us", tz="UTC")

CUSTOMER_PROFILE_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("plan", pa.string()),
        ("tenure_days", pa.int32()),
        ("lifetime_value", pa.float64()),
        ("region", pa.string()),
        ("event_timestamp", TS),
        ("created_timestamp", TS),
    ]
)
CUSTOMER_ACTIVITY_SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("open_tickets", pa.int32()),
        ("tickets_last_90d", pa.int32()),
        ("last_csat", pa.float64()),
        ("days_since_last_login", pa.int32()),
        ("event_timestamp", TS),
        ("created_timestamp", TS),
    ]
)
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

# ---------------------------------------------------------------------------------------------------------
# Text templates. A template has at most two `{slot}`s; every slot of one ticket has one value, so the
# subject and all sentences of a ticket mention the same order, amount, product, ...
# ---------------------------------------------------------------------------------------------------------

_SLOTS: tuple[str, ...] = ("plan", "product", "order", "amount", "code", "date", "feature")
_PRODUCTS: tuple[str, ...] = (
    "the mobile app",
    "the desktop client",
    "the analytics dashboard",
    "the public API",
    "the Smart Router X2",
    "the starter kit",
    "the wireless headset",
    "the team workspace",
    "the browser extension",
    "the USB docking station",
)
_FEATURES: tuple[str, ...] = (
    "two-factor login",
    "CSV export",
    "calendar sync",
    "dark mode",
    "single sign-on",
    "the reporting module",
    "team invites",
    "webhooks",
    "offline mode",
)
_ERROR_CODES: tuple[str, ...] = (
    "E-503",
    "E-500",
    "E-401",
    "E-404",
    "E-429",
    "E-1002",
    "E-17",
    "E-302",
    "ERR_TIMEOUT",
    "ERR_SYNC_CONFLICT",
)
_MONTHS: tuple[str, ...] = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

_SUBJECTS: dict[str, tuple[str, ...]] = {
    "billing": (
        "Charged twice for my {plan} subscription",
        "Wrong amount on my invoice",
        "Refund for {amount}?",
        "Unexpected charge of {amount}",
        "Invoice question",
        "Payment failed for my {plan} plan",
        "Billing error on {date}",
    ),
    "technical": (
        "App crashes with {code}",
        "Problem with {product}",
        "Error {code} on the dashboard",
        "Sync is broken",
        "Cannot get {feature} to work",
        "Very slow since {date}",
        "Service down?",
    ),
    "account": (
        "Cannot reset my password",
        "Locked out of my account",
        "Change the email on my account",
        "Problem with {feature}",
        "How do I add a team member?",
        "Login issue",
        "Merge two accounts",
    ),
    "shipping": (
        "Order {order} not arrived",
        "Where is my package?",
        "Wrong item in order {order}",
        "Damaged delivery",
        "Change shipping address for {order}",
        "Tracking number not working",
        "Delivery of {product} delayed",
    ),
    "cancellation": (
        "Cancel my subscription",
        "Please close my account",
        "Cancel {plan} plan",
        "I want to cancel",
        "Stop auto-renewal",
        "Cancellation request for order {order}",
        "Downgrade or cancel?",
    ),
    "other": (
        "Student discount?",
        "Question about your roadmap",
        "Feedback on {product}",
        "Partnership inquiry",
        "Do you offer {feature}?",
        "General question",
        "Compliment for your team",
    ),
}

_SENTENCES: dict[str, tuple[str, ...]] = {
    "billing": (
        "I was charged twice for my {plan} subscription this month.",
        "My card was billed {amount} but my plan should cost less.",
        "The invoice from {date} shows a charge I do not recognize.",
        "Could you please refund the duplicate payment of {amount}?",
        "My payment keeps failing although the card is valid.",
        "I upgraded to {plan} but I am still being billed for the old plan.",
        "Please send me a corrected invoice with our VAT number.",
        "There is an extra fee of {amount} on my statement.",
        "The discount code was not applied to my last invoice.",
        "I need a receipt for the payment made on {date}.",
        "Why did the price of my {plan} plan go up without notice?",
    ),
    "technical": (
        "The app crashes with error {code} when I open the dashboard.",
        "Since the last update {product} keeps freezing.",
        "I get {code} every time I try to save my work.",
        "Sync between my devices stopped working on {date}.",
        "The page for {feature} stays blank and nothing loads.",
        "Everything is extremely slow, pages take a minute to load.",
        "The API returns {code} for requests that worked yesterday.",
        "Your service seems to be down for our whole team.",
        "I reinstalled {product} but the problem is still there.",
        "Notifications are not delivered anymore.",
        "The export fails halfway with error {code}.",
    ),
    "account": (
        "I cannot reset my password, the reset email never arrives.",
        "My account got locked after too many login attempts.",
        "How do I change the email address on my account?",
        "I lost access to {feature} after changing my phone.",
        "Please merge my two accounts into one.",
        "I want to add a new team member to our {plan} workspace.",
        "The login page says my username does not exist.",
        "Can you remove an old admin from our organization?",
        "I never received the verification code.",
        "Someone may have logged into my account on {date}.",
        "How can I download all data stored in my profile?",
    ),
    "shipping": (
        "My order {order} has not arrived yet.",
        "The tracking page for order {order} has not changed since {date}.",
        "I received the wrong item in order {order}.",
        "The package arrived damaged and {product} does not turn on.",
        "Can I change the delivery address for order {order}?",
        "The courier says the parcel was delivered but I have nothing.",
        "It was supposed to arrive by {date}.",
        "I paid {amount} for express shipping and it is still in transit.",
        "Half of my order {order} is missing from the box.",
        "Please send a replacement for {product}.",
        "The tracking number you sent me is invalid.",
    ),
    "cancellation": (
        "Please cancel my subscription effective immediately.",
        "I want to close my account and delete my data.",
        "Do not renew my {plan} plan at the end of this period.",
        "How do I cancel without paying the early termination fee?",
        "We are moving to another provider and need to cancel.",
        "Please cancel order {order} before it ships.",
        "I tried to cancel online but the button does not work.",
        "Confirm in writing that my subscription is cancelled.",
        "I no longer need {product}, please stop all charges.",
        "Refund the remaining months after I cancel on {date}.",
        "The service is too expensive for us, we are leaving.",
    ),
    "other": (
        "Do you have a student discount?",
        "Is {feature} on your roadmap?",
        "I just wanted to say your team did a great job.",
        "Are you hiring in the support department?",
        "Can I use {product} for a school project?",
        "Do you offer a plan for nonprofits?",
        "Where can I find your privacy policy?",
        "We would like to discuss a partnership.",
        "Is there a community forum for users of {product}?",
        "Do you have an office in Europe?",
        "Can I get a printed brochure of the {plan} plan?",
    ),
}

_GREETINGS: tuple[str, ...] = ("Hi,", "Hello,", "Hello team,", "Dear support,", "Good morning,", "Hi there,")
_MIDDLES: tuple[str, ...] = (
    "This is the third time I write.",
    "I already contacted you last week.",
    "Please help.",
    "I have attached a screenshot.",
    "This is urgent for our team.",
    "Please answer asap.",
    "It happened again today.",
    "My colleague has the same problem.",
)
_CLOSINGS: tuple[str, ...] = (
    "Thanks in advance.",
    "Thank you.",
    "Best regards.",
    "Kind regards.",
    "Looking forward to your reply.",
    "Cheers.",
)
# Occasional long tickets: one of these, repeated 1-3 times, so sequence lengths reach a few hundred tokens.
_LONG_PARAGRAPHS: tuple[str, ...] = (
    "To give you the full picture, I have been a customer for a long time and I have always recommended "
    "you to friends and colleagues. Over the last weeks I have spent hours trying to solve this on my own, "
    "reading the help center, watching the tutorial videos and following every step of the guides. Nothing "
    "worked, and every time I thought it was fixed the same thing happened the next morning.",
    "Let me describe exactly what I did. First I logged out and logged in again, then I cleared the cache, "
    "restarted the computer and tried a different network. After that I tried on my phone and on my "
    "laptop, with two different browsers. I also asked a colleague to try with his account. Each attempt "
    "ended the same way and I wrote down the time of every attempt in case it helps your engineers.",
    "I understand that mistakes happen, but the way this has been handled so far is very frustrating. I "
    "waited on the phone for forty minutes, the chat closed before anyone answered, and the email I got "
    "back was a generic text that did not address my question at all. I would really appreciate it if a "
    "real person could read this message carefully and get back to me with a concrete answer.",
    "For context, our small company depends on this every single day. We have twelve people who use it "
    "for their daily work, and when it does not behave as expected we lose time and money, and our own "
    "customers notice. We chose your service because of its reputation for reliability and good support, "
    "and I hope we can resolve this quickly so that we do not have to look for alternatives.",
)


@dataclass(frozen=True)
class _Template:
    """A template split at its slots: lit0 {slot1} lit1 {slot2} lit2 (a missing slot is the empty slot)."""

    literals: tuple[str, str, str]
    slots: tuple[int, int]


_EMPTY_SLOT = len(_SLOTS)  # index of the always-empty slot value
_SLOT_RE = re.compile(r"\{(\w+)\}")


def _parse(template: str, suffix: str) -> _Template:
    parts = _SLOT_RE.split(template)  # literal, slot, literal, slot, literal ...
    literals = parts[0::2]
    names = parts[1::2]
    if len(names) > 2:
        raise ValueError(f"template has more than two slots: {template!r}")
    slots = [_SLOTS.index(name) for name in names]
    while len(slots) < 2:
        slots.append(_EMPTY_SLOT)
        literals.append("")
    literals[2] += suffix
    return _Template(literals=(literals[0], literals[1], literals[2]), slots=(slots[0], slots[1]))


class _TemplateTable:
    """All templates in one indexed table, so a ticket's choice is an integer and rendering is a `take`.

    Index 0 is the empty template (renders ""), used for absent optional sentences. Sentence templates
    carry a trailing space (a greeting a line break) so that a body is the plain concatenation of its parts.
    """

    def __init__(self) -> None:
        templates = [_Template(literals=("", "", ""), slots=(_EMPTY_SLOT, _EMPTY_SLOT))]
        self.groups: dict[str, tuple[int, int]] = {}

        def add(group: str, texts: tuple[str, ...], suffix: str) -> None:
            self.groups[group] = (len(templates), len(texts))
            templates.extend(_parse(text, suffix) for text in texts)

        for category in CATEGORIES:
            add(f"subject:{category}", _SUBJECTS[category], "")
            add(f"sentence:{category}", _SENTENCES[category], " ")
        add("greeting", _GREETINGS, "\n")
        add("middle", _MIDDLES, " ")
        add("closing", _CLOSINGS, " ")
        self.literals = [pa.array([t.literals[i] for t in templates], pa.string()) for i in range(3)]
        self.slots = [np.array([t.slots[i] for t in templates], dtype=np.int64) for i in range(2)]

    def offsets_counts(self, kind: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Per category (CATEGORIES order): first template index and number of templates of `kind`."""
        pairs = [self.groups[f"{kind}:{category}"] for category in CATEGORIES]
        offsets = np.array([p[0] for p in pairs], dtype=np.int64)
        return offsets, np.array([p[1] for p in pairs], dtype=np.int64)

    def render(self, template_ids: npt.NDArray[np.int64], slot_values: pa.Array) -> pa.Array:
        """Fill templates row by row in one pass; `slot_values` holds n values per slot, slot after slot."""
        n = len(template_ids)
        rows = np.arange(n, dtype=np.int64)
        values = [slot_values.take(self.slots[i][template_ids] * n + rows) for i in range(2)]
        lits = [lit.take(template_ids) for lit in self.literals]
        return pc.binary_join_element_wise(lits[0], values[0], lits[1], values[1], lits[2], "")


_TEMPLATES = _TemplateTable()
_LONG_TEXTS = pa.array([p + " " for p in _LONG_PARAGRAPHS], pa.string())


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
    subject: npt.NDArray[np.int64]  # template id
    sentences: npt.NDArray[np.int64]  # (positions, n) template ids, 0 = absent
    long_paragraph: npt.NDArray[np.int64]
    long_repeats: npt.NDArray[np.int64]  # 0 = not a long ticket
    slot_indexes: dict[str, npt.NDArray[np.int64]]
    noise: npt.NDArray[np.float64]


def _draw_tickets(rng: np.random.Generator, world: _World, n: int) -> _TicketDraws:
    created_us = world.start_us + np.sort(rng.integers(0, world.window_us, n))
    customer_id = rng.choice(len(world.customer_p), size=n, p=world.customer_p).astype(np.int64) + 1
    channel = rng.choice(len(CHANNELS), size=n, p=_CHANNEL_P)
    category = rng.choice(len(CATEGORIES), size=n, p=_CATEGORY_P)
    if n >= len(CATEGORIES):  # every category present, whatever the sample size
        category[rng.choice(n, size=len(CATEGORIES), replace=False)] = np.arange(len(CATEGORIES))

    subject_offset, subject_count = _TEMPLATES.offsets_counts("subject")
    subject = subject_offset[category] + rng.integers(0, subject_count[category])

    # Own-category sentences: distinct ones, walking the pool from a random start with a coprime step.
    sentence_offset, sentence_count = _TEMPLATES.offsets_counts("sentence")
    own_count = sentence_count[category]
    first = rng.integers(0, own_count)
    steps = _coprime_steps(sentence_count)
    step = steps[category, rng.integers(0, steps.shape[1], n)]
    n_own = rng.choice(np.array([1, 2, 3]), size=n, p=[0.40, 0.45, 0.15])
    own = [
        np.where(n_own > k, sentence_offset[category] + (first + k * step) % own_count, 0) for k in range(3)
    ]

    greeting_offset, greeting_count = _TEMPLATES.groups["greeting"]
    middle_offset, middle_count = _TEMPLATES.groups["middle"]
    closing_offset, closing_count = _TEMPLATES.groups["closing"]
    greeting = np.where(rng.random(n) < 0.65, greeting_offset + rng.integers(0, greeting_count, n), 0)
    has_middle = rng.random(n) < 0.20
    middle = np.where(has_middle, middle_offset + rng.integers(0, middle_count, n), 0)
    has_closing = (rng.random(n) < 0.60) | (n_own + has_middle < 2)  # at least two sentences besides greeting
    closing = np.where(has_closing, closing_offset + rng.integers(0, closing_count, n), 0)

    # ~8% carry one sentence from another category, so the task is not trivially separable.
    has_cross = rng.random(n) < 0.08
    other = (category + rng.integers(1, len(CATEGORIES), n)) % len(CATEGORIES)
    cross = np.where(has_cross, sentence_offset[other] + rng.integers(0, sentence_count[other]), 0)
    cross_early = rng.random(n) < 0.5
    sentences = np.stack(
        [
            greeting,
            np.where(cross_early, cross, 0),
            own[0],
            own[1],
            middle,
            own[2],
            np.where(cross_early, 0, cross),
            closing,
        ]
    ).astype(np.int64)

    is_long = rng.random(n) < 0.02
    long_paragraph = rng.integers(0, len(_LONG_PARAGRAPHS), n)
    long_repeats = np.where(is_long, rng.integers(1, 4, n), 0)

    days_back = rng.integers(0, 30, n)
    slot_indexes = {
        "product": rng.integers(0, len(_PRODUCTS), n),
        "order": rng.integers(10_000, 100_000, n),
        "amount_cents": np.maximum(np.round(np.exp(rng.normal(3.8, 0.8, n)) * 100), 99).astype(np.int64),
        "code": rng.integers(0, len(_ERROR_CODES), n),
        "date_day": created_us // _US_PER_DAY - days_back,  # a day shortly before the ticket
        "feature": rng.integers(0, len(_FEATURES), n),
    }
    noise = rng.normal(0.0, 0.35, n)
    return _TicketDraws(
        created_us=created_us,
        customer_id=customer_id,
        channel=channel,
        category=category,
        subject=subject,
        sentences=sentences,
        long_paragraph=long_paragraph,
        long_repeats=long_repeats,
        slot_indexes=slot_indexes,
        noise=noise,
    )


def _coprime_steps(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Per pool, steps coprime with its size (padded by repetition), so k*step mod size never repeats."""
    rows = [[s for s in range(1, max(int(c), 2)) if math.gcd(s, int(c)) == 1] or [1] for c in counts]
    width = max(len(r) for r in rows)
    return np.array([[r[i % len(r)] for i in range(width)] for r in rows], dtype=np.int64)


def _slot_values(draws: _TicketDraws, rows: slice, plans: pa.Array) -> pa.Array:
    """The value of every slot for each row, slot after slot (the layout `_TemplateTable.render` expects)."""
    ix = {name: values[rows] for name, values in draws.slot_indexes.items()}
    n = len(ix["product"])
    cents = ix["amount_cents"]
    amount = pc.binary_join_element_wise(
        "$",
        pc.cast(pa.array(cents // 100), pa.string()),
        ".",
        pc.utf8_lpad(pc.cast(pa.array(cents % 100), pa.string()), 2, "0"),
        "",
    )
    day = ix["date_day"].astype("datetime64[D]")
    month_start = day.astype("datetime64[M]")
    month = month_start.astype(np.int64) % 12
    day_of_month = (day - month_start.astype("datetime64[D]")).astype(np.int64) + 1
    date = pc.binary_join_element_wise(
        _vocab(_MONTHS).take(month), pc.cast(pa.array(day_of_month), pa.string()), " "
    )
    by_slot = {
        "plan": plans,
        "product": _vocab(_PRODUCTS).take(ix["product"]),
        "order": pc.binary_join_element_wise("#", pc.cast(pa.array(ix["order"]), pa.string()), ""),
        "amount": amount,
        "code": _vocab(_ERROR_CODES).take(ix["code"]),
        "date": date,
        "feature": _vocab(_FEATURES).take(ix["feature"]),
    }
    empty = pa.array(np.full(n, "", dtype=object), pa.string())
    return pa.concat_arrays([by_slot[name].cast(pa.string()) for name in _SLOTS] + [empty])


def _render(draws: _TicketDraws, rows: slice, plans: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Subject and body of the given rows, built column-wise from template ids and slot values."""
    values = _slot_values(draws, rows, plans)
    subject = _TEMPLATES.render(draws.subject[rows], values)
    parts = [_TEMPLATES.render(ids[rows], values) for ids in draws.sentences[:-1]]
    long_text = pc.binary_repeat(_LONG_TEXTS.take(draws.long_paragraph[rows]), draws.long_repeats[rows])
    parts += [long_text, _TEMPLATES.render(draws.sentences[-1][rows], values)]
    body = pc.utf8_rtrim_whitespace(pc.binary_join_element_wise(*parts, ""))
    return subject, body


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
        subject, body = _render(draws, rows, plans)
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
