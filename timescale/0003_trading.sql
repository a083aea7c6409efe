-- What the market maker decided and what happened to its orders: quote decisions, order
-- status updates (acks), fills, position snapshots, latency samples; and `orders`, the
-- current state of every order, kept by a trigger on order_acks (in the database, so every
-- writer of order_acks, replays included, keeps it right). Conventions: 0002's header.

-- One row per quote decision. Natural key: instrument and the moment of the decision
-- (quoted_at, µs): the quote agent decides once per triggering event.
CREATE TABLE quote_decisions (
    time             timestamptz        NOT NULL,  -- quoted_at
    instrument_name  text               NOT NULL,
    reason           text               NOT NULL,
    position         double precision   NOT NULL,
    fair_value       double precision,
    index_price      positive_float8,
    mark_price       positive_float8,
    mark_time        timestamptz,  -- mark_timestamp of the ticker it priced from
    best_bid_price   positive_float8,
    best_ask_price   positive_float8,
    funding_rate     double precision,
    -- The ladder, best first; bid_prices[i] goes with bid_amounts[i].
    bid_prices       double precision[] NOT NULL CHECK (0 < ALL (bid_prices) AND 'Infinity' > ALL (bid_prices)),
    bid_amounts      double precision[] NOT NULL CHECK (0 < ALL (bid_amounts) AND 'Infinity' > ALL (bid_amounts)),
    ask_prices       double precision[] NOT NULL CHECK (0 < ALL (ask_prices) AND 'Infinity' > ALL (ask_prices)),
    ask_amounts      double precision[] NOT NULL CHECK (0 < ALL (ask_amounts) AND 'Infinity' > ALL (ask_amounts)),
    received_at      timestamptz,
    persisted_at     timestamptz        NOT NULL,
    CHECK (cardinality(bid_prices) = cardinality(bid_amounts) AND cardinality(ask_prices) = cardinality(ask_amounts)),
    PRIMARY KEY (instrument_name, time)
);

-- One row per order status update the gateway received. Thalex numbers no updates, so
-- the natural key is the order, the local time the update arrived (ack_received_at, µs),
-- and the exchange fields that tell two updates of one message apart (a session.orders
-- notification can carry an insert and a fill of the same order): change_reason,
-- filled_amount, remaining_amount. A content-only key would be wrong: a quoter amending
-- an order A→B→A with no fill in between sends two identical "amend to A" updates. The
-- caveat of keying on arrival: an update that the venue itself sends twice (a request's
-- answer and the same state again in session.orders) is two rows; `orders` below is
-- unaffected, because applying the same state twice changes nothing.
CREATE TABLE order_acks (
    time                  timestamptz        NOT NULL,  -- ack_received_at
    order_id              text               NOT NULL,
    instrument_name       text,  -- null for combination orders (see legs)
    change_reason         text               NOT NULL,  -- existing, insert, amend, cancel, fill
    status                text               NOT NULL CHECK (status IN
                              ('open', 'partially_filled', 'cancelled', 'cancelled_partially_filled', 'filled')),
    order_type            text               NOT NULL,
    time_in_force         text               NOT NULL,
    direction             text               NOT NULL CHECK (direction IN ('buy', 'sell')),
    price                 positive_float8,  -- null for market orders
    amount                nonnegative_float8 NOT NULL,
    filled_amount         nonnegative_float8 NOT NULL,
    remaining_amount      nonnegative_float8 NOT NULL,
    insert_reason         text               NOT NULL,
    delete_reason         text,
    label                 text,
    client_order_id       bigint,
    persistent            boolean            NOT NULL,
    reduce_only           boolean,
    conditional_order_id  text,
    bot_id                text,
    create_time           timestamptz        NOT NULL,
    close_time            timestamptz,
    fills                 jsonb              NOT NULL,  -- the update's new fills, as sent (also rows of `fills`)
    legs                  jsonb,
    received_at           timestamptz,  -- D9 stamps of the quote that placed the order
    quoted_at             timestamptz,
    order_sent_at         timestamptz,
    persisted_at          timestamptz        NOT NULL,
    PRIMARY KEY (order_id, time, change_reason, filled_amount, remaining_amount)
);

-- The current state of every order: the most advanced update seen. Not a time series, so
-- an ordinary table keyed by order_id alone (the time-column rule is for hypertables).
CREATE TABLE orders (
    order_id          text               PRIMARY KEY,
    instrument_name   text,
    direction         text               NOT NULL,
    order_type        text               NOT NULL,
    time_in_force     text               NOT NULL,
    price             double precision,
    amount            double precision   NOT NULL,
    filled_amount     double precision   NOT NULL,
    remaining_amount  double precision   NOT NULL,
    status            text               NOT NULL,
    is_final          boolean            NOT NULL,  -- cancelled or filled: no update can follow
    change_reason     text               NOT NULL,  -- of the update applied last
    insert_reason     text               NOT NULL,
    delete_reason     text,
    label             text,
    client_order_id   bigint,
    persistent        boolean            NOT NULL,
    create_time       timestamptz        NOT NULL,
    close_time        timestamptz,
    updated_at        timestamptz        NOT NULL   -- ack_received_at of the update applied last
);
CREATE INDEX orders_open_idx ON orders (instrument_name) WHERE NOT is_final;

