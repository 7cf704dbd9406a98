"""Append-only Parquet datasets: whole parts only, temporary files invisible to every reader, atomic replacement;
compaction: fewer parts, the same rows, hidden retired parts, one compaction at a time, safe to kill anywhere."""

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask.dataframe as dd
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from unison.data import dataset
from unison.data.dataset import BASE_PART, as_dataset, parts, write_dataset, write_part

SCHEMA = pa.schema([("customer_id", pa.int64()), ("value", pa.int32())])


def _table(*ids: int) -> pa.Table:
    return pa.table({"customer_id": list(ids), "value": [i * 10 for i in ids]}, schema=SCHEMA)


def _ids(path: Path) -> list[int]:
    return sorted(pq.read_table(path).column("customer_id").to_pylist())


def test_parts_accumulate_and_readers_see_them_all(tmp_path: Path) -> None:
    path = tmp_path / "activity.parquet"
    write_dataset(path, SCHEMA, [_table(1, 2)])
    first = write_part(path, _table(3))
    second = write_part(path, _table(4, 5))
    assert parts(path) == sorted([path / BASE_PART, first, second])
    assert _ids(path) == [1, 2, 3, 4, 5]
    assert sorted(pd.read_parquet(path)["customer_id"]) == sorted(dd.read_parquet(str(path)).compute()["customer_id"])
    assert not [p for p in path.iterdir() if p.name.startswith(".")]


