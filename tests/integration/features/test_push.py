"""Pushes that are safe to kill and to run twice, on real stores (SQLite and Redis profiles, a real Feast repository):
late and out-of-order events, replays, a pusher killed mid-write, concurrent pushers, append-only parts; compaction
of the parts: reads unchanged, a compaction killed between publish and retire, a push during one, one started by
pushes, a read whose listed part a compaction retired."""

import os
import random
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from unison.config import Settings
from unison.data import dataset
from unison.data.dataset import parts
from unison.features import store
from unison.features.push import compact

T = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)  # well inside the activity view's 365-day TTL


def _events(customer: int, *events: tuple[int, datetime]) -> pd.DataFrame:
    """Activity rows of one customer: (open_tickets, event time) each."""
    return pd.DataFrame([{"customer_id": customer, "open_tickets": value, "tickets_last_90d": 1, "last_csat": None,
                          "days_since_last_login": 0, "event_timestamp": when} for value, when in events])


def _online(features: store.Features, ids: list[int]) -> list[int | None]:
    ours = features.online(ids)["open_tickets"].tolist()
    feast = features.store.get_online_features(features=["customer_activity:open_tickets"],
                                               entity_rows={"customer_id": ids}).to_dict()["open_tickets"]
    assert ours == feast  # our reader and Feast's see the same store
    return ours


def _offline(features: store.Features, ids: list[int], when: datetime) -> list[int]:
    rows = pd.DataFrame({"customer_id": ids, "event_timestamp": [when] * len(ids)})
    return features.historical(rows)["open_tickets"].tolist()


def _dataset(settings: Settings) -> Path:
    return settings.data.dir / "customer_activity.parquet"


def test_a_late_event_never_overwrites_a_newer_one(applied: Settings) -> None:
    features = store.Features(applied)
    features.push(_events(1_000_001, (10, T)))
    features.push(_events(1_000_001, (5, T - timedelta(seconds=30))))  # arrives late
    assert _online(features, [1_000_001]) == [10]
    assert _offline(features, [1_000_001], T + timedelta(seconds=1)) == [10]
    assert _offline(features, [1_000_001], T - timedelta(seconds=10)) == [5]  # offline keeps the history


def test_the_newest_row_of_a_customer_in_one_push_wins(applied: Settings) -> None:
    features = store.Features(applied)
    later = pd.Timestamp(T + timedelta(hours=1))
    rows = pd.concat([
        _events(1_000_002, (21, T + timedelta(seconds=10))).assign(created_timestamp=later),
        _events(1_000_002, (15, T + timedelta(seconds=5)), (20, T + timedelta(seconds=10))).assign(
            created_timestamp=pd.Timestamp(T)),
        _events(1_000_003, (30, T + timedelta(seconds=10)), (25, T + timedelta(seconds=5))),
    ], ignore_index=True)
    features.push(rows)
    assert _online(features, [1_000_002, 1_000_003]) == [21, 30]  # event time, then created time
    assert _offline(features, [1_000_002, 1_000_003], T + timedelta(minutes=1)) == [21, 30]  # the same row


def test_materialization_never_overwrites_a_newer_push(applied: Settings) -> None:
    features = store.Features(applied)
    features.push(_events(1_000_004, (77, T)), to="online")
    features.push(_events(1_000_004, (5, T - timedelta(hours=1))), to="offline")
    store.materialize(applied)  # loads the older offline row
    assert _online(features, [1_000_004]) == [77]


def test_a_replayed_push_changes_nothing_reads_see(applied: Settings) -> None:
    features = store.Features(applied)
    ids = [1_000_010, 1_000_011, 1_000_012]
    rows = pd.concat([_events(c, (c % 7 + 2, T + timedelta(seconds=9)), (c % 7, T + timedelta(seconds=3)))
                      for c in ids], ignore_index=True)
    times = [T + timedelta(seconds=s) for s in (4, 10)]
    features.push(rows)
    before = (_online(features, ids), [_offline(features, ids, when) for when in times])
    features.push(rows)  # the stream replays a poll after a failure or a kill
    assert (_online(features, ids), [_offline(features, ids, when) for when in times]) == before
    stored = pd.read_parquet(_dataset(applied), filters=[("customer_id", "in", ids)])
    assert len(stored) == 2 * len(rows)  # duplicates at most
    assert len(stored.drop_duplicates(["customer_id", "event_timestamp", "open_tickets"])) == len(rows)


