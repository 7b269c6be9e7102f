-- pgsched 0003: what the executor needs on top of 0001.

-- Where a job's ticking stands: 'new' (no tick computed yet: a new job or a changed schedule),
-- 'scheduled' (next_run_at is the first tick not yet turned into a run), 'after-finish' (an
-- @after job waiting for its run to finish), 'done' (runAt ran, or the schedule never fires
-- again). Executors advance it with compare-and-set, so a tick becomes a run once.
ALTER TABLE pgsched.jobs
    ADD COLUMN tick_state text NOT NULL DEFAULT 'new'
        CHECK (tick_state IN ('new', 'scheduled', 'after-finish', 'done'));
CREATE INDEX jobs_next_run ON pgsched.jobs (next_run_at) WHERE tick_state = 'scheduled';

-- Replace policy and shutdown: asks the worker running a run to cancel it.
ALTER TABLE pgsched.runs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;

-- Applying specs wakes the executors, so a new or changed schedule takes effect at once.
CREATE FUNCTION pgsched.jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pgsched_jobs', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_changed AFTER INSERT OR UPDATE OF spec OR DELETE ON pgsched.jobs
    FOR EACH STATEMENT EXECUTE FUNCTION pgsched.jobs_changed();
