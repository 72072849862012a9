"""The Parquet archive on real files: a real sync into DuckDB, archived to a local folder and to
a local S3-compatible server (moto), read back with DuckDB and pyarrow."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from conftest import sync_into
from moto.server import ThreadedMotoServer

from jobsync.archive import FILE_NAME, MANIFEST_NAME, archive_warehouse
from jobsync.dialect import DIALECT_NAMES
from jobsync.errors import JobsyncError
from jobsync.records import normalise_page
from jobsync.simulator import Account, AccountConfig, ServerOptions, SimulatorServer
from jobsync.store import Warehouse
from jobsync.timestamps import format_iso_ms, now_ms, parse_iso_ms

TOKEN = "test-token"
# Listed at the start: jobs from mid-October to 10 November, so two months.
ACCOUNT = {
    "flows": 4,
    "days": 35,
    "start_ms": parse_iso_ms("2026-11-10T00:00:00.000Z"),
    "long_running_share": 0.0,
}
MONTHS = ("2026-10", "2026-11")


def sync(sim: SimulatorServer, db: Path) -> None:
    summary = sync_into(sim, db)
    assert summary.outcome == "succeeded", summary.errors


@pytest.fixture(scope="module", params=DIALECT_NAMES)
def synced(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A warehouse synced from the simulator, once per dialect."""
    db = tmp_path_factory.mktemp("synced") / "jobs.duckdb"
    options = ServerOptions(TOKEN, dialect=request.param)
    with SimulatorServer(Account(AccountConfig(**ACCOUNT)), options) as sim:
        sync(sim, db)
    return db


@pytest.fixture
def db(synced: Path, tmp_path: Path) -> Path:
    """A copy of the synced warehouse that the test may change."""
    copy = tmp_path / "jobs.duckdb"
    shutil.copy(synced, copy)
    return copy


def archive(db: Path, dest: str, **options: int):
    with Warehouse.open(db, read_only=True) as warehouse:
        return archive_warehouse(warehouse, dest, **options)


