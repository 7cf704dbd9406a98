"""A real Feast repository applied in a temporary directory, on both profiles: SQLite, and Redis on
127.0.0.1:6379 (database UNISON_TEST_REDIS_DB, default 13) under a project of its own, removed afterwards."""

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from unison.config import Settings, load_settings
from unison.features import store

ROOT = Path(__file__).resolve().parents[3]
REPO = ROOT / "features"
REDIS_DB = int(os.environ.get("UNISON_TEST_REDIS_DB", "13"))


def feature_settings(tmp: Path, demo_data: Path, profile: str, project: str = "unison") -> Settings:
    data = tmp / "data"
    shutil.copytree(demo_data, data)  # pushes add parts to the offline dataset: never touch the shared copy
    # No compaction from the push path: tests that count the stored rows must not meet one in flight (whose
    # published part and not yet retired inputs are exact duplicates); the compaction tests turn it on.
    return load_settings(data={"dir": data}, features={
        "repo_dir": REPO, "state_dir": tmp / "feast", "profile": profile, "project": project,
        "redis_connection": f"127.0.0.1:6379,db={REDIS_DB}", "compact_after_parts": 0})


@pytest.fixture(scope="module", params=["local", "redis"])
def applied(request, tmp_path_factory, demo_data) -> Iterator[Settings]:
    profile = request.param
    project = "unison" if profile == "local" else f"it_{uuid.uuid4().hex[:10]}"
    settings = feature_settings(tmp_path_factory.mktemp(profile), demo_data, profile, project)
    store.apply(settings)
    store.materialize(settings)
    yield settings
    if profile == "redis":
        store.teardown(settings)
        client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
        assert not [k for k in client.scan_iter(count=1000) if project.encode() in k], "keys left behind"
