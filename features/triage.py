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
from feast.types import Float32, Float64, Int32, String

from unison.features.transform import NUMERIC_FEATURES, TRANSFORM_VERSION

DATA_DIR = Path(os.environ.get("UNISON_DATA__DIR") or Path(__file__).resolve().parent.parent / ".unison" / "data")
DATA_DIR = DATA_DIR if DATA_DIR.is_absolute() else (Path(__file__).resolve().parent / DATA_DIR)

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64,
                  description="A customer who files support tickets.")

profile_source = FileSource(
    name="customer_profile_source",
    path=str(DATA_DIR.resolve() / "customer_profile.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)
# A dataset directory, not one file: each push adds a part (unison.data.dataset), so readers never see a
# partial write and concurrent pushers keep all their rows. Feast's file offline store reads the directory.
activity_source = FileSource(
    name="customer_activity_source",
    path=str(DATA_DIR.resolve() / "customer_activity.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)
# Streaming updates of activity (from the `customer-events` topic) land here, online and offline, through
# `unison.features.store.Features.push` (Feast's own push would rewrite the whole source per push).
activity_push = PushSource(name="customer_activity_push", batch_source=activity_source)

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(0),  # profiles do not expire
    schema=[
        Field(name="plan", dtype=String),
        Field(name="tenure_days", dtype=Int32),
        Field(name="lifetime_value", dtype=Float64),
    ],
    source=profile_source,
    online=True,
    description="Static customer attributes.",
)
customer_activity = FeatureView(
    name="customer_activity",
    entities=[customer],
    ttl=timedelta(days=365),  # older snapshots count as missing
    schema=[
        Field(name="open_tickets", dtype=Int32),
        Field(name="tickets_last_90d", dtype=Int32),
        Field(name="last_csat", dtype=Float64),
        Field(name="days_since_last_login", dtype=Int32),
    ],
    source=activity_push,
    online=True,
    description="Customer activity snapshots; updated by push from the customer-events stream.",
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
        customer_profile[["plan", "tenure_days", "lifetime_value"]],
        customer_activity[["open_tickets", "tickets_last_90d", "last_csat", "days_since_last_login"]],
        triage_inputs,
    ],
    description="Exactly what the triage model reads, for transform version " + TRANSFORM_VERSION + ".",
)
