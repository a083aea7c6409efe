"""Talking to Thalex (or the simulated venue, which speaks the same protocol).

- messages.py  parsing one websocket message into a typed message (pure)
- auth.py      credentials and the RS512 login token
- client.py    ThalexClient: requests, notifications, login, subscriptions, reconnects
- book.py      a local L2 book rebuilt from ``book.*`` snapshots and deltas, with gap checks
"""
