"""The Feast repository for real: both profiles (SQLite; Redis on 127.0.0.1:6379 under its own project prefix),
point-in-time correctness, pushes, TTL, the on-demand transform, freshness, and the plain Feast CLI."""

import ast
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from unison.config import Settings, load_settings
from unison.features import store
from unison.features.offline import load_labelled
from unison.features.push import PushSchemaError
from unison.features.transform import NUMERIC_FEATURES, transform

ROOT = Path(__file__).resolve().parents[3]
REPO = ROOT / "features"


def test_point_in_time_join_returns_the_value_valid_at_ticket_time(applied: Settings) -> None:
    activity = pd.read_parquet(applied.data.dir / "customer_activity.parquet")
    counts = activity.groupby("customer_id").size()
    customer = int(counts[counts >= 2].index[0])
    snapshots = activity[activity.customer_id == customer].sort_values("event_timestamp")
    first, second = snapshots.iloc[0], snapshots.iloc[1]
    just_before = second.event_timestamp - timedelta(seconds=1)
    entities = pd.DataFrame({"customer_id": [customer, customer],
                             "created_at": [just_before, second.event_timestamp + timedelta(seconds=1)]})
    joined = store.Features(applied).historical(entities, timestamp_column="created_at").sort_values("created_at")
    assert joined["open_tickets"].tolist() == [first.open_tickets, second.open_tickets]
    assert joined["days_since_last_login"].tolist() == [first.days_since_last_login, second.days_since_last_login]


def test_rows_sharing_customer_and_time_all_come_back(applied: Settings) -> None:
    when = datetime(2026, 2, 1, tzinfo=UTC)
    entities = pd.DataFrame({"ticket_id": ["a", "b", "c"], "customer_id": [5, 5, 6], "created_at": [when] * 3})
    joined = store.Features(applied).historical(entities, timestamp_column="created_at")
    assert joined["ticket_id"].tolist() == ["a", "b", "c"]
    assert joined["open_tickets"].iloc[0] == joined["open_tickets"].iloc[1]


def test_feast_join_equals_the_training_join(applied: Settings) -> None:
    """The model head is trained on the pandas as-of join; Feast's point-in-time join must give the same rows."""
    tickets = pd.read_parquet(applied.data.dir / "train.parquet")[["ticket_id", "customer_id", "created_at"]]
    feast = store.Features(applied).historical(tickets, timestamp_column="created_at").set_index("ticket_id")
    ours = load_labelled(applied.data.dir, "train").set_index("ticket_id")
    for column in ("plan", "tenure_days", "lifetime_value", "open_tickets", "tickets_last_90d", "last_csat",
                   "days_since_last_login"):
        left, right = feast.loc[ours.index, column], ours[column]
        same = (left.astype(object) == right.astype(object)) | (left.isna() & right.isna())
        assert same.all(), f"{column}: {(~same).sum()} rows differ"


def test_online_lookup_is_one_batch_and_matches_feast(applied: Settings) -> None:
    features = store.Features(applied)
    ids = [1, 2, 3, 10_000_000, 5]
    ours = features.online(ids)
    assert ours["customer_id"].tolist() == ids
    reference = features.store.get_online_features(features=store.feature_refs(),
                                                   entity_rows={"customer_id": ids}).to_dict()
    for column in ours.columns.drop("customer_id"):
        for mine, theirs in zip(ours[column].tolist(), reference[column], strict=True):
            assert (pd.isna(mine) and theirs is None) or mine == theirs, column
    unknown = ours[ours.customer_id == 10_000_000].iloc[0]
    assert all(pd.isna(unknown[c]) for c in ours.columns.drop("customer_id"))
    inputs = transform(ours.assign(subject="s", body="b", channel="web"))
    assert inputs["features_missing"].tolist() == [0, 0, 0, 1, 0]


def test_stale_features_beyond_ttl_are_missing(applied: Settings) -> None:
    features = store.Features(applied)
    far_future = datetime.now(UTC) + timedelta(days=3 * 365)
    row = features.online([1], as_of=far_future).iloc[0]
    assert pd.isna(row["open_tickets"]) and pd.isna(row["last_csat"])  # activity: 365-day TTL
    assert row["plan"] is not None  # profile: no TTL