def test_pushes_add_a_part_and_never_rewrite_earlier_ones(applied: Settings) -> None:
    features = store.Features(applied)

    def stats() -> dict[Path, tuple[int, int, int]]:
        return {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in parts(_dataset(applied))}

    before = stats()
    features.push(_events(1_000_020, (3, T)))
    after = stats()
    assert {p: after[p] for p in before} == before
    (new,) = set(after) - set(before)
    assert pq.read_table(new).column("customer_id").to_pylist() == [1_000_020]


KILLED_PUSHER = """
import sys
from datetime import datetime, timedelta

import pandas as pd

from unison.config import Settings
from unison.features.store import Features

features = Features(Settings.model_validate_json(sys.stdin.readline()))
first, customers, snapshots = (int(a) for a in sys.argv[1:4])
start = datetime.fromisoformat(sys.argv[4])
ids = [first + i % customers for i in range(customers * snapshots)]
offsets = pd.to_timedelta([i // customers for i in range(customers * snapshots)], unit="ms")
push = 0
while True:  # push p: every customer's snapshots at start + p minutes + up to 2 s, open_tickets = p
    when = pd.Timestamp(start + timedelta(minutes=push)) + offsets
    features.push(pd.DataFrame({"customer_id": ids, "open_tickets": push, "tickets_last_90d": 1, "last_csat": None,
                                "days_since_last_login": 0, "event_timestamp": when}))
    print(push, flush=True)
    push += 1
"""


