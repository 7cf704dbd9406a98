"""The ticket every path scores: its fields and rules, shared by the HTTP API and the streaming path.

Validation is complete here, once, at the edge: whatever passes can be tokenized, joined against the stores
and written out without raising further down (a lone surrogate in the text, valid JSON, broke the tokenizer;
an id past int64 wrapped negative and silently scored without features)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator, model_validator

from unison.domain import CHANNELS

INT64_MAX = 2**63 - 1  # the online and offline stores keep entity keys as int64


class Ticket(BaseModel):
    """One support ticket to score. The customer's features come from the online store."""

    model_config = ConfigDict(extra="forbid")

    ticket_id: StrictStr = Field(min_length=1, max_length=256, description="Caller's id, echoed in the result.")
    customer_id: StrictInt = Field(ge=0, le=INT64_MAX, description="Feast entity key of the customer who filed "
                                   "the ticket (an int64, as the stores keep it).")
    subject: StrictStr = Field(default="", description="Ticket subject line.")
    body: StrictStr = Field(default="", description="Ticket text.")
    channel: Literal[CHANNELS] | None = Field(  # type: ignore[valid-type]
        default=None, description=f"Where the ticket came from: one of {', '.join(CHANNELS)}.")
    created_at: datetime | None = Field(default=None, description="When it was filed (informational; read as UTC "
                                        "when it names no zone).")

    @field_validator("ticket_id", "subject", "body")
    @classmethod
    def _encodable(cls, value: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800"): valid JSON, not text
            raise ValueError(f"not valid Unicode text: {exc.reason} at character {exc.start}") from None
        return value

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _has_text(self) -> Ticket:
        if not (self.subject.strip() or self.body.strip()):
            raise ValueError("subject and body are both empty: there is no text to score")
        return self

    def text_chars(self) -> int:
        return len(self.subject) + len(self.body)


def first_error(exc: ValueError) -> str:
    """A validation failure as one line naming the field: `<where>: <what>` (pydantic's first error)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    first = errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
