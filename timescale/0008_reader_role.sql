-- The read-only role the dashboards read through (docs/operations.md#dashboards): SELECT on the
-- tables and views the Grafana panels show, nothing else: no write, no DDL, no migrations
-- table. `cryptics db migrate` gives a login role, cryptics_grafana, this role's rights when
-- CRYPTICS_DATABASE_READER_PASSWORD_FILE names its password (app/stack/migrate.py).
--
-- Roles belong to the whole PostgreSQL cluster, not to one database: several databases of one
-- cluster (the test suite's) share the role, and two runners may create it at once; so it is
-- created only when missing, and a concurrent creation is no error.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cryptics_reader') THEN
        CREATE ROLE cryptics_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created by a concurrent runner in between
END
$$;

-- The grants live in a function that `cryptics db migrate` calls after every run: a view a
-- later migration recreates (a TimescaleDB-only one applied once the extension arrives drops
-- a view for its continuous aggregate) gets them again.
CREATE FUNCTION cryptics_grant_reader() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- EXECUTE: the grants planned afresh at each call (PGlite fails on a second call of a
    -- function whose GRANT was planned once and cached)
    EXECUTE 'GRANT USAGE ON SCHEMA public TO cryptics_reader';
    EXECUTE 'GRANT SELECT ON '
        'instruments, tickers, book_tops, index_prices, public_trades, '
        'quote_decisions, order_acks, orders, fills, positions, latency_samples, '
        'markouts, pnl_snapshots, quote_quality_1m, '
        'trade_candles_1m, ticker_candles_1m, latency_1m, stage_latency, stage_latency_1m, markouts_1m '
        'TO cryptics_reader';
END
$$;
