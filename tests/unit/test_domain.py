"""unison.domain: the facts every room reads, stated once -- model references, the feature views as the Feast
repository defines them, the push schema, the vocabulary and the text limit."""

import ast
import importlib
import importlib.util
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.unit.fakes import skeleton_registry

from unison import domain
from unison.domain import CUSTOMER_ACTIVITY, CUSTOMER_PROFILE, FEATURE_VIEWS, MAX_TEXT_CHARS, ModelRef
from unison.model.registry import Registry, RegistryError, select
from unison.serving.routing import Router, UnknownModel

ROOT = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------- ModelRef


@pytest.mark.parametrize(("text", "name", "tag", "version", "alias"), [
    ("triage", "triage", None, None, None),
    ("triage:production", "triage", "production", None, "production"),
    ("triage:3", "triage", "3", "3", None),
    ("triage:latest", "triage", "latest", None, "latest"),
    ("my-model_2:canary-b", "my-model_2", "canary-b", None, "canary-b"),
    ("0day:12", "0day", "12", "12", None),
])
def test_model_refs_parse_and_round_trip(text: str, name: str, tag: str | None, version: str | None,
                                         alias: str | None) -> None:
    ref = ModelRef.parse(text)
    assert (ref.name, ref.tag, ref.version, ref.alias) == (name, tag, version, alias)
    assert str(ref) == text and ModelRef.parse(str(ref)) == ref
    assert ref == ModelRef(name, tag) and hash(ref) == hash(ModelRef(name, tag))


