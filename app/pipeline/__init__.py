"""Kafka and persistence: how records get onto topics, off them, and into the database.

- producer.py     DeferredProducer: the worker's one way onto Kafka (batched, off the hot path)
- codec.py        AvroCodec: Confluent wire format through the schema registry
- avro_writer.py  Avro writers compiled once per schema (byte-equal to fastavro's)
- topics.py       the pipeline topics and their creation
- tansu_compat.py the compatibility layer for the embedded broker (Tansu)
- sink/           batched asyncpg binary COPY into TimescaleDB/PostgreSQL
- deadletter.py   reading and replaying dead letters (``cryptics deadletter``)
"""
