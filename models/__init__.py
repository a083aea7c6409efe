"""Records that travel on Kafka topics; each mirrors the newest ``schemas/<record>/vN.avsc``.

- ``registry.RECORDS``: every record's name → model, schema, topic and key field;
- ``market``, ``quote``, ``orders``, ``position``, ``latency``, ``heartbeat``: the models;
- ``base.AvroRecord``: their base (plain nested dictionaries for the Avro codec);
- ``schemas``: loading the .avsc files; ``examples``: realistic values for tests and benchmarks.
"""