@pytest.mark.parametrize(("text", "problem"), [
    ("", "empty model reference"),
    ("Triage", "invalid model name 'Triage'"),
    ("-triage", "invalid model name '-triage'"),
    ("tri age", "invalid model name 'tri age'"),
    ("triage\n", "invalid model name"),  # `$` alone would let a trailing newline through
    (":3", "invalid model name ''"),
    ("triage:", "ends in ':'"),
    (None, "must be a string such as 'triage:production', got NoneType"),
    (3, "must be a string such as 'triage:production', got int"),
])
def test_bad_model_refs_say_what_is_wrong(text: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(")):
        ModelRef.parse(text)


def test_model_ref_fields_are_checked_and_frozen() -> None:
    with pytest.raises(ValueError, match="tag after ':' is empty"):
        ModelRef("triage", "")
    with pytest.raises(ValueError, match="invalid model name"):
        ModelRef("Triage")
    ref = ModelRef("triage", "3")
    with pytest.raises(AttributeError):
        ref.tag = "4"  # type: ignore[misc]


def test_alias_rules() -> None:
    assert domain.alias_problem("production") is None and domain.alias_problem("canary-b") is None
    for selector in ("latest", "3", "007"):
        assert "reads as a version selector" in (domain.alias_problem(selector) or "")
    assert "non-empty" in (domain.alias_problem("") or "")
    assert domain.is_version("12") and not domain.is_version("v2") and not domain.is_version("")


# ---------------------------------------------------------------------------------------------- alias resolution


def test_select_is_the_one_set_of_alias_rules() -> None:
    versions, aliases = ["1", "2", "3"], {"production": "2", "staging": "3"}

    def pick(ref: str, default: str = "production") -> tuple[str, str | None]:
        chosen = select(ModelRef.parse(ref), versions, aliases, default)
        return chosen.version, chosen.alias

    assert pick("m") == ("2", "production")
    assert pick("m", default="staging") == ("3", "staging")
    assert pick("m", default="nightly") == ("3", "latest")  # the default alias is missing: the newest
    assert pick("m:latest") == ("3", "latest") and pick("m:staging") == ("3", "staging")
    assert pick("m:1") == ("1", None)
    with pytest.raises(RegistryError, match=r"no version '9'; versions: 1, 2, 3; aliases: production->2, staging->3"):
        pick("m:9")
    with pytest.raises(RegistryError, match="no alias 'beta'"):
        pick("m:beta")
    with pytest.raises(RegistryError, match="no registered versions"):
        select(ModelRef("m"), [], {})


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return skeleton_registry(tmp_path)


@pytest.mark.parametrize("ref", ["triage", "triage:production", "triage:staging", "triage:latest", "triage:1",
                                 "triage:3", "spam", "spam:latest", "spam:1"])
def test_the_registry_and_the_router_resolve_alike(registry: Registry, ref: str) -> None:
    parsed = ModelRef.parse(ref)
    assert Router(registry, "triage").resolve(parsed.name, parsed.tag).version == registry.resolve(ref)[1]
    assert registry.resolve(parsed) == registry.resolve(ref)


@pytest.mark.parametrize("ref", ["triage:9", "triage:beta", "nope", "Nope", "triage:"])
def test_the_registry_and_the_router_refuse_alike(registry: Registry, ref: str) -> None:
    with pytest.raises(RegistryError):
        registry.resolve(ref)
    name, _, tag = ref.partition(":")
    if not ref.endswith(":"):  # the router takes name and tag apart: an empty tag there means the default
        with pytest.raises(UnknownModel):
            Router(registry, "triage").resolve(name, tag or None)


def test_a_router_resolves_an_invalid_name_as_unknown(registry: Registry) -> None:
    with pytest.raises(UnknownModel, match="invalid model name 'Triage'"):
        Router(registry, "triage").resolve("Triage")


# ---------------------------------------------------------------------------------------------- feature views


def _feast_repo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """features/triage.py imported as Feast imports it (a top-level module, data location from the env)."""
    monkeypatch.setenv("UNISON_DATA__DIR", str(tmp_path))
    spec = importlib.util.spec_from_file_location("triage_repo_under_test", ROOT / "features" / "triage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_views_are_the_feast_repositorys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from feast.types import Float64, Int32, String

    repo = _feast_repo(monkeypatch, tmp_path)
    feast_types = {"string": String, "int32": Int32, "float64": Float64}
    for spec, view in ((CUSTOMER_PROFILE, repo.customer_profile), (CUSTOMER_ACTIVITY, repo.customer_activity)):
        assert view.name == spec.name
        assert [(f.name, f.dtype) for f in view.features] == [(c.name, feast_types[c.dtype]) for c in spec.columns]
        assert view.ttl == (spec.ttl or timedelta(0)) and view.entities == [domain.ENTITY]
        assert view.batch_source.timestamp_field == domain.EVENT_TIMESTAMP
        assert view.batch_source.created_timestamp_column == domain.CREATED_TIMESTAMP
    assert CUSTOMER_PROFILE.ttl is None and CUSTOMER_ACTIVITY.ttl == timedelta(days=365)
    served = {p.name: [f.name for f in p.features] for p in repo.triage_service.feature_view_projections}
    assert {name: tuple(cols) for name, cols in served.items() if name in domain.VIEWS} == domain.VIEWS
    assert repo.activity_push.batch_source.name == repo.activity_source.name
    assert domain.PUSH_VIEW == repo.customer_activity.name


def test_every_copy_reads_the_views() -> None:
    from unison.features import push, store
    from unison.features.event import FeatureEvent
    from unison.features.offline import ACTIVITY_COLUMNS, PROFILE_COLUMNS

    assert domain.CUSTOMER_FEATURES == (*CUSTOMER_PROFILE.column_names, *CUSTOMER_ACTIVITY.column_names)
    assert importlib.import_module("unison.features.transform").CUSTOMER_FEATURES is domain.CUSTOMER_FEATURES
    assert store.VIEWS is domain.VIEWS and push.PUSH_SCHEMA is domain.PUSH_SCHEMA
    assert (PROFILE_COLUMNS, ACTIVITY_COLUMNS) == (CUSTOMER_PROFILE.column_names, CUSTOMER_ACTIVITY.column_names)
    assert list(domain.PUSH_SCHEMA) == ["customer_id", *CUSTOMER_ACTIVITY.column_names, "event_timestamp"]
    assert {c: n for c, (_, n) in domain.PUSH_SCHEMA.items()} == {
        "customer_id": False, "open_tickets": False, "tickets_last_90d": False, "last_csat": True,
        "days_since_last_login": False, "event_timestamp": False}
    # The stream's event model names the same columns (plus the optional created time).
    assert list(FeatureEvent.model_fields) == [*domain.PUSH_SCHEMA, "created_timestamp"]


def test_the_generators_tables_carry_the_views_columns() -> None:
    from unison.data import CUSTOMER_ACTIVITY_SCHEMA, CUSTOMER_PROFILE_SCHEMA

    arrow = {"string": "string", "int32": "int32", "float64": "double"}
    for spec, schema in ((CUSTOMER_PROFILE, CUSTOMER_PROFILE_SCHEMA), (CUSTOMER_ACTIVITY, CUSTOMER_ACTIVITY_SCHEMA)):
        assert {c.name: arrow[c.dtype] for c in spec.columns}.items() <= {
            f.name: str(f.type) for f in schema}.items()
        assert schema.names[0] == domain.ENTITY_KEY and schema.names[-2:] == ["event_timestamp", "created_timestamp"]
    assert CUSTOMER_PROFILE_SCHEMA.names == ["customer_id", "plan", "tenure_days", "lifetime_value", "region",
                                             "event_timestamp", "created_timestamp"]


def test_views_are_frozen_and_named_once() -> None:
    assert len({v.name for v in FEATURE_VIEWS}) == len(FEATURE_VIEWS)
    assert len(set(domain.CUSTOMER_FEATURES)) == len(domain.CUSTOMER_FEATURES)
    with pytest.raises(AttributeError):
        CUSTOMER_ACTIVITY.ttl = None  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------- vocabulary, limits


def test_the_vocabulary_is_the_domains() -> None:
    import unison.data

    generate = importlib.import_module("unison.data.generate")  # `unison.data.generate` is also a function
    transform = importlib.import_module("unison.features.transform")

    for name in ("CATEGORIES", "PLANS", "CHANNELS", "REGIONS", "URGENCY_WORDS"):
        assert getattr(unison.data, name) is getattr(domain, name) is getattr(generate, name), name
    assert [f"plan_{p}" for p in domain.PLANS] == [f for f in transform.NUMERIC_FEATURES if f.startswith("plan_")]
    for module in ("generate.py", "templates.py"):  # the generator and its text templates
        tree = ast.parse((ROOT / "platform" / "unison" / "data" / module).read_text())
        assigned = {t.id for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)}
        assert not assigned & {"CATEGORIES", "PLANS", "CHANNELS", "REGIONS", "URGENCY_WORDS"}, module


def test_the_text_limit_is_every_paths_default() -> None:
    from unison.model.predictor import PredictorOptions
    from unison.serving.schema import ApiLimits
    from unison.streaming.tickets import StreamConfig

    assert MAX_TEXT_CHARS == 20_000
    assert ApiLimits().max_text_chars == StreamConfig().max_text_chars == MAX_TEXT_CHARS
    assert PredictorOptions().max_text_chars == MAX_TEXT_CHARS


def test_domain_imports_nothing_from_unison() -> None:
    tree = ast.parse((ROOT / "platform" / "unison" / "domain.py").read_text())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if m == "unison" or m.startswith("unison.")]
