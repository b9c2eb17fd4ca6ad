"""Where a workflow goes: stable functions of an ID or a queue name over ordered shards.

Jump consistent hashing (Lamping and Veach, 2014) maps a key to one of ``n`` buckets so that
going from ``n`` to ``n + 1`` buckets moves only ~1/(n+1) of the keys, and only to the new
bucket. Only *future* placements use the new count: a workflow already created stays where
its placement marker says (``catalog``/``store``).
"""

from __future__ import annotations

import hashlib

_MASK = (1 << 64) - 1


def key_hash(text: str, salt: str = "") -> int:
    """A 64-bit hash of ``text`` that is the same in every process and Python version
    (``hash()`` is salted per process)."""
    digest = hashlib.blake2b(
        f"{salt}{text}".encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")


def jump(key: int, buckets: int) -> int:
    """The bucket (0 .. buckets-1) of a 64-bit key."""
    if buckets < 1:
        raise ValueError("jump hash needs at least one bucket")
    b, j = -1, 0
    key &= _MASK
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def workflow_slot(workflow_id: str, buckets: int) -> int:
    """The index, among ``buckets`` ordered shards, a top-level workflow ID is placed on."""
    return jump(key_hash(workflow_id, "wf:"), buckets)


def queue_slot(queue_name: str, buckets: int) -> int:
    """A queue's home among ``buckets`` ordered shards: all of its enqueued work is created
    there, so its concurrency limits, rate limits, priority, partitions and deduplication keep
    their single-database meaning (one queue's throughput is one shard's)."""
    return jump(key_hash(queue_name, "q:"), buckets)
