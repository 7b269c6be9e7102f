-- pgsched 0001: objects from spec files, runs, workers.
--
-- The spec jsonb is the one truth of each object; the key fields a person wants to read in
-- psql (schedule, time zone, table...) are generated from it, so they can never disagree with
-- it and a hand edit can only ever touch what the reconciler compares.

-- Durations as specs write them ('1h30m', '500ms') → interval. Immutable so generated
-- columns can use it.
CREATE FUNCTION pgsched.duration(text) RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(sum(
        (m[1])::numeric * CASE m[2]
            WHEN 'ms' THEN interval '1 millisecond'
            WHEN 's' THEN interval '1 second'
            WHEN 'm' THEN interval '1 minute'
            WHEN 'h' THEN interval '1 hour'
            WHEN 'd' THEN interval '1 day'
        END), interval '0')
    FROM regexp_matches($1, '([0-9]+)(ms|s|m|h|d)', 'g') AS m
$$;

-- RFC 3339 times always carry an offset, so the result does not depend on the session's
-- TimeZone: safe to declare immutable for a generated column.
CREATE FUNCTION pgsched.rfc3339(text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$ SELECT $1::timestamptz $$;

-- Jobs and chains share one table (and one namespace: pgsched.trigger takes a bare name).
CREATE TABLE pgsched.jobs (
    name          text PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('Job', 'Chain')),
    spec          jsonb NOT NULL,
    labels        jsonb NOT NULL DEFAULT '{}',
    source_file   text,
    spec_hash     text,
    generation    bigint NOT NULL DEFAULT 1,
    -- false for a row someone inserted by hand: reconciles never change or delete it.
    managed       boolean NOT NULL DEFAULT false,
    schedule      text GENERATED ALWAYS AS (spec->>'schedule') STORED,
    run_at        timestamptz GENERATED ALWAYS AS (pgsched.rfc3339(spec->>'runAt')) STORED,
    time_zone     text GENERATED ALWAYS AS (coalesce(spec->>'timeZone', 'UTC')) STORED,
    suspended     boolean GENERATED ALWAYS AS (coalesce((spec->>'suspend')::boolean, false)) STORED,
    task          text GENERATED ALWAYS AS (CASE
                      WHEN kind = 'Chain' THEN 'chain'
                      WHEN spec ? 'sql' THEN 'sql'
                      WHEN spec ? 'command' THEN 'command'
                      WHEN spec ? 'shell' THEN 'shell'
                      WHEN spec ? 'builtin' THEN 'builtin:' || (spec->'builtin'->>'name')
                  END) STORED,
    database      text GENERATED ALWAYS AS (spec->>'database') STORED,
    -- Executor state, never compared by the reconciler.
    next_run_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pgsched.chain_steps (
    chain         text NOT NULL REFERENCES pgsched.jobs (name) ON DELETE CASCADE ON UPDATE CASCADE,
    position      int NOT NULL,
    name          text NOT NULL,
    spec          jsonb NOT NULL,
    task          text GENERATED ALWAYS AS (CASE
                      WHEN spec ? 'sql' THEN 'sql'
                      WHEN spec ? 'command' THEN 'command'
                      WHEN spec ? 'shell' THEN 'shell'
                      WHEN spec ? 'builtin' THEN 'builtin:' || (spec->'builtin'->>'name')
                  END) STORED,
    ignore_error  boolean GENERATED ALWAYS AS (coalesce((spec->>'ignoreError')::boolean, false)) STORED,
    PRIMARY KEY (chain, position),
    UNIQUE (chain, name)
);

CREATE TABLE pgsched.timeouts (
    name          text PRIMARY KEY,
    spec          jsonb NOT NULL,
    labels        jsonb NOT NULL DEFAULT '{}',
    source_file   text,
    spec_hash     text,
    generation    bigint NOT NULL DEFAULT 1,
    managed       boolean NOT NULL DEFAULT false,
    target_table  text GENERATED ALWAYS AS (spec->>'table') STORED,
    target_column text GENERATED ALWAYS AS (spec->>'column') STORED,
    after         interval GENERATED ALWAYS AS (pgsched.duration(spec->>'after')) STORED,
    condition     text GENERATED ALWAYS AS (spec->>'where') STORED,
    action        text GENERATED ALWAYS AS (CASE WHEN coalesce((spec->>'delete')::boolean, false)
                      THEN 'delete' ELSE 'update' END) STORED,
    batch_size    int GENERATED ALWAYS AS (coalesce((spec->>'batchSize')::int, 1000)) STORED,
    suspended     boolean GENERATED ALWAYS AS (coalesce((spec->>'suspend')::boolean, false)) STORED,
    next_deadline timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Never a secret: only the names of where the password is found.
CREATE TABLE pgsched.connections (
    name          text PRIMARY KEY,
    spec          jsonb NOT NULL,
    labels        jsonb NOT NULL DEFAULT '{}',
    source_file   text,
    spec_hash     text,
    generation    bigint NOT NULL DEFAULT 1,
    managed       boolean NOT NULL DEFAULT false,
    url           text GENERATED ALWAYS AS (spec->>'url') STORED,
    password_from_env  text GENERATED ALWAYS AS (spec->>'passwordFromEnv') STORED,
    password_from_file text GENERATED ALWAYS AS (spec->>'passwordFromFile') STORED,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per instance of a job or chain (and per Timeout firing that changed rows). No
-- foreign key to jobs: history outlives a pruned job until its retention ends.
CREATE TABLE pgsched.runs (
    id            bigserial PRIMARY KEY,
    job           text NOT NULL,
    kind          text NOT NULL DEFAULT 'Job' CHECK (kind IN ('Job', 'Chain', 'Timeout')),
    -- The schedule tick this run is for; NULL for on-demand runs. Unique per job, so any
    -- number of replicas and restarts create each tick once.
    scheduled_at  timestamptz,
    due_at        timestamptz NOT NULL DEFAULT now(),
    trigger       text NOT NULL DEFAULT 'schedule'
                  CHECK (trigger IN ('schedule', 'catchup', 'manual', 'timeout')),
    params        jsonb NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped',
                                    'missed', 'cancelled', 'lost')),
    attempt       int NOT NULL DEFAULT 1,
    worker        text,
    started_at    timestamptz,
    heartbeat_at  timestamptz,
    finished_at   timestamptz,
    duration_ms   bigint GENERATED ALWAYS AS
                  ((extract(epoch FROM finished_at - started_at) * 1000)::bigint) STORED,
    error         text,
    output        text,
    rows_affected bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job, scheduled_at)
);
-- Claiming: the due pending runs, oldest first.
CREATE INDEX runs_due ON pgsched.runs (due_at) WHERE status = 'pending';
-- History and status: a job's latest runs.
CREATE INDEX runs_by_job ON pgsched.runs (job, id DESC);
-- Recovery: running runs whose worker stopped beating.
CREATE INDEX runs_running ON pgsched.runs (heartbeat_at) WHERE status = 'running';

