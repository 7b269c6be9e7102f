-- pgsched 0005: claiming many runs at once without one lock for everything.
--
-- How a job's runs are claimed, from its spec, kept beside it so that the claim can tell in
-- SQL which runs need a decision and which just start (mirrors `policy::claim_class`, and a
-- test compares the two):
--   'free'       concurrencyPolicy Allow, no maxInstances, not exclusive, no startingDeadline:
--                a due run starts, whatever else runs; claimed in batches under a shared lock.
--   'policy'     Forbid, Replace, maxInstances or startingDeadline: decided against the job's
--                running runs.
--   'exclusive'  waits for everything else and holds everything else: decided under the claim
--                lock taken exclusively.
ALTER TABLE pgsched.jobs ADD COLUMN claim_class text GENERATED ALWAYS AS (CASE
        WHEN coalesce((spec->>'exclusive')::boolean, false) THEN 'exclusive'
        WHEN coalesce(spec->>'concurrencyPolicy', 'Forbid') <> 'Allow'
             OR spec ? 'maxInstances' OR spec ? 'startingDeadline' THEN 'policy'
        ELSE 'free'
    END) STORED;

-- Claims take the due runs in (due_at, id) order: with the id in the index a backlog of runs
-- due at the same moment is read in order, not sorted whole on every claim.
DROP INDEX pgsched.runs_due;
CREATE INDEX runs_due ON pgsched.runs (due_at, id) WHERE status = 'pending';
-- A tick is a run once: only scheduled runs are unique per (job, tick), so that on-demand runs
-- (no tick) cost no entry in this index.
ALTER TABLE pgsched.runs DROP CONSTRAINT runs_job_scheduled_at_key;
CREATE UNIQUE INDEX runs_tick ON pgsched.runs (job, scheduled_at) WHERE scheduled_at IS NOT NULL;
-- Whether a policy or exclusive job has a due run, job by job, without reading a backlog of
-- other jobs' runs.
CREATE INDEX runs_pending_by_job ON pgsched.runs (job, due_at) WHERE status = 'pending';

-- How a SQL task's writes were committed: 'with-run' in the transaction that recorded its run
-- succeeded (so they happen exactly once), 'separate' on their own, before the run was recorded
-- (at least once: SQL that cannot run in a transaction block, that commits itself, or that runs
-- on another Connection). NULL for other tasks, and for attempts that wrote nothing.
ALTER TABLE pgsched.runs ADD COLUMN effects text CHECK (effects IN ('with-run', 'separate'));
