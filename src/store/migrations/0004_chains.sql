-- pgsched 0004: chain steps recorded per attempt of their run.
--
-- A run retried as a whole (the chain's `retries`, or a worker that shut down) runs its steps
-- again: each attempt keeps its own step records, so the history shows what every attempt did.
-- `attempt` stays the step's own attempt (its `retries` inside the run).
ALTER TABLE pgsched.run_steps
    ADD COLUMN run_attempt int NOT NULL DEFAULT 1,
    -- A failure that `ignoreError` let the chain go past.
    ADD COLUMN ignored boolean NOT NULL DEFAULT false,
    -- An `onFailure` step (positions after the chain's steps).
    ADD COLUMN on_failure boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT run_steps_status_check
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'skipped', 'cancelled',
                          'rolled_back'));
ALTER TABLE pgsched.run_steps DROP CONSTRAINT run_steps_pkey;
ALTER TABLE pgsched.run_steps ADD PRIMARY KEY (run_id, run_attempt, position);
