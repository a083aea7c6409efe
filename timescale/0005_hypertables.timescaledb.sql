-- TimescaleDB only (docs/architecture.md#d7-database; app/stack/migrate.py runs it only where the extension is
-- available): the pipeline tables of 0002/0003 become hypertables on `time`, compressed
-- segment by instrument and dropped after their retention; the candle and latency views of
-- 0004 that read one table become continuous aggregates under the same names.
--
-- Chunk intervals, for tick data: a chunk, indexes included, should fit comfortably in
-- memory while it takes inserts. The busiest tables (tickers, book_tops, quote_decisions,
-- latency_samples, public_trades) get a few hundred rows/s with a handful of instruments,
-- 5–20 million rows a day: 6-hour chunks keep each near 1 GB. The others are small: 1 day.
-- Compression starts once a chunk is well behind real time (1 day, or 2 for daily chunks);
-- late rows into a compressed chunk still work, they are just slower.
-- Retention: market data and quoting detail 30–90 days (the candles outlive it: the
-- continuous aggregates are not dropped with the raw rows, as their refresh window of 2
-- hours never reaches back that far); our orders, fills and positions are kept.

SELECT create_hypertable('tickers',         by_range('time', INTERVAL '6 hours'), migrate_data => true);
SELECT create_hypertable('book_tops',       by_range('time', INTERVAL '6 hours'), migrate_data => true);
SELECT create_hypertable('public_trades',   by_range('time', INTERVAL '6 hours'), migrate_data => true);
SELECT create_hypertable('quote_decisions', by_range('time', INTERVAL '6 hours'), migrate_data => true);
SELECT create_hypertable('latency_samples', by_range('time', INTERVAL '6 hours'), migrate_data => true);
SELECT create_hypertable('index_prices',    by_range('time', INTERVAL '1 day'),   migrate_data => true);
SELECT create_hypertable('order_acks',      by_range('time', INTERVAL '1 day'),   migrate_data => true);
SELECT create_hypertable('fills',           by_range('time', INTERVAL '1 day'),   migrate_data => true);
SELECT create_hypertable('positions',       by_range('time', INTERVAL '1 day'),   migrate_data => true);

-- Segment by instrument (queries are per instrument); order by the rest of the primary key,
-- so a late duplicate is found in a compressed chunk without decompressing whole segments.
ALTER TABLE tickers SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name',
                         timescaledb.compress_orderby = 'time DESC, received_at');
ALTER TABLE book_tops SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name',
                           timescaledb.compress_orderby = 'time DESC, received_at');
ALTER TABLE public_trades SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name',
                               timescaledb.compress_orderby = 'time DESC, price, amount, direction');
ALTER TABLE quote_decisions SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name',
                                 timescaledb.compress_orderby = 'time DESC');
ALTER TABLE latency_samples SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name, stage',
                                 timescaledb.compress_orderby = 'time DESC, start_at');
ALTER TABLE index_prices SET (timescaledb.compress, timescaledb.compress_segmentby = 'index_name',
                              timescaledb.compress_orderby = 'time DESC, received_at');
ALTER TABLE order_acks SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name',
                            timescaledb.compress_orderby = 'time DESC, order_id, change_reason, filled_amount, remaining_amount');
ALTER TABLE fills SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name',
                       timescaledb.compress_orderby = 'time DESC, trade_id, order_id, leg_index');
ALTER TABLE positions SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name',
                           timescaledb.compress_orderby = 'time DESC');

SELECT add_compression_policy('tickers',         compress_after => INTERVAL '1 day');
SELECT add_compression_policy('book_tops',       compress_after => INTERVAL '1 day');
SELECT add_compression_policy('public_trades',   compress_after => INTERVAL '1 day');
SELECT add_compression_policy('quote_decisions', compress_after => INTERVAL '1 day');
SELECT add_compression_policy('latency_samples', compress_after => INTERVAL '1 day');
SELECT add_compression_policy('index_prices',    compress_after => INTERVAL '2 days');
SELECT add_compression_policy('order_acks',      compress_after => INTERVAL '2 days');
SELECT add_compression_policy('fills',           compress_after => INTERVAL '2 days');
SELECT add_compression_policy('positions',       compress_after => INTERVAL '2 days');

SELECT add_retention_policy('tickers',         drop_after => INTERVAL '30 days');
SELECT add_retention_policy('book_tops',       drop_after => INTERVAL '30 days');
SELECT add_retention_policy('quote_decisions', drop_after => INTERVAL '30 days');
SELECT add_retention_policy('latency_samples', drop_after => INTERVAL '30 days');
SELECT add_retention_policy('public_trades',   drop_after => INTERVAL '90 days');
SELECT add_retention_policy('index_prices',    drop_after => INTERVAL '90 days');

-- The continuous aggregates replace the plain views of 0004 under the same names and
-- columns. materialized_only = false: a query adds the rows newer than the last refresh
-- (real-time aggregation), so it always answers like the view it replaces. WITH NO DATA:
-- the first refresh is the policy's (creating with data cannot run inside the migration's
-- transaction).
DROP VIEW trade_candles_1m;
CREATE MATERIALIZED VIEW trade_candles_1m
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket,
       instrument_name,
       first(price, time) AS open,
       max(price)         AS high,
       min(price)         AS low,
       last(price, time)  AS close,
       sum(amount)        AS volume,
       count(*)           AS trades
FROM public_trades
GROUP BY 1, 2
WITH NO DATA;

DROP VIEW ticker_candles_1m;
CREATE MATERIALIZED VIEW ticker_candles_1m
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket,
       instrument_name,
       first(mark_price, time) AS open,
       max(mark_price)         AS high,
       min(mark_price)         AS low,
       last(mark_price, time)  AS close,
       count(*)                AS ticks
FROM tickers
GROUP BY 1, 2
WITH NO DATA;

DROP VIEW latency_1m;
CREATE MATERIALIZED VIEW latency_1m
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket,
       instrument_name,
       stage,
       count(*)                                                  AS samples,
       avg(duration_us)::double precision                        AS avg_us,
       percentile_cont(0.5)  WITHIN GROUP (ORDER BY duration_us) AS p50_us,
       percentile_cont(0.9)  WITHIN GROUP (ORDER BY duration_us) AS p90_us,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_us) AS p99_us,
       max(duration_us)                                          AS max_us
FROM latency_samples
GROUP BY 1, 2, 3
WITH NO DATA;

-- Refresh every minute the last two hours up to the current, still open, minute.
SELECT add_continuous_aggregate_policy('trade_candles_1m', start_offset => INTERVAL '2 hours',
                                       end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('ticker_candles_1m', start_offset => INTERVAL '2 hours',
                                       end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('latency_1m', start_offset => INTERVAL '2 hours',
                                       end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
