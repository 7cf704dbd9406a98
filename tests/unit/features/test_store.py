"""Feature-store plumbing without servers: profile configuration and the versioned feature service."""

from pathlib import Path

from unison.config import load_settings
from unison.features.store import feature_service_name, repo_config
from unison.features.transform import TRANSFORM_VERSION

REPO = Path(__file__).resolve().parents[3] / "features"


def test_profiles_share_definitions_and_differ_in_stores(tmp_path: Path) -> None:
    local = repo_config(load_settings(features={"repo_dir": REPO, "state_dir": tmp_path / "feast"}))
    assert local.online_store.type == "sqlite"
    assert Path(local.online_store.path) == tmp_path / "feast" / "online_store.db"
    redis = repo_config(load_settings(features={"repo_dir": REPO, "state_dir": tmp_path / "feast", "profile": "redis",
                                                "redis_connection": "10.0.0.9:6380,db=3", "project": "other"}))
    assert redis.online_store.type == "redis" and redis.online_store.connection_string == "10.0.0.9:6380,db=3"
    assert redis.registry.registry_type == "sql" and redis.registry.path.startswith("sqlite:///")
    assert redis.project == "other" and local.project == "unison"


def test_feature_service_is_versioned_with_the_transform() -> None:
    assert feature_service_name() == f"triage_v{TRANSFORM_VERSION}"
