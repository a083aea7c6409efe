-- Market data from the venue, one row per Kafka record (docs/architecture.md#d8-persistence-semantics), written by the
-- persistence agents (agents/persistence.py) with COPY + INSERT … ON CONFLICT DO NOTHING.
--
-- Conventions of every pipeline table (this migration and the next):
-- - `time` is the row's time column and the first column: the exchange time of the event
--   where the venue sends one (float unix seconds in the record, timestamptz here, µs),
--   otherwise the local stage stamp that best dates the event. TimescaleDB partitions on it
--   (0005); every primary key includes it (a hypertable requirement, docs/architecture.md#d7-database).
-- - The primary key is the record's natural key: a record delivered twice (at-least-once,
--   docs/architecture.md#d6-embedded-broker-tansu) hits the key and is skipped, so each event is one row.
-- - `received_at` and the other `*_at` columns are the local D9 stage stamps the record
--   carries; `persisted_at` is stamped by the sink for each flush (the worker's wall clock,
--   like the other stamps, so stage latencies are free of clock skew between hosts).
-- - Constraints state what the venue guarantees: prices of perpetuals and indexes are
--   positive, amounts are not negative (the two domains below; they also refuse NaN and
--   infinity, which a bare `price > 0` lets through: NaN sorts above every number in
--   PostgreSQL). A record violating one is a data error: the sink sends it to the
--   dead-letter topic and writes the rest of its batch.

CREATE DOMAIN positive_float8 AS double precision CHECK (VALUE > 0 AND VALUE < 'Infinity');
CREATE DOMAIN nonnegative_float8 AS double precision CHECK (VALUE >= 0 AND VALUE < 'Infinity');

-- One row per ticker notification. Natural key: instrument, mark time and the time it was
-- received: the venue sends a ticker whenever any field changes, so two notifications can
-- share a mark time; a redelivered record keeps its received_at and is skipped.
CREATE TABLE tickers (
    time                      timestamptz        NOT NULL,  -- mark_timestamp
    instrument_name           text               NOT NULL,
    received_at               timestamptz        NOT NULL,
    mark_price                positive_float8    NOT NULL,
    delta                     double precision   NOT NULL,
    index_price               positive_float8    NOT NULL,  -- Thalex's `index`
    best_bid_price            positive_float8,
    best_bid_amount           nonnegative_float8,
    best_ask_price            positive_float8,
    best_ask_amount           nonnegative_float8,
    last_price                positive_float8,
    iv                        double precision,
    forward                   double precision,
    volume_24h                nonnegative_float8,
    value_24h                 double precision,
    low_price_24h             double precision,
    high_price_24h            double precision,
    change_24h                double precision,
    collar_low                double precision,
    collar_high               double precision,
    open_interest             nonnegative_float8,
    funding_rate              double precision,
    funding_mark              double precision,
    realised_funding_24h      double precision,
    average_funding_rate_24h  double precision,
    persisted_at              timestamptz        NOT NULL,
    PRIMARY KEY (instrument_name, time, received_at)
);

-- The top of the local book after each book notification (the level changes themselves
-- are counted, not stored). Natural key as for tickers.
CREATE TABLE book_tops (
    time              timestamptz        NOT NULL,  -- the book's exchange time
    instrument_name   text               NOT NULL,
    received_at       timestamptz        NOT NULL,
    snapshot          boolean            NOT NULL,
    best_bid_price    positive_float8,
    best_bid_amount   nonnegative_float8,
    best_ask_price    positive_float8,
    best_ask_amount   nonnegative_float8,
    total_bid_amount  nonnegative_float8,
    total_ask_amount  nonnegative_float8,
    bid_changes       integer            NOT NULL CHECK (bid_changes >= 0),  -- levels changed in the notification
    ask_changes       integer            NOT NULL CHECK (ask_changes >= 0),
    trades            integer            NOT NULL CHECK (trades >= 0),       -- trades it carried (rows of public_trades)
    persisted_at      timestamptz        NOT NULL,
    PRIMARY KEY (instrument_name, time, received_at)
);

-- One row per price_index notification. Natural key as for tickers.
CREATE TABLE index_prices (
    time                        timestamptz        NOT NULL,
    index_name                  text               NOT NULL,
    received_at                 timestamptz        NOT NULL,
    price                       positive_float8    NOT NULL,
    expiration_print_average    double precision,
    expiration_progress         double precision,
    expected_expiration_price   double precision,
    previous_settlement_price   double precision,
    persisted_at                timestamptz        NOT NULL,
    PRIMARY KEY (index_name, time, received_at)
);

-- Public trade prints. Thalex gives public trades no id, so the natural key is the print
-- itself: (instrument, time, price, amount, direction). That is what makes a trade that a
-- book snapshot repeats after a resubscribe one row, not two. The caveat: two distinct
-- prints identical in all five (one taker filling two resting orders of the same size at
-- the same price in the same matching step) also become one row. received_at is not in the
-- key because a repeated print arrives with a new one.
CREATE TABLE public_trades (
    time             timestamptz        NOT NULL,
    instrument_name  text               NOT NULL,
    price            positive_float8    NOT NULL,
    amount           nonnegative_float8 NOT NULL,
    direction        text               NOT NULL CHECK (direction IN ('buy', 'sell')),  -- taker side
    implied_taker    boolean            NOT NULL,
    received_at      timestamptz,
    persisted_at     timestamptz        NOT NULL,
    PRIMARY KEY (instrument_name, time, price, amount, direction)
);
