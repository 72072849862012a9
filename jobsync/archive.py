"""The Parquet archive: the `jobs` table as a Hive-partitioned dataset that any engine reads,
on a local folder or an object store, rewritten only where rows changed.

Layout under DEST: `jobs/created_month=YYYY-MM/data.parquet` (zstd; the table's columns and
types, `raw` as a string) and `jobs/_jobsync_manifest.json`, which records what each month's
file was written from. Readers skip names that start with `_` or `.`, so neither the manifest
nor a file being written shows up in the dataset.

A month is written under a hidden temporary name beside its file and then moved into place:
a rename on a local disk (after fsync), a server-side copy on an object store (where an object
appears whole when its write completes). A reader sees the old month or the new one, never
half of one or both, and a crash leaves the old month as it was.

Object stores go through pyarrow's filesystem layer (`s3://`, `gs://`, `abfs://`, ...), which
finds endpoint and credentials the standard way: for S3, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_REGION` and, for MinIO and other S3-compatible stores,
`AWS_ENDPOINT_URL`; or options in the URL (`?endpoint_override=host:9000&scheme=http`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from jobsync.errors import ConfigError, JobsyncError
from jobsync.store import Warehouse

log = logging.getLogger("jobsync.archive")

TABLE = "jobs"
PARTITION = "created_month"
FILE_NAME = "data.parquet"
MANIFEST_NAME = "_jobsync_manifest.json"
MANIFEST_FORMAT = 1
BATCH_ROWS = 100_000  # rows per Arrow batch and Parquet row group: memory stays flat

_COLUMNS = """
SELECT column_name, data_type FROM information_schema.columns
WHERE table_schema = 'main' AND table_name = 'jobs' ORDER BY ordinal_position
"""
# A month changes when its set of (id, last_synced_at) does: every upsert moves last_synced_at.
_MONTHS = """
SELECT strftime(timezone('UTC', created_at), '%Y-%m') AS month,
       count(*),
       max(last_synced_at),
       bit_xor(hash(id, last_synced_at))
FROM jobs GROUP BY month ORDER BY month
"""
_MONTH_ROWS = """
SELECT * REPLACE (raw::VARCHAR AS raw) FROM jobs
WHERE created_at >= $start AND created_at < $end
ORDER BY created_at, id
"""


@dataclass(frozen=True)
class MonthSource:
    """What a month's file was written from; any difference means the month is rewritten."""

    rows: int
    last_synced_at: str
    fingerprint: str


