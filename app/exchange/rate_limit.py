"""Thalex's message-rate limits as a token bucket, counted as the venue counts them.

The limit is both the burst and the sustained rate (docs/thalex-protocol.md §6.2): a bucket
of ``rate`` tokens, refilled at ``rate`` per second. The simulated venue enforces its limits
with it (app/venue/transport.py); the order gateway keeps its own a little under the venue's
(app/gateway/), and uses ``pause`` when the venue throttled it anyway.
"""
from __future__ import annotations


class TokenBucket:
    """``rate`` per second with a burst of ``rate``, plus a growing pause after throttles."""

    __slots__ = ("rate", "tokens", "stamp", "paused_until", "_backoff_s", "_backoff_max_s", "_next_pause")

    def __init__(self, rate: float, now: float, backoff_s: float = 0.1, backoff_max_s: float = 2.0) -> None:
        self.rate = rate
        self.tokens = rate
        self.stamp = now
        self.paused_until = 0.0
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._next_pause = backoff_s

    def _refill(self, now: float) -> None:
        self.tokens = min(self.rate, self.tokens + max(0.0, now - self.stamp) * self.rate)
        self.stamp = now

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    def take(self, now: float) -> bool:
        """One token if there is one (and the bucket is not paused)."""
        if now < self.paused_until:
            return False
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def set_rate(self, rate: float, now: float) -> None:
        """New rate, same tokens: the venue's bucket keeps its tokens when cancel-on-disconnect
        raises the rate, so right after it holds at most the old burst."""
        self._refill(now)
        self.rate = rate

    def pause(self, now: float) -> float:
        """The venue throttled us: empty the bucket and send nothing for a growing interval.

        Throttle replies that arrive while paused answer requests sent before the pause:
        the same episode, so they do not lengthen it. Returns the pause's remaining time."""
        if self.paused(now):
            return self.paused_until - now
        pause = self._next_pause
        self.paused_until = now + pause
        self.tokens = 0.0
        self.stamp = now
        self._next_pause = min(self._backoff_max_s, pause * 2)
        return pause

    def recovered(self, now: float) -> None:
        """A request went through. Once nothing was throttled for a longest pause's time, the
        next throttle starts the back-off from the beginning; a throttle soon after a pause
        (even with some requests accepted in between) means the pause was too short."""
        if now - self.paused_until >= self._backoff_max_s:
            self._next_pause = self._backoff_s