-- Updates can be applied in any order and the result is the same: an update replaces the
-- row only if it is further along, by (filled_amount, final, arrival time, less remaining,
-- change_reason). Fills only grow and a final state stays final, so a late-arriving stale
-- update (an "open" after the "cancelled") cannot undo a newer one; among equally filled
-- live states the later arrival wins (amends). The last two fields only break exact ties
-- between updates of one message, so that the order of rows in a batch never matters.
CREATE FUNCTION orders_apply_ack() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO orders AS o (
        order_id, instrument_name, direction, order_type, time_in_force, price, amount,
        filled_amount, remaining_amount, status, is_final, change_reason, insert_reason,
        delete_reason, label, client_order_id, persistent, create_time, close_time, updated_at)
    VALUES (
        NEW.order_id, NEW.instrument_name, NEW.direction, NEW.order_type, NEW.time_in_force, NEW.price,
        NEW.amount, NEW.filled_amount, NEW.remaining_amount, NEW.status,
        NEW.status IN ('cancelled', 'cancelled_partially_filled', 'filled'), NEW.change_reason,
        NEW.insert_reason, NEW.delete_reason, NEW.label, NEW.client_order_id, NEW.persistent,
        NEW.create_time, NEW.close_time, NEW.time)
    ON CONFLICT (order_id) DO UPDATE SET
        instrument_name = EXCLUDED.instrument_name, direction = EXCLUDED.direction,
        order_type = EXCLUDED.order_type, time_in_force = EXCLUDED.time_in_force,
        price = EXCLUDED.price, amount = EXCLUDED.amount, filled_amount = EXCLUDED.filled_amount,
        remaining_amount = EXCLUDED.remaining_amount, status = EXCLUDED.status, is_final = EXCLUDED.is_final,
        change_reason = EXCLUDED.change_reason, insert_reason = EXCLUDED.insert_reason,
        delete_reason = EXCLUDED.delete_reason, label = EXCLUDED.label,
        client_order_id = EXCLUDED.client_order_id, persistent = EXCLUDED.persistent,
        create_time = EXCLUDED.create_time, close_time = EXCLUDED.close_time,
        updated_at = EXCLUDED.updated_at
    WHERE (EXCLUDED.filled_amount, EXCLUDED.is_final, EXCLUDED.updated_at, -EXCLUDED.remaining_amount,
           EXCLUDED.change_reason)
        > (o.filled_amount, o.is_final, o.updated_at, -o.remaining_amount, o.change_reason);
    RETURN NULL;
END
$$;

-- AFTER INSERT fires only for rows really inserted: a redelivered ack that ON CONFLICT
-- skips does not touch orders.
CREATE TRIGGER order_acks_to_orders AFTER INSERT ON order_acks
    FOR EACH ROW EXECUTE FUNCTION orders_apply_ack();

-- Our fills. Natural key: the exchange's trade_id, with the order and leg it filled (a
-- self-trade fills two of our orders under one trade_id) and the fill's exchange time. A
-- fill reported twice (in a request's answer and again in session.orders) is one row.
CREATE TABLE fills (
    time             timestamptz        NOT NULL,  -- the fill's exchange time (else ack_received_at)
    trade_id         text               NOT NULL,
    order_id         text               NOT NULL,
    leg_index        integer            NOT NULL,
    instrument_name  text               NOT NULL,
    direction        text               NOT NULL CHECK (direction IN ('buy', 'sell')),
    maker_taker      text               NOT NULL CHECK (maker_taker IN ('maker', 'taker')),
    price            positive_float8    NOT NULL,
    amount           positive_float8    NOT NULL,
    client_order_id  bigint,
    order_sent_at    timestamptz,
    ack_received_at  timestamptz,
    persisted_at     timestamptz        NOT NULL,
    PRIMARY KEY (trade_id, order_id, leg_index, time)
);
CREATE INDEX fills_instrument_time_idx ON fills (instrument_name, time DESC);

-- Position snapshots (account.portfolio lines). The venue dates them not at all, so the
-- time is when they were received; natural key: instrument and that stamp.
CREATE TABLE positions (
    time                           timestamptz        NOT NULL,  -- received_at
    instrument_name                text               NOT NULL,
    position                       double precision   NOT NULL,
    mark_price                     positive_float8    NOT NULL,
    iv                             double precision,
    index_price                    double precision,
    start_price                    double precision,
    average_price                  double precision,
    unrealised_pnl                 double precision,
    realised_pnl                   double precision,
    entry_value                    double precision,
    perpetual_funding_entry_value  double precision,
    unrealised_perpetual_funding   double precision,
    persisted_at                   timestamptz        NOT NULL,
    PRIMARY KEY (instrument_name, time)
);

-- Latency samples measured by the agents (one stage of one event each). Natural key: the
-- stage, its instrument and its start and end. The traced event's own D9 stamps are
-- prefixed event_ so that persisted_at stays this row's stamp, as in every table.
CREATE TABLE latency_samples (
    time                   timestamptz        NOT NULL,  -- end_at
    instrument_name        text               NOT NULL,
    stage                  text               NOT NULL,
    start_at               timestamptz        NOT NULL,
    duration_us            bigint             NOT NULL,  -- may be negative across clocks (exchange_to_received)
    event_received_at      timestamptz,
    event_quoted_at        timestamptz,
    event_order_sent_at    timestamptz,
    event_ack_received_at  timestamptz,
    event_persisted_at     timestamptz,
    persisted_at           timestamptz        NOT NULL,
    PRIMARY KEY (instrument_name, stage, time, start_at)
);
