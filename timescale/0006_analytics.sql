-- What the analytics publish (app/analytics/, models/analytics.py), one row per record,
-- written by the persistence consumer like every pipeline table (conventions: 0002's header):
-- markouts of our fills, PnL snapshots and quote quality per instrument and minute. Plain
-- PostgreSQL tables and views; 0007 makes them hypertables where TimescaleDB is present.
-- And the ack → persisted latency moves from a derived branch of stage_latency to the
-- samples the sink measures (below).

-- A finite double: refuses NaN and ±infinity, which a bare column takes. A NaN markout or
-- PnL would turn every average and sum over it (markouts_1m, the dashboards) into NaN, so
-- such a record is a data error and goes to the dead-letter topic instead.
CREATE DOMAIN finite_float8 AS double precision CHECK (VALUE > '-Infinity' AND VALUE < 'Infinity');

-- One row per fill and horizon once that horizon resolved (schemas/markout). Natural key:
-- the fill as the fills table keys it (trade_id and order_id: a self-trade fills two of our
-- orders under one trade_id; its exchange time, the row's time) and the horizon. The mid-based
-- columns are null when the ticker lacked a side; the mark-based ones are always there.
CREATE TABLE markouts (
    time              timestamptz        NOT NULL,  -- the fill's exchange time
    trade_id          text               NOT NULL,
    order_id          text               NOT NULL,
    horizon_seconds   integer            NOT NULL CHECK (horizon_seconds > 0),
    instrument_name   text               NOT NULL,
    direction         text               NOT NULL CHECK (direction IN ('buy', 'sell')),
    maker_taker       text               NOT NULL CHECK (maker_taker IN ('maker', 'taker')),
    price             positive_float8    NOT NULL,
    amount            positive_float8    NOT NULL,
    mid_after         positive_float8,
    mark_after        positive_float8    NOT NULL,
    markout_bps       finite_float8,
    markout           finite_float8,
    markout_bps_mark  finite_float8      NOT NULL,
    markout_mark      finite_float8      NOT NULL,
    persisted_at      timestamptz        NOT NULL,
    -- a mid-based markout exists exactly when its mid does
    CHECK ((mid_after IS NULL) = (markout_bps IS NULL) AND (mid_after IS NULL) = (markout IS NULL)),
    PRIMARY KEY (trade_id, order_id, horizon_seconds, time)
);
CREATE INDEX markouts_instrument_time_idx ON markouts (instrument_name, time DESC);

-- Position and PnL per instrument at the end of each minute (schemas/pnl_snapshot). Natural
-- key: instrument and that minute's end: the analytics publish one snapshot per minute, and
-- a snapshot published again after a redelivery is the same row. Fees may be negative (a
-- maker rebate); counts and volumes may not.
CREATE TABLE pnl_snapshots (
    time             timestamptz        NOT NULL,  -- the end of the minute
    instrument_name  text               NOT NULL,
    position         finite_float8      NOT NULL,
    average_price    nonnegative_float8 NOT NULL,  -- 0 when flat
    realized_pnl     finite_float8      NOT NULL,
    unrealized_pnl   finite_float8,  -- null before the first mark
    mark_price       positive_float8,
    fees_maker       finite_float8      NOT NULL,
    fees_taker       finite_float8      NOT NULL,
    funding_pnl      finite_float8,  -- null before the first position line
    net_pnl          finite_float8,
    volume           nonnegative_float8 NOT NULL,
    notional         nonnegative_float8 NOT NULL,
    trades           bigint             NOT NULL CHECK (trades >= 0),
    persisted_at     timestamptz        NOT NULL,
    PRIMARY KEY (instrument_name, time)
);

-- Quote quality per instrument and minute (schemas/quote_quality). Natural key: instrument
-- and the minute's start, as for pnl_snapshots. The table name says the grain, as the
-- other per-minute names do (trade_candles_1m, latency_1m). Ratios are null when their
-- denominator was zero; none of these quantities can be negative except the distances
-- and the spread (a quote on the wrong side of the fair value, a crossed ladder).
CREATE TABLE quote_quality_1m (
    time                timestamptz        NOT NULL,  -- the start of the minute
    instrument_name     text               NOT NULL,
    observed_seconds    nonnegative_float8 NOT NULL,
    two_sided_seconds   nonnegative_float8 NOT NULL,
    uptime              nonnegative_float8,
    quotes              bigint             NOT NULL CHECK (quotes >= 0),
    mean_spread         finite_float8,
    mean_bid_distance   finite_float8,
    mean_ask_distance   finite_float8,
    quoted_amount       nonnegative_float8 NOT NULL,
    filled_amount       nonnegative_float8 NOT NULL,
    fill_ratio          nonnegative_float8,
    order_actions       bigint             NOT NULL CHECK (order_actions >= 0),
    fills               bigint             NOT NULL CHECK (fills >= 0),
    order_to_trade      nonnegative_float8,
    volume              nonnegative_float8 NOT NULL,
    mean_abs_position   nonnegative_float8,
    inventory_turnover  nonnegative_float8,
    persisted_at        timestamptz        NOT NULL,
    PRIMARY KEY (instrument_name, time)
);

-- Markouts per instrument, side and horizon and minute of the fill. An ordinary view on
-- plain PostgreSQL (date_bin where TimescaleDB would use time_bucket: the same buckets);
-- 0007 replaces it by a continuous aggregate with the same name and columns. The averages
-- and sums skip null (mid-based) markouts; `markouts` counts every row, `mid_markouts`
-- those with a mid, so a dashboard can weigh the two averages.
CREATE VIEW markouts_1m AS
SELECT date_bin(INTERVAL '1 minute', time, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
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
GROUP BY 1, 2, 3, 4;

-- stage_latency without its derived ack → persisted branch: the persistence consumer now
-- measures that stage itself, one latency sample per order_acks row it inserted
-- (agents/persistence.py), and the samples reach this view through latency_samples. Were
-- the branch kept, every ack would count twice. Same columns, so stage_latency_1m and any
-- other reader are unaffected; acks persisted before the samples existed are no longer
-- counted in that stage.
CREATE OR REPLACE VIEW stage_latency AS
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
UNION ALL SELECT ack_received_at, 'fills', instrument_name, 'exchange_to_ack_received',
                 stage_us(time, ack_received_at) FROM fills WHERE ack_received_at IS NOT NULL
UNION ALL SELECT time, 'latency_samples', instrument_name, stage, duration_us FROM latency_samples;
