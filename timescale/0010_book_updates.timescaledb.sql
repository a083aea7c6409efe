-- TimescaleDB only (docs/architecture.md#d7-database; app/stack/migrate.py runs it only where
-- the extension is available, after 0005): book_updates (0009) becomes a hypertable on `time`,
-- compressed segment by instrument and dropped after the same retention as book_tops.
--
-- Chunk interval (0005's rule: a chunk, indexes included, fits comfortably in memory while it
-- takes inserts): one row per book notification, as many rows as book_tops, each a little
-- wider (four short arrays): 6-hour chunks, like book_tops. Compression once a chunk is well
-- behind real time (1 day, as for the other 6-hour tables); the arrays compress well, a book
-- update repeating the prices near the top again and again.
-- Retention: 30 days, as book_tops: the replay's recorded range is the market data's.

SELECT create_hypertable('book_updates', by_range('time', INTERVAL '6 hours'), migrate_data => true);

-- Segment by instrument (replays read one instrument's rows in time order); order by the rest
-- of the primary key, so a late duplicate is found in a compressed chunk without decompressing
-- whole segments.
ALTER TABLE book_updates SET (timescaledb.compress, timescaledb.compress_segmentby = 'instrument_name',
                              timescaledb.compress_orderby = 'time DESC, received_at');

SELECT add_compression_policy('book_updates', compress_after => INTERVAL '1 day');

SELECT add_retention_policy('book_updates', drop_after => INTERVAL '30 days');
