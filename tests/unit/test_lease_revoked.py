"""A heartbeat that found this executor's row gone revokes what runs last knew: each must
re-read its token, and keeps re-reading while the peer's takeover may still be moving work."""

from __future__ import annotations

import time

from waypoint.core.lease import Lease


def test_a_revocation_makes_earlier_confirmations_stale_and_settles_after_a_span() -> None:
    lease = Lease(0.3, lambda: time.monotonic())  # span 0.2 s
    began = time.monotonic()
    lease.renewed(began, first=True)
    confirmed = time.monotonic()
    assert not lease.stale(confirmed)
    assert not lease.settling()
    lease.revoked(time.monotonic())
    assert lease.stale(confirmed)  # confirmed before the takeover was seen
    assert lease.settling()
    time.sleep(0.25)
    assert not lease.settling()
    lease.renewed(time.monotonic())
    assert not lease.stale(time.monotonic())  # a confirmation after it counts again
