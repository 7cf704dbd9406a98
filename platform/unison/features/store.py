"""Feast access for every path: apply and materialize, online lookup of a batch of customers in one round trip,
point-in-time historical retrieval, per-view freshness, and validated pushes (`Features.push`, whose machinery --
offline parts, the online stores' newer-wins writes, compaction -- is `unison.features.push`).

The definitions live in the Feast repository (`features/`); this module only builds the store from the YAML of
the configured profile, with paths and connections from the Unison configuration.

Pushes add parts to the activity dataset and compactions merge them, so reads of the dataset (historical
retrieval, materialization, freshness) are tried again when a compaction retired a part between their listing
and their open (`_reading`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from unison.config import Settings
from unison.data import FILE_NAMES
from unison.data.dataset import as_dataset
from unison.domain import CUSTOMER_FEATURES, PUSH_VIEW, VIEWS
from unison.features.transform import TRANSFORM_VERSION

log = logging.getLogger(__name__)
_T = TypeVar("_T")
PROFILE_FILES = {"local": "feature_store.yaml", "redis": "feature_store.redis.yaml"}
# The views (VIEWS: view -> its columns) and the one the push source feeds (PUSH_VIEW) are unison.domain's, as
# features/triage.py defines them for Feast.


class FeatureStoreError(RuntimeError):
    """The feature store is not set up (not applied, not materialized) or a request to it failed."""


def feature_service_name() -> str:
    """The feature service of the current transform version (recorded in model manifests)."""
    return f"triage_v{TRANSFORM_VERSION}"


def feature_refs() -> list[str]:
    return [f"{view}:{name}" for view, names in VIEWS.items() for name in names]


# ---------------------------------------------------------------------------------------------- configuration


def repo_config(settings: Settings) -> Any:
    """The Feast RepoConfig of the configured profile, with Unison's paths and connections filled in."""
    from feast.repo_config import RepoConfig

    cfg = settings.features
    repo = cfg.repo_dir.resolve()
    path = repo / PROFILE_FILES[cfg.profile]
    if not path.is_file():
        raise FeatureStoreError(f"no {PROFILE_FILES[cfg.profile]} in the feature repository {repo}")
    raw = yaml.safe_load(os.path.expandvars(path.read_text()))
    state = cfg.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    raw["project"] = cfg.project
    if cfg.profile == "local":
        raw["registry"] = str(state / "registry.db")
        raw["online_store"] = {**raw["online_store"], "path": str(state / "online_store.db")}
    else:
        raw["registry"] = {"registry_type": "sql", "path": cfg.registry_url or f"sqlite:///{state / 'registry.sqlite'}",
                           "cache_ttl_seconds": 60, "sqlalchemy_config_kwargs": {"pool_pre_ping": True}}
        raw["online_store"] = {**raw["online_store"], "connection_string": cfg.redis_connection}
    if cfg.offline_store == "ray":
        raw["offline_store"] = {"type": "ray", "storage_path": str(state / "ray-offline"),
                                "ray_address": cfg.ray_address or _current_ray_address(settings)}
    config = RepoConfig(**raw)
    config.repo_path = repo
    return config


def _current_ray_address(settings: Settings) -> str | None:
    """The cluster this process is already connected to (inside a Ray job), else the configured/embedded one."""
    import ray

    if ray.is_initialized():
        return None
    from unison.ops.stack import StackError, endpoints

    try:
        return endpoints(settings).ray_address
    except StackError:
        return None


@contextlib.contextmanager
def _definitions_environment(settings: Settings) -> Iterator[None]:
    """The definitions read the data location from UNISON_DATA__DIR; set it (absolute) while Feast imports them,
    drop stale imports of the repository's modules, and restore the working directory Feast changes."""
    previous_env = os.environ.get("UNISON_DATA__DIR")
    previous_cwd = os.getcwd()
    os.environ["UNISON_DATA__DIR"] = str(settings.data.dir.resolve())
    repo = settings.features.repo_dir.resolve()
    for file in repo.glob("*.py"):
        sys.modules.pop(file.stem, None)
    sys.path.insert(0, str(repo))  # Feast imports the definition files as top-level modules
    try:
        yield
    finally:
        sys.path.remove(str(repo))
        os.chdir(previous_cwd)
        if previous_env is None:
            os.environ.pop("UNISON_DATA__DIR", None)
        else:
            os.environ["UNISON_DATA__DIR"] = previous_env