def table(db: Path) -> pa.Table:
    """The jobs table as the archive must hold it: every column, `raw` as a string."""
    with duckdb.connect(str(db), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(
            "SELECT * REPLACE (raw::VARCHAR AS raw) FROM jobs ORDER BY id"
        ).to_arrow_table()


def table_types(db: Path) -> list[tuple[str, str]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("DESCRIBE SELECT * REPLACE (raw::VARCHAR AS raw) FROM jobs").fetchall()
    return [(name, kind) for name, kind, *_ in rows]


def read_with_duckdb(dest: Path) -> tuple[pa.Table, list[tuple[str, str]], int]:
    """The dataset as DuckDB reads it: rows (without the partition column), column types
    (with it), and how many rows sit in a folder that is not their month."""
    source = f"read_parquet('{dest}/jobs/*/*.parquet', hive_partitioning = true)"
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.sql(
            f"SELECT * EXCLUDE (created_month) FROM {source} ORDER BY id"
        ).to_arrow_table()
        types = [
            (name, kind)
            for name, kind, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        ]
        misplaced = con.execute(
            f"SELECT count(*) FROM {source} "
            "WHERE created_month <> strftime(timezone('UTC', created_at), '%Y-%m')"
        ).fetchone()[0]
    return rows, types, misplaced


def read_with_pyarrow(path: str, filesystem: pafs.FileSystem | None = None) -> pa.Table:
    dataset = ds.dataset(path, filesystem=filesystem, format="parquet", partitioning="hive")
    return dataset.to_table().drop_columns(["created_month"]).sort_by("id")


def month_files(dest: Path) -> dict[str, tuple[int, int]]:
    """month -> (inode, mtime): a file moved into place gets a new inode."""
    files = {}
    for path in (dest / "jobs").glob(f"created_month=*/{FILE_NAME}"):
        stat = path.stat()
        files[path.parent.name.split("=")[1]] = (stat.st_ino, stat.st_mtime_ns)
    return files


def change_a_job(db: Path, month: str) -> str:
    """Upsert a newer version of one job created in `month`, as a sync would; returns its id."""
    with Warehouse.open(db) as warehouse:
        job_id, raw = warehouse.connection.execute(
            "SELECT id, raw FROM jobs WHERE strftime(created_at, '%Y-%m') = ? ORDER BY id LIMIT 1",
            [month],
        ).fetchone()
        record = orjson.loads(raw)
        record["numError"] = (record.get("numError") or 0) + 5
        record["lastModified"] = format_iso_ms(parse_iso_ms(record["lastModified"]) + 1000)
        page = normalise_page([record])
        counts = warehouse.commit_batch(page.rows, [], {}, "run-edit", now_ms() + 1000)
    assert counts.updated == 1
    return job_id


def test_the_archive_holds_exactly_the_jobs_table(db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "archive"
    summary = archive(db, str(dest), batch_rows=1000)
    expected = table(db)
    assert summary.months_written == MONTHS
    assert summary.rows_written == expected.num_rows
    rows, types, misplaced = read_with_duckdb(dest)
    assert rows.equals(expected)
    assert types == [*table_types(db), ("created_month", "VARCHAR")]
    assert misplaced == 0
    assert read_with_pyarrow(str(dest / "jobs")).equals(expected)


def test_one_zstd_file_per_month_written_in_row_groups(db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "archive"
    archive(db, str(dest), batch_rows=1000)
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert files == [
        f"jobs/{MANIFEST_NAME}",
        *(f"jobs/created_month={month}/{FILE_NAME}" for month in MONTHS),
    ]
    metadata = pq.ParquetFile(dest / f"jobs/created_month={MONTHS[0]}/{FILE_NAME}").metadata
    assert metadata.num_row_groups > 1, "the month was streamed in batches"
    column = metadata.row_group(0).column(0)
    assert column.compression == "ZSTD"


def test_a_second_archive_with_nothing_changed_rewrites_nothing(db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "archive"
    archive(db, str(dest))
    before = month_files(dest)
    manifest = (dest / "jobs" / MANIFEST_NAME).stat().st_ino
    again = archive(db, str(dest))
    assert (again.months_written, again.months_unchanged, again.rows_written) == ((), 2, 0)
    assert month_files(dest) == before
    assert (dest / "jobs" / MANIFEST_NAME).stat().st_ino == manifest


def test_a_changed_row_rewrites_only_its_month(db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "archive"
    archive(db, str(dest))
    before = month_files(dest)
    job_id = change_a_job(db, "2026-10")
    summary = archive(db, str(dest))
    assert summary.months_written == ("2026-10",)
    assert summary.months_unchanged == 1
    after = month_files(dest)
    assert after["2026-11"] == before["2026-11"]
    assert after["2026-10"] != before["2026-10"]
    rows, _, _ = read_with_duckdb(dest)
    assert rows.equals(table(db))
    changed = rows.filter(pc.equal(rows["id"], job_id))
    assert changed["num_error"][0].as_py() == orjson.loads(changed["raw"][0].as_py())["numError"]


def test_a_nightly_sync_rewrites_only_the_months_it_touched(dialect: str, tmp_path: Path) -> None:
    db, dest = tmp_path / "jobs.duckdb", tmp_path / "archive"
    options = ServerOptions(TOKEN, dialect=dialect)
    with SimulatorServer(Account(AccountConfig(**ACCOUNT)), options) as sim:
        sync(sim, db)
        archive(db, str(dest))
        before = month_files(dest)
        sim.clock.advance(86_400_000)
        sync(sim, db)
    summary = archive(db, str(dest))
    assert summary.months_written == ("2026-11",)
    assert month_files(dest)["2026-10"] == before["2026-10"]
    rows, _, _ = read_with_duckdb(dest)
    assert rows.equals(table(db))


def test_a_failed_write_leaves_the_old_month_intact(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "archive"
    archive(db, str(dest), batch_rows=1000)
    old_file = dest / f"jobs/created_month=2026-10/{FILE_NAME}"
    old_bytes, manifest = old_file.read_bytes(), (dest / "jobs" / MANIFEST_NAME).read_bytes()
    change_a_job(db, "2026-10")

    class DiskFull(pq.ParquetWriter):
        def write_batch(self, *args: object, **kwargs: object) -> None:
            super().write_batch(*args, **kwargs)
            raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(pq, "ParquetWriter", DiskFull)
        with pytest.raises(JobsyncError, match="No space left"):
            archive(db, str(dest), batch_rows=1000)
    assert old_file.read_bytes() == old_bytes
    assert (dest / "jobs" / MANIFEST_NAME).read_bytes() == manifest
    assert not [p for p in dest.rglob(".*") if p.is_file()], "no temporary file is left"
    assert archive(db, str(dest)).months_written == ("2026-10",)
    assert read_with_duckdb(dest)[0].equals(table(db))


def test_leftovers_of_a_killed_write_are_invisible_and_cleaned(db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "archive"
    archive(db, str(dest))
    leftover = dest / "jobs/created_month=2026-10/.data.parquet.0123abcd.tmp"
    leftover.write_bytes(b"PAR1 half a file")
    rows, _, _ = read_with_duckdb(dest)
    assert rows.num_rows == table(db).num_rows
    assert read_with_pyarrow(str(dest / "jobs")).num_rows == rows.num_rows
    assert archive(db, str(dest)).months_written == ()
    assert not leftover.exists()


def test_months_the_warehouse_lacks_are_kept_and_none_shrinks(tmp_path: Path) -> None:
    """A rebuilt warehouse (the API keeps 30 days) must not wipe the archive's history."""
    old_db, new_db, dest = tmp_path / "old.duckdb", tmp_path / "new.duckdb", tmp_path / "archive"

    def job(job_id: str, created: str) -> dict:
        return {"_id": job_id, "type": "flow", "status": "completed", "_flowId": "f1",
                "createdAt": created, "lastModified": created}  # fmt: skip

    with Warehouse.open(old_db) as warehouse:
        page = normalise_page(
            [
                job("a", "2026-08-31T23:59:59.999Z"),
                job("b", "2026-09-01T00:00:00.000Z"),
                job("c", "2026-09-02T00:00:00.000Z"),
            ]
        )
        warehouse.commit_batch(page.rows, [], {}, "run-1", now_ms())
    assert archive(old_db, str(dest)).months_written == ("2026-08", "2026-09")
    with Warehouse.open(new_db) as warehouse:
        page = normalise_page([job("c", "2026-09-02T00:00:00.000Z")])
        warehouse.commit_batch(page.rows, [], {}, "run-2", now_ms())
    before = month_files(dest)
    with pytest.raises(JobsyncError, match=r"fewer rows: 2026-09 \(2 archived, 1 in"):
        archive(new_db, str(dest))
    assert month_files(dest) == before
    with Warehouse.open(new_db) as warehouse:
        page = normalise_page(
            [job("b", "2026-09-01T00:00:00.000Z"), job("d", "2026-09-03T00:00:00.000Z")]
        )
        warehouse.commit_batch(page.rows, [], {}, "run-3", now_ms())
    summary = archive(new_db, str(dest))
    assert (summary.months_written, summary.months_kept) == (("2026-09",), ("2026-08",))
    ids = sorted(read_with_pyarrow(str(dest / "jobs")).column("id").to_pylist())
    assert ids == ["a", "b", "c", "d"], "August's job stays archived"


def test_each_destination_keeps_its_own_state(db: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    archive(db, str(first))
    change_a_job(db, "2026-11")
    assert archive(db, str(first)).months_written == ("2026-11",)
    assert archive(db, str(second)).months_written == MONTHS
    assert read_with_duckdb(second)[0].equals(read_with_duckdb(first)[0])


def test_an_unwritable_destination_is_a_clear_error(db: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(JobsyncError, match="cannot write the archive"):
        archive(db, str(blocker / "archive"))


# -- S3: a local moto server in server mode, reached the way users reach MinIO -----------------


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh versioned bucket; the standard AWS variables point at the local server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    name = f"archive-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3")
    client.create_bucket(Bucket=name)
    client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def s3_filesystem(endpoint: str) -> pafs.S3FileSystem:
    host = endpoint.removeprefix("http://")
    return pafs.S3FileSystem(
        access_key="test-key",
        secret_key="test-secret",
        region="us-east-1",
        endpoint_override=host,
        scheme="http",
    )


def current_keys(bucket: str) -> list[str]:
    import boto3

    listing = boto3.client("s3").list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


def versions(bucket: str) -> dict[str, list[str]]:
    """key -> its version ids: every write of a key, even of equal bytes, adds one."""
    import boto3

    listing = boto3.client("s3").list_object_versions(Bucket=bucket)
    found: dict[str, list[str]] = {}
    for version in listing.get("Versions", []):
        found.setdefault(version["Key"], []).append(version["VersionId"])
    return found


def test_an_s3_archive_reads_back_and_rewrites_only_changed_months(
    db: Path, bucket: str, s3_endpoint: str
) -> None:
    dest = f"s3://{bucket}/warehouse/prod"
    summary = archive(db, dest, batch_rows=1000)
    assert summary.months_written == MONTHS
    got = read_with_pyarrow(f"{bucket}/warehouse/prod/jobs", s3_filesystem(s3_endpoint))
    assert got.equals(table(db))
    month_key = {m: f"warehouse/prod/jobs/created_month={m}/{FILE_NAME}" for m in MONTHS}
    assert not [key for key in current_keys(bucket) if key.endswith(".tmp")]
    before = versions(bucket)
    assert archive(db, dest).months_written == ()
    assert versions(bucket) == before, "nothing was written"
    change_a_job(db, "2026-10")
    assert archive(db, dest).months_written == ("2026-10",)
    after = versions(bucket)
    assert after[month_key["2026-11"]] == before[month_key["2026-11"]]
    assert len(after[month_key["2026-10"]]) == len(before[month_key["2026-10"]]) + 1
    got = read_with_pyarrow(f"{bucket}/warehouse/prod/jobs", s3_filesystem(s3_endpoint))
    assert got.equals(table(db))


def test_s3_options_can_ride_in_the_url(
    db: Path, bucket: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    host = s3_endpoint.removeprefix("http://")
    summary = archive(db, f"s3://{bucket}/x?endpoint_override={host}&scheme=http")
    assert summary.dest == f"s3://{bucket}/x"
    got = read_with_pyarrow(f"{bucket}/x/jobs", s3_filesystem(s3_endpoint))
    assert got.num_rows == table(db).num_rows


def test_a_missing_bucket_is_a_clear_error(db: Path, bucket: str) -> None:
    with pytest.raises(JobsyncError, match="cannot write the archive at s3://no-such-bucket"):
        archive(db, "s3://no-such-bucket/x")
