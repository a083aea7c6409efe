"""The embedded stack: broker, PostgreSQL, schema registry and worker on loopback.

``cryptics up`` (app/stack/supervisor.py) starts these in order, waits for each
to be healthy, and stops them in reverse order on Ctrl-C or SIGTERM.
"""
