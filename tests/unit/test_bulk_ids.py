"""``bulk._fresh_ids``: the IDs and run tokens of a batch's items, drawn a block of random
bytes at a time, are what ``uuid4`` makes, and never repeat across blocks."""

from __future__ import annotations

import itertools
import uuid

from waypoint.queues.bulk import _fresh_ids


def test_ids_are_uuid4_and_unique_across_blocks() -> None:
    pairs = list(itertools.islice(_fresh_ids(block=3), 10))  # four blocks
    for workflow_id, token in pairs:
        parsed = uuid.UUID(workflow_id)
        assert str(parsed) == workflow_id
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        run = uuid.UUID(hex=token)
        assert run.hex == token
        assert (run.version, run.variant) == (4, uuid.RFC_4122)
    values = [v for pair in pairs for v in pair]
    assert len(set(values)) == 20
