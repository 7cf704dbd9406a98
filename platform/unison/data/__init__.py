"""Demo data for support-ticket triage, so every inference path can be run and measured without a data set."""

from unison.data.generate import (
    CATEGORIES,
    CHANNELS,
    CUSTOMER_ACTIVITY_SCHEMA,
    CUSTOMER_PROFILE_SCHEMA,
    FILE_NAMES,
    LABELLED_TICKETS_SCHEMA,
    PLANS,
    REGIONS,
    TICKETS_SCHEMA,
    URGENCY_WORDS,
    GenerationReport,
    generate,
    priority_score,
    urgency_hits,
)

__all__ = [
    "CATEGORIES",
    "CHANNELS",
    "CUSTOMER_ACTIVITY_SCHEMA",
    "CUSTOMER_PROFILE_SCHEMA",
    "FILE_NAMES",
    "LABELLED_TICKETS_SCHEMA",
    "PLANS",
    "REGIONS",
    "TICKETS_SCHEMA",
    "URGENCY_WORDS",
    "GenerationReport",
    "generate",
    "priority_score",
    "urgency_hits",
]
