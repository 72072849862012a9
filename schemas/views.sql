-- jobsync analyst views: the common questions about the `jobs` table, answered once.
-- The single source of truth for the views: jobsync runs every statement of this file on each
-- read-write open of the warehouse, after the tables exist, so each is CREATE OR REPLACE.
-- Days are UTC days whatever the TimeZone setting of the reader. Durations are seconds and
-- rates are percentages (0 to 100), both DOUBLE.

-- One row per job, with the metrics of the API reference: `success_rate` is numSuccess out
-- of success + error + ignore records, 100.0 when the job has no records (a missing count
-- counts as 0), and `duration_seconds` is endedAt - startedAt, NULL until the job has both.
CREATE OR REPLACE VIEW job_metrics AS
SELECT
    id,
    type,
    status,
    integration_id,
    flow_id,
    export_id,
    import_id,
    flow_job_id,
    flow_execution_group_id,
    created_at,
    started_at,
    ended_at,
    num_success,
    num_error,
    num_ignore,
    num_export,
    coalesce(num_success, 0) + coalesce(num_error, 0) + coalesce(num_ignore, 0) AS num_records,
    CASE
        WHEN num_records = 0 THEN 100.0::DOUBLE
        ELSE 100.0::DOUBLE * coalesce(num_success, 0) / num_records
    END AS success_rate,
    (epoch_ms(ended_at) - epoch_ms(started_at)) / 1000.0::DOUBLE AS duration_seconds
FROM jobs;

-- Per flow and UTC day of createdAt, its flow runs (jobs of type `flow`): how many, how many
-- failed or were canceled, the records they succeeded, errored and ignored, `error_rate`
-- (errored out of all records, 0 when there were none), and the median and 95th percentile
-- of the durations of the finished runs.
CREATE OR REPLACE VIEW flow_daily AS
SELECT
    flow_id,
    integration_id,
    CAST(timezone('UTC', created_at) AS DATE) AS day,
    count(*) AS runs,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'canceled') AS canceled,
    CAST(sum(coalesce(num_success, 0)) AS BIGINT) AS records_succeeded,
    CAST(sum(coalesce(num_error, 0)) AS BIGINT) AS records_errored,
    CAST(sum(coalesce(num_ignore, 0)) AS BIGINT) AS records_ignored,
    CASE
        WHEN sum(num_records) = 0 THEN 0.0::DOUBLE
        ELSE 100.0::DOUBLE * sum(coalesce(num_error, 0)) / sum(num_records)
    END AS error_rate,
    median(duration_seconds) AS median_duration_seconds,
    quantile_cont(duration_seconds, 0.95) AS p95_duration_seconds
FROM job_metrics
WHERE type = 'flow'
GROUP BY flow_id, integration_id, day;

-- One row per flow job (a flow run) with its child export and import jobs summed up:
-- how many of each, how many failed or are unfinished, and their record totals.
CREATE OR REPLACE VIEW flow_job_trees AS
SELECT
    f.id AS flow_job_id,
    f.flow_id,
    f.integration_id,
    f.status,
    f.created_at,
    f.started_at,
    f.ended_at,
    f.duration_seconds,
    f.num_success,
    f.num_error,
    f.num_ignore,
    count(c.id) AS child_jobs,
    count(c.id) FILTER (WHERE c.type = 'export') AS export_jobs,
    count(c.id) FILTER (WHERE c.type = 'import') AS import_jobs,
    count(c.id) FILTER (WHERE c.status = 'failed') AS failed_child_jobs,
    count(c.id) FILTER (WHERE c.status IN ('queued', 'running')) AS unfinished_child_jobs,
    CAST(coalesce(sum(c.num_success), 0) AS BIGINT) AS child_success,
    CAST(coalesce(sum(c.num_error), 0) AS BIGINT) AS child_error,
    CAST(coalesce(sum(c.num_ignore), 0) AS BIGINT) AS child_ignore,
    CAST(coalesce(sum(c.num_export), 0) AS BIGINT) AS child_export,
    max(c.ended_at) AS last_child_ended_at
FROM job_metrics AS f
LEFT JOIN jobs AS c ON c.flow_job_id = f.id
WHERE f.type = 'flow'
GROUP BY ALL;
