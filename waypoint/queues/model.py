"""A queue's limits, validated once, independent of where they are declared (code or database),
and their form as a row of the ``queues`` table."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Optional

from waypoint.core.types import INTERNAL_QUEUE_NAME
from waypoint.error import DBOSException
from waypoint.storage.protocol import QueueRow


class QueueConfigError(DBOSException, ValueError):
    """A queue was declared or changed with inconsistent limits."""


@dataclass(frozen=True)
class RateLimit:
    limit: int
    period_sec: float

    @staticmethod
    def parse(value: Any, what: str) -> Optional[RateLimit]:
        if value is None:
            return None
        if isinstance(value, RateLimit):
            return value
        if isinstance(value, dict) and not {"limit", "period"} <= set(value):
            raise QueueConfigError(f"{what} must specify both 'limit' and 'period'")
        if not isinstance(value, dict) or set(value) != {"limit", "period"}:
            raise QueueConfigError(
                f"{what} must be a dict with exactly the keys 'limit' and 'period', got {value!r}"
            )
        limit, period = value["limit"], value["period"]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise QueueConfigError(f"{what} limit must be an integer >= 1, got {limit!r}")
        if isinstance(period, bool) or not isinstance(period, (int, float)) or period <= 0:
            raise QueueConfigError(f"{what} period must be a number of seconds > 0, got {period!r}")
        return RateLimit(limit, float(period))

    def as_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "period": self.period_sec}


def _limit(value: Any, what: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise QueueConfigError(f"{what} must be an integer, got {value!r}")
    if value < 1:
        raise QueueConfigError(f"{what} must be at least 1, got {value!r}")
    return value


def _at_least(upper: Optional[int], lower: Optional[int], upper_name: str, lower_name: str) -> None:
    """A limit that could never bind is refused (DBOS's rule and wording)."""
    if upper is not None and lower is not None and lower > upper:
        raise QueueConfigError(
            f"{upper_name} must be greater than or equal to {lower_name} ({upper} < {lower})"
        )


@dataclass(frozen=True)
class QueueConfig:
    name: str
    global_concurrency: Optional[int] = None
    worker_concurrency: Optional[int] = None
    limiter: Optional[RateLimit] = None
    partition_concurrency: Optional[int] = None
    partition_worker_concurrency: Optional[int] = None
    partition_limiter: Optional[RateLimit] = None
    polling_interval_sec: float = 1.0
    # Deprecated: with no partition_* limit, the plain limits apply per partition ("legacy");
    # DBOS also stores it True beside partition_* limits (partitioning follows from them).
    partition_queue: bool = False
    priority_enabled: bool = False  # accepted for compatibility; priorities always work

    @property
    def has_partition_limits(self) -> bool:
        return (
            self.partition_concurrency is not None
            or self.partition_worker_concurrency is not None
            or self.partition_limiter is not None
        )

    @property
    def partitioned(self) -> bool:
        return self.partition_queue or self.has_partition_limits

    @property
    def shared_limits(self) -> bool:
        """Limits counted across processes (what ``ClaimRequest.shared_budget`` says)."""
        return self.global_concurrency is not None or self.limiter is not None or self.partitioned

    @property
    def legacy(self) -> bool:
        """Declared the deprecated way: ``partition_queue`` and the plain limits."""
        return self.partition_queue and not self.has_partition_limits

    def effective(self) -> QueueConfig:
        """Every limit at the scope it is enforced at: a legacy queue's plain limits are
        per-partition ones."""
        if not self.legacy:
            return self
        return QueueConfig(
            name=self.name,
            partition_concurrency=self.global_concurrency,
            partition_worker_concurrency=self.worker_concurrency,
            partition_limiter=self.limiter,
            polling_interval_sec=self.polling_interval_sec,
            partition_queue=True,
            priority_enabled=self.priority_enabled,
        )


# The limits whose scope the deprecated partition_queue flag changes.
SCOPED_LIMITS = (
    "global_concurrency",
    "worker_concurrency",
    "limiter",
    "partition_concurrency",
    "partition_worker_concurrency",
    "partition_limiter",
)
LIMIT_OPTIONS = (
    "concurrency",
    *SCOPED_LIMITS,
    "polling_interval_sec",
    "partition_queue",
    "priority_enabled",
)


def config_from_arguments(name: Any, arguments: dict[str, Any]) -> QueueConfig:
    """``build_config`` from the arguments of a function that takes every limit by the same
    name (``Queue(...)``, ``register_queue(...)``: pass their ``locals()``)."""
    return build_config(name, **{key: arguments[key] for key in LIMIT_OPTIONS})


def build_config(
    name: Any,
    *,
    concurrency: Any = None,
    global_concurrency: Any = None,
    worker_concurrency: Any = None,
    limiter: Any = None,
    partition_concurrency: Any = None,
    partition_worker_concurrency: Any = None,
    partition_limiter: Any = None,
    polling_interval_sec: Any = 1.0,
    partition_queue: bool = False,
    priority_enabled: bool = False,
) -> QueueConfig:
    if not isinstance(name, str) or not name.strip():
        raise QueueConfigError("a queue name must be a non-empty string")
    if len(name) > 255:
        raise QueueConfigError("a queue name can be at most 255 characters")
    # DBOS's rules, in its order and words.
    if concurrency is not None and global_concurrency is not None:
        raise QueueConfigError(
            "concurrency is deprecated in favor of global_concurrency; set only one of them"
        )
    partition_limits = (partition_concurrency, partition_worker_concurrency, partition_limiter)
    if partition_queue and any(v is not None for v in partition_limits):
        raise QueueConfigError(
            "partition_queue is deprecated in favor of the partition_* limits; set only one of them"
        )
    if partition_queue and global_concurrency is not None:
        raise QueueConfigError(
            "partition_queue applies every limit per partition, so it cannot be combined with "
            "global_concurrency; use partition_concurrency instead"
        )
    gc = _limit(
        global_concurrency if global_concurrency is not None else concurrency, "global_concurrency"
    )
    wc = _limit(worker_concurrency, "worker_concurrency")
    pc = _limit(partition_concurrency, "partition_concurrency")
    pwc = _limit(partition_worker_concurrency, "partition_worker_concurrency")
    lim = RateLimit.parse(limiter, "limiter")
    plim = RateLimit.parse(partition_limiter, "partition_limiter")
    if (
        isinstance(polling_interval_sec, bool)
        or not isinstance(polling_interval_sec, (int, float))
        or polling_interval_sec <= 0
    ):
        raise QueueConfigError(
            f"polling_interval_sec must be a number > 0, got {polling_interval_sec!r}"
        )
    _at_least(pc, pwc, "partition_concurrency", "partition_worker_concurrency")
    _at_least(wc, pwc, "worker_concurrency", "partition_worker_concurrency")
    _at_least(gc, wc, "concurrency", "worker_concurrency")
    _at_least(gc, pc, "global_concurrency", "partition_concurrency")
    _at_least(gc, pwc, "concurrency", "partition_worker_concurrency")
    return QueueConfig(
        name=name,
        global_concurrency=gc,
        worker_concurrency=wc,
        limiter=lim,
        partition_concurrency=pc,
        partition_worker_concurrency=pwc,
        partition_limiter=plim,
        polling_interval_sec=float(polling_interval_sec),
        partition_queue=bool(partition_queue),
        priority_enabled=bool(priority_enabled),
    )


def config_from_row(row: QueueRow) -> QueueConfig:
    """A database-backed queue's row as a QueueConfig (rows were validated when written)."""
    return QueueConfig(
        name=row.name,
        global_concurrency=row.concurrency,
        worker_concurrency=row.worker_concurrency,
        limiter=RateLimit(row.rate_limit_max, float(row.rate_limit_period_sec))
        if row.rate_limit_max is not None and row.rate_limit_period_sec is not None
        else None,
        partition_concurrency=row.partition_concurrency,
        partition_worker_concurrency=row.partition_worker_concurrency,
        partition_limiter=RateLimit(
            row.partition_rate_limit_max, float(row.partition_rate_limit_period_sec)
        )
        if row.partition_rate_limit_max is not None
        and row.partition_rate_limit_period_sec is not None
        else None,
        polling_interval_sec=float(row.polling_interval_sec or 1.0),
        partition_queue=row.partition_queue,
        priority_enabled=row.priority_enabled,
    )


def row_from_config(cfg: QueueConfig, application_name: Optional[str]) -> QueueRow:
    return QueueRow(
        name=cfg.name,
        concurrency=cfg.global_concurrency,
        worker_concurrency=cfg.worker_concurrency,
        rate_limit_max=cfg.limiter.limit if cfg.limiter else None,
        rate_limit_period_sec=cfg.limiter.period_sec if cfg.limiter else None,
        priority_enabled=cfg.priority_enabled,
        partition_queue=cfg.partitioned,  # as DBOS stores it
        polling_interval_sec=cfg.polling_interval_sec,
        application_name=application_name,
        partition_concurrency=cfg.partition_concurrency,
        partition_worker_concurrency=cfg.partition_worker_concurrency,
        partition_rate_limit_max=cfg.partition_limiter.limit if cfg.partition_limiter else None,
        partition_rate_limit_period_sec=cfg.partition_limiter.period_sec
        if cfg.partition_limiter
        else None,
    )


def config_kwargs(cfg: QueueConfig) -> dict[str, Any]:
    """The keyword arguments of ``build_config`` that rebuild ``cfg``."""
    return {
        # A legacy queue's plain concurrency is a per-partition one, under its old name.
        "concurrency" if cfg.legacy else "global_concurrency": cfg.global_concurrency,
        "worker_concurrency": cfg.worker_concurrency,
        "limiter": cfg.limiter.as_dict() if cfg.limiter else None,
        "partition_concurrency": cfg.partition_concurrency,
        "partition_worker_concurrency": cfg.partition_worker_concurrency,
        "partition_limiter": cfg.partition_limiter.as_dict() if cfg.partition_limiter else None,
        "polling_interval_sec": cfg.polling_interval_sec,
        "partition_queue": cfg.legacy,
        "priority_enabled": cfg.priority_enabled,
    }


INTERNAL_QUEUE = QueueConfig(INTERNAL_QUEUE_NAME)


class QueueRegistry:
    """Queues declared in code in this process (config lives in every process's code)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, QueueConfig] = {}
        self.listen: Optional[set[str]] = None  # None: every queue

    def add(self, config: QueueConfig) -> None:
        with self._lock:
            if config.name in self._queues or config.name == INTERNAL_QUEUE_NAME:
                raise QueueConfigError(f"a queue named {config.name!r} is already declared")
            self._queues[config.name] = config

    def replace(self, config: QueueConfig) -> None:
        with self._lock:
            self._queues[config.name] = config

    def get(self, name: str) -> Optional[QueueConfig]:
        if name == INTERNAL_QUEUE_NAME:
            return INTERNAL_QUEUE
        with self._lock:
            return self._queues.get(name)

    def all(self) -> list[QueueConfig]:
        with self._lock:
            return list(self._queues.values())

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()
            self.listen = None


QUEUES = QueueRegistry()
