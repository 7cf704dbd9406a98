"""Feast definitions for support-ticket triage: one entity, two feature views, a push source, the on-demand
transform, and one feature service per transform (model input) version.

Data sources point at the generated Parquet in $UNISON_DATA__DIR (an absolute path; `unison features apply`
sets it from the Unison configuration), else at ../.unison/data beside this repository.
"""

import os
from datetime import timedelta
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float32, Float64, Int32, Int64, String

from unison.domain import (
    CREATED_TIMESTAMP,
    CUSTOMER_ACTIVITY,
    CUSTOMER_PROFILE,
    ENTITY,
    ENTITY_KEY,
    EVENT_TIMESTAMP,
    FeatureViewSpec,
)
from unison.features.transform import NUMERIC_FEATURES, TRANSFORM_VERSION

DATA_DIR = Path(os.environ.get("UNISON_DATA__DIR") or Path(__file__).resolve().parent.parent / ".unison" / "data")
DATA_DIR = DATA_DIR if DATA_DIR.is_absolute() else (Path(__file__).resolve().parent / DATA_DIR)

# The views' names, columns, types and TTLs are unison.domain's (the one definition every path reads).
FEAST_TYPES = {"string": String, "int32": Int32, "int64": Int64, "float64": Float64}


def schema(view: FeatureViewSpec) -> list[Field]:
    return [Field(name=c.name, dtype=FEAST_TYPES[c.dtype]) for c in view.columns]


customer = Entity(name=ENTITY, join_keys=[ENTITY_KEY], value_type=ValueType.INT64,
                  description="A customer who files support tickets.")

profile_source = FileSource(
    name="customer_profile_source",
    path=str(DATA_DIR.resolve() / "customer_profile.parquet"),
    timestamp_field=EVENT_TIMESTAMP,
    created_timestamp_column=CREATED_TIMESTAMP,
)
# A dataset directory, not one file: each push adds a part (unison.data.dataset), so readers never see a
# partial write and concurrent pushers keep all their rows. Feast's file offline store reads the directory.
activity_source = FileSource(
    name="customer_activity_source",
    path=str(DATA_DIR.resolve() / "customer_activity.parquet"),
    timestamp_field=EVENT_TIMESTAMP,
    created_timestamp_column=CREATED_TIMESTAMP,
)
# Streaming updates of activity (from the `customer-events` topic) land here, online and offline, through
# `unison.features.store.Features.push` (Feast's own push would rewrite the whole source per push).
activity_push = PushSource(name="customer_activity_push", batch_source=activity_source)

customer_profile = FeatureView(
    name=CUSTOMER_PROFILE.name,
    entities=[customer],
    ttl=CUSTOMER_PROFILE.ttl or timedelta(0),  # no TTL: profiles do not expire (Feast's 0)
    schema=schema(CUSTOMER_PROFILE),
    source=profile_source,
    online=True,
    description=CUSTOMER_PROFILE.description,
)
customer_activity = FeatureView(
    name=CUSTOMER_ACTIVITY.name,
    entities=[customer],
    ttl=CUSTOMER_ACTIVITY.ttl or timedelta(0),  # 365 days: older snapshots count as missing
    schema=schema(CUSTOMER_ACTIVITY),
    source=activity_push,
    online=True,
    description=CUSTOMER_ACTIVITY.description,
)

ticket = RequestSource(
    name="ticket",
    schema=[Field(name="subject", dtype=String), Field(name="body", dtype=String), Field(name="channel", dtype=String)],
    description="The ticket being scored, supplied with the request.",
)


@on_demand_feature_view(
    name=f"triage_inputs_v{TRANSFORM_VERSION}",
    sources=[customer_profile, customer_activity, ticket],
    schema=[Field(name="text", dtype=String), *(Field(name=n, dtype=Float32) for n in NUMERIC_FEATURES)],
    mode="pandas",
    description="The one transform (unison.features.transform) as Feast sees it.",
)
def triage_inputs(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast runs this function from its stored source, without this module's globals: import inside.
    from unison.features.transform import transform

    return transform(inputs).reset_index(drop=True)


triage_service = FeatureService(
    name=f"triage_v{TRANSFORM_VERSION}",
    features=[
        customer_profile[list(CUSTOMER_PROFILE.column_names)],
        customer_activity[list(CUSTOMER_ACTIVITY.column_names)],
        triage_inputs,
    ],
    description="Exactly what the triage model reads, for transform version " + TRANSFORM_VERSION + ".",
)
