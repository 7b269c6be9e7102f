-- pgsched 0006: enqueueing many on-demand runs at once.
--
-- pgsched.trigger makes one run, one INSERT and one NOTIFY per call: 100,000 runs are 100,000
-- round trips and 100,000 notifications queued for every listener. pgsched.trigger_many makes
-- them with one INSERT ... SELECT and one NOTIFY, in the caller's transaction, with the same
-- checks and errors as pgsched.trigger.
--
-- Two forms, one implementation:
--   pgsched.trigger_many(name, '[{"user_id": 1}, {"user_id": 2}]'::jsonb)   a JSON array
--   pgsched.trigger_many(name, ARRAY['{"user_id": 1}', '{"user_id": 2}']::jsonb[])
-- The jsonb form does the work; the jsonb[] form (what a driver binds from a list) turns its
-- array into a JSON array and calls it. An untyped literal or a bare NULL matches both, so
-- PostgreSQL asks for a cast: say ::jsonb or ::jsonb[].

-- The JSON-array form. `params` must be a JSON array of objects: element k (1-based, as
-- PostgreSQL numbers arrays and WITH ORDINALITY counts) becomes the run whose id is the k-th of
-- the result. The ids are taken from the sequence before the INSERT, in the order given, so the
-- result's order is the input's by construction, not by the order RETURNING happens to use.
CREATE FUNCTION pgsched.trigger_many(job_name text, params jsonb, at timestamptz DEFAULT now())
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    job_kind text;
    bad_index bigint;
    bad_type text;
    run_ids bigint[];
BEGIN
    SELECT kind INTO job_kind FROM pgsched.jobs WHERE name = job_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgsched: no job or chain named %', job_name
            USING ERRCODE = 'no_data_found',
                  HINT = 'SELECT name FROM pgsched.jobs lists the jobs and chains';
    END IF;
    IF params IS NULL OR jsonb_typeof(params) <> 'array' THEN
        RAISE EXCEPTION 'pgsched: params must be a JSON array of objects, got %',
                coalesce(jsonb_typeof(params), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'one run: pgsched.trigger(name, params); many: pgsched.trigger_many(name, ''[{...}, {...}]''::jsonb)';
    END IF;
    SELECT e.ord, jsonb_typeof(e.value) INTO bad_index, bad_type
      FROM jsonb_array_elements(params) WITH ORDINALITY AS e(value, ord)
     WHERE jsonb_typeof(e.value) <> 'object'
     ORDER BY e.ord
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'pgsched: params element % (counted from 1) must be a JSON object, got %',
                bad_index, bad_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_array_length(params) = 0 THEN
        -- Nothing enqueued, so nothing to wake anyone for.
        RETURN '{}'::bigint[];
    END IF;
    WITH given AS MATERIALIZED (
        SELECT nextval('pgsched.runs_id_seq') AS run_id, e.value AS run_params, e.ord
          FROM jsonb_array_elements(params) WITH ORDINALITY AS e(value, ord)
    ), inserted AS (
        INSERT INTO pgsched.runs (id, job, kind, due_at, trigger, params)
        SELECT g.run_id, job_name, job_kind, coalesce(at, now()), 'manual', g.run_params
          FROM given g
    )
    SELECT array_agg(g.run_id ORDER BY g.ord) INTO run_ids FROM given g;
    -- One notification for the lot (its payload the first run's id, as pgsched.trigger's is its
    -- run's): executors wake once and claim in batches; like the INSERT it is delivered only if
    -- the caller's transaction commits.
    PERFORM pg_notify('pgsched_runs', run_ids[1]::text);
    RETURN run_ids;
END
$$;

-- The array form: the same, for a jsonb[] (what drivers bind from a list). A NULL array or
-- element, and a multi-dimensional array, fail in the JSON-array form with its errors; elements
-- are counted from 1 whatever the array's lower bound. Not STRICT: a NULL array is an error, not
-- a silent NULL.
CREATE FUNCTION pgsched.trigger_many(job_name text, params jsonb[], at timestamptz DEFAULT now())
RETURNS bigint[] LANGUAGE sql AS $$
    SELECT pgsched.trigger_many(job_name, to_jsonb(params), at)
$$;

COMMENT ON FUNCTION pgsched.trigger_many(text, jsonb, timestamptz) IS
    'Enqueues one on-demand run per object of a JSON array, in one INSERT with one NOTIFY, in the caller''s transaction; returns the run ids in the order given.';
COMMENT ON FUNCTION pgsched.trigger_many(text, jsonb[], timestamptz) IS
    'pgsched.trigger_many(text, jsonb, timestamptz) for a jsonb[]: the same runs, ids and errors.';
