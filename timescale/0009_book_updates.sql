-- The full-depth book, as it came (docs/architecture.md#d8-persistence-semantics): one row per book
-- notification, next to book_tops (0002), which keeps only the top it led to. Fed from the same
-- `book` topic by the same sink (app/pipeline/sink/tables.py: one consume, one write per table),
-- so that a replay (app/backtest/) can rebuild the whole book: apply each row's changes in
-- (time, received_at) order, an amount of 0 removing its level, a snapshot replacing the book.
--
-- Conventions as in 0002: `time` is the book's exchange time, `received_at` the D9 stamp,
-- `persisted_at` the sink's flush; the natural key is book_tops' (instrument, exchange time,
-- received_at), so a redelivered notification is skipped. The level changes are kept in the
-- order sent, as four parallel arrays (prices and amounts per side; the outright part of an
-- amount is not kept). The CHECK states what the venue guarantees of a level change: a
-- positive finite price, a finite amount that is not negative, and one amount per price (an
-- element-wise domain would do it too, but the columns' type is part of the replay's contract:
-- double precision[]). A notification violating it is dead-lettered for this table alone.

CREATE TABLE book_updates (
    time             timestamptz         NOT NULL,  -- the book's exchange time
    instrument_name  text                NOT NULL,
    received_at      timestamptz         NOT NULL,
    snapshot         boolean             NOT NULL,  -- true: the changes list the whole book
    bid_prices       double precision[]  NOT NULL,
    bid_amounts      double precision[]  NOT NULL,
    ask_prices       double precision[]  NOT NULL,
    ask_amounts      double precision[]  NOT NULL,
    persisted_at     timestamptz         NOT NULL,
    PRIMARY KEY (instrument_name, time, received_at),
    -- 'NaN' sorts above every number in PostgreSQL, so `< 'Infinity'` refuses NaN as well.
    CONSTRAINT book_updates_levels_check CHECK (
        cardinality(bid_prices) = cardinality(bid_amounts)
        AND cardinality(ask_prices) = cardinality(ask_amounts)
        AND 0 < ALL (bid_prices) AND 'Infinity' > ALL (bid_prices)
        AND 0 < ALL (ask_prices) AND 'Infinity' > ALL (ask_prices)
        AND 0 <= ALL (bid_amounts) AND 'Infinity' > ALL (bid_amounts)
        AND 0 <= ALL (ask_amounts) AND 'Infinity' > ALL (ask_amounts)
    )
);

-- The read-only role (0008) reads book_updates too. 0008's function is replaced, never edited:
-- the list below is 0008's plus book_updates. EXECUTE as there: PGlite fails on a second call
-- of a function whose GRANT was planned once and cached.
CREATE OR REPLACE FUNCTION cryptics_grant_reader() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'GRANT USAGE ON SCHEMA public TO cryptics_reader';
    EXECUTE 'GRANT SELECT ON '
        'instruments, tickers, book_tops, book_updates, index_prices, public_trades, '
        'quote_decisions, order_acks, orders, fills, positions, latency_samples, '
        'markouts, pnl_snapshots, quote_quality_1m, '
        'trade_candles_1m, ticker_candles_1m, latency_1m, stage_latency, stage_latency_1m, markouts_1m '
        'TO cryptics_reader';
END
$$;
