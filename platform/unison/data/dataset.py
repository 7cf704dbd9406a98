"""Append-only Parquet datasets: a directory of immutable part files, each published by an atomic rename.

A reader (pyarrow, pandas, Dask, Ray Data, Feast's file offline store) lists the directory and sees whole parts
only: a part is written under a hidden temporary name (`.<name>.<pid>.tmp`: a leading dot, which pyarrow skips, and no
`.parquet` suffix, which Dask and Ray Data skip), fsynced, then renamed into place. A writer killed mid-part leaves
at most such a temporary file; two writers never touch each other's parts, and an append costs the size of the
append, not of the dataset.

Compaction (`compact`) keeps the number of parts small: it merges the pushed parts (and small compacted ones) into
one new part, published the same way, then retires the merged originals by renaming them to hidden names no reader
lists (`.<name>.<ms>.retired`) and deletes those after a grace period. One compaction at a time per dataset (a
non-blocking `flock`: a second one skips); writers never wait for it; a journal makes a compaction killed anywhere
finish (or vanish) at the next one. Readers can see the merged rows twice between the publish and the retire: exact
copies, which point-in-time joins and "newest row" reads resolve the same way. A reader that listed the directory
before a retire and opens the part after it finds no file under the listed name, whatever the grace period: it
must read again (`unison.features.store` does).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

BASE_PART = "generated.parquet"  # the generated data: the first part of a dataset `unison data generate` writes
PUSH_PREFIX = "push-"  # parts `write_part` adds
COMPACTED_PREFIX = "compact-"  # parts `compact` writes
RETIRED_SUFFIX = ".retired"  # merged parts, renamed `.<name>.<unix ms>.retired`: hidden from every reader
LOCK_FILE = ".compact.lock"  # flock: one compaction at a time per dataset
JOURNAL_FILE = ".compact.journal"  # the compaction in progress: its output and inputs
STALE_TEMPORARY_S = 3600.0  # a writer's temporary file untouched this long belongs to a killed writer


def parts(path: Path) -> list[Path]:
    """The published parts of a dataset, in name order (temporary files excluded)."""
    return sorted(p for p in path.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_")))


def write_part(directory: Path, table: pa.Table, name: str | None = None) -> Path:
    """Add `table` to the dataset as a new part; return its path. Earlier parts are never opened."""
    name = name or _part_name(PUSH_PREFIX)
    target = directory / name
    write_file(target, table.schema, [table])
    _fsync_dir(directory)
    return target


def write_dataset(path: Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    """Replace whatever is at `path` (a dataset or a single file) with a dataset of one part, `BASE_PART`.

    The new directory is built beside `path` and swapped in by two renames, so a reader sees the old data, the
    new data, or (for the instant between the renames) nothing: never a mix or a partial part."""
    staged = path.with_name(f".{path.name}.{os.getpid()}.new")
    old = path.with_name(f".{path.name}.{os.getpid()}.old")
    for leftover in (staged, old):
        _remove(leftover)
    staged.mkdir(parents=True)
    try:
        write_file(staged / BASE_PART, schema, tables)
        _fsync_dir(staged)
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(staged, path)
        except BaseException:
            if old.exists() and not path.exists():
                os.replace(old, path)  # put the old data back
            raise
        _fsync_dir(path.parent)
    finally:
        _remove(staged)
    _remove(old)


def as_dataset(path: Path) -> None:
    """Turn a single Parquet file at `path` (the layout before datasets) into a dataset with it as its one part;
    a dataset is left alone. For `unison features apply`, not for concurrent use."""
    if not path.is_file():
        return
    staged = path.with_name(f".{path.name}.{os.getpid()}.new")
    _remove(staged)
    staged.mkdir()
    os.replace(path, staged / BASE_PART)
    os.replace(staged, path)
    _fsync_dir(path.parent)


# ---------------------------------------------------------------------------------------------- compaction


@dataclass(frozen=True)
class Compaction:
    """What one `compact` call did. `skipped`: another process held the lock, so nothing was done."""

    parts_before: list[str]
    parts_after: list[str]
    merged: list[str] = field(default_factory=list)  # the parts merged (now retired)
    output: str | None = None  # the part they were merged into
    rows_in: int = 0
    rows_out: int = 0  # rows_in minus exact duplicates
    recovered: list[str] = field(default_factory=list)  # inputs of an interrupted compaction retired now
    deleted: int = 0  # retired parts past the grace period (and stale temporary files) removed
    skipped: bool = False


def pending_parts(path: Path) -> int:
    """How many pushed parts the dataset holds that no compaction has merged yet (one directory listing)."""
    with os.scandir(path) as entries:
        return sum(1 for e in entries if e.name.startswith(PUSH_PREFIX) and e.name.endswith(".parquet"))


def compact(path: Path, *, grace_s: float, max_part_bytes: int, full: bool = False) -> Compaction:
    """Merge the dataset's pushed parts, and compacted parts that are not larger than what is merged with them, into
    one new part; retire the merged parts; delete parts retired more than `grace_s` ago. Returns at once, skipped,
    when another process is compacting the dataset.

    Which parts: every `push-*` part, then `compact-*` parts smallest first while each is no larger than the total
    taken so far (so a row is rewritten about log2(rows pushed) times, not once per compaction) and smaller than
    `max_part_bytes` (bigger ones are final: this bounds a compaction's memory); `full` takes every compacted part
    under `max_part_bytes`. Other parts (the generated `generated.parquet`) are never merged. Exact duplicate rows
    among the merged parts are written once.

    Steps, each safe to be killed after: write the merged part under its temporary name (fsync); record output and
    inputs in the journal; publish the part (rename, fsync the directory); rename each input to its retired name;
    remove the journal. The next compaction first finishes a journal whose output was published (retires the
    inputs still listed) or drops it and the temporary file, so every row stays readable at least once and a
    duplicate left by a kill is gone after the next compaction. Pushes during a compaction add parts it did not list,
    which it never touches.
    """
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a dataset directory")
    lock = _try_lock(path)
    if lock is None:
        live = [p.name for p in parts(path)]
        return Compaction(live, live, skipped=True)
    try:
        before = [p.name for p in parts(path)]
        recovered = _recover(path)
        inputs = _mergeable(parts(path), max_part_bytes, full)
        output, rows_in, rows_out = None, 0, 0
        if len(inputs) > 1:
            output, rows_in, rows_out = _merge(path, inputs)
        deleted = _sweep(path, grace_s)
        return Compaction(before, [p.name for p in parts(path)], [p.name for p in inputs] if output else [],
                          output, rows_in, rows_out, recovered, deleted)
    finally:
        lock.close()  # releases the flock (so does the kernel, when a compacting process dies)


def _checkpoint(point: str) -> None:
    """Called after each step of a compaction: "written", "journaled", "published", "retired" (the first input).
    Tests replace it to hold a compacting process at a step and kill it there."""


def _try_lock(path: Path) -> IO[bytes] | None:
    handle = (path / LOCK_FILE).open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _mergeable(live: Sequence[Path], max_part_bytes: int, full: bool) -> list[Path]:
    chosen = [p for p in live if p.name.startswith(PUSH_PREFIX)]
    total = sum(p.stat().st_size for p in chosen)
    compacted = sorted((p.stat().st_size, p.name, p) for p in live if p.name.startswith(COMPACTED_PREFIX))
    for size, _, part in compacted:
        if size >= max_part_bytes or not (full or size <= total):
            break
        chosen.append(part)
        total += size
    return chosen


def _merge(path: Path, inputs: Sequence[Path]) -> tuple[str, int, int]:
    tables = [pq.read_table(p) for p in inputs]
    schema = tables[0].schema.remove_metadata()
    merged = pa.concat_tables([t.replace_schema_metadata(None).cast(schema) for t in tables])
    # Distinct rows (nulls equal), in a stable order: sorted by every column, the first (the entity) leading.
    distinct = merged.group_by(schema.names, use_threads=False).aggregate([]).select(schema.names).cast(schema)
    distinct = distinct.sort_by([(name, "ascending") for name in schema.names])
    name = _part_name(COMPACTED_PREFIX)
    tmp = _write_temporary(path / name, schema, [distinct])
    _checkpoint("written")
    _write_journal(path, {"output": name, "inputs": [p.name for p in inputs]})
    _checkpoint("journaled")
    os.replace(tmp, path / name)
    _fsync_dir(path)
    _checkpoint("published")
    _retire(path, [p.name for p in inputs])
    (path / JOURNAL_FILE).unlink()
    _fsync_dir(path)
    return name, merged.num_rows, distinct.num_rows


def _write_journal(path: Path, record: dict[str, object]) -> None:
    journal = path / JOURNAL_FILE
    tmp = _temporary(journal)
    with tmp.open("w") as handle:
        json.dump(record, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, journal)
    _fsync_dir(path)


def _retire(path: Path, names: Sequence[str]) -> list[str]:
    """Rename the live parts among `names` to retired names (dot first, no `.parquet` suffix: no reader lists them)."""
    retired = []
    for name in names:
        try:
            os.replace(path / name, path / f".{name}.{time.time_ns() // 1_000_000}{RETIRED_SUFFIX}")
        except FileNotFoundError:  # retired already, before a kill
            continue
        retired.append(name)
        if len(retired) == 1:
            _checkpoint("retired")
    _fsync_dir(path)
    return retired


def _recover(path: Path) -> list[str]:
    """Finish or drop what a killed compaction left (called under the lock, so nothing else is compacting)."""
    for leftover in path.glob(".compact*.tmp"):  # an unpublished merged part, a half-written journal
        leftover.unlink(missing_ok=True)
    journal = path / JOURNAL_FILE
    if not journal.exists():
        return []
    record = json.loads(journal.read_text())
    recovered = _retire(path, record["inputs"]) if (path / record["output"]).exists() else []
    journal.unlink()
    _fsync_dir(path)
    return recovered


def _sweep(path: Path, grace_s: float) -> int:
    """Delete parts retired `grace_s` ago or earlier, and writers' temporary files untouched for an hour."""
    now, deleted = time.time(), 0
    with os.scandir(path) as entries:
        for entry in entries:
            name = entry.name
            if not name.startswith("."):
                continue
            if name.endswith(RETIRED_SUFFIX):
                try:
                    retired_at = int(name[: -len(RETIRED_SUFFIX)].rsplit(".", 1)[1]) / 1000
                except (IndexError, ValueError):
                    retired_at = entry.stat().st_mtime
                expired = now - retired_at >= grace_s
            else:
                expired = name.endswith(".tmp") and now - entry.stat().st_mtime >= STALE_TEMPORARY_S
            if expired:
                Path(entry.path).unlink(missing_ok=True)
                deleted += 1
    return deleted


def _part_name(prefix: str) -> str:
    return f"{prefix}{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:12]}.parquet"


def _temporary(target: Path) -> Path:
    """Hidden from readers (leading dot, no `.parquet` suffix) and per process (two writers of one name)."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def write_file(target: Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> None:
    """One Parquet file written atomically: readers see the old file or the complete, fsynced new one."""
    tmp = _write_temporary(target, schema, tables)
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_temporary(target: Path, schema: pa.Schema, tables: Iterable[pa.Table]) -> Path:
    """`target`'s content, whole and fsynced, under its hidden temporary name (returned); nothing on failure."""
    tmp = _temporary(target)
    try:
        with tmp.open("wb") as handle:
            with pq.ParquetWriter(handle, schema, compression="snappy") as writer:
                wrote = False
                for table in tables:
                    writer.write_table(table)
                    wrote = True
                if not wrote:
                    writer.write_table(schema.empty_table())
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(directory: Path) -> None:
    """Make the renames in `directory` durable (a crash after return cannot bring back the old entries)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
