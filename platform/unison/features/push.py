"""Validated pushes of activity updates into the feature store, safe to kill and to run twice; compaction of the
offline parts they add. `unison.features.store.Features.push` is the entry point; this module is its machinery.

Offline each push is a new part of the activity dataset (never a rewrite of the data readers use), online an
older event never overwrites a newer one on either store (SQLite: a trigger on Feast's tables, `_guard_sqlite`,
installed whenever the store is opened; Redis: one compare-and-write script per customer, `_RedisWriter`) and a
push carries one row per customer, its newest (`newest_rows`). A replayed push leaves the online stores as they
were and adds offline duplicates that point-in-time joins read the same way.

Parts add up (a stream pushes about twice a second, and every read lists and opens each part), so a push that
leaves more than `features.compact_after_parts` unmerged parts starts a compaction in a background thread
(`unison.data.dataset.compact`; one per dataset across processes, the others skip); `unison features compact`
runs one from cron (`compact`). The store's reads of the dataset are tried again when a compaction retired a
part between their listing and their open (`unison.features.store._reading`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from unison.config import Settings
from unison.data import CUSTOMER_ACTIVITY_SCHEMA
from unison.data.dataset import Compaction, parts, pending_parts, write_part
from unison.data.dataset import compact as compact_dataset
from unison.domain import ENTITY_KEY, PUSH_SCHEMA, PUSH_VIEW, VIEWS
from unison.features.store import FeatureStoreError, _reading, activity_dataset

log = logging.getLogger(__name__)
# What a push must carry (PUSH_SCHEMA: column -> (kind, nullable)) is unison.domain's.
_COUNTS = [c for c, (kind, _) in PUSH_SCHEMA.items() if kind == "int" and c != ENTITY_KEY]  # never negative
PushTarget = Literal["online_and_offline", "online", "offline"]


class PushSchemaError(ValueError):
    """A push's rows do not match the activity schema; the message names the column."""


# ---------------------------------------------------------------------------------------------- compaction


def compact(settings: Settings, full: bool = False) -> Compaction:
    """Compact the activity dataset now (`unison.data.dataset.compact` with the `features.compact_*` settings);
    skipped, at once, when another process is compacting it."""
    return _compact(_dataset_dir(activity_dataset(settings)), settings, full)


def _compact(dataset: Path, settings: Settings, full: bool = False) -> Compaction:
    cfg = settings.features
    return compact_dataset(dataset, grace_s=cfg.compact_grace_s, max_part_bytes=cfg.compact_max_part_mib * 2**20,
                           full=full)


def _dataset_dir(dataset: Path) -> Path:
    if not dataset.is_dir():
        raise FeatureStoreError(f"the activity source {dataset} is not a dataset directory; run "
                                "`unison features apply` (it converts a single file) or `unison data generate`")
    return dataset


# ---------------------------------------------------------------------------------------------- pushes


class Pusher:
    """The push path of one `Features`: its FeatureStore, the push view, the activity dataset (offline parts),
    the Redis compare-and-write (on the Redis profile) and at most one background compaction thread."""

    def __init__(self, settings: Settings, store: Any, view: Any, dataset: Path) -> None:
        self.settings, self.store = settings, store
        self._dataset = dataset
        self._dataset_schema: pa.Schema | None = None
        self._compaction: threading.Thread | None = None
        self._compaction_start = threading.Lock()
        self._redis_writer = _RedisWriter(store, view) if store.config.online_store.type == "redis" else None

    def push(self, rows: pd.DataFrame, to: PushTarget = "online_and_offline") -> int:
        """`Features.push`: validate, then offline every row (bar ones superseded at the same instant) as a new
        part, then online each customer's newest row; return the row count."""
        frame = validate_push(rows)
        if frame.empty:
            return 0
        if to != "online":
            self._append_offline(newest_rows(frame, ("customer_id", "event_timestamp")))
        if to != "offline":
            latest = newest_rows(frame)
            if self._redis_writer is not None:
                self._redis_writer.write(latest)
            else:  # Feast's SQLite upsert, made conditional by the trigger `_guard_sqlite` installed
                self.store.write_to_online_store(PUSH_VIEW, latest)
        if to != "online":
            self._compact_if_due()
        return len(frame)

    def _compact_if_due(self) -> None:
        """Start a compaction in a background thread when the dataset holds more unmerged pushed parts than
        `features.compact_after_parts` (one listing per push; one compaction thread per instance at most; another
        process compacting makes it skip). The push never waits for it."""
        limit = self.settings.features.compact_after_parts
        if not limit:
            return
        with self._compaction_start:
            if self._compaction is not None and self._compaction.is_alive():
                return
            if pending_parts(self._dataset) <= limit:
                return
            self._compaction = threading.Thread(target=self._compact, name="unison-compaction", daemon=True)
            self._compaction.start()

    def _compact(self) -> None:
        try:
            done = _compact(self._dataset, self.settings)
        except Exception:  # the next push tries again; readers are unaffected (see `compact`)
            log.warning("compaction of %s failed", self._dataset, exc_info=True)
            return
        if not done.skipped:
            log.info("compacted %s: %d parts -> %d (%d rows merged into %d)", self._dataset,
                     len(done.parts_before), len(done.parts_after), done.rows_in, done.rows_out)

    def wait_for_compaction(self, timeout: float | None = None) -> bool:
        """Wait for the background compaction a push started, if any; False if it is still running at `timeout`."""
        thread = self._compaction
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _append_offline(self, frame: pd.DataFrame) -> None:
        """The rows as one new part of the activity dataset, typed like its first part (readers need one schema)."""
        _dataset_dir(self._dataset)
        if self._dataset_schema is None:
            self._dataset_schema = _reading(self._dataset, lambda: next(
                (pq.read_schema(p) for p in parts(self._dataset)), CUSTOMER_ACTIVITY_SCHEMA))
        schema = self._dataset_schema.remove_metadata()
        table = pa.Table.from_pandas(frame[schema.names], preserve_index=False).cast(schema)
        write_part(self._dataset, table.replace_schema_metadata(None))


