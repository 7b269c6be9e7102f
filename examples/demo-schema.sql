-- The application tables the examples act on. `make run` applies this file (with
-- `--setup-sql`) so that `plan` can check the examples' SQL and Timeout against real tables.
-- Idempotent: safe to run on every start.
CREATE TABLE IF NOT EXISTS booking (
    id          bigserial PRIMARY KEY,
    customer    text NOT NULL,
    status      text NOT NULL DEFAULT 'pending for payment',
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Finds the holds that are due without scanning every booking.
CREATE INDEX IF NOT EXISTS booking_pending_created_at
    ON booking (created_at) WHERE status = 'pending for payment';

CREATE TABLE IF NOT EXISTS outbox (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL,
    template    text NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS exchange_rate (
    currency    text NOT NULL,
    rate        numeric NOT NULL,
    day         date NOT NULL,
    PRIMARY KEY (currency, day)
);

CREATE MATERIALIZED VIEW IF NOT EXISTS daily_rates AS
    SELECT day, count(*) AS currencies, avg(rate) AS average_rate
      FROM exchange_rate GROUP BY day;
