"""Demo data for support-ticket triage, so every inference path can be run and measured without a data set.

The vocabulary is unison.domain's, re-exported here for the modules that read it with the data."""

from unison.data.generate import (
    CUSTOMER_ACTIVITY_SCHEMA,
    CUSTOMER_PROFILE_SCHEMA,
    FILE_NAMES,
    LABELLED_TICKETS_SCHEMA,
    TICKETS_SCHEMA,
    GenerationReport,
    generate,
    priority_score,
    urgency_hits,
)
from unison.domain import CATEGORIES, CHANNELS, PLANS, REGIONS, URGENCY_WORDS

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
