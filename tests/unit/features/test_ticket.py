"""The one ticket schema rejects at the edge what would otherwise raise (or silently wrap) deeper down."""

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from unison.features.ticket import INT64_MAX, Ticket

GOOD = {"ticket_id": "t1", "customer_id": 7, "subject": "refund", "body": "charged twice"}


@pytest.mark.parametrize("field", ["ticket_id", "subject", "body"])
def test_a_lone_surrogate_is_refused_naming_the_field(field: str) -> None:
    with pytest.raises(ValidationError, match=f"(?is){field}.*unicode") as refused:
        Ticket.model_validate({**GOOD, field: "ab\ud800cd"})
    if field != "ticket_id":  # a length-bounded field is refused by pydantic's own unicode check first
        assert "surrogates not allowed at character 2" in str(refused.value)


def test_ids_stay_within_int64() -> None:
    assert Ticket.model_validate({**GOOD, "customer_id": INT64_MAX}).customer_id == INT64_MAX
    for bad in (INT64_MAX + 1, 2**70, -1):
        with pytest.raises(ValidationError, match="customer_id"):
            Ticket.model_validate({**GOOD, "customer_id": bad})


def test_created_at_is_normalized_to_utc() -> None:
    naive = Ticket.model_validate({**GOOD, "created_at": "2026-11-23T10:15:00"}).created_at
    shifted = Ticket.model_validate({**GOOD, "created_at": "2026-11-23T12:15:00+02:00"}).created_at
    assert naive == shifted == datetime(2026, 11, 23, 10, 15, tzinfo=UTC) and shifted.tzinfo is UTC
    with pytest.raises(ValidationError, match="created_at"):
        Ticket.model_validate({**GOOD, "created_at": "x"})
