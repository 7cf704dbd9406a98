"""Version routing: aliases, exact versions, canary splits, and the 404 messages that name what exists."""

import json
import random
from pathlib import Path

import pytest
from tests.unit.fakes import skeleton_registry

from unison.model import Registry
from unison.serving.routing import Router, UnknownModel


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return skeleton_registry(tmp_path)


def test_aliases_versions_and_defaults(registry: Registry) -> None:
    router = Router(registry, "triage")
    assert router.resolve().model_id == "triage:2"
    assert router.resolve("triage", "3").model_id == "triage:3"
    assert router.resolve("triage", "staging").model_id == "triage:3"
    assert router.resolve("triage", "latest").model_id == "triage:3"
    assert router.resolve("spam").model_id == "spam:1"  # no production alias: the latest version


@pytest.mark.parametrize(("name", "tag", "message"), [
    ("nope", None, "unknown model 'nope'; models: spam, triage"),
    ("triage", "9", "no version '9'; versions: 1, 2, 3; aliases: production->2, staging->3"),
    ("triage", "beta", "no alias 'beta'"),
])
def test_unknown_names_say_what_exists(registry: Registry, name: str, tag: str | None, message: str) -> None:
    with pytest.raises(UnknownModel, match=message):
        Router(registry, "triage").resolve(name, tag)


def test_canary_split_and_pinned_versions(registry: Registry) -> None:
    router = Router(registry, "triage", rng=random.Random(3))
    router.configure({"canaries": {"triage": {"version": "3", "weight": 0.25}}})
    picks = [router.resolve() for _ in range(4000)]
    share = sum(p.version == "3" for p in picks) / len(picks)
    assert abs(share - 0.25) < 0.03 and all(p.canary == (p.version == "3") for p in picks)
    assert {router.resolve("triage", "2").version for _ in range(50)} == {"2"}  # pinned: never split
    with pytest.raises(UnknownModel, match="version 7 is not registered"):
        router.configure({"canaries": {"triage": {"version": "7", "weight": 0.1}}})


def test_a_promote_is_seen_after_the_alias_ttl(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    import unison.serving.routing as routing

    monkeypatch.setattr(routing, "ALIAS_TTL_S", 0.0)
    router = Router(registry, "triage")
    assert router.resolve().version == "2"
    (registry.root / "triage" / "aliases.json").write_text(json.dumps({"production": "3"}))
    assert router.resolve().version == "3"


def test_with_warm_first_a_moved_alias_keeps_its_old_version_until_the_new_one_is_loaded(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    import unison.serving.routing as routing

    monkeypatch.setattr(routing, "ALIAS_TTL_S", 0.0)
    router = Router(registry, "triage", warm_first=True)
    assert router.resolve().version == "2" and router.wanted() == []  # first sight: followed at once
    (registry.root / "triage" / "aliases.json").write_text(json.dumps({"production": "3"}))
    assert router.resolve().version == "2" and router.wanted() == ["triage:3"]
    router.warm_failed("triage:3", "checksum mismatch")
    assert router.resolve().version == "2" and router.wanted() == []
    assert router.warming() == {"triage:3": "failed: checksum mismatch"}
    router.retry("triage:3")
    assert router.wanted() == ["triage:3"]
    router.warmed("triage:3")
    assert router.resolve().version == "3" and router.warming() == {}
    assert router.resolve("triage", "1").version == "1"  # a pinned version is never held back


def test_with_warm_first_a_canary_takes_traffic_only_once_loaded(registry: Registry) -> None:
    router = Router(registry, "triage", rng=random.Random(3), warm_first=True)
    router.configure({"canaries": {"triage": {"version": "3", "weight": 0.5}}})
    assert {router.resolve().version for _ in range(50)} == {"2"} and router.wanted() == ["triage:3"]
    router.warmed("triage:3")
    assert {router.resolve().version for _ in range(50)} == {"2", "3"}


def test_without_warm_first_traffic_follows_at_once(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    import unison.serving.routing as routing

    monkeypatch.setattr(routing, "ALIAS_TTL_S", 0.0)
    router = Router(registry, "triage")
    router.resolve()
    (registry.root / "triage" / "aliases.json").write_text(json.dumps({"production": "3"}))
    assert router.resolve().version == "3" and router.wanted() == []
