"""A customer activity event, as the feature-event stream receives it: its fields and rules.

Validated completely here, once per event, so one bad event is dead-lettered with its reason and never fails the
poll's push further down: counts within the int32 the stores keep (5,000,000,000 wrapped to 705032704), ids within
int64, timestamps ISO-8601 strings parsed and normalized to UTC at decode time (a bare number would be read as
nanoseconds since 1970; mixed ISO formats in one poll broke the frame's parse)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from unison.features.ticket import INT64_MAX

INT32_MAX = 2**31 - 1


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):  # no "3" or true read as numbers
        raise ValueError(f"expected a number, got {type(value).__name__}")
    return value


def _whole(value: Any) -> int:
    value = _number(value)
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"expected a whole number, got {value}")
    return int(value)


def _instant(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("expected an ISO-8601 string such as 2026-11-23T10:15:00Z")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO-8601 time such as 2026-11-23T10:15:00Z") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


Count = Annotated[int, BeforeValidator(_whole), Field(ge=0, le=INT32_MAX)]
Instant = Annotated[datetime, BeforeValidator(_instant)]


class FeatureEvent(BaseModel):
    """One update of a customer's activity features (the `customer_activity` view's push source)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: Annotated[int, BeforeValidator(_whole)] = Field(ge=0, le=INT64_MAX,
                                                                 description="The customer (int64 entity key).")
    open_tickets: Count = Field(description="Tickets open now.")
    tickets_last_90d: Count = Field(description="Tickets filed in the last 90 days.")
    last_csat: Annotated[float, BeforeValidator(_number)] | None = Field(
        default=None, ge=1, le=5, description="The last satisfaction score, 1 to 5, or null.")
    days_since_last_login: Count = Field(description="Whole days since the customer last logged in.")
    event_timestamp: Instant = Field(description="When the values became true (ISO-8601; UTC if no zone).")
    created_timestamp: Instant | None = Field(default=None, description="When the event was written (optional).")

    def row(self) -> dict[str, Any]:
        """The push row; a created_timestamp of None is stamped by the push (`validate_push`)."""
        return self.model_dump()
