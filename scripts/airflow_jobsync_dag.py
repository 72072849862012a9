"""Airflow DAG: jobsync's nightly sync into the warehouse and the Parquet archive, then a health
check that fails the DAG run when the API may purge jobs the archive has not got.

Copy this file into the DAGs folder. The workers need `jobsync` on their PATH and, in their
environment, JOBSYNC_API_TOKEN (or JOBSYNC_TOKEN_FILE) and the S3 settings (AWS_REGION, the
credentials or an instance role, and AWS_ENDPOINT_URL for MinIO or another S3-compatible store).
Both tasks must run where the DuckDB file is: one worker, or a queue pinned to it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow import DAG

try:  # Airflow 3: BashOperator lives in the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

DB = "/var/lib/jobsync/jobs.duckdb"
ARCHIVE = "s3://example-jobs-archive/prod"

with DAG(
    dag_id="jobsync_nightly",
    description="Archive integrator.io jobs into DuckDB and Parquet, then check their health",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=15)},
    tags=["jobsync"],
) as dag:
    sync = BashOperator(
        task_id="sync",
        # Exit 75: --max-duration stopped the sync cleanly and the next run continues; not a
        # failure. Any other non-zero exit fails the task (and is retried).
        bash_command=(
            f'jobsync sync -q --db {DB} --max-duration 5h --parquet {ARCHIVE} || [ "$?" -eq 75 ]'
        ),
        execution_timeout=timedelta(hours=6),
    )
    check = BashOperator(
        task_id="status_check",
        bash_command=f"jobsync status --db {DB} --check",
        trigger_rule="all_done",  # judge the archive's health even when the sync failed
        retries=0,
    )
    sync >> check
