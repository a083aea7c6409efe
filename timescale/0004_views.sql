-- The query names dashboards use: 1-minute candles and per-stage latency.
--
-- On plain PostgreSQL these are ordinary views (date_bin where TimescaleDB would use
-- time_bucket: the same buckets, aligned to the minute). Where TimescaleDB is present,
-- 0005 replaces trade_candles_1m, ticker_candles_1m and latency_1m by continuous
-- aggregates with the same names and columns; stage_latency and stage_latency_1m read
-- several tables, which a continuous aggregate cannot, so they stay views on both.
-- Within a bucket, open and close are the prices of the earliest and latest rows; rows
-- with the same time leave the choice between them arbitrary, as TimescaleDB's first/last do.

-- OHLCV of public trades per instrument and minute.
CREATE VIEW trade_candles_1m AS
SELECT date_bin(INTERVAL '1 minute', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       instrument_name,
       (array_agg(price ORDER BY time))[1]      AS open,
       max(price)                               AS high,
       min(price)                               AS low,
       (array_agg(price ORDER BY time DESC))[1] AS close,
       sum(amount)                              AS volume,
       count(*)                                 AS trades
FROM public_trades
GROUP BY 1, 2;

-- OHLC of the mark price per instrument and minute, from the ticks (ticker records); the
-- volume of a tick stream is its number of ticks (traded volume is in trade_candles_1m).
CREATE VIEW ticker_candles_1m AS
SELECT date_bin(INTERVAL '1 minute', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       instrument_name,
       (array_agg(mark_price ORDER BY time))[1]      AS open,
       max(mark_price)                               AS high,
       min(mark_price)                               AS low,
       (array_agg(mark_price ORDER BY time DESC))[1] AS close,
       count(*)                                      AS ticks
FROM tickers
GROUP BY 1, 2;

-- Percentiles per minute of the latency samples the agents measured, per stage and instrument.
CREATE VIEW latency_1m AS
SELECT date_bin(INTERVAL '1 minute', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       instrument_name,
       stage,
       count(*)                                                              AS samples,
       avg(duration_us)::double precision                                    AS avg_us,
       percentile_cont(0.5)  WITHIN GROUP (ORDER BY duration_us)             AS p50_us,
       percentile_cont(0.9)  WITHIN GROUP (ORDER BY duration_us)             AS p90_us,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_us)             AS p99_us,
       max(duration_us)                                                      AS max_us
FROM latency_samples
GROUP BY 1, 2, 3;

-- The µs between two stamps.
CREATE FUNCTION stage_us(start_at timestamptz, end_at timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN round(extract(epoch FROM end_at - start_at) * 1000000)::bigint;

-- Every stage latency the D9 stamps on the rows give, derived here rather than in the
-- worker, plus the samples the agents measured themselves. One row per event and stage:
-- `time` is when the stage ended, `source` the table it comes from. Stage names follow the
-- latency topic's '<from>_to_<to>' convention. Filter on time: each branch is then an index
-- range scan of its table.
CREATE VIEW stage_latency AS
          SELECT received_at AS time, 'tickers' AS source, instrument_name, 'exchange_to_received' AS stage,
                 stage_us(time, received_at) AS duration_us FROM tickers
UNION ALL SELECT persisted_at, 'tickers', instrument_name, 'received_to_persisted',
                 stage_us(received_at, persisted_at) FROM tickers
UNION ALL SELECT received_at, 'book_tops', instrument_name, 'exchange_to_received',
                 stage_us(time, received_at) FROM book_tops
UNION ALL SELECT persisted_at, 'book_tops', instrument_name, 'received_to_persisted',
                 stage_us(received_at, persisted_at) FROM book_tops
UNION ALL SELECT received_at, 'index_prices', index_name, 'exchange_to_received',
                 stage_us(time, received_at) FROM index_prices
UNION ALL SELECT persisted_at, 'index_prices', index_name, 'received_to_persisted',
                 stage_us(received_at, persisted_at) FROM index_prices
UNION ALL SELECT received_at, 'public_trades', instrument_name, 'exchange_to_received',
                 stage_us(time, received_at) FROM public_trades WHERE received_at IS NOT NULL
UNION ALL SELECT persisted_at, 'positions', instrument_name, 'received_to_persisted',
                 stage_us(time, persisted_at) FROM positions
UNION ALL SELECT time, 'quote_decisions', instrument_name, 'received_to_quoted',
                 stage_us(received_at, time) FROM quote_decisions WHERE received_at IS NOT NULL
UNION ALL SELECT persisted_at, 'quote_decisions', instrument_name, 'quoted_to_persisted',
                 stage_us(time, persisted_at) FROM quote_decisions
UNION ALL SELECT order_sent_at, 'order_acks', instrument_name, 'quoted_to_order_sent',
                 stage_us(quoted_at, order_sent_at) FROM order_acks
                 WHERE quoted_at IS NOT NULL AND order_sent_at IS NOT NULL
UNION ALL SELECT time, 'order_acks', instrument_name, 'order_sent_to_ack_received',
                 stage_us(order_sent_at, time) FROM order_acks WHERE order_sent_at IS NOT NULL
UNION ALL SELECT time, 'order_acks', instrument_name, 'received_to_ack_received',
                 stage_us(received_at, time) FROM order_acks WHERE received_at IS NOT NULL
UNION ALL SELECT persisted_at, 'order_acks', instrument_name, 'ack_received_to_persisted',
                 stage_us(time, persisted_at) FROM order_acks
UNION ALL SELECT ack_received_at, 'fills', instrument_name, 'exchange_to_ack_received',
                 stage_us(time, ack_received_at) FROM fills WHERE ack_received_at IS NOT NULL
UNION ALL SELECT time, 'latency_samples', instrument_name, stage, duration_us FROM latency_samples;

-- Percentiles per minute of every stage latency, derived and measured alike.
CREATE VIEW stage_latency_1m AS
SELECT date_bin(INTERVAL '1 minute', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
       instrument_name,
       stage,
       count(*)                                                  AS samples,
       percentile_cont(0.5)  WITHIN GROUP (ORDER BY duration_us) AS p50_us,
       percentile_cont(0.9)  WITHIN GROUP (ORDER BY duration_us) AS p90_us,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_us) AS p99_us,
       max(duration_us)                                          AS max_us
FROM stage_latency
GROUP BY 1, 2, 3;