@dataclass(frozen=True)
class Manifest:
    """The archive's own state, kept with the archive so that one warehouse can feed several."""

    columns: tuple[str, ...]
    months: dict[str, MonthSource]

    def to_json(self) -> bytes:
        document = {
            "format": MANIFEST_FORMAT,
            "table": TABLE,
            "columns": list(self.columns),
            "months": {month: asdict(source) for month, source in sorted(self.months.items())},
        }
        return json.dumps(document, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        document = json.loads(data)
        if document.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {document.get('format')!r}")
        months = {month: MonthSource(**source) for month, source in document["months"].items()}
        return cls(tuple(document["columns"]), months)


@dataclass(frozen=True)
class ArchiveSummary:
    """What one archive run did, for the summary line and `--json`."""

    dest: str
    months_written: tuple[str, ...]
    months_unchanged: int
    months_kept: tuple[str, ...]  # in the archive but not in the warehouse: left as they are
    rows_written: int
    seconds: float

    def line(self) -> str:
        return (
            f"archive {self.dest}: months written {len(self.months_written)} "
            f"({self.rows_written:,} rows), unchanged {self.months_unchanged}, "
            f"kept {len(self.months_kept)}; {self.seconds:.1f} s"
        )

    def as_dict(self) -> dict[str, Any]:
        document = asdict(self)
        document["seconds"] = round(self.seconds, 3)
        return document


@dataclass(frozen=True)
class ArchiveLocation:
    """A filesystem and the folder on it that holds the archive's `jobs/` dataset."""

    filesystem: pafs.FileSystem
    root: str
    shown: str  # the destination as given, without a URL query (it may hold options or keys)

    @property
    def local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        return "/".join((self.root.rstrip("/"), *parts))

    def month_folder(self, month: str) -> str:
        return self.path(TABLE, f"{PARTITION}={month}")


def open_location(dest: str) -> ArchiveLocation:
    """The archive at `dest`: a local folder, or a URL that pyarrow knows (`s3://bucket/prefix`)."""
    if not dest.strip():
        raise ConfigError("the archive destination is empty")
    shown = dest.split("?", 1)[0]
    if "://" not in dest:
        return ArchiveLocation(
            pafs.LocalFileSystem(), str(Path(dest).expanduser().absolute()), shown
        )
    try:
        filesystem, root = pafs.FileSystem.from_uri(dest)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ConfigError(f"cannot use archive destination {shown}: {exc}") from None
    return ArchiveLocation(filesystem, root, shown)


def archive_warehouse(
    warehouse: Warehouse, dest: str, *, batch_rows: int = BATCH_ROWS
) -> ArchiveSummary:
    """Bring the Parquet archive at `dest` up to date with the warehouse's `jobs` table,
    rewriting only the months whose rows changed since that archive was last written."""
    started = time.monotonic()
    location = open_location(dest)
    try:
        written, unchanged, kept, rows = _archive(warehouse, location, batch_rows)
    except duckdb.Error as exc:
        raise JobsyncError(f"cannot read the warehouse to archive it: {exc}") from None
    except (pa.ArrowException, OSError) as exc:
        raise JobsyncError(f"cannot write the archive at {location.shown}: {exc}") from None
    seconds = time.monotonic() - started
    return ArchiveSummary(location.shown, written, unchanged, kept, rows, seconds)


def _archive(
    warehouse: Warehouse, location: ArchiveLocation, batch_rows: int
) -> tuple[tuple[str, ...], int, tuple[str, ...], int]:
    connection = warehouse.connection
    columns = tuple(f"{name} {kind}" for name, kind in connection.execute(_COLUMNS).fetchall())
    current = {
        month: MonthSource(int(rows), synced.isoformat(), str(fingerprint))
        for month, rows, synced, fingerprint in connection.execute(_MONTHS).fetchall()
    }
    saved = _read_manifest(location)
    # A manifest written for other columns (an older schema) vouches for no month.
    months = dict(saved.months) if saved.columns == columns else {}
    present = _present_months(location)
    written: list[str] = []
    rows_written = 0
    # The archive outlives the warehouse: a month is never deleted, and never replaced by one
    # with fewer rows (jobs are never deleted from `jobs`; fewer rows means another or a
    # rebuilt warehouse, whose copy would drop jobs the API has long purged).
    shrinking = sorted(
        f"{month} ({saved.months[month].rows:,} archived, {source.rows:,} in the warehouse)"
        for month, source in current.items()
        if month in saved.months and source.rows < saved.months[month].rows
    )
    if shrinking:
        raise JobsyncError(
            f"refusing to replace archived months with fewer rows: {', '.join(shrinking)}; "
            "archive this warehouse to a new destination instead"
        )
    for month, source in current.items():
        if months.get(month) == source and month in present:
            continue
        rows_written += _write_month(warehouse, location, month, batch_rows)
        months[month] = source
        _write_manifest(location, Manifest(columns, months))
        written.append(month)
    kept = sorted((present | set(months)) - set(current))
    final = Manifest(columns, months)
    if final != saved:
        _write_manifest(location, final)
    unchanged = len(current) - len(written)
    return tuple(written), unchanged, tuple(kept), rows_written


def _write_month(
    warehouse: Warehouse, location: ArchiveLocation, month: str, batch_rows: int
) -> int:
    """Stream one month from DuckDB into its Parquet file; returns its rows."""
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    end = (start + timedelta(days=32)).replace(day=1)
    relation = warehouse.connection.sql(_MONTH_ROWS, params={"start": start, "end": end})

    def write(stream: pa.NativeFile) -> int:
        rows = 0
        with (
            relation.to_arrow_reader(batch_rows) as reader,
            pq.ParquetWriter(stream, reader.schema, compression="zstd") as writer,
        ):
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
        return rows

    rows = _put_atomically(location, f"{location.month_folder(month)}/{FILE_NAME}", write)
    log.info("archived %s: %d rows", month, rows)
    return rows


def _put_atomically(
    location: ArchiveLocation, path: str, write: Callable[[pa.NativeFile], int]
) -> int:
    """Write `path` under a hidden temporary name beside it, then move it into place."""
    filesystem = location.filesystem
    folder, name = path.rsplit("/", 1)
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    if location.local:
        filesystem.create_dir(folder, recursive=True)
    try:
        # On an object store, closing after an error still completes the upload: of the
        # temporary name only, which is then deleted.
        with filesystem.open_output_stream(temporary) as stream:
            result = write(stream)
        if location.local:
            _flush_to_disk(temporary)
        filesystem.move(temporary, path)
    except BaseException:
        with contextlib.suppress(pa.ArrowException, OSError):
            filesystem.delete_file(temporary)
        raise
    if location.local:
        _flush_to_disk(folder)
    return result


def _flush_to_disk(path: str) -> None:
    """fsync a file or a folder, so a rename never outlives the data it points at."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _read_manifest(location: ArchiveLocation) -> Manifest:
    """The manifest, or an empty one (every month gets written) when there is none or it is
    unreadable."""
    path = location.path(TABLE, MANIFEST_NAME)
    try:
        with location.filesystem.open_input_stream(path) as stream:
            data = stream.read()
    except FileNotFoundError:
        return Manifest((), {})
    try:
        return Manifest.from_json(data)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning(
            "ignoring unreadable archive manifest %s (%s); rewriting every month", path, exc
        )
        return Manifest((), {})


def _write_manifest(location: ArchiveLocation, manifest: Manifest) -> None:
    data = manifest.to_json()
    _put_atomically(location, location.path(TABLE, MANIFEST_NAME), lambda s: s.write(data))


def _present_months(location: ArchiveLocation) -> set[str]:
    """Months whose file exists; leftovers of interrupted writes are deleted on the way."""
    selector = pafs.FileSelector(location.path(TABLE), recursive=True, allow_not_found=True)
    months: set[str] = set()
    for info in location.filesystem.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        folder, name = info.path.rsplit("/", 1)
        if name.startswith(".") and name.endswith(".tmp"):
            location.filesystem.delete_file(info.path)
        elif name == FILE_NAME and folder.rsplit("/", 1)[-1].startswith(f"{PARTITION}="):
            months.add(folder.rsplit("=", 1)[-1])
    return months