def apply(settings: Settings) -> None:
    """`feast apply` for the configured repository and profile (registers definitions, creates online tables)."""
    from feast.repo_operations import apply_total

    config = repo_config(settings)
    for table in ("customer_profile.parquet", "customer_activity.parquet"):
        if not (settings.data.dir / table).exists():
            raise FeatureStoreError(f"no data to define features over: {settings.data.dir / table} is missing "
                                    "(run `unison data generate`)")
    as_dataset(settings.data.dir / FILE_NAMES["customer_activity"])  # a single file from before datasets
    with _definitions_environment(settings):
        apply_total(config, settings.features.repo_dir.resolve(), skip_source_validation=False)
    open_store(settings)  # installs the SQLite guard on the tables apply created


def teardown(settings: Settings) -> None:
    """Remove the project's online tables/keys and registry entries (tests and clean-ups)."""
    store = open_store(settings)
    store.teardown()


def open_store(settings: Settings) -> Any:
    """The FeatureStore; on SQLite with every write to the online tables made conditional (`_guard_sqlite`)."""
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(settings.features.repo_dir.resolve()), config=repo_config(settings))
    if store.config.online_store.type == "sqlite":
        from unison.features.push import _guard_sqlite  # push builds on this module: imported when used

        _guard_sqlite(store)
    return store


def materialize(settings: Settings, end: datetime | None = None, incremental: bool = False) -> list[str]:
    """Load the newest value per customer into the online store.

    Full: every view from the start of time to `end` (default now). Incremental: from where each view stopped;
    a view never materialized before is loaded in full first (Feast would otherwise start a year back and miss
    rows like old profiles).
    """
    store = open_store(settings)
    end = end or datetime.now(UTC)
    views = [store.get_feature_view(name) for name in VIEWS]
    fresh = [v.name for v in views if not v.materialization_intervals]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    dataset = activity_dataset(settings)
    with _definitions_environment(settings):
        if not incremental:
            _reading(dataset, lambda: store.materialize(start_date=epoch, end_date=end, feature_views=list(VIEWS)))
            return list(VIEWS)
        if fresh:
            _reading(dataset, lambda: store.materialize(start_date=epoch, end_date=end, feature_views=fresh))
        rest = [name for name in VIEWS if name not in fresh]
        if rest:
            _reading(dataset, lambda: store.materialize_incremental(end_date=end, feature_views=rest))
    return list(VIEWS)


def activity_dataset(settings: Settings) -> Path:
    """The activity dataset directory pushes append to (the `customer_activity` view's batch source)."""
    return settings.data.dir.resolve() / FILE_NAMES["customer_activity"]


def _reading(dataset: Path, read: Callable[[], _T], attempts: int = 3) -> _T:
    """`read()`, again (up to `attempts` in all) when it fails to open a file of `dataset`: a compaction retired a
    part between the reader's listing of the directory and its open (Dask lists when the query is built, opens
    when it runs). A read that already opened its files is unaffected (POSIX: renaming or unlinking an open file
    leaves it readable). Materialization is safe to repeat (an older value never overwrites a newer one)."""
    for attempt in range(1, attempts + 1):
        try:
            return read()
        except FileNotFoundError as exc:
            if attempt == attempts or str(dataset) not in str(exc):
                raise
            log.info("a part of %s was compacted away during a read (%s); reading again", dataset, exc)
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------- access


@dataclass(frozen=True)
class ViewFreshness:
    view: str
    ttl: timedelta | None
    materialized_until: datetime | None
    newest_event_time: datetime | None


