"""DBOS names Waypoint offers only so a DBOS application imports and fails clearly: Kafka
consumers and Conductor alerts. Each raises when it is used (at decoration time), naming
what is missing, instead of registering something that would never run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, Optional, Union

from waypoint.error import DBOSException


@dataclass
class KafkaMessage:
    """A Kafka message as DBOS hands it to a consumer workflow (for type annotations; Waypoint
    has no Kafka consumers yet)."""

    headers: Optional[list[tuple[str, Union[str, bytes]]]]
    key: Optional[Union[str, bytes]]
    latency: Optional[float]
    leader_epoch: Optional[int]
    offset: Optional[int]
    partition: Optional[int]
    timestamp: tuple[int, int]
    topic: Optional[str]
    value: Optional[Union[str, bytes]]


def kafka_consumer(*args: Any, **kwargs: Any) -> NoReturn:
    raise DBOSException(
        "DBOS.kafka_consumer is not supported yet: Waypoint has no Kafka consumers. Consume "
        "with your Kafka client and start or enqueue a workflow per message (its workflow ID "
        "made from topic, partition and offset keeps each message exactly once)."
    )


def alert_handler(func: Callable[..., Any]) -> NoReturn:
    raise DBOSException(
        "DBOS.alert_handler is not supported: alerts come from DBOS Conductor, and Waypoint "
        "does not connect to Conductor."
    )
