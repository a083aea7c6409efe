-- Reference data: the instruments the venue lists (public/instruments).
-- Market-data tables of later migrations refer to instruments by name; this
-- table is what Grafana's instrument picker and the sinks join against.
CREATE TABLE IF NOT EXISTS instruments (
    instrument_name   text PRIMARY KEY,
    product           text,
    type              text        NOT NULL,          -- perpetual, future, option, combination
    underlying        text        NOT NULL,
    base_currency     text,
    tick_size         double precision NOT NULL CHECK (tick_size > 0),
    volume_tick_size  double precision NOT NULL CHECK (volume_tick_size > 0),
    min_order_amount  double precision,
    create_time       timestamptz,
    expiry_time       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS instruments_underlying_idx ON instruments (underlying);
