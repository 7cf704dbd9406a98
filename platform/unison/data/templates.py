"""The demo tickets' text: the templates and their vocabulary, which templates a ticket uses, and rendering.

A template has at most two `{slot}`s; every slot of one ticket has one value, so the subject and all sentences of
a ticket mention the same order, amount, product, ... All templates sit in one indexed table, so a ticket's
choice is an integer and rendering a column is a `take` and a join (no Python loop per row). `unison.data.generate`
draws the rest of a ticket and calls `draw_text` (on its tickets' random stream, in a fixed order: changing the
order, a template or a vocabulary list changes every table) and `render_text`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from unison.domain import CATEGORIES

# ---------------------------------------------------------------------------------------------------------
# Templates and the vocabulary of their slots
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


# ---------------------------------------------------------------------------------------------------------
# Parsing and rendering
# ---------------------------------------------------------------------------------------------------------


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


def _vocab(words: tuple[str, ...]) -> pa.Array:
    return pa.array(list(words), pa.string())


# ---------------------------------------------------------------------------------------------------------
# A ticket table's text: drawn up front, rendered chunk by chunk
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDraws:
    """Every random choice behind the text of one ticket table (one entry per ticket)."""

    subject: npt.NDArray[np.int64]  # template id
    sentences: npt.NDArray[np.int64]  # (positions, n) template ids, 0 = absent
    long_paragraph: npt.NDArray[np.int64]
    long_repeats: npt.NDArray[np.int64]  # 0 = not a long ticket
    slot_indexes: dict[str, npt.NDArray[np.int64]]


def draw_text(rng: np.random.Generator, category: npt.NDArray[np.int64],
              created_day: npt.NDArray[np.int64]) -> TextDraws:
    """The templates and slot values of tickets of the given categories (CATEGORIES codes), filed on the given
    days (since the epoch): a subject of the category, 1-3 distinct sentences of it, optional greeting, middle,
    closing and (~8%) a sentence of another category, now and then a long paragraph."""
    n = len(category)
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
        "date_day": created_day - days_back,  # a day shortly before the ticket
        "feature": rng.integers(0, len(_FEATURES), n),
    }
    return TextDraws(
        subject=subject,
        sentences=sentences,
        long_paragraph=long_paragraph,
        long_repeats=long_repeats,
        slot_indexes=slot_indexes,
    )


def _coprime_steps(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Per pool, steps coprime with its size (padded by repetition), so k*step mod size never repeats."""
    rows = [[s for s in range(1, max(int(c), 2)) if math.gcd(s, int(c)) == 1] or [1] for c in counts]
    width = max(len(r) for r in rows)
    return np.array([[r[i % len(r)] for i in range(width)] for r in rows], dtype=np.int64)


def _slot_values(text: TextDraws, rows: slice, plans: pa.Array) -> pa.Array:
    """The value of every slot for each row, slot after slot (the layout `_TemplateTable.render` expects)."""
    ix = {name: values[rows] for name, values in text.slot_indexes.items()}
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


def render_text(text: TextDraws, rows: slice, plans: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Subject and body of the given rows (`plans`: each row's customer plan, the `{plan}` slot), built
    column-wise from template ids and slot values."""
    values = _slot_values(text, rows, plans)
    subject = _TEMPLATES.render(text.subject[rows], values)
    parts = [_TEMPLATES.render(ids[rows], values) for ids in text.sentences[:-1]]
    long_text = pc.binary_repeat(_LONG_TEXTS.take(text.long_paragraph[rows]), text.long_repeats[rows])
    parts += [long_text, _TEMPLATES.render(text.sentences[-1][rows], values)]
    body = pc.utf8_rtrim_whitespace(pc.binary_join_element_wise(*parts, ""))
    return subject, body