def test_push_reaches_online_and_offline_stores(applied: Settings) -> None:
    features = store.Features(applied)
    now = datetime.now(UTC).replace(microsecond=0)
    pushed = pd.DataFrame({"customer_id": [7], "open_tickets": [17], "tickets_last_90d": [40], "last_csat": [1.2],
                           "days_since_last_login": [0], "event_timestamp": [now]})
    assert features.push(pushed) == 1
    online = features.online([7]).iloc[0]
    assert (online["open_tickets"], online["last_csat"]) == (17, 1.2)
    offline = features.historical(pd.DataFrame({"customer_id": [7], "event_timestamp": [now + timedelta(seconds=5)]}))
    assert offline["open_tickets"].tolist() == [17]
    with pytest.raises(PushSchemaError, match="open_tickets"):
        features.push(pushed.assign(open_tickets=["lots"]))


def test_on_demand_view_is_the_transform(applied: Settings) -> None:
    features = store.Features(applied)
    ids = [1, 2, 10_000_000]
    ticket = {"subject": ["Refund", "Crash", "Hi"], "body": ["charged twice", "error E-1", "question"],
              "channel": ["email", "chat", "web"]}
    odfv = features.store.get_online_features(
        features=features.store.get_feature_service(store.feature_service_name()),
        entity_rows={"customer_id": ids, **ticket}).to_df()
    direct = transform(features.online(ids).assign(**ticket))
    assert odfv["text"].tolist() == direct["text"].tolist()
    np.testing.assert_array_equal(odfv[list(NUMERIC_FEATURES)].to_numpy(np.float32),
                                  direct[list(NUMERIC_FEATURES)].to_numpy(np.float32))


def test_freshness_reports_each_view(applied: Settings) -> None:
    rows = {r.view: r for r in store.Features(applied).freshness()}
    assert set(rows) == {"customer_profile", "customer_activity"}
    activity = pd.read_parquet(applied.data.dir / "customer_activity.parquet")
    until = rows["customer_activity"].materialized_until
    newest = activity.loc[activity["event_timestamp"] <= until, "event_timestamp"].max().to_pydatetime()
    assert rows["customer_activity"].newest_event_time == newest
    assert rows["customer_activity"].ttl == timedelta(days=365) and rows["customer_profile"].ttl is None
    assert rows["customer_profile"].materialized_until is not None


def test_incremental_materialization_picks_up_new_rows(applied: Settings) -> None:
    assert store.materialize(applied, incremental=True) == list(store.VIEWS)


def test_feast_cli_works_on_the_repository(tmp_path: Path, demo_data: Path) -> None:
    repo = tmp_path / "project" / "features"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "UNISON_DATA__DIR": str(demo_data)}
    feast = Path(sys.executable).parent / "feast"
    applied = subprocess.run([feast, "apply"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    listed = subprocess.run([feast, "feature-services", "list"], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=120)
    assert store.feature_service_name() in listed.stdout
    assert (repo / "data" / "registry.db").exists()


def test_the_transform_exists_once_and_is_imported() -> None:
    """No second copy of the transform: the Feast view and the model pipeline import it."""
    definitions = []
    for path in [*(ROOT / "platform" / "unison").rglob("*.py"), *REPO.glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "transform":
                definitions.append(path.relative_to(ROOT))
    assert definitions == [Path("platform/unison/features/transform.py")]
    for user in (REPO / "triage.py", ROOT / "platform" / "unison" / "model" / "optimize.py"):
        assert "from unison.features" in user.read_text() and "import" in user.read_text()


def test_unapplied_store_says_what_to_run(tmp_path: Path, demo_data: Path) -> None:
    settings = load_settings(data={"dir": demo_data}, features={"repo_dir": REPO, "state_dir": tmp_path / "feast"})
    with pytest.raises(store.FeatureStoreError, match="run `unison features apply`"):
        store.Features(settings)