CREATE TABLE pgsched.run_steps (
    run_id        bigint NOT NULL REFERENCES pgsched.runs (id) ON DELETE CASCADE,
    position      int NOT NULL,
    name          text NOT NULL,
    status        text NOT NULL,
    attempt       int NOT NULL DEFAULT 1,
    started_at    timestamptz,
    finished_at   timestamptz,
    error         text,
    output        text,
    rows_affected bigint,
    PRIMARY KEY (run_id, position)
);

-- The live pgsched processes (like pg_timetable's active_session).
CREATE TABLE pgsched.workers (
    id            text PRIMARY KEY,
    hostname      text NOT NULL,
    pid           int NOT NULL,
    version       text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    leader        boolean NOT NULL DEFAULT false
);

-- Enqueue an on-demand run from SQL, inside the caller's transaction. The NOTIFY is
-- delivered at commit, so a rolled-back trigger never wakes anyone and never runs.
CREATE FUNCTION pgsched.trigger(job_name text, params jsonb DEFAULT '{}', at timestamptz DEFAULT now())
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    run_id bigint;
    job_kind text;
BEGIN
    SELECT kind INTO job_kind FROM pgsched.jobs WHERE name = job_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgsched: no job or chain named %', job_name
            USING ERRCODE = 'no_data_found',
                  HINT = 'SELECT name FROM pgsched.jobs lists the jobs and chains';
    END IF;
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'pgsched: params must be a JSON object, got %', coalesce(jsonb_typeof(params), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgsched.runs (job, kind, due_at, trigger, params)
    VALUES (job_name, job_kind, coalesce(at, now()), 'manual', params)
    RETURNING id INTO run_id;
    PERFORM pg_notify('pgsched_runs', run_id::text);
    RETURN run_id;
END
$$;