# ---------------------------------------------------------------------------------------------- validation


def validate_push(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows shaped for the push source, or PushSchemaError naming the first bad column."""
    missing = [c for c in PUSH_SCHEMA if c not in rows.columns]
    if missing:
        raise PushSchemaError(f"push rows lack column(s) {missing}; expected {list(PUSH_SCHEMA)}")
    unexpected = [c for c in rows.columns if c not in PUSH_SCHEMA and c != "created_timestamp"]
    if unexpected:
        raise PushSchemaError(f"push rows have unknown column(s) {unexpected}; expected {list(PUSH_SCHEMA)}")
    out = pd.DataFrame(index=rows.index)
    for column, (kind, nullable) in PUSH_SCHEMA.items():
        values = rows[column]
        if not nullable and values.isna().any():
            first = int(values.isna().to_numpy().argmax())
            raise PushSchemaError(f"column {column!r} has missing values (row {first})")
        try:
            if kind == "time":
                converted = pd.to_datetime(values, utc=True, errors="raise")
            else:
                converted = pd.to_numeric(values, errors="raise")
                if kind == "int":
                    if not np.all(np.mod(converted.dropna(), 1) == 0):
                        raise ValueError("not whole numbers")
                    converted = converted.astype("int32" if column != ENTITY_KEY else "int64")
                else:
                    converted = converted.astype("float64")
        except (ValueError, TypeError) as exc:
            raise PushSchemaError(f"column {column!r} must be {kind}: {exc}") from None
        out[column] = converted
    if (out[_COUNTS] < 0).any().any():
        raise PushSchemaError(f"counts ({', '.join(_COUNTS)}) must be >= 0")
    if not out["last_csat"].dropna().between(1, 5).all():
        raise PushSchemaError("column 'last_csat' must be between 1 and 5")
    now = pd.Timestamp.now(tz=UTC)  # rows that carry no created_timestamp are stamped with the push's time
    out["created_timestamp"] = pd.to_datetime(rows["created_timestamp"], utc=True).fillna(now) \
        if "created_timestamp" in rows.columns else now
    for column in ("event_timestamp", "created_timestamp"):  # the offline store keeps microseconds: so do all
        out[column] = out[column].dt.floor("us")
    return out.reset_index(drop=True)


def newest_rows(frame: pd.DataFrame, keys: Sequence[str] = ("customer_id",)) -> pd.DataFrame:
    """The newest row per `keys` (default: per customer): greatest event_timestamp, then created_timestamp, then
    the later row (as a later push would win); kept rows stay in input order. Per customer it is what the point-in-time
    join reads as current, so what the online stores must hold (Feast's disagree within one write: SQLite keeps
    the last row, Redis the first of the newest). Per (customer, event_timestamp) it drops rows superseded at the
    same instant, which Feast's file offline store would pick from arbitrarily (it sorts by created time, then by
    event time, unstably)."""
    keyed = frame.assign(_position=np.arange(len(frame)))
    newest = keyed.sort_values(["customer_id", "event_timestamp", "created_timestamp", "_position"]) \
        .drop_duplicates(list(keys), keep="last")
    return newest.sort_values("_position").drop(columns="_position").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- online writes

def _guard_sqlite(store: Any) -> None:
    """Make every write to the SQLite online tables conditional: an older event never overwrites a newer one.

    Feast's SqliteOnlineStore upserts unconditionally (the last write wins whatever its event time), its
    RedisOnlineStore skips older events; this trigger gives SQLite the Redis rule for every writer (pushes,
    materialization, other processes), checked inside each upsert statement, so atomically. Feast's layout
    (feast/infra/online_stores/sqlite.py, `update` and `online_write_batch`): one table `<project>_<view>` per view,
    one row per (entity_key, feature_name) with `event_ts` as whole epoch seconds (Feast's datetime adapter), one
    `INSERT ... ON CONFLICT(entity_key, feature_name) DO UPDATE` per row; `RAISE(IGNORE)` in a BEFORE UPDATE
    trigger abandons just that statement. An equal event time is written (a replay writes the same values).
    """
    from feast.infra.online_stores.helpers import compute_table_id
    from feast.infra.online_stores.sqlite import _quote_id

    config = store.config
    versioning = config.registry.enable_online_feature_view_versioning
    try:
        tables = [compute_table_id(config.project, store.get_feature_view(name), versioning) for name in VIEWS]
    except Exception:  # not applied yet: apply opens the store again once the tables exist
        return
    conn = store._get_provider().online_store._get_conn(config)
    existing = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'trigger')")}
    with conn:
        for table in tables:
            trigger = f"{table}_older_never_overwrites"
            if table in existing and trigger not in existing:
                conn.execute(f"CREATE TRIGGER IF NOT EXISTS {_quote_id(trigger)} BEFORE UPDATE ON {_quote_id(table)} "
                             "WHEN NEW.event_ts < OLD.event_ts BEGIN SELECT RAISE(IGNORE); END")


# KEYS[1]: an entity's hash. ARGV: the view's `_ts` field, the event's seconds and nanos, key TTL seconds (0: none),
# then the field/value pairs to set. `_ts` holds a protobuf Timestamp: varint field 1 (seconds), 2 (nanos).
_NEWER_WINS_LUA = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local stored, i = {0, 0}, 1
  while i <= #raw do
    local tag = string.byte(raw, i)
    local value, scale = 0, 1
    repeat
      i = i + 1
      local b = string.byte(raw, i)
      value = value + (b % 128) * scale
      scale = scale * 128
    until b < 128
    i = i + 1
    if tag == 8 then stored[1] = value elseif tag == 16 then stored[2] = value end
  end
  local seconds, nanos = tonumber(ARGV[2]), tonumber(ARGV[3])
  if seconds < stored[1] or (seconds == stored[1] and nanos < stored[2]) then return 0 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return 1
"""


class _RedisWriter:
    """Pushes into Feast's Redis layout with one compare-and-write script per customer, in one pipeline.

    Feast's RedisOnlineStore.online_write_batch also skips events older than the stored `_ts:<view>`, but reads
    every `_ts` in one round trip and writes in a second: a concurrent writer (another replica, materialization)
    landing between the two is overwritten even when newer. The script compares and writes in one atomic step.
    Same keys and encodings as Feast (rows converted by Feast's `_prep_rows_to_write_for_ingestion`; entity key +
    project; murmur3 field names; `_ts:<view>`), like `_RedisReader`; an equal event time is written, as on SQLite.
    """

    def __init__(self, store: Any, view: Any) -> None:
        from feast.infra.online_stores.helpers import _mmh3, _redis_key
        from feast.infra.online_stores.redis import _versioned_fv_name

        config = store.config
        self._view, self._provider = view, store._get_provider()
        versioned = _versioned_fv_name(view, config)
        self._ts_field = f"_ts:{versioned}"
        self._fields = {f.name: _mmh3(f"{versioned}:{f.name}") for f in view.features}
        self._ttl = int(config.online_store.key_ttl_seconds or 0)
        version, project = config.entity_key_serialization_version, config.project
        self._key = lambda entity_key: _redis_key(project, entity_key, entity_key_serialization_version=version)
        client = self._provider.online_store._get_client(config.online_store)
        self._client, self._script = client, client.register_script(_NEWER_WINS_LUA)

    def write(self, frame: pd.DataFrame) -> None:
        from feast.utils import make_tzaware
        from google.protobuf.timestamp_pb2 import Timestamp

        rows = self._provider._prep_rows_to_write_for_ingestion(feature_view=self._view, df=frame)
        with self._client.pipeline(transaction=False) as pipe:
            for entity_key, values, event_time, _ in rows:
                stamp = Timestamp()
                stamp.FromDatetime(make_tzaware(event_time))
                args: list[Any] = [self._ts_field, stamp.seconds, stamp.nanos, self._ttl,
                                   self._ts_field, stamp.SerializeToString()]
                for name, value in values.items():
                    args += [self._fields[name], value.SerializeToString()]
                self._script(keys=[self._key(entity_key)], args=args, client=pipe)
            pipe.execute()