def test_a_leftover_temporary_file_is_invisible_to_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "activity.parquet"
    write_dataset(path, SCHEMA, [_table(1, 2)])
    whole = (path / BASE_PART).read_bytes()
    (path / ".push-killed.parquet.tmp").write_bytes(whole[: len(whole) // 2])  # a writer killed mid-part
    assert parts(path) == [path / BASE_PART]
    assert _ids(path) == [1, 2]
    assert sorted(dd.read_parquet(str(path)).compute()["customer_id"]) == [1, 2]


def test_a_failed_write_publishes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "activity.parquet"
    write_dataset(path, SCHEMA, [_table(1)])

    def broken(self, table, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_part(path, _table(2))
    monkeypatch.undo()
    assert sorted(p.name for p in path.iterdir()) == [BASE_PART]


def test_write_dataset_replaces_a_dataset_or_a_file(tmp_path: Path) -> None:
    path = tmp_path / "activity.parquet"
    pq.write_table(_table(9), path)
    write_dataset(path, SCHEMA, [_table(1)])
    write_part(path, _table(2))
    write_dataset(path, SCHEMA, iter([_table(3), _table(4)]))  # pushed parts of the old data go with it
    assert [p.name for p in parts(path)] == [BASE_PART] and _ids(path) == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["activity.parquet"]


def test_a_failed_swap_keeps_the_old_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "activity.parquet"
    write_dataset(path, SCHEMA, [_table(1)])
    real = dataset.os.replace

    def failing(src, dst):
        if Path(src).name.endswith(".new"):
            raise OSError("rename failed")
        real(src, dst)

    monkeypatch.setattr(dataset.os, "replace", failing)
    with pytest.raises(OSError, match="rename failed"):
        write_dataset(path, SCHEMA, [_table(2)])
    monkeypatch.undo()
    assert _ids(path) == [1] and sorted(p.name for p in tmp_path.iterdir()) == ["activity.parquet"]


def test_as_dataset_turns_a_single_file_into_its_first_part(tmp_path: Path) -> None:
    path = tmp_path / "activity.parquet"
    pq.write_table(_table(1, 2), path)
    as_dataset(path)
    assert path.is_dir() and parts(path) == [path / BASE_PART] and _ids(path) == [1, 2]
    as_dataset(path)  # a dataset is left alone
    assert parts(path) == [path / BASE_PART]


# ---------------------------------------------------------------------------------------------- compaction

ACTIVITY = pa.schema([("customer_id", pa.int64()), ("value", pa.int32()), ("score", pa.float64()),
                      ("event_timestamp", pa.timestamp("us", tz="UTC")),
                      ("created_timestamp", pa.timestamp("us", tz="UTC"))])
T0 = pd.Timestamp("2026-05-01", tz="UTC")
HOUR = 3600.0
BIG = 1 << 30  # max_part_bytes no test part reaches


def _rows(*rows: tuple[int, int, float | None, int, int]) -> pa.Table:
    """(customer, value, score, event second, created second) each."""
    return pa.table({"customer_id": [r[0] for r in rows], "value": [r[1] for r in rows],
                     "score": [r[2] for r in rows],
                     "event_timestamp": [T0 + pd.Timedelta(seconds=r[3]) for r in rows],
                     "created_timestamp": [T0 + pd.Timedelta(seconds=r[4]) for r in rows]}, schema=ACTIVITY)


def _multiset(table: pa.Table | pd.DataFrame) -> list[tuple]:
    frame = table.to_pandas() if isinstance(table, pa.Table) else table
    frame = frame[ACTIVITY.names].astype({"score": "float64"})
    return sorted(tuple(None if pd.isna(v) else v for v in row) for row in frame.itertuples(index=False))


def _pushed(tmp_path: Path, pushes: int = 6) -> tuple[Path, list[tuple]]:
    """A dataset: a generated part and `pushes` pushed parts (replays among them: exact duplicates across parts,
    a null score, a row that differs from another only in created time); returns it and its distinct rows."""
    path = tmp_path / "activity.parquet"
    write_dataset(path, ACTIVITY, [_rows((1, 1, 4.0, 0, 0), (2, 2, None, 0, 0))])
    for push in range(pushes):
        write_part(path, _rows((10 + push, push, None, push, push), (20, push, 2.5, push, push),
                               (30, 7, 1.0, 5, 5)))  # customer 30's row replayed by every push
    write_part(path, _rows((30, 7, 1.0, 5, 99)))  # the same event replayed with a later created time
    return path, sorted(set(_multiset(pq.read_table(path))))


def _entries(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_compaction_merges_the_pushed_parts_into_one_and_keeps_every_distinct_row(tmp_path: Path) -> None:
    path, distinct = _pushed(tmp_path)
    base = (path / BASE_PART).stat()
    assert dataset.pending_parts(path) == 7
    done = dataset.compact(path, grace_s=HOUR, max_part_bytes=BIG)
    assert not done.skipped and len(done.merged) == 7 and done.output is not None
    assert [p.name for p in parts(path)] == [done.output, BASE_PART] == done.parts_after
    assert (path / BASE_PART).stat().st_ino == base.st_ino  # the generated part is left alone
    assert done.rows_in == 7 * 3 - 2 and done.rows_out == 6 + 6 + 2  # customer 30: once per created time
    assert dataset.pending_parts(path) == 0
    for frame in (pq.read_table(path).to_pandas(), pd.read_parquet(path), dd.read_parquet(str(path)).compute()):
        assert _multiset(frame) == distinct  # exact duplicates once, nothing else dropped
    merged = pq.read_table(path / done.output)
    assert merged.schema == ACTIVITY and merged.column("customer_id").to_pylist() == sorted(
        merged.column("customer_id").to_pylist())


def test_retired_parts_are_hidden_from_every_reader_and_deleted_after_the_grace_period(tmp_path: Path) -> None:
    path, distinct = _pushed(tmp_path)
    done = dataset.compact(path, grace_s=HOUR, max_part_bytes=BIG)
    retired = [p for p in path.iterdir() if p.name.endswith(dataset.RETIRED_SUFFIX)]
    assert sorted(p.name.split(".")[1] for p in retired) == sorted(Path(n).stem for n in done.merged)
    assert all(p.name.startswith(".") and p.suffix != ".parquet" for p in retired)
    assert all(pq.read_metadata(p).num_rows for p in retired)  # whole parts
    for frame in (pq.read_table(path).to_pandas(), pd.read_parquet(path), dd.read_parquet(str(path)).compute()):
        assert _multiset(frame) == distinct  # whole Parquet files, yet no reader lists them
    opened = pq.ParquetFile(retired[0])  # a reader holding a retired part open...

    kept = dataset.compact(path, grace_s=HOUR, max_part_bytes=BIG)  # nothing to merge; retired parts are young
    assert kept.output is None and kept.deleted == 0 and all(p.exists() for p in retired)
    gone = dataset.compact(path, grace_s=0, max_part_bytes=BIG)
    assert gone.deleted == len(retired) and _entries(path) == sorted([dataset.LOCK_FILE, done.output, BASE_PART])
    assert opened.read().num_rows == opened.metadata.num_rows  # ...still reads it once deleted (POSIX)


def test_a_reader_that_listed_the_parts_before_a_retire_fails_to_open_and_succeeds_again(tmp_path: Path) -> None:
    """The window a grace period cannot close: Dask lists the parts when the query is built and opens them by
    name when it runs; a part renamed in between is gone under that name. Reading again lists the new part."""
    path, distinct = _pushed(tmp_path)
    query = dd.read_parquet(str(path))
    assert list(query.columns) == ACTIVITY.names  # listed now
    dataset.compact(path, grace_s=HOUR, max_part_bytes=BIG)
    with pytest.raises(FileNotFoundError, match=str(path)):
        query.compute()
    assert _multiset(dd.read_parquet(str(path)).compute()) == distinct


def test_one_compaction_at_a_time_and_the_others_skip(tmp_path: Path) -> None:
    path, _ = _pushed(tmp_path)
    with (path / dataset.LOCK_FILE).open("ab") as other:  # another process compacting (flock: per open file)
        before = _entries(path)
        fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = dataset.compact(path, grace_s=0, max_part_bytes=BIG)
        assert done.skipped and done.output is None and done.parts_before == done.parts_after
        assert _entries(path) == before
    assert dataset.compact(path, grace_s=0, max_part_bytes=BIG).output is not None  # released


def test_what_a_compaction_merges(tmp_path: Path) -> None:
    path = tmp_path / "activity.parquet"
    write_dataset(path, ACTIVITY, [_rows((1, 1, None, 0, 0))])
    write_part(path, _rows((3, 3, None, 0, 0)), name="backfill.parquet")  # not ours: never merged

    def compacted(rows: int) -> str:
        return write_part(path, _rows(*[(c, 0, None, c, 0) for c in range(rows)]),
                          name=dataset._part_name(dataset.COMPACTED_PREFIX)).name

    small, large, final = compacted(5), compacted(5_000), compacted(50_000)
    sizes = {n: (path / n).stat().st_size for n in (small, large, final)}
    pushed = [write_part(path, _rows((100 + i, i, None, i, i))).name for i in range(3)]
    assert sum((path / n).stat().st_size for n in pushed) >= sizes[small]  # the small one is worth merging
    done = dataset.compact(path, grace_s=0, max_part_bytes=sizes[final])
    assert sorted(done.merged) == sorted([*pushed, small])  # the large one waits until as much is pushed
    assert sorted(done.parts_after) == sorted([BASE_PART, "backfill.parquet", large, final, done.output])

    full = dataset.compact(path, grace_s=0, max_part_bytes=sizes[final], full=True)
    assert sorted(full.merged) == sorted([done.output, large])  # every compacted part under the limit
    assert final in full.parts_after  # as large as the limit: final
    assert dataset.compact(path, grace_s=0, max_part_bytes=sizes[final], full=True).output is None  # one left
    assert dataset.compact(path, grace_s=0, max_part_bytes=BIG).output is None  # nothing pushed: nothing to do


def test_a_killed_writers_temporary_files_are_swept_once_stale(tmp_path: Path) -> None:
    path, _ = _pushed(tmp_path, pushes=1)
    stale, fresh = path / ".push-killed.parquet.tmp", path / ".push-writing.parquet.tmp"
    for file in (stale, fresh):
        file.write_bytes(b"PAR1 half a part")
    old = time.time() - dataset.STALE_TEMPORARY_S - 1
    os.utime(stale, (old, old))
    dataset.compact(path, grace_s=0, max_part_bytes=BIG)
    assert not stale.exists() and fresh.exists()  # a push may be writing that one


COMPACTOR = """
import sys
from pathlib import Path

import pyarrow.parquet as pq

from unison.data import dataset

path, point = Path(sys.argv[1]), sys.argv[2]


def hold(reached):
    if reached == point:
        print(point, flush=True)
        sys.stdin.readline()  # until the test resumes this process, or kills it


dataset._checkpoint = hold
if point == "writing":  # inside the merged part's write: some rows out, no footer
    write = pq.ParquetWriter.write_table

    def write_and_hold(self, table, *args, **kwargs):
        write(self, table.slice(0, len(table) // 2), *args, **kwargs)
        hold("writing")
        write(self, table.slice(len(table) // 2), *args, **kwargs)

    pq.ParquetWriter.write_table = write_and_hold
done = dataset.compact(path, grace_s=0, max_part_bytes=1 << 30)
print("done", len(done.merged), flush=True)
"""


def _compactor(tmp_path: Path, path: Path, point: str) -> subprocess.Popen[str]:
    """A process compacting `path`, held at `point` (a step of `compact`, or "writing": inside the part's write)."""
    script = tmp_path / "compactor.py"
    script.write_text(COMPACTOR)
    child = subprocess.Popen([sys.executable, str(script), str(path), point], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    reached = child.stdout.readline().strip()
    if reached != point:
        child.kill()
        child.wait(timeout=60)
        pytest.fail(f"the compactor never reached {point!r} (said {reached!r})")
    return child


@pytest.mark.parametrize("point", ["writing", "written", "journaled", "published", "retired"])
def test_a_compaction_killed_anywhere_loses_no_row_and_the_next_one_cleans_up(tmp_path: Path, point: str) -> None:
    path, distinct = _pushed(tmp_path)
    child = _compactor(tmp_path, path, point)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)

    for part in parts(path):
        pq.read_metadata(part)  # every listed part is whole
    for frame in (pq.read_table(path).to_pandas(), pd.read_parquet(path), dd.read_parquet(str(path)).compute()):
        seen = _multiset(frame)
        assert sorted(set(seen)) == distinct  # every row at least once
        if point in ("published", "retired"):
            assert len(seen) > len(distinct)  # the merged part and (some of) its inputs: exact duplicates
    assert (path / dataset.JOURNAL_FILE).exists() == (point in ("journaled", "published", "retired"))

    done = dataset.compact(path, grace_s=0, max_part_bytes=BIG)  # finishes or drops the killed one, then merges
    assert bool(done.recovered) == (point in ("published", "retired"))
    assert _multiset(pq.read_table(path)) == distinct  # each row once
    assert _multiset(dd.read_parquet(str(path)).compute()) == distinct
    assert len(parts(path)) == 2 and dataset.pending_parts(path) == 0
    assert [n for n in _entries(path) if n.startswith(".")] == [dataset.LOCK_FILE]  # no journal, temporary, retired


def test_a_push_during_a_compaction_is_left_alone(tmp_path: Path) -> None:
    path, distinct = _pushed(tmp_path)
    child = _compactor(tmp_path, path, "written")  # it has listed and merged its inputs
    assert child.stdin is not None and child.stdout is not None
    late = write_part(path, _rows((99, 9, None, 9, 9)))
    child.stdin.write("\n")  # resume
    child.stdin.flush()
    assert child.stdout.readline().split() == ["done", "7"]
    assert child.wait(timeout=60) == 0
    assert late in parts(path) and dataset.pending_parts(path) == 1
    assert _multiset(pq.read_table(path)) == sorted([*distinct, *_multiset(_rows((99, 9, None, 9, 9)))])