def test_a_pusher_killed_mid_write_leaves_the_dataset_readable(applied: Settings, tmp_path: Path) -> None:
    first, customers, snapshots = 1_000_100, 50, 2_000
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    script = tmp_path / "pusher.py"
    script.write_text(KILLED_PUSHER)
    dataset = _dataset(applied)
    pusher = subprocess.Popen([sys.executable, str(script), str(first), str(customers), str(snapshots),
                               start.isoformat()], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert pusher.stdin is not None and pusher.stdout is not None
        pusher.stdin.write(applied.model_dump_json() + "\n")
        pusher.stdin.flush()
        assert pusher.stdout.readline().strip() == "0", "the pusher never completed a push"
        threading.Event().wait(random.uniform(0.05, 0.5))  # somewhere inside a later push
    finally:
        os.kill(pusher.pid, signal.SIGKILL)
        pusher.wait(timeout=30)
    # A kill inside a part's write leaves a hidden temporary file; plant one for certain: half a real part.
    half = parts(dataset)[0].read_bytes()
    (dataset / ".push-killed.parquet.tmp").write_bytes(half[: len(half) // 2])

    for part in parts(dataset):
        pq.read_metadata(part)  # every published part is whole
    ours = pd.read_parquet(dataset, filters=[("customer_id", ">=", first), ("customer_id", "<", first + customers)])
    pushes = sorted(ours["open_tickets"].unique().tolist())
    assert pushes and pushes == list(range(len(pushes)))  # whole pushes only, none lost before the kill
    assert (ours.groupby("open_tickets").size() == customers * snapshots).all()

    store.materialize(applied)  # everything: these events are older than the last materialization's end
    features = store.Features(applied)
    last = pushes[-1]
    ids = [first, first + customers - 1]
    assert _offline(features, ids, start + timedelta(minutes=last, seconds=30)) == [last, last]
    assert _online(features, ids) == [last, last] == _offline(features, ids, datetime.now(UTC))
    assert [f.view for f in features.freshness()] == list(store.VIEWS)


def test_concurrent_pushers_keep_every_row_and_the_newest_online(applied: Settings) -> None:
    ids = list(range(1_000_200, 1_000_220))
    pushers = [store.Features(applied), store.Features(applied)]
    errors: list[BaseException] = []

    def run(k: int) -> None:  # pusher 0 sends its events in order, pusher 1 newest first
        try:
            for i in (range(10) if k == 0 else reversed(range(10))):
                value = 2 * i + k
                pushers[k].push(pd.concat([_events(c, (value, T + timedelta(seconds=value))) for c in ids]))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    stored = pd.read_parquet(_dataset(applied), filters=[("customer_id", "in", ids)])
    assert sorted(zip(stored.customer_id, stored.open_tickets, strict=True)) == sorted(
        (c, v) for c in ids for v in range(20))
    features = store.Features(applied)
    assert _online(features, ids) == [19] * len(ids)
    assert _offline(features, ids, T + timedelta(minutes=1)) == [19] * len(ids)


def test_event_order_within_one_second(applied: Settings) -> None:
    """Redis keeps event times to the nanosecond, Feast's SQLite table to the whole second (its datetime adapter):
    within one second, across pushes, SQLite keeps the later write and Redis the later event."""
    features = store.Features(applied)
    features.push(_events(1_000_030, (8, T + timedelta(milliseconds=500))))
    features.push(_events(1_000_030, (2, T + timedelta(milliseconds=200))))
    expected = 8 if applied.features.profile == "redis" else 2
    assert _online(features, [1_000_030]) == [expected]
    assert _offline(features, [1_000_030], T + timedelta(seconds=1)) == [8]


# ---------------------------------------------------------------------------------------------- compaction


def _with_features(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"features": settings.features.model_copy(update=changes)})


def _stored(settings: Settings, ids: list[int]) -> pd.DataFrame:
    return pd.read_parquet(_dataset(settings), filters=[("customer_id", "in", ids)])


def _distinct(frame: pd.DataFrame) -> list[tuple]:
    rows = frame[sorted(frame.columns)].itertuples(index=False, name=None)
    return sorted({tuple(None if pd.isna(v) else v for v in row) for row in rows}, key=repr)  # NaN: None, equal


def _offline_history(features: store.Features, ids: list[int], pushes: int) -> pd.DataFrame:
    """`pushes` offline-only pushes: push p sets each customer's open_tickets to p + (customer mod 3) at T + p
    minutes; every third is replayed (a new created time), every fifth twice with the same created time (exact
    copies); then a late event that never becomes current."""
    for push in range(pushes):
        rows = pd.concat([_events(c, (push + c % 3, T + timedelta(minutes=push))) for c in ids], ignore_index=True)
        features.push(rows, to="offline")
        if push % 3 == 0:
            features.push(rows, to="offline")
        if push % 5 == 0:
            exact = rows.assign(created_timestamp=pd.Timestamp(T + timedelta(minutes=push)))
            features.push(exact, to="offline")
            features.push(exact, to="offline")
    features.push(_events(ids[0], (99, T - timedelta(hours=1))), to="offline")
    return pd.DataFrame({"customer_id": ids, "last": [pushes - 1 + c % 3 for c in ids]})


def _reads(features: store.Features, ids: list[int], pushes: int) -> list[list[int | None]]:
    """Point-in-time values before the history (the late event only), at its start, middle and end."""
    times = [T - timedelta(minutes=30), *(T + timedelta(minutes=m, seconds=30) for m in (0, pushes // 2, pushes))]
    return [[None if pd.isna(v) else int(v) for v in _offline(features, ids, when)] for when in times]


def test_compaction_changes_nothing_retrieval_and_materialization_read(applied: Settings) -> None:
    features = store.Features(applied)
    ids, pushes = list(range(1_000_300, 1_000_310)), 20
    expected = _offline_history(features, ids, pushes)
    before, stored = _reads(features, ids, pushes), _stored(applied, ids)
    assert dataset.pending_parts(_dataset(applied)) >= pushes

    done = compact(applied)
    assert not done.skipped and len(done.merged) >= pushes and done.rows_out < done.rows_in
    assert dataset.pending_parts(_dataset(applied)) == 0 and len(parts(_dataset(applied))) <= 3
    assert _reads(features, ids, pushes) == before
    after = _stored(applied, ids)
    assert _distinct(after) == _distinct(stored) and len(after) < len(stored)  # exact copies merged, nothing else
    store.materialize(applied)  # these customers were never online: what it loads is what it read
    assert _online(features, ids) == expected["last"].tolist() == before[-1]


COMPACTOR = """
import sys

from unison.config import Settings
from unison.data import dataset
from unison.features.push import compact

settings = Settings.model_validate_json(sys.stdin.readline())
point = sys.argv[1]


def hold(reached):
    if reached == point:
        print(point, flush=True)
        sys.stdin.readline()  # until the test resumes this process, or kills it


dataset._checkpoint = hold
done = compact(settings)
print("done", len(done.merged), flush=True)
"""


def _compactor(settings: Settings, tmp_path: Path, point: str) -> subprocess.Popen[str]:
    """A process compacting the activity dataset, held after the step `point` of `unison.data.dataset.compact`."""
    script = tmp_path / "compactor.py"
    script.write_text(COMPACTOR)
    child = subprocess.Popen([sys.executable, str(script), point], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(settings.model_dump_json() + "\n")
    child.stdin.flush()
    reached = child.stdout.readline().strip()
    if reached != point:
        child.kill()
        child.wait(timeout=60)
        raise AssertionError(f"the compactor never reached {point!r} (said {reached!r})")
    return child


def test_a_compaction_killed_between_publish_and_retire_changes_nothing_reads_see(applied: Settings,
                                                                                   tmp_path: Path) -> None:
    features = store.Features(applied)
    ids, pushes = list(range(1_000_400, 1_000_410)), 8
    expected = _offline_history(features, ids, pushes)
    before, stored = _reads(features, ids, pushes), _stored(applied, ids)
    child = _compactor(applied, tmp_path, "published")
    try:
        during = _stored(applied, ids)
        assert len(during) > len(stored) and _distinct(during) == _distinct(stored)  # exact copies, readable twice
        assert _reads(features, ids, pushes) == before  # Feast's join: copies equal to the created time read alike
        store.materialize(applied)  # so does materialization's newest row per customer
        assert _online(features, ids) == expected["last"].tolist()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    assert _reads(features, ids, pushes) == before and (_dataset(applied) / dataset.JOURNAL_FILE).exists()

    done = compact(applied)  # retires what the killed one merged, then merges what is left
    assert done.recovered and dataset.pending_parts(_dataset(applied)) == 0
    assert not (_dataset(applied) / dataset.JOURNAL_FILE).exists()
    after = _stored(applied, ids)
    assert _distinct(after) == _distinct(stored) and len(after) == len(after.drop_duplicates())  # each row once
    assert _reads(features, ids, pushes) == before


def test_a_push_during_a_compaction_keeps_its_rows(applied: Settings, tmp_path: Path) -> None:
    features = store.Features(applied)
    ids = list(range(1_000_500, 1_000_505))
    for push in range(3):
        features.push(pd.concat([_events(c, (push, T + timedelta(minutes=push))) for c in ids]))
    child = _compactor(applied, tmp_path, "written")  # it has listed and merged its inputs
    try:
        late = pd.concat([_events(c, (50, T + timedelta(minutes=10))) for c in ids])
        features.push(late)  # never waits for the compaction
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("\n")  # resume
        child.stdin.flush()
        assert child.stdout.readline().split()[0] == "done"
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=60)
    assert dataset.pending_parts(_dataset(applied)) == 1  # the push's part, untouched
    assert sorted(_stored(applied, ids)["open_tickets"].unique()) == [0, 1, 2, 50]
    assert _offline(features, ids, T + timedelta(minutes=11)) == [50] * len(ids) == _online(features, ids)


def test_pushes_start_a_compaction_past_the_threshold(applied: Settings) -> None:
    compact(applied)  # what earlier tests pushed (a single pushed part is left as it is)
    pending = dataset.pending_parts(_dataset(applied))
    features = store.Features(_with_features(applied, compact_after_parts=pending + 3))
    ids = list(range(1_000_600, 1_000_605))
    for push in range(4):
        features.push(pd.concat([_events(c, (push, T + timedelta(minutes=push))) for c in ids]), to="offline")
        assert features.wait_for_compaction(timeout=300)
        expected = pending + push + 1 if push < 3 else 0  # the 4th push leaves one part more than the threshold
        assert dataset.pending_parts(_dataset(applied)) == expected
    assert sorted(_stored(applied, ids)["open_tickets"].unique()) == list(range(4))
    assert _offline(features, ids, T + timedelta(minutes=5)) == [3] * len(ids)


def test_a_read_whose_listed_part_a_compaction_retired_is_tried_again(applied: Settings,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Feast's file offline store lists the dataset's parts when it builds a query (`dd.read_parquet`) and opens
    them when the query runs: a compaction in between makes the open fail; `Features.historical` reads again."""
    from feast.infra.offline_stores import dask as feast_dask

    features = store.Features(applied)
    ids = list(range(1_000_700, 1_000_705))
    for push in range(3):
        features.push(pd.concat([_events(c, (push, T + timedelta(minutes=push))) for c in ids]), to="offline")
    read, reads = feast_dask._read_datasource, []

    def listing_then_compaction(data_source, repo_path):  # type: ignore[no-untyped-def]
        frame = read(data_source, repo_path)
        if Path(data_source.path) == _dataset(applied).resolve():
            reads.append(data_source.path)
            if len(reads) == 1:
                assert list(frame.columns)  # the parts are listed now
                assert compact(applied).merged  # and the ones listed retired
        return frame

    monkeypatch.setattr(feast_dask, "_read_datasource", listing_then_compaction)
    assert _offline(features, ids, T + timedelta(minutes=5)) == [2] * len(ids)
    assert len(reads) == 2  # the first attempt met a retired part
