-- jobsync warehouse, schema version 3.
-- The single source of truth for the tables; jobsync/store.py loads this file.
-- Timestamps are TIMESTAMPTZ (UTC); counts BIGINT; `raw` is the record exactly as the API sent it,
-- as JSON text (v2 had the JSON type: DuckDB's JSON functions and ->> read it alike; zstd keeps
-- it under half the size and writes it faster, scripts/bench.py).

CREATE TABLE IF NOT EXISTS jobsync_meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

-- One row per job the API ever listed; rows stay after the API purges the job.
-- `id` is unique: jobsync's single writer upserts by id. It is not a PRIMARY KEY (v1 had
-- one), whose index DuckDB holds in memory whole: the sync's memory would grow with the file.
CREATE TABLE IF NOT EXISTS jobs (
    id                      VARCHAR NOT NULL,
    type                    VARCHAR,
    status                  VARCHAR,
    integration_id          VARCHAR,
    flow_id                 VARCHAR,
    export_id               VARCHAR,
    import_id               VARCHAR,
    flow_job_id             VARCHAR,   -- parent flow job of an export/import job
    flow_execution_group_id VARCHAR,
    num_success             BIGINT,
    num_error               BIGINT,
    num_ignore              BIGINT,
    num_export              BIGINT,
    num_pages_generated     BIGINT,
    num_pages_processed     BIGINT,
    num_resolved            BIGINT,
    retriable               BOOLEAN,
    done_exporting          BOOLEAN,
    canceled_by             VARCHAR,
    created_at              TIMESTAMPTZ NOT NULL,
    started_at              TIMESTAMPTZ,
    ended_at                TIMESTAMPTZ,
    last_modified           TIMESTAMPTZ,
    purge_at                TIMESTAMPTZ,
    raw                     VARCHAR USING COMPRESSION zstd NOT NULL,
    first_seen_at           TIMESTAMPTZ NOT NULL,  -- when jobsync first stored the job
    last_synced_at          TIMESTAMPTZ NOT NULL   -- when jobsync last changed the row
);

-- Records that could not be normalised, with the reason; the run went on without them.
CREATE TABLE IF NOT EXISTS rejects (
    raw     VARCHAR NOT NULL,
    reason  VARCHAR NOT NULL,
    run_id  VARCHAR NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL
);

-- One row per `jobsync sync` run.
CREATE TABLE IF NOT EXISTS sync_runs (
    run_id          VARCHAR PRIMARY KEY,
    started_at      TIMESTAMPTZ NOT NULL,
    ended_at        TIMESTAMPTZ,
    outcome         VARCHAR NOT NULL,  -- running, succeeded, failed, partial, interrupted
    error           VARCHAR,
    flows           BIGINT NOT NULL DEFAULT 0,
    partitions      BIGINT NOT NULL DEFAULT 0,
    requests        BIGINT NOT NULL DEFAULT 0,
    retries         BIGINT NOT NULL DEFAULT 0,
    throttled       BIGINT NOT NULL DEFAULT 0,
    pages           BIGINT NOT NULL DEFAULT 0,
    jobs_inserted   BIGINT NOT NULL DEFAULT 0,
    jobs_updated    BIGINT NOT NULL DEFAULT 0,
    jobs_unchanged  BIGINT NOT NULL DEFAULT 0,
    jobs_refreshed  BIGINT NOT NULL DEFAULT 0,
    rejects         BIGINT NOT NULL DEFAULT 0
);

-- Per flow: the createdAt up to which a sync has planned partitions. What lies at or
-- below it is covered, except what a pending partition (below) has still to read.
CREATE TABLE IF NOT EXISTS flow_state (
    flow_id         VARCHAR PRIMARY KEY,
    planned_through TIMESTAMPTZ NOT NULL
);

-- The crawl plan: flow batches x time windows still to read, each with its tie-safe cursor
-- (every job created after cursor_lte is stored; of those created at cursor_lte, the ids in
-- cursor_seen are). A partition's row goes in the transaction that stores its last page.
CREATE TABLE IF NOT EXISTS sync_partitions (
    key         VARCHAR PRIMARY KEY,
    run_id      VARCHAR NOT NULL,
    flow_ids    VARCHAR[] NOT NULL,
    window_gte  TIMESTAMPTZ,
    window_lte  TIMESTAMPTZ NOT NULL,
    cursor_lte  TIMESTAMPTZ NOT NULL,
    cursor_seen VARCHAR[] NOT NULL
);
