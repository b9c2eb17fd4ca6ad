"""``waypoint.core.ids``: workflow IDs and run tokens drawn a block of random bytes at a
time are what ``uuid4`` makes, never repeat across blocks, and a forked child never hands
out the parent's unused bytes."""

from __future__ import annotations

import os
import sys
import uuid

import pytest

from waypoint.core import ids


def test_ids_are_uuid4_and_unique_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids, "_BLOCK", 3)
    monkeypatch.setattr(ids, "_pool", ids._Pool())
    values = []
    for _ in range(10):  # seven blocks
        workflow_id, token = ids.new_uuid(), ids.random_hex()
        parsed = uuid.UUID(workflow_id)
        assert str(parsed) == workflow_id
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        run = uuid.UUID(hex=token)
        assert run.hex == token
        assert (run.version, run.variant) == (4, uuid.RFC_4122)
        values += [workflow_id, token]
    assert len(set(values)) == 20


@pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork")
def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    ids.random_hex()  # the parent now holds a block it has barely used
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next value, to the parent
        os.write(write, ids.random_hex().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 32
    assert child != ids.random_hex()
