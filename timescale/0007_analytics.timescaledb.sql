-- TimescaleDB only (docs/architecture.md#d7-database; app/stack/migrate.py runs it only where
-- the extension is available, after 0005): the analytics tables of 0006 become hypertables
-- on `time`, compressed segment by instrument, and markouts_1m becomes a continuous
-- aggregate under the same name and columns.
--
-- Chunk intervals (0005's rule: a chunk, indexes included, fits comfortably in memory while
-- it takes inserts): markouts are 4 rows per fill, a few thousand a day per instrument:
-- 1-day chunks, like fills. The per-minute tables get 1,440 rows a day per instrument:
-- 7-day chunks, or a day's chunk would hold almost nothing. Compression once a chunk is
-- well behind real time (two chunk lengths for the daily chunks, one for the weekly).
-- No retention: like our fills and positions, what our trading did is kept.

SELECT create_hypertable('markouts',         by_range('time', INTERVAL '1 day'),  migrate_data => true);
SELECT create_hypertable('pnl_snapshots',    by_range('time', INTERVAL '7 days'), migrate_data => true);
SELECT create_hypertable('quote_quality_1m', by_range('time', INTERVAL '7 days'), migrate_data => true);

-- Segment by instrument (queries are per instrument); order by the rest of the primary key,
-- so a late duplicate is found in a compressed chunk without decompressing whole segments.
ALTER TABLE markouts SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name',
                          timescaledb.compress_orderby = 'time DESC, trade_id, order_id, horizon_seconds');
ALTER TABLE pnl_snapshots SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name',
                               timescaledb.compress_orderby = 'time DESC');
ALTER TABLE quote_quality_1m SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name',
                                  timescaledb.compress_orderby = 'time DESC');

SELECT add_compression_policy('markouts',         compress_after => INTERVAL '2 days');
SELECT add_compression_policy('pnl_snapshots',    compress_after => INTERVAL '7 days');
SELECT add_compression_policy('quote_quality_1m', compress_after => INTERVAL '7 days');

-- As 0005 does for the candles: materialized_only = false (a query adds the rows newer than
-- the last refresh, so it answers like the view it replaces), WITH NO DATA (the first
-- refresh is the policy's), refreshed every minute over the last two hours. A markout row
-- arrives up to a minute after its fill (the longest horizon), well inside that window.
DROP VIEW markouts_1m;
CREATE MATERIALIZED VIEW markouts_1m
    WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket,
       instrument_name,
       direction,
       horizon_seconds,
       count(*)                AS markouts,
       count(markout_bps)      AS mid_markouts,
       avg(markout_bps)        AS avg_markout_bps,
       sum(markout)            AS sum_markout,
       avg(markout_bps_mark)   AS avg_markout_bps_mark,
       sum(markout_mark)       AS sum_markout_mark
FROM markouts
GROUP BY 1, 2, 3, 4
WITH NO DATA;

SELECT add_continuous_aggregate_policy('markouts_1m', start_offset => INTERVAL '2 hours',
                                       end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
