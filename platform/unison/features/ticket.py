"""The ticket every path scores: its fields and rules, shared by the HTTP API and the streaming path."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from unison.data import CHANNELS


class Ticket(BaseModel):
    """One support ticket to score. The customer's features come from the online store."""

    model_config = ConfigDict(extra="forbid")

    ticket_id: StrictStr = Field(min_length=1, max_length=256, description="Caller's id, echoed in the result.")
    customer_id: StrictInt = Field(ge=0, description="Feast entity key of the customer who filed the ticket.")
    subject: StrictStr = Field(default="", description="Ticket subject line.")
    body: StrictStr = Field(default="", description="Ticket text.")
    channel: Literal[CHANNELS] | None = Field(  # type: ignore[valid-type]
        default=None, description=f"Where the ticket came from: one of {', '.join(CHANNELS)}.")
    created_at: datetime | None = Field(default=None, description="When it was filed (informational).")

    @model_validator(mode="after")
    def _has_text(self) -> Ticket:
        if not (self.subject.strip() or self.body.strip()):
            raise ValueError("subject and body are both empty: there is no text to score")
        return self

    def text_chars(self) -> int:
        return len(self.subject) + len(self.body)