class Features:
    """Feature access for the scoring paths; holds one FeatureStore (and its cached registry)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings)
        try:
            views = {name: self.store.get_feature_view(name) for name in VIEWS}
        except Exception as exc:  # Feast raises its own not-found errors
            raise FeatureStoreError(f"feature views are not registered ({exc}); run `unison features apply`") from exc
        self._ttl = {name: view.ttl for name, view in views.items()}
        self._refs = feature_refs()
        source = Path(views[PUSH_VIEW].batch_source.path)
        self._dataset = source if source.is_absolute() else settings.features.repo_dir.resolve() / source
        if self.store.config.online_store.type == "redis":
            self._reader: _OnlineReader = _RedisReader(self.store, views)
        else:
            self._reader = _ProviderReader(self.store, views)
        from unison.features.push import Pusher  # push builds on this module: imported when used

        self._pusher = Pusher(settings, self.store, views[PUSH_VIEW], self._dataset)

    def online(self, customer_ids: Sequence[int], as_of: datetime | None = None) -> pd.DataFrame:
        """The current features of every customer in one batch lookup.

        Returns one row per input id (same order) with CUSTOMER_FEATURES; values older than their view's TTL
        (relative to `as_of`, default now) and unknown customers come back as missing (None), for the
        transform to default and flag. On Redis this is one pipelined round trip for all views.
        """
        ids = [int(i) for i in customer_ids]
        if not ids:
            return pd.DataFrame(columns=["customer_id", *CUSTOMER_FEATURES])
        now = (as_of or datetime.now(UTC)).timestamp()
        frame: dict[str, Any] = {"customer_id": ids}
        for view, (stamps, columns) in self._reader.read(ids).items():
            ttl = self._ttl[view]
            stale = [False] * len(ids)
            if ttl and ttl.total_seconds() > 0:
                limit = ttl.total_seconds()
                stale = [t is not None and now - t > limit for t in stamps]
            for name, values in columns.items():
                frame[name] = [None if old else v for v, old in zip(values, stale, strict=True)]
        return pd.DataFrame(frame)

    def historical(self, entities: pd.DataFrame, timestamp_column: str = "event_timestamp") -> pd.DataFrame:
        """Point-in-time join: each row gets the values valid at its timestamp (never later ones), within TTL.

        Every input row comes back, in input order, with its own columns kept. Only the distinct
        (customer_id, timestamp) pairs go to Feast: its join collapses rows that share both, which would
        silently drop two tickets filed by one customer in the same instant.
        """
        missing = {"customer_id", timestamp_column} - set(entities.columns)
        if missing:
            raise ValueError(f"entity rows need column(s) {sorted(missing)}")
        # Arrow-backed batches (Ray Data) arrive as Python datetimes; Feast needs a datetime64 column.
        when = pd.to_datetime(entities[timestamp_column], utc=True)
        keys = pd.DataFrame({"customer_id": entities["customer_id"].astype("int64").to_numpy(),
                             "event_timestamp": when.to_numpy()}).drop_duplicates(ignore_index=True)
        with _definitions_environment(self.settings):
            values = _reading(self._dataset, lambda: self.store.get_historical_features(
                entity_df=keys, features=self._refs).to_df())
        values["event_timestamp"] = pd.to_datetime(values["event_timestamp"], utc=True)
        rows = entities.drop(columns=[c for c in CUSTOMER_FEATURES if c in entities.columns]).assign(
            _customer=entities["customer_id"].astype("int64").to_numpy(), _when=when.to_numpy())
        joined = rows.merge(values.rename(columns={"customer_id": "_customer", "event_timestamp": "_when"}),
                            on=["_customer", "_when"], how="left", validate="many_to_one")
        if len(joined) != len(entities):
            raise FeatureStoreError(f"point-in-time join returned {len(joined)} rows for {len(entities)} inputs")
        return joined.drop(columns=["_customer", "_when"]).set_index(entities.index)

    def push(self, rows: pd.DataFrame, to: Literal["online_and_offline", "online", "offline"] = "online_and_offline",
             ) -> int:
        """Validate activity updates and push them to the offline and online stores (or one of them: a backfill
        of history goes offline only); return the row count.

        Offline first, every row (bar ones superseded at the same instant), as a new part of the dataset; then
        online, each customer's newest row only, written unless the stored one is newer. A kill anywhere leaves
        both stores readable, and a replay converges to the same state. Not Feast's `push`: its file offline
        store rewrites the whole source file per push, and its two online stores disagree on late events.
        Rows that do not fit the push schema raise `unison.features.push.PushSchemaError`; the work is
        `unison.features.push.Pusher`'s."""
        return self._pusher.push(rows, to)

    def wait_for_compaction(self, timeout: float | None = None) -> bool:
        """Wait for the background compaction a push started, if any; False if it is still running at `timeout`."""
        return self._pusher.wait_for_compaction(timeout)

    def freshness(self, newest_events: bool = True) -> list[ViewFreshness]:
        """Per view: TTL, end of the newest materialized interval, and the newest event time that interval
        loaded (`newest_events=False` skips that one, which reads the source's timestamps). Pushed rows reach
        the online store without materialization; the streaming path reports their freshness itself."""
        import pyarrow.compute as pc

        result = []
        for name in VIEWS:
            view = self.store.get_feature_view(name)
            until = max((end for _, end in view.materialization_intervals), default=None)
            newest = None
            source = view.batch_source
            path = Path(getattr(source, "path", "") or "")
            if newest_events and until is not None and path.exists():  # a file, or a dataset directory
                stamps = _reading(path, partial(pq.read_table, path, columns=[source.timestamp_field])).column(0)
                limit = pa.scalar(pd.Timestamp(until).tz_convert("UTC").to_pydatetime(),
                                  type=pa.timestamp("us", tz="UTC")).cast(stamps.type)
                value = pc.max(stamps.filter(pc.less_equal(stamps, limit))).as_py()
                newest = value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
            result.append(ViewFreshness(name, view.ttl if view.ttl and view.ttl.total_seconds() else None,
                                        until, newest))
        return result


