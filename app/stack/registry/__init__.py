"""The embedded schema registry: the subset of the Confluent Schema Registry REST API
that python-schema-registry-client uses, stored in PostgreSQL.

- ``compat``: Avro schema validation and resolution (can a reader read a writer's data?)
  and the Confluent compatibility levels built on it.
- ``store``: the subjects, versions, schema ids and compatibility settings in
  PostgreSQL (schema ``schema_registry``).
- ``server``: the aiohttp REST API over the store; ``serve()`` runs it as a process.
"""
