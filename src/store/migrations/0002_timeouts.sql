-- pgsched 0002: what the Timeout deadline loop needs.
--
-- The loop records the last error of each Timeout (a dropped table, a failing trigger of the
-- application's) so `status` and psql show why its rows stopped expiring; it clears it when
-- the Timeout works again.
ALTER TABLE pgsched.timeouts
    ADD COLUMN last_error    text,
    ADD COLUMN last_error_at timestamptz;

-- The statement-level trigger `apply` installs on each Timeout's table (AFTER INSERT OR
-- UPDATE, argument: the Timeout's name). It wakes the deadline loop so that a new row's
-- deadline is known at once instead of at the next poll. NOTIFY is delivered at commit and
-- folded per transaction, so a statement that inserts a thousand rows sends one message, and a
-- rolled-back insert none.
--
-- The loop's own expiry statements run with pgsched.expiring = 'on': it knows what it just
-- changed and needs no message about it.
CREATE FUNCTION pgsched.timeout_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(pg_catalog.current_setting('pgsched.expiring', true), '') <> 'on' THEN
        PERFORM pg_catalog.pg_notify('pgsched_timeouts', TG_ARGV[0]);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION pgsched.timeout_notify() IS
    'Installed by pgsched apply as trigger pgsched_timeout_<name> on each Timeout''s table: wakes the deadline loop when rows change.';