# ---------------------------------------------------------------------------------------------- online readers

# view -> (event time in epoch seconds or None per row, feature -> values per row)
OnlineRows = dict[str, tuple[list[float | None], dict[str, list[Any]]]]


def _python_value(value: Any) -> Any:
    kind = value.WhichOneof("val")
    return None if kind is None or kind == "null_val" else getattr(value, kind)


class _OnlineReader:
    def read(self, ids: list[int]) -> OnlineRows:
        raise NotImplementedError


class _ProviderReader(_OnlineReader):
    """Any Feast online store, through its provider's `online_read` (one query per view)."""

    def __init__(self, store: Any, views: dict[str, Any]) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self._entity_key = lambda i: EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=i)])
        self.store, self.views = store, views
        self.provider = store._get_provider()

    def read(self, ids: list[int]) -> OnlineRows:
        keys = [self._entity_key(i) for i in ids]
        result: OnlineRows = {}
        for name, view in self.views.items():
            rows = self.provider.online_read(self.store.config, view, keys, list(VIEWS[name]))
            stamps = [ts.timestamp() if ts is not None else None for ts, _ in rows]
            columns = {f: [_python_value(values[f]) if values and f in values else None for _, values in rows]
                       for f in VIEWS[name]}
            result[name] = (stamps, columns)
        return result


class _RedisReader(_OnlineReader):
    """Feast's Redis layout read directly: one HMGET per customer for every view's fields, all in one pipeline.

    Same keys and encodings as Feast's RedisOnlineStore (entity key + project; murmur3 field names; `_ts:<view>`),
    minus its per-request registry and response assembly; tests compare it with `get_online_features`.
    """

    def __init__(self, store: Any, views: dict[str, Any]) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.helpers import _mmh3
        from feast.infra.online_stores.redis import _versioned_fv_name
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from google.protobuf.timestamp_pb2 import Timestamp

        config = store.config
        self._value_type, self._timestamp_type = Value, Timestamp
        version = config.entity_key_serialization_version
        project = config.project.encode()
        self._key = lambda i: serialize_entity_key(
            EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=i)]),
            entity_key_serialization_version=version) + project
        self._fields: list[bytes | str] = []
        self._layout: list[tuple[str, int, list[tuple[str, int]]]] = []  # view, ts index, (feature, index)
        for name, view in views.items():
            versioned = _versioned_fv_name(view, config)
            features = []
            for feature in VIEWS[name]:
                features.append((feature, len(self._fields)))
                self._fields.append(_mmh3(f"{versioned}:{feature}"))
            self._layout.append((name, len(self._fields), features))
            self._fields.append(f"_ts:{versioned}")
        self._client = store._get_provider().online_store._get_client(config.online_store)

    def read(self, ids: list[int]) -> OnlineRows:
        with self._client.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.hmget(self._key(i), self._fields)
            replies = pipe.execute()
        parse_value, parse_ts = self._value_type.FromString, self._timestamp_type.FromString
        result: OnlineRows = {}
        for view, ts_index, features in self._layout:
            stamps: list[float | None] = []
            columns: dict[str, list[Any]] = {f: [] for f, _ in features}
            for reply in replies:
                raw_ts = reply[ts_index]
                stamps.append(float(parse_ts(raw_ts).seconds) if raw_ts else None)
                for feature, index in features:
                    raw = reply[index]
                    columns[feature].append(_python_value(parse_value(raw)) if raw else None)
            result[view] = (stamps, columns)
        return result
